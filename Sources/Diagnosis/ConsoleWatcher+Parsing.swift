// The line-level parsers behind ConsoleWatcher: what a console line is (time stamp,
// indentation, text), which lines start a report (headlines), and the pieces of a report
// (call-trace frames, "RIP:" lines, "CPU: N PID: N Comm: X" lines, RCU stall details).
// Plain string scanning, no Foundation and no regular expressions: every parser looks at a
// bounded line (ConsoleWatcher caps lines at 4 KiB) and gives up at the first surprise.

// MARK: - One console line

/// One line of console output, split into its printk time stamp and its message.
struct ConsoleLine {
    /// The printk time stamp ("[  476.006034] "), in seconds, if the line has one.
    var timestamp: Double?
    /// The message without a job prefix or time stamp, but with its indentation: call-trace
    /// frames are indented, headlines and register lines are not.
    var body: Substring
    /// `body` without leading and trailing white space.
    var text: Substring

    var isIndented: Bool { body.first == " " || body.first == "\t" }

    /// Splits a raw line; nil for a line that comes from another source than the guest
    /// kernel (a host log line starting with an ISO date such as "2026-11-24T19:53:54+0000").
    init?(_ raw: String) {
        var rest = Substring(raw)
        if rest.startsWithISODateTime { return nil }
        if let afterJob = rest.droppingJobPrefix() { rest = afterJob }
        if let afterLevel = rest.droppingSyslogLevel() { rest = afterLevel }
        timestamp = nil
        if let (seconds, afterStamp) = rest.splittingPrintkTimestamp() {
            timestamp = seconds
            rest = afterStamp
            // CONFIG_PRINTK_CALLER adds "[    T1]" or "[    C0]" after the time stamp.
            if let afterCaller = rest.droppingPrintkCaller() ?? (rest.first == " " ? rest.dropFirst().droppingPrintkCaller() : nil) {
                rest = afterCaller
            }
            // printk separates the time stamp from the message with exactly one space.
            if rest.first == " " { rest = rest.dropFirst() }
        }
        body = rest
        text = rest.trimmingSpaces()
    }
}

// MARK: - Headlines: the first line of a report

extension KernelEvent {
    /// Recognises the first line of a report and reads what the line itself says.
    /// `nmiSender` is the CPU of the last "Sending NMI from CPU N to CPUs ..." line, which
    /// becomes `detectedBy` of an "NMI backtrace for cpu M" report.
    init?(headline text: Substring, timestamp: Double?, nmiSender: Int?) {
        guard let kind = KernelEvent.headlineKind(of: text) else { return nil }
        self.init(kind: kind, timestamp: timestamp, headline: String(text))
        switch kind {
        case .softLockup:
            // "watchdog: BUG: soft lockup - CPU#3 stuck for 443s! [(udev-worker):634]"
            cpu = text.after("CPU#")?.leadingInteger
            stuckSeconds = text.after("stuck for ")?.leadingInteger
            if let bracket = text.lastIndex(of: "["), let close = text.lastIndex(of: "]"), bracket < close {
                let (name, taskPID) = text[text.index(after: bracket)..<close].splittingNameAndNumber(at: ":")
                task = name.map(String.init)
                pid = taskPID
            }
        case .hardLockup:
            // "watchdog: Watchdog detected hard LOCKUP on cpu 2", or from the buddy detector
            // of newer kernels "watchdog: CPU1: Watchdog detected hard LOCKUP on cpu 2".
            cpu = text.after("hard LOCKUP on cpu ")?.leadingInteger
            if let reporter = text.droppingWatchdogPrefix().dropping(prefix: "CPU") {
                detectedBy = reporter.leadingInteger
            }
        case .rcuStall, .rcuExpeditedStall:
            // Old kernels put everything on the headline:
            // "INFO: rcu_sched detected stalls on CPUs/tasks: { 2} (detected by 7, t=15002 jiffies)"
            // and expedited stalls always do: "... expedited stalls on CPUs/tasks: { 1-...D } 21 jiffies s: 173 root: 0x2/."
            stalledCPUs = KernelEvent.cpusInBraces(text)
            detectedBy = text.after("detected by ")?.leadingInteger
            stallJiffies = KernelEvent.stallJiffies(in: text)
        case .rcuKthreadStarved:
            // "rcu: rcu_preempt kthread starved for 5226 jiffies! g-1155 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x0 ->cpu=1"
            let message = text.dropping(prefix: "rcu: ") ?? text
            if let starved = message.range(of: " kthread starved for ") {
                task = String(message[..<starved.lowerBound])
            }
            cpu = text.after("->cpu=")?.leadingInteger
        case .hungTask:
            // "INFO: task kworker/u32:2:113 blocked for more than 122 seconds."
            if let nameAndPID = text.after("INFO: task "), let blocked = nameAndPID.range(of: " blocked for more than ") {
                let (name, taskPID) = nameAndPID[..<blocked.lowerBound].splittingNameAndNumber(at: ":")
                task = name.map(String.init)
                pid = taskPID
                stuckSeconds = nameAndPID[blocked.upperBound...].leadingInteger
            }
        case .nmiBacktrace:
            // "NMI backtrace for cpu 0", or for an idle CPU on x86
            // "NMI backtrace for cpu 0 skipped: idling at native_safe_halt+0xe/0x20".
            cpu = text.after("NMI backtrace for cpu ")?.leadingInteger
            detectedBy = nmiSender
            if let idleAt = text.after("skipped: idling at ") {
                rip = KernelFrame(traceLine: idleAt)
            }
        case .warning:
            if let cpuText = text.after("WARNING: CPU: ") {
                // "WARNING: CPU: 1 PID: 0 at kernel/smp.c:912 smp_call_function_many_cond+0x.../0x..."
                cpu = cpuText.leadingInteger
                pid = cpuText.after("PID: ")?.leadingInteger
            } else if let cpuText = text.after(", CPU#") {
                // Newer kernels: "WARNING: kernel/sched/core.c:6348 at sched_core_cpu_starting+0x510/0x540, CPU#1: swapper/1/0"
                cpu = cpuText.leadingInteger
                if let who = cpuText.after(": ") {
                    let (name, taskPID) = who.splittingNameAndNumber(at: "/")
                    task = name.map(String.init)
                    pid = taskPID
                }
            }
        case .bug:
            // "BUG: workqueue lockup - pool cpus=1 node=0 flags=0x0 nice=0 stuck for 33s!"
            stuckSeconds = text.after(" stuck for ")?.leadingInteger
        case .csdLockTimeout:
            // "csd: Detected non-responsive CSD lock (#1) on CPU#0, waiting 5000000042 ns for
            // CPU#01 do_sync_core+0x0/0x30(0x0)." (5.x: the same after "smp: ").
            cpu = text.after(" on CPU#")?.leadingInteger
            if let target = text.after(" ns for CPU#")?.leadingInteger { stalledCPUs = [target] }
            if let waited = text.after(" waiting "), let nanoseconds = UInt64(waited.prefix(while: \.isASCIIDigit).prefix(19)) {
                stuckSeconds = Int(nanoseconds / 1_000_000_000)
            }
        case .panic, .oops:
            break
        }
    }

    /// How long an RCU stall has lasted: "(detected by 1, t=5252 jiffies, g=...)",
    /// "(t=21002 jiffies g=1234 q=5)", or an expedited stall's "{ 1-...D } 21 jiffies s: 173".
    static func stallJiffies(in text: Substring) -> Int? {
        for marker in [" t=", "(t="] {
            if let value = text.after(marker), let jiffies = value.leadingInteger,
               value.drop(while: \.isASCIIDigit).hasPrefix(" jiffies") {
                return jiffies
            }
        }
        if text.includes("expedited stalls"), let close = text.firstIndex(of: "}") {
            let after = text[text.index(after: close)...].trimmingLeadingSpaces()
            if let jiffies = after.leadingInteger, after.drop(while: \.isASCIIDigit).hasPrefix(" jiffies") { return jiffies }
        }
        return nil
    }

    /// Which kind of report `text` starts, if it starts one.
    static func headlineKind(of text: Substring) -> Kind? {
        guard let first = text.first, first.isASCII, first.isLetter else { return nil }
        if text.hasPrefix("Kernel panic - not syncing") { return .panic }

        let watchdogMessage = text.droppingWatchdogPrefix()
        if watchdogMessage.hasPrefix("BUG: soft lockup - CPU#") { return .softLockup }
        if let lockup = watchdogMessage.range(of: "Watchdog detected hard LOCKUP on cpu ") {
            let before = watchdogMessage[..<lockup.lowerBound]
            if before.isEmpty || (before.hasPrefix("CPU") && before.hasSuffix(": ")) { return .hardLockup }
        }

        let rcuMessage = text.dropping(prefix: "rcu: ") ?? text
        if rcuMessage.hasPrefix("INFO: rcu_") {
            if rcuMessage.includes("detected expedited stalls on CPUs/tasks") { return .rcuExpeditedStall }
            if rcuMessage.includes("detected stalls on CPUs/tasks") { return .rcuStall }
            if rcuMessage.includes("self-detected stall on CPU") { return .rcuStall }
        }
        if rcuMessage.hasPrefix("rcu_"), rcuMessage.includes(" kthread starved for ") { return .rcuKthreadStarved }

        if text.hasPrefix("INFO: task "), text.includes(" blocked for more than ") { return .hungTask }
        let csdMessage = text.dropping(prefix: "smp: ") ?? text
        if csdMessage.hasPrefix("csd: Detected non-responsive CSD lock") || csdMessage.hasPrefix("csd: Continued non-responsive CSD lock") {
            return .csdLockTimeout
        }
        if text.hasPrefix("NMI backtrace for cpu ") { return .nmiBacktrace }

        if text.hasPrefix("Oops: ") || text.hasPrefix("Internal error: Oops") { return .oops }
        // Before "Oops: " was prefixed (v6.10) x86 printed these bare.
        if text.hasPrefix("general protection fault") || text.hasPrefix("invalid opcode: "),
           text.includes("[#") {
            return .oops
        }
        if text.hasPrefix("BUG: ") || text.hasPrefix("kernel BUG at ") { return .bug }
        // arm64's words for "BUG: kernel NULL pointer dereference" / "BUG: unable to handle page fault".
        if text.hasPrefix("Unable to handle kernel ") { return .bug }
        if text.hasPrefix("WARNING: ") { return .warning }
        return nil
    }

    /// The CPU numbers in "{ 1-...D 3-...D P123 }" or "{ 2}"; task entries ("P123") are skipped.
    static func cpusInBraces(_ text: Substring) -> [Int] {
        guard let open = text.firstIndex(of: "{"),
              let close = text[open...].firstIndex(of: "}") else { return [] }
        var cpus: [Int] = []
        for entry in text[text.index(after: open)..<close].split(whereSeparator: { $0 == " " || $0 == "\t" }) {
            guard let cpu = entry.leadingInteger, cpus.count < ConsoleWatcher.maximumCPUsPerList else { continue }
            if !cpus.contains(cpu) { cpus.append(cpu) }
        }
        return cpus
    }
}

// MARK: - Lines inside a report

extension KernelEvent {
    /// The stalled CPU named by a line of an RCU stall report, e.g. "rcu: \t0-...!: (0 ticks
    /// this GP) idle=..." or "\t2-...: (3 GPs behind) ..." or (3.x) "\t0: (1 GPs behind) ...".
    static func stalledCPU(inRCULine text: Substring) -> Int? {
        let message = (text.dropping(prefix: "rcu:") ?? text).trimmingLeadingSpaces()
        let digits = message.prefix(while: \.isASCIIDigit)
        guard !digits.isEmpty, digits.count <= 6 else { return nil }
        let rest = message[digits.endIndex...]
        guard let colon = rest.firstIndex(of: ":") else { return nil }
        let flags = rest[..<colon]
        guard flags.isEmpty || (flags.first == "-" && !flags.includes(" ")) else { return nil }
        guard rest[colon...].hasPrefix(": (") else { return nil }
        return Int(digits)
    }
}

/// "Sending NMI from CPU 1 to CPUs 0:" (or "to CPUs 0-3,5:"): the CPU that asks the others
/// for a backtrace and the CPUs asked.
struct NMIBacktraceRequest {
    var sender: Int
    var targets: [Int]

    init?(_ text: Substring) {
        guard let fromCPU = text.dropping(prefix: "Sending NMI from CPU "),
              let sender = fromCPU.leadingInteger,
              let list = fromCPU.after(" to CPUs ") else { return nil }
        self.sender = sender
        targets = parseCPUList(list.prefix(while: { $0 != ":" }), limit: ConsoleWatcher.maximumCPUsPerList)
    }
}

/// What "CPU: 1 PID: 1 Comm: swapper/0 Not tainted 6.1.0 #1" (or, since 6.10,
/// "CPU: 15 UID: 1000 PID: 72081 Comm: Execution worke Tainted: G O ...") says.
struct CPULine {
    var cpu: Int?
    var pid: Int?
    var command: Substring?

    init?(_ text: Substring) {
        guard let afterCPU = text.dropping(prefix: "CPU: ") else { return nil }
        cpu = afterCPU.leadingInteger
        pid = afterCPU.after(" PID: ")?.leadingInteger
        command = nil
        if let afterComm = afterCPU.after(" Comm: ") {
            // A command name may hold spaces; what follows it is the taint state.
            var end = afterComm.endIndex
            for follower in [" Not tainted", " Tainted:", " Kdump:"] {
                if let found = afterComm.range(of: follower), found.lowerBound < end { end = found.lowerBound }
            }
            if end == afterComm.endIndex { end = afterComm.firstIndex(of: " ") ?? end }
            let name = afterComm[..<end].trimmingSpaces()
            if !name.isEmpty { command = name }
        }
    }
}

/// What sched_show_task() says of a task:
/// "task:rcu_preempt     state:R  running task     stack:0     pid:15    ppid:2      flags:0x00004000".
struct TaskLine {
    var name: Substring
    var pid: Int?

    init?(_ text: Substring) {
        guard let afterTask = text.dropping(prefix: "task:"),
              let state = afterTask.range(of: " state:") else { return nil }
        name = afterTask[..<state.lowerBound].trimmingSpaces()
        guard !name.isEmpty else { return nil }
        pid = afterTask.after(" pid:")?.trimmingLeadingSpaces().leadingInteger
    }
}

/// "<NMI>", "</NMI>", "<IRQ>", "</IRQ>", "<TASK>", "</TASK>", and the old x86 "<EOI>" /
/// "<EOE>" that close an interrupt or exception stack. Old kernels print a frame after
/// the marker on the same line ("<IRQ>  [<ffffffff810c8f0a>] sched_show_task+0xfa/0x160").
struct ContextMarker {
    var name: Substring
    var isOpening: Bool
    /// What follows the marker on the same line.
    var remainder: Substring

    init?(_ text: Substring) {
        guard text.first == "<", let close = text.firstIndex(of: ">") else { return nil }
        var inner = text[text.index(after: text.startIndex)..<close]
        var closing = false
        if inner.first == "/" {
            closing = true
            inner = inner.dropFirst()
        }
        guard let first = inner.first, first == "#" || (first.isASCII && first.isUppercase),
              inner.count <= 12,
              inner.allSatisfy({ $0 == "#" || $0.isASCIIDigit || ($0.isASCII && $0.isUppercase) }) else { return nil }
        if inner == "EOI" || inner == "EOE" { closing = true }
        name = inner
        isOpening = !closing
        remainder = text[text.index(after: close)...].trimmingLeadingSpaces()
    }
}

/// Lines such as "RSP: 0018:ffff... EFLAGS: 00000202", "R13: ...", "CR2: ...", "FS: ...",
/// "PKRU: 55555554", "Code: 7b 08 ..." that sit inside or right after a call trace: an
/// upper-case register name whose value is hexadecimal (so "DMA: preallocated ..." or
/// "ACPI: Added ..." are not register lines).
func isRegisterLine(_ text: Substring) -> Bool {
    guard let colon = text.firstIndex(of: ":") else { return false }
    let name = text[..<colon]
    if name == "Code" { return true }
    guard (2...8).contains(name.count),
          name.allSatisfy({ $0.isASCIIDigit || $0 == "_" || ($0.isASCII && $0.isUppercase) }) else { return false }
    let value = text[text.index(after: colon)...].trimmingLeadingSpaces().prefix(while: { $0 != " " })
    return !value.isEmpty && value.allSatisfy { $0.isHexDigit || $0 == ":" }
}

/// Whether interrupts were enabled, from a register line that holds the flags: x86's
/// "RSP: 0018:ffffc90000003e48 EFLAGS: 00000246" (IF is bit 9) or arm64's
/// "pstate: 60400005 (nZCv daif -PAN -UAO -TCO -DIT -SSBS BTYPE=--)" (the I mask is bit 7).
func interruptsEnabled(inRegisterLine text: Substring) -> Bool? {
    if let value = text.after("EFLAGS: ") {
        guard let flags = parseHexDigits(value.prefix(while: \.isHexDigit)) else { return nil }
        return flags & 0x200 != 0
    }
    if let value = text.dropping(prefix: "pstate: ") {
        guard let state = parseHexDigits(value.prefix(while: \.isHexDigit)) else { return nil }
        return state & 0x80 == 0
    }
    return nil
}

private func parseHexDigits(_ digits: Substring) -> UInt64? {
    (1...16).contains(digits.count) ? UInt64(digits, radix: 16) : nil
}

/// The text after "RIP: " (x86), "IP: " (old x86) or "pc : " (arm64), if `text` is such a line.
func instructionPointerText(_ text: Substring) -> Substring? {
    text.dropping(prefix: "RIP: ") ?? text.dropping(prefix: "IP: ") ?? text.dropping(prefix: "pc : ")
}

// MARK: - Frames

extension KernelFrame {
    /// Parses one call-trace entry: "smp_call_function_many_cond+0x18c/0x778 (P)",
    /// "? nmi_cpu_backtrace+0xde/0x110", "foo+0x10/0x20 [virtio_blk]", or the old
    /// "[<ffffffff8135067c>] ? mutex_lock+0x1a/0x2d". Nil for anything else.
    init?(traceLine text: Substring) {
        var rest = text.trimmingLeadingSpaces()
        var reliable = true
        if rest.hasPrefix("? ") {
            reliable = false
            rest = rest.dropFirst(2).trimmingLeadingSpaces()
        }
        if rest.hasPrefix("[<") {
            guard let addressEnd = rest.range(of: ">]") else { return nil }
            rest = rest[addressEnd.upperBound...].trimmingLeadingSpaces()
            if rest.hasPrefix("? ") {
                reliable = false
                rest = rest.dropFirst(2).trimmingLeadingSpaces()
            }
        }
        let locationEnd = rest.firstIndex(where: { $0 == " " || $0 == "\t" }) ?? rest.endIndex
        let location = rest[..<locationEnd]
        var function: Substring
        var offset: UInt64 = 0, size: UInt64 = 0
        if let (name, parsedOffset, parsedSize) = parseSymbolLocation(location) {
            (function, offset, size) = (name, parsedOffset, parsedSize)
        } else {
            // A decoded frame may name its source line instead of an offset; it must then have one.
            guard let first = location.first, first == "_" || (first.isASCII && first.isLetter),
                  location.count <= 512, location.allSatisfy(\.isSymbolCharacter) else { return nil }
            function = location
        }
        let hasOffset = offset != 0 || size != 0 || location.includes("+")
        rest = rest[locationEnd...].trimmingLeadingSpaces()

        var module: String?
        if rest.first == "[", !rest.hasPrefix("[inline]") {
            // "[virtio_blk]", or with CONFIG_STACKTRACE_BUILD_ID "[virtio_blk 0123abcd...]".
            guard let close = rest.firstIndex(of: "]") else { return nil }
            let name = rest[rest.index(after: rest.startIndex)..<close].prefix(while: { $0 != " " })
            guard !name.isEmpty, name.allSatisfy(\.isSymbolCharacter) else { return nil }
            module = String(name)
            rest = rest[rest.index(after: close)...].trimmingLeadingSpaces()
        }
        // Decoded traces: "kernel/smp.c:886", or decode_stacktrace.sh's "(kernel/smp.c:443 kernel/smp.c:886)".
        var source: String?
        if rest.first == "(", let close = rest.lastIndex(of: ")"),
           rest[rest.index(after: rest.startIndex)..<close].split(separator: " ").first.map(isSourceLocation) == true {
            source = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...].trimmingLeadingSpaces()
        } else {
            let tokenEnd = rest.firstIndex(where: { $0 == " " || $0 == "\t" }) ?? rest.endIndex
            if isSourceLocation(rest[..<tokenEnd]) {
                source = String(rest[..<tokenEnd])
                rest = rest[tokenEnd...].trimmingLeadingSpaces()
            }
        }
        var inlined = false
        if rest.hasPrefix("[inline]") {
            inlined = true
            rest = rest.dropFirst("[inline]".count).trimmingLeadingSpaces()
        }
        // arm64 marks where a frame came from: "(P)" for the pc, "(L)" for the link register.
        if rest.first == "(", rest.last == ")", rest.count <= 5 { rest = "" }
        guard rest.isEmpty, hasOffset || source != nil else { return nil }
        self.init(function: String(function), offset: offset, size: size, module: module, reliable: reliable,
                  source: source, inlined: inlined)
    }

    /// Parses the value of a "RIP: 0010:smp_call_function_many_cond+0xf1/0x330" line (the
    /// text after "RIP: "), also the old "0010:[<ffffffff812c8ca4>]  [<ffffffff812c8ca4>]
    /// intel_idle+0x94/0xe0" and arm64's "pc : cpuidle_idle_call+0xb0/0x1e8". Nil for a
    /// user-mode "0033:0x7f1eb35ceffb", which names no kernel symbol.
    init?(instructionPointer value: Substring) {
        var rest = value.trimmingLeadingSpaces()
        if let colon = rest.firstIndex(of: ":"), rest[..<colon].count == 4,
           rest[..<colon].allSatisfy(\.isHexDigit) {
            rest = rest[rest.index(after: colon)...]
        }
        rest = rest.trimmingLeadingSpaces()
        var skippedAddresses = 0
        while rest.hasPrefix("[<"), skippedAddresses < 2, let addressEnd = rest.range(of: ">]") {
            rest = rest[addressEnd.upperBound...].trimmingLeadingSpaces()
            skippedAddresses += 1
        }
        guard !rest.hasPrefix("? "), let frame = KernelFrame(traceLine: rest) else { return nil }
        self = frame
    }
}

/// "name+0xOFF/0xSIZE" -> (name, OFF, SIZE).
private func parseSymbolLocation(_ token: Substring) -> (Substring, UInt64, UInt64)? {
    guard let plus = token.lastIndex(of: "+") else { return nil }
    let name = token[..<plus]
    guard !name.isEmpty, name.count <= 512, name.allSatisfy(\.isSymbolCharacter) else { return nil }
    let numbers = token[token.index(after: plus)...]
    guard let slash = numbers.firstIndex(of: "/"),
          let offset = parseHex(numbers[..<slash]),
          let size = parseHex(numbers[numbers.index(after: slash)...]) else { return nil }
    return (name, offset, size)
}

/// "kernel/smp.c:886" or "arch/x86/include/asm/irqflags.h:26": a path with a file
/// extension, a colon and a line number. decode_stacktrace.sh may add "(discriminator 1)".
private func isSourceLocation(_ token: Substring) -> Bool {
    guard token.count <= 256, let colon = token.lastIndex(of: ":") else { return false }
    let path = token[..<colon], line = token[token.index(after: colon)...]
    // syzbot prints "irqflags.h:-1" where the compiler left no line.
    let digits = line.hasPrefix("-") ? line.dropFirst() : line
    guard !digits.isEmpty, digits.count <= 7, digits.allSatisfy(\.isASCIIDigit),
          let dot = path.lastIndex(of: "."), path.index(after: dot) < path.endIndex,
          path.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isWholeNumber || "_./-+".contains($0)) }) else { return false }
    return true
}

private func parseHex(_ text: Substring) -> UInt64? {
    guard let digits = text.dropping(prefix: "0x"), (1...16).contains(digits.count),
          digits.allSatisfy(\.isHexDigit) else { return nil }
    return UInt64(digits, radix: 16)
}

/// A kernel cpulist ("0", "0-3", "0,2-3"), expanded, at most `limit` CPUs.
func parseCPUList(_ text: Substring, limit: Int) -> [Int] {
    var cpus: [Int] = []
    for part in text.split(separator: ",") {
        let range = part.trimmingSpaces()
        guard let first = range.leadingInteger else { continue }
        var last = first
        if let dash = range.firstIndex(of: "-"), let end = range[range.index(after: dash)...].leadingInteger {
            last = end
        }
        guard first <= last else { continue }
        var cpu = first
        while cpu <= last, cpus.count < limit {
            cpus.append(cpu)
            cpu += 1
        }
        if cpus.count >= limit { break }
    }
    return cpus
}

// MARK: - Small text helpers

extension Character {
    var isASCIIDigit: Bool { isASCII && isWholeNumber }
    /// Characters of kernel symbol and module names ("__x64_sys_finit_module", "foo.cold", "nf_conntrack").
    var isSymbolCharacter: Bool { isASCII && (isLetter || isWholeNumber || self == "_" || self == "." || self == "$" || self == "-") }
}

extension Substring {
    /// The text after the first occurrence of `marker`.
    func after(_ marker: String) -> Substring? {
        range(of: marker).map { self[$0.upperBound...] }
    }

    func dropping(prefix: String) -> Substring? {
        hasPrefix(prefix) ? dropFirst(prefix.count) : nil
    }

    func trimmingLeadingSpaces() -> Substring {
        drop(while: { $0 == " " || $0 == "\t" })
    }

    func trimmingSpaces() -> Substring {
        var trimmed = trimmingLeadingSpaces()
        while let last = trimmed.last, last == " " || last == "\t" { trimmed = trimmed.dropLast() }
        return trimmed
    }

    /// The decimal number at the start (at most 9 digits, so it always fits an Int).
    var leadingInteger: Int? {
        let digits = prefix(while: \.isASCIIDigit)
        guard !digits.isEmpty, digits.count <= 9 else { return nil }
        return Int(digits)
    }

    /// "kworker/u8:2:123" split at the last `separator`: ("kworker/u8:2", 123).
    func splittingNameAndNumber(at separator: Character) -> (Substring?, Int?) {
        guard let split = lastIndex(of: separator) else { return (isEmpty ? nil : self, nil) }
        let name = self[..<split]
        return (name.isEmpty ? nil : name, self[index(after: split)...].leadingInteger)
    }

    /// Drops "watchdog: " or "NMI watchdog: " (the watchdog's pr_fmt prefix).
    func droppingWatchdogPrefix() -> Substring {
        dropping(prefix: "watchdog: ") ?? dropping(prefix: "NMI watchdog: ") ?? self
    }

    /// "2026-11-24T19:53:54+0000 notice kite: ..." (a host log line, not the guest's).
    var startsWithISODateTime: Bool {
        let head = Array(utf8.prefix(11))
        guard head.count == 11 else { return false }
        let digitPositions = [0, 1, 2, 3, 5, 6, 8, 9]
        return digitPositions.allSatisfy { (0x30...0x39).contains(head[$0]) }
            && head[4] == UInt8(ascii: "-") && head[7] == UInt8(ascii: "-") && head[10] == UInt8(ascii: "T")
    }

    /// Drops a test-harness job prefix such as "vsock2| ".
    func droppingJobPrefix() -> Substring? {
        guard let bar = prefix(33).firstIndex(of: "|"), bar != startIndex else { return nil }
        let name = self[..<bar]
        guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isWholeNumber || "_.-".contains($0)) }) else { return nil }
        let afterBar = self[index(after: bar)...]
        return afterBar.first == " " ? afterBar.dropFirst() : afterBar
    }

    /// Drops a kmsg priority such as "<4>" in front of a time stamp ("<4>[ 12.3] ...").
    func droppingSyslogLevel() -> Substring? {
        guard first == "<", let close = prefix(5).firstIndex(of: ">") else { return nil }
        let level = self[index(after: startIndex)..<close]
        let afterLevel = self[index(after: close)...]
        guard !level.isEmpty, level.allSatisfy(\.isASCIIDigit), afterLevel.first == "[" else { return nil }
        return afterLevel
    }

    /// "[  476.006034] rest" -> (476.006034, " rest"); also "[ 3.1]".
    func splittingPrintkTimestamp() -> (Double, Substring)? {
        guard first == "[", let close = prefix(32).firstIndex(of: "]") else { return nil }
        let stamp = self[index(after: startIndex)..<close].trimmingLeadingSpaces()
        guard let dot = stamp.firstIndex(of: "."),
              !stamp[..<dot].isEmpty, stamp[..<dot].allSatisfy(\.isASCIIDigit),
              !stamp[stamp.index(after: dot)...].isEmpty,
              stamp[stamp.index(after: dot)...].allSatisfy(\.isASCIIDigit),
              let seconds = Double(stamp) else { return nil }
        return (seconds, self[index(after: close)...])
    }

    /// Drops CONFIG_PRINTK_CALLER's "[    T1]" (task) or "[    C0]" (CPU) field.
    func droppingPrintkCaller() -> Substring? {
        guard first == "[", let close = prefix(16).firstIndex(of: "]") else { return nil }
        let caller = self[index(after: startIndex)..<close].trimmingLeadingSpaces()
        guard let kind = caller.first, kind == "T" || kind == "C",
              caller.count > 1, caller.dropFirst().allSatisfy(\.isASCIIDigit) else { return nil }
        return self[index(after: close)...]
    }
}
