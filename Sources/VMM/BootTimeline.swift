import HostCalls
import CHost
import Synchronization

/// When the machine reached each boot milestone, for `--boot-timing`: monotonic ns, each
/// recorded once, by whichever thread gets there (vCPU 0, the console, the boot timer).
public final class BootTimeline: Sendable {
    public enum Milestone: CaseIterable, Sendable {
        case firstInstruction, firstConsoleByte, initMarker
        var label: String {
            switch self {
            case .firstInstruction: "first guest instruction"
            case .firstConsoleByte: "first console byte"
            case .initMarker: "init marker"
            }
        }
    }

    /// Process start: taken by a constructor in the C shim, before Swift's runtime starts.
    public let start: UInt64
    private let firstInstruction = Atomic<UInt64>(0)
    private let firstConsoleByte = Atomic<UInt64>(0)
    private let initMarker = Atomic<UInt64>(0)

    public init(start: UInt64 = BootTimeline.processStart) { self.start = start }

    public static var processStart: UInt64 { host_process_start_ns() }

    /// Records `milestone` now, unless it was already; true the first time.
    @discardableResult
    public func mark(_ milestone: Milestone) -> Bool {
        if time(of: milestone) != 0 { return false }
        let now = max(1, monotonicNanoseconds())
        switch milestone {
        case .firstInstruction: return firstInstruction.compareExchange(expected: 0, desired: now, ordering: .relaxed).exchanged
        case .firstConsoleByte: return firstConsoleByte.compareExchange(expected: 0, desired: now, ordering: .relaxed).exchanged
        case .initMarker: return initMarker.compareExchange(expected: 0, desired: now, ordering: .relaxed).exchanged
        }
    }

    private func time(of milestone: Milestone) -> UInt64 {
        switch milestone {
        case .firstInstruction: firstInstruction.load(ordering: .relaxed)
        case .firstConsoleByte: firstConsoleByte.load(ordering: .relaxed)
        case .initMarker: initMarker.load(ordering: .relaxed)
        }
    }

    /// Milliseconds from process start to `milestone`, or nil if not reached yet.
    public func milliseconds(to milestone: Milestone) -> Double? {
        let t = time(of: milestone)
        return t == 0 ? nil : Double(t &- start) / 1e6
    }

    /// One line: `kite: boot timing (ms since kite started): first guest instruction 4.1, ...`.
    public func summary() -> String {
        let parts = Milestone.allCases.map { m in
            milliseconds(to: m).map { "\(m.label) \(Self.format($0))" } ?? "\(m.label) not reached"
        }
        return "kite: boot timing (ms since kite started): " + parts.joined(separator: ", ")
    }

    static func format(_ ms: Double) -> String {
        let tenths = Int((ms * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
