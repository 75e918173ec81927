/// Differentiated System Description Table: the AML definition block
/// (ACPI 6.5, section 5.2.11.1).
public struct DSDT: Sendable, Equatable {
    public static let signature = "DSDT"
    /// Revision 2: integers in this block are 64-bit.
    public static let revision: UInt8 = 2
    public static let oemTableID = "KITEDSDT"

    /// COM1's legacy resources.
    public static let com1Port: UInt16 = 0x3F8
    public static let com1IRQ: UInt8 = 4

    public var terms: [AMLTerm]

    public init(terms: [AMLTerm]) {
        self.terms = terms
    }

    /// The DSDT for `config`:
    /// ```
    /// Name (\_S5_, Package () { s5SleepType, Zero, Zero, Zero })
    /// Scope (\_SB_) {
    ///     Device (COM1) { _HID EISAID("PNP0501"), _UID 0, _CRS { IO 0x3F8/8, IRQNoFlags {4} } }
    ///     Device (VR00) { _HID "LNRO0005", _UID n, _CRS { Memory32Fixed or QWordMemory,
    ///                     Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { gsi } } }
    /// }
    /// ```
    public init(_ config: ACPIConfig) {
        precondition(config.s5SleepType < 8, "SLP_TYP is a 3-bit field")
        var terms: [AMLTerm] = [Self.sleepState5(sleepType: config.s5SleepType)]
        var devices: [AMLTerm] = []
        if config.includesCOM1 { devices.append(Self.com1Device) }
        if config.includesKeyboardController { devices.append(Self.keyboardControllerDevice) }
        let deviceNames = (config.includesCOM1 ? ["COM1"] : []) + (config.includesKeyboardController ? ["PS2K"] : [])
            + config.mmioDevices.map(\.name)
        precondition(Set(deviceNames.map { AML.nameSeg($0) }).count == deviceNames.count,
                     "device names under \\_SB_ must be distinct")
        devices += config.mmioDevices.map(Self.mmioDevice)
        if !devices.isEmpty { terms.append(.scope("\\_SB_", devices)) }
        self.init(terms: terms)
    }

    /// `Name (\_S5_, Package () { sleepType, Zero, Zero, Zero })`. Linux reads elements 0 and 1
    /// (SLP_TYPa, SLP_TYPb); on hardware-reduced ACPI only SLP_TYPa is written.
    public static func sleepState5(sleepType: UInt8) -> AMLTerm {
        .name("\\_S5_", .package([.integer(UInt64(sleepType)), .zero, .zero, .zero]))
    }

    /// The 16550 UART at COM1.
    public static var com1Device: AMLTerm {
        .device("COM1", [
            .name("_HID", .eisaID("PNP0501")),
            .name("_UID", .zero),
            .name("_CRS", .resourceTemplate([
                .io(minimum: com1Port, maximum: com1Port, alignment: 1, length: 8),
                .irq([com1IRQ]),
            ])),
        ])
    }

    /// The i8042 keyboard controller: data port 0x60, command/status port 0x64, IRQ 1.
    public static var keyboardControllerDevice: AMLTerm {
        .device("PS2K", [
            .name("_HID", .eisaID("PNP0303")),
            .name("_UID", .zero),
            .name("_CRS", .resourceTemplate([
                .io(minimum: 0x60, maximum: 0x60, alignment: 1, length: 1),
                .io(minimum: 0x64, maximum: 0x64, alignment: 1, length: 1),
                .irq([1]),
            ])),
        ])
    }

    /// One memory-mapped device with its register window and edge-triggered interrupt.
    /// Edge, because Kite signals virtio interrupts as irqfd pulses: on a level-triggered
    /// IOAPIC pin a pulse arriving while the previous interrupt awaits EOI would be lost.
    public static func mmioDevice(_ device: ACPIMMIODevice) -> AMLTerm {
        precondition(device.length > 0, "MMIO device \(device.name) has an empty window")
        return .device(device.name, [
            .name("_HID", .string(device.hid)),
            .name("_UID", .integer(UInt64(device.uid))),
            .name("_CRS", .resourceTemplate([
                .memory(base: device.base, length: UInt64(device.length)),
                .extendedInterrupt([device.gsi], mode: .edgeActiveHigh),
            ])),
        ])
    }

    /// The AML after the header.
    public var aml: [UInt8] {
        terms.flatMap { $0.encoded() }
    }

    public func encoded() -> [UInt8] {
        ACPITableHeader(signature: Self.signature, revision: Self.revision,
                        oemTableID: Self.oemTableID).table(body: aml)
    }
}
