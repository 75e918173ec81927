/// Reads a Linux guest's console output as it is printed and picks out the reports that say
/// something is wrong: soft and hard lockups, RCU stalls, hung tasks, NMI backtraces, panics,
/// oopses, BUGs and WARNINGs, each with its CPU numbers, durations, RIP and call trace.
///
/// Feed it bytes in whatever pieces they arrive; it assembles lines itself. A report starts
/// at a *headline* ("watchdog: BUG: soft lockup - CPU#3 stuck for 443s! [(udev-worker):634]")
/// and collects the lines after it until one of these ends it:
/// - the next headline;
/// - the `</TASK>` that closes the outermost context of its call trace;
/// - after its call trace has begun, a line that is neither indented, nor a frame, nor a
///   context marker, nor a register line (how arm64 and pasted traces end);
/// - a line stamped more than `maximumReportDuration` seconds after the headline, or earlier
///   than it (the guest rebooted);
/// - `maximumLinesPerReport` lines, or `maximumLinesBeforeTrace` lines without a trace;
/// - `flush()`.
///
/// Decisions worth knowing:
/// - An RCU stall report usually contains "rcu: rcu_preempt kthread starved for N jiffies!"
///   with two stack dumps. The starved line becomes its own `.rcuKthreadStarved` event (cpu =
///   its "->cpu=" value, task = the GP kthread, pid from its "task:" line). That event's
///   `rip` and `frames` come from "Stack dump where RCU GP kthread last ran:", that is, what
///   the CPU the kthread waits for is doing; the kthread's own stack ("RCU grace-period
///   kthread stack dump:", always the kthread sleeping in its FQS loop) is skipped.
/// - "Sending NMI from CPU 1 to CPUs 0:" records the targets in the current report's
///   `nmiTargets` (and, for an RCU stall without "detected by" or an RCU kthread-starved
///   report, the sender as `detectedBy`);
///   the sender becomes `detectedBy` of the "NMI backtrace for cpu N" reports that follow.
///   A target that never answers is shown by `nmiTargetsWithoutBacktrace(in:)`.
/// - "rcu: INFO: rcu_preempt self-detected stall on CPU" is an `.rcuStall` whose stalled CPU
///   is also its `cpu` and `detectedBy`.
/// - "BUG: unable to handle page fault ..." followed by "Oops: 0000 [#1] SMP" is one crash
///   and stays one `.bug` event; a 3.x "WARNING: ... watchdog.c" followed by "Watchdog
///   detected hard LOCKUP on cpu N" becomes one `.hardLockup` event.
/// - Lines of other sources are ignored: host log lines ("2026-11-24T19:53:54+0000 notice
///   kite: ..."), and a job prefix such as "vsock2| " is dropped.
///
/// Bounded whatever it is fed: a line keeps at most `maximumLineLength` bytes, an event at
/// most `maximumFramesPerEvent` frames, and NUL and other control bytes, carriage returns and
/// ANSI escape sequences are dropped. Invalid UTF-8 is decoded with replacement characters.
///
/// Not thread-safe by itself: the caller serialises `feed` and `flush` (vCPU threads write
/// the console one at a time).
public struct ConsoleWatcher: Sendable {
    /// The longest line kept, in bytes; the rest of a longer line is dropped.
    public static let maximumLineLength = 4096
    /// The most call-trace frames kept per event; later frames are dropped.
    public static let maximumFramesPerEvent = 64
    /// The most lines one report may span.
    public static let maximumLinesPerReport = 512
    /// The most lines a report may have before its call trace starts.
    public static let maximumLinesBeforeTrace = 128
    /// The most CPUs kept from one CPU list (stalled CPUs, NMI targets).
    public static let maximumCPUsPerList = 256
    /// A line stamped later than this many seconds after a report's headline is not part of it.
    public static let maximumReportDuration = 10.0

    private var lineBytes: [UInt8] = []
    private var escape = EscapeSequence.none
    private var report: ReportInProgress?
    /// The CPU of the last "Sending NMI from CPU N to CPUs ..." line, until another kind of
    /// report starts.
    private var nmiSender: Int?

    /// How many reports have started (headlines seen), so a caller that feeds one line at a
    /// time knows on which line each report began.
    public private(set) var reportsStarted = 0

    public init() {
        lineBytes.reserveCapacity(256)
    }

    /// Feeds console output; returns the events whose reports are now complete.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [KernelEvent] {
        var completed: [KernelEvent] = []
        for byte in bytes {
            consume(byte, completing: &completed)
        }
        return completed
    }

    /// Ends any report still being collected (e.g. when the console has been quiet for a
    /// while or the machine stops) and returns it. A last line without a newline is read
    /// first, as if it had one.
    /// Whether a console line has the shape of a piece of a kernel report (a register or
    /// "RIP:" line, a call-trace frame, a context marker such as "<TASK>", "Call Trace:",
    /// "Modules linked in:", "CPU: N PID: N ...", "Hardware name:", "Stopper:", "Workqueue:",
    /// a "cut here" or "end trace" line), whichever report it belongs to. When two CPUs
    /// report at once their lines interleave and a watcher following one report loses the
    /// other's, so the hang watchdog asks this too before it counts a line as progress.
    public static func isReportShaped(_ raw: String) -> Bool {
        var raw = Substring(raw)
        while let last = raw.last, last.isNewline { raw = raw.dropLast() }   // "\r\n" is one Character
        guard let line = ConsoleLine(String(raw)) else { return false }
        let text = line.text
        if text.isEmpty { return false }
        for prefix in ["Call Trace:", "Call trace:", "Modules linked in:", "Hardware name:", "Stopper:",
                       "Workqueue:", "---[ end trace", "------------[ cut here ]"] where text.hasPrefix(prefix) {
            return true
        }
        // "FS:  0000000000000000(0000) GS:ff34...(0000) knlGS:0" is a register line too.
        return ContextMarker(text) != nil || instructionPointerText(text) != nil
            || isRegisterLine(text) || isRegisterLine(Substring(text.filter { $0 != "(" && $0 != ")" }))
            || KernelFrame(traceLine: text) != nil || CPULine(text)?.pid != nil
    }

    public mutating func flush() -> [KernelEvent] {
        var completed: [KernelEvent] = []
        escape = .none
        endLine(completing: &completed)
        finishReport(completing: &completed)
        return completed
    }

    /// The report being collected right now, if any (so a caller can act on a headline at once).
    public var pending: KernelEvent? { report?.event }

    /// Parses a whole log (convenience for tests and `kite` tools): feed + flush.
    public static func events(in log: String) -> [KernelEvent] {
        var watcher = ConsoleWatcher()
        return watcher.feed(log.utf8) + watcher.flush()
    }

    /// How many bytes of an unfinished line are buffered (never more than `maximumLineLength`).
    var bufferedLineLength: Int { lineBytes.count }

    // MARK: Bytes to lines

    /// Where the byte stream is inside an ANSI escape sequence.
    private enum EscapeSequence: Sendable {
        case none
        /// Just after ESC.
        case started
        /// "ESC [" ... final byte (colours, cursor movement).
        case controlSequence
        /// "ESC ]" ... BEL or "ESC \" (window titles).
        case operatingSystemCommand
    }

    private mutating func consume(_ byte: UInt8, completing completed: inout [KernelEvent]) {
        let newline: UInt8 = 0x0A, escapeByte: UInt8 = 0x1B, tab: UInt8 = 0x09
        if byte == newline {
            escape = .none
            endLine(completing: &completed)
            return
        }
        switch escape {
        case .none:
            break
        case .started:
            switch byte {
            case UInt8(ascii: "["): escape = .controlSequence
            case UInt8(ascii: "]"): escape = .operatingSystemCommand
            default: escape = .none
            }
            return
        case .controlSequence:
            // Parameter and intermediate bytes continue it; anything else ends it.
            if !(0x20...0x3F).contains(byte) { escape = .none }
            return
        case .operatingSystemCommand:
            if byte == 0x07 { escape = .none } else if byte == escapeByte { escape = .started }
            return
        }
        if byte == escapeByte {
            escape = .started
            return
        }
        if (byte < 0x20 && byte != tab) || byte == 0x7F { return }
        if lineBytes.count < Self.maximumLineLength { lineBytes.append(byte) }
    }

    private mutating func endLine(completing completed: inout [KernelEvent]) {
        guard !lineBytes.isEmpty else { return }
        let raw = String(decoding: lineBytes, as: UTF8.self)
        lineBytes.removeAll(keepingCapacity: true)
        guard let line = ConsoleLine(raw), !line.text.isEmpty else { return }
        handle(line, completing: &completed)
    }

    // MARK: Lines to reports

    private mutating func handle(_ line: ConsoleLine, completing completed: inout [KernelEvent]) {
        if let started = report?.event.timestamp, let now = line.timestamp,
           now < started || now - started > Self.maximumReportDuration {
            finishReport(completing: &completed)
        }

        if let headline = KernelEvent(headline: line.text, timestamp: line.timestamp, nmiSender: nmiSender) {
            if report?.absorbContinuation(headline) == true { return }
            finishReport(completing: &completed)
            if headline.kind != .nmiBacktrace { nmiSender = nil }
            report = ReportInProgress(event: headline)
            reportsStarted += 1
            return
        }

        if let request = NMIBacktraceRequest(line.text) {
            nmiSender = request.sender
            // The sender's own backtrace comes before the request; the request ends it.
            if report?.event.kind == .nmiBacktrace { finishReport(completing: &completed) }
            report?.note(request)
            return
        }

        if report?.absorb(line) == .complete {
            finishReport(completing: &completed)
        }
    }

    private mutating func finishReport(completing completed: inout [KernelEvent]) {
        if let finished = report { completed.append(finished.event) }
        report = nil
    }
}

/// A report whose lines are still being collected.
private struct ReportInProgress: Sendable {
    enum Outcome { case continues, complete }

    var event: KernelEvent
    private var lineCount = 1
    private var linesBeforeTrace = 0
    /// A "Call Trace:" line, a frame or a context marker has been seen.
    private var inTrace = false
    /// How deep inside <NMI>/<IRQ>/<TASK> markers the trace is.
    private var contextDepth = 0
    /// Inside a stack dump whose frames do not belong to the event (the RCU GP kthread's own).
    private var skippingStack = false

    init(event: KernelEvent) {
        self.event = event
    }

    /// Whether a headline is really the next line of this same crash, and if so takes it in.
    mutating func absorbContinuation(_ headline: KernelEvent) -> Bool {
        guard !inTrace else { return false }
        switch (event.kind, headline.kind) {
        case (.bug, .oops):
            // "BUG: kernel NULL pointer dereference, address: 0" ... "Oops: 0000 [#1] SMP",
            // "kernel BUG at mm/slub.c:123!" then "invalid opcode: 0000 [#1] SMP".
            lineCount += 1
            return true
        case (.warning, .hardLockup):
            // 3.x: "WARNING: CPU: 3 PID: 0 at kernel/watchdog.c:265 ..." then
            // "Watchdog detected hard LOCKUP on cpu 3".
            event.kind = .hardLockup
            event.cpu = headline.cpu ?? event.cpu
            lineCount += 1
            return true
        default:
            return false
        }
    }

    mutating func note(_ request: NMIBacktraceRequest) {
        for target in request.targets
        where !event.nmiTargets.contains(target) && event.nmiTargets.count < ConsoleWatcher.maximumCPUsPerList {
            event.nmiTargets.append(target)
        }
        // An RCU stall without "detected by", or the kthread-starved part of one whose
        // "Stack dump where RCU GP kthread last ran" sends the NMI: the sender is the CPU
        // that waits for the backtrace.
        if [.rcuStall, .rcuExpeditedStall, .rcuKthreadStarved].contains(event.kind), event.detectedBy == nil {
            event.detectedBy = request.sender
        }
    }

    /// Takes in one line after the headline; says whether the report is complete.
    mutating func absorb(_ line: ConsoleLine) -> Outcome {
        lineCount += 1
        if lineCount > ConsoleWatcher.maximumLinesPerReport { return .complete }
        var text = line.text

        // The two stack dumps of an RCU GP-kthread starvation report (see ConsoleWatcher).
        if text.includes("RCU grace-period kthread stack dump:") {
            startStackDump(skipping: true)
            return .continues
        }
        if text.includes("Stack dump where RCU GP kthread last ran:") {
            startStackDump(skipping: false)
            return .continues
        }

        // A CSD-lock report goes on past its "csd: ..." lines and the target CPU's task dump
        // ("Task dump for CPU 55:", skipped: it is the other CPU's) to the waiter's own stack.
        if event.kind == .csdLockTimeout {
            if text.hasPrefix("csd: ") || text.hasPrefix("smp: csd: ") {
                startStackDump(skipping: false)
                return .continues
            }
            if text.hasPrefix("Task dump for CPU ") {
                startStackDump(skipping: true)
                return .continues
            }
        }

        if let marker = ContextMarker(text) {
            inTrace = true
            if marker.isOpening {
                contextDepth += 1
            } else {
                contextDepth = max(0, contextDepth - 1)
                if marker.name == "TASK", contextDepth == 0 {
                    if !skippingStack { return .complete }
                    skippingStack = false
                    inTrace = false
                    return .continues
                }
            }
            if marker.remainder.isEmpty { return .continues }
            text = marker.remainder
        }

        if text.hasPrefix("Call Trace:") || text.hasPrefix("Call trace:") {
            inTrace = true
            return .continues
        }
        if event.interruptsEnabled == nil, !skippingStack, let enabled = interruptsEnabled(inRegisterLine: text) {
            event.interruptsEnabled = enabled
            return .continues
        }
        if let pointer = instructionPointerText(text) {
            // User-mode "RIP: 0033:0x7f..." lines name no symbol and are skipped.
            if event.rip == nil, !skippingStack, let rip = KernelFrame(instructionPointer: pointer) {
                event.rip = rip
            }
            return .continues
        }
        if let frame = KernelFrame(traceLine: text) {
            inTrace = true
            if !skippingStack, event.frames.count < ConsoleWatcher.maximumFramesPerEvent {
                event.frames.append(frame)
            }
            return .continues
        }
        if let cpuLine = CPULine(text) {
            // arm64 prints the GP kthread's dump without an end marker: the next dump_stack()
            // header ("CPU: 2 UID: 0 PID: 237 Comm: ...") ends it and starts the stalled CPU's.
            if skippingStack, cpuLine.pid != nil { startStackDump(skipping: false) }
            if !skippingStack {
                if event.cpu == nil { event.cpu = cpuLine.cpu }
                adoptTask(named: cpuLine.command, pid: cpuLine.pid)
            }
            return .continues
        }
        if let taskLine = TaskLine(text) {
            adoptTask(named: taskLine.name, pid: taskLine.pid)
            return .continues
        }
        if event.kind == .rcuStall || event.kind == .rcuExpeditedStall {
            noteRCUStallDetail(text)
        }

        if inTrace {
            return line.isIndented || isRegisterLine(text) ? .continues : .complete
        }
        linesBeforeTrace += 1
        return linesBeforeTrace > ConsoleWatcher.maximumLinesBeforeTrace ? .complete : .continues
    }

    private mutating func startStackDump(skipping: Bool) {
        skippingStack = skipping
        inTrace = false
        contextDepth = 0
    }

    /// Takes a task name and pid unless they contradict the task the report already names
    /// (a starved RCU kthread's report goes on with the stack of some other task).
    private mutating func adoptTask(named name: Substring?, pid: Int?) {
        if let known = event.pid, let pid, known != pid { return }
        if let known = event.task, let name, known != name { return }
        if event.task == nil, let name { event.task = String(name) }
        if event.pid == nil, let pid { event.pid = pid }
    }

    /// "rcu: \t0-...!: (0 ticks this GP) ..." and "\t(detected by 1, t=5252 jiffies, ...)".
    private mutating func noteRCUStallDetail(_ text: Substring) {
        if event.detectedBy == nil, let detector = text.after("(detected by ")?.leadingInteger {
            event.detectedBy = detector
        }
        if event.stallJiffies == nil { event.stallJiffies = KernelEvent.stallJiffies(in: text) }
        guard !inTrace, let cpu = KernelEvent.stalledCPU(inRCULine: text) else { return }
        if !event.stalledCPUs.contains(cpu), event.stalledCPUs.count < ConsoleWatcher.maximumCPUsPerList {
            event.stalledCPUs.append(cpu)
        }
        if event.headline.includes("self-detected stall") {
            // A CPU reporting its own stall: it is both the stalled and the detecting CPU.
            if event.cpu == nil { event.cpu = cpu }
            if event.detectedBy == nil { event.detectedBy = cpu }
        }
    }
}

extension KernelEvent {
    /// The CPUs this report sent an NMI to ("Sending NMI from CPU 1 to CPUs 0:") that never
    /// answered with an "NMI backtrace for cpu N" report among `laterEvents` (the events that
    /// followed this one, up to the next report that sends NMIs). A CPU that cannot take an
    /// NMI is stuck hard: with interrupts off in the hypervisor, or never running at all.
    public func nmiTargetsWithoutBacktrace(in laterEvents: some Sequence<KernelEvent>) -> [Int] {
        guard !nmiTargets.isEmpty else { return [] }
        var answered: Set<Int> = []
        for later in laterEvents {
            if later.kind == .nmiBacktrace, let cpu = later.cpu {
                answered.insert(cpu)
            } else if !later.nmiTargets.isEmpty {
                break
            }
        }
        return nmiTargets.filter { !answered.contains($0) }
    }
}
