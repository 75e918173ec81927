#define _GNU_SOURCE
#include "csandbox.h"

#include <errno.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int violation_wake_fd = -1;
static atomic_long violation_syscall = -1;
static atomic_ulong violation_count = 0;
static char violation_label[16];
static atomic_int violation_label_ready = 0;
static __thread char thread_label[16] = "kite";

static void on_sigsys(int signo, siginfo_t *info, void *context) {
    (void)signo;
    int saved = errno;
    // Only async-signal-safe work here: atomics, memcpy, write(2) (in every allow-list).
    long expected = -1;
    if (atomic_compare_exchange_strong(&violation_syscall, &expected, (long)info->si_syscall)) {
        memcpy(violation_label, thread_label, sizeof violation_label);
        atomic_store(&violation_label_ready, 1);
        uint64_t one = 1;
        if (violation_wake_fd >= 0) (void)!write(violation_wake_fd, &one, sizeof one);
    }
    atomic_fetch_add(&violation_count, 1);
    // The call was not made; it returns -EPERM to its caller.
    ucontext_t *uc = context;
    uc->uc_mcontext.gregs[REG_RAX] = -EPERM;
    errno = saved;
}

int csandbox_install_violation_handler(int wake_fd) {
    violation_wake_fd = wake_fd;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigsys;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGSYS, &action, NULL) == 0 ? 0 : -errno;
}

void csandbox_set_thread_label(const char *name) {
    strncpy(thread_label, name, sizeof thread_label - 1);
    thread_label[sizeof thread_label - 1] = 0;
}

int csandbox_apply(const void *program, unsigned long instructions) {
    if (instructions == 0 || instructions > BPF_MAXINSNS) return -EINVAL;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
    struct sock_fprog prog = { .len = (unsigned short)instructions, .filter = (struct sock_filter *)program };
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0 ? 0 : -errno;
}

long csandbox_violation(char *label, unsigned long *count) {
    long nr = atomic_load(&violation_syscall);
    *count = atomic_load(&violation_count);
    if (nr >= 0 && atomic_load(&violation_label_ready)) {
        memcpy(label, violation_label, sizeof violation_label);
    } else {
        label[0] = 0;
    }
    return nr;
}

int csandbox_drop_capabilities(void) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &header, data) != 0) return -errno;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) return -errno;
    return 0;
}

long csandbox_forbidden_call(void) {
    return syscall(SYS_getppid);
}
