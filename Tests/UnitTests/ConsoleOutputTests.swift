import Foundation
import Testing
@testable import VMM
#if canImport(Glibc)
import Glibc
#endif

/// The console thread's hand-off (ConsoleOutput's protocol): output goes out by lines, a
/// partial line still goes out on its own, and nothing is lost or reordered.
@Suite struct ConsoleOutputTests {
    /// A pipe whose write end the console writes to; `read` takes what arrived.
    final class Reader: Sendable {
        let readFD: Int32, writeFD: Int32
        init() throws {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw POSIXError(.EIO) }
            (readFD, writeFD) = (fds[0], fds[1])
        }
        deinit { close(readFD); close(writeFD) }

        /// Reads until `count` bytes arrived or `seconds` passed with nothing new.
        func read(_ count: Int, quietSeconds: Int32 = 10) -> [UInt8] {
            var got: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while got.count < count {
                var p = pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, quietSeconds * 1000) == 1 else { break }
                let n = Glibc.read(readFD, &buffer, buffer.count)
                if n <= 0 { break }
                got += buffer[0..<n]
            }
            return got
        }
    }

    @Test func aPartialLineGoesOutWithoutTheRestOfItsLine() throws {
        // A prompt, an echoed key: no newline follows, and nothing else is written.
        let reader = try Reader()
        let console = ConsoleOutput(fd: reader.writeFD, ownsFD: false)
        try console.start(seccomp: nil)
        for byte in "login: ".utf8 { console.write([byte]) }
        #expect(reader.read(7) == Array("login: ".utf8))
        console.write(Array("r".utf8))
        #expect(reader.read(1) == Array("r".utf8))
        #expect(console.finish() == 0)
    }

    @Test func bytesWrittenOneAtATimeArriveWholeAndInOrder() throws {
        // What a UART console does: one byte per exit, lines of every length, some longer
        // than `flushBytes`, while the reader takes them as they come.
        let reader = try Reader()
        let console = ConsoleOutput(fd: reader.writeFD, ownsFD: false)
        try console.start(seccomp: nil)
        var text: [UInt8] = []
        for i in 0..<3000 { text += Array("line \(i)".utf8) + [UInt8](repeating: UInt8(ascii: "-"), count: i % 97) + [10] }
        text += [UInt8](repeating: UInt8(ascii: "x"), count: 3 * ConsoleOutput.flushBytes) + Array("\nend".utf8)
        let bytes = text
        Thread { for byte in bytes { console.write([byte]) } }.start()
        #expect(reader.read(text.count) == text)
        #expect(console.finish() == 0)
    }

    @Test func finishWritesAPartialLineAtOnce() throws {
        let reader = try Reader()
        let console = ConsoleOutput(fd: reader.writeFD, ownsFD: false)
        try console.start(seccomp: nil)
        console.write(Array("no newline".utf8))
        #expect(console.finish() == 0)
        #expect(reader.read(10, quietSeconds: 0) == Array("no newline".utf8))
    }
}
