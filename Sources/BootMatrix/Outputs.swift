import Diagnosis
import JSON

/// One finished run, as every output shows it.
public struct RunRecord: Sendable {
    public var configuration: BootConfiguration
    public var result: BootResult
    /// One line for anything but a pass.
    public var diagnosis: String?
    /// How kite ended (nil: never started).
    public var exit: ChildExit?
    /// Wall time from spawning kite to its exit.
    public var seconds: Double
    /// kite's init marker time (`--boot-timing`): ms from kite's start to the init's write
    /// to the boot timer, its first action in userspace.
    public var userspaceMilliseconds: Double?
    public var consolePath: String
    public var reportPath: String
    public var kiteLogPath: String
    /// Whether the hang watchdog wrote a report.
    public var reportWritten: Bool

    public init(configuration: BootConfiguration, result: BootResult, diagnosis: String?, exit: ChildExit?,
                seconds: Double, userspaceMilliseconds: Double?, consolePath: String, reportPath: String,
                kiteLogPath: String, reportWritten: Bool) {
        self.configuration = configuration
        self.result = result
        self.diagnosis = diagnosis
        self.exit = exit
        self.seconds = seconds
        self.userspaceMilliseconds = userspaceMilliseconds
        self.consolePath = consolePath
        self.reportPath = reportPath
        self.kiteLogPath = kiteLogPath
        self.reportWritten = reportWritten
    }
}

/// What the whole matrix was, for the JSON and JUnit headers.
public struct BootTestSummary: Sendable {
    public var kernel: String
    public var initrd: String?
    public var outputDirectory: String
    public var records: [RunRecord]
    public var seconds: Double
    /// UTC, ISO 8601 without a zone ("2026-12-06T10:11:12"), as JUnit's schema wants it.
    public var timestamp: String
    public var hostname: String

    public init(kernel: String, initrd: String?, outputDirectory: String, records: [RunRecord], seconds: Double,
                timestamp: String, hostname: String) {
        self.kernel = kernel
        self.initrd = initrd
        self.outputDirectory = outputDirectory
        self.records = records
        self.seconds = seconds
        self.timestamp = timestamp
        self.hostname = hostname
    }

    public var passed: Int { records.filter { $0.result == .passed }.count }
    public var allPassed: Bool { !records.isEmpty && passed == records.count }
    var kernelName: String { String(kernel.split(separator: "/").last ?? Substring(kernel)) }
}

public enum BootTestOutput {
    // MARK: Table

    /// The table for stdout: one row per run, then for every failure its diagnosis and files.
    public static func table(_ s: BootTestSummary) -> String {
        let header = ["configuration", "result", "userspace", "time"]
        let rows = s.records.map { r in
            [r.configuration.name, r.result.rawValue,
             r.userspaceMilliseconds.map { "\(Int($0.rounded())) ms" } ?? "-",
             r.exit == nil ? "-" : seconds(r.seconds) + " s"]
        }
        let widths = header.indices.map { c in ([header] + rows).map { $0[c].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { c, cell in
                c == cells.count - 1 ? cell : cell + String(repeating: " ", count: widths[c] - cell.count + 2)
            }.joined()
        }
        var out = [line(header)] + rows.map(line)
        let failures = s.records.filter { $0.result != .passed }
        for r in failures {
            out.append("")
            out.append("\(r.configuration.name): \(r.result.rawValue): \(r.diagnosis ?? "-")")
            if r.exit != nil {
                if r.reportWritten { out.append("  report:  \(r.reportPath)") }
                out.append("  console: \(r.consolePath)")
                out.append("  kite:    \(r.kiteLogPath)")
            }
        }
        out.append("")
        out.append("\(s.passed) of \(s.records.count) passed (\(seconds(s.seconds)) s); results in \(s.outputDirectory)")
        return out.joined(separator: "\n") + "\n"
    }

    static func seconds(_ v: Double) -> String {
        let tenths = Int((v * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    // MARK: JSON

    /// {"kernel","initrd","output_directory","seconds","passed","total","all_passed",
    ///  "runs":[{"name","cpus","irqchip","repetition","result","diagnosis","exit_status",
    ///  "signal","seconds","userspace_ms","console","report","kite_log"}]}
    public static func json(_ s: BootTestSummary) -> String {
        let runs: [JSONValue] = s.records.map { r in
            var exitStatus: Int32?, signal: Int32?
            switch r.exit {
            case .exited(let v): exitStatus = v
            case .signaled(let v): signal = v
            case nil: break
            }
            return .object([
                ("name", .string(r.configuration.name)),
                ("cpus", .integer(r.configuration.cpus)),
                ("irqchip", .string(r.configuration.irqchip.rawValue)),
                ("repetition", .integer(r.configuration.repetition)),
                ("result", .string(r.result.rawValue)),
                ("diagnosis", .optional(r.diagnosis, JSONValue.string)),
                ("exit_status", .optional(exitStatus) { .integer(Int($0)) }),
                ("signal", .optional(signal) { .integer(Int($0)) }),
                ("seconds", milliseconds(r.seconds)),
                ("userspace_ms", .optional(r.userspaceMilliseconds, milliseconds)),
                ("console", .string(r.consolePath)),
                ("report", r.reportWritten ? .string(r.reportPath) : .null),
                ("kite_log", .string(r.kiteLogPath)),
            ])
        }
        return JSONWriter.write(.object([
            ("kernel", .string(s.kernel)),
            ("initrd", .optional(s.initrd, JSONValue.string)),
            ("output_directory", .string(s.outputDirectory)),
            ("seconds", milliseconds(s.seconds)),
            ("passed", .integer(s.passed)),
            ("total", .integer(s.records.count)),
            ("all_passed", .bool(s.allPassed)),
            ("runs", .array(runs)),
        ])) + "\n"
    }

    /// A number to the thousandth.
    static func milliseconds(_ v: Double) -> JSONValue { .number((v * 1000).rounded() / 1000) }

    static func number(_ v: Double) -> String {
        guard v.isFinite else { return "null" }
        let thousandths = Int((v * 1000).rounded())
        let frac = String(abs(thousandths) % 1000)
        return (thousandths < 0 ? "-" : "") + "\(abs(thousandths) / 1000)." + String(repeating: "0", count: 3 - frac.count) + frac
    }


    // MARK: JUnit

    /// JUnit XML as Ant wrote it and CI systems read it (Jenkins, GitLab, GitHub actions'
    /// reporters): <testsuites> with one <testsuite> (name, tests, failures, errors,
    /// skipped, time, timestamp, hostname, id, package, <properties>), a <testcase> per run
    /// (classname, name, time) with a <failure message="RESULT: DIAGNOSIS" type="RESULT">
    /// for each run that did not pass (its body: the diagnosis and where its files are), and
    /// the suite's <system-out> and <system-err>.
    public static func junit(_ s: BootTestSummary) -> String {
        let failures = s.records.filter { $0.result != .passed }.count
        let suite = "kite boot-test " + s.kernelName
        var x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        x += "<testsuites name=\(attr(suite)) tests=\"\(s.records.count)\" failures=\"\(failures)\" errors=\"0\" time=\"\(number(s.seconds))\">\n"
        x += "  <testsuite name=\(attr(suite)) tests=\"\(s.records.count)\" failures=\"\(failures)\" errors=\"0\" skipped=\"0\" "
            + "time=\"\(number(s.seconds))\" timestamp=\(attr(s.timestamp)) hostname=\(attr(s.hostname)) id=\"0\" package=\"kite.boot-test\">\n"
        x += "    <properties>\n"
        x += "      <property name=\"kernel\" value=\(attr(s.kernel))/>\n"
        x += "      <property name=\"initrd\" value=\(attr(s.initrd ?? "built-in"))/>\n"
        x += "      <property name=\"output_directory\" value=\(attr(s.outputDirectory))/>\n"
        x += "    </properties>\n"
        for r in s.records {
            x += "    <testcase classname=\(attr("kite.boot-test." + s.kernelName)) name=\(attr(r.configuration.name)) time=\"\(number(r.seconds))\""
            if r.result == .passed {
                x += "/>\n"
                continue
            }
            let message = r.result.rawValue + ": " + (r.diagnosis ?? "-")
            var body = message
            if r.exit != nil {
                if r.reportWritten { body += "\nreport: \(r.reportPath)" }
                body += "\nconsole: \(r.consolePath)\nkite log: \(r.kiteLogPath)"
            }
            x += ">\n      <failure message=\(attr(message)) type=\(attr(r.result.rawValue))>\(text(body))</failure>\n    </testcase>\n"
        }
        x += "    <system-out>\(text(table(s)))</system-out>\n"
        x += "    <system-err></system-err>\n"
        x += "  </testsuite>\n</testsuites>\n"
        return x
    }

    /// An XML attribute value, quoted. Characters XML 1.0 cannot hold at all (control
    /// characters other than tab, newline and return) become U+FFFD.
    static func attr(_ s: String) -> String { "\"" + escape(s, attribute: true) + "\"" }
    static func text(_ s: String) -> String { escape(s, attribute: false) }

    static func escape(_ s: String, attribute: Bool) -> String {
        var out = ""
        for u in s.unicodeScalars {
            switch u {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"" where attribute: out += "&quot;"
            case "\n" where attribute: out += "&#10;"
            case "\t" where attribute: out += "&#9;"
            case "\r": out += "&#13;"
            case "\t", "\n": out.unicodeScalars.append(u)
            case _ where u.value < 0x20 || u.value == 0xFFFE || u.value == 0xFFFF: out += "\u{FFFD}"
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }
}
