import HostCalls
import APIC
import CHost
import CKVM
import Devices
import Diagnosis
import KVM
import Sandbox
import Synchronization
import X86Boot
#if canImport(Glibc)
import Glibc
#endif

/// What Kite keeps for one vCPU when its local APIC lives in Kite (`userspace` mode), guarded
/// by that vCPU's lock (VCPUThread's; Docs/WakeupProtocol.md): the APIC, and the events KVM
/// would otherwise handle itself (NMI, INIT, SIPI, HLT).
struct UserspaceVCPUState: Sendable {
    var apic: LocalAPIC
    /// Started (the boot vCPU, or an AP after its SIPI); otherwise it waits in Kite for SIPI.
    var started: Bool
    /// Halted (HLT exit) until something can wake it.
    var halted = false
    /// RFLAGS.IF when it halted: only then does an interrupt wake it (an NMI always does).
    var interruptsEnabledAtHalt = false
    var nmiPending = false
    var initPending = false
    var startUpVector: UInt8?
    /// IA32_TSC_DEADLINE as the guest wrote it (guest TSC ticks), while armed.
    var tscDeadline: UInt64 = 0
    /// Where IA32_APIC_BASE puts the APIC's page (the guest may move it).
    var apicPageAddress: UInt64 = GuestLayout.localAPICAddress
    /// The newest change of the PICs' output on this vCPU's LINT0 (the boot vCPU's only);
    /// an older change never overwrites it.
    var latestPICChange = LegacyPIC.OutputChange(level: false, sequence: 0)
    /// The PICs' output as last told.
    var picOutput: Bool { latestPICChange.level }

    /// Keeps the PICs' output as `change` set it, unless a newer change was recorded already.
    mutating func record(_ change: LegacyPIC.OutputChange) {
        if change.sequence > latestPICChange.sequence { latestPICChange = change }
    }

    /// The PIC asks and the APIC lets it through to the processor (LINT0 in ExtINT mode).
    var externalInterruptPending: Bool { picOutput && apic.takesExternalInterrupts }

    /// Whether the vCPU's thread has a reason to stop waiting in Kite.
    var canRun: Bool {
        if initPending { return true }
        if !started { return startUpVector != nil }
        if halted {
            return nmiPending || (interruptsEnabledAtHalt && (apic.deliverableVector != nil || externalInterruptPending))
        }
        return true
    }
}

/// What the vCPU's thread does before KVM_RUN in `userspace` mode.
enum EntryDecision: Equatable {
    case enter
    /// Wait in Kite until posted to (or until the deadline, the APIC timer's; nil: none).
    case wait(deadline: UInt64?)
}

/// `userspace` mode: KVM has no interrupt controller; every local APIC (xAPIC MMIO at
/// 0xFEE00000), INIT/SIPI, HLT and the APIC timers are Kite's. Everything sent to a vCPU
/// is posted under that vCPU's lock, then the vCPU is woken or kicked (the wake-up
/// protocol, Models/wakeup.pml); interrupts are injected on the vCPU's own thread before
/// KVM_RUN, with an interrupt window when the guest cannot take one yet.
///
/// Device lines go to Kite's IOAPIC (`makeIOAPICDevice`, MMIO at 0xFEC00000), whose messages
/// take the same path as IPIs; level-triggered EOIs come back to it from the local APICs.
/// ISA lines 0-15 also drive Kite's two 8259 PICs (`LegacyPIC`), whose output is posted to
/// the boot vCPU (its LINT0) like any other event; before entry, the vCPU acknowledges the
/// PIC and injects its vector ahead of the APIC's own, as the processor's INTA would.
///
/// The TSC-deadline MSR is trapped to Kite (`msrAccess`); CPUID hides x2APIC and KVM's
/// paravirtual features that need KVM's APIC (`CPUIDTemplate.localAPICsInKVM`).
final class UserspaceInterruptController: InterruptController, @unchecked Sendable {
    let mode = "userspace"
    static let apicPageSize: UInt64 = 0x1000

    /// The vCPU threads, by index, set once before any starts (`attach`).
    private var threads: [VCPUThread] = []
    private let timers: APICTimerThread
    /// The IOAPIC, under its own lock (never held while posting to a vCPU).
    private let ioapic = Mutex(IOAPIC())
    /// The PICs, under their own lock: never held while posting to a vCPU, and taken under
    /// the boot vCPU's lock only by that vCPU's acknowledge (so the order is always vCPU, PIC).
    private let pic = LegacyPIC()

    /// Watches an eventfd on the device thread (`DeviceEventLoop.watch`).
    private let watch: (Int32, @escaping () -> Void) throws -> Void

    /// The guest's physical-address width (CPUID 0x80000008 EAX[7:0]): IA32_APIC_BASE bits
    /// at or above it are reserved.
    private let physicalAddressBits: Int

    init(vcpuCount: Int, physicalAddressBits: Int = 36,
         watch: @escaping (Int32, @escaping () -> Void) throws -> Void = { _, _ in }) throws {
        timers = try APICTimerThread(vcpuCount: vcpuCount)
        self.physicalAddressBits = min(max(physicalAddressBits, 32), 52)
        self.watch = watch
    }

    /// Gives the controller the vCPU threads it posts to (before they start).
    func attach(_ threads: [VCPUThread], seccomp: SeccompFilters?) throws {
        self.threads = threads
        try timers.start(seccomp: seccomp?.program(for: .apicTimer),
                         post: { [unowned self] index in self.threads[index].postInterruptEvent { _ in } })
    }

    func stop() { timers.stop() }

    // MARK: InterruptController

    func initialState(forVCPU index: Int, apicID: UInt8) -> UserspaceVCPUState? {
        UserspaceVCPUState(apic: LocalAPIC(apicID: apicID, bootProcessor: index == 0), started: index == 0)
    }

    func setLine(_ gsi: UInt32, level: Bool) {
        deliver(ioapic.withLock { $0.setLine(Int(gsi), level: level) })
        if let change = pic.setLine(gsi, level: level) { picOutputChanged(change) }
    }

    func makeLegacyPICDevices() -> LegacyPICDevices? {
        pic.makeDevices(changed: { [unowned self] in picOutputChanged($0) })
    }

    /// Posts the PICs' new output to the boot vCPU (woken or kicked).
    private func picOutputChanged(_ change: LegacyPIC.OutputChange) {
        threads[0].postInterruptEvent { $0.record(change) }
    }

    /// The IOAPIC's registers for the MMIO bus (at `GuestLayout.ioapicAddress`).
    func makeIOAPICDevice() -> (any BusDevice)? {
        IOAPICWindow(read: { [unowned self] in ioapicRead($0) }, write: { [unowned self] in ioapicWrite($0, $1) })
    }

    func ioapicRead(_ offset: UInt64) -> UInt32 { ioapic.withLock { $0.read(offset) } }

    func ioapicWrite(_ offset: UInt64, _ value: UInt32) {
        deliver(ioapic.withLock { $0.write(offset, value) })
    }

    /// Each signal of `eventFD` pulses IOAPIC line `gsi`, read on the device thread.
    func attachEdgeTrigger(eventFD: Int32, gsi: UInt32) throws(KVMError) {
        try pulseLine(gsi, onSignalOf: eventFD, watch: watch) { [unowned self] in setLine(gsi, level: $0) }
    }

    /// Not KVM's: `VCPUThread` reads Kite's own APIC under the vCPU's lock for snapshots.
    func localAPIC(of vcpu: VCPU) -> LocalAPICState? { nil }

    /// On the vCPU's thread under its lock, after the kick was cleared: INIT, SIPI, halt,
    /// NMI and interrupt injection.
    func prepareEntry(_ index: Int, _ state: inout UserspaceVCPUState, vcpu: VCPU) -> EntryDecision {
        let now = monotonicNanoseconds()
        state.apic.advance(to: now)
        if state.initPending {
            // INIT: the power-on APIC, waiting for SIPI (one that came after the INIT is kept).
            state.apic.reset()
            state = UserspaceVCPUState(apic: state.apic, started: false, startUpVector: state.startUpVector)
        }
        if !state.started {
            guard let vector = state.startUpVector else { return .wait(deadline: nil) }
            state.startUpVector = nil
            state.started = true
            Self.startAt(vector: vector, vcpu)
        }
        if state.halted {
            guard state.canRun else { return .wait(deadline: state.apic.timerDeadline) }
            state.halted = false
        }
        if state.nmiPending {
            state.nmiPending = false
            try? vcpu.injectNMI()
        }
        if state.externalInterruptPending && vcpu.canTakeInterrupt {
            // INTA: the PIC's vector goes first (ExtINT bypasses the APIC's priorities).
            let (vector, change) = pic.acknowledge()
            if let change { state.record(change) }
            try? vcpu.injectInterrupt(vector)
        } else if state.apic.deliverableVector != nil && vcpu.canTakeInterrupt, let vector = state.apic.acknowledge() {
            try? vcpu.injectInterrupt(vector)
        }
        // Whatever is still deliverable waits for the guest to be able to take it.
        vcpu.requestInterruptWindow(state.apic.deliverableVector != nil || state.externalInterruptPending)
        timers.arm(index, state.apic.timerDeadline)
        vcpu.cr8 = state.apic.cr8   // the task priority as the guest's CR8 reads it
        return .enter
    }

    /// The guest's MOV to CR8 sets the task priority; a lower one may let an interrupt through
    /// (KVM exits with `.taskPriorityLowered`, and the next look before entry injects it).
    func guestWroteCR8(_ state: inout UserspaceVCPUState, _ cr8: UInt64) {
        state.apic.setCR8(cr8)
    }

    /// A HLT exit (on the vCPU's thread, under its lock).
    func halted(_ state: inout UserspaceVCPUState, vcpu: VCPU) {
        state.halted = true
        state.interruptsEnabledAtHalt = vcpu.interruptsEnabled
    }

    /// An MMIO access by vCPU `index`: true if it was to the local APIC page (handled).
    func localAPICAccess(_ index: Int, address: UInt64, write value: UInt32?, read: (UInt32) -> Void) -> Bool {
        let effect = threads[index].withInterruptState { state -> LocalAPIC.WriteEffect? in
            // The page is the APIC's where IA32_APIC_BASE puts it, and only while the APIC is
            // enabled there; otherwise the bus answers (all-ones).
            let base = state.apicPageAddress
            guard state.apic.isHardwareEnabled, address >= base, address < base + Self.apicPageSize else { return nil }
            let offset = UInt32(address - base) & ~0xF
            let now = monotonicNanoseconds()
            state.apic.advance(to: now)
            guard let value else {
                read(offset == LocalAPIC.Register.timerCurrentCount ? state.apic.timerCurrentCount(at: now)
                                                                     : state.apic.read(offset))
                return .noEffect
            }
            let effect = state.apic.write(offset, value, at: now)
            timers.arm(index, state.apic.timerDeadline)
            return effect
        }
        switch effect {
        case .some(.interProcessor(let ipi)): send(ipi, from: index)
        case .some(.levelEOI(let vector)): deliver(ioapic.withLock { $0.endOfInterrupt(vector: vector) })
        case .some(.noEffect): break
        case nil: return false   // not decoded: the APIC is hardware-disabled
        }
        return true
    }

    /// IA32_TSC_DEADLINE: the APIC timer's TSC-deadline mode, trapped to Kite
    /// (`VirtualMachine.trapMSRs`); the deadline is turned into Kite's clock with the guest
    /// TSC read now and KVM's TSC frequency.
    static let tscDeadlineMSR: UInt32 = 0x6E0
    static let tscMSR: UInt32 = 0x10
    /// IA32_APIC_BASE: its writes come to Kite (its reads stay KVM's, which keeps the value).
    static let apicBaseMSR: UInt32 = 0x1B
    /// What `VirtualMachine.trapMSRs` must send to Kite in this mode.
    static let trappedMSRs: [(index: UInt32, reads: Bool, writes: Bool)] = [
        (tscDeadlineMSR, reads: true, writes: true), (apicBaseMSR, reads: false, writes: true),
    ]
    private let tscKHz = Mutex<UInt64>(0)

    func msrAccess(_ index: Int, msr: UInt32, write value: UInt64?, vcpu: VCPU) -> UInt64? {
        if msr == Self.apicBaseMSR, let value { return writeAPICBase(index, value, vcpu: vcpu) }
        guard msr == Self.tscDeadlineMSR else { return nil }
        let khz = tscKHz.withLock { k -> UInt64 in
            if k == 0 { k = (try? vcpu.tscKHz()) ?? 0 }
            return k
        }
        let guestTSC = ((try? vcpu.readMSRs([Self.tscMSR]))?.first ?? nil) ?? 0
        return threads[index].withInterruptState { state -> UInt64 in
            let now = monotonicNanoseconds()
            state.apic.advance(to: now)
            guard let value else { return state.apic.timerDeadline == nil ? 0 : state.tscDeadline }
            state.tscDeadline = value
            if value == 0 || khz == 0 {
                state.apic.setTSCDeadline(0)
            } else {
                let ticks = value > guestTSC ? value - guestTSC : 0
                let (scaled, overflow) = ticks.multipliedReportingOverflow(by: 1_000_000)
                let ns = overflow ? UInt64.max / 2 : scaled / khz
                state.apic.setTSCDeadline(max(now &+ ns, 1))
            }
            timers.arm(index, state.apic.timerDeadline)
            return 0
        }
    }

    /// IA32_APIC_BASE bits: BSP (8), x2APIC enable (10), global enable (11), base (12 and up).
    static let apicBaseBSP: UInt64 = 1 << 8
    static let apicBaseEnable: UInt64 = 1 << 11

    /// The guest's WRMSR to IA32_APIC_BASE: #GP (nil) for reserved bits, bits at or above the
    /// guest's physical-address width, and x2APIC mode (CPUID hides it); otherwise KVM keeps
    /// the value too (RDMSR, and CPUID.1:EDX.APIC follows the enable bit), and the APIC is
    /// disabled, re-enabled at power-up state, or moved to its new page.
    func writeAPICBase(_ index: Int, _ value: UInt64, vcpu: VCPU) -> UInt64? {
        let addressMask = (UInt64(1) << UInt64(physicalAddressBits)) - 1
        guard value & ~(addressMask & ~0xFFF | Self.apicBaseBSP | Self.apicBaseEnable) == 0,
              (try? vcpu.setMSRs([(Self.apicBaseMSR, value)])) != nil else { return nil }
        threads[index].withInterruptState { state in
            state.apic.setHardwareEnabled(value & Self.apicBaseEnable != 0)
            state.apicPageAddress = value & addressMask & ~0xFFF
        }
        return 0
    }

    /// Routes the IOAPIC's messages to their local APICs and posts them.
    func deliver(_ messages: [InterruptMessage]) {
        guard !messages.isEmpty else { return }
        let apics = threads.map { t in t.withInterruptState { $0.apic } }
        for m in messages {
            let event: InterProcessorInterrupt.Message
            switch m.deliveryMode {
            case .fixed, .lowestPriority: event = .interrupt(vector: m.vector, levelTriggered: m.levelTriggered)
            case .nmi: event = .nmi
            case .initialize: event = .initialize
            // ExtINT through the IOAPIC (virtual wire through pin 0) is not modelled: the PICs
            // reach the boot vCPU through its LINT0. SMI is unsupported.
            case .smi, .reserved, .extINT, .startUp: continue
            }
            for target in m.targets(in: apics) { post(event, to: target) }
        }
    }

    /// Routes an IPI from vCPU `source` and posts it to each target (one lock at a time).
    func send(_ ipi: InterProcessorInterrupt, from source: Int) {
        guard let message = ipi.message else { return }
        let apics = threads.map { t in t.withInterruptState { $0.apic } }
        for target in ipi.targets(from: source, in: apics) { post(message, to: target) }
    }

    /// Records `message` in vCPU `target`'s state under its lock, then wakes or kicks it.
    func post(_ message: InterProcessorInterrupt.Message, to target: Int) {
        threads[target].postInterruptEvent { state in
            switch message {
            case .interrupt(let vector, let level): state.apic.accept(vector: vector, levelTriggered: level)
            case .nmi: state.nmiPending = true
            case .initialize:
                state.initPending = true
                state.startUpVector = nil
            case .startUp(let vector):
                // Only a vCPU waiting for SIPI (or about to, after an INIT) takes one.
                if !state.started || state.initPending { state.startUpVector = vector }
            }
        }
    }

    /// INIT, then SIPI: the whole INIT state (the vCPU may have run before: CPU hot-plug),
    /// in real mode at vector * 0x1000.
    static func startAt(vector: UInt8, _ vcpu: VCPU) {
        guard let current = try? vcpu.specialRegisters() else { return }
        let (s, r) = EntryState.startUpState(current, vector: vector)
        try? vcpu.setSpecialRegisters(s)
        try? vcpu.setRegisters(r)
    }
}

/// Fires local APIC timers of vCPUs that are in the guest: one thread sleeps (timed wait,
/// no polling) until the earliest armed deadline, then posts to that vCPU, whose thread
/// advances its APIC before the next entry. A vCPU waiting in Kite times its own wait.
final class APICTimerThread: @unchecked Sendable {
    private let lock = ConditionLock()
    private var deadlines: [UInt64?]   // guarded by lock
    private var stopping = false        // guarded by lock
    private var thread: pthread_t?

    init(vcpuCount: Int) throws {
        deadlines = Array(repeating: nil, count: vcpuCount)
    }

    func start(seccomp: SeccompProgram?, post: @escaping @Sendable (Int) -> Void) throws {
        switch startKiteThread(name: "kite-apic-timer", seccomp: seccomp, { [self] in run(post) }) {
        case .success(let t): thread = t
        case .failure(let e): throw SetupError("cannot start the APIC timer thread: \(e)", cause: e)
        }
    }

    /// vCPU `index`'s timer next fires at `deadline` (nil: disarmed).
    func arm(_ index: Int, _ deadline: UInt64?) {
        lock.withLock {
            guard deadlines[index] != deadline else { return }
            deadlines[index] = deadline
            lock.broadcast()
        }
    }

    func stop() {
        lock.withLock { stopping = true; lock.broadcast() }
        if let t = thread { _ = host_join_thread(t, 5000); thread = nil }
    }

    private func run(_ post: (Int) -> Void) {
        ForbiddenCallInjection.fireIfArmed(.apicTimer)
        while true {
            let due: [Int]? = lock.withLock {
                while !stopping {
                    let now = monotonicNanoseconds()
                    let due = deadlines.indices.filter { deadlines[$0].map { $0 <= now } ?? false }
                    if !due.isEmpty {
                        for i in due { deadlines[i] = nil }
                        return due
                    }
                    lock.wait(untilNanoseconds: deadlines.compactMap { $0 }.min())
                }
                return nil
            }
            guard let due else { return }
            for i in due { post(i) }
        }
    }
}
