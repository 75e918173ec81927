// The hang diagnosis: from a few snapshots of every vCPU and the guest's own hang reports,
// say which vCPU is stuck, where, and why, in sentences a person can act on.
//
// Where to look:
//   - `Finding.Rule`: every rule Kite knows, with its id, its condition and its sentence.
//   - `HangDiagnosis.findings`: the order the rules run in, and what each may use of another.
//   - `IPIWait.functionPrefixes`: the guest functions that mean "waiting for another CPU".
//   - `VCPUHistory`: what one vCPU did across the samples ("spinning", "halted", ...).

/// What Kite judges a possible hang by.
public struct HangEvidence: Sendable {
    /// Snapshots a few hundred ms apart, oldest first; the last is "now". At least one.
    public var samples: [MachineSnapshot]
    /// Hang reports the guest printed in the window being judged (soft lockups, RCU stalls, ...).
    public var events: [KernelEvent]
    /// A vCPU whose thread has not entered the guest for at least this long is "starved".
    public var starvedAfterSeconds: Double

    public init(samples: [MachineSnapshot], events: [KernelEvent] = [], starvedAfterSeconds: Double = 10) {
        self.samples = samples
        self.events = events
        self.starvedAfterSeconds = starvedAfterSeconds
    }
}

/// One conclusion of the hang diagnosis, about one or more vCPUs.
public struct Finding: Sendable, Equatable {
    /// The rules of the diagnosis. The raw values are stable ids (the JSON report uses them).
    /// Declaration order is report order: root causes, then waiters, then context.
    ///
    /// "Spinning" below means: in every sample the vCPU's thread is in the guest, the vCPU is
    /// runnable at CPL 0, and its RIP stays in one function (without symbols: within 256
    /// bytes). A single sample counts too, as weaker evidence. "Every sample" means every
    /// sample in which the vCPU answered.
    public enum Rule: String, Sendable, CaseIterable {
        // MARK: Root causes: a vCPU that cannot take, or did not get, an interrupt.

        /// The vCPU's thread did not answer the snapshot request (it is stuck in the host).
        /// "vCPU 3 did not answer the snapshot request: its thread has been in the guest for
        /// 41 s without returning to Kite"
        case notAnswering = "vcpu-not-answering"
        /// The vCPU's thread has been out of the guest (handling an exit, or held by
        /// `--inject stall-vcpu`) for at least `starvedAfterSeconds`.
        /// "vCPU 2 is runnable but its thread has not entered the guest for 30 s: Kite starved it"
        case starved = "vcpu-starved"
        /// Halted in every sample with a deliverable vector in its IRR in every sample.
        /// "vCPU 2 is halted with vector 0xfb pending in its IRR: an IPI reached the APIC but
        /// the vCPU was not woken"
        case haltedWithInterruptPending = "halted-with-interrupt-pending"
        /// Runnable in the guest in every sample, with interrupts enabled and a deliverable
        /// vector in its IRR, and no exit between the samples for at least a second: it never
        /// reaches a point where the interrupt can be injected (with Kite's own APIC, the
        /// interrupt window Kite asked for never opens). Seen in the two-CPU testbed, where the
        /// emulated CPU kept a vCPU in a page-fault loop.
        /// "vCPU 0 runs with interrupts enabled and vector 0xfb deliverable, but made no exit
        /// for 44 s and did not take it (at 0xffffffffc04d8dcc, exception 0x0e (page fault)
        /// pending in every sample): ..."
        case interruptNeverTaken = "interrupt-never-taken"
        /// Spinning in an xAPIC send-IPI function (or with the ICR "send pending" in every
        /// sample): the second seed, where KVM's emulator lost the flags of the busy-bit test.
        /// "vCPU 0 polls the xAPIC ICR busy bit in default_send_IPI_allbutself: its IPI
        /// (vector 0xfc, ICR 0x000c08fc) stays 'send pending'"
        case pollingICR = "polling-icr"
        /// Halted with nothing deliverable in every sample, while another vCPU waits for an
        /// IPI and nothing else explains the wait, or while the guest's RCU stall names it.
        /// "vCPU 2 is halted with nothing pending: the IPI never arrived"
        case haltedNothingPending = "halted-nothing-pending"
        /// An NMI pending or being injected in every sample, on a vCPU that is not running
        /// normally (out of the guest, halted, or spinning).
        /// "vCPU 0 has an NMI pending that it has not taken"
        case nmiNotTaken = "nmi-not-taken"

        /// Halted with interrupts disabled in the paravirtual spinlock wait (kvm_wait's
        /// halt), in every sample, while another vCPU spins in the spinlock slow path: only a
        /// KVM_HC_KICK_CPU kick from the lock's releaser, or an NMI, can wake it. Seen in the
        /// nested testbed during SMP bring-up. Only while every vCPU is being run: with one
        /// that is not (starved, not answering), the sleeper waits for it like the spinners.
        /// "vCPU 0 sleeps with interrupts disabled in native_halt, a paravirtual spinlock wait
        /// that only a KVM_HC_KICK_CPU kick or an NMI can end: the kick was lost, or the lock
        /// is never released"
        case sleepingInSpinlockWait = "pv-spinlock-sleeper"

        // MARK: Waiters: a vCPU that waits for another one.

        /// Spinning in a function that waits for other CPUs to answer an IPI (see
        /// `IPIWait.functionPrefixes`), or running kernel code elsewhere (its timer tick, IPIs
        /// it sends from handlers) while its own lockup report places it in one and a
        /// root-cause rule found another vCPU stuck. It waits for the vCPUs the root-cause rules (and
        /// `loopingInterruptsDisabled`) found, else for the CPUs the guest's RCU stall names.
        /// "vCPU 0 spins in smp_call_function_many_cond waiting for CPU 2"
        case waitingForIPI = "waiting-for-ipi"
        /// Spinning in the queued spinlock slow path (see `SpinlockWait`), in every sample,
        /// while another vCPU sleeps in the paravirtual spinlock wait or is not being run (then
        /// that one probably holds the lock).
        /// "vCPU 1 spins in __pv_queued_spin_lock_slowpath waiting for a spinlock, probably held
        /// by CPU 2 (not running) (vCPU 0 sleeps in the paravirtual spinlock wait)"
        case waitingForSpinlock = "waiting-for-spinlock"
        /// Spinning where printk waits for the console's owner to hand it over (see
        /// `ConsoleWait`), while another vCPU is caught writing to the console: that one owns
        /// it. "vCPU 0 spins in vprintk_emit waiting for CPU 2, which owns the console (it is
        /// in io_serial_out, writing to it)"
        case waitingForConsole = "waiting-for-console"

        // MARK: Context: what else the snapshot shows.

        /// Spinning with interrupts disabled (IF=0) outside the IPI-wait functions: it
        /// cannot take an IPI, so a waiter counts it as a CPU it waits for.
        /// "vCPU 1 loops in FUNC with interrupts disabled"
        case loopingInterruptsDisabled = "looping-interrupts-disabled"
        /// The guest reported a hang (any console event but a WARNING), but no rule above
        /// fired. "the guest reported a soft lockup on CPU 1 (stuck for 52 s in
        /// smp_call_function_many_cond), but every vCPU is running now: the host may have
        /// starved the whole VM"
        case guestReportOnly = "guest-report-only"
        /// Every vCPU halted with nothing pending (or never started), and no hang report.
        /// "every vCPU is halted with nothing pending: the guest is idle, not hung"
        case allIdle = "all-idle"
        /// Nothing above fired: the vCPUs run, or sleep, as a healthy guest's do.
        /// "no vCPU looks stuck: 2 running, 1 halted with nothing pending"
        case runningNormally = "running-normally"

        /// How the summary and the report treat a finding.
        public enum Role: Sendable { case rootCause, waiter, context }

        public var role: Role {
            switch self {
            case .notAnswering, .starved, .haltedWithInterruptPending, .interruptNeverTaken, .pollingICR,
                 .haltedNothingPending, .nmiNotTaken, .sleepingInSpinlockWait:
                .rootCause
            case .waitingForIPI, .waitingForSpinlock, .waitingForConsole:
                .waiter
            case .loopingInterruptsDisabled, .guestReportOnly, .allIdle, .runningNormally:
                .context
            }
        }

        /// False for the findings of a guest that is not stuck.
        public var meansHang: Bool { self != .allIdle && self != .runningNormally }
    }

    public var rule: Rule
    /// The vCPUs the finding is about, the main one first (a waiter: the waiting vCPUs,
    /// then the vCPUs they wait for).
    public var vcpus: [Int]
    /// One sentence a person can act on.
    public var sentence: String

    public init(rule: Rule, vcpus: [Int], sentence: String) {
        self.rule = rule
        self.vcpus = vcpus
        self.sentence = sentence
    }
}

/// The guest functions in which a CPU spins waiting for other CPUs to answer an IPI (or to
/// reach a rendezvous). Matched as prefixes, so compiler clones such as
/// "csd_lock_wait.constprop.0" match too.
public enum IPIWait {
    public static let functionPrefixes: [String] = [
        // smp_call_function*(): cross-CPU function calls and their CSD lock.
        "smp_call_function", "csd_lock_wait", "__csd_lock_wait", "generic_exec_single",
        "on_each_cpu", "kick_all_cpus_sync",
        // TLB shootdowns.
        "native_flush_tlb_multi", "native_flush_tlb_others", "kvm_flush_tlb_multi",
        "flush_tlb_mm_range", "flush_tlb_kernel_range", "flush_tlb_others", "flush_tlb_multi", "flush_tlb_all",
        // stop_machine(): every CPU spins in multi_cpu_stop until all have arrived.
        "multi_cpu_stop", "stop_machine", "cpu_stopper", "stop_one_cpu", "stop_two_cpus",
        // Reboot and power-off, and live code patching.
        "native_stop_other_cpus", "smp_send_stop", "text_poke_bp_batch", "text_poke_sync",
    ]

    /// Whether a guest function waits for other CPUs.
    public static func isWaitFunction(_ name: String) -> Bool {
        functionPrefixes.contains { name.hasPrefix($0) }
    }

    /// Whether a guest function sends an IPI through the xAPIC ICR, polling its busy bit.
    public static func isICRPollFunction(_ name: String) -> Bool {
        name.includes("send_IPI") || name.includes("wait_icr_idle")
    }
}

/// The guest functions of Linux's paravirtual queued spinlocks: where a CPU spins for a
/// contended lock, and where a waiter halts (interrupts off) until the releaser kicks it
/// with KVM_HC_KICK_CPU. An offline CPU also halts in native_halt with interrupts off, so a
/// halted vCPU counts as a spinlock sleeper only while another vCPU spins for a lock.
public enum SpinlockWait {
    public static let spinFunctionParts = ["queued_spin_lock_slowpath", "pv_wait_head", "pv_wait_node"]
    public static let haltFunctions = ["kvm_wait", "native_halt", "pv_wait", "halt"]

    public static func isSpinFunction(_ name: String) -> Bool { spinFunctionParts.contains { name.contains($0) } }
    public static func isHaltFunction(_ name: String) -> Bool { haltFunctions.contains { name.hasPrefix($0) } }
}

/// Where Linux's printk waits for the console: a CPU that wants to print while another
/// prints spins (interrupts off) until the printing CPU hands the console over
/// (console_trylock_spinning, inlined into vprintk_emit in 6.1); and the functions a CPU
/// runs while it owns the console and writes to it.
public enum ConsoleWait {
    public static let spinFunctions = ["vprintk_emit", "console_trylock_spinning", "console_lock_spinning"]
    public static let outputFunctionParts = ["serial_out", "serial_in", "serial8250_console", "wait_for_xmitr",
                                             "uart_console_write", "console_emit_next_record", "call_console_driver",
                                             "hvc_console_print", "console_flush_all", "console_unlock"]

    public static func isSpinFunction(_ name: String) -> Bool { spinFunctions.contains { name.hasPrefix($0) } }
    public static func isOutputFunction(_ name: String) -> Bool { outputFunctionParts.contains { name.contains($0) } }
}

public enum HangDiagnosis {
    /// Runs every rule over the evidence. Root causes come first, then the waiters, then
    /// context; never empty for at least one sample (a healthy guest gets `allIdle` or
    /// `runningNormally`).
    public static func findings(_ evidence: HangEvidence) -> [Finding] {
        guard let now = evidence.samples.last else { return [] }
        var histories = now.vcpus.map { VCPUHistory(id: $0.id, samples: evidence.samples, events: evidence.events) }
        // A stall report's NMI request can be in the guest's buffer but not yet on its console
        // (the report is still being printed when the samples are taken): then the NMIs that
        // Kite sees pending name the CPUs the reporter's delay loop waits for.
        let untakenNMIs = histories.filter(\.hasUntakenNMI).map(\.id)
        for i in histories.indices where histories[i].nmiWaitTargets.isEmpty && histories[i].reportedAStall {
            histories[i].nmiWaitTargets = untakenNMIs.filter { $0 != histories[i].id }
        }
        let hangEvents = evidence.events.filter { $0.kind != .warning }
        let consoleStalled = Set(evidence.events.filter { $0.kind == .rcuStall || $0.kind == .rcuExpeditedStall }
            .flatMap(\.stalledCPUs))

        // Each vCPU gets at most one state finding; the first rule that matches wins.
        var notAnswering: [VCPUHistory] = [], starved: [VCPUHistory] = [], haltedPending: [VCPUHistory] = []
        var icrPollers: [VCPUHistory] = [], waiters: [VCPUHistory] = [], loopers: [VCPUHistory] = []
        var neverTaking: [VCPUHistory] = []
        // Running kernel code in several places, while its own lockup report says it waits
        // for an IPI: a waiter only if some other vCPU is found stuck (otherwise the whole
        // VM may have been starved, and it has moved on: `guestReportOnly`).
        var waitersPerConsoleOnly: [VCPUHistory] = []
        var haltedIdle: [VCPUHistory] = []
        // A spinlock waiter asleep in the PV wait, and the vCPUs spinning for a lock meanwhile
        // (without a sleeper, a lock spinner is judged by the other rules).
        let spinsForALock = { (h: VCPUHistory) in h.isSpinning && (h.function.map(SpinlockWait.isSpinFunction) ?? false) }
        let someoneSpinsForALock = histories.contains(where: spinsForALock)
        let lockSleepers = histories.filter { h in
            someoneSpinsForALock && h.latest.answered && !h.isOutOfGuest(forAtLeast: evidence.starvedAfterSeconds)
                && h.isHaltedThroughout && h.interruptsDisabledThroughout
                && (h.function.map(SpinlockWait.isHaltFunction) ?? false)
        }
        // vCPUs that are not being run (their thread does not answer, or stays out of the
        // guest): a spinlock that others wait for is most likely held by one of them.
        let notRun = histories.filter { !$0.latest.answered || $0.isOutOfGuest(forAtLeast: evidence.starvedAfterSeconds) }
        var lockSpinners: [VCPUHistory] = []
        // printk waiting for the console, with the vCPU caught writing to it (its owner).
        var consoleWaiters: [(waiter: VCPUHistory, owner: VCPUHistory)] = []
        let consoleOwner = { (h: VCPUHistory) in
            histories.first { $0.id != h.id && ($0.latest.ripFunction.map(ConsoleWait.isOutputFunction) ?? false) }
        }
        for h in histories {
            if !h.latest.answered { notAnswering.append(h) }
            else if h.isOutOfGuest(forAtLeast: evidence.starvedAfterSeconds) { starved.append(h) }
            else if lockSleepers.contains(where: { $0.id == h.id }) { continue }
            else if !lockSleepers.isEmpty || !notRun.isEmpty, spinsForALock(h) { lockSpinners.append(h) }
            else if h.isHaltedThroughout, h.pendingVectorThroughout != nil, !h.exitedBetweenSamples,
                    !h.enteredTheGuestBetweenSamples { haltedPending.append(h) }
            else if h.untakenInterruptWhileRunning != nil { neverTaking.append(h) }
            else if h.isSpinning, h.isPollingICR { icrPollers.append(h) }
            else if h.isSpinning, let f = h.function, IPIWait.isWaitFunction(f) { waiters.append(h) }
            else if h.isSpinning, h.waitsPerConsole { waiters.append(h) }
            else if h.isSpinning, h.function.map(ConsoleWait.isSpinFunction) ?? false, let owner = consoleOwner(h) {
                consoleWaiters.append((h, owner))
            }
            else if h.runsKernelCodeThroughout, !h.functionFromConsole, h.consoleWaitFunction != nil {
                waitersPerConsoleOnly.append(h)
            }
            else if h.isSpinning, h.interruptsDisabledThroughout { loopers.append(h) }
            else if h.isHaltedThroughout, h.nothingPendingThroughout { haltedIdle.append(h) }
        }

        // Who the waiters wait for: a vCPU found stuck, else one that loops with interrupts
        // off, else a halted one that the IPI never reached.
        // Strong suspects first: a vCPU Kite did not run, one that did not wake for a pending
        // interrupt it could take, or one stuck sending. Only without those, the weak ones:
        // a vCPU that loops or halts with interrupts off (an offline CPU parks halted with
        // IF=0, and CPUs in a stop_machine() rendezvous loop with IF=0, while they wait too).
        let haltedWithIF = haltedPending.filter { !$0.interruptsDisabledThroughout }
        let haltedWithoutIF = haltedPending.filter { $0.interruptsDisabledThroughout }
        // A sleeper in the paravirtual spinlock wait is a root cause (a lost kick) only while
        // every vCPU runs; otherwise it waits, like the lock's spinners, for a vCPU not run.
        let sleepersAreRootCauses = notRun.isEmpty
        var suspects = Set((notAnswering + starved + haltedWithIF + neverTaking + icrPollers
                            + (sleepersAreRootCauses ? lockSleepers : [])).map(\.id))
        if !suspects.isEmpty { waiters += waitersPerConsoleOnly }
        if suspects.isEmpty { suspects = Set((loopers + haltedWithoutIF).map(\.id)) }
        var neverWoken = haltedIdle.filter { consoleStalled.contains($0.id) }
        if neverWoken.isEmpty, !waiters.isEmpty, suspects.isEmpty { neverWoken = haltedIdle }
        suspects.formUnion(neverWoken.map(\.id))

        var findings: [Finding] = []
        findings += notAnswering.map(notAnsweringFinding)
        findings += starved.map { starvedFinding($0) }
        findings += haltedPending.map(haltedWithInterruptPendingFinding)
        findings += neverTaking.map(interruptNeverTakenFinding)
        findings += icrPollers.map(pollingICRFinding)
        if !neverWoken.isEmpty { findings.append(haltedNothingPendingFinding(neverWoken.map(\.id))) }
        let stuckElsewhere = Set((notAnswering + starved).map(\.id))
        findings += histories.filter { !stuckElsewhere.contains($0.id) && $0.hasUntakenNMI }.map(nmiNotTakenFinding)
        if sleepersAreRootCauses { findings += lockSleepers.map(sleepingInSpinlockWaitFinding) }
        findings += waitingForIPIFindings(waiters, suspects: suspects, consoleStalled: consoleStalled)
        findings += lockSpinners.map {
            waitingForSpinlockFinding($0, sleepers: lockSleepers.map(\.id), likelyHolders: notRun.map(\.id))
        }
        findings += consoleWaiters.map { waitingForConsoleFinding($0.waiter, owner: $0.owner) }
        findings += loopers.map(loopingFinding)

        if findings.isEmpty, let event = mostImportant(hangEvents) {
            findings.append(guestReportOnlyFinding(event, histories: histories))
        }
        if findings.isEmpty {
            let idle = histories.allSatisfy { $0.isIdle }
            if idle, histories.contains(where: \.isHaltedThroughout) {
                findings.append(allIdleFinding(histories))
            } else {
                findings.append(runningNormallyFinding(histories))
            }
        }
        let order = Finding.Rule.allCases
        return findings.enumerated().sorted { a, b in
            let (ra, rb) = (order.firstIndex(of: a.element.rule)!, order.firstIndex(of: b.element.rule)!)
            return ra != rb ? ra < rb : a.offset < b.offset
        }.map(\.element)
    }

    /// One line: the findings that matter, joined with "; ". Each waiter comes first with
    /// the vCPUs it waits for right after it, then any other root causes; context findings
    /// only when there is nothing else (or when a waiter waits for them).
    public static func summary(_ findings: [Finding]) -> String {
        summarized(findings).map(\.sentence).joined(separator: "; ")
    }

    /// The findings `summary` names, in its order.
    static func summarized(_ findings: [Finding]) -> [Finding] {
        var chosen: [Int] = []
        func take(_ i: Int) { if !chosen.contains(i) { chosen.append(i) } }
        for (i, waiter) in findings.enumerated() where waiter.rule.role == .waiter {
            take(i)
            // The findings about the vCPUs it waits for, in the order the waiter names them
            // (a finding about the waiter itself last).
            func place(_ f: Finding) -> Int? {
                guard let main = f.vcpus.first, let at = waiter.vcpus.firstIndex(of: main) else { return nil }
                return at == 0 ? waiter.vcpus.count : at
            }
            let related = findings.indices.filter { findings[$0].rule.role != .waiter && place(findings[$0]) != nil }
            for j in related.sorted(by: { place(findings[$0])! < place(findings[$1])! }) { take(j) }
        }
        for (i, f) in findings.enumerated() where f.rule.role == .rootCause { take(i) }
        if chosen.isEmpty { chosen = Array(findings.indices) }
        return chosen.map { findings[$0] }
    }

    /// True when the findings show a stuck guest: anything but "all idle" or "running
    /// normally". A console report alone (`guestReportOnly`) counts as a hang: the hang
    /// watchdog passes only the reports printed since the guest last made progress.
    public static func isHang(_ findings: [Finding]) -> Bool {
        findings.contains { $0.rule.meansHang }
    }

    // MARK: - The sentences, one function per rule

    static func notAnsweringFinding(_ h: VCPUHistory) -> Finding {
        let v = h.latest
        let since = Wording.seconds(v.secondsSinceEntry)
        let whereabouts = switch v.thread {
        case .inGuest: "its thread has been in the guest for \(since) without returning to Kite"
        case .handlingExit: "its thread has not entered the guest for \(since): it is stuck handling an exit in Kite"
        case .stalledByInjection: "its thread is held out of the guest by --inject stall-vcpu (for \(since))"
        case .paused: "its thread is paused (PATCH /vm) and did not answer"
        case .waitingInKite: "its thread has been waiting in Kite for \(since) and did not wake for the request"
        case .stopped: "its thread has stopped"
        }
        return Finding(rule: .notAnswering, vcpus: [h.id],
                       sentence: "vCPU \(h.id) did not answer the snapshot request: \(whereabouts)")
    }

    static func starvedFinding(_ h: VCPUHistory) -> Finding {
        let v = h.latest
        let subject: String
        if let vector = v.apic?.deliverableVector {
            subject = "vCPU \(h.id) has vector \(Wording.hex(vector)) pending but"
        } else {
            subject = "vCPU \(h.id) is \(v.mpState.map { $0 == .halted ? "halted" : $0.rawValue } ?? "runnable") but"
        }
        var sentence = "\(subject) its thread has not entered the guest for \(Wording.seconds(v.secondsSinceEntry)): Kite starved it"
        if v.thread == .stalledByInjection { sentence += " (held by --inject stall-vcpu)" }
        return Finding(rule: .starved, vcpus: [h.id], sentence: sentence)
    }

    static func haltedWithInterruptPendingFinding(_ h: VCPUHistory) -> Finding {
        let vector = Wording.hex(h.pendingVectorThroughout ?? 0)
        let sentence = h.interruptsDisabledThroughout
            ? "vCPU \(h.id) is halted with interrupts disabled and vector \(vector) pending in its IRR: "
                + "it cannot take the interrupt (an offline CPU parks this way; an online one waits for an NMI or a PV kick)"
            : "vCPU \(h.id) is halted with vector \(vector) pending in its IRR: "
                + (h.pendingVectorIsItsTimer ? "its local APIC timer fired but the vCPU was not woken"
                                             : "an IPI reached the APIC but the vCPU was not woken")
        return Finding(rule: .haltedWithInterruptPending, vcpus: [h.id], sentence: sentence)
    }

    static func interruptNeverTakenFinding(_ h: VCPUHistory) -> Finding {
        let v = h.latest
        let place = h.function.map { "in \(h.describeFunction($0))" } ?? "at \(Wording.hex(v.registers?.rip ?? 0))"
        var evidence = place
        let exceptions = h.answered.map { $0.events?.exception }
        if let vector = exceptions.last ?? nil, exceptions.allSatisfy({ $0 == vector }) {
            evidence += ", exception \(Wording.hex(vector))\(Wording.exceptionName(vector).map { " (\($0))" } ?? "") "
                + "pending in every sample"
        }
        let sentence = "vCPU \(h.id) runs with interrupts enabled and vector \(Wording.hex(h.untakenInterruptWhileRunning ?? 0)) "
            + "deliverable, but made no exit for \(Wording.seconds(v.secondsSinceExit)) and did not take it (\(evidence)): "
            + "it never reaches a point where an interrupt can be injected, as in a fault that repeats forever"
        return Finding(rule: .interruptNeverTaken, vcpus: [h.id], sentence: sentence)
    }

    static func pollingICRFinding(_ h: VCPUHistory) -> Finding {
        let place = h.function.map { " in \(h.describeFunction($0))" } ?? " at \(Wording.hex(h.latest.registers?.rip ?? 0))"
        let sentence: String
        if let apic = h.latest.apic {
            let ipi = "(vector \(Wording.hex(apic.icrVector)), ICR \(Wording.hex(apic.icr, digits: apic.icr >> 32 == 0 ? 8 : 16)))"
            sentence = apic.icrSendPending
                ? "vCPU \(h.id) polls the xAPIC ICR busy bit\(place): its IPI \(ipi) stays 'send pending'"
                : "vCPU \(h.id) polls the xAPIC ICR busy bit\(place), but its APIC shows the last IPI \(ipi) "
                    + "as sent: the guest misreads the busy bit (suspect the host's emulation of that read)"
        } else {
            sentence = "vCPU \(h.id) polls the xAPIC ICR busy bit\(place)"
        }
        return Finding(rule: .pollingICR, vcpus: [h.id], sentence: sentence)
    }

    static func haltedNothingPendingFinding(_ ids: [Int]) -> Finding {
        Finding(rule: .haltedNothingPending, vcpus: ids,
                sentence: "\(Wording.vcpuList(ids)) \(ids.count == 1 ? "is" : "are") halted with nothing pending: the IPI never arrived")
    }

    static func nmiNotTakenFinding(_ h: VCPUHistory) -> Finding {
        var sentence = "vCPU \(h.id) has an NMI pending that it has not taken"
        if h.latest.events?.nmiMasked == true { sentence += " (NMIs are blocked: it is still inside an NMI handler)" }
        return Finding(rule: .nmiNotTaken, vcpus: [h.id], sentence: sentence)
    }

    /// One finding per group of waiters spinning in the same function for the same CPUs.
    static func waitingForIPIFindings(_ waiters: [VCPUHistory], suspects: Set<Int>, consoleStalled: Set<Int>) -> [Finding] {
        var groups: [(waiters: [VCPUHistory], function: String, targets: [Int], phrase: String)] = []
        for w in waiters {
            var function = w.describeFunction(w.function ?? "?")
            if let f = w.function, !IPIWait.isWaitFunction(f) {
                // Caught elsewhere (e.g. the delay loop of the guest's own stall report).
                if let wait = w.consoleWaitFunction {
                    function = Wording.terminalSafe(wait, limit: 80) + " (per the guest's lockup report; now in "
                        + w.describeFunction(f) + ")"
                } else {
                    function = w.describeFunction(f) + " (the guest's stall report sent an NMI for a backtrace)"
                }
            }
            var targets = suspects.subtracting([w.id]).sorted()
            var phrase: String
            if targets.isEmpty, w.consoleWaitFunction == nil, !w.nmiWaitTargets.isEmpty {
                targets = w.nmiWaitTargets.sorted()
            }
            if !targets.isEmpty {
                phrase = "waiting for \(Wording.cpuList(targets))"
            } else {
                targets = consoleStalled.subtracting([w.id]).sorted()
                phrase = targets.isEmpty ? "waiting for another CPU (Kite cannot tell which)"
                    : "waiting for \(Wording.cpuList(targets)) (named by the guest's RCU stall report)"
            }
            if let g = groups.firstIndex(where: { $0.function == function && $0.targets == targets && $0.phrase == phrase }) {
                groups[g].waiters.append(w)
            } else {
                groups.append(([w], function, targets, phrase))
            }
        }
        return groups.map { g in
            let ids = g.waiters.map(\.id)
            let verb = ids.count == 1 ? "spins" : "spin"
            return Finding(rule: .waitingForIPI, vcpus: ids + g.targets,
                           sentence: "\(Wording.vcpuList(ids)) \(verb) in \(g.function) \(g.phrase)")
        }
    }

    static func sleepingInSpinlockWaitFinding(_ h: VCPUHistory) -> Finding {
        let place = h.function.map { h.describeFunction($0) } ?? "the halt"
        return Finding(rule: .sleepingInSpinlockWait, vcpus: [h.id],
                       sentence: "vCPU \(h.id) sleeps with interrupts disabled in \(place), a paravirtual spinlock wait "
                           + "that only a KVM_HC_KICK_CPU kick or an NMI can end: the kick was lost, or the lock is never released")
    }

    /// `likelyHolders`: vCPUs that are not being run, one of which probably holds the lock
    /// (the snapshot cannot say which CPU holds a queued spinlock).
    static func waitingForSpinlockFinding(_ h: VCPUHistory, sleepers: [Int], likelyHolders: [Int] = []) -> Finding {
        let others = sleepers.filter { $0 != h.id }
        let holders = likelyHolders.filter { $0 != h.id }
        let held = holders.isEmpty ? "" : ", probably held by \(Wording.cpuList(holders)) (not running)"
        let note = others.isEmpty ? ""
            : " (\(Wording.vcpuList(others)) \(others.count == 1 ? "sleeps" : "sleep") in the paravirtual spinlock wait)"
        return Finding(rule: .waitingForSpinlock, vcpus: [h.id] + holders + others,
                       sentence: "vCPU \(h.id) spins in \(h.describeFunction(h.function ?? "?")) waiting for a spinlock\(held)\(note)")
    }

    static func waitingForConsoleFinding(_ h: VCPUHistory, owner: VCPUHistory) -> Finding {
        let place = owner.latest.ripFunction.map { Wording.terminalSafe($0, limit: 80) } ?? "?"
        return Finding(rule: .waitingForConsole, vcpus: [h.id, owner.id],
                       sentence: "vCPU \(h.id) spins in \(h.describeFunction(h.function ?? "?")) waiting for CPU \(owner.id), "
                           + "which owns the console (it is in \(place), writing to it)")
    }

    static func loopingFinding(_ h: VCPUHistory) -> Finding {
        let place = h.function.map { "in \(h.describeFunction($0))" } ?? "at \(Wording.hex(h.latest.registers?.rip ?? 0))"
        return Finding(rule: .loopingInterruptsDisabled, vcpus: [h.id],
                       sentence: "vCPU \(h.id) loops \(place) with interrupts disabled")
    }

    static func guestReportOnlyFinding(_ event: KernelEvent, histories: [VCPUHistory]) -> Finding {
        let running = histories.allSatisfy { $0.latest.thread.isWhereTheGuestPutIt && $0.latest.mpState == .runnable }
        let now = running ? "every vCPU is running now" : "no vCPU is stuck now"
        var about = event.cpu.map { [$0] } ?? event.stalledCPUs
        if about.isEmpty { about = event.detectedBy.map { [$0] } ?? [] }
        return Finding(rule: .guestReportOnly, vcpus: about,
                       sentence: "the guest reported \(describe(event)), but \(now): the host may have starved the whole VM")
    }

    static func allIdleFinding(_ histories: [VCPUHistory]) -> Finding {
        let unstarted = histories.filter { !$0.isHaltedThroughout }.map(\.id)
        let note = unstarted.isEmpty ? "" : " (\(Wording.vcpuList(unstarted)) never started)"
        return Finding(rule: .allIdle, vcpus: histories.map(\.id),
                       sentence: "every vCPU is halted with nothing pending\(note): the guest is idle, not hung")
    }

    static func runningNormallyFinding(_ histories: [VCPUHistory]) -> Finding {
        var counts: [(what: String, count: Int)] = []
        for h in histories {
            let v = h.latest
            let what = if !v.thread.isWhereTheGuestPutIt {
                "out of the guest"
            } else {
                switch v.mpState {
                case .runnable: "running"
                case .halted: "halted"
                case .waitingForSIPI: "not started"
                case .initReceived, .sipiReceived: "starting"
                case nil: "unknown"
                }
            }
            if let i = counts.firstIndex(where: { $0.what == what }) { counts[i].count += 1 } else { counts.append((what, 1)) }
        }
        return Finding(rule: .runningNormally, vcpus: histories.map(\.id),
                       sentence: "no vCPU looks stuck: " + counts.map { "\($0.count) \($0.what)" }.joined(separator: ", "))
    }

    // MARK: - Console reports

    /// The report that says most about a hang: a crash, then a lockup, then a stall; the
    /// latest among equals.
    static func mostImportant(_ events: [KernelEvent]) -> KernelEvent? {
        let severity: [KernelEvent.Kind] = [.panic, .oops, .bug, .hardLockup, .softLockup, .rcuStall,
                                            .rcuExpeditedStall, .rcuKthreadStarved, .hungTask, .nmiBacktrace, .warning]
        func rank(_ e: KernelEvent) -> Int { severity.firstIndex(of: e.kind) ?? severity.count }
        return events.enumerated().min { a, b in
            rank(a.element) != rank(b.element) ? rank(a.element) < rank(b.element) : a.offset > b.offset
        }?.element
    }

    /// "a soft lockup on CPU 1 (stuck for 52 s in smp_call_function_many_cond)".
    public static func describe(_ e: KernelEvent) -> String {
        let name = e.kind.rawValue
        var s = (["a", "e", "i", "o", "u", "R", "N"].contains { name.hasPrefix($0) } ? "an " : "a ") + name
        if !e.stalledCPUs.isEmpty {
            s += " on \(Wording.cpuList(e.stalledCPUs))"   // an RCU stall's "CPU: N" line is the reporter's
        } else if let cpu = e.cpu {
            s += " on CPU \(cpu)"
        }
        var details: [String] = []
        if e.kind == .hungTask, let task = e.task {
            details.append("task \(Wording.terminalSafe(task, limit: 40))" + (e.pid.map { " pid \($0)" } ?? ""))
        }
        var stuck = e.stuckSeconds.map { "stuck for \($0) s" } ?? ""
        let ripIsTheirs: Set<KernelEvent.Kind> = [.softLockup, .hardLockup, .nmiBacktrace, .hungTask, .panic, .oops, .bug]
        if ripIsTheirs.contains(e.kind), let frame = e.topFrame {
            stuck += (stuck.isEmpty ? "in " : " in ") + Wording.terminalSafe(frame.function, limit: 80)
        }
        if !stuck.isEmpty { details.append(stuck) }
        if let by = e.detectedBy, e.kind != .nmiBacktrace { details.append("detected by CPU \(by)") }
        return details.isEmpty ? s : s + " (" + details.joined(separator: ", ") + ")"
    }
}

// MARK: - One vCPU across the samples

/// What one vCPU did across the samples: the facts the rules ask about.
struct VCPUHistory {
    let id: Int
    /// The last sample ("now").
    let latest: VCPUSnapshot
    /// The samples in which the vCPU's thread answered, oldest first (never empty when
    /// `latest.answered`).
    let answered: [VCPUSnapshot]
    /// The function its RIP is in: from the symbols, else from the guest's last report
    /// that shows its CPU's RIP (soft or hard lockup, NMI backtrace, RCU kthread starved).
    let function: String?
    /// `function` came from the console, not from Kite's own symbols.
    let functionFromConsole: Bool
    /// The IPI-wait function the guest's latest lockup / NMI backtrace report for this CPU
    /// shows it in (its RIP or a reliable frame), when the samples catch it elsewhere, e.g.
    /// in the delay loop of that very report.
    let consoleWaitFunction: String?
    /// The CPUs this CPU sent an NMI to for a backtrace (an RCU stall or lockup report), in
    /// the guest's latest such report: the report's delay loop waits up to 10 s for them.
    /// When the console shows no NMI request, `findings` fills this with the vCPUs that hold
    /// an NMI they have not taken, for a vCPU that `reportedAStall`.
    var nmiWaitTargets: [Int]
    /// The guest's latest RCU stall report that names its reporter was detected by this CPU.
    let reportedAStall: Bool

    init(id: Int, samples: [MachineSnapshot], events: [KernelEvent]) {
        self.id = id
        let mine = samples.compactMap { s in s.vcpus.first { $0.id == id } }
        latest = mine.last!
        answered = latest.answered ? mine.filter(\.answered) : []
        if let f = latest.ripFunction {
            function = f
            functionFromConsole = false
        } else {
            // Reports whose RIP is that CPU's own ("rcu_preempt kthread starved ... ->cpu=N"
            // carries the stack dump of CPU N).
            let ripKinds: Set<KernelEvent.Kind> = [.softLockup, .hardLockup, .nmiBacktrace, .rcuKthreadStarved]
            function = events.last { $0.cpu == id && ripKinds.contains($0.kind) && $0.rip != nil }?.rip?.function
            functionFromConsole = function != nil
        }
        let aboutMe = events.last { e in
            e.cpu == id && [.softLockup, .hardLockup, .nmiBacktrace, .rcuKthreadStarved].contains(e.kind)
        }
        let frames = aboutMe.map { e in (e.rip.map { [$0] } ?? []) + e.frames.filter(\.reliable) } ?? []
        consoleWaitFunction = frames.first { IPIWait.isWaitFunction($0.function) }?.function
        nmiWaitTargets = events.last { $0.detectedBy == id && !$0.nmiTargets.isEmpty }?.nmiTargets.filter { $0 != id } ?? []
        let stallKinds: Set<KernelEvent.Kind> = [.rcuStall, .rcuExpeditedStall, .rcuKthreadStarved]
        reportedAStall = events.last { stallKinds.contains($0.kind) && $0.detectedBy != nil }?.detectedBy == id
    }

    /// Spinning somewhere else while the guest's own reports say it waits for other CPUs.
    /// (Only when Kite's own symbols placed the vCPU: a function read from the same report
    /// says nothing new.)
    var waitsPerConsole: Bool { !functionFromConsole && (consoleWaitFunction != nil || !nmiWaitTargets.isEmpty) }

    /// The function's name for a sentence (guest text made safe for a terminal).
    func describeFunction(_ name: String) -> String {
        Wording.terminalSafe(name, limit: 80) + (functionFromConsole ? " (per the guest's console)" : "")
    }

    /// Out of the guest (handling an exit, or held by fault injection) for that long.
    func isOutOfGuest(forAtLeast limit: Double) -> Bool {
        (latest.thread == .handlingExit || latest.thread == .stalledByInjection) && latest.secondsSinceEntry >= limit
    }

    private func throughout(_ condition: (VCPUSnapshot) -> Bool) -> Bool {
        !answered.isEmpty && answered.allSatisfy(condition)
    }

    /// Halted in every sample (in KVM_RUN, or in Kite with Kite's own APIC).
    var isHaltedThroughout: Bool { throughout { $0.thread.isWhereTheGuestPutIt && $0.mpState == .halted } }

    /// The vector its APIC would deliver, when there is one in every sample (the latest's).
    var pendingVectorThroughout: UInt8? {
        throughout { $0.apic?.deliverableVector != nil } ? latest.apic?.deliverableVector : nil
    }

    /// The pending vector is the one its local APIC timer raises (LVT timer, unmasked).
    var pendingVectorIsItsTimer: Bool {
        guard let vector = pendingVectorThroughout, let apic = latest.apic, !apic.timerMasked else { return false }
        return UInt8(truncatingIfNeeded: apic.timerLVT) == vector
    }

    var nothingPendingThroughout: Bool { throughout { $0.apic?.deliverableVector == nil } }

    /// The guest made the vCPU exit between the first and the last answered sample: it ran.
    /// A vCPU caught halted with a vector pending in every sample of a busy IPI exchange
    /// (each sample right between a post and the wake-up it causes, likely where the woken
    /// thread waits for a host CPU) is not one that was never woken.
    var exitedBetweenSamples: Bool {
        guard let first = answered.first?.exitCount, let last = answered.last?.exitCount else { return false }
        return last > first
    }

    /// KVM counted exits of this vCPU between the first and the last answered sample, so it
    /// was in the guest in between. A vCPU halted in every sample with a vector pending was
    /// then woken and ran each time, and only sleeps again: each sample's kick found it
    /// halted again with a new interrupt (a timer tick) not yet taken, as when its thread
    /// waits for a host CPU after every wake-up. (Only for halted vCPUs: the kick of a vCPU
    /// in the guest is itself an exit.)
    var enteredTheGuestBetweenSamples: Bool {
        guard let first = answered.first?.kernelExitCount, let last = answered.last?.kernelExitCount else { return false }
        return last > first
    }

    /// Runnable in the guest with interrupts enabled in every sample (at least two), a vector
    /// deliverable throughout (the latest's, returned), and no exit between the samples nor
    /// in the last second: the vector is not being taken.
    var untakenInterruptWhileRunning: UInt8? {
        guard answered.count >= 2, !exitedBetweenSamples, latest.secondsSinceExit >= 1,
              throughout({ $0.thread == .inGuest && $0.mpState == .runnable && ($0.registers?.interruptsEnabled ?? false) })
        else { return nil }
        return pendingVectorThroughout
    }

    var interruptsDisabledThroughout: Bool { throughout { $0.registers.map { !$0.interruptsEnabled } ?? false } }

    /// Idle: halted with nothing pending now, or never started (waiting for INIT/SIPI).
    var isIdle: Bool {
        (isHaltedThroughout && latest.apic?.deliverableVector == nil)
            || throughout { $0.thread.isWhereTheGuestPutIt && $0.mpState == .waitingForSIPI }
    }

    /// Runnable in ring 0 in every sample, with RIP in one function: the same function by
    /// symbol, every sample in an IPI-wait function, or (without symbols) within 256 bytes.
    /// A CPU that waits for an IPI with interrupts on still takes its timer tick and prints
    /// its own lockup report, so a sample may land in a handler: the latest sample in an
    /// IPI-wait function and most of the samples in IPI-wait functions count as spinning too.
    var isSpinning: Bool {
        guard throughout({ $0.thread == .inGuest && $0.mpState == .runnable && $0.registers?.cpl == 0 }) else { return false }
        let functions = answered.compactMap(\.ripFunction)
        if functions.count == answered.count {
            if Set(functions).count == 1 || functions.allSatisfy(IPIWait.isWaitFunction) { return true }
            guard let last = functions.last, IPIWait.isWaitFunction(last),
                  latest.registers?.interruptsEnabled == true else { return false }
            return functions.filter(IPIWait.isWaitFunction).count * 2 > functions.count
        }
        let rips = answered.compactMap { $0.registers?.rip }
        guard let low = rips.min(), let high = rips.max() else { return false }
        return high - low < 256
    }

    /// Runnable in ring 0, in the guest, in every sample, wherever its RIP is: a CPU whose
    /// own lockup report says it waits in an IPI-wait function counts as that waiter even
    /// when the samples catch it in what it does meanwhile with interrupts on (its timer
    /// tick, an IPI it sends from an interrupt handler).
    var runsKernelCodeThroughout: Bool {
        throughout { $0.thread == .inGuest && $0.mpState == .runnable && $0.registers?.cpl == 0 }
    }

    /// Spinning in a send-IPI function, or with the ICR "send pending" in every sample
    /// outside the IPI-wait functions (those spin on their CSD lock, not on the ICR).
    var isPollingICR: Bool {
        if let f = function, IPIWait.isICRPollFunction(f) { return true }
        if let f = function, IPIWait.isWaitFunction(f) { return false }
        return throughout { $0.apic?.icrSendPending == true }
    }

    /// An NMI pending or being injected in every sample, while the vCPU does not run
    /// normally (its thread out of the guest, not runnable, or spinning).
    var hasUntakenNMI: Bool {
        guard throughout({ ($0.events?.nmiPending ?? false) || ($0.events?.nmiInjected ?? false) }) else { return false }
        return !latest.thread.isWhereTheGuestPutIt || !throughout { $0.mpState == .runnable } || isSpinning
    }
}

// MARK: - Wording helpers

/// How the diagnosis and the report write numbers, lists and guest text.
enum Wording {
    /// "0xfb".
    static func hex(_ v: UInt8) -> String { "0x" + pad(String(v, radix: 16), 2) }

    /// "0x1a2b", or zero-padded to `digits`.
    static func hex(_ v: UInt64, digits: Int = 1) -> String { "0x" + pad(String(v, radix: 16), digits) }

    private static func pad(_ s: String, _ digits: Int) -> String {
        s.count >= digits ? s : String(repeating: "0", count: digits - s.count) + s
    }

    /// The architectural name of exception `vector` (0-31), where it has a common one.
    static func exceptionName(_ vector: UInt8) -> String? {
        switch vector {
        case 0: "divide error"
        case 1: "debug"
        case 3: "breakpoint"
        case 6: "invalid opcode"
        case 8: "double fault"
        case 13: "general protection"
        case 14: "page fault"
        case 17: "alignment check"
        case 18: "machine check"
        default: nil
        }
    }

    /// "41 s", "2.5 s".
    static func seconds(_ s: Double) -> String {
        guard s.isFinite, s >= 0 else { return "? s" }
        if s >= 10 { return "\(Int(s.rounded())) s" }
        let tenths = Int((s * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) s"
    }

    /// "vCPU 2", "vCPUs 1 and 2", "vCPUs 0, 1 and 3".
    static func vcpuList(_ ids: [Int]) -> String { numbered("vCPU", ids) }

    /// "CPU 2", "CPUs 1 and 2".
    static func cpuList(_ ids: [Int]) -> String { numbered("CPU", ids) }

    private static func numbered(_ noun: String, _ ids: [Int]) -> String {
        let numbers = ids.map(String.init)
        guard let last = numbers.last else { return noun + "s" }
        if numbers.count == 1 { return "\(noun) \(last)" }
        return "\(noun)s " + numbers.dropLast().joined(separator: ", ") + " and " + last
    }

    /// Guest-provided text made safe to print on a terminal: control characters (C0, DEL, C1)
    /// and bidirectional-text overrides become visible escapes ("\x1b"), and long text is cut.
    static func terminalSafe(_ text: String, limit: Int = 200) -> String {
        var out = ""
        var count = 0
        for scalar in text.unicodeScalars {
            if count >= limit { out += "…"; break }
            count += 1
            let v = scalar.value
            if v < 0x20 || (0x7F...0x9F).contains(v) {
                out += "\\x" + pad(String(v, radix: 16), 2)
            } else if (0x202A...0x202E).contains(v) || (0x2066...0x2069).contains(v) || v == 0x2028 || v == 0x2029 {
                out += "\\u{" + String(v, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
