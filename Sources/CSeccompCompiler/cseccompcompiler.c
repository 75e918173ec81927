#define _GNU_SOURCE
#include "cseccompcompiler.h"

#include <errno.h>
#include <linux/filter.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

long kite_seccomp_export(const scmp_filter_ctx ctx, void **program) {
    int fd = memfd_create("kite-seccomp", MFD_CLOEXEC);
    if (fd < 0) return -errno;
    long result;
    int rc = seccomp_export_bpf(ctx, fd);
    off_t size = rc == 0 ? lseek(fd, 0, SEEK_END) : -1;
    if (rc != 0) {
        result = rc;
    } else if (size <= 0 || size % sizeof(struct sock_filter) != 0) {
        result = -EINVAL;
    } else {
        void *buffer = malloc((size_t)size);
        if (buffer == NULL) {
            result = -ENOMEM;
        } else if (pread(fd, buffer, (size_t)size, 0) != size) {
            free(buffer);
            result = -EIO;
        } else {
            *program = buffer;
            result = size / (long)sizeof(struct sock_filter);
        }
    }
    close(fd);
    return result;
}
