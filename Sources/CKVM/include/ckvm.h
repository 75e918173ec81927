// CKVM: the only place Kite touches <linux/kvm.h> from C.
// Swift cannot call the variadic ioctl() or import function-like macros (KVM_RUN, ...),
// so this header wraps ioctl in non-variadic functions that return -errno on failure and
// exports every request number Kite uses as a constant (defined in ckvm.c).
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
#include <stdint.h>
#include <pthread.h>

/// ioctl(fd, request, arg) with a pointer argument; returns the result, or -errno.
int ckvm_ioctl_ptr(int fd, unsigned long request, void *arg);
/// ioctl(fd, request, value) with an integer argument; returns the result, or -errno.
int ckvm_ioctl_val(int fd, unsigned long request, unsigned long value);

/// Installs a no-op handler for `signo` without SA_RESTART, so the signal interrupts
/// KVM_RUN (which then returns -EINTR). Returns 0 or -errno.
int ckvm_install_kick_handler(int signo);
/// pthread_kill wrapper; returns 0 or -errno.
int ckvm_signal_thread(pthread_t thread, int signo);

/// CLOCK_MONOTONIC in ns when the process started: taken by a constructor that runs
/// before the Swift runtime and main (the zero of `kite run --boot-timing`).
unsigned long long ckvm_process_start_ns(void);

/// Names the calling thread (shown by ps -L and in /proc); truncated to 15 bytes.
void ckvm_set_thread_name(const char *name);
/// pthread_timedjoin_np with a relative timeout: 0 once the thread has ended (and is
/// joined), -ETIMEDOUT if it is still running after `milliseconds`, or another -errno.
int ckvm_join_thread(pthread_t thread, int milliseconds);
/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); returns the fd or -errno.
int ckvm_eventfd(void);
/// Sends the guest's accesses to `count` MSRs (at most 16) to the VMM: `indexes[i]` for
/// reads when `flags[i]` has KVM_MSR_FILTER_READ (1), writes when it has
/// KVM_MSR_FILTER_WRITE (2); every other access stays KVM's. One filter for the VM, so one
/// call with every MSR. 0 or -errno.
int ckvm_trap_msrs(int vmfd, uint32_t count, const uint32_t *indexes, const uint32_t *flags);
/// Replaces the VM's GSI routing table (KVM_SET_GSI_ROUTING) with `count` MSI routes: route
/// i sends gsi `gsis[i]` as the MSI (`addresses[i]`, `datas[i]`). At most 64. 0 or -errno.
int ckvm_set_msi_routes(int vmfd, uint32_t count, const uint32_t *gsis, const uint64_t *addresses,
                        const uint32_t *datas);
/// A non-blocking signalfd for SIGINT and SIGTERM (which the caller must block);
/// returns the fd or -errno.
int ckvm_termination_signalfd(void);
/// Reads one signal from a signalfd; returns its number, 0 if none, or -errno.
int ckvm_read_signalfd(int fd);
/// A non-blocking signalfd for one signal (which the caller blocks), or -errno.
int ckvm_signalfd(int signo);

/// epoll_create1(EPOLL_CLOEXEC); the fd or -errno. (struct epoll_event is packed on x86-64,
/// which Swift cannot lay out reliably, so epoll is used only through these calls.)
int ckvm_epoll_create(void);
/// Watches `fd` for `events` (CKVM_EPOLL_IN | CKVM_EPOLL_OUT; 0 = registered but quiet).
int ckvm_epoll_watch_events(int epfd, int fd, uint64_t tag, uint32_t events);
/// Changes the events watched for `fd`. 0 or -errno.
int ckvm_epoll_modify(int epfd, int fd, uint64_t tag, uint32_t events);
/// Waits for events (timeout in ms, -1 = forever); stores up to `max` tags and each event's
/// mask (CKVM_EPOLL_*). The count or -errno.
int ckvm_epoll_wait_events(int epfd, uint64_t *tags, uint32_t *events, int max, int timeout);
#define CKVM_EPOLL_IN 0x001u
#define CKVM_EPOLL_OUT 0x004u
#define CKVM_EPOLL_ERR 0x008u
#define CKVM_EPOLL_HUP 0x010u

/// A listening, non-blocking AF_UNIX stream socket at `path` (a stale socket file there is
/// removed first). The fd or -errno.
int ckvm_unix_listen(const char *path);
/// A non-blocking connection to the AF_UNIX stream socket at `path`. The fd or -errno
/// (-EAGAIN when its backlog is full).
int ckvm_unix_connect(const char *path);
/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC. The fd or -errno.
int ckvm_accept(int fd);
/// send with MSG_NOSIGNAL (a closed peer is an error, not SIGPIPE). The count or -errno.
long ckvm_send(int fd, const void *buffer, unsigned long length);

/// Stops watching `fd` (EPOLL_CTL_DEL). 0 or -errno.
int ckvm_epoll_unwatch(int epfd, int fd);
/// Fills `buffer` from the kernel's CSPRNG (getrandom). The count or -errno.
long ckvm_getrandom(void *buffer, unsigned long length);

/// Sequentially consistent store to kvm_run.immediate_exit, the byte KVM reads at
/// KVM_RUN entry: a kick sets it after the stop request so the vCPU cannot miss either.
static inline void ckvm_set_immediate_exit(struct kvm_run *run, uint8_t value) {
    __atomic_store_n(&run->immediate_exit, value, __ATOMIC_SEQ_CST);
}

/// The 8-byte MMIO data buffer inside the shared kvm_run page. Swift imports the anonymous
/// union as a computed property (a copy), so writes for MMIO reads must go through this.
static inline uint8_t *ckvm_run_mmio_data(struct kvm_run *run) {
    return run->mmio.data;
}

/// kvm_cpuid2 with a fixed-size entry array (Swift cannot allocate flexible array members).
struct ckvm_cpuid {
    __u32 nent;
    __u32 padding;
    struct kvm_cpuid_entry2 entries[256];
};
#define CKVM_MAX_CPUID_ENTRIES 256

/// kvm_msrs with a fixed-size entry array.
struct ckvm_msrs {
    __u32 nmsrs;
    __u32 pad;
    struct kvm_msr_entry entries[32];
};
#define CKVM_MAX_MSR_ENTRIES 32

// System ioctls
extern const unsigned long CKVM_GET_API_VERSION;
extern const unsigned long CKVM_CREATE_VM;
extern const unsigned long CKVM_CHECK_EXTENSION;
extern const unsigned long CKVM_GET_VCPU_MMAP_SIZE;
extern const unsigned long CKVM_GET_SUPPORTED_CPUID;
// VM ioctls
extern const unsigned long CKVM_SET_USER_MEMORY_REGION;
extern const unsigned long CKVM_SET_TSS_ADDR;
extern const unsigned long CKVM_SET_IDENTITY_MAP_ADDR;
extern const unsigned long CKVM_CREATE_IRQCHIP;
extern const unsigned long CKVM_CREATE_PIT2;
extern const unsigned long CKVM_CREATE_VCPU;
extern const unsigned long CKVM_IRQ_LINE;
extern const unsigned long CKVM_IRQFD;
extern const unsigned long CKVM_IOEVENTFD;
extern const unsigned long CKVM_ENABLE_CAP;
extern const unsigned long CKVM_SET_CLOCK;
extern const unsigned long CKVM_SET_GSI_ROUTING;
// vCPU ioctls
extern const unsigned long CKVM_SIGNAL_MSI;
extern const unsigned long CKVM_GET_TSC_KHZ;
extern const unsigned long CKVM_RUN;
extern const unsigned long CKVM_INTERRUPT;
extern const unsigned long CKVM_NMI;
extern const unsigned long CKVM_GET_REGS;
extern const unsigned long CKVM_SET_REGS;
extern const unsigned long CKVM_GET_SREGS;
extern const unsigned long CKVM_SET_SREGS;
extern const unsigned long CKVM_SET_CPUID2;
extern const unsigned long CKVM_GET_MSRS;
extern const unsigned long CKVM_SET_MSRS;
extern const unsigned long CKVM_GET_LAPIC;
extern const unsigned long CKVM_SET_LAPIC;
extern const unsigned long CKVM_GET_MP_STATE;
extern const unsigned long CKVM_SET_MP_STATE;
extern const unsigned long CKVM_GET_VCPU_EVENTS;
extern const unsigned long CKVM_SET_FPU;
extern const unsigned long CKVM_GET_XCRS;
extern const unsigned long CKVM_SET_XCRS;

#endif
