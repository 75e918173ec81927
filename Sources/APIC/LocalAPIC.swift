/// One local APIC in xAPIC mode, as a guest sees it through its 4 KiB register page at
/// 0xFEE00000 (Intel SDM vol. 3A, chapter 11): pure state, no threads, no KVM. The
/// user-space interrupt controller (issue 12) keeps one per vCPU under that vCPU's lock
/// (Docs/WakeupProtocol.md) and asks it, before each guest entry, which vector to inject.
///
/// Time is the caller's: `advance(to:)` with monotonic nanoseconds (one APIC bus cycle is
/// 1 ns, as in KVM) fires the timer; `timerDeadline` says when the caller must look again.
public struct LocalAPIC: Sendable, Equatable {
    /// Register offsets in the APIC page.
    public enum Register {
        public static let id: UInt32 = 0x020
        public static let version: UInt32 = 0x030
        public static let taskPriority: UInt32 = 0x080
        public static let arbitrationPriority: UInt32 = 0x090
        public static let processorPriority: UInt32 = 0x0A0
        public static let endOfInterrupt: UInt32 = 0x0B0
        public static let remoteRead: UInt32 = 0x0C0
        public static let logicalDestination: UInt32 = 0x0D0
        public static let destinationFormat: UInt32 = 0x0E0
        public static let spuriousVector: UInt32 = 0x0F0
        public static let inService: UInt32 = 0x100       // 8 registers, 0x10 apart
        public static let triggerMode: UInt32 = 0x180
        public static let interruptRequest: UInt32 = 0x200
        public static let errorStatus: UInt32 = 0x280
        public static let lvtCMCI: UInt32 = 0x2F0
        public static let commandLow: UInt32 = 0x300
        public static let commandHigh: UInt32 = 0x310
        public static let lvtTimer: UInt32 = 0x320
        public static let lvtThermal: UInt32 = 0x330
        public static let lvtPerformance: UInt32 = 0x340
        public static let lvtLINT0: UInt32 = 0x350
        public static let lvtLINT1: UInt32 = 0x360
        public static let lvtError: UInt32 = 0x370
        public static let timerInitialCount: UInt32 = 0x380
        public static let timerCurrentCount: UInt32 = 0x390
        public static let timerDivide: UInt32 = 0x3E0
    }

    /// Version 0x14 (an integrated APIC) with 6 LVT entries, as KVM reports it.
    public static let versionValue: UInt32 = 0x0005_0014
    static let lvtMask: UInt32 = 1 << 16
    static let softwareEnable: UInt32 = 1 << 8
    /// ESR bits.
    public static let sendIllegalVector: UInt32 = 1 << 5
    public static let receivedIllegalVector: UInt32 = 1 << 6
    public static let illegalRegisterAddress: UInt32 = 1 << 7

    public enum TimerMode: UInt32, Sendable { case oneShot = 0, periodic = 1, tscDeadline = 2 }

    public private(set) var apicID: UInt8
    /// The ID it has at power-up (the guest may write another).
    public let initialAPICID: UInt8
    /// IA32_APIC_BASE's global enable (bit 11). Hardware-disabled, the APIC is not there
    /// (SDM 11.4.3): its page is not decoded, it takes no interrupts, matches no destination.
    public private(set) var isHardwareEnabled = true
    public private(set) var taskPriority: UInt32 = 0
    public private(set) var logicalDestination: UInt32 = 0
    public private(set) var destinationFormat: UInt32 = 0xFFFF_FFFF
    public private(set) var spuriousVector: UInt32 = 0xFF
    var isr = VectorSet()
    var irr = VectorSet()
    var tmr = VectorSet()
    public private(set) var errorStatus: UInt32 = 0
    var pendingErrors: UInt32 = 0
    public private(set) var commandLow: UInt32 = 0
    public private(set) var commandHigh: UInt32 = 0
    /// timer, thermal, performance, LINT0, LINT1, error, CMCI: all masked at reset, except
    /// LINT0 of the boot processor (`init`).
    var lvt: [UInt32] = Array(repeating: LocalAPIC.lvtMask, count: 7)
    /// The boot processor's APIC: at reset its LINT0 is ExtINT, unmasked.
    public let isBootProcessor: Bool
    public private(set) var timerInitialCount: UInt32 = 0
    public private(set) var timerDivide: UInt32 = 0
    /// When the running count next reaches 0, or the TSC deadline (caller's nanoseconds).
    public private(set) var timerDeadline: UInt64?

    /// `bootProcessor`: LINT0 starts as ExtINT and unmasked, so that the PIC reaches the boot
    /// processor (the virtual-wire mode firmware sets up, and KVM's and QEMU's reset state).
    public init(apicID: UInt8, bootProcessor: Bool = false) {
        self.apicID = apicID
        self.initialAPICID = apicID
        self.isBootProcessor = bootProcessor
        if bootProcessor { lvt[3] = Self.extINTDeliveryMode << 8 }
    }

    /// The guest set or cleared IA32_APIC_BASE's enable bit. Either change leaves the APIC in
    /// its power-up state (initial ID, software-disabled, every LVT masked, nothing pending).
    public mutating func setHardwareEnabled(_ enabled: Bool) {
        guard enabled != isHardwareEnabled else { return }
        self = LocalAPIC(apicID: initialAPICID, bootProcessor: isBootProcessor)
        isHardwareEnabled = enabled
    }

    // MARK: State the guest cannot write directly

    public var isSoftwareEnabled: Bool { spuriousVector & Self.softwareEnable != 0 }
    public var timerMode: TimerMode { TimerMode(rawValue: (lvt[0] >> 17) & 3) ?? .oneShot }
    var highestInService: UInt8? { isr.highest }

    /// Processor priority: the task priority, or the class of the highest in-service vector
    /// if that is higher (SDM 11.8.3.1).
    public var processorPriority: UInt32 {
        let isrClass = UInt32(highestInService ?? 0) & 0xF0
        return (taskPriority & 0xF0) >= isrClass ? taskPriority & 0xFF : isrClass
    }

    /// The vector the APIC would deliver to the processor now, if any: the highest requested
    /// one whose priority class is above the processor priority's.
    public var deliverableVector: UInt8? {
        guard let v = irr.highest, UInt32(v) & 0xF0 > processorPriority & 0xF0 else { return nil }
        return v
    }

    /// Whether anything is requested at all (masked by priority or not).
    public var hasRequested: Bool { irr.highest != nil }

    public func isRequested(_ vector: UInt8) -> Bool { irr.contains(vector) }
    public func isInService(_ vector: UInt8) -> Bool { isr.contains(vector) }
    public func isLevelTriggered(_ vector: UInt8) -> Bool { tmr.contains(vector) }

    // MARK: Interrupts arriving

    /// A fixed or lowest-priority interrupt arrives (from an IPI, the IOAPIC, an MSI or an
    /// LVT). Returns false if the APIC refused it: software-disabled (as KVM does), or an
    /// illegal vector (0-15, which sets "received illegal vector" in the ESR).
    @discardableResult
    public mutating func accept(vector: UInt8, levelTriggered: Bool = false) -> Bool {
        guard isHardwareEnabled else { return false }
        guard vector >= 16 else {
            pendingErrors |= Self.receivedIllegalVector
            // The error interrupt, unless it is the one with the illegal vector: raising it
            // again would come straight back here, forever.
            if UInt8(truncatingIfNeeded: lvt[5]) >= 16 { raiseLocal(lvtIndex: 5) }
            return false
        }
        guard isSoftwareEnabled else { return false }
        irr.insert(vector)
        if levelTriggered { tmr.insert(vector) } else { tmr.remove(vector) }
        return true
    }

    /// The processor takes the deliverable vector (the VMM injects it): it moves from IRR
    /// to ISR. Returns it, or nil if none is deliverable.
    public mutating func acknowledge() -> UInt8? {
        guard let v = deliverableVector else { return nil }
        irr.remove(v)
        isr.insert(v)
        return v
    }

    // MARK: Local interrupt pins

    public enum LocalInterruptPin: Sendable { case lint0, lint1 }

    /// What a rising edge on LINT0 or LINT1 sends this APIC, by the pin's LVT entry (SDM
    /// 11.5.1): a fixed interrupt (as an edge: none of Kite's sources is level-triggered),
    /// an NMI or an INIT, for the caller to post like an IPI; nil when the entry is masked,
    /// the APIC software-disabled, or the mode SMI or ExtINT (the PIC's INTR, which is a
    /// level the processor acknowledges: `takesExternalInterrupts`).
    public func message(for pin: LocalInterruptPin) -> InterProcessorInterrupt.Message? {
        let entry = lvt[pin == .lint0 ? 3 : 4]
        guard entry & Self.lvtMask == 0 else { return nil }
        switch InterProcessorInterrupt.DeliveryMode(rawValue: (entry >> 8) & 7) {
        case .fixed: return .interrupt(vector: UInt8(truncatingIfNeeded: entry), levelTriggered: false)
        case .nmi: return .nmi
        case .initialize: return .initialize
        default: return nil
        }
    }

    /// ExtINT delivery mode in an LVT or ICR.
    static let extINTDeliveryMode: UInt32 = 7

    /// Whether the PIC's INTR on LINT0 reaches the processor, which then takes the PIC's
    /// vector (INTA) ahead of the APIC's own: LINT0 unmasked in ExtINT mode, or the APIC
    /// hardware-disabled, when LINT0 is the processor's INTR pin itself (SDM 11.4.3; KVM's
    /// `kvm_apic_accept_pic_intr`).
    public var takesExternalInterrupts: Bool {
        guard isHardwareEnabled else { return true }
        return lvt[3] & Self.lvtMask == 0 && (lvt[3] >> 8) & 7 == Self.extINTDeliveryMode
    }

    // MARK: Register access

    /// A 32-bit read of the register at `offset` (other widths and unaligned reads are the
    /// caller's to refuse). Unknown offsets read 0.
    public func read(_ offset: UInt32) -> UInt32 {
        switch offset {
        case Register.id: return UInt32(apicID) << 24
        case Register.version: return Self.versionValue
        case Register.taskPriority: return taskPriority
        case Register.arbitrationPriority: return 0
        case Register.processorPriority: return processorPriority
        case Register.logicalDestination: return logicalDestination
        case Register.destinationFormat: return destinationFormat
        case Register.spuriousVector: return spuriousVector
        case Register.inService..<(Register.inService + 0x80): return isr.word((offset - Register.inService) >> 4)
        case Register.triggerMode..<(Register.triggerMode + 0x80): return tmr.word((offset - Register.triggerMode) >> 4)
        case Register.interruptRequest..<(Register.interruptRequest + 0x80):
            return irr.word((offset - Register.interruptRequest) >> 4)
        case Register.errorStatus: return errorStatus
        case Register.commandLow: return commandLow & ~(1 << 12)   // delivery status: always idle
        case Register.commandHigh: return commandHigh
        case Register.lvtTimer: return lvt[0]
        case Register.lvtThermal: return lvt[1]
        case Register.lvtPerformance: return lvt[2]
        case Register.lvtLINT0: return lvt[3]
        case Register.lvtLINT1: return lvt[4]
        case Register.lvtError: return lvt[5]
        case Register.lvtCMCI: return lvt[6]
        case Register.timerInitialCount: return timerInitialCount
        case Register.timerDivide: return timerDivide
        default: return 0
        }
    }

    /// The current count, which depends on time.
    public func timerCurrentCount(at now: UInt64) -> UInt32 {
        guard timerMode != .tscDeadline, timerInitialCount != 0, let deadline = timerDeadline, now < deadline else {
            return 0
        }
        let left = (deadline - now) / divisor
        return UInt32(min(left + ((deadline - now) % divisor == 0 ? 0 : 1), UInt64(timerInitialCount)))
    }

    /// What a guest write asks the rest of the machine to do.
    public enum WriteEffect: Sendable, Equatable {
        /// Nothing beyond the register (named so, not `none`, to stay apart from `Optional.none`).
        case noEffect
        /// An EOI for a level-triggered vector: the IOAPIC must clear its remote IRR.
        case levelEOI(vector: UInt8)
        /// An IPI to route (ICR low written).
        case interProcessor(InterProcessorInterrupt)
    }

    /// A 32-bit guest write at `offset`, at time `now` (for the timer).
    public mutating func write(_ offset: UInt32, _ value: UInt32, at now: UInt64) -> WriteEffect {
        switch offset {
        case Register.id:
            apicID = UInt8(truncatingIfNeeded: value >> 24)
        case Register.taskPriority:
            taskPriority = value & 0xFF
        case Register.endOfInterrupt:
            return endOfInterrupt()
        case Register.logicalDestination:
            logicalDestination = value & 0xFF00_0000
        case Register.destinationFormat:
            destinationFormat = value | 0x0FFF_FFFF
        case Register.spuriousVector:
            spuriousVector = value & 0x3FF
            if !isSoftwareEnabled {
                for i in lvt.indices { lvt[i] |= Self.lvtMask }
            }
        case Register.errorStatus:
            errorStatus = pendingErrors
            pendingErrors = 0
        case Register.commandHigh:
            commandHigh = value & 0xFF00_0000
        case Register.commandLow:
            commandLow = value & 0x000C_CFFF
            let ipi = InterProcessorInterrupt(commandLow: commandLow, commandHigh: commandHigh)
            if ipi.deliveryMode == .fixed && ipi.vector < 16 {
                pendingErrors |= Self.sendIllegalVector
                raiseLocal(lvtIndex: 5)
                return .noEffect
            }
            return .interProcessor(ipi)
        case Register.lvtTimer:
            // Between one-shot and periodic the count runs on (kvm-unit-tests' apic checks
            // it); into or out of TSC-deadline mode the timer stops and TMICT clears, as KVM does.
            let wasDeadline = timerMode == .tscDeadline
            lvt[0] = lvtValue(value, keep: 0x0007_00FF)
            if wasDeadline != (timerMode == .tscDeadline) {
                stopTimer()
                timerInitialCount = 0
            }
        case Register.lvtThermal: lvt[1] = lvtValue(value, keep: 0x0001_07FF)
        case Register.lvtPerformance: lvt[2] = lvtValue(value, keep: 0x0001_07FF)
        case Register.lvtLINT0: lvt[3] = lvtValue(value, keep: 0x0001_A7FF)
        case Register.lvtLINT1: lvt[4] = lvtValue(value, keep: 0x0001_A7FF)
        case Register.lvtError: lvt[5] = lvtValue(value, keep: 0x0001_00FF)
        case Register.lvtCMCI: lvt[6] = lvtValue(value, keep: 0x0001_07FF)
        case Register.timerInitialCount:
            guard timerMode != .tscDeadline else { break }
            timerInitialCount = value
            startTimer(at: now)
        case Register.timerDivide:
            timerDivide = value & 0xB
        default:
            break   // read-only and reserved registers ignore writes
        }
        return .noEffect
    }

    /// CR8 in 64-bit mode is TPR bits 7:4 (SDM 10.8.6.1): reading it gives them, writing it
    /// sets them and clears bits 3:0.
    public var cr8: UInt64 { UInt64(taskPriority >> 4) }

    public mutating func setCR8(_ value: UInt64) {
        taskPriority = UInt32(value & 0xF) << 4
    }

    /// While software-disabled, every LVT entry stays masked.
    func lvtValue(_ value: UInt32, keep: UInt32) -> UInt32 {
        isSoftwareEnabled ? value & keep : (value & keep) | Self.lvtMask
    }

    /// EOI: the highest vector in service ends; a level-triggered one (its TMR bit set, which
    /// stays set: only the vector's next acceptance changes it) goes on to the IOAPIC.
    mutating func endOfInterrupt() -> WriteEffect {
        guard let v = isr.highest else { return .noEffect }
        isr.remove(v)
        return tmr.contains(v) ? .levelEOI(vector: v) : .noEffect
    }

    /// An LVT entry's own interrupt (error, timer): fixed delivery to this APIC, if
    /// unmasked. Returns whether the vector was requested.
    @discardableResult
    mutating func raiseLocal(lvtIndex: Int) -> Bool {
        let entry = lvt[lvtIndex]
        guard entry & Self.lvtMask == 0 else { return false }
        return accept(vector: UInt8(truncatingIfNeeded: entry))
    }

    // MARK: Timer

    /// Bus cycles per timer tick: the divide configuration register (SDM 11.5.4).
    var divisor: UInt64 {
        let code = (timerDivide & 3) | ((timerDivide & 8) >> 1)
        return code == 7 ? 1 : UInt64(2) << UInt64(code)
    }

    mutating func startTimer(at now: UInt64) {
        timerDeadline = timerInitialCount == 0 ? nil : now &+ UInt64(timerInitialCount) * divisor
    }

    mutating func stopTimer() {
        timerDeadline = nil
    }

    /// TSC-deadline mode: the guest wrote IA32_TSC_DEADLINE, converted by the caller to its
    /// nanoseconds (0 disarms). Ignored in the other modes, as the SDM says.
    public mutating func setTSCDeadline(_ deadline: UInt64) {
        guard timerMode == .tscDeadline else { return }
        timerDeadline = deadline == 0 ? nil : deadline
    }

    /// Fires the timer if its deadline has passed (at most once per call for a periodic
    /// timer that fell behind: missed periods are merged, as an APIC that can only hold one
    /// request per vector does). Returns true if it requested its vector (not when masked).
    @discardableResult
    public mutating func advance(to now: UInt64) -> Bool {
        guard let deadline = timerDeadline, now >= deadline else { return false }
        switch timerMode {
        case .periodic:
            let period = UInt64(timerInitialCount) * divisor
            let periods = (now - deadline) / period + 1
            timerDeadline = deadline &+ periods * period
        case .oneShot, .tscDeadline:
            timerDeadline = nil
        }
        return raiseLocal(lvtIndex: 0)
    }

    // MARK: Destinations

    /// Whether a message for `destination` in `logical` or physical mode is for this APIC
    /// (xAPIC: 8-bit destinations; 0xFF is every APIC).
    public func matches(destination: UInt8, logical: Bool) -> Bool {
        guard isHardwareEnabled else { return false }
        if destination == 0xFF { return true }
        guard logical else { return destination == apicID }
        let ldr = UInt8(truncatingIfNeeded: logicalDestination >> 24)
        if destinationFormat >> 28 == 0xF {   // flat
            return ldr & destination != 0
        }
        // cluster: high nibble the cluster, low nibble a bitmap within it
        return ldr >> 4 == destination >> 4 && (ldr & destination & 0x0F) != 0
    }

    /// The 1 KiB register page as KVM_GET_LAPIC lays it out (each register at its offset,
    /// little-endian), at time `now` for the current count: for diagnosis, which reads
    /// Kite's APICs and KVM's the same way.
    public func registerPage(at now: UInt64) -> [UInt8] {
        var page = [UInt8](repeating: 0, count: 0x400)
        for offset in stride(from: UInt32(0), to: 0x400, by: 0x10) {
            let v = offset == Register.timerCurrentCount ? timerCurrentCount(at: now) : read(offset)
            for i in 0..<4 { page[Int(offset) + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
        }
        return page
    }

    /// INIT: back to the power-on state, keeping the APIC ID (SDM 11.4.7.3).
    public mutating func reset() {
        self = LocalAPIC(apicID: apicID, bootProcessor: isBootProcessor)
    }
}

/// The 256 vectors of IRR, ISR or TMR.
struct VectorSet: Sendable, Equatable {
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    private func get(_ i: Int) -> UInt64 {
        switch i { case 0: words.0; case 1: words.1; case 2: words.2; default: words.3 }
    }

    private mutating func set(_ i: Int, _ v: UInt64) {
        switch i { case 0: words.0 = v; case 1: words.1 = v; case 2: words.2 = v; default: words.3 = v }
    }

    func contains(_ v: UInt8) -> Bool { get(Int(v >> 6)) & (1 << UInt64(v & 63)) != 0 }
    mutating func insert(_ v: UInt8) { set(Int(v >> 6), get(Int(v >> 6)) | (1 << UInt64(v & 63))) }
    mutating func remove(_ v: UInt8) { set(Int(v >> 6), get(Int(v >> 6)) & ~(1 << UInt64(v & 63))) }

    var highest: UInt8? {
        for i in stride(from: 3, through: 0, by: -1) where get(i) != 0 {
            return UInt8(i * 64 + 63 - get(i).leadingZeroBitCount)
        }
        return nil
    }

    /// The 32-bit register `index` (0-7) of the APIC page.
    func word(_ index: UInt32) -> UInt32 {
        let w = get(Int(index >> 1))
        return UInt32(truncatingIfNeeded: index & 1 == 0 ? w : w >> 32)
    }

    static func == (a: VectorSet, b: VectorSet) -> Bool {
        a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.words.3 == b.words.3
    }
}
