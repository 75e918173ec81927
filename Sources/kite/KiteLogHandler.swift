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

    func log(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?,
             source: String, file: String, function: String, line: UInt) {
        let all = metadata.merging(extra ?? [:]) { $1 }
        let tail = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let prefix = level >= .warning ? "kite: \(level): " : "kite: "
        printError(prefix + "\(message)" + tail)
    }
}
