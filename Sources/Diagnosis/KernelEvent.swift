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

/// One call-trace entry: "smp_call_function_many_cond+0x18c/0x778 [module]".
public struct KernelFrame: Sendable, Equatable, CustomStringConvertible {
    public var function: String
    public var offset: UInt64
    public var size: UInt64
    public var module: String?
    /// False for frames printed with a leading "? " (found on the stack, not proven).
    public var reliable: Bool

    public init(function: String, offset: UInt64, size: UInt64, module: String? = nil, reliable: Bool = true) {
        self.function = function
        self.offset = offset
        self.size = size
        self.module = module
        self.reliable = reliable
    }

    public var description: String {
        "\(function)+0x\(String(offset, radix: 16))/0x\(String(size, radix: 16))" + (module.map { " [\($0)]" } ?? "")
    }
}
