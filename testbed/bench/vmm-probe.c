/*
 * vmm-probe: run a VMM process and measure it from the outside.
 *
 * Usage: vmm-probe --marker STRING --guest-mem-mib N --timeout SECONDS -- CMD [ARGS...]
 *
 * Runs CMD in its own session with stdin from /dev/null and stdout+stderr merged into
 * one pipe. Every output line is echoed unchanged to our stdout (lines longer than
 * 4096 bytes are split). The first time a line contains STRING, the child's
 * /proc/PID/smaps is read and one line is printed:
 *
 *   PROBE marker_ms=T rss_total_kib=A rss_guest_kib=G rss_vmm_kib=V guest_maps=S,.. pss_vmm_kib=P
 *
 * "Guest" mappings are those of at least max(128, N/2) MiB; guest_maps lists their
 * sizes in MiB (or "none"); the rss/pss fields are -1 if smaps cannot be read.
 * When the child has exited (and its output hit EOF):
 *
 *   PROBE marker_ms=none                   (only if STRING was never seen)
 *   PROBE exit_ms=T status=N | signal=S
 *
 * If SECONDS pass first, the child's process group is killed with SIGKILL and
 * "PROBE timeout after=SECONDS" is printed before the exit line. All times are in
 * milliseconds since just before fork(). Exit status: 0 after a run (whatever the
 * child did), 1 on an internal error, 2 on bad arguments.
 *
 * Build: gcc -O2 -static -Wall -Wextra -Werror -o vmm-probe vmm-probe.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE 4096
#define MIB (1024ULL * 1024ULL)

static struct timespec t0;
static const char *marker;
static size_t marker_len;
static unsigned long long guest_min_bytes;
static pid_t child;
static bool marker_seen;
static char line[MAX_LINE];
static size_t line_len;

static double ms_since_t0(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) / 1e6;
}

static void usage_error(const char *msg)
{
    fprintf(stderr, "vmm-probe: %s (usage: vmm-probe --marker STRING --guest-mem-mib N "
                    "--timeout SECONDS -- CMD [ARGS...])\n", msg);
    exit(2);
}

