/// All of Kite's ACPI tables laid out as one blob for guest RAM.
public struct ACPITables: Sendable, Equatable {
    /// Each table starts on this boundary (the RSDP, first, needs 16; the rest need none,
    /// 8 keeps 64-bit fields aligned).
    public static let tableAlignment = 8

    /// Guest-physical address of the first byte of `bytes` (the RSDP).
    public let base: UInt64
    /// The tables, to be copied to guest RAM at `base`.
    public let bytes: [UInt8]
    public let xsdtAddress: UInt64
    public let fadtAddress: UInt64
    public let dsdtAddress: UInt64
    public let madtAddress: UInt64

    public var rsdpAddress: UInt64 { base }

    /// Lays out RSDP (at `base`, which must be 16-byte aligned; revision 2 with the XSDT
    /// address), XSDT, FADT, DSDT and MADT one after another (each 8-byte aligned, zero
    /// padding between) from `base`, with every checksum filled in.
    public static func build(_ config: ACPIConfig, at base: UInt64) -> ACPITables {
        precondition(base % 16 == 0, "the RSDP must be 16-byte aligned")
        let dsdt = DSDT(config).encoded()
        let madt = MADT(config).encoded()

        let xsdtOffset = alignUp(RSDP.size, to: tableAlignment)
        let fadtOffset = alignUp(xsdtOffset + XSDT.size(entryCount: 2), to: tableAlignment)
        let dsdtOffset = alignUp(fadtOffset + FADT.size, to: tableAlignment)
        let madtOffset = alignUp(dsdtOffset + dsdt.count, to: tableAlignment)
        let totalSize = madtOffset + madt.count
        precondition(base <= UInt64.max - UInt64(totalSize), "tables do not fit below 2^64")

        let address = { (offset: Int) in base + UInt64(offset) }
        let fadt = FADT(config, dsdtAddress: address(dsdtOffset)).encoded()
        let xsdt = XSDT(entries: [address(fadtOffset), address(madtOffset)]).encoded()
        let rsdp = RSDP(xsdtAddress: address(xsdtOffset)).encoded()

        var bytes = [UInt8](repeating: 0, count: totalSize)
        for (offset, table) in [(0, rsdp), (xsdtOffset, xsdt), (fadtOffset, fadt),
                                (dsdtOffset, dsdt), (madtOffset, madt)] {
            bytes.replaceSubrange(offset..<(offset + table.count), with: table)
        }
        return ACPITables(base: base, bytes: bytes,
                          xsdtAddress: address(xsdtOffset), fadtAddress: address(fadtOffset),
                          dsdtAddress: address(dsdtOffset), madtAddress: address(madtOffset))
    }

    /// The table at guest-physical `address` (its header's length), or nil if it is not
    /// wholly inside the blob.
    public func table(at address: UInt64) -> [UInt8]? {
        guard address >= base, address - base <= UInt64(bytes.count) else { return nil }
        let offset = Int(address - base)
        guard offset + ACPITableHeader.size <= bytes.count else { return nil }
        let length = Int(bytes.loadLittleEndian(UInt32.self, at: offset + ACPITableHeader.Offset.length))
        guard length >= ACPITableHeader.size, offset + length <= bytes.count else { return nil }
        return Array(bytes[offset..<(offset + length)])
    }

    /// The RSDP bytes.
    public var rsdp: [UInt8] { Array(bytes[0..<RSDP.size]) }
}
