/// Reads a whole kernel log from any system (a serial console capture, syslog, the journal,
/// dmesg, a syzbot report, a CI job's output) and finds every hang or crash report in it:
/// `kite explain`. It feeds the lines to `ConsoleWatcher`, the parser Kite uses on a running
/// guest's console, after taking off the log's own prefixes (`LogPrefix`), and then reads
/// the reports together (`LogDiagnosis`): which CPU waits for which, and what the log shows
/// of the CPUs waited for.
///
/// Reports printed at once by several CPUs interleave line by line. When the kernel was
/// built with CONFIG_PRINTK_CALLER every line says who printed it ("[    C1]", "[  T123]"),
/// and each printer's lines go to a watcher of their own, so interleaved reports come apart
/// cleanly. Without caller ids one watcher follows the lines as they come: every headline
/// still starts a report, but a report's frames may be cut short by another CPU's lines.
///
/// Bounded whatever it is fed: lines are cut at `LogPrefix.maximumLineLength`, at most
/// `maximumReports` reports are kept (later ones are counted in `droppedReports`), and at
/// most `maximumWatchers` printers are followed at once (past that, every report in
/// progress is ended and the watchers start afresh).
public struct LogExplainer: Sendable {
    public static let maximumReports = 10_000
    public static let maximumWatchers = 512

    /// A report and the line of the input it started on (1-based).
    public struct Located: Sendable {
        public var event: KernelEvent
        public var line: Int
        /// Which boot of the log it belongs to (0 for the first): a log often holds several,
        /// and reports of different boots say nothing of each other.
        public var boot: Int
    }

    private var watchers: [String: ConsoleWatcher] = [:]
    /// Per watcher, the input lines of the reports it has started and not yet completed.
    private var startLines: [String: [(line: Int, boot: Int)]] = [:]
    private var located: [Located] = []
    private var requests: [LogDiagnosis.BacktraceRequest] = []
    private var lineNumber = 0
    private var boot = 0
    private var lastTimestamp: Double?
    private var sawKernelLine = false
    private var pendingBytes: [UInt8] = []
    private var pendingOverflowed = false
    public private(set) var droppedReports = 0
    private let symbols: KernelSymbols?
    private var kaslrOffset: UInt64

    /// With `symbols` (the kernel's System.map), bare kernel addresses in the log
    /// ("0xffffffff8104a1b2", printed by a kernel without CONFIG_KALLSYMS) are named,
    /// relocated by `kaslrOffset`, or by the offset of a "Kernel Offset:" line once one is read.
    public init(symbols: KernelSymbols? = nil, kaslrOffset: UInt64 = 0) {
        self.symbols = symbols
        self.kaslrOffset = kaslrOffset
    }

    /// Feeds a piece of the log, in whatever pieces it arrives.
    public mutating func feed(_ bytes: some Sequence<UInt8>) {
        for byte in bytes {
            if byte == 0x0A {
                endRawLine()
            } else if pendingBytes.count < LogPrefix.maximumLineLength {
                pendingBytes.append(byte)
            } else {
                pendingOverflowed = true
            }
        }
    }

    /// Ends the log and returns its reports in the order they started, explained.
    public mutating func finish() -> LogExplanation {
        if !pendingBytes.isEmpty || pendingOverflowed { endRawLine() }
        releaseHeldMessage()
        for key in watchers.keys.sorted() { flush(key) }
        watchers.removeAll()
        located.sort { $0.line < $1.line }
        return LogDiagnosis.explain(located, requests: requests, droppedReports: droppedReports, lines: lineNumber)
    }

    /// Convenience for tests and small logs: feed + finish.
    public static func explain(_ log: String) -> LogExplanation {
        var explainer = LogExplainer()
        explainer.feed(log.utf8)
        return explainer.finish()
    }

    private mutating func endRawLine() {
        lineNumber += 1
        let raw = String(decoding: pendingBytes, as: UTF8.self)
        pendingBytes.removeAll(keepingCapacity: true)
        pendingOverflowed = false
        let messages = LogPrefix.kernelMessages(in: Substring(raw))
        // A line a mail client or terminal wrapped: it has no prefix of its own, the line
        // before it was long and had one, and it is no piece of a report by itself.
        if messages.count == 1, let held = heldMessage, heldLength >= Self.wrappedLineMinimum,
           Self.isContinuation(raw: raw, message: messages[0]) {
            heldMessage = (held.message + " " + messages[0], held.line)
            heldLength = 0
            return
        }
        releaseHeldMessage()
        for (index, message) in messages.enumerated() {
            if index == messages.count - 1, Self.hasPrefix(raw: raw, message: message) {
                heldMessage = (message, lineNumber)
                heldLength = raw.utf8.count
            } else {
                handle(message, line: lineNumber)
            }
        }
    }

    /// A line shorter than this was not wrapped.
    static let wrappedLineMinimum = 50
    /// The last line read, held back one line in case the next continues it.
    private var heldMessage: (message: Substring, line: Int)?
    private var heldLength = 0

    private mutating func releaseHeldMessage() {
        if let held = heldMessage {
            heldMessage = nil
            handle(held.message, line: held.line)
        }
    }

    /// Whether a raw line carries a prefix of its own: a syslog or dmesg prefix, or a printk time stamp.
    static func hasPrefix(raw: String, message: Substring) -> Bool {
        if message.utf8.count != raw.utf8.count { return true }
        var rest = message
        if let afterLevel = rest.droppingSyslogLevel() { rest = afterLevel }
        return rest.splittingPrintkTimestamp() != nil
    }

    static func isContinuation(raw: String, message: Substring) -> Bool {
        guard !hasPrefix(raw: raw, message: message), let first = message.first, first != " ", first != "\t" else { return false }
        let text = message.trimmingSpaces()
        return !text.isEmpty && KernelEvent.headlineKind(of: text) == nil && !ConsoleWatcher.isReportShaped(String(text))
            && NMIBacktraceRequest(text) == nil && !text.hasPrefix("Call Trace") && !text.hasPrefix("---[")
    }

    /// Reads one kernel message line that was on input line `line`.
    private mutating func handle(_ original: Substring, line: Int) {
        var message = original
        if let symbols {
            if let offset = KernelSymbols.kaslrOffset(fromConsoleLine: String(message)) { kaslrOffset = offset }
            message = Self.naming(message, symbols: symbols, kaslrOffset: kaslrOffset)
        }
        let key = Self.caller(of: message) ?? ""
        if let parsed = ConsoleLine(String(message)) {
            noteBoot(parsed)
            if let request = NMIBacktraceRequest(parsed.text) {
                requests.append(.init(line: line, boot: boot, sender: request.sender, targets: request.targets))
            }
        }
        if watchers[key] == nil {
            if watchers.count >= Self.maximumWatchers { letIdleWatchersGo() }
            watchers[key] = ConsoleWatcher()
        }
        let before = watchers[key]!.reportsStarted
        let completed = watchers[key]!.feed(message.utf8 + [0x0A])
        let started = watchers[key]!.reportsStarted - before
        if started > 0 { startLines[key, default: []].append(contentsOf: repeatElement((line: line, boot: boot), count: started)) }
        take(completed, from: key, at: line)
    }

    /// A new boot starts at "Linux version ..." after other kernel lines, or where the time
    /// stamps go back by more than a second (lines of different CPUs may be a little out of order).
    private mutating func noteBoot(_ line: ConsoleLine) {
        if line.text.hasPrefix("Linux version "), sawKernelLine {
            boot += 1
            lastTimestamp = line.timestamp
        } else if let now = line.timestamp {
            if let last = lastTimestamp, now + 1 < last { boot += 1 }
            lastTimestamp = now
        }
        if line.timestamp != nil || !line.text.isEmpty { sawKernelLine = true }
    }

    private mutating func take(_ events: [KernelEvent], from key: String, at currentLine: Int) {
        for event in events {
            let (line, eventBoot) = startLines[key]?.isEmpty == false ? startLines[key]!.removeFirst() : (currentLine, boot)
            if located.count < Self.maximumReports {
                located.append(Located(event: event, line: line, boot: eventBoot))
            } else {
                droppedReports += 1
            }
        }
    }

    private mutating func flush(_ key: String) {
        guard var watcher = watchers[key] else { return }
        let completed = watcher.flush()
        watchers[key] = watcher
        take(completed, from: key, at: lineNumber)
    }

    /// Ends the reports of every watcher and forgets the watchers, to bound how many are kept
    /// (a syzbot log names thousands of tasks, each printing a line or two).
    private mutating func letIdleWatchersGo() {
        for key in watchers.keys.sorted() { flush(key) }
        watchers.removeAll()
        startLines.removeAll()
    }

    /// CONFIG_PRINTK_CALLER's field: "T123" or "C1" from "[  123.456789][  T123] ..." (also
    /// with a space between the two fields). Nil when the line has none.
    static func caller(of message: Substring) -> String? {
        var rest = message
        if let afterJob = rest.droppingJobPrefix() { rest = afterJob }
        if let afterLevel = rest.droppingSyslogLevel() { rest = afterLevel }
        guard let (_, afterStamp) = rest.splittingPrintkTimestamp() else { return nil }
        let field = afterStamp.trimmingLeadingSpaces()
        guard field.droppingPrintkCaller() != nil, let close = field.firstIndex(of: "]") else { return nil }
        return String(field[field.index(after: field.startIndex)..<close].trimmingLeadingSpaces())
    }

    /// Replaces each bare kernel address ("0xffffffff8104a1b2", standing alone or after a
    /// colon, as in "RIP: 0010:0xffffffff8104a1b2") that `symbols` knows with
    /// "function+0xoff/0xsize".
    static func naming(_ message: Substring, symbols: KernelSymbols, kaslrOffset: UInt64) -> Substring {
        guard message.includes("0xf") else { return message }
        let bytes = Array(message.utf8)
        func isBoundary(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == UInt8(ascii: ":") || b == UInt8(ascii: "(") || b == UInt8(ascii: ")") || b == UInt8(ascii: ",") }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 32)
        var i = 0
        var changed = false
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "0"), i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: "x"), i == 0 || isBoundary(bytes[i - 1]) {
                var j = i + 2
                var value: UInt64 = 0
                while j < bytes.count, j - i - 2 < 16, let digit = hexDigitValue(bytes[j]) {
                    value = value << 4 | digit
                    j += 1
                }
                if j - i - 2 == 16, j == bytes.count || isBoundary(bytes[j]), value >= 0xffff_0000_0000_0000,
                   let name = symbols.describe(runtime: value, kaslrOffset: kaslrOffset) {
                    out += Array(name.utf8)
                    i = j
                    changed = true
                    continue
                }
            }
            out.append(bytes[i])
            i += 1
        }
        return changed ? Substring(String(decoding: out, as: UTF8.self)) : message
    }
}
