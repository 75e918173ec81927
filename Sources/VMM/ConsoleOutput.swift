import HostCalls
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where the guest's serial console goes: a file descriptor written whole, from any vCPU
/// thread. Everything written is also read by the `ConsoleMonitor` (hang reports, progress).
public final class ConsoleOutput: Sendable {
    public let fd: Int32
    private let ownsFD: Bool
    let monitor = ConsoleMonitor()

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

    public func write(_ bytes: [UInt8]) {
        monitor.observe(bytes)
        writeAll(fd, bytes)
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

func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Writes `text` and a newline (unless it ends with one) to stderr, whole.
func printLine(_ text: String) {
    writeAll(STDERR_FILENO, Array((text.hasSuffix("\n") ? text : text + "\n").utf8))
}
