/// Fixed ACPI Description Table, revision 6 (ACPI 6.x, section 5.2.9), for a
/// hardware-reduced ACPI platform: no PM1/GPE blocks, no FACS, power-off through the
/// sleep control/status registers and reboot through the reset register.
public struct FADT: Sendable, Equatable {
    public static let signature = "FACP"
    public static let revision: UInt8 = 6
    /// FADT Minor Version: 6.5.
    public static let minorVersion: UInt8 = 5
    /// Length of a revision-6 FADT (through the Hypervisor Vendor Identity).
    public static let size = 276
    public static let oemTableID = "KITEFACP"

    /// Byte offsets of the fields Kite fills (ACPI 6.5, table 5.9).
    public enum Offset {
        public static let firmwareControl = 36
        public static let dsdt = 40
        public static let preferredPMProfile = 45
        public static let sciInterrupt = 46
        public static let smiCommand = 48
        public static let pm1aEventBlock = 56
        public static let pm1aControlBlock = 64
        public static let pmTimerBlock = 76
        public static let iapcBootArchitecture = 109
        public static let flags = 112
        public static let resetRegister = 116
        public static let resetValue = 128
        public static let armBootArchitecture = 129
        public static let minorVersion = 131
        public static let extendedFirmwareControl = 132
        public static let extendedDSDT = 140
        public static let extendedPM1aEventBlock = 148
        public static let sleepControlRegister = 244
        public static let sleepStatusRegister = 256
        public static let hypervisorVendorIdentity = 268
    }

    /// Fixed Feature Flags (ACPI 6.5, table 5.10).
    public struct Flags: OptionSet, Sendable, Equatable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        /// Set: the power button, if any, is a control-method device (no fixed-feature button).
        public static let powerButtonIsControlMethod = Flags(rawValue: 1 << 4)
        /// Set: the sleep button, if any, is a control-method device (no fixed-feature button).
        public static let sleepButtonIsControlMethod = Flags(rawValue: 1 << 5)
        /// RESET_REG_SUP: the reset register is supported.
        public static let resetRegisterSupported = Flags(rawValue: 1 << 10)
        /// HW_REDUCED_ACPI: no fixed hardware (PM1/GPE/PM timer); SCI may still exist.
        public static let hardwareReducedACPI = Flags(rawValue: 1 << 20)
    }

    /// IA-PC Boot Architecture Flags (ACPI 6.5, table 5.11).
    public struct BootArchitectureFlags: OptionSet, Sendable, Equatable {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }

        public static let legacyDevices = BootArchitectureFlags(rawValue: 1 << 0)
        /// An 8042 keyboard controller is present.
        public static let i8042 = BootArchitectureFlags(rawValue: 1 << 1)
        public static let vgaNotPresent = BootArchitectureFlags(rawValue: 1 << 2)
        public static let msiNotSupported = BootArchitectureFlags(rawValue: 1 << 3)
        public static let pcieASPMControls = BootArchitectureFlags(rawValue: 1 << 4)
        public static let cmosRTCNotPresent = BootArchitectureFlags(rawValue: 1 << 5)

        /// What Kite reports by default:
        /// - VGA not present: there is none, and Linux then skips probing legacy VGA ports.
        /// - CMOS RTC not present: Kite emulates no RTC at ports 0x70/0x71; Linux then does
        ///   not register the rtc_cmos platform device (wall-clock time comes from kvmclock).
        /// - MSI is *not* declared unsupported, so future PCI/MSI devices keep working.
        /// - No 8042 bit: without it (and without a PNP0303 device in the DSDT) Linux's i8042
        ///   driver does not probe ports 0x60/0x64; reboot uses the FADT reset register instead.
        /// - No legacy-devices bit (no ISA devices beyond what the DSDT describes).
        public static let kiteDefault: BootArchitectureFlags = [.vgaNotPresent, .cmosRTCNotPresent]
    }

    /// Physical address of the DSDT. Written to X_DSDT, and also to the 32-bit DSDT field
    /// when it fits (both then agree, which ACPICA accepts).
    public var dsdtAddress: UInt64
    public var flags: Flags
    public var bootArchitecture: BootArchitectureFlags
    public var sciInterrupt: UInt16
    public var resetRegister: GenericAddress
    public var resetValue: UInt8
    public var sleepControlRegister: GenericAddress
    public var sleepStatusRegister: GenericAddress
    /// 8 bytes; ASCII, zero padded.
    public var hypervisorVendorIdentity: String

    public init(
        dsdtAddress: UInt64,
        flags: Flags = [.hardwareReducedACPI, .resetRegisterSupported,
                        .powerButtonIsControlMethod, .sleepButtonIsControlMethod],
        bootArchitecture: BootArchitectureFlags = .kiteDefault,
        sciInterrupt: UInt16,
        resetRegister: GenericAddress, resetValue: UInt8,
        sleepControlRegister: GenericAddress, sleepStatusRegister: GenericAddress,
        hypervisorVendorIdentity: String = "KITE"
    ) {
        self.dsdtAddress = dsdtAddress
        self.flags = flags
        self.bootArchitecture = bootArchitecture
        self.sciInterrupt = sciInterrupt
        self.resetRegister = resetRegister
        self.resetValue = resetValue
        self.sleepControlRegister = sleepControlRegister
        self.sleepStatusRegister = sleepStatusRegister
        self.hypervisorVendorIdentity = hypervisorVendorIdentity
    }

    /// The FADT for `config`, pointing at a DSDT placed at `dsdtAddress`.
    public init(_ config: ACPIConfig, dsdtAddress: UInt64) {
        self.init(
            dsdtAddress: dsdtAddress,
            bootArchitecture: config.bootArchitecture,
            sciInterrupt: config.sciInterrupt,
            resetRegister: .ioPort8(config.resetPort), resetValue: config.resetValue,
            sleepControlRegister: .ioPort8(config.sleepControlPort),
            sleepStatusRegister: .ioPort8(config.sleepStatusPort))
    }

    public func encoded() -> [UInt8] {
        var table = [UInt8](repeating: 0, count: Self.size)
        if dsdtAddress <= UInt64(UInt32.max) {
            table.storeLittleEndian(UInt32(dsdtAddress), at: Offset.dsdt)
        }
        table.storeLittleEndian(sciInterrupt, at: Offset.sciInterrupt)
        table.storeLittleEndian(bootArchitecture.rawValue, at: Offset.iapcBootArchitecture)
        table.storeLittleEndian(flags.rawValue, at: Offset.flags)
        table.replaceSubrange(Offset.resetRegister..<(Offset.resetRegister + GenericAddress.size),
                              with: resetRegister.encoded())
        table[Offset.resetValue] = resetValue
        table[Offset.minorVersion] = Self.minorVersion
        table.storeLittleEndian(dsdtAddress, at: Offset.extendedDSDT)
        table.replaceSubrange(
            Offset.sleepControlRegister..<(Offset.sleepControlRegister + GenericAddress.size),
            with: sleepControlRegister.encoded())
        table.replaceSubrange(
            Offset.sleepStatusRegister..<(Offset.sleepStatusRegister + GenericAddress.size),
            with: sleepStatusRegister.encoded())
        table.replaceSubrange(
            Offset.hypervisorVendorIdentity..<(Offset.hypervisorVendorIdentity + 8),
            with: fixedASCII(hypervisorVendorIdentity, width: 8, padding: 0))
        let body = Array(table[ACPITableHeader.size...])
        return ACPITableHeader(signature: Self.signature, revision: Self.revision,
                               oemTableID: Self.oemTableID).table(body: body)
    }
}
