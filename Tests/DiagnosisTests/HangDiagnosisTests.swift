import Testing
@testable import Diagnosis

/// Hand-made vCPU states for the diagnosis rules.
enum Make {
    static let waitSymbol = "smp_call_function_many_cond+0xf1/0x330"

    /// A vCPU that answered, in the guest; by default runnable in ring 0 with interrupts on.
    static func vcpu(_ id: Int, thread: VCPUThreadState = .inGuest, entry: Double = 0.01, exit: Double = 0.3,
                     mp: VCPURunnability = .runnable, rip: UInt64 = 0xffff_ffff_8100_0000, symbol: String? = nil,
                     rflags: UInt64 = 0x202, cpl: UInt8 = 0, apic: LocalAPICState = LocalAPICState(),
                     events: VCPUEvents = VCPUEvents()) -> VCPUSnapshot {
        VCPUSnapshot(id: id, thread: thread, secondsSinceEntry: entry, secondsSinceExit: exit, exitCount: 1000,
                     answered: true,
                     registers: VCPURegisters(rip: rip, rsp: 0xffff_b067_0000_bc00, rflags: rflags, cr3: 0x1901_0000, cpl: cpl),
                     mpState: mp, apic: apic, events: events, ripSymbol: symbol)
    }

    /// Spinning in a function (give the same one in every sample).
    static func spinning(_ id: Int, in symbol: String? = waitSymbol, rip: UInt64 = 0xffff_ffff_8112_30f1,
                         rflags: UInt64 = 0x202, apic: LocalAPICState = LocalAPICState()) -> VCPUSnapshot {
        vcpu(id, rip: rip, symbol: symbol, rflags: rflags, apic: apic)
    }

    /// Halted in the guest (in the idle loop, interrupts on) with these IRR vectors.
    static func halted(_ id: Int, irr: [UInt8] = [], rflags: UInt64 = 0x246,
                       events: VCPUEvents = VCPUEvents()) -> VCPUSnapshot {
        vcpu(id, exit: 5, mp: .halted, rip: 0xffff_ffff_81a0_0000, symbol: "default_idle+0xe/0x20", rflags: rflags,
             apic: LocalAPICState(apicID: UInt32(id), irr: irr), events: events)
    }

    /// Running user code (CPL 3) at a different place each time.
    static func user(_ id: Int, sample: Int) -> VCPUSnapshot {
        vcpu(id, rip: 0x7f00_0000_1000 + UInt64(sample) * 0x10000, cpl: 3)
    }

    /// Running kernel code in a different function each sample.
    static func busy(_ id: Int, sample: Int) -> VCPUSnapshot {
        let functions = ["do_syscall_64+0x5b/0x80", "copy_page+0x7/0x10", "clear_page_erms+0x7/0x10"]
        return vcpu(id, rip: 0xffff_ffff_8100_0000 + UInt64(sample) * 0x10000, symbol: functions[sample % 3])
    }

    static func notAnswering(_ id: Int, thread: VCPUThreadState = .inGuest, entry: Double) -> VCPUSnapshot {
        VCPUSnapshot(id: id, thread: thread, secondsSinceEntry: entry, secondsSinceExit: entry + 0.5,
                     exitCount: 77, answered: false)
    }

    static func starved(_ id: Int, thread: VCPUThreadState = .stalledByInjection, entry: Double,
                        irr: [UInt8] = []) -> VCPUSnapshot {
        vcpu(id, thread: thread, entry: entry, exit: entry, apic: LocalAPICState(apicID: UInt32(id), irr: irr))
    }

    /// Three samples made by `vcpus(sample)`.
    static func evidence(samples: Int = 3, events: [KernelEvent] = [], starvedAfter: Double = 10,
                         _ vcpus: (Int) -> [VCPUSnapshot]) -> HangEvidence {
        HangEvidence(samples: (0..<samples).map { i in
            MachineSnapshot(uptimeSeconds: 60 + Double(i) * 0.2, consoleQuietSeconds: 30, vcpus: vcpus(i))
        }, events: events, starvedAfterSeconds: starvedAfter)
    }

    /// The same vCPUs in every sample.
    static func evidence(samples: Int = 3, events: [KernelEvent] = [], starvedAfter: Double = 10,
                         _ vcpus: [VCPUSnapshot]) -> HangEvidence {
        evidence(samples: samples, events: events, starvedAfter: starvedAfter) { _ in vcpus }
    }

    static func softLockup(cpu: Int, seconds: Int, function: String = "smp_call_function_many_cond",
                           timestamp: Double = 57.23662) -> KernelEvent {
        KernelEvent(kind: .softLockup, timestamp: timestamp, cpu: cpu, stuckSeconds: seconds, task: "swapper/0", pid: 1,
                    headline: "watchdog: BUG: soft lockup - CPU#\(cpu) stuck for \(seconds)s! [swapper/0:1]",
                    rip: KernelFrame(function: function, offset: 0xf1, size: 0x330),
                    frames: [KernelFrame(function: "arch_unregister_cpu", offset: 0x20, size: 0x20, reliable: false),
                             KernelFrame(function: "on_each_cpu_cond_mask", offset: 0x20, size: 0x40),
                             KernelFrame(function: "text_poke_bp_batch", offset: 0xb7, size: 0x300),
                             KernelFrame(function: "text_poke_finish", offset: 0x1b, size: 0x30),
                             KernelFrame(function: "arch_jump_label_transform_apply", offset: 0x16, size: 0x30)])
    }

    static func rcuStall(stalled: [Int], detectedBy: Int, kind: KernelEvent.Kind = .rcuStall,
                         timestamp: Double = 23.27922) -> KernelEvent {
        KernelEvent(kind: kind, timestamp: timestamp, stalledCPUs: stalled, detectedBy: detectedBy,
                    headline: "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:")
    }
}

private func rules(_ findings: [Finding]) -> [Finding.Rule] { findings.map(\.rule) }

@Suite struct HangDiagnosisTests {
    // MARK: Rule 1: not answering

    @Test func aThreadThatDoesNotAnswerIsNamedWithWhereItIs() {
        let f = HangDiagnosis.findings(Make.evidence([Make.halted(0), Make.halted(1), Make.halted(2),
                                                      Make.notAnswering(3, entry: 41.2)]))
        #expect(f.first == Finding(rule: .notAnswering, vcpus: [3], sentence:
            "vCPU 3 did not answer the snapshot request: its thread has been in the guest for 41 s without returning to Kite"))
        #expect(HangDiagnosis.isHang(f))
    }

    @Test func aThreadStuckHandlingAnExitSaysSo() {
        let f = HangDiagnosis.findings(Make.evidence([Make.halted(0), Make.notAnswering(1, thread: .handlingExit, entry: 12)]))
        #expect(f.first?.sentence
            == "vCPU 1 did not answer the snapshot request: its thread has not entered the guest for 12 s: it is stuck handling an exit in Kite")
    }

    @Test func answeringThreadsAreNotReportedAsNotAnswering() {
        let f = HangDiagnosis.findings(Make.evidence([Make.halted(0), Make.vcpu(1, entry: 41)]))
        #expect(!rules(f).contains(.notAnswering))
    }

    // MARK: Rule 2: starved

    @Test func aVCPUHeldOutOfTheGuestIsStarved() {
        let f = HangDiagnosis.findings(Make.evidence(starvedAfter: 30, [Make.halted(0), Make.starved(1, entry: 30)]))
        #expect(f.first == Finding(rule: .starved, vcpus: [1], sentence:
            "vCPU 1 is runnable but its thread has not entered the guest for 30 s: Kite starved it (held by --inject stall-vcpu)"))
    }

    @Test func aStarvedVCPUWithAPendingVectorNamesTheVector() {
        let f = HangDiagnosis.findings(Make.evidence(starvedAfter: 10,
                                                     [Make.halted(0), Make.starved(2, thread: .handlingExit, entry: 30, irr: [0xfb])]))
        #expect(f.first?.sentence == "vCPU 2 has vector 0xfb pending but its thread has not entered the guest for 30 s: Kite starved it")
    }

    @Test func aShortExitIsNotStarvation() {
        let f = HangDiagnosis.findings(Make.evidence(starvedAfter: 10,
                                                     [Make.halted(0), Make.starved(1, thread: .handlingExit, entry: 9.5)]))
        #expect(!rules(f).contains(.starved))
        #expect(!HangDiagnosis.isHang(f))
    }

    @Test func aVCPUWaitingInKiteWithItsOwnAPICIsHaltedNotStarved() {
        // --irqchip userspace: a halted vCPU waits in Kite, out of KVM_RUN, for 30 s.
        var idle = Make.halted(1)
        idle.thread = .waitingInKite
        idle.secondsSinceEntry = 30
        let f = HangDiagnosis.findings(Make.evidence(starvedAfter: 10, [Make.halted(0), idle]))
        #expect(!rules(f).contains(.starved))
        #expect(!HangDiagnosis.isHang(f))
        // But one that waits there with a deliverable vector was not woken: the lost wake-up.
        var lost = Make.halted(2, irr: [0xfb])
        lost.thread = .waitingInKite
        lost.secondsSinceEntry = 30
        let g = HangDiagnosis.findings(Make.evidence(starvedAfter: 10, [Make.busy(0, sample: 0), lost]))
        #expect(g.first?.rule == .haltedWithInterruptPending, "\(g)")
    }

    // MARK: Rule 3: halted with an interrupt pending

    @Test func aHaltedVCPUWithAnIPIInItsIRRWasNotWoken() {
        let f = HangDiagnosis.findings(Make.evidence([Make.busy(0, sample: 0), Make.halted(2, irr: [0xfb])]))
        #expect(f.first == Finding(rule: .haltedWithInterruptPending, vcpus: [2], sentence:
            "vCPU 2 is halted with vector 0xfb pending in its IRR: an IPI reached the APIC but the vCPU was not woken"))
    }

    @Test func aVCPUThatHaltedWithInterruptsOffIsToldApart() {
        let f = HangDiagnosis.findings(Make.evidence([Make.halted(1, irr: [0xfb], rflags: 0x46)]))
        #expect(f.first?.rule == .haltedWithInterruptPending)
        #expect(f.first?.sentence.contains("halted with interrupts disabled") == true)
    }

    @Test func aVectorPendingInOnlyOneSampleIsAWakeUpInProgress() {
        let f = HangDiagnosis.findings(Make.evidence { i in [Make.halted(0, irr: i == 1 ? [0xfb] : [])] })
        #expect(!rules(f).contains(.haltedWithInterruptPending))
        #expect(rules(f) == [.allIdle])
    }

    @Test func aVCPUThatKeepsExitingWasWokenEachTime() {
        // A busy IPI ping-pong (testbed/bench's, in `userspace` mode on one host CPU): every
        // sample catches the vCPU halted with 0xfb just posted, but it exits thousands of
        // times in between. Seen as a false "not woken" verdict that ended a healthy guest.
        let f = HangDiagnosis.findings(Make.evidence { i in
            (0..<2).map { id in
                var v = Make.halted(id, irr: [0xfb])
                v.thread = id == 0 ? .waitingInKite : .inGuest
                v.exitCount = 290_000 + UInt64(i) * 900
                return v
            }
        })
        #expect(!rules(f).contains(.haltedWithInterruptPending), "\(f)")
        #expect(!HangDiagnosis.isHang(f))
        // The same with the exit counts standing still is the lost wake-up.
        let g = HangDiagnosis.findings(Make.evidence { _ in
            (0..<2).map { id in
                var v = Make.halted(id, irr: id == 1 ? [0xfb] : [])
                v.thread = .waitingInKite
                return v
            }
        })
        #expect(rules(g).first == .haltedWithInterruptPending, "\(g)")
    }

    @Test func aHaltedVCPUThatKVMSawRunWasWokenEachTime() {
        // healthy4 in a one-CPU L1 beside another L1 (kernel irqchip): vCPUs 0 and 2 halted
        // with the timer's 0xec in IRR in all three samples, and no exit reached Kite; but KVM
        // counted exits in between: each was woken, ran, and halted again before the next
        // kick found the next tick not yet taken. Seen as a false "not woken" verdict.
        let f = HangDiagnosis.findings(Make.evidence { i in
            [0, 2].map { id in
                var v = Make.halted(id, irr: [0xec])
                v.kernelExitCount = 52_000 + UInt64(i) * 40
                return v
            }
        })
        #expect(!rules(f).contains(.haltedWithInterruptPending), "\(f)")
        #expect(!HangDiagnosis.isHang(f))
        // KVM's count standing still (or unknown) is the lost wake-up.
        for count in [UInt64(52_000), nil] {
            let g = HangDiagnosis.findings(Make.evidence { _ in
                var v = Make.halted(0, irr: [0xec])
                v.kernelExitCount = count
                return [v]
            })
            #expect(rules(g).first == .haltedWithInterruptPending, "\(g)")
        }
        // Its own timer's vector is called what it is, not an IPI.
        let timer = HangDiagnosis.findings(Make.evidence { _ in
            var v = Make.halted(0, irr: [0xec])
            v.apic?.timerLVT = 0x400ec
            return [v]
        })
        #expect(timer.first?.sentence
            == "vCPU 0 is halted with vector 0xec pending in its IRR: its local APIC timer fired but the vCPU was not woken")
    }

    /// The two-CPU testbed's `userspace` stall: vCPU 0 stays in KVM_RUN with interrupts on,
    /// a call-function IPI and its timer deliverable in Kite's APIC and a page fault pending
    /// in KVM, and makes no exit at all, so the window Kite asked for never opens.
    static func stalledInAFault(exits: (Int) -> UInt64 = { _ in 81_443 }, rflags: UInt64 = 0x10246,
                                sinceExit: Double = 44) -> HangEvidence {
        Make.evidence { i in
            var running = Make.vcpu(0, entry: 44, exit: sinceExit, rip: 0xffff_ffff_c04d_8dcc, rflags: rflags,
                                    apic: LocalAPICState(apicID: 0, irr: [0xec, 0xfb]), events: VCPUEvents(exception: 14))
            running.exitCount = exits(i)
            var idle = Make.halted(1)
            idle.thread = .waitingInKite
            return [running, idle]
        }
    }

    @Test func aRunningVCPUThatNeverTakesADeliverableInterruptIsNamed() {
        let f = HangDiagnosis.findings(Self.stalledInAFault())
        #expect(f.first == Finding(rule: .interruptNeverTaken, vcpus: [0], sentence:
            "vCPU 0 runs with interrupts enabled and vector 0xfb deliverable, but made no exit for 44 s and did not take it "
            + "(at 0xffffffffc04d8dcc, exception 0x0e (page fault) pending in every sample): it never reaches a point "
            + "where an interrupt can be injected, as in a fault that repeats forever"), "\(f)")
        #expect(HangDiagnosis.isHang(f))
    }

    @Test func aRunningVCPUWithADeliverableVectorIsFineWhileItExitsOrHasInterruptsOff() {
        // Exits between the samples: it runs, and takes interrupts (each EOI is an exit in
        // `userspace` mode); caught with one pending each time is a busy guest.
        let exiting = HangDiagnosis.findings(Self.stalledInAFault(exits: { 81_443 + UInt64($0) * 500 }))
        #expect(!rules(exiting).contains(.interruptNeverTaken), "\(exiting)")
        // Exited within the last second: too soon to say.
        let recent = HangDiagnosis.findings(Self.stalledInAFault(sinceExit: 0.4))
        #expect(!rules(recent).contains(.interruptNeverTaken), "\(recent)")
        // Interrupts off: it cannot take one, which the looping rule describes instead.
        let masked = HangDiagnosis.findings(Self.stalledInAFault(rflags: 0x10046))
        #expect(!rules(masked).contains(.interruptNeverTaken), "\(masked)")
        // One sample is not enough to say it made no exit.
        let once = HangDiagnosis.findings(HangEvidence(samples: [Self.stalledInAFault().samples[0]]))
        #expect(!rules(once).contains(.interruptNeverTaken), "\(once)")
    }

    @Test func aVectorBelowThePriorityIsNotDeliverable() {
        var v = Make.halted(0, irr: [0x31])
        v.apic?.ppr = 0xf0
        let f = HangDiagnosis.findings(Make.evidence([v]))
        #expect(!rules(f).contains(.haltedWithInterruptPending))
    }

    // MARK: Rule 4: a waiter, and whom it waits for

    @Test func theIssueExampleSummary() {
        let f = HangDiagnosis.findings(Make.evidence([Make.spinning(0), Make.halted(1), Make.halted(2, irr: [0xfb]),
                                                      Make.user(3, sample: 0)]))
        #expect(HangDiagnosis.summary(f) == "vCPU 0 spins in smp_call_function_many_cond waiting for CPU 2; "
            + "vCPU 2 is halted with vector 0xfb pending in its IRR: an IPI reached the APIC but the vCPU was not woken")
        #expect(f.first { $0.rule == .waitingForIPI }?.vcpus == [0, 2])
        // vCPU 1 is halted too, but the pending IPI of vCPU 2 explains the wait.
        #expect(!rules(f).contains(.haltedNothingPending))
    }

    @Test func aWaiterWithNoSuspectWaitsForTheCPUsTheRCUStallNames() {
        let f = HangDiagnosis.findings(Make.evidence(events: [Make.rcuStall(stalled: [1], detectedBy: 0)]) { i in
            [Make.spinning(0, in: "csd_lock_wait.constprop.0+0x1c/0x40"), Make.busy(1, sample: i)]
        })
        #expect(f == [Finding(rule: .waitingForIPI, vcpus: [0, 1], sentence:
            "vCPU 0 spins in csd_lock_wait.constprop.0 waiting for CPU 1 (named by the guest's RCU stall report)")])
    }

    /// hangmodload4 in CI: one of the three samples caught the waiter in its timer tick.
    @Test func aWaiterCaughtOnceInAnInterruptHandlerIsStillAWaiter() {
        let f = HangDiagnosis.findings(Make.evidence { i in
            [Make.halted(0),
             i == 1 ? Make.spinning(1, in: "sysvec_apic_timer_interrupt+0x0/0xa0", rip: 0xffff_ffff_81a0_1000)
                    : Make.spinning(1),
             Make.starved(2, entry: 30, irr: [0xfc]), Make.halted(3)]
        })
        #expect(f.first { $0.rule == .waitingForIPI }?.sentence
            == "vCPU 1 spins in smp_call_function_many_cond waiting for CPU 2")
    }

    @Test(arguments: [0, 2])
    func oneSampleInAWaitFunctionOrALatestSampleElsewhereIsNoWaiter(waitSamplesFrom: Int) {
        // Samples 0..<waitSamplesFrom elsewhere, the rest in the wait function: with
        // waitSamplesFrom 2 only the latest sample waits; the reversed case is below.
        let f = HangDiagnosis.findings(Make.evidence { i in
            [Make.halted(0),
             i >= waitSamplesFrom ? Make.spinning(1) : Make.spinning(1, in: "copy_page+0x7/0x10", rip: 0xffff_ffff_81b0_0000),
             Make.starved(2, entry: 30, irr: [0xfc])]
        })
        #expect(rules(f).contains(.waitingForIPI) == (waitSamplesFrom == 0))
        let reversed = HangDiagnosis.findings(Make.evidence { i in
            [Make.halted(0),
             i < 2 ? Make.spinning(1) : Make.spinning(1, in: "copy_page+0x7/0x10", rip: 0xffff_ffff_81b0_0000),
             Make.starved(2, entry: 30, irr: [0xfc])]
        })
        #expect(!rules(reversed).contains(.waitingForIPI))   // the latest sample left the wait
    }

    @Test func aWaiterWithNoEvidenceSaysKiteCannotTell() {
        let f = HangDiagnosis.findings(Make.evidence { i in [Make.spinning(0, in: "kick_all_cpus_sync+0x4c/0x80"),
                                                             Make.busy(1, sample: i)] })
        #expect(f.map(\.sentence) == ["vCPU 0 spins in kick_all_cpus_sync waiting for another CPU (Kite cannot tell which)"])
        #expect(HangDiagnosis.isHang(f))
    }

    @Test func aVCPUMovingBetweenFunctionsIsNotAWaiter() {
        let f = HangDiagnosis.findings(Make.evidence { i in
            [Make.spinning(0, in: i == 2 ? "schedule+0x5a/0xd0" : Make.waitSymbol), Make.halted(1)]
        })
        #expect(!rules(f).contains(.waitingForIPI))
        #expect(rules(f) == [.runningNormally])
    }

    @Test func userCodeIsNeverAWaiter() {
        let f = HangDiagnosis.findings(Make.evidence([Make.vcpu(0, symbol: Make.waitSymbol, cpl: 3), Make.halted(1)]))
        #expect(!rules(f).contains(.waitingForIPI))
    }

    @Test func waitersInTheSameFunctionForTheSameCPUAreOneFinding() {
        // hanghotplug4's shape: three vCPUs rendezvous in multi_cpu_stop; vCPU 2 is held out.
        let f = HangDiagnosis.findings(Make.evidence(starvedAfter: 15, [
            Make.spinning(0, in: "multi_cpu_stop+0x9a/0x160"), Make.spinning(1, in: "multi_cpu_stop+0x93/0x160"),
            Make.starved(2, entry: 40), Make.spinning(3, in: "multi_cpu_stop+0x9a/0x160"),
        ]))
        #expect(rules(f) == [.starved, .waitingForIPI])
        #expect(f[1] == Finding(rule: .waitingForIPI, vcpus: [0, 1, 3, 2],
                                sentence: "vCPUs 0, 1 and 3 spin in multi_cpu_stop waiting for CPU 2"))
        #expect(HangDiagnosis.summary(f).hasPrefix("vCPUs 0, 1 and 3 spin in multi_cpu_stop waiting for CPU 2; vCPU 2 is runnable"))
    }

    @Test func printkWaitingForTheConsoleWaitsForItsOwner() {
        // hanghotplug4's shape when the stall caught vCPU 2 printing: vCPU 0 spins (IF=0) in
        // printk's hand-over loop; vCPU 2, held out, is in the middle of a serial write.
        let owner = Make.vcpu(2, thread: .stalledByInjection, entry: 40, exit: 40, symbol: "io_serial_out+0x16/0x20",
                              rflags: 0x2, apic: LocalAPICState(apicID: 2, irr: [0xec, 0xfb, 0xfd]))
        let f = HangDiagnosis.findings(Make.evidence(starvedAfter: 15, [
            Make.spinning(0, in: "vprintk_emit+0x1b2/0x290", rflags: 0x2), Make.halted(1), owner,
        ]))
        #expect(rules(f) == [.starved, .waitingForConsole])
        #expect(f[1] == Finding(rule: .waitingForConsole, vcpus: [0, 2], sentence:
            "vCPU 0 spins in vprintk_emit waiting for CPU 2, which owns the console (it is in io_serial_out, writing to it)"))
        #expect(HangDiagnosis.summary(f).hasPrefix("vCPU 0 spins in vprintk_emit waiting for CPU 2, which owns the console"))
        // Nobody caught writing to the console: the spinner is only a loop with interrupts off.
        let alone = HangDiagnosis.findings(Make.evidence(starvedAfter: 15, [
            Make.spinning(0, in: "vprintk_emit+0x1b2/0x290", rflags: 0x2), Make.halted(1), Make.starved(2, entry: 40),
        ]))
        #expect(rules(alone) == [.starved, .loopingInterruptsDisabled])
        #expect(ConsoleWait.isOutputFunction("serial8250_console_write") && ConsoleWait.isOutputFunction("mem_serial_out"))
        #expect(!ConsoleWait.isOutputFunction("vprintk_emit") && !ConsoleWait.isSpinFunction("printk_get_next_message"))
    }

    @Test func withoutSymbolsTheFunctionComesFromTheGuestsReport() {
        let f = HangDiagnosis.findings(Make.evidence(events: [Make.softLockup(cpu: 1, seconds: 52)]) { i in
            [Make.notAnswering(0, entry: 60), Make.spinning(1, in: nil, rip: 0xffff_ffff_8112_30f1 + UInt64(i) * 4)]
        })
        #expect(f.map(\.sentence).last
            == "vCPU 1 spins in smp_call_function_many_cond (per the guest's console) waiting for CPU 0")
    }

    @Test func withoutSymbolsARIPThatMovesFarIsNotSpinning() {
        let f = HangDiagnosis.findings(Make.evidence { i in
            [Make.spinning(0, in: nil, rip: 0xffff_ffff_8100_0000 + UInt64(i) * 0x1000, rflags: 0x2)]
        })
        #expect(rules(f) == [.runningNormally])
    }

    @Test func aSingleSampleCountsAsSpinning() {
        let f = HangDiagnosis.findings(Make.evidence(samples: 1, [Make.spinning(0), Make.halted(1, irr: [0xfb])]))
        #expect(rules(f) == [.haltedWithInterruptPending, .waitingForIPI])
    }

    @Test func theIPIWaitListMatchesPrefixesAndClones() {
        for name in ["smp_call_function_many_cond", "smp_call_function_single", "csd_lock_wait.constprop.0",
                     "generic_exec_single", "on_each_cpu_cond_mask", "kick_all_cpus_sync", "native_flush_tlb_multi",
                     "flush_tlb_mm_range", "multi_cpu_stop", "stop_machine_cpuslocked", "cpu_stopper_thread",
                     "native_stop_other_cpus", "text_poke_bp_batch"] {
            #expect(IPIWait.isWaitFunction(name), "\(name)")
        }
        for name in ["native_queued_spin_lock_slowpath", "default_idle", "flush_tlb_func", "schedule"] {
            #expect(!IPIWait.isWaitFunction(name), "\(name)")
        }
    }

    // MARK: Rule 5: polling the ICR

    @Test func theSRSOSeedPollsTheICR() {
        // QEMU/KVM with SRSO: vCPU 0 powers off, spinning in default_send_IPI_allbutself with
        // interrupts off (EFLAGS 0x82) on the ICR's delivery-status bit.
        let icr = LocalAPICState(icr: 0x000c_10fc)
        let f = HangDiagnosis.findings(Make.evidence(events: [Make.rcuStall(stalled: [0], detectedBy: 1)]) { i in
            [Make.spinning(0, in: "default_send_IPI_allbutself+0x2a/0x60", rflags: 0x82, apic: icr), Make.busy(1, sample: i)]
        })
        #expect(f.first == Finding(rule: .pollingICR, vcpus: [0], sentence:
            "vCPU 0 polls the xAPIC ICR busy bit in default_send_IPI_allbutself: its IPI (vector 0xfc, ICR 0x000c10fc) stays 'send pending'"))
        #expect(!rules(f).contains(.loopingInterruptsDisabled))
        #expect(HangDiagnosis.summary(f).hasPrefix("vCPU 0 polls the xAPIC ICR busy bit"))
    }

    @Test func anICRThatShowsTheIPISentMeansTheGuestMisreadsIt() {
        let f = HangDiagnosis.findings(Make.evidence([
            Make.spinning(0, in: "default_send_IPI_allbutself+0x2a/0x60", rflags: 0x82, apic: LocalAPICState(icr: 0x000c_00fc)),
        ]))
        #expect(f.first?.rule == .pollingICR)
        #expect(f.first?.sentence.contains("as sent: the guest misreads the busy bit") == true)
    }

    @Test func aSendPendingICRInAnUnknownFunctionIsPolling() {
        let f = HangDiagnosis.findings(Make.evidence([
            Make.spinning(0, in: "mystery_loop+0x10/0x40", apic: LocalAPICState(icr: 0x10fb)),
        ]))
        #expect(rules(f) == [.pollingICR])
    }

    @Test func anIdleICRInAnOrdinaryLoopIsNotPolling() {
        let f = HangDiagnosis.findings(Make.evidence([
            Make.spinning(0, in: "mystery_loop+0x10/0x40", apic: LocalAPICState(icr: 0x00fb)),
        ]))
        #expect(!rules(f).contains(.pollingICR))
    }

    // MARK: Rule 6: halted with nothing pending, but waited for

    @Test func theLibkrunSeedWaiterAndTheCPUThatNeverWoke() {
        // libkrun: vCPU 3 spins in smp_call_function_many_cond (kick_all_cpus_sync after a
        // module load); vCPU 1 sits in WFI with nothing pending; the others run user code.
        let f = HangDiagnosis.findings(Make.evidence(events: [Make.softLockup(cpu: 3, seconds: 443)]) { i in
            [Make.user(0, sample: i), Make.halted(1), Make.user(2, sample: i),
             Make.spinning(3, in: "smp_call_function_many_cond+0x18c/0x778")]
        })
        #expect(f == [
            Finding(rule: .haltedNothingPending, vcpus: [1], sentence: "vCPU 1 is halted with nothing pending: the IPI never arrived"),
            Finding(rule: .waitingForIPI, vcpus: [3, 1], sentence: "vCPU 3 spins in smp_call_function_many_cond waiting for CPU 1"),
        ])
        #expect(HangDiagnosis.summary(f) == "vCPU 3 spins in smp_call_function_many_cond waiting for CPU 1; "
            + "vCPU 1 is halted with nothing pending: the IPI never arrived")
    }

    @Test func theRCUStallPicksWhichHaltedCPUNeverWoke() {
        // libkrun, 4 CPUs: the RCU expedited stall names CPU 1; CPUs 0 and 2 are idle too.
        let f = HangDiagnosis.findings(Make.evidence(events: [Make.rcuStall(stalled: [1], detectedBy: 3, kind: .rcuExpeditedStall)],
                                                     [Make.halted(0), Make.halted(1), Make.halted(2), Make.spinning(3)]))
        #expect(f.first == Finding(rule: .haltedNothingPending, vcpus: [1],
                                   sentence: "vCPU 1 is halted with nothing pending: the IPI never arrived"))
        #expect(f.last?.sentence == "vCPU 3 spins in smp_call_function_many_cond waiting for CPU 1")
    }

    @Test func severalHaltedCPUsAreOneFinding() {
        let f = HangDiagnosis.findings(Make.evidence([Make.spinning(0), Make.halted(1), Make.halted(2)]))
        #expect(f.first?.sentence == "vCPUs 1 and 2 are halted with nothing pending: the IPI never arrived")
        #expect(f.last?.sentence == "vCPU 0 spins in smp_call_function_many_cond waiting for CPUs 1 and 2")
    }

    @Test func haltedCPUsAreNotAccusedWhenAStarvedOneExplainsTheWait() {
        let f = HangDiagnosis.findings(Make.evidence(starvedAfter: 15, [Make.spinning(0), Make.halted(1),
                                                                        Make.starved(2, entry: 31), Make.halted(3)]))
        #expect(!rules(f).contains(.haltedNothingPending))
        #expect(f.last?.sentence == "vCPU 0 spins in smp_call_function_many_cond waiting for CPU 2")
    }

    @Test func haltedCPUsWithNobodyWaitingAreIdleNotLost() {
        let f = HangDiagnosis.findings(Make.evidence([Make.halted(0), Make.halted(1)]))
        #expect(!rules(f).contains(.haltedNothingPending))
    }

    // MARK: Rule 7: an NMI not taken

    @Test func aHaltedVCPUWithAnNMIPendingHasNotTakenIt() {
        let f = HangDiagnosis.findings(Make.evidence([Make.halted(0, events: VCPUEvents(nmiPending: true)), Make.busy(1, sample: 0)]))
        #expect(f.contains(Finding(rule: .nmiNotTaken, vcpus: [0], sentence: "vCPU 0 has an NMI pending that it has not taken")))
    }

    @Test func anNMIInsideAnNMIHandlerSaysItIsBlocked() {
        var v = Make.spinning(0, in: "mystery_loop+0x1/0x10", rflags: 0x2)
        v.events = VCPUEvents(nmiPending: true, nmiMasked: true)
        let f = HangDiagnosis.findings(Make.evidence([v]))
        #expect(f.first?.sentence == "vCPU 0 has an NMI pending that it has not taken (NMIs are blocked: it is still inside an NMI handler)")
    }

    @Test func anNMIOnARunningVCPUOrInOneSampleIsNotReported() {
        let running = HangDiagnosis.findings(Make.evidence { i in
            var v = Make.busy(0, sample: i)
            v.events = VCPUEvents(nmiPending: true)
            return [v]
        })
        #expect(!rules(running).contains(.nmiNotTaken))
        let once = HangDiagnosis.findings(Make.evidence { i in
            [Make.halted(0, events: VCPUEvents(nmiPending: i == 0))]
        })
        #expect(!rules(once).contains(.nmiNotTaken))
    }

    // MARK: Rule 8: a loop with interrupts disabled

    @Test func aLoopWithInterruptsOffIsReported() {
        let f = HangDiagnosis.findings(Make.evidence([Make.halted(0),
                                                      Make.spinning(1, in: "native_queued_spin_lock_slowpath+0x66/0x2e0", rflags: 0x46)]))
        #expect(f == [Finding(rule: .loopingInterruptsDisabled, vcpus: [1],
                              sentence: "vCPU 1 loops in native_queued_spin_lock_slowpath with interrupts disabled")])
        #expect(HangDiagnosis.isHang(f))
    }

    @Test func aLoopWithInterruptsOnIsNotReported() {
        let f = HangDiagnosis.findings(Make.evidence([Make.spinning(1, in: "native_queued_spin_lock_slowpath+0x66/0x2e0")]))
        #expect(rules(f) == [.runningNormally])
    }

    @Test func withoutSymbolsTheLoopIsAnAddress() {
        // MachineRunTests' silent guest: vCPU 0 spins in ring 0 with IF=0, vCPU 1 never started.
        var unstarted = Make.vcpu(1, mp: .waitingForSIPI)
        unstarted.ripSymbol = nil
        let f = HangDiagnosis.findings(Make.evidence([Make.spinning(0, in: nil, rip: 0x10_0040, rflags: 0x2), unstarted]))
        #expect(f.map(\.sentence) == ["vCPU 0 loops at 0x100040 with interrupts disabled"])
        #expect(f.first?.vcpus.first == 0)
        #expect(HangDiagnosis.isHang(f))
    }

    @Test func aWaiterWaitsForTheCPUThatLoopsWithInterruptsOff() {
        let f = HangDiagnosis.findings(Make.evidence([Make.spinning(0), Make.halted(1),
                                                      Make.spinning(2, in: "native_queued_spin_lock_slowpath+0x66/0x2e0", rflags: 0x46)]))
        #expect(!rules(f).contains(.haltedNothingPending))
        #expect(HangDiagnosis.summary(f) == "vCPU 0 spins in smp_call_function_many_cond waiting for CPU 2; "
            + "vCPU 2 loops in native_queued_spin_lock_slowpath with interrupts disabled")
    }

    // MARK: Rule 9: the guest says so, Kite sees nothing

    @Test func aGuestReportWithNothingStuckBlamesTheHost() {
        let f = HangDiagnosis.findings(Make.evidence(events: [Make.rcuStall(stalled: [0], detectedBy: 1),
                                                              Make.softLockup(cpu: 1, seconds: 52)]) { i in
            [Make.busy(0, sample: i), Make.busy(1, sample: i + 1)]
        })
        #expect(f == [Finding(rule: .guestReportOnly, vcpus: [1], sentence:
            "the guest reported a soft lockup on CPU 1 (stuck for 52 s in smp_call_function_many_cond), "
                + "but every vCPU is running now: the host may have starved the whole VM")])
        #expect(HangDiagnosis.isHang(f))
    }

    @Test func anRCUStallAloneIsDescribedWithItsDetector() {
        let f = HangDiagnosis.findings(Make.evidence(events: [Make.rcuStall(stalled: [2], detectedBy: 0)],
                                                     [Make.halted(0), Make.busy(1, sample: 0)]))
        #expect(f.first?.sentence == "the guest reported an RCU stall on CPU 2 (detected by CPU 0), "
            + "but no vCPU is stuck now: the host may have starved the whole VM")
    }

    @Test func aGuestReportIsNotRepeatedWhenARuleExplainsIt() {
        let f = HangDiagnosis.findings(Make.evidence(events: [Make.softLockup(cpu: 0, seconds: 30)],
                                                     [Make.spinning(0), Make.halted(1, irr: [0xfb])]))
        #expect(!rules(f).contains(.guestReportOnly))
    }

    @Test func aWarningAloneIsNotAHang() {
        let warning = KernelEvent(kind: .warning, cpu: 0, headline: "WARNING: CPU: 0 PID: 1 at kernel/foo.c:1 foo+0x1/0x2")
        let f = HangDiagnosis.findings(Make.evidence(events: [warning], [Make.halted(0), Make.halted(1)]))
        #expect(rules(f) == [.allIdle])
        #expect(!HangDiagnosis.isHang(f))
    }

    @Test func theMostImportantReportIsACrashThenALockupThenTheLatest() {
        let panic = KernelEvent(kind: .panic, headline: "Kernel panic - not syncing: softlockup: hung tasks")
        #expect(HangDiagnosis.mostImportant([Make.softLockup(cpu: 1, seconds: 5), panic, Make.rcuStall(stalled: [0], detectedBy: 1)]) == panic)
        let later = Make.softLockup(cpu: 1, seconds: 78, timestamp: 85.2)
        #expect(HangDiagnosis.mostImportant([Make.softLockup(cpu: 1, seconds: 52), Make.rcuStall(stalled: [0], detectedBy: 1), later]) == later)
    }

    // MARK: Rule 10 and the healthy guest

    @Test func anIdleGuestIsNotHung() {
        let f = HangDiagnosis.findings(Make.evidence([Make.halted(0), Make.halted(1), Make.halted(2), Make.halted(3)]))
        #expect(f == [Finding(rule: .allIdle, vcpus: [0, 1, 2, 3],
                              sentence: "every vCPU is halted with nothing pending: the guest is idle, not hung")])
        #expect(!HangDiagnosis.isHang(f))
        #expect(HangDiagnosis.summary(f) == f[0].sentence)
    }

    @Test func anIdleGuestWithAnUnstartedCPUIsIdle() {
        let f = HangDiagnosis.findings(Make.evidence([Make.halted(0), Make.vcpu(1, mp: .waitingForSIPI)]))
        #expect(f.first?.sentence == "every vCPU is halted with nothing pending (vCPU 1 never started): the guest is idle, not hung")
    }

    @Test func aBusyGuestRunsNormally() {
        let f = HangDiagnosis.findings(Make.evidence { i in [Make.busy(0, sample: i), Make.user(1, sample: i), Make.halted(2)] })
        #expect(f == [Finding(rule: .runningNormally, vcpus: [0, 1, 2], sentence: "no vCPU looks stuck: 2 running, 1 halted")])
        #expect(!HangDiagnosis.isHang(f))
    }

    // MARK: The real hang from Kite's own test bed

    /// `Fixtures/kite-vsock2-stall.log`: 2 vCPUs; CPU 1 spins in smp_call_function_many_cond
    /// (RIP smp_call_function_many_cond+0xf1/0x330, via on_each_cpu_cond_mask from
    /// text_poke_bp_batch) while the RCU stall names CPU 0, which Kite did not run.
    static let vsockStallEvents = [Make.rcuStall(stalled: [0], detectedBy: 1),
                                   Make.softLockup(cpu: 1, seconds: 52)]

    @Test func theVsockStallWithVCPU0NotAnswering() {
        let f = HangDiagnosis.findings(Make.evidence(events: Self.vsockStallEvents) { _ in
            [Make.notAnswering(0, entry: 57.9), Make.spinning(1, in: "smp_call_function_many_cond+0xf1/0x330")]
        })
        #expect(rules(f) == [.notAnswering, .waitingForIPI])
        #expect(HangDiagnosis.summary(f) == "vCPU 1 spins in smp_call_function_many_cond waiting for CPU 0; "
            + "vCPU 0 did not answer the snapshot request: its thread has been in the guest for 58 s without returning to Kite")
        #expect(HangDiagnosis.isHang(f))
    }

    @Test func theVsockStallWithVCPU0Starved() {
        let f = HangDiagnosis.findings(Make.evidence(events: Self.vsockStallEvents, starvedAfter: 15) { _ in
            [Make.starved(0, thread: .handlingExit, entry: 34, irr: [0xfb]),
             Make.spinning(1, in: "smp_call_function_many_cond+0xf1/0x330")]
        })
        #expect(HangDiagnosis.summary(f) == "vCPU 1 spins in smp_call_function_many_cond waiting for CPU 0; "
            + "vCPU 0 has vector 0xfb pending but its thread has not entered the guest for 34 s: Kite starved it")
    }

    // MARK: Order, ids, wording

    @Test func rootCausesComeBeforeWaitersAndContext() {
        let f = HangDiagnosis.findings(Make.evidence(starvedAfter: 15, [
            Make.spinning(0), Make.spinning(1, in: "update_fast_timekeeper+0x66/0x2e0", rflags: 0x46),
            Make.halted(2, irr: [0xfb], events: VCPUEvents(nmiPending: true)), Make.starved(3, entry: 20),
        ]))
        #expect(rules(f) == [.starved, .haltedWithInterruptPending, .nmiNotTaken, .waitingForIPI, .loopingInterruptsDisabled])
        // The looper (IF=0) is only a weak suspect: with strong ones present, not a target.
        #expect(f.first { $0.rule == .waitingForIPI }?.sentence == "vCPU 0 spins in smp_call_function_many_cond waiting for CPUs 2 and 3")
    }

    @Test func ruleIdsAreStableAndUnique() {
        #expect(Finding.Rule.allCases.map(\.rawValue) == [
            "vcpu-not-answering", "vcpu-starved", "halted-with-interrupt-pending", "interrupt-never-taken", "polling-icr", "halted-nothing-pending",
            "nmi-not-taken", "pv-spinlock-sleeper", "waiting-for-ipi", "waiting-for-spinlock", "waiting-for-console",
            "looping-interrupts-disabled",
            "guest-report-only", "all-idle",
            "running-normally",
        ])
        #expect(Finding.Rule.allCases.filter { !$0.meansHang } == [.allIdle, .runningNormally])
    }

    @Test func guestTextInASentenceCannotDriveATerminal() {
        let hostile = Make.softLockup(cpu: 1, seconds: 5, function: "evil\u{1b}[2J\u{202e}fn")
        let f = HangDiagnosis.findings(Make.evidence(events: [hostile]) { _ in
            [Make.spinning(1, in: nil, rip: 0xffff_ffff_8100_0000, rflags: 0x2)]
        })
        let sentence = f.first?.sentence ?? ""
        #expect(sentence == "vCPU 1 loops in evil\\x1b[2J\\u{202e}fn (per the guest's console) with interrupts disabled")
        #expect(!sentence.unicodeScalars.contains { $0.value < 0x20 })
    }

    @Test func noSamplesNoFindings() {
        #expect(HangDiagnosis.findings(HangEvidence(samples: [])).isEmpty)
        #expect(HangDiagnosis.summary([]) == "")
        #expect(!HangDiagnosis.isHang([]))
    }

}

/// A hang Kite's own snapshot caught in the nested testbed (4 vCPUs, SMP bring-up): vCPU 0
/// halted with IF=0 in native_halt (kvm_wait) with the timer vector pending, vCPU 1 spinning
/// with IF=0 in __pv_queued_spin_lock_slowpath, vCPUs 2 and 3 not started yet.
@Suite struct SpinlockWaitTests {
    static func bringUp(_ sample: Int, spinnerSymbol: String = "__pv_queued_spin_lock_slowpath+0x7e/0x2c0") -> [VCPUSnapshot] {
        [Make.vcpu(0, exit: 30.9, mp: .halted, rip: 0xffff_ffff_8841_7a1a, symbol: "native_halt+0xa/0x10", rflags: 0x46,
                   apic: LocalAPICState(apicID: 0, tpr: 0x10, ppr: 0x10, irr: [0xEC])),
         Make.vcpu(1, exit: 30.9, rip: 0xffff_ffff_8841_89fe, symbol: spinnerSymbol, rflags: 0x46,
                   apic: LocalAPICState(apicID: 1, tpr: 0x10, ppr: 0x10, irr: [0xEC])),
         Make.vcpu(2, exit: 35, mp: .waitingForSIPI, rip: 0xfff0, rflags: 0x2),
         Make.vcpu(3, exit: 35, mp: .waitingForSIPI, rip: 0xfff0, rflags: 0x2)]
    }

    @Test func lostKickDuringBringUp() {
        let findings = HangDiagnosis.findings(Make.evidence { Self.bringUp($0) })
        #expect(findings.map(\.rule) == [.sleepingInSpinlockWait, .waitingForSpinlock])
        #expect(findings.first?.vcpus == [0])
        #expect(findings.last?.vcpus == [1, 0])
        #expect(HangDiagnosis.summary(findings) == "vCPU 1 spins in __pv_queued_spin_lock_slowpath waiting for a spinlock "
            + "(vCPU 0 sleeps in the paravirtual spinlock wait); vCPU 0 sleeps with interrupts disabled in native_halt, "
            + "a paravirtual spinlock wait that only a KVM_HC_KICK_CPU kick or an NMI can end: the kick was lost, "
            + "or the lock is never released")
        #expect(HangDiagnosis.isHang(findings))
    }

    /// An offline CPU halts in native_halt with IF=0 too: without a lock spinner it is not
    /// a spinlock sleeper.
    /// The hot-plug hang the testbed caught: the new CPU 1 waits in a stop_machine() rendezvous,
    /// CPU 0 loops with IF=0 in it too, offline CPU 3 is parked halted with IF=0, and vCPU 2
    /// is held out of the guest. The waiter waits for CPU 2, the one strong suspect.
    @Test func hotplugWaiterWaitsForTheStarvedVCPUNotTheParkedOne() {
        let f = HangDiagnosis.findings(Make.evidence(starvedAfter: 15) { _ in
            [Make.spinning(0, in: "delay_tsc+0x4a/0xa0", rflags: 0x46),
             Make.spinning(1, in: "stop_machine_from_inactive_cpu+0x100/0x160"),
             Make.starved(2, entry: 33, irr: [0xfd]),
             Make.vcpu(3, exit: 20, mp: .halted, symbol: "native_halt+0xa/0x10", rflags: 0x46,
                       apic: LocalAPICState(apicID: 3, tpr: 0x10, ppr: 0x10, irr: [0xEC]))]
        })
        #expect(f.first { $0.rule == .waitingForIPI }?.sentence
            == "vCPU 1 spins in stop_machine_from_inactive_cpu waiting for CPU 2")
        #expect(f.first { $0.rule == .haltedWithInterruptPending }?.sentence.contains("an offline CPU parks this way") == true)
    }

    /// Caught by the testbed: the waiter was sampled in the delay loop of the guest's own RCU
    /// stall report (waiting for CPU 2's NMI backtrace), not in smp_call_function_many_cond.
    @Test func aWaiterCaughtInTheStallReportsDelayLoopIsStillAWaiter() {
        var lockup = KernelEvent(kind: .softLockup, cpu: 0, stuckSeconds: 45, headline: "watchdog: BUG: soft lockup - CPU#0 stuck for 45s!",
                                 rip: KernelFrame(function: "smp_call_function_many_cond", offset: 0xf1, size: 0x330))
        lockup.frames = [KernelFrame(function: "on_each_cpu_cond_mask", offset: 0x20, size: 0x40)]
        var stall = KernelEvent(kind: .rcuStall, stalledCPUs: [2], detectedBy: 0, headline: "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:")
        stall.nmiTargets = [2]
        let delayLoop = { (events: [KernelEvent]) in
            HangDiagnosis.findings(Make.evidence(events: events, starvedAfter: 15) { _ in
                [Make.spinning(0, in: "delay_tsc+0x33/0xa0", rflags: 0x87), Make.halted(1), Make.starved(2, entry: 31, irr: [0xfd]),
                 Make.halted(3)]
            })
        }
        let both = delayLoop([lockup, stall])
        #expect(both.first { $0.rule == .waitingForIPI }?.sentence == "vCPU 0 spins in smp_call_function_many_cond "
            + "(per the guest's lockup report; now in delay_tsc) waiting for CPU 2")
        let nmiOnly = delayLoop([stall])
        #expect(nmiOnly.first { $0.rule == .waitingForIPI }?.vcpus == [0, 2])
        #expect(nmiOnly.first { $0.rule == .waitingForIPI }?.sentence.contains("sent an NMI for a backtrace") == true)
        // Without the guest's reports, the same samples show a loop, not a waiter.
        #expect(!delayLoop([]).contains { $0.rule == .waitingForIPI })
    }

    /// hangmodload4 under `--irqchip userspace` (2026-12-05, its first run): CPU 3's soft
    /// lockup says it waits in smp_call_function_many_cond for the starved vCPU 2, but the
    /// last report's samples caught vCPU 3 elsewhere each time (interrupts on, it takes its
    /// timer and sends IPIs from handlers, every one an exit in this mode). The guest's own
    /// report still makes it the waiter.
    @Test func aWaiterSampledOutsideItsWaitFunctionIsNamedFromItsLockupReport() {
        let lockup = KernelEvent(kind: .softLockup, cpu: 3, stuckSeconds: 26,
                                 headline: "watchdog: BUG: soft lockup - CPU#3 stuck for 26s! [rmmod:338]",
                                 rip: KernelFrame(function: "smp_call_function_many_cond", offset: 0xf1, size: 0x330))
        let places = ["__default_send_IPI_dest_field+0x31/0x70", "smp_call_function_many_cond+0xf1/0x330",
                      "__default_send_IPI_dest_field+0x31/0x70"]
        let samples = { (events: [KernelEvent]) in
            HangDiagnosis.findings(Make.evidence(events: events, starvedAfter: 15) { i in
                [Make.halted(0), Make.halted(1), Make.starved(2, entry: 30, irr: [0xfb]),
                 Make.vcpu(3, rip: 0xffff_ffff_8100_0000 + UInt64(i) * 0x100, symbol: places[i], rflags: i == 2 ? 0x2 : 0x202)]
            })
        }
        let f = samples([lockup])
        #expect(f.first { $0.rule == .waitingForIPI }?.sentence == "vCPU 3 spins in smp_call_function_many_cond "
            + "(per the guest's lockup report; now in __default_send_IPI_dest_field) waiting for CPU 2", "\(f)")
        #expect(HangDiagnosis.summary(f).hasPrefix("vCPU 3 spins in smp_call_function_many_cond"))
        // Without the guest's report, samples in three places are no waiter.
        #expect(!samples([]).contains { $0.rule == .waitingForIPI })
    }

    /// The CI run's hot-plug hang: the NMI request came inside the kthread-starved part of
    /// the RCU stall report ("Stack dump where RCU GP kthread last ran: Sending NMI from CPU 0
    /// to CPUs 2:"); vCPU 0 waits for it in delay_tsc.
    @Test func anNMIRequestInTheKthreadStarvedReportMakesItsSenderAWaiter() {
        let log = """
        [   47.413074] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
        [   47.416991] \t(detected by 0, t=5252 jiffies, g=2313, q=132 ncpus=3)
        [   47.416991] rcu: rcu_preempt kthread starved for 5252 jiffies! g2313 f0x2 RCU_GP_WAIT_FQS(5) ->state=0x200 ->cpu=2
        [   47.416991] rcu: RCU grace-period kthread stack dump:
        [   47.416991] rcu: Stack dump where RCU GP kthread last ran:
        [   47.416991] Sending NMI from CPU 0 to CPUs 2:

        """
        let events = ConsoleWatcher.events(in: log)
        #expect(events.last?.kind == .rcuKthreadStarved && events.last?.detectedBy == 0 && events.last?.nmiTargets == [2])
        let f = HangDiagnosis.findings(Make.evidence(events: events, starvedAfter: 15) { _ in
            [Make.spinning(0, in: "delay_tsc+0x33/0xa0", rflags: 0x87), Make.halted(1), Make.starved(2, entry: 31, irr: [0xfb]),
             Make.halted(3)]
        })
        #expect(f.first { $0.rule == .waitingForIPI }?.vcpus == [0, 2])
    }

    /// hangkallsyms4 in a CI run (2026-12-06): the stall report's NMI request to CPU 2 was
    /// not yet on the console ("All QSes seen", then the kthread-starved lines, and nothing
    /// after "OOM is now expected behavior") when the samples caught vCPU 0 in the report's
    /// delay loop with IF=0. vCPU 2 holds the NMI it has not taken: that names the CPU the
    /// reporter waits for. Without the pending NMI, the same samples are a loop, not a waiter.
    @Test func aStallReportersDelayLoopWaitsForTheCPUsHoldingItsNMI() {
        let log = """
        [   59.570966] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
        [   59.680037] \t(detected by 0, t=5279 jiffies, g=1221, q=8 ncpus=4)
        [   59.767932] rcu: All QSes seen, last rcu_preempt kthread activity 5297 (4294905726-4294900429), jiffies_till_next_fqs=1, root ->qsmask 0x0
        [   60.204040] rcu: rcu_preempt kthread starved for 5407 jiffies! g1221 f0x2 RCU_GP_WAIT_FQS(5) ->state=0x200 ->cpu=2
        [   60.440616] rcu: \tUnless rcu_preempt kthread gets sufficient CPU time, OOM is now expected behavior.

        """
        let events = ConsoleWatcher.events(in: log)
        #expect(events.map(\.kind) == [.rcuStall, .rcuKthreadStarved] && events.allSatisfy { $0.nmiTargets.isEmpty })
        let samples = { (nmiPending: Bool, reporter: Int) in
            HangDiagnosis.findings(Make.evidence(events: events.map { e in
                var e = e
                if e.detectedBy != nil { e.detectedBy = reporter }
                return e
            }, starvedAfter: 15) { _ in
                var held = Make.starved(2, entry: 29.7, irr: [0xec, 0xfb])
                held.events = VCPUEvents(nmiPending: nmiPending)
                return [Make.spinning(0, in: "delay_tsc+0x33/0xa0", rflags: 0x83), Make.halted(1), held, Make.halted(3)]
            })
        }
        let f = samples(true, 0)
        let waiter = f.first { $0.rule == .waitingForIPI }
        #expect(waiter?.vcpus == [0, 2], "\(f)")
        #expect(waiter?.sentence == "vCPU 0 spins in delay_tsc (the guest's stall report sent an NMI for a backtrace) "
            + "waiting for CPU 2")
        #expect(!f.contains { $0.rule == .loopingInterruptsDisabled })
        // No NMI pending anywhere: nothing says whom the loop waits for.
        #expect(!samples(false, 0).contains { $0.rule == .waitingForIPI })
        #expect(samples(false, 0).contains { $0.rule == .loopingInterruptsDisabled && $0.vcpus == [0] })
        // The report came from another CPU: vCPU 0's loop is not that report's.
        #expect(!samples(true, 1).contains { $0.rule == .waitingForIPI && $0.vcpus.first == 0 })
    }

    /// The hanghotplug4 retry in a loaded CI run: the stall caught vCPU 2 inside the
    /// scheduler with IF=0, holding a runqueue lock; vCPU 1 spins for that lock and vCPUs 0
    /// and 3 sleep in the paravirtual spinlock wait. They all wait for vCPU 2: no kick was
    /// lost, Kite starved the lock's holder.
    @Test func spinlockWaitersWaitForTheVCPUThatIsNotRun() {
        let f = HangDiagnosis.findings(Make.evidence(starvedAfter: 15) { _ in
            [Make.vcpu(0, exit: 8, mp: .halted, symbol: "native_halt+0xa/0x10", rflags: 0x46,
                       apic: LocalAPICState(apicID: 0, tpr: 0x10, ppr: 0x10)),
             Make.spinning(1, in: "__pv_queued_spin_lock_slowpath+0x7e/0x370", rflags: 0x46),
             Make.starved(2, entry: 31, irr: [0xfb]),
             Make.vcpu(3, exit: 31, mp: .halted, symbol: "native_halt+0xa/0x10", rflags: 0x46,
                       apic: LocalAPICState(apicID: 3, tpr: 0x10, ppr: 0x10, irr: [0xEC]))]
        })
        #expect(!f.contains { $0.rule == .sleepingInSpinlockWait }, "\(f)")
        let waiter = f.first { $0.rule == .waitingForSpinlock }
        #expect(waiter?.vcpus == [1, 2, 0, 3])
        #expect(waiter?.sentence == "vCPU 1 spins in __pv_queued_spin_lock_slowpath waiting for a spinlock, probably held "
            + "by CPU 2 (not running) (vCPUs 0 and 3 sleep in the paravirtual spinlock wait)")
        #expect(HangDiagnosis.summary(f).hasPrefix(waiter?.sentence ?? "-"))
        #expect(HangDiagnosis.summary(f).contains("vCPU 2 has vector 0xfb pending"), "\(HangDiagnosis.summary(f))")
    }

    @Test func offlineCPUHaltedWithInterruptsOffIsNotASpinlockSleeper() {
        let findings = HangDiagnosis.findings(Make.evidence { Self.bringUp($0, spinnerSymbol: "do_idle+0x1/0x2") })
        #expect(!findings.contains { $0.rule == .sleepingInSpinlockWait || $0.rule == .waitingForSpinlock })
    }
}
