// What a kernel log alone says about its hang and crash reports: `kite explain`'s reading.
// Unlike `HangDiagnosis`, which judges live vCPU state, these rules see only what the guest
// printed, so they name a cause only where the log supports one: a CPU that waits for an
// IPI, the CPUs it waits for (from a CSD-lock report or an RCU stall), and what those CPUs'
// NMI backtraces show (idle, waiting themselves, looping with interrupts off, or no answer).

/// One report of a log, with what `kite explain` reads from it.
public struct ExplainedReport: Sendable {
    public var event: KernelEvent
    /// The input line the report started on (1-based).
    public var line: Int
    /// Which boot of the log it belongs to (0 for the first; see `LogExplainer.Located`).
    public var boot: Int
    /// The CPUs the report is about: the stuck CPU of a lockup, the CPUs an RCU stall waits
    /// for, the waiting and the awaited CPU of a CSD-lock report, a crash's CPU.
    public var cpus: [Int]
    /// The CPU that printed the report, where the log says.
    public var reportedBy: Int?
    /// The first frames that are not the reporting machinery (the watchdog's timer interrupt,
    /// dump_stack, the NMI backtrace handler): where the CPU was and how it got there.
    public var keyFrames: [KernelFrame]
    /// The function in which the CPU waits for other CPUs (an IPI or cross-CPU call), if its
    /// trace shows one.
    public var ipiWait: String?
    /// The CPUs it waits for, where the log says (a CSD-lock report's target, an RCU stall's CPUs).
    public var waitsFor: [Int]
    /// CPUs this report sent an NMI to that never printed a backtrace.
    public var unansweredNMI: [Int]
    /// One sentence, where the log supports one.
    public var diagnosis: String?
}

/// Everything `kite explain` found in one log.
public struct LogExplanation: Sendable {
    public var reports: [ExplainedReport]
    /// Reports past `LogExplainer.maximumReports`, counted but not kept.
    public var droppedReports: Int
    /// Lines read.
    public var lines: Int
}

public enum LogDiagnosis {
    /// "Sending NMI from CPU 1 to CPUs 0,2-3:" and the line it was on.
    public struct BacktraceRequest: Sendable {
        public var line: Int
        public var boot: Int
        public var sender: Int
        public var targets: [Int]
    }

    /// Functions that belong to the reporting itself, not to what the CPU was doing: the
    /// stack dumpers, the NMI and IPI backtrace handlers, the watchdog's and RCU's timer
    /// interrupt path, panic and the WARN/BUG trap. Matched exactly, after dropping compiler
    /// suffixes (".constprop.0", ".cold", ".isra.0").
    static let machinery: Set<String> = [
        "dump_stack", "dump_stack_lvl", "__dump_stack", "show_stack", "show_trace_log_lvl", "dump_backtrace",
        "show_regs", "__show_regs", "show_regs_if_kernel", "sched_show_task", "show_state_filter",
        "nmi_cpu_backtrace", "nmi_cpu_backtrace_handler", "nmi_trigger_cpumask_backtrace",
        "arch_trigger_cpumask_backtrace", "trigger_all_cpu_backtrace", "trigger_single_cpu_backtrace",
        "nmi_raise_cpu_backtrace", "ipi_cpu_backtrace", "do_handle_IPI", "ipi_handler",
        "nmi_handle", "default_do_nmi", "exc_nmi", "asm_exc_nmi", "end_repeat_nmi", "repeat_nmi", "first_nmi", "nmi_restore",
        "watchdog_timer_fn", "watchdog_overflow_callback", "__perf_event_overflow", "perf_event_overflow",
        "watchdog_hardlockup_check", "watchdog_buddy_check_hardlockup", "watchdog_check_hardlockup_other_cpu",
        "rcu_dump_cpu_stacks", "print_cpu_stall", "print_other_cpu_stall", "check_cpu_stall", "rcu_pending",
        "rcu_sched_clock_irq", "rcu_check_gp_kthread_starvation", "synchronize_rcu_expedited_wait",
        "update_process_times", "tick_sched_handle", "tick_sched_timer", "tick_nohz_handler", "tick_nohz_highres_handler",
        "__hrtimer_run_queues", "hrtimer_interrupt", "hrtimer_run_queues", "local_apic_timer_interrupt",
        "__sysvec_apic_timer_interrupt", "sysvec_apic_timer_interrupt", "asm_sysvec_apic_timer_interrupt",
        "smp_apic_timer_interrupt", "apic_timer_interrupt",
        "arch_timer_handler_virt", "arch_timer_handler_phys", "handle_percpu_devid_irq", "generic_handle_domain_irq",
        "handle_irq_desc", "gic_handle_irq", "call_on_irq_stack", "do_interrupt_handler", "el1_interrupt",
        "el1h_64_irq_handler", "el1h_64_irq", "__irq_exit_rcu", "irq_exit_rcu",
        "panic", "vpanic", "__warn", "warn_slowpath_fmt", "warn_slowpath_null", "report_bug", "handle_bug",
        "exc_invalid_op", "asm_exc_invalid_op", "do_error_trap", "do_trap", "die", "oops_end", "__die", "__die_body",
        "bug_handler", "call_break_hook", "brk_handler", "do_debug_exception", "el1_dbg", "el1h_64_sync_handler",
        "el1h_64_sync", "arm64_notify_die", "check_panic_on_warn", "hung_task_panic",
        "check_hung_uninterruptible_tasks", "check_hung_task", "watchdog", "csd_lock_print_extended",
        "csd_lock_wait_toolong",
    ]

    /// Where a CPU waits for work when it has none. Matched after dropping compiler suffixes.
    static let idleFunctions: Set<String> = [
        "native_safe_halt", "arch_safe_halt", "pv_native_safe_halt", "default_idle", "default_idle_call",
        "acpi_safe_halt", "acpi_idle_do_entry", "acpi_idle_enter", "intel_idle", "intel_idle_irq", "mwait_idle",
        "mwait_idle_with_hints", "poll_idle", "cpu_idle_poll", "cpuidle_enter_state", "cpuidle_enter", "cpuidle_idle_call",
        "do_idle", "cpu_startup_entry", "cpu_do_idle", "arch_cpu_idle", "psci_enter_idle_state", "amd_e400_idle",
        "cpu_in_idle", "__cpuidle_text_start", "start_secondary", "secondary_start_kernel", "rest_init",
    ]

    /// Scheduler and wait primitives a blocked task sleeps in; a hung task's report names the
    /// first frame past them.
    static let sleepFunctions: [String] = [
        "__schedule", "schedule", "schedule_timeout", "schedule_preempt_disabled", "io_schedule", "io_schedule_timeout",
        "__switch_to", "__switch_to_asm", "context_switch", "__wait_for_common", "wait_for_common", "do_wait_for_common",
        "wait_for_completion", "wait_for_completion_timeout", "wait_for_completion_io", "wait_for_completion_killable",
        "wait_for_completion_interruptible", "wait_for_completion_state", "__mutex_lock", "__mutex_lock_slowpath",
        "mutex_lock", "mutex_lock_nested", "rwsem_down_read_slowpath", "rwsem_down_write_slowpath", "down_read", "down_write",
        "bit_wait", "bit_wait_io", "__wait_on_bit", "__wait_on_bit_lock", "out_of_line_wait_on_bit",
        "folio_wait_bit_common", "wait_on_page_bit_common", "__synchronize_srcu", "synchronize_rcu", "__wait_rcu_gp",
        "synchronize_rcu_expedited", "rcu_barrier", "flush_work", "__flush_work", "__flush_workqueue",
    ]

    /// The function's name without a compiler-made suffix: "csd_lock_wait.constprop.0" -> "csd_lock_wait".
    static func baseName(_ function: String) -> Substring {
        Substring(function).prefix { $0 != "." }
    }

    /// Compiler instrumentation (KCOV, KASAN, KCSAN) a sanitizer build calls everywhere: where
    /// a CPU is, the caller says better.
    static let instrumentationPrefixes = ["__sanitizer_cov_", "__asan_", "__kasan_", "kasan_check_", "__kcsan_", "__tsan_",
                                          "check_memory_region", "__msan_"]

    static func isMachinery(_ frame: KernelFrame) -> Bool {
        machinery.contains(String(baseName(frame.function))) || instrumentationPrefixes.contains { frame.function.hasPrefix($0) }
    }
    static func isIdle(_ frame: KernelFrame) -> Bool { idleFunctions.contains(String(baseName(frame.function))) }

    /// Reads the reports of one log together.
    static func explain(_ located: [LogExplainer.Located], requests: [BacktraceRequest],
                        droppedReports: Int, lines: Int) -> LogExplanation {
        let parsed = located.map { entry -> ExplainedReport in
            let event = entry.event
            return ExplainedReport(event: event, line: entry.line, boot: entry.boot, cpus: cpusAbout(event),
                                   reportedBy: reporter(of: event), keyFrames: keyFrames(of: event),
                                   ipiWait: ipiWait(in: event), waitsFor: [], unansweredNMI: [], diagnosis: nil)
        }
        let all = movingStallStacks(parsed)
        // Reports of one boot are read together; other boots say nothing of them.
        var explained: [ExplainedReport] = []
        for boot in Set(all.map(\.boot)).sorted() {
            var reports = BootReports(all.filter { $0.boot == boot })
            attachRequests(requests.filter { $0.boot == boot }, to: &reports)
            for index in reports.reports.indices {
                reports.reports[index].waitsFor = awaitedCPUs(of: reports.reports[index], among: reports)
            }
            for index in reports.reports.indices {
                reports.reports[index].diagnosis = diagnose(index, among: reports)
            }
            explained += reports.reports
        }
        explained.sort { $0.line < $1.line }
        return LogExplanation(reports: explained, droppedReports: droppedReports, lines: lines)
    }

    // MARK: - One report

    static func cpusAbout(_ e: KernelEvent) -> [Int] {
        switch e.kind {
        case .rcuStall, .rcuExpeditedStall: return e.stalledCPUs
        case .csdLockTimeout: return (e.cpu.map { [$0] } ?? []) + e.stalledCPUs.filter { $0 != e.cpu }
        case .hungTask: return []
        default: return e.cpu.map { [$0] } ?? []
        }
    }

    static func reporter(of e: KernelEvent) -> Int? {
        switch e.kind {
        case .rcuStall, .rcuExpeditedStall, .rcuKthreadStarved: return e.detectedBy
        case .hardLockup: return e.detectedBy ?? e.cpu
        case .nmiBacktrace, .softLockup, .csdLockTimeout, .oops, .bug, .warning, .panic, .hungTask: return e.cpu
        }
    }

    /// Up to three frames past the reporting machinery: the RIP first (unless it is machinery
    /// itself), then the call trace's reliable frames.
    static func keyFrames(of e: KernelEvent, limit: Int = 3) -> [KernelFrame] {
        var frames: [KernelFrame] = []
        if let rip = e.rip, !isMachinery(rip) { frames.append(rip) }
        for frame in e.frames where frame.reliable && !isMachinery(frame) && frames.count < limit {
            if frame.function == frames.last?.function { continue }
            frames.append(frame)
        }
        return frames
    }

    /// The IPI-wait function among the RIP and the first reliable frames past the machinery.
    static func ipiWait(in e: KernelEvent) -> String? {
        if e.kind == .csdLockTimeout { return "csd_lock_wait" }
        var candidates: [KernelFrame] = e.rip.map { [$0] } ?? []
        candidates += e.frames.filter { $0.reliable && !isMachinery($0) }.prefix(6)
        return candidates.first { IPIWait.isWaitFunction($0.function) }?.function
    }

    // MARK: - Reports read together

    /// A self-detected RCU stall prints the GP kthread's starvation report (its own event)
    /// before the stalled CPU's registers and stack, so the watcher gives that stack to the
    /// starvation report. It belongs to the stall: moved back when the stall has no stack of
    /// its own and the starvation report right after it has a RIP (a kthread's sleeping stack has none).
    static func movingStallStacks(_ reports: [ExplainedReport]) -> [ExplainedReport] {
        var reports = reports
        for i in reports.indices.dropLast() {
            let stall = reports[i].event, next = reports[i + 1].event
            guard stall.kind == .rcuStall, stall.headline.includes("self-detected"), stall.rip == nil, stall.frames.isEmpty,
                  next.kind == .rcuKthreadStarved, next.rip != nil, reports[i + 1].line - reports[i].line < 40 else { continue }
            reports[i].event.rip = next.rip
            reports[i].event.frames = next.frames
            reports[i].event.interruptsEnabled = next.interruptsEnabled
            reports[i + 1].event.rip = nil
            reports[i + 1].event.frames = []
            reports[i + 1].event.interruptsEnabled = nil
            for j in [i, i + 1] {
                reports[j].keyFrames = keyFrames(of: reports[j].event)
                reports[j].ipiWait = ipiWait(in: reports[j].event)
            }
        }
        return reports
    }

    /// Gives each "Sending NMI" request to the report it belongs to (the latest that started
    /// before it and is not a backtrace), names the sender as the requester of the backtraces
    /// that answer it, and finds the targets that never answered.
    static func attachRequests(_ requests: [BacktraceRequest], to boot: inout BootReports) {
        // A CPU that detects its own stall prints its own backtrace, without a request.
        var lastOther: ExplainedReport?
        for r in boot.reports.indices {
            let report = boot.reports[r]
            guard report.event.kind == .nmiBacktrace else {
                lastOther = report
                continue
            }
            guard report.event.detectedBy == nil, let previous = lastOther, previous.event.headline.includes("self-detected stall"),
                  previous.event.cpu == report.event.cpu, report.line - previous.line < 50 else { continue }
            boot.reports[r].event.detectedBy = previous.event.cpu
        }
        for (index, request) in requests.enumerated() {
            let nextLine = index + 1 < requests.count ? requests[index + 1].line : Int.max
            var answered: Set<Int> = []
            // The others' backtraces come after the request, up to the next one.
            var k = boot.first(in: boot.backtraces, after: request.line)
            while k < boot.backtraces.count, boot.reports[boot.backtraces[k]].line < nextLine {
                let r = boot.backtraces[k]
                if let cpu = boot.reports[r].event.cpu, cpu != request.sender {
                    answered.insert(cpu)
                    if boot.reports[r].event.detectedBy == nil { boot.reports[r].event.detectedBy = request.sender }
                }
                k += 1
            }
            // The sender's own comes just before its request.
            let own = boot.backtracesOf[request.sender] ?? []
            let before = boot.first(in: own, after: request.line) - 1
            if before >= 0, request.line - boot.reports[own[before]].line < 200 {
                answered.insert(request.sender)
                if boot.reports[own[before]].event.detectedBy == nil { boot.reports[own[before]].event.detectedBy = request.sender }
            }
            let missing = request.targets.filter { !answered.contains($0) && $0 != request.sender }
            guard !missing.isEmpty else { continue }
            let ownerPosition = boot.first(in: boot.others, after: request.line) - 1
            guard ownerPosition >= 0 else { continue }
            let owner = boot.others[ownerPosition]
            // A stall report whose backtrace of its one stalled CPU came without an "NMI
            // backtrace for cpu N" line (a task dump, or a log cut short) was answered.
            if stackOfStalledCPU(boot.reports[owner]) != nil, missing == boot.reports[owner].event.stalledCPUs { continue }
            for cpu in missing where !boot.reports[owner].unansweredNMI.contains(cpu) {
                boot.reports[owner].unansweredNMI.append(cpu)
                boot.unanswered[cpu, default: []].append(boot.reports[owner].line)
            }
        }
    }

    /// The CPUs a waiting report waits for: a CSD-lock report's target, else the CPUs of the
    /// nearest RCU stall (other than the waiter itself).
    static func awaitedCPUs(of report: ExplainedReport, among boot: BootReports) -> [Int] {
        guard report.ipiWait != nil else { return [] }
        let me = report.event.cpu
        if report.event.kind == .csdLockTimeout { return report.event.stalledCPUs.filter { $0 != me } }
        let after = boot.first(in: boot.stalls, after: report.line - 1)
        let candidates = [after - 1, after].filter { boot.stalls.indices.contains($0) }.map { boot.reports[boot.stalls[$0]] }
        guard let nearest = candidates.min(by: { abs($0.line - report.line) < abs($1.line - report.line) }) else { return [] }
        return nearest.event.stalledCPUs.filter { $0 != me }
    }

    /// The reports printed with `r`: those after it (in its boot) up to the next report that
    /// is not an NMI backtrace or a GP-kthread starvation report.
    static func followers(of index: Int, among boot: BootReports) -> ArraySlice<ExplainedReport> {
        let rest = boot.reports[(index + 1)...]
        let end = rest.firstIndex { ![.nmiBacktrace, .rcuKthreadStarved].contains($0.event.kind) } ?? rest.endIndex
        return rest[..<end]
    }

    /// The stalled CPU whose stack an RCU stall report itself holds: a stall with one stalled
    /// CPU, not self-detected, that has frames (printed as a task dump, "Task dump for CPU 1:",
    /// or a backtrace pasted without its "NMI backtrace for cpu 1" line).
    static func stackOfStalledCPU(_ r: ExplainedReport) -> Int? {
        let e = r.event
        guard [.rcuStall, .rcuExpeditedStall].contains(e.kind), e.stalledCPUs.count == 1, !r.keyFrames.isEmpty,
              !e.headline.includes("self-detected"), e.detectedBy != e.stalledCPUs[0] else { return nil }
        return e.stalledCPUs[0]
    }

    /// What the log shows of `cpu` after `line`: its first NMI backtrace after the line, else
    /// its first lockup report after it, else the last of either before it. Nil when the log
    /// shows nothing of it.
    static func evidence(of cpu: Int, after line: Int, among boot: BootReports, onlyBefore: Bool = false) -> ExplainedReport? {
        let backtraces = boot.backtracesOf[cpu] ?? [], lockups = boot.lockupsOf[cpu] ?? []
        func firstAfter(_ list: [Int]) -> ExplainedReport? {
            let k = boot.first(in: list, after: line)
            return k < list.count ? boot.reports[list[k]] : nil
        }
        func lastBefore(_ list: [Int]) -> ExplainedReport? {
            let k = boot.first(in: list, after: line - 1) - 1
            return k >= 0 ? boot.reports[list[k]] : nil
        }
        if onlyBefore { return lastBefore(backtraces) ?? lastBefore(lockups) }
        return firstAfter(backtraces) ?? firstAfter(lockups) ?? lastBefore(backtraces) ?? lastBefore(lockups)
    }

    /// "idle in default_idle", "in smp_call_function_many_cond with interrupts off, itself
    /// waiting for other CPUs", "in foo".
    static func state(of r: ExplainedReport) -> String {
        let e = r.event
        if let idleAt = e.headline.range(of: "skipped: idling at ") {
            let place = e.rip?.function ?? String(e.headline[idleAt.upperBound...])
            return "idle in \(place)"
        }
        guard let top = r.keyFrames.first else { return "somewhere its trace does not show" }
        if isIdle(top) { return "idle in \(top.function)" }
        var text = "in \(top.function)"
        if e.interruptsEnabled == false { text += " with interrupts off" }
        if let wait = r.ipiWait { text += wait == top.function ? ", itself waiting for other CPUs" : ", itself waiting for other CPUs in \(wait)" }
        else if SpinlockWait.isSpinFunction(top.function) { text += ", spinning for a lock" }
        return text
    }

    /// What the log says of one awaited CPU: its NMI backtrace, its lockup report, or that it
    /// never answered an NMI.
    static func account(of cpu: Int, for report: ExplainedReport, among boot: BootReports) -> String {
        let neverAnswered = (boot.unanswered[cpu] ?? []).contains { $0 >= report.line } || report.unansweredNMI.contains(cpu)
        if neverAnswered, evidence(of: cpu, after: report.line, among: boot, onlyBefore: true) == nil {
            return "CPU \(cpu) never answered the NMI sent for its backtrace: it cannot take one (stuck with NMIs blocked, or not running at all)"
        }
        let stacks = boot.stallStacksOf[cpu] ?? []
        let stackPosition = boot.first(in: stacks, after: report.line - 1)
        let stallStack = stackPosition < stacks.count ? boot.reports[stacks[stackPosition]] : nil
        guard let seen = evidence(of: cpu, after: report.line, among: boot) ?? stallStack else {
            return "the log shows nothing of CPU \(cpu)"
        }
        let source = switch seen.event.kind {
        case .nmiBacktrace: "CPU \(cpu)'s NMI backtrace"
        case .rcuStall where seen.event.headline.includes("self-detected"): "CPU \(cpu)'s own stall report (line \(seen.line))"
        case .rcuStall, .rcuExpeditedStall: "the stall report's backtrace of CPU \(cpu)"
        default: "CPU \(cpu)'s own \(seen.event.kind.rawValue) report"
        }
        if seen.keyFrames.isEmpty, !seen.event.headline.includes("skipped: idling at") {
            return seen.event.kind == .nmiBacktrace ? "CPU \(cpu) answered the NMI with no usable trace"
                : "CPU \(cpu) reported a \(seen.event.kind.rawValue) itself, with no trace"
        }
        let state = state(of: seen)
        if state.hasPrefix("idle") {
            if report.ipiWait != nil || report.event.kind == .rcuExpeditedStall {
                return "\(source) shows it \(state): the IPI did not wake it (not delivered, or not taken)"
            }
            return "\(source) shows it \(state), yet holding the grace period up: an interrupt that should "
                + "have woken it was not taken, or its host did not run it"
        }
        if neverAnswered { return "CPU \(cpu) never answered the NMI; earlier, \(source) showed it \(state)" }
        return "\(source) shows it \(state)"
    }

    static func diagnose(_ index: Int, among boot: BootReports) -> String? {
        let r = boot.reports[index]
        let e = r.event
        let place = r.keyFrames.first.map { " in \($0.function)" } ?? ""
        let interrupts = e.interruptsEnabled == false ? " with interrupts off" : ""
        let cpuName = e.cpu.map { "CPU \($0)" } ?? "a CPU"
        let unanswered = r.unansweredNMI.isEmpty ? ""
            : "; \(Wording.cpuList(r.unansweredNMI)) never answered the NMI sent for \(r.unansweredNMI.count == 1 ? "its" : "their") backtrace"

        let waitingKinds: Set<KernelEvent.Kind> = [.softLockup, .hardLockup, .rcuStall, .rcuExpeditedStall, .csdLockTimeout, .nmiBacktrace]
        if let wait = r.ipiWait, waitingKinds.contains(e.kind), e.kind != .nmiBacktrace || r.waitsFor.isEmpty == false {
            var sentence = "\(cpuName) waits in \(wait) for "
            if r.waitsFor.isEmpty {
                sentence += "other CPUs to answer an IPI; the log does not say which"
                // What the backtraces printed with this report show of the other CPUs: those
                // that never answered first, then those not idle, then the idle ones.
                let others = followers(of: index, among: boot)
                let silent = Array(Set(r.unansweredNMI + others.flatMap(\.unansweredNMI))).sorted().filter { $0 != e.cpu }
                var shown = others.filter { $0.event.kind == .nmiBacktrace && $0.event.cpu != e.cpu }
                shown.sort { !state(of: $0).hasPrefix("idle") && state(of: $1).hasPrefix("idle") }
                var accounts: [String] = []
                if !silent.isEmpty {
                    accounts.append("\(Wording.cpuList(silent)) never answered the NMI sent for \(silent.count == 1 ? "its" : "their") backtrace")
                }
                for other in shown.prefix(max(0, 4 - accounts.count)) {
                    if let cpu = other.event.cpu { accounts.append("CPU \(cpu)'s NMI backtrace shows it \(state(of: other))") }
                }
                if shown.count > 4 - min(accounts.count, 1) && shown.count > 3 { accounts.append("…") }
                if !accounts.isEmpty { sentence += "; " + accounts.joined(separator: "; ") }
                return sentence
            } else {
                sentence += Wording.cpuList(r.waitsFor) + "; "
                sentence += r.waitsFor.prefix(4).map { account(of: $0, for: r, among: boot) }.joined(separator: "; ")
            }
            if e.kind == .csdLockTimeout, let seconds = e.stuckSeconds { sentence += " (a cross-CPU call unanswered for \(seconds) s)" }
            return sentence + (r.waitsFor.isEmpty ? unanswered : "")
        }

        switch e.kind {
        case .rcuStall, .rcuExpeditedStall:
            let kind = e.kind == .rcuExpeditedStall ? "An expedited RCU grace period" : "The RCU grace period"
            guard !e.stalledCPUs.isEmpty else {
                return "\(kind) waits for tasks, not CPUs (a task preempted inside an RCU read-side section)" + unanswered
            }
            var sentence = "\(kind) waits for \(Wording.cpuList(e.stalledCPUs))"
            if let jiffies = e.stallJiffies { sentence += " (\(jiffies) jiffies)" }
            sentence += "; " + e.stalledCPUs.prefix(4).map { account(of: $0, for: r, among: boot) }.joined(separator: "; ")
            return sentence
        case .rcuKthreadStarved:
            let task = e.task ?? "the RCU grace-period kthread"
            var sentence = "\(task) has not run"
            if let cpu = e.cpu { sentence += "; it last ran on CPU \(cpu)" + (r.keyFrames.first.map { ", which is in \($0.function)" } ?? "") }
            return sentence + ": a CPU that does not schedule (or is not run by its host) holds up every grace period" + unanswered
        case .softLockup:
            let time = e.stuckSeconds.map { " for \($0) s" } ?? ""
            return "\(cpuName) has run kernel code without scheduling\(time)\(place)\(interrupts)" + unanswered
        case .hardLockup:
            return "\(cpuName) has run with interrupts off for seconds\(place): not even its timer interrupt gets through" + unanswered
        case .hungTask:
            let task = e.task.map { "task \($0)" + (e.pid.map { " (pid \($0))" } ?? "") } ?? "a task"
            let time = e.stuckSeconds.map { " for more than \($0) s" } ?? ""
            let waiting = e.frames.first { frame in
                frame.reliable && !isMachinery(frame) && !sleepFunctions.contains(String(baseName(frame.function)))
            }
            return "\(task) has been blocked\(time)" + (waiting.map { " in \($0.function)" } ?? "")
        case .nmiBacktrace:
            guard let cpu = e.cpu else { return nil }
            let requester = e.detectedBy.map { " (asked by CPU \($0))" } ?? ""
            return "CPU \(cpu) is \(state(of: r))\(requester)"
        case .panic:
            let message = e.headline.range(of: "not syncing: ").map { String(e.headline[$0.upperBound...]) } ?? e.headline
            return "The kernel panicked: \(message)"
        case .oops, .bug:
            return "\(cpuName) crashed\(place)" + (e.kind == .bug ? ": \(e.headline)" : "")
        case .warning:
            return "A WARNING on \(cpuName)\(place)"
        case .csdLockTimeout:
            return nil   // always an IPI wait, handled above
        }
    }
}

/// The reports of one boot, in line order, with the lists `LogDiagnosis` looks things up in,
/// so that reading a log with thousands of reports stays linear-logarithmic, not quadratic.
struct BootReports {
    var reports: [ExplainedReport]
    /// Positions in `reports` (ascending, so in line order): every NMI backtrace; every
    /// other report; each CPU's NMI backtraces; each CPU's lockups and self-detected stalls
    /// with a stack; the RCU stalls that name CPUs; per CPU, the stalls that hold its stack.
    let backtraces: [Int]
    let others: [Int]
    let backtracesOf: [Int: [Int]]
    let lockupsOf: [Int: [Int]]
    let stalls: [Int]
    let stallStacksOf: [Int: [Int]]
    /// Per CPU, the lines of the reports whose NMI it never answered (filled by `attachRequests`).
    var unanswered: [Int: [Int]] = [:]

    init(_ reports: [ExplainedReport]) {
        self.reports = reports
        var backtraces: [Int] = [], others: [Int] = [], stalls: [Int] = []
        var backtracesOf: [Int: [Int]] = [:], lockupsOf: [Int: [Int]] = [:], stallStacksOf: [Int: [Int]] = [:]
        for (i, r) in reports.enumerated() {
            let e = r.event
            if e.kind == .nmiBacktrace {
                backtraces.append(i)
                if let cpu = e.cpu { backtracesOf[cpu, default: []].append(i) }
            } else {
                others.append(i)
            }
            let selfDetectedWithStack = e.kind == .rcuStall && e.headline.includes("self-detected") && !r.keyFrames.isEmpty
            if [.softLockup, .hardLockup].contains(e.kind) || selfDetectedWithStack, let cpu = e.cpu {
                lockupsOf[cpu, default: []].append(i)
            }
            if [.rcuStall, .rcuExpeditedStall].contains(e.kind), !e.stalledCPUs.isEmpty { stalls.append(i) }
            if let cpu = LogDiagnosis.stackOfStalledCPU(r) { stallStacksOf[cpu, default: []].append(i) }
        }
        (self.backtraces, self.others, self.stalls) = (backtraces, others, stalls)
        (self.backtracesOf, self.lockupsOf, self.stallStacksOf) = (backtracesOf, lockupsOf, stallStacksOf)
    }

    /// The first position in `list` (positions in `reports`, ascending) whose report starts
    /// after `line`; `list.count` when none does.
    func first(in list: [Int], after line: Int) -> Int {
        var low = 0, high = list.count
        while low < high {
            let middle = (low + high) / 2
            if reports[list[middle]].line > line { high = middle } else { low = middle + 1 }
        }
        return low
    }
}
