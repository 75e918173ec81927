/// The part of the i8042 keyboard controller a guest uses to reset the machine: writing
/// command 0xFE (pulse reset line) to the command port. Offsets: 0 = data (0x60),
/// 4 = status/command (0x64). No keyboard is attached.
public final class I8042: BusDevice {
    public static let dataOffset: UInt64 = 0
    public static let commandOffset: UInt64 = 4
    public static let resetCommand: UInt8 = 0xFE
    private let onReset: @Sendable () -> Void

    public init(onReset: @escaping @Sendable () -> Void) { self.onReset = onReset }

    public func read(offset: UInt64, width: Int) -> UInt64 {
        0 // status: output buffer empty, input buffer empty; data: nothing
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        if offset == Self.commandOffset, UInt8(truncatingIfNeeded: value) == Self.resetCommand { onReset() }
    }
}
