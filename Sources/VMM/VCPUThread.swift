import CHost
import CKVM
import Devices
import Diagnosis
import HostCalls
import KVM
import Sandbox
import Synchronization
import X86Boot
#if canImport(Glibc)
import Glibc
#endif

/// A vCPU on its own POSIX thread (never the Swift cooperative pool): runs the guest and
/// hands port and MMIO exits to the buses until the machine stops.
///
/// For hang diagnosis it records when it last entered and left KVM_RUN, and answers
/// snapshot requests: other threads cannot read a vCPU's state while it is inside KVM_RUN,
/// so they post a request; the vCPU's own thread reads its state before it re-enters the
/// guest. Everything posted to the thread (snapshot requests, fault injection, release)
/// follows the wake-up protocol of Docs/WakeupProtocol.md, model-checked in
/// Models/wakeup.pml: record under the thread's lock, then wake it if it waits in Kite or
/// kick it out of KVM_RUN; it never sleeps to poll.
final class VCPUThread: @unchecked Sendable {
    let vcpu: VCPU
    private let ports: Bus
    private let mmio: Bus
    private let interrupts: any InterruptController
    /// Kite keeps this vCPU's local APIC (`userspace` mode): fixed at creation.
    private let hasOwnAPIC: Bool
    private let control: MachineControl
    private var thread: pthread_t?
    /// Marked when this vCPU first enters the guest (given to the boot vCPU only).
    private let timeline: BootTimeline?

    /// What the thread is doing (a `VCPUThreadState`, encoded), when it last entered KVM_RUN,
    /// and when and how often the guest made it leave (port, MMIO, HLT, ... exits; kicks are
    /// not counted). Monotonic ns; written by the vCPU thread, read by anyone.
    private let activity = Atomic<UInt8>(ThreadActivity.handlingExit.rawValue)
    private let lastEntry = Atomic<UInt64>(monotonicNanoseconds())
    /// When KVM_RUN last returned, for any reason (kicks included): since then a thread that
    /// is not in the guest has been out of it.
    private let lastReturn = Atomic<UInt64>(monotonicNanoseconds())
    private let lastExit = Atomic<UInt64>(monotonicNanoseconds())
    private let exits = Atomic<UInt64>(0)
    /// The protocol's per-vCPU lock and condition, and what it guards.
    private let events = ConditionLock()
    private var posted = PostedEvents()  // guarded by `events`

    private enum ThreadActivity: UInt8 {
        case inGuest, handlingExit, stalled, stopped, waitingInKite, paused
        var state: VCPUThreadState {
            switch self {
            case .inGuest: .inGuest
            case .waitingInKite: .waitingInKite
            case .handlingExit: .handlingExit
            case .stalled: .stalledByInjection
            case .paused: .paused
            case .stopped: .stopped
            }
        }
    }

    /// What other threads post to this vCPU's thread.
    private struct PostedEvents {
        /// The thread is blocked in `events.wait` (the model's WAITING): a post wakes it
        /// rather than kicking it. Set before each wait and cleared on every return from it.
        var waiting = false
        /// Snapshot requests and answers, matched by a sequence number.
        var snapshotsRequested: UInt64 = 0
        var snapshotsAnswered: UInt64 = 0
        var answer: VCPUStateReading?
        /// Set by fault injection: the thread stops entering the guest.
        var stalled = false
        /// Set while the machine is paused (Firecracker's PATCH /vm): the thread stays out of
        /// the guest; `parked` says it is there, for the pauser waiting on the same lock.
        var paused = false
        var parked = false
        /// Set when the machine no longer needs this vCPU's state; until then a thread
        /// whose loop has ended keeps answering snapshot requests (for the report on a crash).
        var released = false
        /// The thread's loop is over: nothing to wake or kick any more.
        var ended = false
        /// The local APIC and INIT/SIPI/HLT state when Kite keeps them (`userspace` mode).
        var interrupts: UserspaceVCPUState?

        var pendingSnapshot: UInt64? { snapshotsRequested > snapshotsAnswered ? snapshotsRequested : nil }
    }

    init(vcpu: VCPU, ports: Bus, mmio: Bus, interrupts: any InterruptController, control: MachineControl,
         timeline: BootTimeline? = nil) {
        self.vcpu = vcpu
        self.interrupts = interrupts
        posted.interrupts = interrupts.initialState(forVCPU: vcpu.id, apicID: UInt8(truncatingIfNeeded: CPUIDTemplate.apicID(forVCPU: vcpu.id)))
        hasOwnAPIC = posted.interrupts != nil
        self.timeline = timeline
        self.ports = ports
        self.mmio = mmio
        self.control = control
    }

    /// Starts the thread, confined by `seccomp` if given. It enters the guest once the
    /// machine's control allows it (`MachineControl.allowGuestEntry`).
    /// `namePrefix`: the thread is named PREFIX + the vCPU's index (`kite-vcpu3`).
    func start(seccomp: SeccompProgram? = nil, namePrefix: String = "kite-vcpu") throws {
        switch startKiteThread(name: "\(namePrefix)\(vcpu.id)", seccomp: seccomp, { [self] in runLoop() }) {
        case .success(let t): thread = t
        case .failure(let e): throw SetupError("cannot start the thread for vCPU \(vcpu.id): \(e)", cause: e)
        }
    }

    /// Waits for the thread to finish (after `control.stop` and `release` or a kick); releases
    /// it first, waking it if it waits out of the guest, but does not kick it out of KVM_RUN.
    /// Gives up after `milliseconds` and returns false if the thread is still running: a
    /// thread that does not come back out of KVM_RUN (stuck in the host kernel) must not keep
    /// Kite from exiting with what it knows.
    @discardableResult
    func join(withinMilliseconds milliseconds: Int32) -> Bool {
        post(kicking: false) { $0.released = true }
        guard let t = thread else { return true }
        let rc = retryingHostCall({ host_join_thread(t, milliseconds) })
        guard rc != -ETIMEDOUT else { return false }
        thread = nil
        return true
    }

    private func runLoop() {
        vcpu.attachCurrentThread()
        defer { activity.store(ThreadActivity.stopped.rawValue, ordering: .releasing) }
        control.waitForGuestEntry()
        ForbiddenCallInjection.fireIfArmed(.vcpu)
        var entered = false
        while !control.isStopping {
            // The last look at what was posted, after clearing the kick, under the lock: a
            // post from here on finds immediate_exit clear and sets it, so KVM_RUN returns at
            // once (the model's FLAW_LATE_CLEAR is this done the other way round).
            let (snapshot, stalled, paused) = events.withLock { () -> (UInt64?, Bool, Bool) in
                vcpu.clearKick()
                return (posted.pendingSnapshot, posted.stalled, posted.paused)
            }
            if let snapshot {
                answerSnapshot(snapshot)
                continue
            }
            if paused {
                holdWhilePaused()
                continue
            }
            if stalled {
                holdOutOfGuest()
                continue
            }
            // Kite's own local APIC (`userspace`): INIT/SIPI, halt, injection. The kick was
            // cleared before this look too, so a post from here on still ends the next run.
            if hasOwnAPIC, case .wait(let deadline) = events.withLock({
                interrupts.prepareEntry(vcpu.id, &posted.interrupts!, vcpu: vcpu)
            }) {
                activity.store(ThreadActivity.waitingInKite.rawValue, ordering: .releasing)
                waitOutOfGuest(until: { ($0.interrupts?.canRun ?? true) || $0.released || $0.stalled || $0.paused }, deadline: deadline)
                continue
            }
            if !hasOwnAPIC { interrupts.beforeEntry(vcpu.id, vcpu: vcpu) }
            let exit: VCPUExit
            lastEntry.store(monotonicNanoseconds(), ordering: .relaxed)
            activity.store(ThreadActivity.inGuest.rawValue, ordering: .releasing)
            if !entered { entered = true; timeline?.mark(.firstInstruction) }
            let cr8AtEntry = vcpu.cr8
            do {
                exit = try vcpu.run()
            } catch {
                activity.store(ThreadActivity.handlingExit.rawValue, ordering: .releasing)
                control.stop(.vmmError("\(error)"))
                break
            }
            lastReturn.store(monotonicNanoseconds(), ordering: .relaxed)
            // Kite's APIC learns a CR8 the guest wrote before handling the exit, which may
            // itself be a TPR write through the APIC page (the newer value wins).
            if hasOwnAPIC && vcpu.cr8 != cr8AtEntry {
                let cr8 = vcpu.cr8
                events.withLock { interrupts.guestWroteCR8(&posted.interrupts!, cr8) }
            }
            activity.store(ThreadActivity.handlingExit.rawValue, ordering: .releasing)
            if case .interrupted = exit {} else {
                // Kicks (snapshots, stop) are Kite's doing; only exits the guest caused count.
                lastExit.store(monotonicNanoseconds(), ordering: .relaxed)
                exits.add(1, ordering: .relaxed)
            }
            handle(exit)
        }
        // The machine is stopping: stay out of the guest, but let a final report (after a
        // crash of another vCPU) still read this one, until `release()`.
        activity.store(ThreadActivity.stopped.rawValue, ordering: .releasing)
        waitOutOfGuest(until: { $0.released })
        events.withLock { posted.ended = true }
    }

    /// Records an event for the thread (under its lock), then wakes the thread if it waits
    /// in Kite, or kicks it out of KVM_RUN (immediate_exit, then the kick signal) otherwise.
    /// (`kicking: false`: wakes a waiting thread but leaves one in the guest there.)
    private func post<R>(kicking: Bool = true, _ record: (inout PostedEvents) -> R) -> R {
        events.withLock {
            let result = record(&posted)
            if posted.waiting { events.broadcast() } else if kicking && !posted.ended { vcpu.kick() }
            return result
        }
    }

    /// Blocks out of the guest until `done` holds for what was posted, answering snapshot
    /// requests meanwhile. Only a post (or the machine's stop, which `release` follows)
    /// ends a wait: there is no timeout and no polling.
    private func waitOutOfGuest(until done: (PostedEvents) -> Bool, deadline: UInt64? = nil) {
        while true {
            let snapshot = events.withLock { () -> UInt64? in
                while !done(posted) && posted.pendingSnapshot == nil {
                    posted.waiting = true
                    let inTime = events.wait(untilNanoseconds: deadline)
                    posted.waiting = false  // on every return: a thread marked waiting while it runs is never kicked
                    if !inTime { break }    // a timer is due: the caller looks again
                }
                return posted.pendingSnapshot
            }
            guard let snapshot else { return }
            answerSnapshot(snapshot)
        }
    }

    /// Lets the thread end once the machine stops (call before `join`); kicks it out of
    /// the guest or wakes it.
    func release() {
        post { $0.released = true }
    }

    // MARK: Diagnosis

    /// Fault injection (testing only): from now on the thread does not enter the guest,
    /// as if Kite had starved this vCPU. It still answers snapshot requests.
    func stallForTesting() {
        post { $0.stalled = true }
    }

    /// Runs `body` on this vCPU's interrupt state under its lock, without waking or
    /// kicking it (the vCPU's own accesses, and readers). Only in `userspace` mode.
    func withInterruptState<R>(_ body: (inout UserspaceVCPUState) -> R) -> R {
        events.withLock { body(&posted.interrupts!) }
    }

    /// Posts an interrupt event (an IPI, NMI, INIT, SIPI, a timer that is due): recorded
    /// under the vCPU's lock, then the vCPU is woken or kicked. Only in `userspace` mode.
    func postInterruptEvent(_ record: (inout UserspaceVCPUState) -> Void) {
        post { box in
            if box.interrupts != nil { record(&box.interrupts!) }
        }
    }

    /// Wakes the thread or kicks it out of KVM_RUN, so that its next look before entry
    /// (`InterruptController.beforeEntry`) sees what was posted elsewhere: `split`'s PIC.
    func wake() {
        post { _ in }
    }

    /// Pauses the thread (PATCH /vm Paused): it leaves the guest and stays out until `resume`.
    /// Returns once it is out, or false if it was not out by `deadline` (stuck in KVM_RUN).
    /// Interrupts posted meanwhile are kept where they were posted (KVM's local APIC, or
    /// Kite's in `userspace` mode) and taken when the vCPU runs again.
    func pause(untilNanoseconds deadline: UInt64) -> Bool {
        post { $0.paused = true }
        return events.withLock {
            while !posted.parked && !posted.ended {
                if !events.wait(untilNanoseconds: deadline) { break }
            }
            return posted.parked || posted.ended
        }
    }

    /// Lets a paused thread enter the guest again.
    func resume() {
        post { $0.paused = false }
    }

    /// Blocks out of the guest while paused, answering snapshot requests; `resume` or the
    /// machine's stop (through `release`) ends it.
    private func holdWhilePaused() {
        activity.store(ThreadActivity.paused.rawValue, ordering: .releasing)
        events.withLock { posted.parked = true; events.broadcast() }
        waitOutOfGuest(until: { !$0.paused || $0.released })
        events.withLock { posted.parked = false }
    }

    /// Blocks out of the guest while stalled, answering snapshot requests; the machine's
    /// stop ends it through `release`.
    private func holdOutOfGuest() {
        activity.store(ThreadActivity.stalled.rawValue, ordering: .releasing)
        waitOutOfGuest(until: { !$0.stalled || $0.released })
    }

    /// Reads the vCPU's state on its own thread (outside the lock: the ioctls take time),
    /// then publishes it and wakes whoever waits for it.
    private func answerSnapshot(_ ticket: UInt64) {
        var reading = VCPUStateReading.read(vcpu, interrupts: interrupts)
        // Kite's own local APIC (`userspace`): its registers, and whether the vCPU waits for
        // SIPI or is halted, are Kite's to tell, not KVM's.
        if hasOwnAPIC, let own = events.withLock({ posted.interrupts }) {
            reading.apic = LocalAPICState(page: own.apic.registerPage(at: monotonicNanoseconds()))
            reading.mpState = !own.started ? .waitingForSIPI : own.halted ? .halted : .runnable
        }
        events.withLock {
            posted.answer = reading
            posted.snapshotsAnswered = max(posted.snapshotsAnswered, ticket)
            events.broadcast()
        }
    }

    /// How the thread is doing, without asking it anything. `sinceEntry`: in the guest, how
    /// long it has been inside KVM_RUN; out of it, how long since it left (it has not
    /// entered since).
    func threadReport(now: UInt64) -> (state: VCPUThreadState, sinceEntry: Double, sinceExit: Double, exits: UInt64) {
        let state = ThreadActivity(rawValue: activity.load(ordering: .acquiring))?.state ?? .handlingExit
        let entry = state == .inGuest ? lastEntry.load(ordering: .relaxed) : lastReturn.load(ordering: .relaxed)
        let exit = lastExit.load(ordering: .relaxed)
        return (state, Double(now &- min(entry, now)) / 1e9, Double(now &- min(exit, now)) / 1e9,
                exits.load(ordering: .relaxed))
    }

    /// Posts a snapshot request (the thread is woken or kicked out of the guest); wait for
    /// the answer with `awaitSnapshot`.
    func requestSnapshot() -> UInt64 {
        post { box -> UInt64 in
            box.snapshotsRequested += 1
            return box.snapshotsRequested
        }
    }

    /// The answer to request `ticket`, waiting for it until `deadline` (monotonic ns); nil
    /// if the thread has not answered by then (it may be stuck in KVM_RUN).
    func awaitSnapshot(_ ticket: UInt64, untilNanoseconds deadline: UInt64) -> VCPUStateReading? {
        events.withLock {
            while posted.snapshotsAnswered < ticket {
                if !events.wait(untilNanoseconds: deadline) { break }
            }
            return posted.snapshotsAnswered >= ticket ? posted.answer : nil
        }
    }

    private func handle(_ exit: VCPUExit) {
        switch exit {
        case .ioOut(let port, let size, let data):
            for at in stride(from: 0, to: data.count, by: size) {
                ports.write(UInt64(port), width: size, value: Self.load(data, at, size))
            }
        case .ioIn(let port, let size, let data):
            for at in stride(from: 0, to: data.count, by: size) {
                Self.store(ports.read(UInt64(port), width: size), data, at, size)
            }
        case .mmioWrite(let address, let data):
            let value = UInt32(truncatingIfNeeded: Self.load(data, 0, data.count))
            if hasOwnAPIC && interrupts.localAPICAccess(vcpu.id, address: address, write: value, read: { _ in }) { break }
            mmio.write(address, width: data.count, value: Self.load(data, 0, data.count))
        case .mmioRead(let address, let data):
            if hasOwnAPIC && interrupts.localAPICAccess(vcpu.id, address: address, write: nil, read: { v in
                Self.store(UInt64(v), data, 0, data.count)
            }) { break }
            Self.store(mmio.read(address, width: data.count), data, 0, data.count)
        case .halt:
            if hasOwnAPIC { events.withLock { interrupts.halted(&posted.interrupts!, vcpu: vcpu) } }
        case .ioapicEOI(let vector):
            interrupts.endOfInterrupt(vector: vector)
        case .msrRead(let index):
            vcpu.completeMSR(value: interrupts.msrAccess(vcpu.id, msr: index, write: nil, vcpu: vcpu))
        case .msrWrite(let index, let value):
            vcpu.completeMSR(value: interrupts.msrAccess(vcpu.id, msr: index, write: value, vcpu: vcpu))
        case .interrupted, .interruptWindowOpen, .taskPriorityLowered:
            break   // the next look before entry does what is due
        case .shutdown:
            crash("triple fault (KVM_EXIT_SHUTDOWN)", afterTripleFault: true)
        case .failEntry(let reason):
            crash("VM entry failed, hardware reason 0x\(String(reason, radix: 16))")
        case .internalError(let sub):
            crash("KVM internal error, suberror \(sub)")
        case .systemEvent(let type):
            switch type {
            case 1: control.stop(.powerOff)  // KVM_SYSTEM_EVENT_SHUTDOWN
            case 2: control.stop(.reboot)    // KVM_SYSTEM_EVENT_RESET
            default: crash("KVM system event \(type)")
            }
        case .unknown(let reason):
            crash("unhandled KVM exit reason \(reason)")
        }
    }

    private func crash(_ reason: String, afterTripleFault: Bool = false) {
        let report = CrashReport.registers(of: vcpu, afterTripleFault: afterTripleFault)
        control.stop(.crash(vcpu: vcpu.id, reason: reason, report: report))
    }

    static func load(_ data: UnsafeRawBufferPointer, _ at: Int, _ size: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<min(size, 8) { v |= UInt64(data[at + i]) << (8 * UInt64(i)) }
        return v
    }

    static func load(_ data: UnsafeMutableRawBufferPointer, _ at: Int, _ size: Int) -> UInt64 {
        load(UnsafeRawBufferPointer(data), at, size)
    }

    static func store(_ value: UInt64, _ data: UnsafeMutableRawBufferPointer, _ at: Int, _ size: Int) {
        for i in 0..<min(size, 8) { data[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
}
