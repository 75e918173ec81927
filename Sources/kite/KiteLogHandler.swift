import Logging
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
        printError(prefix + "\(event.message)" + tail)
    }
}
