/*
 * ipi-pingpong: cross-CPU wakeup (IPI) round-trip latency.
 *
 * Usage: ipi-pingpong [ROUNDS [CPU_A CPU_B]]     (defaults: 100000 0 1)
 *
 * Thread A (pinned to CPU_A) and thread B (pinned to CPU_B) pass a sequence number
 * back and forth through one shared 32-bit futex word: in round i, A stores 2i+1 and
 * wakes B, then sleeps until the word is 2i+2; B sleeps until the word is 2i+1, then
 * stores 2i+2 and wakes A. Waiting is FUTEX_WAIT only, never spinning, so the waiting
 * CPU goes idle (HLT in a VM) and every round costs two wakeup IPIs. A times each
 * round; after 1000 unrecorded warm-up rounds it prints one line:
 *
 *   IPI rounds=N cpus=A,B median_ns=.. p99_ns=.. mean_ns=.. min_ns=.. max_ns=.. total_ms=..
 *
 * total_ms is the wall time of the recorded rounds. Prints "IPI skipped: ..." (exit 0)
 * with fewer than 2 online CPUs, "IPI error: ..." (exit 1) if pinning fails; bad
 * arguments exit 2.
 *
 * Build: gcc -O2 -static -pthread -Wall -Wextra -Werror -o ipi-pingpong ipi-pingpong.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 1000

static _Atomic uint32_t word;  /* the sequence number both threads wait on */
static long rounds = 100000;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void store_and_wake(uint32_t value)
{
    atomic_store(&word, value);
    syscall(SYS_futex, (uint32_t *)&word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Sleep in the kernel until the word equals target (re-checking after every wakeup). */
static void wait_for(uint32_t target)
{
    uint32_t seen;
    while ((seen = atomic_load(&word)) != target)
        syscall(SYS_futex, (uint32_t *)&word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
}

static void *thread_b(void *arg)
{
    (void)arg;
    for (uint32_t i = 0; i < (uint32_t)(WARMUP + rounds); i++) {
        wait_for(2 * i + 1);
        store_and_wake(2 * i + 2);
    }
    return NULL;
}

static void usage_error(const char *problem, const char *value)
{
    fprintf(stderr, "IPI error: %s%.40s (usage: ipi-pingpong [ROUNDS [CPU_A CPU_B]], ROUNDS "
                    "1..10000000, CPUs 0..1023 and distinct)\n", problem, value);
    exit(2);
}

static long parse_arg(const char *s, long min, long max, const char *problem)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        usage_error(problem, s);
    return v;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long cpu_a = 0, cpu_b = 1;

    if (argc == 3 || argc > 4)
        usage_error("wrong number of arguments", "");
    if (argc >= 2)
        rounds = parse_arg(argv[1], 1, 10000000, "bad ROUNDS ");
    if (argc == 4) {
        cpu_a = parse_arg(argv[2], 0, 1023, "bad CPU_A ");
        cpu_b = parse_arg(argv[3], 0, 1023, "bad CPU_B ");
        if (cpu_a == cpu_b)
            usage_error("CPU_A and CPU_B are both ", argv[3]);
    }
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
        printf("IPI skipped: needs 2 online CPUs\n");
        return 0;
    }

    /* Preallocate the results; touch them (non-zero: the compiler may not turn this
       into a lazy calloc) so that no page faults land in the timed rounds. */
    uint64_t *lat = malloc((size_t)rounds * sizeof *lat);
    uint64_t *sorted = malloc((size_t)rounds * sizeof *sorted);
    if (!lat || !sorted) {
        printf("IPI error: out of memory for %ld rounds\n", rounds);
        return 1;
    }
    memset(lat, 0xff, (size_t)rounds * sizeof *lat);

    /* Thread A is this thread; thread B is created already pinned. */
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu_a, &set);
    int err = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (err) {
        printf("IPI error: cannot pin to CPU %ld: %s\n", cpu_a, strerror(err));
        return 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    CPU_ZERO(&set);
    CPU_SET(cpu_b, &set);
    pthread_attr_setaffinity_np(&attr, sizeof set, &set);
    pthread_t tb;
    err = pthread_create(&tb, &attr, thread_b, NULL);
    pthread_attr_destroy(&attr);
    if (err) {
        printf("IPI error: cannot pin to CPU %ld: %s\n", cpu_b, strerror(err));
        return 1;
    }

    uint64_t first = 0;
    for (uint32_t i = 0; i < (uint32_t)(WARMUP + rounds); i++) {
        uint64_t start = now_ns();
        store_and_wake(2 * i + 1);
        wait_for(2 * i + 2);
        uint64_t end = now_ns();
        if (i == WARMUP)
            first = start;
        if (i >= WARMUP)
            lat[i - WARMUP] = end - start;
    }
    uint64_t total = now_ns() - first;
    pthread_join(tb, NULL);

    uint64_t min = UINT64_MAX, max = 0;
    double sum = 0;
    for (long i = 0; i < rounds; i++) {
        sum += (double)lat[i];
        min = lat[i] < min ? lat[i] : min;
        max = lat[i] > max ? lat[i] : max;
    }
    memcpy(sorted, lat, (size_t)rounds * sizeof *lat);
    qsort(sorted, (size_t)rounds, sizeof *sorted, cmp_u64);
    uint64_t median = rounds % 2 ? sorted[rounds / 2]
                                 : (sorted[rounds / 2 - 1] + sorted[rounds / 2]) / 2;
    uint64_t p99 = sorted[(size_t)(0.99 * (double)(rounds - 1))];

    printf("IPI rounds=%ld cpus=%ld,%ld median_ns=%llu p99_ns=%llu mean_ns=%.0f min_ns=%llu "
           "max_ns=%llu total_ms=%.1f\n", rounds, cpu_a, cpu_b, (unsigned long long)median,
           (unsigned long long)p99, sum / (double)rounds, (unsigned long long)min,
           (unsigned long long)max, (double)total / 1e6);
    free(lat);
    free(sorted);
    return 0;
}
