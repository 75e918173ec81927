/// Where virtio-mmio devices sit: register windows in the 32-bit MMIO hole and their
/// IOAPIC pins: 16-23 above the ISA interrupts first, then the ISA interrupts no Kite device
/// uses (not 0-2 timer and cascade, 1 keyboard, 3-4 serial ports, 8 RTC, 9 the SCI), as
/// Firecracker also uses 5-23. Kata Containers asks for 9 disks, a vsock and a network.
enum VirtioSlots {
    static let firstWindow: UInt64 = 0xD000_0000
    static let windowStride: UInt64 = 0x1000
    static let gsis: [UInt32] = Array(16...23) + [5, 6, 7, 10, 11, 12, 13, 14, 15]
    static let maxDevices = gsis.count

    static func window(_ slot: Int) -> UInt64 { firstWindow + UInt64(slot) * windowStride }
    static func gsi(_ slot: Int) -> UInt32 { gsis[slot] }
    /// The DSDT device name for a slot: VR00, VR01, ...
    static func acpiName(_ slot: Int) -> String { "VR" + (slot < 10 ? "0" : "") + String(slot) }
}
