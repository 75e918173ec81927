import CKVM
#if canImport(Glibc)
import Glibc
#endif

// What each Kite thread may call: the lists themselves, as data. The build compiles them to
// BPF (the SeccompBPF plugin runs kite-seccomp-bpf, which uses libseccomp); Sandbox installs
// the compiled programs at run time.

/// A system call a thread may make: any call (`arguments` empty), or only with argument
/// `argumentIndex` equal to one of `arguments` (ioctl request numbers, socket families).
public struct SyscallRule: Equatable, Sendable {
    public let name: String
    public let argumentIndex: UInt32
    public let arguments: [UInt64]

    public static func call(_ name: String) -> SyscallRule {
        SyscallRule(name: name, argumentIndex: 0, arguments: [])
    }
    public static func call(_ name: String, argument index: UInt32, in values: [UInt64]) -> SyscallRule {
        SyscallRule(name: name, argumentIndex: index, arguments: values)
    }
}

/// The kinds of thread Kite runs once the guest starts, each confined to its own list.
public enum ThreadRole: String, CaseIterable, Sendable {
    /// The main thread: signals, console input, the orderly stop.
    case main
    /// A vCPU thread: KVM_RUN and its exits, the guest's port and MMIO devices.
    case vcpu
    /// The device thread (`kite-devices`): virtio queues, the disk image, the tap, vsock.
    case devices
    /// The hang watchdog (`kite-watchdog`): samples, reports, the API socket.
    case watchdog
    /// `userspace` mode's local APIC timers (`kite-apic-timer`).
    case apicTimer = "apic-timer"
    /// The console writer (`kite-console`): the guest's output to stdout or its file.
    case console
    /// Firecracker's API thread (`kite-api`, `kite firecracker`), from its start.
    case api
}

/// What each thread kind may call after setup, and nothing more. Found by tracing kite's
/// threads (strace -f) through the tests with tiny guests and by reading the code paths
/// that tests reach rarely (reports, errors); checked by running the whole Linux boot
/// matrix, every device, in all three interrupt-controller modes, with the lists enforced.
/// Whatever is not listed raises SIGSYS: `SeccompViolation` names it.
public enum ThreadAllowLists {
    public static func rules(for role: ThreadRole) -> [SyscallRule] {
        let own: [SyscallRule]
        switch role {
        case .main: own = main
        case .vcpu: own = vcpu
        case .devices: own = devices
        case .watchdog: own = watchdog
        case .apicTimer: own = []
        case .console: own = [.call("poll")]   // waiting for room on a non-blocking stdout
        case .api: own = api
        }
        return everyThread + own
    }

    /// Every thread: memory (malloc), locks and condition waits, clocks, its own exit, lines
    /// on stderr and eventfd writes (`write`), kicking a vCPU (`tgkill`, as pthread_kill does,
    /// after `getpid`), closing what it owns, and stat of an open fd (stdio's first write).
    static let everyThread: [SyscallRule] = [
        "mmap", "munmap", "mprotect", "madvise", "brk", "mremap",
        "futex", "sched_yield", "restart_syscall", "rt_sigreturn", "rt_sigprocmask",
        "clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday",
        "gettid", "getpid", "tgkill", "exit", "exit_group",
        "write", "close", "fstat", "newfstatat",
    ].map { SyscallRule.call($0) }

    /// KVM_RUN and the calls on the vCPU's own state (registers, MSRs, local APIC, events,
    /// INIT/SIPI in `userspace` mode), injection, and the VM-wide interrupt calls a guest's
    /// port or MMIO write can lead to (IRQ lines, MSIs, the IOAPIC's routes in `split` mode).
    /// Not: creating anything, memory slots, irqfds or ioeventfds, capabilities, CPUID.
    static let vcpuIoctls: [UInt] = [
        CKVM_RUN, CKVM_GET_REGS, CKVM_SET_REGS, CKVM_GET_SREGS, CKVM_SET_SREGS,
        CKVM_GET_MSRS, CKVM_SET_MSRS, CKVM_GET_LAPIC, CKVM_SET_LAPIC, CKVM_GET_MP_STATE, CKVM_SET_MP_STATE,
        CKVM_GET_VCPU_EVENTS, CKVM_SET_FPU, CKVM_SET_XCRS, CKVM_GET_TSC_KHZ, CKVM_INTERRUPT, CKVM_NMI,
        CKVM_IRQ_LINE, CKVM_SIGNAL_MSI, CKVM_SET_GSI_ROUTING,
    ]

    static let vcpu: [SyscallRule] = [
        .call("ioctl", argument: 1, in: vcpuIoctls.map { UInt64($0) }),
        .call("read"),   // eventfds
    ]

    /// Queue work: eventfds and epoll; the disk image (positioned reads and writes, flush,
    /// discard); the tap (reads and writes of frames); vsock's Unix sockets (new streams to
    /// host services, accepted connections); virtio-rng's getrandom; interrupt lines.
    static let devices: [SyscallRule] = [
        "epoll_wait", "epoll_pwait", "epoll_ctl",
        "read", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
        "fsync", "fdatasync", "fallocate", "getrandom",
        "accept4", "connect", "sendto", "sendmsg", "recvfrom", "recvmsg", "shutdown", "getsockopt",
    ].map { SyscallRule.call($0) } + [
        .call("socket", argument: 0, in: [UInt64(AF_UNIX)]),
        .call("ioctl", argument: 1, in: [UInt64(CKVM_IRQ_LINE), UInt64(CKVM_SIGNAL_MSI)]),
    ]

    /// Sleeping between samples (poll on its stop eventfd, SIGUSR1's signalfd and the API
    /// socket), serving `kite inspect`, reading the guest's System.map, writing reports
    /// (a temporary file renamed into place).
    static let watchdog: [SyscallRule] = [
        "poll", "ppoll", "read", "pread64", "lseek", "openat", "rename", "fsync", "unlink",
        "accept4", "sendto", "recvfrom",
    ].map { SyscallRule.call($0) }

    /// Serving Firecracker's API, from before the machine exists (the main thread builds it):
    /// the socket and its connections; checking the files a request names (opening them, or
    /// creating a log or metrics file); PATCH /drives (opening, locking, measuring and
    /// flushing disk images); FlushMetrics (appending to the metrics file); the hang report
    /// (asking the control socket). SendCtrlAltDel only writes the keyboard's eventfd.
    static let api: [SyscallRule] = [
        "poll", "ppoll", "read", "accept4", "sendto", "recvfrom", "connect",
        "openat", "fcntl", "flock", "lseek", "fsync", "fdatasync",
    ].map { SyscallRule.call($0) } + [
        .call("socket", argument: 0, in: [UInt64(AF_UNIX)]),
    ]

    /// Terminal requests for console input (raw mode on and off, the window size).
    static let terminalIoctls: [UInt64] = [UInt64(TCGETS), UInt64(TCSETS), UInt64(TCSETSW), UInt64(TCSETSF), UInt64(TIOCGWINSZ)]

    /// Waiting for the stop, signals and console input; feeding input to the UART (its
    /// interrupt line); the orderly stop (joining threads, removing sockets); the crash
    /// report's file.
    static let main: [SyscallRule] = [
        "poll", "ppoll", "read", "pread64", "lseek", "openat", "rename", "fsync", "unlink",
    ].map { SyscallRule.call($0) } + [
        .call("ioctl", argument: 1, in: terminalIoctls + [UInt64(CKVM_IRQ_LINE), UInt64(CKVM_SIGNAL_MSI)]),
    ]
}
