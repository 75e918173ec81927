import CHost
import HostCalls
import KVM
import Sandbox
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where the guest's serial console goes. vCPU threads (and the device thread, for
/// virtio-console) hand their bytes over without ever blocking: they go into a bounded
/// buffer that the console thread (`kite-console`) writes out. A reader that is slow or
/// gone (a full pipe, a closed terminal) therefore slows nothing in the guest: past
/// `bufferLimit` bytes waiting, newer output is dropped and counted, and Kite says so
/// once. Everything is also read by the `ConsoleMonitor` (hang reports, progress), dropped
/// or not.
///
/// The hand-off goes by lines, not bytes. A UART console arrives one byte per exit, and
/// waking the console thread for each byte cost a futex wake, two context switches and a
/// write per byte (about 10 µs of host CPU each here, and a one-CPU host runs them in the
/// vCPU's time). So the protocol, all under `lock`:
/// - the console thread, with nothing waiting, sleeps untimed (`idle`); the first byte
///   wakes it;
/// - woken, it gathers (`gathering`): it waits until a line ends ('\n' arrived), or
///   `flushBytes` are waiting, or `finish` is called, or `lineLatency` has passed since the
///   first byte, whichever comes first, and writing wakes it only for the first three. The
///   deadline is what gets a partial line (a prompt, an echoed key) out;
/// - it writes what is waiting without the lock (`writing`), then looks again.
/// A byte is thus on its way within `lineLatency` of being written, and no byte waits for
/// a wake-up that may never come: the first byte of a batch always wakes the thread, and
/// every later one is covered by the deadline it set.
public final class ConsoleOutput: @unchecked Sendable {
    public let fd: Int32
    private let ownsFD: Bool
    let monitor = ConsoleMonitor()
    /// Bytes waiting for the console thread, at most this many.
    static let bufferLimit = 1 << 20
    /// A partial line waits at most this long for the rest of it (ns).
    static let lineLatency: UInt64 = 20_000_000
    /// Written without waiting for the end of the line once this many bytes wait.
    static let flushBytes = 16 << 10

    private enum ConsoleThreadState { case idle, gathering, writing }

    private let lock = ConditionLock()
    // Guarded by lock:
    private var pending: [UInt8] = []
    private var pendingHasLineEnd = false
    private var state = ConsoleThreadState.writing
    private var dropped = 0
    private var failed = false
    private var finishing = false
    private var thread: pthread_t?

    public init(fd: Int32, ownsFD: Bool) {
        self.fd = fd
        self.ownsFD = ownsFD
    }

    /// Opens (creates or truncates) a console log file.
    public convenience init(path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw SetupError("cannot open console file \(path): \(String(cString: strerror(errno)))") }
        self.init(fd: fd, ownsFD: true)
    }

    deinit { if ownsFD { close(fd) } }

    /// Starts the console thread, confined by `seccomp`. Until it runs, output waits.
    func start(seccomp: SeccompProgram?) throws {
        switch startKiteThread(name: "kite-console", seccomp: seccomp, { [self] in run() }) {
        case .success(let t): lock.withLock { thread = t }
        case .failure(let e): throw SetupError("cannot start the console thread: \(e)", cause: e)
        }
    }

    /// Takes the guest's bytes; never blocks on the reader.
    public func write(_ bytes: [UInt8]) {
        monitor.observe(bytes)
        lock.withLock {
            if failed { dropped += bytes.count; return }
            let room = max(0, Self.bufferLimit - pending.count)
            let kept = bytes.prefix(room)
            pending += kept
            dropped += bytes.count - kept.count
            if kept.contains(UInt8(ascii: "\n")) { pendingHasLineEnd = true }
            switch state {
            case .idle: if !pending.isEmpty { lock.broadcast() }
            case .gathering: if pendingHasLineEnd || pending.count >= Self.flushBytes { lock.broadcast() }
            case .writing: break   // it looks at `pending` again before it sleeps
            }
        }
    }

    private func run() {
        // The kick signal (blocked in every thread but the vCPUs') interrupts a write that
        // blocks on a reader that takes nothing, once `finish` gives up waiting.
        var kick = sigset_t()
        sigemptyset(&kick)
        sigaddset(&kick, VCPU.kickSignal)
        pthread_sigmask(SIG_UNBLOCK, &kick, nil)
        ForbiddenCallInjection.fireIfArmed(.console)
        while true {
            let chunk: [UInt8]? = lock.withLock {
                state = .idle
                while pending.isEmpty && !finishing { lock.wait() }
                state = .gathering
                let deadline = monotonicNanoseconds() + Self.lineLatency
                while !pendingHasLineEnd && pending.count < Self.flushBytes && !finishing,
                      lock.wait(untilNanoseconds: deadline) {}
                state = .writing
                if pending.isEmpty { return nil }
                defer {
                    pending.removeAll(keepingCapacity: true)
                    pendingHasLineEnd = false
                }
                return pending
            }
            guard let chunk else { return }
            let written = writeWhole(chunk)
            if written < chunk.count {
                // The reader is gone (EPIPE, EBADF, ...) or took nothing until the end:
                // nothing more can reach it.
                lock.withLock {
                    failed = true
                    dropped += chunk.count - written + pending.count
                    pending.removeAll()
                }
                return
            }
        }
    }

    /// Writes all of `bytes`, retrying short writes and interrupts, except that a write
    /// interrupted once the console is finishing gives up (`finish` kicks a blocked writer).
    /// Returns how many bytes were written.
    private func writeWhole(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR && !lock.withLock({ finishing }) { continue }
                    if errno == EAGAIN {   // a non-blocking fd we were given: wait for room
                        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                        _ = retryingInterrupted { poll(&p, 1, -1) }
                        continue
                    }
                    return done
                }
                done += n
            }
            return done
        }
    }

    /// Ends the console thread once it has written what is waiting, or after `milliseconds`
    /// if the reader does not take it (the rest is dropped). Returns how many bytes of guest
    /// output never reached the console.
    @discardableResult
    func finish(withinMilliseconds milliseconds: Int32 = 2000) -> Int {
        let t: pthread_t? = lock.withLock { finishing = true; lock.broadcast(); return thread }
        if let t {
            if host_join_thread(t, milliseconds) != 0 {
                // Blocked in write() on a reader that takes nothing: interrupt it (the kick
                // signal's handler has no SA_RESTART) until it gives up.
                while host_join_thread(t, 50) != 0 { _ = host_signal_thread(t, VCPU.kickSignal) }
            }
            lock.withLock { thread = nil }
        }
        return lock.withLock { dropped + pending.count }
    }
}

/// Writes every byte to a blocking fd, retrying interrupted and short writes; false on error.
@discardableResult
func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
            let n = retryingInterrupted { Glibc.write(fd, raw.baseAddress! + done, raw.count - done) }
            if n < 0 { if errno == EAGAIN { continue }; return false }
            done += n
        }
        return true
    }
}

/// Writes `text` and a newline (unless it ends with one) to stderr, whole.
func printLine(_ text: String) {
    writeAll(STDERR_FILENO, Array((text.hasSuffix("\n") ? text : text + "\n").utf8))
}
