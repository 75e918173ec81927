#if canImport(Glibc)
import Glibc
#endif
import CHost
import Synchronization
import SystemPackage

/// A network in memory, for tests: frames queued with `deliver` reach the guest, frames the
/// guest sends are kept in `sent`. With `loopback` every sent frame is also delivered
/// back to the guest. `fd` is an eventfd that is readable while frames are pending, so it
/// can stand in for a tap in an event loop (-1 if no eventfd could be created). Any thread
/// may call it.
public final class MemoryNetworkBackend: NetworkBackend, Sendable {
    private struct State {
        var incoming: [[UInt8]] = []
        var sent: [[UInt8]] = []
        var receiveFailure: Errno?
        var sendFailure: Errno?
    }

    public let fd: Int32
    public let loopback: Bool
    private let state = Mutex(State())

    public init(loopback: Bool = false) {
        self.loopback = loopback
        let fd = host_eventfd()
        self.fd = fd >= 0 ? fd : -1
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Frames (vnet header included) handed to the host, oldest first.
    public var sent: [[UInt8]] { state.withLock { $0.sent } }
    /// Frames not yet taken by the device.
    public var pendingCount: Int { state.withLock { $0.incoming.count } }
    /// When set, `receiveFrame` / `sendFrame` fail with this error.
    public var receiveFailure: Errno? {
        get { state.withLock { $0.receiveFailure } }
        set { state.withLock { $0.receiveFailure = newValue } }
    }
    public var sendFailure: Errno? {
        get { state.withLock { $0.sendFailure } }
        set { state.withLock { $0.sendFailure = newValue } }
    }

    /// Queues `frame` (vnet header included) for the guest.
    public func deliver(_ frame: [UInt8]) {
        state.withLock { $0.incoming.append(frame) }
        signal()
    }

    public func receiveFrame(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int? {
        let result: Result<Int?, Errno> = state.withLock { s in
            if let failure = s.receiveFailure { return .failure(failure) }
            guard !s.incoming.isEmpty else { return .success(nil) }
            let frame = s.incoming.removeFirst()
            let count = min(frame.count, buffer.count)
            frame.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
            if s.incoming.isEmpty { drain() }
            return .success(count)
        }
        return try result.get()
    }

    public func sendFrame(_ frame: UnsafeRawBufferPointer) throws(Errno) {
        let bytes = Array(frame)
        let failure: Errno? = state.withLock { s in
            if let failure = s.sendFailure { return failure }
            s.sent.append(bytes)
            if loopback { s.incoming.append(bytes) }
            return nil
        }
        if let failure { throw failure }
        if loopback { signal() }
    }

    private func signal() {
        guard fd >= 0 else { return }
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    private func drain() {
        guard fd >= 0 else { return }
        var count: UInt64 = 0
        _ = read(fd, &count, 8)
    }
}
