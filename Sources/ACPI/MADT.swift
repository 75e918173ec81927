/// Multiple APIC Description Table (ACPI 6.5, section 5.2.12). Linux finds the vCPUs only
/// here (Kite provides no MP table).
public struct MADT: Sendable, Equatable {
    public static let signature = "APIC"
    /// Revision 5 (ACPI 6.2/6.3). Linux 6.1 accepts it; the only thing it keys on the revision
    /// (>= 5) is honouring the "online capable" bit, and Kite marks every vCPU enabled anyway.
    public static let revision: UInt8 = 5
    public static let oemTableID = "KITEAPIC"

    public enum Offset {
        public static let localAPICAddress = 36
        public static let flags = 40
        public static let firstEntry = 44
    }

    /// Multiple APIC Flags.
    public struct Flags: OptionSet, Sendable, Equatable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// PCAT_COMPAT: the system also has dual 8259 PICs (KVM's in-kernel irqchip does).
        public static let pcatCompatible = Flags(rawValue: 1 << 0)
    }

    /// Local APIC flags (for type 0 and type 9 entries).
    public static let processorEnabled: UInt32 = 1 << 0

    /// MPS INTI flags for interrupt source overrides and NMI entries.
    public enum InterruptFlags {
        /// Polarity and trigger mode conform to the bus (ISA: edge, active high).
        public static let conforming: UInt16 = 0x0000
        public static let activeHigh: UInt16 = 0b01
        public static let activeLow: UInt16 = 0b11
        public static let edgeTriggered: UInt16 = 0b01 << 2
        public static let levelTriggered: UInt16 = 0b11 << 2
        /// Level-triggered, active high: 0x000D.
        public static let levelActiveHigh: UInt16 = levelTriggered | activeHigh
    }

    /// "All processors" in a Local APIC NMI entry (8-bit UID) and in a Local x2APIC NMI entry.
    public static let allProcessorsUID: UInt8 = 0xFF
    public static let allProcessorsX2APICUID: UInt32 = 0xFFFF_FFFF
    /// The largest APIC ID a type-0 Processor Local APIC entry can carry (0xFF is invalid).
    public static let maximumXAPICID: UInt32 = 0xFE

    /// Interrupt Controller Structures.
    public enum Entry: Sendable, Equatable {
        /// Type 0, 8 bytes.
        case localAPIC(processorUID: UInt8, apicID: UInt8, flags: UInt32)
        /// Type 1, 12 bytes.
        case ioAPIC(id: UInt8, address: UInt32, gsiBase: UInt32)
        /// Type 2, 10 bytes. Bus 0 is ISA.
        case interruptSourceOverride(bus: UInt8, source: UInt8, gsi: UInt32, flags: UInt16)
        /// Type 4, 6 bytes.
        case localAPICNMI(processorUID: UInt8, flags: UInt16, lint: UInt8)
        /// Type 9, 16 bytes.
        case localX2APIC(x2apicID: UInt32, flags: UInt32, processorUID: UInt32)
        /// Type 0x0A, 12 bytes.
        case localX2APICNMI(processorUID: UInt32, flags: UInt16, lint: UInt8)

        public var type: UInt8 {
            switch self {
            case .localAPIC: 0
            case .ioAPIC: 1
            case .interruptSourceOverride: 2
            case .localAPICNMI: 4
            case .localX2APIC: 9
            case .localX2APICNMI: 0x0A
            }
        }

        public var length: UInt8 {
            switch self {
            case .localAPIC: 8
            case .ioAPIC: 12
            case .interruptSourceOverride: 10
            case .localAPICNMI: 6
            case .localX2APIC: 16
            case .localX2APICNMI: 12
            }
        }

        public func encoded() -> [UInt8] {
            var bytes: [UInt8] = [type, length]
            switch self {
            case let .localAPIC(processorUID, apicID, flags):
                bytes += [processorUID, apicID]
                bytes.appendLittleEndian(flags)
            case let .ioAPIC(id, address, gsiBase):
                bytes += [id, 0]
                bytes.appendLittleEndian(address)
                bytes.appendLittleEndian(gsiBase)
            case let .interruptSourceOverride(bus, source, gsi, flags):
                bytes += [bus, source]
                bytes.appendLittleEndian(gsi)
                bytes.appendLittleEndian(flags)
            case let .localAPICNMI(processorUID, flags, lint):
                bytes.append(processorUID)
                bytes.appendLittleEndian(flags)
                bytes.append(lint)
            case let .localX2APIC(x2apicID, flags, processorUID):
                bytes += [0, 0]
                bytes.appendLittleEndian(x2apicID)
                bytes.appendLittleEndian(flags)
                bytes.appendLittleEndian(processorUID)
            case let .localX2APICNMI(processorUID, flags, lint):
                bytes.appendLittleEndian(flags)
                bytes.appendLittleEndian(processorUID)
                bytes += [lint, 0, 0, 0]
            }
            assert(bytes.count == Int(length))
            return bytes
        }
    }

    public var localAPICAddress: UInt32
    public var flags: Flags
    public var entries: [Entry]

    public init(localAPICAddress: UInt32, flags: Flags = .pcatCompatible, entries: [Entry]) {
        self.localAPICAddress = localAPICAddress
        self.flags = flags
        self.entries = entries
    }

    /// The processor entry for vCPU `index`: a Processor Local APIC when both the APIC ID and
    /// the UID fit its 8-bit fields (and avoid 0xFF), otherwise a Processor Local x2APIC.
    public static func processorEntry(index: Int, apicID: UInt32) -> Entry {
        if apicID <= maximumXAPICID && index < Int(allProcessorsUID) {
            return .localAPIC(processorUID: UInt8(index), apicID: UInt8(apicID), flags: processorEnabled)
        }
        return .localX2APIC(x2apicID: apicID, flags: processorEnabled, processorUID: UInt32(index))
    }

    /// The MADT for `config`:
    /// - one processor entry per vCPU (UID = index), enabled;
    /// - one I/O APIC with GSI base 0;
    /// - ISA IRQ 0 -> GSI 2 (conforming: edge, active high), and the SCI's ISA IRQ -> the same
    ///   GSI, level-triggered active-high (only when the SCI is an ISA IRQ 1-15 other than 2);
    /// - LINT1 is NMI on all processors (plus the x2APIC form when any x2APIC entry exists).
    public init(_ config: ACPIConfig) {
        precondition(!config.apicIDs.isEmpty, "at least one vCPU")
        precondition(Set(config.apicIDs).count == config.apicIDs.count, "APIC IDs must be distinct")
        var entries = config.apicIDs.enumerated().map { Self.processorEntry(index: $0.offset, apicID: $0.element) }
        entries.append(.ioAPIC(id: config.ioapicID, address: config.ioapicAddress, gsiBase: 0))
        entries.append(.interruptSourceOverride(bus: 0, source: 0, gsi: 2, flags: InterruptFlags.conforming))
        let sci = config.sciInterrupt
        if sci < 16 && sci != 0 && sci != 2 {
            entries.append(.interruptSourceOverride(
                bus: 0, source: UInt8(sci), gsi: UInt32(sci), flags: InterruptFlags.levelActiveHigh))
        }
        entries.append(.localAPICNMI(processorUID: Self.allProcessorsUID, flags: InterruptFlags.conforming, lint: 1))
        if entries.contains(where: { if case .localX2APIC = $0 { true } else { false } }) {
            entries.append(.localX2APICNMI(processorUID: Self.allProcessorsX2APICUID,
                                           flags: InterruptFlags.conforming, lint: 1))
        }
        self.init(localAPICAddress: config.localAPICAddress, entries: entries)
    }

    public func encoded() -> [UInt8] {
        var body: [UInt8] = []
        body.appendLittleEndian(localAPICAddress)
        body.appendLittleEndian(flags.rawValue)
        for entry in entries { body += entry.encoded() }
        return ACPITableHeader(signature: Self.signature, revision: Self.revision,
                               oemTableID: Self.oemTableID).table(body: body)
    }
}
