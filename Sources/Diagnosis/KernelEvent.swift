/// One report a Linux guest printed on its console that says something is wrong: a
/// watchdog (soft lockup, RCU stall, hung task), an NMI backtrace, or a crash report.
/// Produced by `ConsoleWatcher`; consumed by the diagnosis rules and the hang report.
public struct KernelEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        case softLockup = "soft lockup"
        case hardLockup = "hard lockup"
        case rcuStall = "RCU stall"
        case rcuExpeditedStall = "RCU expedited stall"
        case rcuKthreadStarved = "RCU kthread starved"
        case hungTask = "hung task"
        case nmiBacktrace = "NMI backtrace"
        case panic
        case oops
        case bug = "BUG"
        case warning = "WARNING"
        /// CONFIG_CSD_LOCK_WAIT_DEBUG: "csd: Detected non-responsive CSD lock (#1) on CPU#0,
        /// waiting 5000000042 ns for CPU#01 do_sync_core+0x0/0x30(0x0)." A cross-CPU function
        /// call (an IPI) that the target has not run for seconds.
        case csdLockTimeout = "CSD lock timeout"
    }

    public var kind: Kind
    /// The guest's printk time stamp of the report's first line, in seconds.
    public var timestamp: Double?
    /// The CPU the report is about: the stuck CPU of a soft lockup, the CPU of an NMI
    /// backtrace, the CPU in a WARNING/BUG/oops "CPU: N PID: ..." line.
    public var cpu: Int?
    /// RCU stalls: the CPUs the grace period waits for ("0-...!", "{ 1-...D }").
    public var stalledCPUs: [Int]
    /// RCU stalls: the CPU that detected it; NMI backtraces: the CPU that sent the NMI;
    /// hard lockups found by the buddy detector ("CPU1: Watchdog detected hard LOCKUP on cpu 2"):
    /// the CPU that noticed.
    public var detectedBy: Int?
    /// The CPUs this report asked for a backtrace ("Sending NMI from CPU 1 to CPUs 0:"). Their
    /// answers are separate `.nmiBacktrace` events; see `nmiTargetsWithoutBacktrace(in:)`.
    public var nmiTargets: [Int]
    /// How long the guest says it has been stuck: "stuck for 443s", "blocked for more than
    /// 120 seconds", an RCU stall's t=jiffies converted at HZ=250 is NOT done here (left nil).
    public var stuckSeconds: Int?
    /// The task named in the report ("(udev-worker)", pid 634), if any.
    public var task: String?
    public var pid: Int?
    /// The report's first line without the time stamp.
    public var headline: String
    /// "RIP: 0010:default_send_IPI_allbutself+0x2a/0x60" -> the frame after "RIP: 0010:".
    public var rip: KernelFrame?
    /// The call trace, innermost first, as printed (unreliable "? " frames included and marked).
    public var frames: [KernelFrame]
    /// Whether the interrupted context had interrupts enabled, from the report's first
    /// "EFLAGS:" (x86, bit 9) or "pstate:" (arm64, the I mask bit 7) register line.
    public var interruptsEnabled: Bool?
    /// RCU stalls: how long the grace period has waited, from "t=5252 jiffies".
    public var stallJiffies: Int?

    public init(kind: Kind, timestamp: Double? = nil, cpu: Int? = nil, stalledCPUs: [Int] = [],
                detectedBy: Int? = nil, stuckSeconds: Int? = nil, task: String? = nil, pid: Int? = nil,
                headline: String, rip: KernelFrame? = nil, frames: [KernelFrame] = [],
                nmiTargets: [Int] = []) {
        self.kind = kind
        self.timestamp = timestamp
        self.cpu = cpu
        self.stalledCPUs = stalledCPUs
        self.detectedBy = detectedBy
        self.stuckSeconds = stuckSeconds
        self.task = task
        self.pid = pid
        self.headline = headline
        self.rip = rip
        self.frames = frames
        self.nmiTargets = nmiTargets
    }

    /// The frame a person should look at first: the RIP, else the first reliable frame
    /// that is not part of the reporting machinery itself.
    public var topFrame: KernelFrame? {
        if let rip { return rip }
        return frames.first { $0.reliable } ?? frames.first
    }
}

/// One call-trace entry: "smp_call_function_many_cond+0x18c/0x778 [module]", or one decoded
/// by decode_stacktrace.sh or syzbot: "csd_lock_wait kernel/smp.c:443 [inline]",
/// "smp_call_function_many_cond+0x18c/0x778 kernel/smp.c:886",
/// "smp_call_function_many_cond (kernel/smp.c:443 kernel/smp.c:886)".
public struct KernelFrame: Sendable, Equatable, CustomStringConvertible {
    public var function: String
    /// The offset into the function and its size; both 0 when the trace did not print them
    /// (a decoded frame that names its source line instead).
    public var offset: UInt64
    public var size: UInt64
    public var module: String?
    /// False for frames printed with a leading "? " (found on the stack, not proven).
    public var reliable: Bool
    /// The source location a decoded trace printed ("kernel/smp.c:443").
    public var source: String?
    /// A decoded trace's "[inline]": the function was inlined into the next frame.
    public var inlined: Bool

    public init(function: String, offset: UInt64, size: UInt64, module: String? = nil, reliable: Bool = true,
                source: String? = nil, inlined: Bool = false) {
        self.function = function
        self.offset = offset
        self.size = size
        self.module = module
        self.reliable = reliable
        self.source = source
        self.inlined = inlined
    }

    public var description: String {
        var text = function
        if offset != 0 || size != 0 { text += "+0x\(String(offset, radix: 16))/0x\(String(size, radix: 16))" }
        if let module { text += " [\(module)]" }
        if let source { text += " " + source }
        if inlined { text += " [inline]" }
        return text
    }
}
