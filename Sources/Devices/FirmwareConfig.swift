import Synchronization

/// QEMU's firmware configuration device (fw_cfg), the traditional I/O interface that test
/// kernels read: a 16-bit key written to the selector (offset 0, port 0x510) chooses an
/// item, and byte reads of the data register (offset 1, port 0x511) return it from its
/// start. Reads past an item's end, and every read of an unknown key, return zeros. The
/// items are fixed when the machine is built; the guest can write nothing into them (the
/// write interface and DMA are not offered, and item 0x01 says so).
public final class FirmwareConfig: BusDevice {
    public static let selectorOffset: UInt64 = 0
    public static let dataOffset: UInt64 = 1
    /// The keys Kite answers (QEMU's numbering, include/standard-headers/linux/qemu_fw_cfg.h).
    public enum Key {
        public static let signature: UInt16 = 0x00
        public static let id: UInt16 = 0x01
        public static let uuid: UInt16 = 0x02
        public static let ramSize: UInt16 = 0x03
        public static let noGraphic: UInt16 = 0x04
        public static let cpuCount: UInt16 = 0x05
        public static let maxCPUs: UInt16 = 0x0F
        public static let fileDirectory: UInt16 = 0x19
    }
    /// Bit 14 of a selector asks for the (long removed) write channel; it does not change
    /// which item is read.
    static let writeChannel: UInt16 = 0x4000

    private struct State { var key: UInt16 = 0; var offset = 0 }
    private let items: [UInt16: [UInt8]]
    private let state = Mutex(State())

    public init(items: [UInt16: [UInt8]]) { self.items = items }

    /// The items QEMU's pc machine offers that describe the machine: signature "QEMU",
    /// interface id 1 (traditional I/O only), a zero UUID, RAM size, no graphics, vCPU count
    /// (booted and possible), and an empty file directory.
    public convenience init(cpus: Int, ramBytes: UInt64) {
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        self.init(items: [
            Key.signature: Array("QEMU".utf8),
            Key.id: le(UInt32(1)),
            Key.uuid: [UInt8](repeating: 0, count: 16),
            Key.ramSize: le(ramBytes),
            Key.noGraphic: le(UInt16(1)),
            Key.cpuCount: le(UInt16(clamping: cpus)),
            Key.maxCPUs: le(UInt16(clamping: cpus)),
            Key.fileDirectory: withUnsafeBytes(of: UInt32(0).bigEndian) { Array($0) },   // count, big-endian
        ])
    }

    public func read(offset: UInt64, width: Int) -> UInt64 {
        guard offset == Self.dataOffset else { return 0 }
        // A wider read returns the next `width` bytes of the item, little-endian.
        return state.withLock { s in
            var value: UInt64 = 0
            let item = items[s.key] ?? []
            for i in 0..<min(width, 8) {
                let byte = s.offset < item.count ? item[s.offset] : 0
                if s.offset < Int.max { s.offset += 1 }
                value |= UInt64(byte) << (8 * UInt64(i))
            }
            return value
        }
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        // The selector is a 16-bit register at offset 0; a byte write there selects the low byte's key.
        guard offset == Self.selectorOffset else { return }
        let key = UInt16(truncatingIfNeeded: width == 1 ? value & 0xFF : value) & ~Self.writeChannel
        state.withLock { $0 = State(key: key, offset: 0) }
    }
}
