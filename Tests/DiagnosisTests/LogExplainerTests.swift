import Foundation
import Testing
import TestSupport
@testable import Diagnosis

// MARK: - Prefixes

@Suite("kite explain: log prefixes")
struct LogPrefixTests {
    private func messages(_ line: String) -> [String] {
        LogPrefix.kernelMessages(in: Substring(line)).map(String.init)
    }

    @Test func syslogWithAndWithoutHost() {
        #expect(messages("Jan 23 23:39:43 worker0 kernel: [285737.522743] csd: x") == ["[285737.522743] csd: x"])
        #expect(messages("Dec  3 01:58:46 kernel: watchdog: BUG: soft lockup") == ["watchdog: BUG: soft lockup"])
        #expect(messages("May  1 06:37:33 u1322 kernel: rcu: INFO:") == ["rcu: INFO:"])
    }

    @Test func otherProgramsLinesAreDropped() {
        #expect(messages("Dec  3 01:58:46 host systemd[1]: Started foo.service.").isEmpty)
        #expect(messages("2025-03-03T10:00:01.123456+00:00 host sshd[77]: Accepted").isEmpty)
    }

    @Test func journalShapes() {
        // short-precise, short-iso, short-monotonic.
        #expect(messages("Mar 03 10:00:01.123456 myhost kernel: NMI backtrace for cpu 1") == ["NMI backtrace for cpu 1"])
        #expect(messages("2025-03-03T10:00:01+0000 myhost kernel: NMI backtrace for cpu 1") == ["NMI backtrace for cpu 1"])
        #expect(messages("2025-03-03T10:00:01.5Z myhost kernel: x") == ["x"])
        #expect(messages("[  123.456789] myhost kernel: NMI backtrace for cpu 1") == ["[  123.456789] NMI backtrace for cpu 1"])
    }

    @Test func dmesgShapes() {
        #expect(messages("[Mon Mar  3 10:00:01 2025] watchdog: BUG: soft lockup") == ["watchdog: BUG: soft lockup"])
        #expect(messages("kern  :warn  : [  12.345678] WARNING: CPU: 1 PID: 2") == ["[  12.345678] WARNING: CPU: 1 PID: 2"])
    }

    @Test func rsyslogFoldedLinesComeApart() {
        let folded = "Mar  3 10:00:01 h kernel: INFO: task a:1 blocked for more than 120 seconds.#012Call Trace:#012 schedule+0x1/0x2#011x"
        #expect(messages(folded) == ["INFO: task a:1 blocked for more than 120 seconds.", "Call Trace:", " schedule+0x1/0x2\tx"])
        // "#0117-....:" is a tab, then CPU 7's line.
        #expect(messages("May  1 06:37:33 u kernel: rcu: #0117-....: (2 GPs behind)") == ["rcu: \t7-....: (2 GPs behind)"])
        // Text that only looks like an escape stays.
        #expect(messages("Oops: 0002 [#1] SMP #099") == ["Oops: 0002 [#1] SMP #099"])
    }

    @Test func plainConsoleLinesStayAsTheyAre() {
        for line in ["[    1.234567] Linux version 6.1.0", "watchdog: BUG: soft lockup - CPU#3 stuck for 443s!",
                     "  smp_call_function_many_cond+0x18c/0x778 (P)", "Mar is a month"] {
            #expect(messages(line) == [line])
        }
    }
}

// MARK: - Frames and report details

@Suite("kite explain: report details")
struct LogReportDetailTests {
    @Test func decodedFrames() throws {
        let inline = try #require(KernelFrame(traceLine: " csd_lock_wait kernel/smp.c:443 [inline]"))
        #expect(inline.function == "csd_lock_wait" && inline.inlined && inline.source == "kernel/smp.c:443")
        #expect(inline.size == 0)
        let offset = try #require(KernelFrame(traceLine: " smp_call_function_many_cond+0x1bac/0x2d40 kernel/smp.c:885"))
        #expect(offset.offset == 0x1bac && offset.source == "kernel/smp.c:885" && !offset.inlined)
        let script = try #require(KernelFrame(traceLine: "enqueue_task_fair (kernel/sched/sched.h:2745 kernel/sched/fair.c:7048) "))
        #expect(script.function == "enqueue_task_fair" && script.source == "kernel/sched/sched.h:2745 kernel/sched/fair.c:7048")
        let noLine = try #require(KernelFrame(instructionPointer: "0010:get_random_u32+0x56a/0xab0 arch/x86/include/asm/irqflags.h:-1"))
        #expect(noLine.function == "get_random_u32")
        // A word followed by a word is not a frame; nor is a path without a line.
        #expect(KernelFrame(traceLine: " Loading compiled-in keys") == nil)
        #expect(KernelFrame(traceLine: " foo kernel/smp.c") == nil)
    }

    @Test func csdLockReportNamesWaiterTargetAndTime() throws {
        let log = """
        [  223.051673] smp: csd: Detected non-responsive CSD lock (#1) on CPU#0, waiting 5000000042 ns for CPU#02 do_sync_core+0x0/0x30(0x0).
        [  223.051680] smp: csd: CSD lock (#1) unresponsive.
        """
        let report = try #require(LogExplainer.explain(log).reports.first)
        #expect(report.event.kind == .csdLockTimeout)
        #expect(report.event.cpu == 0 && report.event.stalledCPUs == [2] && report.event.stuckSeconds == 5)
        #expect(report.cpus == [0, 2] && report.waitsFor == [2] && report.ipiWait == "csd_lock_wait")
    }

    @Test func interruptFlagsFromEFLAGSAndPstate() {
        #expect(interruptsEnabled(inRegisterLine: "RSP: 0018:ffffc90000003e48 EFLAGS: 00000246") == true)
        #expect(interruptsEnabled(inRegisterLine: "RSP: 0018:ffffc90000003e48 EFLAGS: 00000046") == false)
        #expect(interruptsEnabled(inRegisterLine: "pstate: 60400005 (nZCv daif -PAN -UAO -TCO -DIT -SSBS BTYPE=--)") == true)
        #expect(interruptsEnabled(inRegisterLine: "pstate: 604000c5 (nZCv daIF +PAN -UAO -TCO -DIT -SSBS BTYPE=--)") == false)
        #expect(interruptsEnabled(inRegisterLine: "RAX: 0000000000000000 RBX: 0") == nil)
    }

    @Test func stallLengthInJiffies() {
        #expect(KernelEvent.stallJiffies(in: "\t(detected by 1, t=5252 jiffies, g=1, q=2)") == 5252)
        #expect(KernelEvent.stallJiffies(in: "\t(t=21002 jiffies g=1234 q=5)") == 21002)
        #expect(KernelEvent.stallJiffies(in: "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 1-...D } 21 jiffies s: 173") == 21)
        #expect(KernelEvent.stallJiffies(in: "jiffies_till_first_fqs=3") == nil)
    }

    @Test func wrappedLinesAreJoinedBack() throws {
        // A mail client wrapped the headline; the continuation has no time stamp of its own.
        let log = """
        [  37.994966] rcu: rcu_preempt kthread starved for 5250 jiffies!
        g1269 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402 ->cpu=4
        [  38.000000] next line
        """
        let report = try #require(LogExplainer.explain(log).reports.first)
        #expect(report.event.kind == .rcuKthreadStarved && report.event.cpu == 4)
    }

    @Test func framesWithoutTimeStampsAreNotJoined() throws {
        let log = """
        [  476.006034] watchdog: BUG: soft lockup - CPU#3 stuck for 443s! [(udev-worker):634] and some more text here
        Call trace:
          smp_call_function_many_cond+0x18c/0x778 (P)
          kick_all_cpus_sync+0x4c/0x80
        """
        let report = try #require(LogExplainer.explain(log).reports.first)
        #expect(report.keyFrames.map(\.function) == ["smp_call_function_many_cond", "kick_all_cpus_sync"])
    }
}

// MARK: - Reading reports together

@Suite("kite explain: diagnosis")
struct LogDiagnosisTests {
    /// The first seed's shape with its answer: a waiter, a request, and the target's backtrace.
    static func waiterAndTarget(targetLines: String) -> String {
        """
        [  100.000000] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [insmod:200]
        [  100.000001] CPU: 0 PID: 200 Comm: insmod Not tainted 6.1.0 #1
        [  100.000002] RIP: 0010:smp_call_function_many_cond+0x11b/0x3c0
        [  100.000003] RSP: 0018:ffffc90000003e48 EFLAGS: 00000202
        [  100.000004] Call Trace:
        [  100.000005]  <TASK>
        [  100.000006]  on_each_cpu_cond_mask+0x1e/0x30
        [  100.000007]  kick_all_cpus_sync+0x1a/0x20
        [  100.000008]  </TASK>
        [  100.100000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
        [  100.100001] rcu: \t1-...!: (0 ticks this GP) idle=1/0/0x1 softirq=1/1 fqs=0
        [  100.100002] \t(detected by 0, t=5252 jiffies, g=1, q=2 ncpus=2)
        [  100.100003] Sending NMI from CPU 0 to CPUs 1:
        \(targetLines)
        """
    }

    @Test func waiterAndAnIdleTarget() throws {
        let log = Self.waiterAndTarget(targetLines: "[  100.100004] NMI backtrace for cpu 1 skipped: idling at native_safe_halt+0xb/0x10")
        let explanation = LogExplainer.explain(log)
        let lockup = try #require(explanation.reports.first)
        #expect(lockup.ipiWait == "smp_call_function_many_cond" && lockup.waitsFor == [1])
        #expect(lockup.diagnosis == "CPU 0 waits in smp_call_function_many_cond for CPU 1; CPU 1's NMI backtrace shows it idle in "
                + "native_safe_halt: the IPI did not wake it (not delivered, or not taken)")
        #expect(explanation.reports.last?.event.detectedBy == 0)
        #expect(explanation.hasHangReport && !explanation.hasCrashReport)
    }

    @Test func waiterAndATargetWithInterruptsOff() throws {
        let log = Self.waiterAndTarget(targetLines: """
        [  100.100004] NMI backtrace for cpu 1
        [  100.100005] CPU: 1 PID: 0 Comm: swapper/1 Not tainted 6.1.0 #1
        [  100.100006] RIP: 0010:my_looping_function+0x5/0x20 [mymod]
        [  100.100007] RSP: 0018:ffffc90000003e48 EFLAGS: 00000046
        [  100.100008] Call Trace:
        [  100.100009]  <NMI>
        [  100.100010]  nmi_cpu_backtrace+0x1/0x2
        [  100.100011]  </NMI>
        [  100.100012]  <TASK>
        [  100.100013]  do_something+0x1/0x2
        [  100.100014]  </TASK>
        """)
        let lockup = try #require(LogExplainer.explain(log).reports.first)
        #expect(lockup.diagnosis == "CPU 0 waits in smp_call_function_many_cond for CPU 1; CPU 1's NMI backtrace shows it in "
                + "my_looping_function with interrupts off")
    }

    @Test func targetThatNeverAnswers() throws {
        let log = Self.waiterAndTarget(targetLines: "[  110.000000] some unrelated line")
        let explanation = LogExplainer.explain(log)
        let stall = try #require(explanation.reports.first { $0.event.kind == .rcuStall })
        #expect(stall.unansweredNMI == [1])
        #expect(try #require(explanation.reports.first).diagnosis?.hasSuffix(
            "CPU 1 never answered the NMI sent for its backtrace: it cannot take one (stuck with NMIs blocked, or not running at all)") == true)
    }

    @Test func reportsOfAnotherBootSayNothing() throws {
        // The same stall, then a reboot (time stamps go back) and an idle CPU 1 answering.
        let log = Self.waiterAndTarget(targetLines: """
        [    0.000000] Linux version 6.1.0
        [    5.000000] NMI backtrace for cpu 1 skipped: idling at native_safe_halt+0xb/0x10
        """)
        let explanation = LogExplainer.explain(log)
        #expect(explanation.reports.first?.diagnosis?.contains("never answered") == true)
        #expect(explanation.reports.last?.boot == 1)
    }

    @Test func hungTaskNamesWhereItWaits() throws {
        let log = """
        [  245.000000] INFO: task khugepaged:330 blocked for more than 122 seconds.
        [  245.000001] task:khugepaged      state:D stack:0     pid:330   ppid:2      flags:0x00004000
        [  245.000002] Call Trace:
        [  245.000003]  <TASK>
        [  245.000004]  __schedule+0x1/0x2
        [  245.000005]  schedule+0x1/0x2
        [  245.000006]  synchronize_rcu_expedited+0x1/0x2
        [  245.000007]  lru_add_drain_all+0x1/0x2
        [  245.000008]  </TASK>
        """
        let report = try #require(LogExplainer.explain(log).reports.first)
        #expect(report.diagnosis == "task khugepaged (pid 330) has been blocked for more than 122 s in lru_add_drain_all")
    }

    @Test func callerIdsPullInterleavedReportsApart() throws {
        // Two CPUs print at once; with CONFIG_PRINTK_CALLER each keeps its own frames.
        let log = """
        [  10.000000][    C0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a:1]
        [  10.000001][    C1] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [b:2]
        [  10.000002][    C0] RIP: 0010:first_function+0x1/0x2
        [  10.000003][    C1] RIP: 0010:second_function+0x1/0x2
        [  10.000004][    C0] Call Trace:
        [  10.000005][    C1] Call Trace:
        [  10.000006][    C0]  caller_a+0x1/0x2
        [  10.000007][    C1]  caller_b+0x1/0x2
        """
        let reports = LogExplainer.explain(log).reports
        #expect(reports.map(\.event.cpu) == [0, 1])
        #expect(reports.map(\.line) == [1, 2])
        #expect(reports.map { $0.keyFrames.map(\.function) } == [["first_function", "caller_a"], ["second_function", "caller_b"]])
    }

    @Test func bareAddressesAreNamedWithSymbols() throws {
        let symbols = try KernelSymbols(systemMap: """
        ffffffff81000000 T _text
        ffffffff81100000 T smp_call_function_many_cond
        ffffffff81100400 T on_each_cpu_cond_mask
        ffffffff81100500 T end_of_text
        """)
        let log = """
        [  100.000000] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [insmod:200]
        [  100.000002] RIP: 0010:0xffffffff9f100010
        [  100.000004] Call Trace:
        [  100.000006]  0xffffffff9f100410
        [  100.000008] Kernel Offset: 0x1e000000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)
        """
        var explainer = LogExplainer(symbols: symbols, kaslrOffset: 0x1e00_0000)
        explainer.feed(log.utf8)
        let report = try #require(explainer.finish().reports.first)
        #expect(report.event.rip?.function == "smp_call_function_many_cond")
        #expect(report.event.rip?.offset == 0x10)
        #expect(report.keyFrames.map(\.function) == ["smp_call_function_many_cond", "on_each_cpu_cond_mask"])
    }

    @Test func jsonIsValidAndCarriesTheDiagnosis() throws {
        let explanation = LogExplainer.explain(Self.waiterAndTarget(
            targetLines: "[  100.100004] NMI backtrace for cpu 1 skipped: idling at native_safe_halt+0xb/0x10"))
        let json = explanation.json(name: "a \"quoted\" name\n")
        #expect(!json.contains("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["file"] as? String == "a \"quoted\" name\n")
        let reports = try #require(object["reports"] as? [[String: Any]])
        #expect(reports.count == 3)
        #expect(reports[0]["waits_for"] as? [Int] == [1])
        #expect((reports[0]["diagnosis"] as? String)?.hasPrefix("CPU 0 waits in smp_call_function_many_cond") == true)
        #expect(reports[2]["asked_by"] as? Int == 0)
    }

    @Test func textNamesEveryReportAndItsLine() {
        let text = LogExplainer.explain(Self.waiterAndTarget(
            targetLines: "[  100.100004] NMI backtrace for cpu 1 skipped: idling at native_safe_halt+0xb/0x10")).text(name: "x.log")
        #expect(text.hasPrefix("x.log: 3 reports in 14 lines: 1 soft lockup, 1 RCU stall, 1 NMI backtrace\n"))
        #expect(text.contains("#1 line 1 [100.0] soft lockup: CPU 0, stuck for 26 s, task insmod pid 200"))
        #expect(text.contains("#3 line 14 [100.100004] NMI backtrace: CPU 1, asked by CPU 0"))
    }
}

// MARK: - Hostile input

@Suite("kite explain: hostile input")
struct LogExplainerHostileInputTests {
    @Test func aTenMegabyteLineIsCut() {
        var explainer = LogExplainer()
        let line = [UInt8](repeating: UInt8(ascii: "A"), count: 10 << 20)
        explainer.feed(Array("watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [x:1] ".utf8) + line + [0x0A])
        explainer.feed("[  1.0] NMI backtrace for cpu 1 skipped: idling at native_safe_halt+0xb/0x10\n".utf8)
        let explanation = explainer.finish()
        #expect(explanation.lines == 2)
        #expect(explanation.reports.map(\.event.kind) == [.softLockup, .nmiBacktrace])
        #expect(explanation.reports[0].event.headline.utf8.count <= ConsoleWatcher.maximumLineLength)
    }

    @Test func binaryGarbageDoesNotCrash() {
        var generator = SplitMix64(seed: 7)
        var explainer = LogExplainer()
        var chunk = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<256 {   // 1 MiB
            for index in chunk.indices { chunk[index] = UInt8.random(in: 0...255, using: &generator) }
            explainer.feed(chunk)
        }
        let explanation = explainer.finish()
        #expect(explanation.reports.count <= LogExplainer.maximumReports)
        _ = explanation.text(name: "garbage")
        _ = explanation.json(name: "garbage")
    }

    @Test func truncatedReportsAreStillReported() {
        let log = """
        [  476.006034] watchdog: BUG: soft lockup - CPU#3 stuck for 443s! [(udev-worker):634]
        [  476.006143] Call trace:
        [  476.006144]  smp_call_funct
        """
        let explanation = LogExplainer.explain(log)
        #expect(explanation.reports.map(\.event.kind) == [.softLockup])
        #expect(explanation.reports[0].event.cpu == 3)
    }

    @Test func reportsPastTheLimitAreCountedNotKept() {
        var explainer = LogExplainer()
        let headline = Array("NMI backtrace for cpu 1 skipped: idling at native_safe_halt+0xb/0x10\n".utf8)
        for _ in 0..<(LogExplainer.maximumReports + 25) { explainer.feed(headline) }
        let explanation = explainer.finish()
        #expect(explanation.reports.count == LogExplainer.maximumReports)
        #expect(explanation.droppedReports == 25)
    }

    @Test func manyCallersDoNotGrowWithoutBound() {
        var explainer = LogExplainer()
        for pid in 0..<5000 {
            explainer.feed("[  1.000000][ T\(pid)] INFO: task t:\(pid) blocked for more than 120 seconds.\n".utf8)
        }
        let explanation = explainer.finish()
        #expect(explanation.reports.count == 5000)
        #expect(explanation.reports.map(\.line) == Array(1...5000))
    }
}
