import CHost
import HostCalls
import Sandbox
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The thread that does device work: it sleeps in epoll on eventfds (queue notifications
/// from KVM's ioeventfds) and sockets, and runs each one's handler. vCPU threads never do
/// device work.
final class DeviceEventLoop: @unchecked Sendable {
    /// What a watched fd is: an eventfd (its counter is cleared before the handler runs) or
    /// any other readable fd (a tap or socket: the handler reads it).
    enum Source { case eventFD, readable }

    private let epollFD: Int32
    private let stopFD: Int32
    private let workFD: Int32
    private static let stopTag = UInt64.max
    private static let workTag = UInt64.max - 1
    /// `@unchecked Sendable`: handlers are changed only before `start()` or on the event
    /// thread itself (by handlers, or by work handed over with `perform`), so the thread
    /// never races with a change. A removed watch leaves nil.
    private var handlers: [(fd: Int32, source: Source, run: (UInt32) -> Void)?] = []
    /// Work other threads hand to the event thread.
    private let work = Mutex<[@Sendable () -> Void]>([])
    private var thread: pthread_t?

    init() throws {
        let ep = host_epoll_create()
        if ep < 0 { throw SetupError("epoll: \(String(cString: strerror(-ep)))") }
        epollFD = ep
        stopFD = host_eventfd()
        workFD = host_eventfd()
        guard stopFD >= 0, workFD >= 0,
              host_epoll_watch_events(ep, stopFD, Self.stopTag, HOST_EPOLL_IN) == 0,
              host_epoll_watch_events(ep, workFD, Self.workTag, HOST_EPOLL_IN) == 0 else {
            throw SetupError("cannot set up the device thread's epoll: \(String(cString: strerror(errno)))")
        }
    }

    deinit {
        close(epollFD)
        close(stopFD)
        close(workFD)
    }

    /// Runs `handler` on the event thread each time `fd` is signalled or readable. Call it
    /// before `start()` or on the event thread. Returns a handle for `setEnabled` and `unwatch`.
    @discardableResult
    func watch(_ fd: Int32, source: Source = .eventFD, _ handler: @escaping () -> Void) throws -> Int {
        try add(fd, source: source, events: HOST_EPOLL_IN) { _ in handler() }
    }

    /// Watches a socket for `events` (HOST_EPOLL_IN/OUT); the handler gets the events that
    /// fired (hang-ups and errors included). On the event thread, or before `start()`.
    func watchSocket(_ fd: Int32, events: UInt32, _ handler: @escaping (UInt32) -> Void) throws -> Int {
        try add(fd, source: .readable, events: events, handler)
    }

    private func add(_ fd: Int32, source: Source, events: UInt32, _ run: @escaping (UInt32) -> Void) throws -> Int {
        let tag = handlers.count
        let rc = host_epoll_watch_events(epollFD, fd, UInt64(tag), events)
        if rc < 0 { throw SetupError("epoll: \(String(cString: strerror(-rc)))") }
        handlers.append((fd, source, run))
        return tag
    }

    /// Stops watching (on the event thread, or before `start()`). The caller still owns the fd.
    func unwatch(_ handle: Int) {
        guard handle < handlers.count, let h = handlers[handle] else { return }
        _ = host_epoll_unwatch(epollFD, h.fd)
        handlers[handle] = nil
    }

    /// Pauses or resumes an input watch (on the event thread): a tap stays readable while
    /// the guest has no receive buffers, and must not spin the loop meanwhile.
    func setEnabled(_ handle: Int, _ enabled: Bool) {
        setEvents(handle, enabled ? HOST_EPOLL_IN : 0)
    }

    /// Changes which events a watch reports (on the event thread).
    func setEvents(_ handle: Int, _ events: UInt32) {
        guard handle < handlers.count, let h = handlers[handle] else { return }
        _ = host_epoll_modify(epollFD, h.fd, UInt64(handle), events)
    }

    /// Runs `job` on the event thread soon (from any thread).
    func perform(_ job: @escaping @Sendable () -> Void) {
        work.withLock { $0.append(job) }
        var one: UInt64 = 1
        _ = write(workFD, &one, 8)
    }

    var isEmpty: Bool { handlers.allSatisfy { $0 == nil } }
    /// The handle the next `watch` will return.
    var nextHandle: Int { handlers.count }

    func start(seccomp: SeccompProgram? = nil) throws {
        switch startKiteThread(name: "kite-devices", seccomp: seccomp, { [self] in run() }) {
        case .success(let t): thread = t
        case .failure(let e): throw SetupError("cannot start the device thread: \(e)", cause: e)
        }
    }

    /// Ends the thread after the handler it is running, and waits for it.
    func stop() {
        var one: UInt64 = 1
        _ = write(stopFD, &one, 8)
        if let t = thread { pthread_join(t, nil); thread = nil }
    }

    private func run() {
        ForbiddenCallInjection.fireIfArmed(.devices)
        var tags = [UInt64](repeating: 0, count: 64)
        var events = [UInt32](repeating: 0, count: 64)
        while true {
            let n = retryingHostCall({
                host_epoll_wait_events(epollFD, &tags, &events, Int32(tags.count), -1)
            })
            if n < 0 { return }
            for i in 0..<Int(n) {
                let tag = tags[i]
                if tag == Self.stopTag { return }
                if tag == Self.workTag {
                    var count: UInt64 = 0
                    _ = read(workFD, &count, 8)
                    for job in work.withLock({ w in defer { w.removeAll() }; return w }) { job() }
                    continue
                }
                // A handler earlier in this batch may have removed this watch.
                guard tag < UInt64(handlers.count), let h = handlers[Int(tag)] else { continue }
                if h.source == .eventFD {
                    var count: UInt64 = 0
                    _ = read(h.fd, &count, 8)   // clear the eventfd; a burst of notifications is one wake-up
                }
                h.run(events[i])
            }
        }
    }
}
