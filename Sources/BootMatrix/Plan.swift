import VMM

/// One configuration of the matrix, one run of it: `kite run` with these vCPUs and
/// interrupt controllers. Its files in the results directory are named after it.
public struct BootConfiguration: Equatable, Sendable {
    public var cpus: Int
    public var irqchip: InterruptControllerMode
    /// 1-based; `repeatCount` runs of each configuration.
    public var repetition: Int
    public var repeatCount: Int

    public init(cpus: Int, irqchip: InterruptControllerMode, repetition: Int = 1, repeatCount: Int = 1) {
        self.cpus = cpus
        self.irqchip = irqchip
        self.repetition = repetition
        self.repeatCount = repeatCount
    }

    /// `cpus4-kernel`, or `cpus4-kernel-run2` when each configuration runs more than once.
    public var name: String {
        "cpus\(cpus)-\(irqchip.rawValue)" + (repeatCount > 1 ? "-run\(repetition)" : "")
    }

    /// Every combination, CPU counts outermost, in the order given, each `repeatCount` times.
    public static func matrix(cpus: [Int], irqchips: [InterruptControllerMode], repeatCount: Int) -> [BootConfiguration] {
        cpus.flatMap { n in
            irqchips.flatMap { mode in
                (1...repeatCount).map { BootConfiguration(cpus: n, irqchip: mode, repetition: $0, repeatCount: repeatCount) }
            }
        }
    }
}

/// Parsing of boot-test's list arguments; each error is one line that says what to fix.
public enum BootTestArguments {
    /// The most vCPUs `kite run` accepts (with --irqchip split; 254 otherwise).
    public static let maxCPUs = 1024

    /// `1,2,4,16`: distinct counts, 1 to 1024.
    public static func cpuList(_ text: String) throws(SetupError) -> [Int] {
        var out: [Int] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let trimmed = item.trimmingSpaces
            guard let n = Int(trimmed), n >= 1, n <= maxCPUs else {
                throw SetupError("--cpus '\(text)': '\(trimmed)' is not a vCPU count from 1 to \(maxCPUs) (e.g. --cpus 1,2,4,16)")
            }
            guard !out.contains(n) else { throw SetupError("--cpus '\(text)': \(n) is listed twice") }
            out.append(n)
        }
        return out
    }

    /// `kernel,split,userspace`: distinct modes.
    public static func irqchipList(_ text: String) throws(SetupError) -> [InterruptControllerMode] {
        var out: [InterruptControllerMode] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let trimmed = item.trimmingSpaces
            guard let mode = InterruptControllerMode(rawValue: trimmed) else {
                throw SetupError("--irqchip '\(text)': '\(trimmed)' is not kernel, split or userspace")
            }
            guard !out.contains(mode) else { throw SetupError("--irqchip '\(text)': \(trimmed) is listed twice") }
            out.append(mode)
        }
        return out
    }

    /// Configurations `kite run` would refuse, said before anything starts: more than 254
    /// vCPUs need 32-bit APIC IDs, which only split mode has.
    public static func check(cpus: [Int], irqchips: [InterruptControllerMode]) throws(SetupError) {
        if let big = cpus.first(where: { $0 > 254 }), let mode = irqchips.first(where: { $0 != .split }) {
            throw SetupError("--cpus \(big) needs --irqchip split (xAPIC IDs end at 254); \(mode.rawValue) cannot run it")
        }
    }

    /// Default parallelism: the host's online CPUs divided by the busiest configuration's
    /// vCPUs, at least 1 (each vCPU is a host thread that should have a CPU of its own).
    public static func defaultJobs(hostCPUs: Int, cpus: [Int]) -> Int {
        max(1, hostCPUs / max(1, cpus.max() ?? 1))
    }
}

extension Substring {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
