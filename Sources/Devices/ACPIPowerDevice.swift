/// The ACPI hardware-reduced sleep and reset registers the FADT points at:
/// offset 0 = SLEEP_CONTROL_REG, 1 = SLEEP_STATUS_REG, 2 = RESET_REG.
/// Writing SLP_EN with the S5 sleep type powers the machine off.
public final class ACPIPowerDevice: BusDevice {
    public static let sleepControlOffset: UInt64 = 0
    public static let sleepStatusOffset: UInt64 = 1
    public static let resetOffset: UInt64 = 2
    /// SLP_EN (bit 5) and SLP_TYPx (bits 4:2) of the sleep control register.
    public static let sleepEnable: UInt8 = 0x20
    public static let sleepTypeShift: UInt8 = 2

    private let s5SleepType: UInt8
    private let resetValue: UInt8
    private let onPowerOff: @Sendable () -> Void
    private let onReset: @Sendable () -> Void

    public init(s5SleepType: UInt8, resetValue: UInt8,
                onPowerOff: @escaping @Sendable () -> Void, onReset: @escaping @Sendable () -> Void) {
        self.s5SleepType = s5SleepType
        self.resetValue = resetValue
        self.onPowerOff = onPowerOff
        self.onReset = onReset
    }

    public func read(offset: UInt64, width: Int) -> UInt64 { 0 }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        let v = UInt8(truncatingIfNeeded: value)
        switch offset {
        case Self.sleepControlOffset:
            let type = (v >> Self.sleepTypeShift) & 0x7
            if v & Self.sleepEnable != 0 && type == s5SleepType { onPowerOff() }
        case Self.resetOffset:
            if v == resetValue { onReset() }
        default:
            break
        }
    }
}
