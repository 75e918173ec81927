import CHost
import HostCalls
#if canImport(Glibc)
import Glibc
#endif

/// Serves Firecracker's API on a Unix socket, on one thread: many clients may be connected,
/// each with keep-alive, and their requests are answered one at a time, in arrival order per
/// connection (as Firecracker's API thread does).
///
/// Bounds, so that no client can stall the API or the guest: at most `maxConnections`
/// connections (when full, the longest-idle one is closed for a new one); a request not
/// complete within `requestTimeoutSeconds` of its first byte ends its connection; a
/// connection whose answers are not being read is not read further until they are; bodies
/// beyond the payload limit end the connection with a 400.
///
/// The thread blocks in poll(2) on the listener, the connections and `stopFD` (an eventfd
/// `stop()` signals); its timeout is the nearest request deadline, never a polling interval.
public final class APIServer: @unchecked Sendable {
    public static let maxConnections = 32
    public static let requestTimeoutSeconds: UInt64 = 10

    private let listener: Int32
    private let stopFD: Int32
    private let path: String
    private let maxBodyBytes: Int
    private let respond: (HTTPRequest) -> HTTPResponse

    private final class Connection {
        let fd: Int32
        var reader: HTTPRequestReader
        var output: [UInt8] = []
        var closeAfterOutput = false
        /// When the request now being read started (its first byte), for the timeout.
        var requestStarted: UInt64?
        var lastActivity: UInt64
        init(fd: Int32, maxBodyBytes: Int, now: UInt64) {
            self.fd = fd
            reader = HTTPRequestReader(maxBodyBytes: maxBodyBytes)
            lastActivity = now
        }
    }

    /// Binds the socket at `path`; an existing file there is an error, as in Firecracker
    /// (clients remove stale sockets themselves).
    public init(path: String, maxBodyBytes: Int = 51200, respond: @escaping (HTTPRequest) -> HTTPResponse) throws(SchemaError) {
        let fd = host_unix_listen_exclusive(path)
        if fd < 0 { throw SchemaError("Failed to open the API socket at \(path): \(String(cString: strerror(-fd)))") }
        let stop = host_eventfd()
        if stop < 0 { close(fd); throw SchemaError("eventfd: \(String(cString: strerror(-stop)))") }
        listener = fd
        stopFD = stop
        self.path = path
        self.maxBodyBytes = maxBodyBytes
        self.respond = respond
    }

    deinit {
        close(listener)
        close(stopFD)
    }

    /// Ends `serve()` (from any thread) and removes the socket file.
    public func stop() {
        unlink(path)
        var one: UInt64 = 1
        _ = write(stopFD, &one, 8)
    }

    /// Serves until `stop()`.
    public func serve() {
        var connections: [Connection] = []
        defer { for c in connections { close(c.fd) } }
        while true {
            let now = monotonicNanoseconds()
            var fds = [pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0), pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
            var nearest: UInt64?
            for c in connections {
                // A connection with answers waiting is written, not read (backpressure).
                let events = c.output.isEmpty ? Int16(POLLIN) : Int16(POLLOUT)
                fds.append(pollfd(fd: c.fd, events: events, revents: 0))
                if let started = c.requestStarted {
                    let deadline = started + Self.requestTimeoutSeconds * 1_000_000_000
                    nearest = min(nearest ?? deadline, deadline)
                }
            }
            let timeout: Int32 = nearest.map { Int32(min(Int64(Int32.max), max(0, Int64($0) - Int64(now)) / 1_000_000 + 1)) } ?? -1
            let n = poll(&fds, nfds_t(fds.count), timeout)
            if n < 0 && errno != EINTR { return }
            if fds[0].revents != 0 { return }
            let after = monotonicNanoseconds()
            var closed = Set<Int32>()
            for (i, c) in connections.enumerated() {
                let revents = fds[i + 2].revents
                if revents & Int16(POLLOUT) != 0 { flush(c) }
                if revents & Int16(POLLIN) != 0 { read(c, now: after) }
                else if revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 && c.output.isEmpty { c.closeAfterOutput = true }
                if let started = c.requestStarted, after >= started + Self.requestTimeoutSeconds * 1_000_000_000 {
                    closed.insert(c.fd)  // a request that never completes: the client is gone or hostile
                }
                if c.closeAfterOutput && c.output.isEmpty { closed.insert(c.fd) }
            }
            if !closed.isEmpty {
                for c in connections where closed.contains(c.fd) { close(c.fd) }
                connections.removeAll { closed.contains($0.fd) }
            }
            if fds[1].revents & Int16(POLLIN) != 0 { accept(into: &connections, now: after) }
        }
    }

    private func accept(into connections: inout [Connection], now: UInt64) {
        while true {
            let fd = host_accept(listener)
            if fd < 0 { return }
            if connections.count >= Self.maxConnections {
                // Make room by closing the connection idle longest (one with no request in hand if any).
                let victim = connections.filter { $0.requestStarted == nil && $0.output.isEmpty }.min { $0.lastActivity < $1.lastActivity }
                    ?? connections.min { $0.lastActivity < $1.lastActivity }!
                close(victim.fd)
                connections.removeAll { $0 === victim }
            }
            connections.append(Connection(fd: fd, maxBodyBytes: maxBodyBytes, now: now))
        }
    }

    private func read(_ c: Connection, now: UInt64) {
        var buffer = [UInt8](repeating: 0, count: 16384)
        let n = retryingInterrupted { Glibc.read(c.fd, &buffer, buffer.count) }
        if n == 0 || (n < 0 && errno != EAGAIN) { c.closeAfterOutput = true; return }
        if n < 0 { return }
        c.lastActivity = now
        if c.requestStarted == nil { c.requestStarted = now }
        c.reader.append(buffer[..<n])
        while !c.closeAfterOutput, let event = c.reader.next() {
            switch event {
            case .sendContinue:
                c.output += HTTPResponse.continueBytes
            case .failed(let message):
                c.output += HTTPResponse.fault(message).bytes
                c.closeAfterOutput = true
            case .request(let request):
                c.output += respond(request).bytes
                if request.closeAfter { c.closeAfterOutput = true }
            }
        }
        c.requestStarted = c.reader.bufferedBytes > 0 || c.reader.isReadingBody ? (c.requestStarted ?? now) : nil
        flush(c)
    }

    private func flush(_ c: Connection) {
        while !c.output.isEmpty {
            let n = c.output.withUnsafeBytes { host_send(c.fd, $0.baseAddress!, UInt($0.count)) }
            if n == -Int(EAGAIN) || n == -Int(EINTR) { return }
            if n <= 0 { c.output.removeAll(); c.closeAfterOutput = true; return }
            c.output.removeFirst(n)
        }
    }
}
