import Sandbox
import SeccompAllowLists

/// Faults Kite can inject into its own machine, for testing hang diagnosis and the sandbox
/// only (`kite run --inject`). Off unless asked for.
public enum FaultInjection: Equatable, Sendable {
    /// From `afterSeconds` after the guest starts, vCPU `vcpu`'s thread stops entering the
    /// guest: the symptom of a VMM that starves a vCPU or never delivers its wake-up.
    case stallVCPU(vcpu: Int, afterSeconds: Double)
    /// The first thread of this kind makes a system call outside its seccomp allow-list
    /// once it is confined: Kite must name it and stop in order.
    case seccompViolation(ThreadRole)

    static let seccompPrefix = "seccomp-violation="

    /// Parses `stall-vcpu=N@Ts` (T in seconds; a trailing "s" is optional) or
    /// `seccomp-violation=ROLE` (a `ThreadRole`: main, vcpu, devices, watchdog, apic-timer, console).
    public static func parse(_ text: String) throws(SetupError) -> FaultInjection {
        if text.hasPrefix(seccompPrefix) {
            let name = text.dropFirst(seccompPrefix.count)
            guard let role = ThreadRole(rawValue: String(name)) else {
                throw SetupError("'\(text)': the thread is one of " + ThreadRole.allCases.map(\.rawValue).joined(separator: ", "))
            }
            return .seccompViolation(role)
        }
        guard text.hasPrefix("stall-vcpu=") else {
            throw SetupError("unknown fault '\(text)': stall-vcpu=N@SECONDSs or seccomp-violation=THREAD")
        }
        let spec = text.dropFirst("stall-vcpu=".count).split(separator: "@", omittingEmptySubsequences: false)
        guard spec.count == 2, let vcpu = Int(spec[0]), vcpu >= 0 else {
            throw SetupError("'\(text)' is not stall-vcpu=N@SECONDSs (e.g. stall-vcpu=2@20s)")
        }
        var time = spec[1]
        if time.hasSuffix("s") { time = time.dropLast() }
        guard let seconds = Double(time), seconds >= 0, seconds <= 86_400 else {
            throw SetupError("'\(text)': the time must be 0 to 86400 seconds (e.g. @20s)")
        }
        return .stallVCPU(vcpu: vcpu, afterSeconds: seconds)
    }

    /// The vCPU the fault is about, if any.
    var vcpu: Int? {
        switch self {
        case .stallVCPU(let v, _): v
        case .seccompViolation: nil
        }
    }
}
