/// The Intel MultiProcessor Specification 1.4 tables: how a guest booted without ACPI
/// (`acpi=off`, which Kata Containers passes) finds its CPUs, its IOAPIC and how ISA and
/// virtio interrupts reach it. Linux looks for the floating pointer in the last KiB of base
/// memory (639 KiB), which is where it goes; with ACPI on, Linux reads the MADT instead.
public struct MPTable: Equatable, Sendable {
    public var apicIDs: [UInt32]
    public var ioapicID: UInt8
    public var ioapicAddress: UInt32
    public var localAPICAddress: UInt32
    /// IOAPIC pins, each routed from the ISA bus interrupt of the same number.
    public var ioapicPins: Int

    public init(apicIDs: [UInt32], ioapicID: UInt8 = 0, ioapicAddress: UInt32 = UInt32(GuestLayout.ioapicAddress),
                localAPICAddress: UInt32 = UInt32(GuestLayout.localAPICAddress), ioapicPins: Int = 24) {
        self.apicIDs = apicIDs; self.ioapicID = ioapicID; self.ioapicAddress = ioapicAddress
        self.localAPICAddress = localAPICAddress; self.ioapicPins = ioapicPins
    }

    /// Where the floating pointer goes: 639 KiB, the start of Kite's EBDA gap.
    public static let address = GuestLayout.ebdaStart
    /// The room there, up to the ACPI tables (0xE0000).
    public static let room = Int(GuestLayout.acpiTables - GuestLayout.ebdaStart)

    static let floatingPointerLength = 16
    static let headerLength = 44
    static let specRevision: UInt8 = 4
    static let localAPICVersion: UInt8 = 0x14
    static let ioapicVersion: UInt8 = 0x11

    /// Whether every APIC ID fits the table's 8 bits (255 is the broadcast ID).
    public var isExpressible: Bool { apicIDs.allSatisfy { $0 < 255 } && !apicIDs.isEmpty }

    /// The floating pointer followed by the configuration table, for `address`.
    public func encoded() -> [UInt8] {
        precondition(isExpressible, "MP tables hold 8-bit APIC IDs")
        var entries: [UInt8] = []
        var count = 0
        for (index, id) in apicIDs.enumerated() {
            // Processor: type 0, APIC id, version, flags (enabled; bootstrap processor),
            // signature (family 6), feature flags (FPU, APIC), 8 reserved bytes.
            entries += [0, UInt8(id), Self.localAPICVersion, index == 0 ? 0x03 : 0x01]
            entries += le32(0x600) + le32(0x201) + [UInt8](repeating: 0, count: 8)
            count += 1
        }
        entries += [1, 0] + Array("ISA   ".utf8)                               // bus 0: ISA
        count += 1
        entries += [2, ioapicID, Self.ioapicVersion, 1] + le32(ioapicAddress)  // the IOAPIC, enabled
        count += 1
        for pin in 0..<ioapicPins {
            // I/O interrupt: INT, conforming polarity and trigger, ISA bus IRQ pin -> IOAPIC pin.
            entries += [3, 0, 0, 0, 0, UInt8(pin), ioapicID, UInt8(pin)]
            count += 1
        }
        // Local interrupts on every local APIC (ID 0xFF): ExtINT on LINT0, NMI on LINT1.
        entries += [4, 3, 0, 0, 0, 0, 0xFF, 0]
        entries += [4, 1, 0, 0, 0, 0, 0xFF, 1]
        count += 2

        let tableAddress = UInt32(Self.address) + UInt32(Self.floatingPointerLength)
        var table = Array("PCMP".utf8) + le16(UInt16(Self.headerLength + entries.count)) + [Self.specRevision, 0]
        table += Array("KITE    ".utf8) + Array("KITE VM     ".utf8)
        table += le32(0) + le16(0) + le16(UInt16(count)) + le32(localAPICAddress) + le16(0) + [0, 0]
        table += entries
        table[7] = checksum(table)

        var pointer = Array("_MP_".utf8) + le32(tableAddress) + [1, Self.specRevision, 0] + [UInt8](repeating: 0, count: 5)
        pointer[10] = checksum(pointer)
        return pointer + table
    }

    private func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
    private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }
    /// The byte that makes the sum of `bytes` zero (its own place holding 0).
    private func checksum(_ bytes: [UInt8]) -> UInt8 { 0 &- bytes.reduce(0, &+) }
}
