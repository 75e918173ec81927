import Foundation
import Testing
@testable import VMM

/// What counts as progress on the console, and which reports the hang watchdog gets.
@Suite struct ConsoleMonitorTests {
    static func feed(_ m: ConsoleMonitor, _ text: String) { m.observe(Array(text.utf8)) }

    @Test func ordinaryLinesAndPartialLinesAreProgress() {
        let m = ConsoleMonitor()
        usleep(300_000)
        Self.feed(m, "KITE-GUEST: modload round 1\n")
        #expect(m.secondsWithoutProgress < 0.2)
        usleep(300_000)
        Self.feed(m, "......")                  // no newline yet: still progress
        #expect(m.secondsWithoutProgress < 0.2)
    }

    @Test func aHangReportIsNotProgressAndIsHandedOver() {
        let m = ConsoleMonitor()
        Self.feed(m, "KITE-GUEST: modload round 7\n")
        usleep(400_000)
        Self.feed(m, """
        [   73.585913] watchdog: BUG: soft lockup - CPU#0 stuck for 45s! [insmod:664]
        [   73.589688] CPU: 0 PID: 664 Comm: insmod Not tainted 6.1.0-56-cloud-amd64 #1
        [   73.589688] RIP: 0010:smp_call_function_many_cond+0xf1/0x330
        [   73.589688] Call Trace:
        [   73.589688]  <TASK>
        [   73.589688]  on_each_cpu_cond_mask+0x20/0x40
        [   73.589688]  </TASK>

        """)
        // The report's lines (its headline included) took nothing back from the quiet time.
        #expect(m.secondsWithoutProgress >= 0.4)
        #expect(m.quietSeconds < 0.2)
        let events = m.takeEvents(closeAfterQuietSeconds: 0)
        #expect(events.map(\.kind) == [.softLockup])
        #expect(events.first?.cpu == 0 && events.first?.rip?.function == "smp_call_function_many_cond")
        #expect(m.takeEvents(closeAfterQuietSeconds: 0).isEmpty)   // handed over once
        // The RCU watchdog's follow-up lines, which start no report of their own, are not
        // progress either.
        Self.feed(m, "[   60.406195] rcu: rcu_preempt kthread timer wakeup didn't happen for 2514 jiffies!\n"
                  + "[   60.406195] rcu: \tPossible timer handling issue on cpu=3 timer-softirq=912\n")
        #expect(m.secondsWithoutProgress >= 0.4)
        Self.feed(m, "KITE-GUEST: modload round 8\n")
        #expect(m.secondsWithoutProgress < 0.2)
    }
}
