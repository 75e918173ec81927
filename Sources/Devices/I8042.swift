import Synchronization

/// The i8042 keyboard controller. Offsets: 0 = data (0x60), 4 = status/command (0x64).
///
/// Without a keyboard (`kite run`) it is only what a guest uses to reset the machine:
/// command 0xFE (pulse reset line); every read is 0.
///
/// With a keyboard (`kite firecracker`, whose clients stop guests with SendCtrlAltDel) it is
/// as much of a controller and keyboard as Linux's i8042 and atkbd drivers need to take one
/// key sequence, the same as Firecracker's: the control register (0x20 read, 0x60 write),
/// the output port (0xD0, 0xD1), a 16-byte output buffer that raises IRQ 1 while it holds
/// bytes (when the control register enables the interrupt), and a keyboard that acknowledges
/// (0xFA) every command sent to it. `pressCtrlAltDel` puts the set-2 scan codes of Ctrl, Alt
/// and Delete in the buffer.
public final class I8042: BusDevice {
    public static let dataOffset: UInt64 = 0
    public static let commandOffset: UInt64 = 4
    public static let resetCommand: UInt8 = 0xFE
    public static let readControl: UInt8 = 0x20
    public static let writeControl: UInt8 = 0x60
    public static let readOutputPort: UInt8 = 0xD0
    public static let writeOutputPort: UInt8 = 0xD1
    /// Status bits: output buffer full; the next data byte is a command's parameter; keyboard
    /// not inhibited.
    public static let outputFull: UInt8 = 0x01
    public static let commandData: UInt8 = 0x08
    public static let keyboardEnabled: UInt8 = 0x10
    /// Control register bits: keyboard interrupt enabled; POST passed.
    public static let keyboardInterruptEnabled: UInt8 = 0x01
    public static let postPassed: UInt8 = 0x04
    public static let acknowledge: UInt8 = 0xFA
    public static let bufferSize = 16
    /// Set-2 make codes: Left Ctrl, Left Alt, Delete (an extended key).
    public static let ctrlAltDelete: [UInt8] = [0x14, 0x11, 0xE0, 0x71]

    private let onReset: @Sendable () -> Void
    /// Pulses IRQ 1; nil: no keyboard.
    private let keyboardInterrupt: (@Sendable () -> Void)?
    private struct State {
        var status = I8042.keyboardEnabled
        var control = I8042.postPassed | I8042.keyboardInterruptEnabled
        var outputPort: UInt8 = 0
        var pendingCommand: UInt8 = 0
        var buffer: [UInt8] = []

        mutating func push(_ byte: UInt8) -> Bool {
            guard buffer.count < I8042.bufferSize else { return false }
            buffer.append(byte)
            status |= I8042.outputFull
            return true
        }

        mutating func flush() {
            buffer.removeAll()
            status &= ~I8042.outputFull
        }

        var interruptEnabled: Bool { control & I8042.keyboardInterruptEnabled != 0 }
    }
    private let state = Mutex(State())

    public init(onReset: @escaping @Sendable () -> Void, keyboardInterrupt: (@Sendable () -> Void)? = nil) {
        self.onReset = onReset
        self.keyboardInterrupt = keyboardInterrupt
    }

    public var hasKeyboard: Bool { keyboardInterrupt != nil }

    /// Presses Ctrl+Alt+Delete. False when there is no keyboard or no room in the buffer
    /// (the guest has not read the last keys); nothing is pushed then.
    @discardableResult
    public func pressCtrlAltDelete() -> Bool {
        guard let keyboardInterrupt else { return false }
        let (pushed, raise) = state.withLock { s -> (Bool, Bool) in
            guard s.buffer.count + Self.ctrlAltDelete.count <= Self.bufferSize else { return (false, false) }
            for byte in Self.ctrlAltDelete { _ = s.push(byte) }
            return (true, s.interruptEnabled)
        }
        if raise { keyboardInterrupt() }
        return pushed
    }

    public func read(offset: UInt64, width: Int) -> UInt64 {
        guard let keyboardInterrupt, width == 1 else { return 0 }
        switch offset {
        case Self.commandOffset: return UInt64(state.withLock { $0.status })
        case Self.dataOffset:
            let (byte, more) = state.withLock { s -> (UInt8, Bool) in
                guard !s.buffer.isEmpty else { return (0, false) }
                let byte = s.buffer.removeFirst()
                if s.buffer.isEmpty { s.status &= ~Self.outputFull }
                return (byte, !s.buffer.isEmpty && s.interruptEnabled)
            }
            if more { keyboardInterrupt() }  // the driver reads one byte per interrupt
            return UInt64(byte)
        default: return 0
        }
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        let byte = UInt8(truncatingIfNeeded: value)
        if offset == Self.commandOffset && byte == Self.resetCommand { onReset(); return }
        guard let keyboardInterrupt, width == 1 else { return }
        let raise = state.withLock { s -> Bool in
            switch (offset, byte) {
            case (Self.commandOffset, Self.readControl):
                s.flush()
                _ = s.push(s.control)
            case (Self.commandOffset, Self.readOutputPort):
                s.flush()
                _ = s.push(s.outputPort)
            case (Self.commandOffset, Self.writeControl):
                s.flush()
                s.status |= Self.commandData
                s.pendingCommand = byte
            case (Self.commandOffset, Self.writeOutputPort):
                s.status |= Self.commandData
                s.pendingCommand = byte
            case (Self.commandOffset, _):
                break  // other controller commands (self-test, port enables) are ignored
            case (Self.dataOffset, _) where s.status & Self.commandData != 0:
                if s.pendingCommand == Self.writeControl { s.control = byte }
                if s.pendingCommand == Self.writeOutputPort { s.outputPort = byte }
                s.status &= ~Self.commandData
            case (Self.dataOffset, _):
                // A command for the keyboard itself: acknowledged, whatever it is.
                s.flush()
                _ = s.push(Self.acknowledge)
                return s.interruptEnabled
            default: break
            }
            return false
        }
        if raise { keyboardInterrupt() }
    }
}
