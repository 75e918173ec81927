import JSON

/// What Kite tells a person about a possible hang: why it looked, what it concluded, and the
/// evidence (every vCPU's state, the guest's own hang reports). Written as short text for
/// stderr and as one JSON object for `--report` and `kite inspect --json`.
public struct HangReport: Sendable {
    /// Why the report was made: "the guest reported an RCU stall", "no progress for 30 s",
    /// "requested (SIGUSR1)", "requested (kite inspect)".
    public var trigger: String
    /// The last sample of every vCPU.
    public var snapshot: MachineSnapshot
    /// The guest's hang reports the diagnosis judged.
    public var events: [KernelEvent]
    public var findings: [Finding]
    /// The guest kernel's KASLR offset, when Kite worked it out (against a symbol file's
    /// link-time addresses; kallsyms read from the guest gives runtime addresses already).
    public var kaslrOffset: UInt64?
    /// Where the function names came from: a System.map or vmlinux path, or "kallsyms in
    /// guest memory"; nil when no symbols were found.
    public var symbolSource: String?

    public init(trigger: String, snapshot: MachineSnapshot, events: [KernelEvent], findings: [Finding],
                kaslrOffset: UInt64? = nil, symbolSource: String? = nil) {
        self.trigger = trigger
        self.snapshot = snapshot
        self.events = events
        self.findings = findings
        self.kaslrOffset = kaslrOffset
        self.symbolSource = symbolSource
    }

    /// `HangDiagnosis.summary(findings)`.
    public var summary: String { HangDiagnosis.summary(findings) }

    /// `HangDiagnosis.isHang(findings)`: the findings show a stuck guest.
    public var isHang: Bool { HangDiagnosis.isHang(findings) }

    /// Console reports shown in the text form; older ones are counted, not shown.
    static let textEventLimit = 6
    /// Frames shown per console report in the text form (the RIP counts as one).
    static let textFrameLimit = 4

    // MARK: - Text

    /// A short report for stderr: a "kite: hang report (trigger)" header, the summary, the
    /// findings the summary left out, one line per vCPU, and one line per console report
    /// with its top frames. Guest text is made safe for a terminal.
    public func text() -> String {
        var lines = ["kite: hang report (\(Wording.terminalSafe(trigger)))"]
        lines.append("  diagnosis: " + summary)
        let summarized = HangDiagnosis.summarized(findings)
        let rest = findings.filter { !summarized.contains($0) }
        if !rest.isEmpty { lines.append("  also: " + rest.map(\.sentence).joined(separator: "; ")) }
        lines += snapshot.vcpus.map { "  " + Self.describe($0) }
        let shown = events.suffix(Self.textEventLimit)
        if events.count > shown.count {
            lines.append("  console: \(events.count - shown.count) earlier reports not shown")
        }
        lines += shown.map { "  console: " + Self.describe($0) }
        if let mode = snapshot.interruptController { lines.append("  interrupt controllers: \(mode)") }
        if let source = symbolSource { lines.append("  symbols: " + Wording.terminalSafe(source)) }
        return lines.joined(separator: "\n")
    }

    /// "vCPU 1: in the guest, runnable; RIP smp_call_function_many_cond+0xf1/0x330, RSP …".
    static func describe(_ v: VCPUSnapshot) -> String {
        var groups: [String] = ["vCPU \(v.id): \(v.thread.rawValue)" + (v.answered ? "" : ", did not answer")]
        if let mp = v.mpState { groups[0] += ", " + mp.rawValue }
        if let r = v.registers {
            let rip = v.ripSymbol.map { Wording.terminalSafe($0, limit: 80) } ?? Wording.hex(r.rip)
            groups.append("RIP \(rip) RSP \(Wording.hex(r.rsp)) RFLAGS \(Wording.hex(r.rflags))"
                          + (r.interruptsEnabled ? " (IF)" : " (IF=0)") + " CR3 \(Wording.hex(r.cr3)) CPL \(r.cpl)")
        }
        if let a = v.apic { groups.append(describe(a)) }
        if let e = v.events {
            var pending: [String] = []
            if e.nmiPending { pending.append("NMI pending") }
            if e.nmiInjected { pending.append("NMI being injected") }
            if e.nmiMasked { pending.append("NMIs blocked") }
            if let vector = e.injectedInterrupt { pending.append("injecting \(Wording.hex(vector))") }
            if let vector = e.exception { pending.append("exception \(Wording.hex(vector))") }
            if !pending.isEmpty { groups.append(pending.joined(separator: ", ")) }
        }
        let stay = switch v.thread {
        case .inGuest: "in KVM_RUN for \(Wording.seconds(v.secondsSinceEntry))"
        case .waitingInKite: "waiting in Kite for \(Wording.seconds(v.secondsSinceEntry))"
        default: "out of the guest for \(Wording.seconds(v.secondsSinceEntry))"
        }
        groups.append("\(stay), last guest exit \(Wording.seconds(v.secondsSinceExit)) ago, \(v.exitCount) exits")
        return groups.joined(separator: "; ")
    }

    /// "APIC IRR 0xfb ISR - TMR -, ICR 0x000c00fc send pending, TPR 0x0 PPR 0x0, timer 0xec periodic 1200/62500".
    static func describe(_ a: LocalAPICState) -> String {
        func vectors(_ v: [UInt8]) -> String {
            guard !v.isEmpty else { return "-" }
            let shown = v.prefix(8).map { Wording.hex($0) }.joined(separator: ",")
            return v.count > 8 ? shown + ",…" : shown
        }
        var s = "APIC IRR \(vectors(a.irr)) ISR \(vectors(a.isr)) TMR \(vectors(a.tmr))"
        s += ", ICR \(Wording.hex(a.icr, digits: 8))" + (a.icrSendPending ? " send pending" : "")
        s += ", TPR \(Wording.hex(UInt64(a.tpr))) PPR \(Wording.hex(UInt64(a.ppr)))"
        s += ", timer \(Wording.hex(UInt8(truncatingIfNeeded: a.timerLVT))) \(timerMode(a.timerLVT))"
            + (a.timerMasked ? " masked" : "") + " \(a.timerCurrentCount)/\(a.timerInitialCount)"
        if !a.softwareEnabled { s += ", software-disabled" }
        return s
    }

    /// The timer LVT's mode (bits 17-18).
    static func timerMode(_ lvt: UInt32) -> String {
        switch (lvt >> 17) & 3 {
        case 0: "one-shot"
        case 1: "periodic"
        case 2: "TSC-deadline"
        default: "reserved-mode"
        }
    }

    /// "[57.23662] watchdog: BUG: soft lockup - CPU#1 stuck for 52s! [swapper/0:1]; at
    /// smp_call_function_many_cond+0xf1/0x330 < on_each_cpu_cond_mask+0x20/0x40 < …".
    static func describe(_ e: KernelEvent) -> String {
        var s = e.timestamp.map { "[\($0)] " } ?? ""
        s += Wording.terminalSafe(e.headline, limit: 160)
        let frames = topFrames(e)
        if !frames.isEmpty {
            s += "; at " + frames.map { Wording.terminalSafe($0.description, limit: 100) }.joined(separator: " < ")
        }
        return s
    }

    /// The RIP, then the reliable frames of the call trace, up to `textFrameLimit`.
    static func topFrames(_ e: KernelEvent) -> [KernelFrame] {
        var frames: [KernelFrame] = e.rip.map { [$0] } ?? []
        for f in e.frames where f.reliable && frames.count < textFrameLimit && !frames.contains(f) {
            frames.append(f)
        }
        return frames
    }

    // MARK: - JSON

    /// The report as one JSON object on one line (keys in the order documented below).
    /// Registers, addresses, the ICR, the timer LVT, frame offsets and the KASLR offset are
    /// "0x…" strings (JSON numbers lose 64-bit precision); vectors, CPU numbers, counts and
    /// seconds are numbers; states are the readable names of `VCPUThreadState`,
    /// `VCPURunnability` and `KernelEvent.Kind`; unknown values are null.
    ///
    /// trigger, summary, hang, findings [{rule, vcpus, sentence}], vcpus [{id, thread,
    /// answered, mp_state, rip, rip_symbol, rsp, rflags, cr3, cpl, interrupts_enabled,
    /// seconds_since_entry, seconds_since_exit, exits, apic {id, tpr, ppr, irr, isr, tmr, icr,
    /// icr_send_pending, timer_lvt, timer_masked, timer_initial, timer_current}, events
    /// {nmi_pending, nmi_injected, nmi_masked, injected_interrupt, exception}}],
    /// console_events [{kind, timestamp, cpu, stalled_cpus, detected_by, stuck_seconds, task,
    /// pid, headline, rip, frames [{function, offset, size, module, reliable}]}],
    /// kaslr_offset, symbols, uptime_seconds, console_quiet_seconds, interrupt_controller.
    public func json() -> String {
        JSONWriter.write(.object([
            ("trigger", .string(trigger)),
            ("summary", .string(summary)),
            ("hang", .bool(isHang)),
            ("findings", .array(findings.map { f in
                .object([("rule", .string(f.rule.rawValue)), ("vcpus", .integers(f.vcpus)),
                         ("sentence", .string(f.sentence))])
            })),
            ("vcpus", .array(snapshot.vcpus.map(Self.json))),
            ("console_events", .array(events.map(Self.json))),
            ("kaslr_offset", .optional(kaslrOffset, JSONValue.hex)),
            ("symbols", .optional(symbolSource, JSONValue.string)),
            ("uptime_seconds", Self.seconds(snapshot.uptimeSeconds)),
            ("console_quiet_seconds", Self.seconds(snapshot.consoleQuietSeconds)),
            ("interrupt_controller", .optional(snapshot.interruptController, JSONValue.string)),
        ]))
    }

    /// Seconds to the millisecond.
    static func seconds(_ s: Double) -> JSONValue { .number((s * 1000).rounded() / 1000) }

    static func json(_ v: VCPUSnapshot) -> JSONValue {
        let r = v.registers
        return .object([
            ("id", .integer(v.id)),
            ("thread", .string(v.thread.rawValue)),
            ("answered", .bool(v.answered)),
            ("mp_state", .optional(v.mpState) { .string($0.rawValue) }),
            ("rip", .optional(r?.rip, JSONValue.hex)),
            ("rip_symbol", .optional(v.ripSymbol, JSONValue.string)),
            ("rsp", .optional(r?.rsp, JSONValue.hex)),
            ("rflags", .optional(r?.rflags, JSONValue.hex)),
            ("cr3", .optional(r?.cr3, JSONValue.hex)),
            ("cpl", .optional(r?.cpl) { .integer(Int($0)) }),
            ("interrupts_enabled", .optional(r?.interruptsEnabled, JSONValue.bool)),
            ("seconds_since_entry", seconds(v.secondsSinceEntry)),
            ("seconds_since_exit", seconds(v.secondsSinceExit)),
            ("exits", .integer(Int(clamping: v.exitCount))),
            ("kvm_exits", .optional(v.kernelExitCount, { .integer(Int(clamping: $0)) })),
            ("apic", .optional(v.apic) { a in
                .object([
                    ("id", .integer(Int(a.apicID))),
                    ("tpr", .integer(Int(a.tpr))),
                    ("ppr", .integer(Int(a.ppr))),
                    ("irr", .integers(a.irr)),
                    ("isr", .integers(a.isr)),
                    ("tmr", .integers(a.tmr)),
                    ("icr", .hex(a.icr)),
                    ("icr_send_pending", .bool(a.icrSendPending)),
                    ("timer_lvt", .hex(UInt64(a.timerLVT))),
                    ("timer_masked", .bool(a.timerMasked)),
                    ("timer_initial", .integer(Int(a.timerInitialCount))),
                    ("timer_current", .integer(Int(a.timerCurrentCount))),
                ])
            }),
            ("events", .optional(v.events) { e in
                .object([
                    ("nmi_pending", .bool(e.nmiPending)),
                    ("nmi_injected", .bool(e.nmiInjected)),
                    ("nmi_masked", .bool(e.nmiMasked)),
                    ("injected_interrupt", .optional(e.injectedInterrupt) { .integer(Int($0)) }),
                    ("exception", .optional(e.exception) { .integer(Int($0)) }),
                ])
            }),
        ])
    }

    static func json(_ e: KernelEvent) -> JSONValue {
        .object([
            ("kind", .string(e.kind.rawValue)),
            ("timestamp", .optional(e.timestamp, JSONValue.number)),
            ("cpu", .optional(e.cpu, JSONValue.integer)),
            ("stalled_cpus", .integers(e.stalledCPUs)),
            ("detected_by", .optional(e.detectedBy, JSONValue.integer)),
            ("nmi_targets", .integers(e.nmiTargets)),
            ("stuck_seconds", .optional(e.stuckSeconds, JSONValue.integer)),
            ("task", .optional(e.task, JSONValue.string)),
            ("pid", .optional(e.pid, JSONValue.integer)),
            ("headline", .string(e.headline)),
            ("rip", .optional(e.rip, json)),
            ("frames", .array(e.frames.map(json))),
        ])
    }

    static func json(_ f: KernelFrame) -> JSONValue {
        .object([
            ("function", .string(f.function)),
            ("offset", .hex(f.offset)),
            ("size", .hex(f.size)),
            ("module", .optional(f.module, JSONValue.string)),
            ("reliable", .bool(f.reliable)),
        ])
    }
}
