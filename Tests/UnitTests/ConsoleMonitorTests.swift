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

    /// Two CPUs' soft-lockup reports printed at once, their lines interleaved (as the
    /// hanghotplug4 boot test printed them in a loaded testbed): no line of either is progress,
    /// even where the second report's headline cuts into the first one's register dump.
    @Test func interleavedLockupReportsAreNotProgress() {
        let m = ConsoleMonitor()
        Self.feed(m, "KITE-GUEST: hotplug round 4\n")
        usleep(400_000)
        Self.feed(m, Self.interleavedLockups + "\n")
        #expect(m.secondsWithoutProgress >= 0.4)
        // Both CPUs' reports still reach the watchdog (the excerpt holds two rounds of them).
        #expect(Set(m.takeEvents(closeAfterQuietSeconds: 0).filter { $0.kind == .softLockup }.compactMap(\.cpu)) == [0, 1])
    }

    static let interleavedLockups = """
        [   84.796623] CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033
        [   84.822471] CR2: 0000000000000000 CR3: 0000000039210000 CR4: 0000000000751ea0
        [   84.864833] PKRU: 55555554
        [   84.880013] Call Trace:
        [   84.896795]  <TASK>
        [   84.910948]  multi_cpu_stop+0xbb/0x120
        [   84.931459]  ? stop_machine_yield+0x10/0x10
        [   84.951744]  cpu_stopper_thread+0x93/0x140
        [   84.975020]  ? sort_range+0x20/0x20
        [   84.996874]  smpboot_thread_fn+0xd8/0x1d0
        [   85.016797]  kthread+0xda/0x100
        [   85.035671]  ? kthread_complete_and_exit+0x20/0x20
        [   85.058444]  ret_from_fork+0x22/0x30
        [   85.083249]  </TASK>
        [  111.504837] watchdog: BUG: soft lockup - CPU#0 stuck for 78s! [migration/0:16]
        [  111.557271] Modules linked in:
        [  111.575790] CPU: 0 PID: 16 Comm: migration/0 Tainted: G             L     6.1.0-57-cloud-amd64 #1  Debian 6.1.192-3
        [  111.636012] Stopper: multi_cpu_stop+0x0/0x120 <- stop_machine_from_inactive_cpu+0x11d/0x180
        [  111.685066] RIP: 0010:stop_machine_yield+0x2/0x10
        [  111.712859] Code: 48 2b 14 25 28 00 00 00 75 11 48 8b 5d f8 c9 c3 cc cc cc cc b8 fe ff ff ff eb df e8 98 49 88 00 0f 1f 84 00 00 00 00 00 f3 90 <c3> cc cc cc cc 66 0f 1f 84 00 00 00 00 00 0f 1f 44 00 00 41 57 41
        [  111.821179] RSP: 0018:ff6ac10a80083e70 EFLAGS: 00000246
        [  111.848859] RAX: 0000000000000000 RBX: ff6ac10a800a3e88 RCX: ff3408e0fe623590
        [  111.893726] RDX: 0000000000000004 RSI: ff3408e0fe6235a0 RDI: ff3408e0ff9bcf40
        [  111.933207] RBP: ff6ac10a800a3eac R08: 0000000000000014 R09: 0000000000000004
        [  111.980517] R10: 0000000000000001 R11: 0000000000000001 R12: 0000000000000001
        [  112.025061] watchdog: BUG: soft lockup - CPU#1 stuck for 78s! [migration/1:20]
        [  112.028201] R13: ff3408e0ff9bcf40 R14: 0000000000000001 R15: ffffffff8c982601
        [  112.028665] FS:  0000000000000000(0000) GS:ff3408e0fe600000(0000) knlGS:0000000000000000
        [  112.028690] CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033
        [  112.028696] CR2: 000000000e027cd1 CR3: 0000000001950000 CR4: 0000000000751eb0
        [  112.028740] PKRU: 55555554
        [  112.028751] Call Trace:
        [  112.028777]  <TASK>
        [  112.028789]  multi_cpu_stop+0x9d/0x120
        [  112.028860]  ? stop_machine_yield+0x10/0x10
        [  112.028867]  cpu_stopper_thread+0x93/0x140
        [  112.028875]  ? sort_range+0x20/0x20
        [  112.028885]  smpboot_thread_fn+0xd8/0x1d0
        [  112.028894]  kthread+0xda/0x100
        [  112.028903]  ? kthread_complete_and_exit+0x20/0x20
        [  112.028912]  ret_from_fork+0x22/0x30
        [  112.028931]  </TASK>
        [  112.502707] Modules linked in:
        [  112.521049] CPU: 1 PID: 20 Comm: migration/1 Tainted: G             L     6.1.0-57-cloud-amd64 #1  Debian 6.1.192-3
        [  112.581640] Stopper: multi_cpu_stop+0x0/0x120 <- stop_machine_from_inactive_cpu+0x11d/0x180
        [  112.625030] RIP: 0010:stop_machine_yield+0x2/0x10
        [  112.655275] Code: 48 2b 14 25 28 00 00 00 75 11 48 8b 5d f8 c9 c3 cc cc cc cc b8 fe ff ff ff eb df e8 98 49 88 00 0f 1f 84 00 00 00 00 00 f3 90 <c3> cc cc cc cc 66 0f 1f 84 00 00 00 00 00 0f 1f 44 00 00 41 57 41
        [  112.752936] RSP: 0018:ff6ac10a800bbe70 EFLAGS: 00000246
        [  112.788812] RAX: 0000000000000000 RBX: ff6ac10a800a3e88 RCX: ff3408e0fe6a3590
        [  112.828957] RDX: 0000000000000004 RSI: ff3408e0fe6a35a0 RDI: ff3408e0ff9bcf40
        [  112.871667] RBP: ff6ac10a800a3eac R08: 0000000000000000 R09: 0000000000000000
        [  112.914133] R10: 0000000000000000 R11: 0000000000000000 R12: 0000000000000001
        [  112.953105] R13: ff3408e0ff9bcf40 R14: 0000000000000001 R15: ffffffff8c982601
        [  113.000550] FS:  0000000000000000(0000) GS:ff3408e0fe680000(0000) knlGS:0000000000000000
        [  113.042631] CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033
        [  113.078983] CR2: 0000000000000000 CR3: 0000000039210000 CR4: 0000000000751ea0
        [  113.116231] PKRU: 55555554
        [  113.135228] Call Trace:
        [  113.149529]  <TASK>
        [  113.171573]  multi_cpu_stop+0x9d/0x120
        [  113.197277]  ? stop_machine_yield+0x10/0x10
        [  113.222274]  cpu_stopper_thread+0x93/0x140
        [  113.249044]  ? sort_range+0x20/0x20
        [  113.272991]  smpboot_thread_fn+0xd8/0x1d0
        [  113.304469]  kthread+0xda/0x100
        [  113.321077]  ? kthread_complete_and_exit+0x20/0x20
        [  113.353352]  ret_from_fork+0x22/0x30
        [  113.377070]  </TASK>
        [  139.516421] watchdog: BUG: soft lockup - CPU#0 stuck for 104s! [migration/0:16]
        [  139.552907] Modules linked in:
        [  139.568809] CPU: 0 PID: 16 Comm: migration/0 Tainted: G             L     6.1.0-57-cloud-amd64 #1  Debian 6.1.192-3
        [  139.612925] Stopper: multi_cpu_stop+0x0/0x120 <- stop_machine_from_inactive_cpu+0x11d/0x180
        [  139.652925] RIP: 0010:stop_machine_yield+0x2/0x10
        [  139.671833] Code: 48 2b 14 25 28 00 00 00 75 11 48 8b 5d f8 c9 c3 cc cc cc cc b8 fe ff ff ff eb df e8 98 49 88 00 0f 1f 84 00 00 00 00 00 f3 90 <c3> cc cc cc cc 66 0f 1f 84 00 00 00 00 00 0f 1f 44 00 00 41 57 41
        [  139.748781] RSP: 0018:ff6ac10a80083e70 EFLAGS: 00000246
        [  139.772949] RAX: 0000000000000000 RBX: ff6ac10a800a3e88 RCX: ff3408e0fe623590
        [  139.804954] RDX: 0000000000000004 RSI: ff3408e0fe6235a0 RDI: ff3408e0ff9bcf40
        [  139.841568] RBP: ff6ac10a800a3eac R08: 0000000000000014 R09: 0000000000000004
        [  139.867076] R10: 0000000000000001 R11: 0000000000000001 R12: 0000000000000001
        [  139.903378] R13: ff3408e0ff9bcf40 R14: 0000000000000001 R15: ffffffff8c982601
        [  139.935927] FS:  0000000000000000(0000) GS:ff3408e0fe600000(0000) knlGS:0000000000000000
        [  139.972790] CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033
        [  140.000701] CR2: 000000000e027cd1 CR3: 0000000001950000 CR4: 0000000000751eb0
        [  140.030621] PKRU: 55555554
        [  140.035781] watchdog: BUG: soft lockup - CPU#1 stuck for 104s! [migration/1:20]
        [  140.045654] Call Trace:
        [  140.045709]  <TASK>
        [  140.045721]  multi_cpu_stop+0x9d/0x120
        [  140.045792]  ? stop_machine_yield+0x10/0x10
        [  140.045800]  cpu_stopper_thread+0x93/0x140
        [  140.045808]  ? sort_range+0x20/0x20
        [  140.045817]  smpboot_thread_fn+0xd8/0x1d0
        [  140.045826]  kthread+0xda/0x100
        [  140.045835]  ? kthread_complete_and_exit+0x20/0x20
        [  140.045843]  ret_from_fork+0x22/0x30
        [  140.045861]  </TASK>
        [  140.289910] Modules linked in:
        [  140.310344] CPU: 1 PID: 20 Comm: migration/1 Tainted: G             L     6.1.0-57-cloud-amd64 #1  Debian 6.1.192-3
        [  140.358540] Stopper: multi_cpu_stop+0x0/0x120 <- stop_machine_from_inactive_cpu+0x11d/0x180
        [  140.399583] RIP: 0010:rcu_momentary_eqs+0x0/0x70
        [  140.423217] Code: 47 2d 8e e8 12 0b 8f 00 e9 3f ff ff ff 31 db 48 89 e6 48 c7 c7 08 5f 32 8e e8 3c f5 fc ff eb 94 e8 e5 f9 8d 00 0f 1f 44 00 00 <48> c7 c0 68 da 02 00 ba 08 00 00 00 65 c6 05 10 b2 70 73 00 65 48
        """
}
