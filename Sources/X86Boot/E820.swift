/// One entry of the BIOS e820 memory map (also the PVH memory map).
public struct E820Entry: Equatable, Sendable {
    public enum Kind: UInt32, Sendable { case ram = 1, reserved = 2, acpi = 3 }
    public var address: UInt64
    public var size: UInt64
    public var kind: Kind
    public init(_ address: UInt64, _ size: UInt64, _ kind: Kind) {
        self.address = address; self.size = size; self.kind = kind
    }
}

public enum E820 {
    /// The guest's memory map: low RAM below the EBDA, the BIOS area (ACPI tables) reserved,
    /// RAM from 1 MiB to the end of low memory, and RAM above 4 GiB when there is more.
    public static func map(ramSize: UInt64) -> [E820Entry] {
        var map: [E820Entry] = [
            E820Entry(0, GuestLayout.ebdaStart, .ram),
            E820Entry(GuestLayout.acpiTables, GuestLayout.acpiTablesEnd - GuestLayout.acpiTables, .reserved),
        ]
        for region in GuestLayout.ramRegions(size: ramSize) {
            if region.base == 0 {
                if region.size > GuestLayout.kernelLoad {
                    map.append(E820Entry(GuestLayout.kernelLoad, region.size - GuestLayout.kernelLoad, .ram))
                }
            } else {
                map.append(E820Entry(region.base, region.size, .ram))
            }
        }
        return map
    }
}
