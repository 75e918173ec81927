import CHost
import Sandbox
#if canImport(Glibc)
import Glibc
#endif

/// Starts one of Kite's own threads (a vCPU, the device loop, the hang watchdog): a POSIX
/// thread, never the Swift cooperative pool, named for `ps -L`, with a 1 MiB stack. A stack
/// smaller than a huge page matters on hosts with transparent huge pages set to "always"
/// (Debian's default): glibc's default 8 MiB stacks can get their top backed by 2 MiB of RAM.
/// With `seccomp`, the thread installs that filter on itself first, and this returns only
/// once it has: the body runs confined, and a filter that cannot be installed is an error
/// here (the thread then ends without running the body).
/// Returns the thread, or why it could not be started.
public func startKiteThread(name: String, seccomp: SeccompProgram? = nil,
                     _ body: @escaping @Sendable () -> Void) -> Result<pthread_t, ThreadStartError> {
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    defer { pthread_attr_destroy(&attr) }
    pthread_attr_setstacksize(&attr, 1 << 20)
    let start = ThreadStart(name: name, seccomp: seccomp, body: body)
    // Sound: the retained reference is released exactly once, by the thread or on failure below.
    let arg = Unmanaged.passRetained(start).toOpaque()
    var t = pthread_t()
    let rc = pthread_create(&t, &attr, { arg in
        let start = Unmanaged<ThreadStart>.fromOpaque(arg!).takeRetainedValue()
        host_set_thread_name(start.name)
        if start.confine() { start.body() }
        return nil
    }, arg)
    if rc != 0 {
        Unmanaged<ThreadStart>.fromOpaque(arg).release()
        return .failure(ThreadStartError(description: String(cString: strerror(rc))))
    }
    if let error = start.waitUntilConfined() {
        pthread_join(t, nil)
        return .failure(ThreadStartError(description: error.description))
    }
    return .success(t)
}

public struct ThreadStartError: Error, CustomStringConvertible {
    public let description: String
}

/// What a new thread needs, and its answer to the thread that started it.
private final class ThreadStart: @unchecked Sendable {
    let name: String
    let seccomp: SeccompProgram?
    let body: @Sendable () -> Void
    private let lock = ConditionLock()
    private var outcome: Result<Void, SeccompError>?  // guarded by lock

    init(name: String, seccomp: SeccompProgram?, body: @escaping @Sendable () -> Void) {
        self.name = name; self.seccomp = seccomp; self.body = body
    }

    /// On the new thread: installs its filter, if any, and tells the starter. False if it failed.
    func confine() -> Bool {
        var result: Result<Void, SeccompError> = .success(())
        if let seccomp {
            do { try seccomp.install(label: name) } catch { result = .failure(error) }
        }
        lock.withLock { outcome = result; lock.broadcast() }
        if case .failure = result { return false }
        return true
    }

    /// On the starter: blocks until the thread has answered; the error if it failed.
    func waitUntilConfined() -> SeccompError? {
        lock.withLock {
            while outcome == nil { lock.wait() }
            if case .failure(let e) = outcome! { return e }
            return nil
        }
    }
}
