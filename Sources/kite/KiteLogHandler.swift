import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Kite's runtime notices on stderr, one line each: "kite: <message>". Unlike swift-log's
/// StreamLogHandler it writes no local time stamp: formatting one makes glibc look at
/// /etc/localtime from whatever thread logs (a vCPU's, under a seccomp filter that rightly
/// has no openat), and the guest's console lines carry their own times anyway.
struct KiteLogHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let tail = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let prefix = event.level >= .warning ? "kite: \(event.level): " : "kite: "
        KiteLog.write(prefix + "\(event.message)" + tail)
    }
}

/// Where Kite's runtime notices go: stderr, or a file or FIFO (`kite firecracker --log-path`,
/// PUT /logger). Errors that end Kite stay on stderr.
enum KiteLog {
    private static let destination = Atomic<Int32>(STDERR_FILENO)

    /// Sends every later notice to `path`, opened as Firecracker opens its log: non-blocking
    /// and read-write, so that a FIFO nobody reads yet neither blocks nor fails the open. A
    /// line the reader has no room for is dropped rather than stalling the thread that logs.
    static func redirect(to path: String) throws(RedirectError) {
        let fd = open(path, O_RDWR | O_NONBLOCK | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        if fd < 0 { throw RedirectError(description: "\(path): \(String(cString: strerror(errno)))") }
        // The old file stays open: another thread may be writing a line to it right now.
        destination.store(fd, ordering: .releasing)
    }

    struct RedirectError: Error, CustomStringConvertible { let description: String }

    static func write(_ message: String) {
        let fd = destination.load(ordering: .acquiring)
        if fd == STDERR_FILENO { printError(message); return }
        let line = message.hasSuffix("\n") ? message : message + "\n"
        _ = line.withCString { Glibc.write(fd, $0, strlen($0)) }
    }
}
