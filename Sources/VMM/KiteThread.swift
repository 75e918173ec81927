import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// Starts one of Kite's own threads (a vCPU, the device loop, the hang watchdog): a POSIX
/// thread, never the Swift cooperative pool, named for `ps -L`, with a 1 MiB stack. A stack
/// smaller than a huge page matters on hosts with transparent huge pages set to "always"
/// (Debian's default): glibc's default 8 MiB stacks can get their top backed by 2 MiB of RAM.
/// Returns the thread, or the error number of `pthread_create`.
func startKiteThread(name: String, _ body: @escaping @Sendable () -> Void) -> Result<pthread_t, ThreadStartError> {
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    defer { pthread_attr_destroy(&attr) }
    pthread_attr_setstacksize(&attr, 1 << 20)
    let start = ThreadStart(name: name, body: body)
    // Sound: the retained reference is released exactly once, by the thread or on failure below.
    let arg = Unmanaged.passRetained(start).toOpaque()
    var t = pthread_t()
    let rc = pthread_create(&t, &attr, { arg in
        let start = Unmanaged<ThreadStart>.fromOpaque(arg!).takeRetainedValue()
        ckvm_set_thread_name(start.name)
        start.body()
        return nil
    }, arg)
    if rc != 0 {
        Unmanaged<ThreadStart>.fromOpaque(arg).release()
        return .failure(ThreadStartError(code: rc))
    }
    return .success(t)
}

struct ThreadStartError: Error, CustomStringConvertible {
    let code: Int32
    var description: String { String(cString: strerror(code)) }
}

private final class ThreadStart: Sendable {
    let name: String
    let body: @Sendable () -> Void
    init(name: String, body: @escaping @Sendable () -> Void) { self.name = name; self.body = body }
}
