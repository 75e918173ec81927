import GuestInit
import VMM

/// How one run ended, as boot-test reports it.
public enum BootResult: String, Sendable, CaseIterable {
    case passed
    /// The guest reached init, which reported a failure (not every CPU online), or the
    /// guest printed a hang report (lockup, RCU stall, hung task, panic) on the way.
    case failed
    /// kite's hang watchdog judged the guest stuck (exit status 5).
    case hung
    /// Triple fault, failed entry or KVM internal error (exit status 4).
    case crashed
    /// No exit within --timeout: boot-test stopped kite (SIGTERM, then SIGKILL).
    case timedOut = "timed out"
    /// The guest never got to a verdict: kite refused the setup (status 2), the guest
    /// rebooted (a panic with panic=-1), or it powered off without the init's line.
    case failedToBoot = "failed to boot"
    /// kite itself failed (status 1) or died of a signal boot-test did not send.
    case kiteError = "kite error"
    /// boot-test was interrupted before or while this run ran.
    case notRun = "not run"
}

/// How the child process ended.
public enum ChildExit: Equatable, Sendable {
    case exited(Int32)
    case signaled(Int32)

    public var description: String {
        switch self {
        case .exited(let s): "exit status \(s)"
        case .signaled(let s): "killed by signal \(s)"
        }
    }
}

/// What one run left behind, read back after kite exited.
public struct RunEvidence: Sendable {
    public var exit: ChildExit
    /// boot-test stopped it at --timeout.
    public var timedOut: Bool
    public var timeoutSeconds: Int
    /// The guest's console (ttyS0).
    public var console: String
    /// kite's stdout and stderr.
    public var kiteLog: String
    /// The hang watchdog's last report (--report), if it wrote one.
    public var reportJSON: String?
    /// Whether the guest ran the built-in init, whose PASS/FAIL line decides a power-off.
    public var builtInInit: Bool

    public init(exit: ChildExit, timedOut: Bool = false, timeoutSeconds: Int = 0, console: String, kiteLog: String,
                reportJSON: String? = nil, builtInInit: Bool) {
        self.exit = exit
        self.timedOut = timedOut
        self.timeoutSeconds = timeoutSeconds
        self.console = console
        self.kiteLog = kiteLog
        self.reportJSON = reportJSON
        self.builtInInit = builtInInit
    }
}

public enum Classifier {
    /// The result and, for anything but a pass, a one-line diagnosis.
    public static func classify(_ e: RunEvidence) -> (BootResult, String?) {
        let report = e.reportJSON.flatMap { jsonString($0, key: "summary") }
        if e.timedOut {
            var why = "no exit within \(e.timeoutSeconds) s"
            if let last = lastLine(e.console) { why += "; the console's last line: \(clip(last))" } else {
                why += "; the guest printed nothing"
            }
            if let report { why += "; the hang watchdog's last report: \(report)" }
            return (.timedOut, why)
        }
        let initLine = builtInLine(e.console)
        switch e.exit {
        case .exited(ExitStatus.hang):
            let stderr = kiteLine(e.kiteLog, prefix: "kite: the guest hung").map { after(colonIn: $0) }
            return (.hung, report ?? stderr ?? "kite exited with status 5 (hung) without a diagnosis")
        case .exited(ExitStatus.crash):
            return (.crashed, kiteLine(e.kiteLog, prefix: "kite: the guest crashed").map(clip) ?? "kite exited with status 4 (crashed)")
        case .exited(ExitStatus.powerOff):
            if let line = initLine, line.hasPrefix(BuiltInInit.failPrefix) { return (.failed, line) }
            if e.builtInInit && initLine == nil {
                return (.failedToBoot, "the guest powered off without the init's \"\(BuiltInInit.passPrefix.trimmingSuffixSpace)\" line"
                        + (lastLine(e.console).map { "; the console's last line: \(clip($0))" } ?? ""))
            }
            if let report {
                return (.failed, "the guest powered off, but it printed a hang report on the way: \(report)")
            }
            return (.passed, nil)
        case .exited(ExitStatus.reboot):
            if let line = initLine, line.hasPrefix(BuiltInInit.failPrefix) { return (.failed, line) }
            let panic = consoleLine(e.console, containing: "Kernel panic")
            return (.failedToBoot, "the guest rebooted" + (panic.map { ": \(clip($0))" } ?? " before init finished"))
        case .exited(ExitStatus.usage):
            return (.failedToBoot, lastKiteLine(e.kiteLog).map { "kite could not start the guest: \(clip($0))" }
                    ?? "kite could not start the guest (exit status 2)")
        default:
            return (.kiteError, "kite ended with \(e.exit.description)" + (lastKiteLine(e.kiteLog).map { ": \(clip($0))" } ?? ""))
        }
    }

    /// The init marker's time from `kite run --boot-timing`: "kite: boot timing (ms since
    /// kite started): ..., init marker 812.3" (or "init marker not reached").
    public static func initMarkerMilliseconds(_ kiteLog: String) -> Double? {
        guard let line = kiteLine(kiteLog, prefix: "kite: boot timing"),
              let range = line.firstRange(of: "init marker ") else { return nil }
        let number = line[range.upperBound...].prefix(while: { $0.isNumber || $0 == "." })
        return Double(number)
    }

    /// The built-in init's last PASS or FAIL line.
    static func builtInLine(_ console: String) -> String? {
        consoleLines(console).last { $0.hasPrefix(BuiltInInit.passPrefix) || $0.hasPrefix(BuiltInInit.failPrefix) }
    }

    static func consoleLines(_ text: String) -> [String] {
        text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" })
            .map { String($0).replacingCarriageReturns }
            .filter { !$0.isEmpty }
    }

    static func lastLine(_ text: String) -> String? { consoleLines(text).last }

    static func consoleLine(_ text: String, containing needle: String) -> String? {
        consoleLines(text).last { $0.contains(needle) }
    }

    static func kiteLine(_ log: String, prefix: String) -> String? {
        consoleLines(log).last { $0.hasPrefix(prefix) }
    }

    static func lastKiteLine(_ log: String) -> String? {
        consoleLines(log).last { $0.hasPrefix("kite: ") && !$0.hasPrefix("kite: boot timing") }
    }

    /// "kite: the guest hung (no progress for 30 s): DIAGNOSIS" -> "DIAGNOSIS".
    static func after(colonIn line: String) -> String {
        guard let r = line.firstRange(of: "): ") else { return line }
        return String(line[r.upperBound...])
    }

    static func clip(_ s: String) -> String { s.count > 300 ? String(s.prefix(300)) + "..." : s }

    /// The string value of `"key":"..."` in compact JSON such as kite's reports (their
    /// writer puts no spaces around the colon), with its escapes decoded; nil if absent.
    public static func jsonString(_ json: String, key: String) -> String? {
        let scalars = Array(json.unicodeScalars)
        let needle = Array("\"\(key)\":\"".unicodeScalars)
        guard scalars.count >= needle.count else { return nil }
        var start: Int?
        for i in 0...(scalars.count - needle.count) where Array(scalars[i..<(i + needle.count)]) == needle {
            start = i + needle.count
            break
        }
        guard var i = start else { return nil }
        var out = String.UnicodeScalarView()
        while i < scalars.count {
            let c = scalars[i]
            if c == "\"" { return String(out) }
            if c == "\\", i + 1 < scalars.count {
                i += 1
                switch scalars[i] {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                case "b": out.append("\u{8}")
                case "f": out.append("\u{c}")
                case "u":
                    guard i + 4 < scalars.count, let v = UInt32(String(String.UnicodeScalarView(scalars[(i + 1)...(i + 4)])), radix: 16)
                    else { return nil }
                    out.append(Unicode.Scalar(v) ?? "\u{fffd}")
                    i += 4
                default: out.append(scalars[i])   // \" \\ \/
                }
            } else {
                out.append(c)
            }
            i += 1
        }
        return nil
    }
}

extension String {
    var replacingCarriageReturns: String { String(unicodeScalars.filter { $0 != "\r" }) }
    var trimmingSuffixSpace: String { hasSuffix(" ") ? String(dropLast()) : self }
}
