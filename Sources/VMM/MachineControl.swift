import CHost
import CKVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The one place that decides the machine is ending, and why. The first reason wins;
/// the main thread sleeps on `wakeFD` (an eventfd) until a reason arrives.
public final class MachineControl: Sendable {
    private let reason = Mutex<MachineExit?>(nil)
    private let stoppingFlag = Atomic<Bool>(false)
    public let wakeFD: Int32
    /// Whether vCPU threads may enter the guest yet (`waitForGuestEntry`), under `gate`.
    private let gate = ConditionLock()
    nonisolated(unsafe) private var guestEntryAllowed: Bool

    /// `guestEntryAllowed: false` holds every vCPU thread before its first KVM_RUN until
    /// `allowGuestEntry()` (or the stop): `Machine.run` confines every thread first.
    public init(guestEntryAllowed: Bool = true) throws {
        let fd = host_eventfd()
        if fd < 0 { throw SetupError("eventfd: \(String(cString: strerror(-fd)))") }
        wakeFD = fd
        self.guestEntryAllowed = guestEntryAllowed
    }

    /// Lets vCPU threads enter the guest.
    public func allowGuestEntry() {
        gate.withLock { guestEntryAllowed = true; gate.broadcast() }
    }

    /// Blocks until guest entry is allowed or the machine is stopping.
    func waitForGuestEntry() {
        gate.withLock {
            while !guestEntryAllowed && !isStopping { gate.wait() }
        }
    }

    deinit { close(wakeFD) }

    public var isStopping: Bool { stoppingFlag.load(ordering: .sequentiallyConsistent) }
    public var exitReason: MachineExit? { reason.withLock { $0 } }

    /// Records why the machine ends (if no reason was recorded yet) and wakes the main thread.
    public func stop(_ why: MachineExit) {
        let first = reason.withLock { r -> Bool in
            if r != nil { return false }
            r = why
            return true
        }
        stoppingFlag.store(true, ordering: .sequentiallyConsistent)
        gate.withLock { gate.broadcast() }   // a vCPU thread held before its first entry sees the stop
        if first {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
        }
    }
}
