#if canImport(Glibc)
import Glibc
#endif

/// Host input for the guest console. When stdin is a terminal it is put in raw mode
/// (restored by `restore()`, which every exit path calls) and Ctrl-A x quits;
/// Ctrl-A Ctrl-A sends one Ctrl-A.
public final class TerminalInput {
    public static let escapeByte: UInt8 = 0x01 // Ctrl-A
    public static let quitByte: UInt8 = UInt8(ascii: "x")

    public let fd: Int32
    public let isTerminal: Bool
    private var saved = termios()
    private var raw = false
    private var sawEscape = false

    public init(fd: Int32 = STDIN_FILENO, makeRaw: Bool = true) {
        self.fd = fd
        isTerminal = isatty(fd) == 1
        if isTerminal && makeRaw && tcgetattr(fd, &saved) == 0 {
            var t = saved
            cfmakeraw(&t)
            if tcsetattr(fd, TCSANOW, &t) == 0 { raw = true }
        }
    }

    public func restore() {
        if raw {
            tcsetattr(fd, TCSANOW, &saved)
            raw = false
        }
    }

    deinit { restore() }

    public enum Filtered: Equatable { case bytes([UInt8]), quit([UInt8]) }

    /// Applies the escape sequence to bytes read from a terminal.
    public func filter(_ input: [UInt8]) -> Filtered {
        guard isTerminal else { return .bytes(input) }
        var out: [UInt8] = []
        for b in input {
            if sawEscape {
                sawEscape = false
                if b == Self.quitByte { return .quit(out) }
                out.append(b) // Ctrl-A Ctrl-A -> Ctrl-A; Ctrl-A other -> other
            } else if b == Self.escapeByte {
                sawEscape = true
            } else {
                out.append(b)
            }
        }
        return .bytes(out)
    }
}
