import CHost
#if canImport(Glibc)
import Glibc
#endif

/// An eventfd owned by Kite: KVM signals it (ioeventfd) or reads it (irqfd).
public final class EventFD: Sendable {
    public let fd: Int32

    public init() throws {
        let fd = host_eventfd()
        if fd < 0 { throw SetupError("eventfd: \(String(cString: strerror(-fd)))") }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Adds one to the counter: wakes whoever waits on it.
    public func signal() {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    /// Reads the counter back to zero (the fd must be readable, or this blocks).
    public func drain() {
        var count: UInt64 = 0
        _ = read(fd, &count, 8)
    }
}
