import CHost
import Testing
@testable import VMM
#if canImport(Glibc)
import Glibc
#endif

/// The console's terminal handling, on a real pseudo-terminal.
@Suite struct TerminalInputTests {
    /// Opens a pty pair; returns (controller, terminal) fds.
    static func openPTY() throws -> (Int32, Int32) {
        // posix_openpt/ptsname are not imported by Swift's Glibc module; use the Linux
        // ioctls behind them (TIOCSPTLCK = _IOW('T', 0x31, int), TIOCGPTN = _IOR('T', 0x30, int)).
        let controller = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        #expect(controller >= 0)
        var unlock: Int32 = 0
        var number: Int32 = -1
        #expect(host_ioctl_ptr(controller, 0x4004_5431, &unlock) == 0)
        #expect(host_ioctl_ptr(controller, 0x8004_5430, &number) == 0)
        let terminal = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
        try #require(terminal >= 0, "cannot open /dev/pts/\(number)")
        return (controller, terminal)
    }

    @Test func rawModeWhileRunningAndRestoredAfter() throws {
        let (controller, terminal) = try Self.openPTY()
        defer { close(controller); close(terminal) }
        var before = termios()
        tcgetattr(terminal, &before)
        #expect(before.c_lflag & tcflag_t(ICANON | ECHO) != 0)
        let input = TerminalInput(fd: terminal)
        #expect(input.isTerminal)
        var during = termios()
        tcgetattr(terminal, &during)
        #expect(during.c_lflag & tcflag_t(ICANON | ECHO | ISIG) == 0)   // raw: keys go to the guest
        input.restore()
        var after = termios()
        tcgetattr(terminal, &after)
        #expect(after.c_lflag == before.c_lflag && after.c_iflag == before.c_iflag)
    }

    @Test func ctrlAXQuitsAndCtrlACtrlASendsCtrlA() throws {
        let (controller, terminal) = try Self.openPTY()
        defer { close(controller); close(terminal) }
        let input = TerminalInput(fd: terminal)
        defer { input.restore() }
        #expect(input.filter(Array("ls\r".utf8)) == .bytes(Array("ls\r".utf8)))
        #expect(input.filter([0x01, 0x01, 0x41]) == .bytes([0x01, 0x41]))
        #expect(input.filter([0x42, 0x01]) == .bytes([0x42]))            // escape pending...
        #expect(input.filter([UInt8(ascii: "x"), 0x43]) == .quit([]))      // ...completed across reads
        #expect(input.filter([0x61, 0x01, UInt8(ascii: "x")]) == .quit([0x61]))
    }

    @Test func pipesPassEverythingThrough() throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let input = TerminalInput(fd: fds[0])
        #expect(!input.isTerminal)
        #expect(input.filter([0x01, UInt8(ascii: "x")]) == .bytes([0x01, UInt8(ascii: "x")]))
    }
}
