import CHost
#if canImport(Glibc)
import Glibc
#endif

/// An eventfd owned by Kite: KVM signals it (ioeventfd) or reads it (irqfd).
final class EventFD: Sendable {
    let fd: Int32

    init() throws {
        let fd = host_eventfd()
        if fd < 0 { throw SetupError("eventfd: \(String(cString: strerror(-fd)))") }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Adds one to the counter: wakes whoever waits on it.
    func signal() {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }
}
