#define _GNU_SOURCE
#include "ckvm.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int ckvm_ioctl_ptr(int fd, unsigned long request, void *arg) {
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

int ckvm_ioctl_val(int fd, unsigned long request, unsigned long value) {
    int r = ioctl(fd, request, value);
    return r < 0 ? -errno : r;
}

static unsigned long long ckvm_start_ns;

__attribute__((constructor)) static void ckvm_note_process_start(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ckvm_start_ns = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

unsigned long long ckvm_process_start_ns(void) { return ckvm_start_ns; }

static void ckvm_kick_handler(int signo) { (void)signo; }

int ckvm_install_kick_handler(int signo) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ckvm_kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; // no SA_RESTART: the signal must interrupt KVM_RUN
    return sigaction(signo, &sa, NULL) < 0 ? -errno : 0;
}

int ckvm_signal_thread(pthread_t thread, int signo) {
    return -pthread_kill(thread, signo);
}

void ckvm_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    pthread_setname_np(pthread_self(), buf);
}

int ckvm_join_thread(pthread_t thread, int milliseconds) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += milliseconds / 1000;
    deadline.tv_nsec += (long)(milliseconds % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) { deadline.tv_sec += 1; deadline.tv_nsec -= 1000000000L; }
    return -pthread_timedjoin_np(thread, NULL, &deadline);
}

int ckvm_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int ckvm_epoll_watch_events(int epfd, int fd, uint64_t tag, uint32_t events) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = tag;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int ckvm_epoll_modify(int epfd, int fd, uint64_t tag, uint32_t events) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = tag;
    return epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

int ckvm_epoll_wait_events(int epfd, uint64_t *tags, uint32_t *events, int max, int timeout) {
    struct epoll_event ev[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, ev, max, timeout);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) { tags[i] = ev[i].data.u64; events[i] = ev[i].events; }
    return n;
}

static int ckvm_unix_address(const char *path, struct sockaddr_un *addr) {
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr->sun_path) return -ENAMETOOLONG;
    strcpy(addr->sun_path, path);
    return 0;
}

int ckvm_unix_listen(const char *path) {
    struct sockaddr_un addr;
    int r = ckvm_unix_address(path, &addr);
    if (r < 0) return r;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 64) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int ckvm_unix_connect(const char *path) {
    struct sockaddr_un addr;
    int r = ckvm_unix_address(path, &addr);
    if (r < 0) return r;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int ckvm_accept(int fd) {
    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return c < 0 ? -errno : c;
}

long ckvm_send(int fd, const void *buffer, unsigned long length) {
    ssize_t n = send(fd, buffer, length, MSG_NOSIGNAL);
    return n < 0 ? -errno : n;
}

int ckvm_epoll_unwatch(int epfd, int fd) {
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL) < 0 ? -errno : 0;
}

long ckvm_getrandom(void *buffer, unsigned long length) {
    ssize_t n = getrandom(buffer, length, 0);
    return n < 0 ? -errno : n;
}

int ckvm_trap_msrs(int vmfd, uint32_t count, const uint32_t *indexes, const uint32_t *flags) {
    uint8_t denied[16] = {0};   // one MSR per range, its bit clear: denied, so the access exits
    struct kvm_msr_filter filter;
    if (count > 16 || count > KVM_MSR_FILTER_MAX_RANGES) return -EINVAL;
    memset(&filter, 0, sizeof filter);
    filter.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
    for (uint32_t i = 0; i < count; i++) {
        filter.ranges[i].flags = flags[i];
        filter.ranges[i].nmsrs = 1;
        filter.ranges[i].base = indexes[i];
        filter.ranges[i].bitmap = &denied[i];   // KVM copies the bitmaps during the ioctl
    }
    return ioctl(vmfd, KVM_X86_SET_MSR_FILTER, &filter) < 0 ? -errno : 0;
}

int ckvm_set_msi_routes(int vmfd, uint32_t count, const uint32_t *gsis, const uint64_t *addresses,
                        const uint32_t *datas) {
    // kvm_irq_routing ends in a flexible array: a fixed one of 64 entries after it.
    struct { struct kvm_irq_routing head; struct kvm_irq_routing_entry entries[64]; } table;
    if (count > 64) return -EINVAL;
    memset(&table, 0, sizeof table);
    table.head.nr = count;
    for (uint32_t i = 0; i < count; i++) {
        table.entries[i].gsi = gsis[i];
        table.entries[i].type = KVM_IRQ_ROUTING_MSI;
        table.entries[i].u.msi.address_lo = (uint32_t)addresses[i];
        table.entries[i].u.msi.address_hi = (uint32_t)(addresses[i] >> 32);
        table.entries[i].u.msi.data = datas[i];
    }
    return ioctl(vmfd, KVM_SET_GSI_ROUTING, &table) < 0 ? -errno : 0;
}

int ckvm_eventfd(void) {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

int ckvm_termination_signalfd(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

int ckvm_signalfd(int signo) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

int ckvm_read_signalfd(int fd) {
    struct signalfd_siginfo info;
    ssize_t n = read(fd, &info, sizeof info);
    if (n < 0) return errno == EAGAIN ? 0 : -errno;
    return n == (ssize_t)sizeof info ? (int)info.ssi_signo : 0;
}

const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
const unsigned long CKVM_IRQFD = KVM_IRQFD;
const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
const unsigned long CKVM_ENABLE_CAP = KVM_ENABLE_CAP;
const unsigned long CKVM_SET_CLOCK = KVM_SET_CLOCK;
const unsigned long CKVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;
const unsigned long CKVM_SIGNAL_MSI = KVM_SIGNAL_MSI;
const unsigned long CKVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;
const unsigned long CKVM_RUN = KVM_RUN;
const unsigned long CKVM_INTERRUPT = KVM_INTERRUPT;
const unsigned long CKVM_NMI = KVM_NMI;
const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
const unsigned long CKVM_GET_MSRS = KVM_GET_MSRS;
const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;
const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;
const unsigned long CKVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
const unsigned long CKVM_GET_XCRS = KVM_GET_XCRS;
const unsigned long CKVM_SET_XCRS = KVM_SET_XCRS;
