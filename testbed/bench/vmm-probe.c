/*
 * vmm-probe: run a VMM process and measure it from the outside.
 *
 * Usage: vmm-probe --marker STRING --guest-mem-mib N --timeout SECONDS [--pages yes] -- CMD [ARGS...]
 *
 * Runs CMD in its own session with stdin from /dev/null and stdout+stderr merged into
 * one pipe. Every output line is echoed unchanged to our stdout (lines longer than
 * 4096 bytes are split). The first time a line contains STRING, the child's
 * /proc/PID/smaps is read and one line is printed:
 *
 *   PROBE marker_ms=T rss_total_kib=A rss_guest_kib=G rss_vmm_kib=V guest_maps=S,.. pss_vmm_kib=P
 *         anon_vmm_kib=N   (N: the anonymous part of V, i.e. not file-backed pages)
 *
 * "Guest" mappings are those of at least max(128, N/2) MiB; guest_maps lists their
 * sizes in MiB (or "none"); the rss/pss fields are -1 if smaps cannot be read.
 * When the child has exited (and its output hit EOF):
 *
 *   PROBE marker_ms=none                   (only if STRING was never seen)
 *   PROBE exit_ms=T status=N | signal=S
 *
 * With --pages yes, the marker's measurement also lists where the VMM's pages are, to find
 * out which parts of its executable a boot keeps resident:
 *
 *   PROBE map START-END PERMS OFFSET rss_kib=N anon_kib=A PATH      (each mapping but guest RAM)
 *   PROBE pages PATH 0xFIRST+COUNT ...   (present pages of file mappings, as file page
 *                                         numbers and run lengths, many lines per file)
 *
 * If SECONDS pass first, the child's process group is killed with SIGKILL and
 * "PROBE timeout after=SECONDS" is printed before the exit line. All times are in
 * milliseconds since just before fork(); exit_ms is when the child itself exited,
 * even if a leftover process kept the output open longer. Exit status: 0 after a
 * run (whatever the child did), 1 on an internal error, 2 on bad arguments.
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
#include <sys/syscall.h>
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
static bool list_pages;
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

/* Read /proc/CHILD/smaps: Rss and Pss summed over all mappings and over guest-sized ones. */
static void measure_smaps(double marker_ms, char *out, size_t out_size)
{
    char path[64], maps[512] = "", *buf = NULL;
    size_t cap = 0, used = 0;
    long long rss_total = 0, rss_guest = 0, pss_total = 0, pss_guest = 0, anon_vmm = 0, kib;
    unsigned long long start, end;
    bool in_guest = false;
    int hdr_len;

    snprintf(path, sizeof path, "/proc/%d/smaps", (int)child);
    FILE *f = fopen(path, "r");
    if (f) {
        while (getline(&buf, &cap, f) > 0) {
            hdr_len = 0;
            if (sscanf(buf, "%llx-%llx %n", &start, &end, &hdr_len) == 2 && hdr_len > 0) {
                /* Mapping header: "start-end perms offset dev inode [path]". */
                in_guest = end > start && end - start >= guest_min_bytes;
                if (in_guest && used + 24 < sizeof maps)
                    used += snprintf(maps + used, sizeof maps - used, "%s%llu",
                                     used ? "," : "", (end - start + MIB / 2) / MIB);
            } else if (sscanf(buf, "Rss: %lld kB", &kib) == 1) {
                rss_total += kib;
                rss_guest += in_guest ? kib : 0;
            } else if (sscanf(buf, "Pss: %lld kB", &kib) == 1) {
                pss_total += kib;
                pss_guest += in_guest ? kib : 0;
            } else if (sscanf(buf, "Anonymous: %lld kB", &kib) == 1) {
                anon_vmm += in_guest ? 0 : kib;
            }
        }
        free(buf);
        if (ferror(f))
            rss_total = 0;
        fclose(f);
    }
    if (rss_total <= 0) {  /* unreadable, or empty because the child is already gone */
        snprintf(out, out_size, "PROBE marker_ms=%.1f rss_total_kib=-1 rss_guest_kib=-1 "
                 "rss_vmm_kib=-1 guest_maps=none pss_vmm_kib=-1 anon_vmm_kib=-1\n", marker_ms);
        return;
    }
    snprintf(out, out_size, "PROBE marker_ms=%.1f rss_total_kib=%lld rss_guest_kib=%lld "
             "rss_vmm_kib=%lld guest_maps=%s pss_vmm_kib=%lld anon_vmm_kib=%lld\n", marker_ms, rss_total,
             rss_guest, rss_total - rss_guest, used ? maps : "none", pss_total - pss_guest, anon_vmm);
}

/* Print the present pages of CHILD's mapping [start, end) of PATH at file page first_page,
   from /proc/CHILD/pagemap (bit 63: present), as runs "0xPAGE+COUNT", 24 runs a line. */
static void print_present_pages(int pagemap, unsigned long long start, unsigned long long end,
                                unsigned long long first_page, const char *path)
{
    unsigned long long run_start = 0, run_len = 0, entry;
    int runs = 0;

    for (unsigned long long page = 0; page < (end - start) / 4096 + 1; page++) {
        bool present = false;
        if (page < (end - start) / 4096 &&
            pread(pagemap, &entry, sizeof entry, (off_t)((start / 4096 + page) * sizeof entry)) == sizeof entry)
            present = entry >> 63;
        if (present && run_len > 0 && run_start + run_len == first_page + page) {
            run_len++;
            continue;
        }
        if (run_len > 0) {
            if (runs % 24 == 0)
                printf("%sPROBE pages %s", runs ? "\n" : "", path);
            printf(" 0x%llx+%llu", run_start, run_len);
            runs++;
            run_len = 0;
        }
        if (present) {
            run_start = first_page + page;
            run_len = 1;
        }
    }
    if (runs)
        printf("\n");
}

/* --pages: every mapping but guest RAM with its Rss, and the present pages of file mappings. */
static void print_maps(void)
{
    char path[64], *buf = NULL, perms[8] = "", file[512] = "";
    size_t cap = 0;
    unsigned long long start = 0, end = 0, offset = 0;
    long long rss = 0, anon = 0, kib;
    bool have = false;

    snprintf(path, sizeof path, "/proc/%d/smaps", (int)child);
    FILE *f = fopen(path, "r");
    snprintf(path, sizeof path, "/proc/%d/pagemap", (int)child);
    int pagemap = open(path, O_RDONLY | O_CLOEXEC);
    if (!f) {
        printf("PROBE map unreadable: %s\n", strerror(errno));
        if (pagemap >= 0)
            close(pagemap);
        return;
    }
    for (bool more = true; more;) {
        unsigned long long s, e, o;
        char p[8], name[512];
        int n = 0;
        more = getline(&buf, &cap, f) > 0;
        bool header = more && sscanf(buf, "%llx-%llx %7s %llx %*s %*s %n", &s, &e, p, &o, &n) == 4 && n > 0;
        if (!more || header) {
            if (have && end - start < guest_min_bytes) {
                printf("PROBE map %llx-%llx %s %llx rss_kib=%lld anon_kib=%lld %s\n", start, end, perms, offset,
                       rss, anon, file);
                if (pagemap >= 0 && file[0] == '/' && rss > 0)
                    print_present_pages(pagemap, start, end, offset / 4096, file);
            }
            if (header) {
                snprintf(name, sizeof name, "%s", buf + n);
                name[strcspn(name, "\n")] = 0;
                start = s, end = e, offset = o, rss = 0, anon = 0, have = true;
                snprintf(perms, sizeof perms, "%s", p);
                snprintf(file, sizeof file, "%s", name);
            }
        } else if (sscanf(buf, "Rss: %lld kB", &kib) == 1) {
            rss = kib;
        } else if (sscanf(buf, "Anonymous: %lld kB", &kib) == 1) {
            anon = kib;
        }
    }
    free(buf);
    fclose(f);
    if (pagemap >= 0)
        close(pagemap);
}

/* Echo the buffered line; on the first marker hit, measure first and report after it. */
static void emit_line(double read_ms)
{
    char probe[768] = "";

    if (!marker_seen && memmem(line, line_len, marker, marker_len)) {
        marker_seen = true;
        measure_smaps(read_ms, probe, sizeof probe);
        if (list_pages)
            print_maps();
    }
    fwrite(line, 1, line_len, stdout);
    fputs("\n", stdout);
    fputs(probe, stdout);
    fflush(stdout);
    line_len = 0;
}

/* Split output into lines; a line that would exceed MAX_LINE bytes is cut there. */
static void feed(const char *p, size_t n, double read_ms)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            emit_line(read_ms);
            continue;
        }
        if (line_len == MAX_LINE)
            emit_line(read_ms);
        line[line_len++] = p[i];
    }
}

/* After the kill: echo what the child had already written (without blocking). */
static void drain(int fd)
{
    char chunk[65536];
    ssize_t n;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    for (int i = 0; i < 64 && (n = read(fd, chunk, sizeof chunk)) > 0; i++)
        feed(chunk, (size_t)n, ms_since_t0());
}

static double parse_number(const char *s, double min, double max, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max)) {
        char msg[128];
        snprintf(msg, sizeof msg, "bad %s '%.40s'", what, s);
        usage_error(msg);
    }
    return v;
}

int main(int argc, char **argv)
{
    double timeout = 0, mem_mib = 0;
    int i;

    for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i += 2) {
        if (i + 1 >= argc)
            usage_error("missing value after an option");
        if (strcmp(argv[i], "--marker") == 0)
            marker = argv[i + 1];
        else if (strcmp(argv[i], "--guest-mem-mib") == 0)
            mem_mib = parse_number(argv[i + 1], 1, 1 << 24, "--guest-mem-mib");
        else if (strcmp(argv[i], "--timeout") == 0)
            timeout = parse_number(argv[i + 1], 0.001, 1e6, "--timeout");
        else if (strcmp(argv[i], "--pages") == 0 && strcmp(argv[i + 1], "yes") == 0)
            list_pages = true;
        else
            usage_error("unknown option");
    }
    if (!marker || !*marker || mem_mib == 0 || timeout == 0)
        usage_error("--marker, --guest-mem-mib and --timeout are required");
    if (i + 1 >= argc)
        usage_error("missing -- CMD");
    if (mem_mib != (unsigned long long)mem_mib)
        usage_error("--guest-mem-mib must be a whole number");
    char **cmd = &argv[i + 1];
    marker_len = strlen(marker);
    guest_min_bytes = (unsigned long long)mem_mib * MIB / 2;
    if (guest_min_bytes < 128 * MIB)
        guest_min_bytes = 128 * MIB;

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        perror("vmm-probe: pipe");
        return 1;
    }
    fflush(stdout);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    child = fork();
    if (child < 0) {
        perror("vmm-probe: fork");
        return 1;
    }
    if (child == 0) {
        setsid();
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd > 0) {
            dup2(null_fd, 0);
            close(null_fd);
        }
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        execvp(cmd[0], cmd);
        dprintf(2, "vmm-probe: cannot run %s: %s\n", cmd[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    /* A pidfd (Linux 5.3+) turns readable when the child exits, even while something
       else still holds the pipe open; without one the exit is noticed when reaped. */
    int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
    double exit_ms = -1;

    /* Echo output until EOF or the deadline. */
    double deadline_ms = timeout * 1e3;
    bool timed_out = false, eof = false;
    static char chunk[65536];
    while (!eof && !timed_out) {
        double left_ms = deadline_ms - ms_since_t0();
        if (left_ms <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd pfd[2] = { { .fd = fds[0], .events = POLLIN },
                                 { .fd = exit_ms < 0 ? pidfd : -1, .events = POLLIN } };
        int r = poll(pfd, 2, (int)left_ms + 1);
        if (r < 0 && errno != EINTR) {
            perror("vmm-probe: poll");
            timed_out = true;  /* cannot watch the child any more: stop it */
        }
        if (r <= 0)
            continue;
        if (pfd[1].revents)
            exit_ms = ms_since_t0();
        if (!pfd[0].revents)
            continue;
        ssize_t n = read(fds[0], chunk, sizeof chunk);
        if (n > 0)
            feed(chunk, (size_t)n, ms_since_t0());
        else if (n == 0 || (errno != EINTR && errno != EAGAIN))
            eof = true;
    }

    /* Output closed: wait (still within the deadline) for the child to exit. */
    int status = 0;
    pid_t w = 0;
    while (!timed_out && (w = waitpid(child, &status, WNOHANG)) == 0) {
        double left_ms = deadline_ms - ms_since_t0();
        if (left_ms <= 0)
            timed_out = true;
        else  /* sleeps until the exit with a pidfd, else 1 ms (poll ignores fd -1) */
            poll(&(struct pollfd){ .fd = pidfd, .events = POLLIN }, 1,
                 pidfd >= 0 ? (int)left_ms + 1 : 1);
    }
    if (w > 0 && exit_ms < 0)
        exit_ms = ms_since_t0();
    if (timed_out) {
        if (kill(-child, SIGKILL) != 0)
            kill(child, SIGKILL);
        drain(fds[0]);
    }
    if (line_len > 0)  /* last line without a newline */
        emit_line(ms_since_t0());
    if (timed_out) {
        printf("PROBE timeout after=%g\n", timeout);
        fflush(stdout);
        while ((w = waitpid(child, &status, 0)) < 0 && errno == EINTR)
            ;
    }
    if (exit_ms < 0)
        exit_ms = ms_since_t0();
    close(fds[0]);

    if (!marker_seen)
        printf("PROBE marker_ms=none\n");
    if (w < 0)
        printf("PROBE exit_ms=%.1f status=unknown\n", exit_ms);
    else if (WIFSIGNALED(status))
        printf("PROBE exit_ms=%.1f signal=%d\n", exit_ms, WTERMSIG(status));
    else
        printf("PROBE exit_ms=%.1f status=%d\n", exit_ms, WEXITSTATUS(status));
    fflush(stdout);
    return 0;
}
