/// Where virtio-mmio devices sit: register windows in the 32-bit MMIO hole and their
/// IOAPIC pins (16-23, above the ISA interrupts).
enum VirtioSlots {
    static let firstWindow: UInt64 = 0xD000_0000
    static let windowStride: UInt64 = 0x1000
    static let firstGSI: UInt32 = 16
    static let maxDevices = 8

    static func window(_ slot: Int) -> UInt64 { firstWindow + UInt64(slot) * windowStride }
    static func gsi(_ slot: Int) -> UInt32 { firstGSI + UInt32(slot) }
    /// The DSDT device name for a slot: VR00, VR01, ...
    static func acpiName(_ slot: Int) -> String { "VR" + (slot < 10 ? "0" : "") + String(slot) }
}
