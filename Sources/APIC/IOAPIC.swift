/// The I/O APIC (82093AA) as a guest sees it at 0xFEC00000: an index register (IOREGSEL,
/// offset 0x00) and a data window (IOWIN, 0x10) onto its ID, version and 24 redirection
/// entries. Pure state: lines are raised and lowered by the caller, and every interrupt the
/// IOAPIC sends comes back as an `InterruptMessage` for the caller to route to the local
/// APICs (`InterruptMessage.targets(in:)`), under each target vCPU's lock.
public struct IOAPIC: Sendable, Equatable {
    public static let pins = 24
    /// Version 0x11 with 24 entries (max redirection entry 23), as QEMU and KVM report.
    public static let versionValue: UInt32 = 0x0017_0011
    public static let selectOffset: UInt64 = 0x00
    public static let windowOffset: UInt64 = 0x10

    /// Redirection entry bits.
    static let deliveryStatus: UInt64 = 1 << 12
    static let activeLow: UInt64 = 1 << 13
    static let remoteIRR: UInt64 = 1 << 14
    static let levelTriggered: UInt64 = 1 << 15
    static let masked: UInt64 = 1 << 16
    /// Bits the guest may write: vector, delivery mode, destination mode, polarity, trigger,
    /// mask, destination, and the extended destination ID (delivery status and remote IRR
    /// are read-only).
    static let writable: UInt64 = 0xFFFE_0000_0001_AFFF

    public private(set) var id: UInt8 = 0
    public private(set) var select: UInt32 = 0
    /// Every entry starts masked.
    var entries: [UInt64] = Array(repeating: IOAPIC.masked, count: IOAPIC.pins)
    /// The input lines as the devices drive them (before polarity).
    var lines: [Bool] = Array(repeating: false, count: IOAPIC.pins)

    public init() {}

    public func entry(_ pin: Int) -> UInt64 { entries[pin] }

    // MARK: Guest access

    /// A 32-bit guest read at `offset` in the IOAPIC's page.
    public func read(_ offset: UInt64) -> UInt32 {
        switch offset {
        case Self.selectOffset: return select
        case Self.windowOffset: return readRegister(select)
        default: return 0
        }
    }

    func readRegister(_ index: UInt32) -> UInt32 {
        switch index {
        case 0x00: return UInt32(id) << 24
        case 0x01: return Self.versionValue
        case 0x02: return UInt32(id) << 24
        case 0x10..<(0x10 + 2 * UInt32(Self.pins)):
            let e = entries[Int(index - 0x10) / 2]
            return UInt32(truncatingIfNeeded: index & 1 == 0 ? e : e >> 32)
        default: return 0
        }
    }

    /// A 32-bit guest write at `offset`; returns the interrupts it sends (unmasking a
    /// level-triggered entry whose line is asserted sends one).
    public mutating func write(_ offset: UInt64, _ value: UInt32) -> [InterruptMessage] {
        switch offset {
        case Self.selectOffset:
            select = value & 0xFF
            return []
        case Self.windowOffset:
            return writeRegister(select, value)
        default:
            return []
        }
    }

    mutating func writeRegister(_ index: UInt32, _ value: UInt32) -> [InterruptMessage] {
        switch index {
        case 0x00:
            id = UInt8((value >> 24) & 0x0F)
            return []
        case 0x10..<(0x10 + 2 * UInt32(Self.pins)):
            let pin = Int(index - 0x10) / 2
            let old = entries[pin]
            let shift: UInt64 = index & 1 == 0 ? 0 : 32
            let half: UInt64 = 0xFFFF_FFFF << shift
            var new = (old & ~half) | (UInt64(value) << shift)
            new = (new & Self.writable) | (old & ~Self.writable)
            if new & Self.levelTriggered == 0 { new &= ~Self.remoteIRR }   // edge entries have none
            entries[pin] = new
            return service(pin)
        default:
            return []   // ID-less registers (version, arbitration) are read-only
        }
    }

    /// The entries KVM must have as MSI routes where the local APICs are KVM's (`split`),
    /// by pin (vectors 16 and up only):
    /// - every level-triggered entry, masked or not, so that KVM knows which vectors' EOIs
    ///   are the IOAPIC's and sends them back (a masked one may still have one in service);
    /// - the unmasked edge-triggered entries of `directPins`, the pins whose device signals
    ///   KVM itself (an irqfd on GSI = pin): the route is how its edges reach the APICs
    ///   without Kite, and a masked entry has none, so its edges are dropped, as the
    ///   IOAPIC drops an edge on a masked entry.
    public func routes(directPins: Set<Int> = []) -> [Route] {
        (0..<Self.pins).compactMap { pin in
            let e = entries[pin]
            guard UInt8(truncatingIfNeeded: e) >= 16 else { return nil }
            let level = e & Self.levelTriggered != 0
            guard level || (directPins.contains(pin) && e & Self.masked == 0) else { return nil }
            return Route(pin: pin, message: message(pin))
        }
    }

    /// What input `pin` sends.
    public struct Route: Sendable, Equatable {
        public var pin: Int
        public var message: InterruptMessage
    }

    // MARK: Lines and EOIs

    /// A device drives input `pin` to `level`. Returns what the IOAPIC sends: for an edge
    /// entry, a message on the line's rising edge (as the guest sees it, after polarity);
    /// for a level entry, a message while the line is asserted and no earlier one awaits
    /// its EOI. Pins out of range are ignored.
    public mutating func setLine(_ pin: Int, level: Bool) -> [InterruptMessage] {
        guard pin >= 0 && pin < Self.pins else { return [] }
        let wasAsserted = asserted(pin)
        lines[pin] = level
        let e = entries[pin]
        if e & Self.levelTriggered == 0 {
            guard asserted(pin) && !wasAsserted && e & Self.masked == 0 else { return [] }
            return [message(pin)]
        }
        return service(pin)
    }

    /// A local APIC's EOI for a level-triggered `vector`: every level entry with that vector
    /// and remote IRR set is cleared, and one whose line is still asserted sends again.
    public mutating func endOfInterrupt(vector: UInt8) -> [InterruptMessage] {
        var sent: [InterruptMessage] = []
        for pin in 0..<Self.pins {
            let e = entries[pin]
            guard e & Self.levelTriggered != 0, e & Self.remoteIRR != 0, UInt8(truncatingIfNeeded: e) == vector else { continue }
            entries[pin] = e & ~Self.remoteIRR
            sent += service(pin)
        }
        return sent
    }

    func asserted(_ pin: Int) -> Bool { lines[pin] != (entries[pin] & Self.activeLow != 0) }

    /// A level entry sends while its line is asserted, it is unmasked and nothing awaits an EOI.
    mutating func service(_ pin: Int) -> [InterruptMessage] {
        let e = entries[pin]
        guard e & Self.levelTriggered != 0, e & Self.masked == 0, e & Self.remoteIRR == 0, asserted(pin) else { return [] }
        entries[pin] = e | Self.remoteIRR
        return [message(pin)]
    }

    func message(_ pin: Int) -> InterruptMessage {
        let e = entries[pin]
        return InterruptMessage(vector: UInt8(truncatingIfNeeded: e),
                                deliveryMode: InterProcessorInterrupt.DeliveryMode(rawValue: UInt32((e >> 8) & 7)) ?? .fixed,
                                logicalDestination: e & (1 << 11) != 0,
                                levelTriggered: e & Self.levelTriggered != 0,
                                destination: UInt32(truncatingIfNeeded: e >> 56) | UInt32((e >> 49) & 0x7F) << 8)
    }
}

/// An interrupt on its way to local APICs from the IOAPIC or an MSI (no shorthands).
public struct InterruptMessage: Sendable, Equatable {
    public var vector: UInt8
    public var deliveryMode: InterProcessorInterrupt.DeliveryMode
    public var logicalDestination: Bool
    public var levelTriggered: Bool
    /// Up to 15 bits: the redirection entry's 8-bit destination, and above it the 7 bits of
    /// the extended destination ID (bits 55:49), which a guest uses to reach x2APIC IDs
    /// above 255 without interrupt remapping when CPUID offers KVM's MSI_EXT_DEST_ID (`split`
    /// mode with more than 254 vCPUs).
    public var destination: UInt32

    public init(vector: UInt8, deliveryMode: InterProcessorInterrupt.DeliveryMode, logicalDestination: Bool,
                levelTriggered: Bool, destination: UInt32) {
        self.vector = vector
        self.deliveryMode = deliveryMode
        self.logicalDestination = logicalDestination
        self.levelTriggered = levelTriggered
        self.destination = destination
    }

    /// The MSI address and data that carry this message (Intel SDM 11.11), as KVM takes
    /// them in `split` mode: destination bits 7:0 in address bits 19:12, and the bits above
    /// in the upper address word's bits 31:8, where KVM reads them once KVM_CAP_X2APIC_API
    /// gives it 32-bit APIC IDs (it ignores that word otherwise).
    public var msi: (address: UInt64, data: UInt32) {
        let address = 0xFEE0_0000 | UInt64(destination & 0xFF) << 12 | (logicalDestination ? 1 << 2 : 0)
            | UInt64(destination & 0xFFFF_FF00) << 32
        let data = UInt32(vector) | deliveryMode.rawValue << 8 | (levelTriggered ? 1 << 15 | 1 << 14 : 0)
        return (address, data)
    }

    /// The indices of the APICs it reaches (lowest priority: one of them).
    public func targets(in apics: [LocalAPIC]) -> [Int] {
        // xAPICs (Kite's own, `userspace`) see the 8-bit destination only.
        LocalAPIC.matching(destination: UInt8(truncatingIfNeeded: destination), logical: logicalDestination,
                           lowestPriority: deliveryMode == .lowestPriority, in: apics)
    }
}
