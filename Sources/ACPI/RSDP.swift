/// Root System Description Pointer, ACPI 2.0+ form (ACPI 6.5, section 5.2.5.3).
/// Must sit on a 16-byte boundary; Linux finds it either through boot_params.acpi_rsdp_addr
/// or by scanning 0xE0000-0xFFFFF on 16-byte boundaries.
public struct RSDP: Sendable, Equatable {
    public static let size = 36
    public static let signature = "RSD PTR "
    /// Revision 2 = ACPI 2.0 and later (has the XSDT address and extended checksum).
    public static let revision: UInt8 = 2
    /// The first checksum covers only the ACPI 1.0 part.
    public static let firstChecksumLength = 20

    public enum Offset {
        public static let signature = 0
        public static let checksum = 8
        public static let oemID = 9
        public static let revision = 15
        public static let rsdtAddress = 16
        public static let length = 20
        public static let xsdtAddress = 24
        public static let extendedChecksum = 32
    }

    public var oemID: String
    public var xsdtAddress: UInt64
    /// 0: Kite provides no RSDT (ACPI 2.0+ operating systems use the XSDT).
    public var rsdtAddress: UInt32

    public init(xsdtAddress: UInt64, rsdtAddress: UInt32 = 0, oemID: String = ACPIIdentity.oemID) {
        self.oemID = oemID
        self.xsdtAddress = xsdtAddress
        self.rsdtAddress = rsdtAddress
    }

    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.size)
        bytes.appendFixedASCII(Self.signature, width: 8)
        bytes.append(0)  // checksum
        bytes.appendFixedASCII(oemID, width: 6)
        bytes.append(Self.revision)
        bytes.appendLittleEndian(rsdtAddress)
        bytes.appendLittleEndian(UInt32(Self.size))
        bytes.appendLittleEndian(xsdtAddress)
        bytes.append(0)  // extended checksum
        bytes.append(contentsOf: [0, 0, 0])  // reserved
        bytes[Offset.checksum] = ACPIChecksum.checksum(for: bytes[0..<Self.firstChecksumLength])
        bytes[Offset.extendedChecksum] = ACPIChecksum.checksum(for: bytes)
        return bytes
    }
}

/// Extended System Description Table: 64-bit pointers to the other tables
/// (ACPI 6.5, section 5.2.8). The DSDT is not listed: the FADT points at it.
public struct XSDT: Sendable, Equatable {
    public static let signature = "XSDT"
    public static let revision: UInt8 = 1
    public static let oemTableID = "KITEXSDT"

    public var entries: [UInt64]

    public init(entries: [UInt64]) {
        self.entries = entries
    }

    public static func size(entryCount: Int) -> Int {
        ACPITableHeader.size + 8 * entryCount
    }

    public func encoded() -> [UInt8] {
        var body: [UInt8] = []
        for entry in entries { body.appendLittleEndian(entry) }
        return ACPITableHeader(signature: Self.signature, revision: Self.revision,
                               oemTableID: Self.oemTableID).table(body: body)
    }
}
