import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// The thread that does device work: it sleeps in epoll on eventfds (queue notifications
/// from KVM's ioeventfds) and runs each one's handler. vCPU threads never do device work.
final class DeviceEventLoop: @unchecked Sendable {
    private let epollFD: Int32
    private let stopFD: Int32
    /// What a watched fd is: an eventfd (its counter is cleared before the handler runs) or
    /// any other readable fd (a tap: the handler reads it).
    enum Source { case eventFD, readable }

    /// Handlers by tag. Changed only before `start()` or by handlers themselves (on the
    /// event thread), so the thread never races with a change. A removed watch leaves nil.
    private var handlers: [(fd: Int32, source: Source, run: () -> Void)?] = []
    private var thread: pthread_t?

    init() throws {
        let ep = ckvm_epoll_create()
        if ep < 0 { throw SetupError("epoll: \(String(cString: strerror(-ep)))") }
        let stop = ckvm_eventfd()
        if stop < 0 { close(ep); throw SetupError("eventfd: \(String(cString: strerror(-stop)))") }
        epollFD = ep
        stopFD = stop
        let rc = ckvm_epoll_watch(ep, stop, UInt64.max)
        if rc < 0 { throw SetupError("epoll: \(String(cString: strerror(-rc)))") }
    }

    deinit {
        close(epollFD)
        close(stopFD)
    }

    /// Runs `handler` on the event thread each time `fd` is signalled or readable. Call it
    /// before `start()` or from a handler. Returns a handle for `setEnabled` and `unwatch`.
    @discardableResult
    func watch(_ fd: Int32, source: Source = .eventFD, _ handler: @escaping () -> Void) throws -> Int {
        let tag = handlers.count
        let rc = ckvm_epoll_watch(epollFD, fd, UInt64(tag))
        if rc < 0 { throw SetupError("epoll: \(String(cString: strerror(-rc)))") }
        handlers.append((fd, source, handler))
        return tag
    }

    /// Stops watching (from a handler, or before `start()`). The caller still owns the fd.
    func unwatch(_ handle: Int) {
        guard handle < handlers.count, let h = handlers[handle] else { return }
        _ = ckvm_epoll_unwatch(epollFD, h.fd)
        handlers[handle] = nil
    }

    /// Pauses or resumes a watch (on the event thread, from a handler): a tap stays readable
    /// while the guest has no receive buffers, and must not spin the loop meanwhile.
    func setEnabled(_ handle: Int, _ enabled: Bool) {
        guard handle < handlers.count, let h = handlers[handle] else { return }
        _ = ckvm_epoll_enable(epollFD, h.fd, UInt64(handle), enabled ? 1 : 0)
    }

    var isEmpty: Bool { handlers.allSatisfy { $0 == nil } }
    /// The handle the next `watch` will return.
    var nextHandle: Int { handlers.count }

    func start() throws {
        var t = pthread_t()
        // Sound: the retained reference is released exactly once, by the thread body.
        let arg = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&t, nil, { arg in
            let me = Unmanaged<DeviceEventLoop>.fromOpaque(arg!).takeRetainedValue()
            ckvm_set_thread_name("kite-devices")
            me.run()
            return nil
        }, arg)
        if rc != 0 {
            Unmanaged<DeviceEventLoop>.fromOpaque(arg).release()
            throw SetupError("cannot start the device thread: \(String(cString: strerror(rc)))")
        }
        thread = t
    }

    /// Ends the thread after the handler it is running, and waits for it.
    func stop() {
        var one: UInt64 = 1
        _ = write(stopFD, &one, 8)
        if let t = thread { pthread_join(t, nil); thread = nil }
    }

    private func run() {
        var tags = [UInt64](repeating: 0, count: 64)
        while true {
            let n = ckvm_epoll_wait(epollFD, &tags, Int32(tags.count), -1)
            if n == -EINTR { continue }
            if n < 0 { return }
            for tag in tags.prefix(Int(n)) {
                if tag == UInt64.max { return }
                // A handler earlier in this batch may have removed this watch.
                guard tag < UInt64(handlers.count), let h = handlers[Int(tag)] else { continue }
                if h.source == .eventFD {
                    var count: UInt64 = 0
                    _ = read(h.fd, &count, 8)   // clear the eventfd; a burst of notifications is one wake-up
                }
                h.run()
            }
        }
    }
}
