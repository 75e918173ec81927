/// What the ACPI tables describe about one VM.
public struct ACPIConfig: Sendable, Equatable {
    /// One entry per vCPU; the ACPI processor UID is the index. Must be distinct.
    /// IDs up to 254 get a Processor Local APIC entry, larger ones a Processor Local x2APIC.
    public var apicIDs: [UInt32]
    /// I/O APIC ID written to the MADT.
    public var ioapicID: UInt8 = 0
    public var ioapicAddress: UInt32 = 0xFEC0_0000
    public var localAPICAddress: UInt32 = 0xFEE0_0000
    /// SCI interrupt (FADT SCI_INT). When it is an ISA IRQ, the MADT overrides it to the same
    /// GSI, edge-triggered active-high.
    public var sciInterrupt: UInt16 = 9
    /// FADT SLEEP_CONTROL_REG (system I/O, 8-bit). To enter S5 the guest writes
    /// SLP_EN (bit 5) | SLP_TYPx << 2, i.e. 0x34 for the default `s5SleepType` of 5.
    public var sleepControlPort: UInt16 = 0x600
    /// FADT SLEEP_STATUS_REG (system I/O, 8-bit). Linux writes WAK_STS (0x80) here before
    /// sleeping and reads it back after waking.
    public var sleepStatusPort: UInt16 = 0x601
    /// FADT RESET_REG (system I/O, 8-bit); RESET_REG_SUP is set.
    public var resetPort: UInt16 = 0x602
    /// FADT RESET_VALUE: what the guest writes to `resetPort` to reboot.
    public var resetValue: UInt8 = 0x01
    /// SLP_TYPa for S5: element 0 of \_S5_ (at most 7: the field is 3 bits).
    public var s5SleepType: UInt8 = 5
    /// FADT IAPC_BOOT_ARCH; see `FADT.BootArchitectureFlags.kiteDefault`.
    public var bootArchitecture: FADT.BootArchitectureFlags = .kiteDefault
    /// Whether the DSDT describes COM1 (PNP0501 at I/O 0x3F8-0x3FF, IRQ 4).
    public var includesCOM1: Bool = true
    /// Whether the DSDT describes an i8042 keyboard controller (PNP0303 at I/O 0x60 and 0x64,
    /// IRQ 1); set `bootArchitecture`'s `.i8042` with it, or Linux does not probe it.
    public var includesKeyboardController: Bool = false
    /// Memory-mapped devices described under \_SB_ (e.g. virtio-mmio).
    public var mmioDevices: [ACPIMMIODevice] = []

    public init(apicIDs: [UInt32]) {
        self.apicIDs = apicIDs
    }
}

/// A memory-mapped device described in the DSDT, with one edge-triggered, active-high,
/// exclusive interrupt.
public struct ACPIMMIODevice: Sendable, Equatable {
    /// The ACPI HID Linux's virtio-mmio driver binds to.
    public static let virtioMMIOHID = "LNRO0005"

    /// 1-4 character NameSeg, e.g. "VR00".
    public var name: String
    /// _HID string, e.g. "LNRO0005".
    public var hid: String
    public var uid: UInt32
    public var base: UInt64
    public var length: UInt32
    public var gsi: UInt32

    public init(name: String, hid: String = ACPIMMIODevice.virtioMMIOHID, uid: UInt32,
                base: UInt64, length: UInt32, gsi: UInt32) {
        self.name = name
        self.hid = hid
        self.uid = uid
        self.base = base
        self.length = length
        self.gsi = gsi
    }
}
