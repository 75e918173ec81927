import CHost
import Synchronization
import VirtioDevices
#if canImport(Glibc)
import Glibc
#endif

/// The host side of virtio-vsock over Unix sockets, as Firecracker does it:
/// - a host program connects to the socket at `path` and writes `CONNECT <port>\n`; once
///   the guest accepts, Kite answers `OK <host port>\n` and the socket carries the stream;
/// - a guest connection to host port P is connected to the Unix socket `<path>_P`.
/// All socket work runs on the device thread.
final class UnixVsockHost: VsockHost, @unchecked Sendable {
    /// The longest handshake line Kite reads (`CONNECT 4294967295\n` is 19 bytes).
    static let maxHandshake = 32

    let path: String
    let loop: DeviceEventLoop
    /// Set once after the device exists; read on the device thread.
    weak var device: VsockDevice?
    private let log: @Sendable (String) -> Void
    private var listenFD: Int32 = -1

    init(path: String, loop: DeviceEventLoop, log: @escaping @Sendable (String) -> Void) {
        self.path = path
        self.loop = loop
        self.log = log
    }

    /// Creates the listening socket and watches it (before the device thread starts).
    func listen() throws {
        let fd = host_unix_listen(path)
        if fd < 0 { throw SetupError("vsock socket \(path): \(String(cString: strerror(-fd)))") }
        listenFD = fd
        try loop.watch(fd, source: .readable) { [unowned self] in acceptConnections() }
    }

    /// Closes and removes the listening socket (after the device thread stopped).
    func close() {
        if listenFD >= 0 {
            Glibc.close(listenFD)
            unlink(path)
            listenFD = -1
        }
    }

    func connect(hostPort: UInt32) -> (any VsockHostStream)? {
        let fd = host_unix_connect("\(path)_\(hostPort)")
        guard fd >= 0 else { return nil }
        return UnixVsockStream(fd: fd, host: self, prefix: [])
    }

    private func acceptConnections() {
        while true {
            let fd = host_accept(listenFD)
            if fd < 0 { return }
            startHandshake(fd)
        }
    }

    /// Reads `CONNECT <port>\n` from a new host connection, then hands it to the device.
    private func startHandshake(_ fd: Int32) {
        var line: [UInt8] = []
        var handle = -1
        let watched = try? loop.watchSocket(fd, events: HOST_EPOLL_IN) { [unowned self] _ in
            var buffer = [UInt8](repeating: 0, count: Self.maxHandshake)
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EAGAIN { return }
            if n > 0 { line += buffer.prefix(n) }
            let newline = line.firstIndex(of: 0x0A)
            guard n > 0, newline != nil || line.count <= Self.maxHandshake else {
                loop.unwatch(handle)
                Glibc.close(fd)
                return
            }
            guard let newline else { return }
            loop.unwatch(handle)
            let text = String(decoding: line[..<newline], as: UTF8.self)
            let rest = Array(line[(newline + 1)...])
            guard text.hasPrefix("CONNECT "), let port = UInt32(text.dropFirst(8)) else {
                log("vsock: a host connection sent '\(text.prefix(40))' instead of CONNECT <port>; closed")
                Glibc.close(fd)
                return
            }
            let stream = UnixVsockStream(fd: fd, host: self, prefix: rest)
            if device?.hostConnected(stream: stream, guestPort: port) == nil { stream.close() }
        }
        if let watched { handle = watched } else { Glibc.close(fd) }
    }
}

/// One connection between a host Unix socket and a guest vsock stream.
final class UnixVsockStream: VsockHostStream, @unchecked Sendable {
    let fd: Int32
    private unowned let host: UnixVsockHost
    /// Bytes that arrived after the handshake line; `read` returns them first.
    private var prefix: [UInt8]
    /// `@unchecked Sendable`: interest and the watch handle change only on the device
    /// thread (changes requested elsewhere go through `loop.perform`).
    private var readInterest = false
    private var writeInterest = false
    private var handle: Int?
    private var closed = false

    init(fd: Int32, host: UnixVsockHost, prefix: [UInt8]) {
        self.fd = fd
        self.host = host
        self.prefix = prefix
    }

    func write(_ bytes: ArraySlice<UInt8>) -> Int? {
        let n = bytes.withUnsafeBytes { host_send(fd, $0.baseAddress, UInt($0.count)) }
        if n >= 0 { return n }
        return n == -Int(EAGAIN) ? 0 : nil
    }

    func read(max: Int) -> [UInt8]? {
        if !prefix.isEmpty {
            let take = Array(prefix.prefix(max))
            prefix.removeFirst(take.count)
            return take
        }
        var buffer = [UInt8](repeating: 0, count: max)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if n > 0 { return Array(buffer.prefix(n)) }
        if n < 0 && errno == EAGAIN { return [] }
        return nil
    }

    func shutdownWrite() { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    func setReadInterest(_ enabled: Bool) { host.loop.perform { [self] in readInterest = enabled; updateWatch() } }
    func setWriteInterest(_ enabled: Bool) { host.loop.perform { [self] in writeInterest = enabled; updateWatch() } }

    func accepted(localPort: UInt32) {
        _ = write(ArraySlice(Array("OK \(localPort)\n".utf8)))
    }

    func close() {
        host.loop.perform { [self] in
            guard !closed else { return }
            closed = true
            if let handle { host.loop.unwatch(handle) }
            Glibc.close(fd)
        }
    }

    /// On the device thread: watch for what the device wants to hear about.
    private func updateWatch() {
        guard !closed else { return }
        let events = (readInterest ? HOST_EPOLL_IN : 0) | (writeInterest ? HOST_EPOLL_OUT : 0)
        if let handle {
            host.loop.setEvents(handle, events)
            return
        }
        guard events != 0 else { return }
        handle = try? host.loop.watchSocket(fd, events: events) { [unowned self] fired in
            guard let device = host.device else { return }
            if fired & (HOST_EPOLL_HUP | HOST_EPOLL_ERR) != 0 && !readInterest {
                // A hang-up is reported even when nothing is watched: stop watching until the
                // device wants to read again (it then reads the end of the stream).
                if let handle { host.loop.unwatch(handle) }
                handle = nil
                return
            }
            if fired & (HOST_EPOLL_IN | HOST_EPOLL_HUP | HOST_EPOLL_ERR) != 0 { device.hostReadable(self) }
            if fired & HOST_EPOLL_OUT != 0, !closed { device.hostWritable(self) }
        }
    }
}
