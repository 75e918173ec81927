import CHost
import HostCalls
#if canImport(Glibc)
import Glibc
#endif

/// The control socket `kite run --api-socket PATH` opens, and the client side `kite inspect`
/// uses. One request per connection, one line: `inspect` (the hang report as text) or
/// `inspect json`; the answer follows, then the server closes the connection.
public enum APISocket {
    public static let maxRequest = 256

    /// Opens the listening socket (replacing a stale socket file at `path`).
    static func listen(path: String) throws(SetupError) -> Int32 {
        let fd = host_unix_listen(path)
        if fd < 0 { throw SetupError("--api-socket \(path): \(String(cString: strerror(-fd)))") }
        return fd
    }

    /// Serves one waiting connection, if any: reads its request line (waiting at most a
    /// second for it) and writes `answer(request)`. Never blocks for long on a slow client.
    static func serveOne(listener: Int32, answer: (String) -> String) {
        let conn = host_accept(listener)
        guard conn >= 0 else { return }
        defer { close(conn) }
        guard let request = readLine(conn, timeoutMilliseconds: 1000) else { return }
        writeAll(conn, Array(answer(request).utf8), timeoutMilliseconds: 2000)
    }

    /// `kite inspect`: sends `command` to the socket at `path` and returns the answer.
    public static func request(path: String, command: String, timeoutMilliseconds: Int32 = 15_000) throws(SetupError) -> String {
        let fd = host_unix_connect(path)
        if fd < 0 { throw SetupError("cannot connect to \(path): \(String(cString: strerror(-fd)))") }
        defer { close(fd) }
        guard writeAll(fd, Array((command + "\n").utf8), timeoutMilliseconds: 2000) else {
            throw SetupError("\(path): the VMM did not take the request")
        }
        var answer: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            guard waitFor(fd, Int16(POLLIN), timeoutMilliseconds) else {
                throw SetupError("\(path): no answer within \(timeoutMilliseconds / 1000) s")
            }
            let n = retryingInterrupted { read(fd, &buf, buf.count) }
            if n == 0 { break }
            if n < 0 {
                if errno == EAGAIN { continue }
                throw SetupError("\(path): \(String(cString: strerror(errno)))")
            }
            answer += buf[0..<n]
            if answer.count > 64 << 20 { throw SetupError("\(path): the answer is too long") }
        }
        return String(decoding: answer, as: UTF8.self)
    }

    private static func waitFor(_ fd: Int32, _ events: Int16, _ timeout: Int32) -> Bool {
        var p = pollfd(fd: fd, events: events, revents: 0)
        return retryingInterrupted { poll(&p, 1, timeout) } > 0
    }

    private static func readLine(_ fd: Int32, timeoutMilliseconds: Int32) -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < maxRequest {
            guard waitFor(fd, Int16(POLLIN), timeoutMilliseconds) else { return nil }
            let n = retryingInterrupted { read(fd, &byte, 1) }
            if n == 0 { break }
            if n < 0 { if errno == EAGAIN { continue }; return nil }
            if byte == UInt8(ascii: "\n") { break }
            line.append(byte)
        }
        return String(decoding: line, as: UTF8.self).trimmingSpaces()
    }

    @discardableResult
    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], timeoutMilliseconds: Int32) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = retryingHostCall({
                bytes.withUnsafeBytes { host_send(fd, $0.baseAddress! + done, UInt(bytes.count - done)) }
            })
            if n == -Int(EAGAIN) {
                guard waitFor(fd, Int16(POLLOUT), timeoutMilliseconds) else { return false }
                continue
            }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}

extension String {
    func trimmingSpaces() -> String {
        let scalars = unicodeScalars.drop { $0 == " " || $0 == "\r" || $0 == "\t" }
        var s = Substring(scalars)
        while let last = s.last, last == " " || last == "\r" || last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
