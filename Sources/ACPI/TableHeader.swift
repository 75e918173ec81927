/// Identity strings Kite writes into every table it generates.
public enum ACPIIdentity {
    /// OEMID, 6 bytes.
    public static let oemID = "KITE  "
    /// OEM revision of every table.
    public static let oemRevision: UInt32 = 1
    /// Creator ID ("ASL compiler" ID for the DSDT), 4 bytes.
    public static let creatorID = "KITE"
    /// Creator revision.
    public static let creatorRevision: UInt32 = 1
}

/// The 36-byte System Description Table Header shared by every ACPI table except the RSDP
/// (ACPI 6.5, section 5.2.6).
public struct ACPITableHeader: Sendable, Equatable {
    public static let size = 36

    /// Byte offsets of the header fields.
    public enum Offset {
        public static let signature = 0
        public static let length = 4
        public static let revision = 8
        public static let checksum = 9
        public static let oemID = 10
        public static let oemTableID = 16
        public static let oemRevision = 24
        public static let creatorID = 28
        public static let creatorRevision = 32
    }

    /// 4 ASCII characters, e.g. "FACP".
    public var signature: String
    /// Length of the whole table, header included.
    public var length: UInt32
    public var revision: UInt8
    public var checksum: UInt8
    /// 6 ASCII characters, space padded.
    public var oemID: String
    /// 8 ASCII characters, space padded.
    public var oemTableID: String
    public var oemRevision: UInt32
    /// 4 ASCII characters.
    public var creatorID: String
    public var creatorRevision: UInt32

    public init(
        signature: String, length: UInt32 = 0, revision: UInt8, checksum: UInt8 = 0,
        oemID: String = ACPIIdentity.oemID, oemTableID: String,
        oemRevision: UInt32 = ACPIIdentity.oemRevision,
        creatorID: String = ACPIIdentity.creatorID,
        creatorRevision: UInt32 = ACPIIdentity.creatorRevision
    ) {
        self.signature = signature
        self.length = length
        self.revision = revision
        self.checksum = checksum
        self.oemID = oemID
        self.oemTableID = oemTableID
        self.oemRevision = oemRevision
        self.creatorID = creatorID
        self.creatorRevision = creatorRevision
    }

    /// Decodes the header at the start of `table`; nil if fewer than 36 bytes.
    public init?(decoding table: [UInt8]) {
        guard table.count >= Self.size else { return nil }
        signature = table.loadASCII(at: Offset.signature, width: 4)
        length = table.loadLittleEndian(UInt32.self, at: Offset.length)
        revision = table[Offset.revision]
        checksum = table[Offset.checksum]
        oemID = table.loadASCII(at: Offset.oemID, width: 6)
        oemTableID = table.loadASCII(at: Offset.oemTableID, width: 8)
        oemRevision = table.loadLittleEndian(UInt32.self, at: Offset.oemRevision)
        creatorID = table.loadASCII(at: Offset.creatorID, width: 4)
        creatorRevision = table.loadLittleEndian(UInt32.self, at: Offset.creatorRevision)
    }

    /// The 36 header bytes, exactly as stored.
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.size)
        bytes.appendFixedASCII(signature, width: 4)
        bytes.appendLittleEndian(length)
        bytes.append(revision)
        bytes.append(checksum)
        bytes.appendFixedASCII(oemID, width: 6)
        bytes.appendFixedASCII(oemTableID, width: 8)
        bytes.appendLittleEndian(oemRevision)
        bytes.appendFixedASCII(creatorID, width: 4)
        bytes.appendLittleEndian(creatorRevision)
        return bytes
    }

    /// A complete table: this header followed by `body`, with the length and checksum
    /// fields filled in.
    public func table(body: [UInt8]) -> [UInt8] {
        var header = self
        header.length = UInt32(Self.size + body.count)
        header.checksum = 0
        var bytes = header.encoded() + body
        bytes[Offset.checksum] = ACPIChecksum.checksum(for: bytes)
        return bytes
    }
}
