import JSON

// `kite explain`'s two outputs: text for a person, JSON for a program.

extension LogExplanation {
    /// Whether the log holds a report of a hang: a lockup, an RCU stall, a hung task or a
    /// CSD-lock timeout.
    public var hasHangReport: Bool {
        reports.contains { [.softLockup, .hardLockup, .rcuStall, .rcuExpeditedStall, .rcuKthreadStarved, .hungTask,
                            .csdLockTimeout].contains($0.event.kind) }
    }

    /// Whether the log holds a crash report: a panic, an oops or a BUG.
    public var hasCrashReport: Bool {
        reports.contains { [.panic, .oops, .bug].contains($0.event.kind) }
    }

    /// How many reports of each kind: "2 soft lockups, 1 RCU stall, 3 NMI backtraces".
    public var summary: String {
        guard !reports.isEmpty else { return "no hang or crash reports" }
        var counts: [(KernelEvent.Kind, Int)] = []
        for kind in KernelEvent.Kind.allCases {
            let n = reports.filter { $0.event.kind == kind }.count
            if n > 0 { counts.append((kind, n)) }
        }
        return counts.map { kind, n in "\(n) \(kind.rawValue)" + (n == 1 ? "" : plural(kind)) }.joined(separator: ", ")
    }

    private func plural(_ kind: KernelEvent.Kind) -> String {
        switch kind {
        case .bug, .warning: "s"
        case .rcuKthreadStarved: " reports"
        default: "s"
        }
    }

    /// The findings a reader should see first: the diagnoses of the reports that are not
    /// NMI backtraces (those serve the others), without repeats, at most `limit`.
    public func headlines(limit: Int = 5) -> [String] {
        var seen: [String] = []
        for r in reports where r.event.kind != .nmiBacktrace {
            guard let d = r.diagnosis, !seen.contains(d) else { continue }
            seen.append(d)
            if seen.count == limit { break }
        }
        return seen
    }

    /// The explanation as text: a summary, the main findings, then every report.
    ///
    ///     kernel.log: 3 reports in 212 lines: 1 soft lockup, 1 RCU stall, 1 NMI backtrace
    ///       diagnosis: CPU 3 waits in smp_call_function_many_cond for CPU 1; CPU 1's NMI …
    ///
    ///     #1 line 40 [476.006034] soft lockup: CPU 3, reported by CPU 3, stuck for 443 s, task (udev-worker) pid 634
    ///        at smp_call_function_many_cond+0x16c/0x3d0 < kick_all_cpus_sync+0x30/0x50 …
    ///        IPI wait: smp_call_function_many_cond, for CPU 1
    ///        diagnosis: …
    public func text(name: String) -> String {
        let safeName = Wording.terminalSafe(name, limit: 200)
        var out = "\(safeName): \(reports.count) report\(reports.count == 1 ? "" : "s") in \(lines) line\(lines == 1 ? "" : "s")"
        out += reports.isEmpty ? ": no hang or crash reports\n" : ": \(summary)\n"
        if droppedReports > 0 { out += "  (\(droppedReports) more reports past the first \(LogExplainer.maximumReports) were not read)\n" }
        for line in headlines() { out += "  diagnosis: \(Wording.terminalSafe(line, limit: 400))\n" }
        for (index, r) in reports.enumerated() {
            out += "\n" + Self.describe(r, number: index + 1)
        }
        return out
    }

    static func describe(_ r: ExplainedReport, number: Int) -> String {
        let e = r.event
        var head = "#\(number) line \(r.line)"
        if let t = e.timestamp { head += " [\(t)]" }
        head += " \(e.kind.rawValue)"
        var facts: [String] = []
        if !r.cpus.isEmpty { facts.append(Wording.cpuList(r.cpus)) }
        if let by = r.reportedBy, e.kind != .nmiBacktrace, !(r.cpus == [by]) || e.kind == .rcuStall { facts.append("reported by CPU \(by)") }
        if e.kind == .nmiBacktrace, let by = e.detectedBy { facts.append("asked by CPU \(by)") }
        if let s = e.stuckSeconds { facts.append(e.kind == .hungTask ? "blocked for more than \(s) s" : "stuck for \(s) s") }
        if let j = e.stallJiffies { facts.append("\(j) jiffies") }
        if let task = e.task { facts.append("task \(task)" + (e.pid.map { " pid \($0)" } ?? "")) }
        else if let pid = e.pid { facts.append("pid \(pid)") }
        if !facts.isEmpty { head += ": " + facts.joined(separator: ", ") }
        var out = "  " + Wording.terminalSafe(head, limit: 300) + "\n"
        out += "     " + Wording.terminalSafe(e.headline, limit: 200) + "\n"
        if !r.keyFrames.isEmpty {
            var at = "     at " + r.keyFrames.map { Wording.terminalSafe($0.description, limit: 120) }.joined(separator: " < ")
            if let enabled = e.interruptsEnabled { at += enabled ? " (interrupts on)" : " (interrupts off)" }
            out += at + "\n"
        }
        if let wait = r.ipiWait {
            out += "     IPI wait: \(Wording.terminalSafe(wait, limit: 120))"
            out += r.waitsFor.isEmpty ? "\n" : ", for \(Wording.cpuList(r.waitsFor))\n"
        }
        if !r.unansweredNMI.isEmpty { out += "     no NMI backtrace from \(Wording.cpuList(r.unansweredNMI))\n" }
        if let d = r.diagnosis { out += "     diagnosis: \(Wording.terminalSafe(d, limit: 400))\n" }
        return out
    }

    /// The explanation as one JSON object on one line:
    /// {file, lines, summary, diagnoses [..], dropped_reports, reports [{number, line, kind,
    /// timestamp, cpus, reported_by, asked_by, stalled_cpus, stuck_seconds, stall_jiffies, task,
    /// pid, headline, rip, interrupts_enabled, key_frames [frame], frames [frame], ipi_wait,
    /// waits_for, unanswered_nmi, diagnosis}]}, a frame being {function, offset, size, module,
    /// reliable, source, inlined}. Unknown values are null.
    public func json(name: String) -> String {
        JSONWriter.write(jsonValue(name: name))
    }

    func jsonValue(name: String) -> JSONValue {
        .object([
            ("file", .string(name)),
            ("lines", .integer(lines)),
            ("summary", .string(summary)),
            ("diagnoses", .array(headlines().map(JSONValue.string))),
            ("dropped_reports", .integer(droppedReports)),
            ("reports", .array(reports.enumerated().map { index, r in Self.json(r, number: index + 1) })),
        ])
    }

    static func json(_ r: ExplainedReport, number: Int) -> JSONValue {
        let e = r.event
        return .object([
            ("number", .integer(number)),
            ("line", .integer(r.line)),
            ("kind", .string(e.kind.rawValue)),
            ("timestamp", .optional(e.timestamp, JSONValue.number)),
            ("cpus", .integers(r.cpus)),
            ("reported_by", .optional(e.kind == .nmiBacktrace ? e.cpu : r.reportedBy, JSONValue.integer)),
            ("asked_by", .optional(e.kind == .nmiBacktrace ? e.detectedBy : nil, JSONValue.integer)),
            ("stalled_cpus", .integers(e.stalledCPUs)),
            ("stuck_seconds", .optional(e.stuckSeconds, JSONValue.integer)),
            ("stall_jiffies", .optional(e.stallJiffies, JSONValue.integer)),
            ("task", .optional(e.task, JSONValue.string)),
            ("pid", .optional(e.pid, JSONValue.integer)),
            ("headline", .string(e.headline)),
            ("rip", .optional(e.rip, json)),
            ("interrupts_enabled", .optional(e.interruptsEnabled, JSONValue.bool)),
            ("key_frames", .array(r.keyFrames.map(json))),
            ("frames", .array(e.frames.map(json))),
            ("ipi_wait", .optional(r.ipiWait, JSONValue.string)),
            ("waits_for", .integers(r.waitsFor)),
            ("unanswered_nmi", .integers(r.unansweredNMI)),
            ("diagnosis", .optional(r.diagnosis, JSONValue.string)),
        ])
    }

    /// The hang report's frame object, with what a decoded trace adds.
    static func json(_ f: KernelFrame) -> JSONValue {
        guard case .object(let members) = HangReport.json(f) else { return HangReport.json(f) }
        return .object(members + [("source", .optional(f.source, JSONValue.string)), ("inlined", .bool(f.inlined))])
    }
}
