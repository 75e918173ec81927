/// The boot timer, after Firecracker's: the guest's init writes the magic byte 123 at
/// offset 0 once it runs (`devmem 0xc0000000 8 123` at Kite's address), and Kite notes
/// the time. Other values and offsets are ignored; reads are zero.
public final class BootTimer: BusDevice {
    public static let magic: UInt8 = 123
    private let onMarker: @Sendable () -> Void

    public init(onMarker: @escaping @Sendable () -> Void) { self.onMarker = onMarker }

    public func read(offset: UInt64, width: Int) -> UInt64 { 0 }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        if offset == 0 && UInt8(truncatingIfNeeded: value) == Self.magic { onMarker() }
    }
}
