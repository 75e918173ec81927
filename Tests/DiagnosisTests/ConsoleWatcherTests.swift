import Foundation
import Testing
import TestSupport
@testable import Diagnosis

/// Loads a log from Tests/DiagnosisTests/Fixtures.
private func fixture(_ name: String) throws -> String {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures"))
    return try String(contentsOf: url, encoding: .utf8)
}

private func functions(_ frames: [KernelFrame]) -> [String] {
    frames.map(\.function)
}

private func count(_ kind: KernelEvent.Kind, in events: [KernelEvent]) -> Int {
    events.filter { $0.kind == kind }.count
}

// MARK: - Seed logs

@Suite("ConsoleWatcher: seed logs")
struct ConsoleWatcherSeedLogTests {
    @Test func libkrunSoftLockupAndExpeditedStall() throws {
        let events = ConsoleWatcher.events(in: try fixture("seed-libkrun-gic.txt"))
        #expect(events.map(\.kind) == [.softLockup, .rcuExpeditedStall])

        let lockup = try #require(events.first)
        #expect(lockup.cpu == 3)
        #expect(lockup.stuckSeconds == 443)
        #expect(lockup.task == "(udev-worker)")
        #expect(lockup.pid == 634)
        #expect(lockup.timestamp == 476.006034)
        #expect(lockup.headline == "watchdog: BUG: soft lockup - CPU#3 stuck for 443s! [(udev-worker):634]")
        #expect(lockup.rip == nil)
        #expect(functions(lockup.frames) == [
            "smp_call_function_many_cond", "kick_all_cpus_sync", "flush_module_icache", "load_module",
            "init_module_from_file", "idempotent_init_module", "__arm64_sys_finit_module",
        ])
        #expect(lockup.frames.first == KernelFrame(function: "smp_call_function_many_cond", offset: 0x18C, size: 0x778))
        #expect(lockup.topFrame?.function == "smp_call_function_many_cond")

        let stall = events[1]
        #expect(stall.stalledCPUs == [1])
        #expect(stall.detectedBy == 2)
        #expect(stall.nmiTargets == [1])
        #expect(stall.timestamp == 263.138248)
        #expect(functions(stall.frames) == [
            "cpuidle_idle_call", "do_idle", "cpu_startup_entry", "secondary_start_kernel", "__secondary_switched",
        ])
        #expect(stall.frames.first == KernelFrame(function: "cpuidle_idle_call", offset: 0xB0, size: 0x1E8))
        // The pasted trace has no "NMI backtrace for cpu 1" header.
        #expect(stall.nmiTargetsWithoutBacktrace(in: []) == [1])
    }

    @Test func qemuRCUStallWithNMIBacktrace() throws {
        let events = ConsoleWatcher.events(in: try fixture("seed-qemu-srso-icr.txt"))
        #expect(events.map(\.kind) == [.rcuStall, .nmiBacktrace])

        let stall = try #require(events.first)
        #expect(stall.stalledCPUs == [0])
        #expect(stall.detectedBy == 1)
        #expect(stall.nmiTargets == [0])
        #expect(stall.timestamp == 152.698101)
        #expect(stall.frames.isEmpty)
        #expect(stall.nmiTargetsWithoutBacktrace(in: events.dropFirst()) == [])

        let backtrace = events[1]
        #expect(backtrace.cpu == 0)
        #expect(backtrace.detectedBy == 1)
        #expect(backtrace.pid == 117)
        #expect(backtrace.task == "init")
        #expect(backtrace.rip == KernelFrame(function: "default_send_IPI_allbutself", offset: 0x2A, size: 0x60))
        let unreliable = backtrace.frames.filter { !$0.reliable }
        #expect(functions(unreliable) == [
            "nmi_cpu_backtrace", "nmi_cpu_backtrace_handler", "nmi_handle", "default_do_nmi", "exc_nmi",
            "end_repeat_nmi", "default_send_IPI_single", "default_send_IPI_allbutself",
            "default_send_IPI_allbutself", "default_send_IPI_allbutself",
        ])
        #expect(functions(backtrace.frames.filter(\.reliable)) == [
            "native_stop_other_cpus", "native_machine_shutdown", "native_machine_power_off",
            "__se_sys_reboot", "do_syscall_64", "entry_SYSCALL_64_after_hwframe",
        ])
        #expect(backtrace.frames.count == 16)
        #expect(backtrace.frames[10] == KernelFrame(function: "native_stop_other_cpus", offset: 0x7D, size: 0x1F0))
    }

    @Test func kiteVsockStall() throws {
        let events = ConsoleWatcher.events(in: try fixture("kite-vsock2-stall.log"))
        #expect(events.count == 13)
        #expect(count(.rcuStall, in: events) == 4)
        #expect(count(.rcuKthreadStarved, in: events) == 4)
        #expect(count(.softLockup, in: events) == 5)
        #expect(events.map(\.kind) == [
            .rcuStall, .rcuKthreadStarved, .softLockup, .softLockup,
            .rcuStall, .rcuKthreadStarved, .softLockup, .softLockup,
            .rcuStall, .rcuKthreadStarved, .softLockup,
            .rcuStall, .rcuKthreadStarved,
        ])

        let smpCallRIP = KernelFrame(function: "smp_call_function_many_cond", offset: 0xF1, size: 0x330)

        for (index, stall) in events.enumerated() where stall.kind == .rcuStall {
            #expect(stall.stalledCPUs == [0])
            #expect(stall.detectedBy == 1)
            #expect(stall.nmiTargets == [0])
            // CPU 0 never answers the NMI: no "NMI backtrace for cpu 0" anywhere.
            #expect(stall.nmiTargetsWithoutBacktrace(in: events[(index + 1)...]) == [0])
        }
        #expect(events[0].timestamp == 23.27922)
        #expect(events[0].headline == "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:")

        for starved in events where starved.kind == .rcuKthreadStarved {
            #expect(starved.cpu == 1)
            #expect(starved.task == "rcu_preempt")
            #expect(starved.pid == 15)
            // The stack where the kthread last ran, not the kthread's own (__schedule...).
            #expect(starved.rip == smpCallRIP)
            #expect(starved.frames.first == KernelFrame(function: "arch_unregister_cpu", offset: 0x20, size: 0x20, reliable: false))
            #expect(!starved.frames.contains { $0.function == "__schedule" })
            #expect(starved.frames.last?.function == "ret_from_fork")
        }
        // The guest's vsock test printed into the middle of one frame at 86.299194; the
        // report goes on past the mangled line.
        let interrupted = try #require(events.first { $0.kind == .rcuKthreadStarved && $0.timestamp == 86.299194 })
        #expect(interrupted.frames.contains { $0.function == "init_freeable" })
        #expect(interrupted.frames.count == 21)

        let lockups = events.filter { $0.kind == .softLockup }
        #expect(lockups.map(\.stuckSeconds) == [52, 78, 111, 137, 171])
        #expect(lockups.map(\.timestamp) == [57.23662, 85.240434, 121.236536, 149.236571, 185.236543])
        for lockup in lockups {
            #expect(lockup.cpu == 1)
            #expect(lockup.task == "swapper/0")
            #expect(lockup.pid == 1)
            #expect(lockup.rip == smpCallRIP)
            #expect(lockup.frames.count == 21)
            #expect(lockup.frames[0] == KernelFrame(function: "arch_unregister_cpu", offset: 0x20, size: 0x20, reliable: false))
            #expect(Array(functions(lockup.frames.filter(\.reliable)).prefix(4)) == [
                "on_each_cpu_cond_mask", "text_poke_bp_batch", "text_poke_finish", "arch_jump_label_transform_apply",
            ])
            #expect(lockup.frames.last == KernelFrame(function: "ret_from_fork", offset: 0x22, size: 0x30))
        }
    }

    @Test(arguments: ["kite-boot2-healthy.log", "kite-seeds4-healthy.log"])
    func healthyBootHasNoEvents(name: String) throws {
        var watcher = ConsoleWatcher()
        let fed = watcher.feed(try fixture(name).utf8)
        #expect(fed.isEmpty)
        #expect(watcher.pending == nil)
        #expect(watcher.flush().isEmpty)
    }
}

// MARK: - Each kind, in the formats real kernels print

@Suite("ConsoleWatcher: report kinds")
struct ConsoleWatcherKindTests {
    @Test func hungTaskWithoutContextMarkers() throws {
        // 4.16: no <TASK> markers; the user-mode RIP names no symbol.
        let log = """
        [11486.310000] INFO: task logrotate:17344 blocked for more than 120 seconds.
        [11486.310010]       Not tainted 4.16.2-1.el7.elrepo.x86_64 #1
        [11486.310020] "echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.
        [11486.310030] logrotate       D    0 17344  17342 0x00000080
        [11486.310040] Call Trace:
        [11486.310050]  __schedule+0x293/0x8a0
        [11486.310060]  schedule+0x36/0x80
        [11486.310070]  jbd2_log_wait_commit+0x98/0x120 [jbd2]
        [11486.310080]  ? remove_wait_queue+0x60/0x60
        [11486.310090]  jbd2_complete_transaction+0x57/0x90 [jbd2]
        [11486.310100]  ext4_sync_file+0x1ef/0x370 [ext4]
        [11486.310110]  vfs_fsync_range+0x43/0xb0
        [11486.310120]  do_fsync+0x3d/0x70
        [11486.310130]  SyS_fsync+0x10/0x20
        [11486.310140]  do_syscall_64+0x79/0x1b0
        [11486.310150]  entry_SYSCALL_64_after_hwframe+0x3d/0xa2
        [11486.310160] RIP: 0033:0x7fb78036ee00
        [11486.310170] RSP: 002b:00007ffe7e85e088 EFLAGS: 00000246 ORIG_RAX: 000000000000004a
        [11490.100000] systemd-journald[312]: Received SIGTERM.
        """
        var watcher = ConsoleWatcher()
        let events = watcher.feed(Array(log.utf8) + [0x0A])
        #expect(watcher.pending == nil)
        let hung = try #require(events.only)
        #expect(hung.kind == .hungTask)
        #expect(hung.task == "logrotate")
        #expect(hung.pid == 17344)
        #expect(hung.stuckSeconds == 120)
        #expect(hung.rip == nil)
        #expect(hung.frames.count == 11)
        #expect(hung.frames[2] == KernelFrame(function: "jbd2_log_wait_commit", offset: 0x98, size: 0x120, module: "jbd2"))
        #expect(hung.frames[3].reliable == false)
        #expect(hung.frames[5].module == "ext4")
    }

    @Test func hungTaskWithTaskLine() throws {
        // 5.18: the task name holds colons; "task:" line, <TASK> markers.
        let log = """
        [ 2121.800000] INFO: task kworker/u32:2:113 blocked for more than 122 seconds.
        [ 2121.800001]       Not tainted 5.18.0-rc2-daily-default-20220531-0-g46f61a08b40c #dev
        [ 2121.800002] "echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.
        [ 2121.800003] task:kworker/u32:2   state:D stack:13032 pid:  113 ppid:     2 flags:0x00004000
        [ 2121.800004] Call Trace:
        [ 2121.800005]  <TASK>
        [ 2121.800006]  __schedule+0x2a6/0x700
        [ 2121.800007]  schedule+0x38/0xa0
        [ 2121.800008]  </TASK>
        """
        let hung = try #require(ConsoleWatcher.events(in: log).only)
        #expect(hung.kind == .hungTask)
        #expect(hung.task == "kworker/u32:2")
        #expect(hung.pid == 113)
        #expect(hung.stuckSeconds == 122)
        #expect(functions(hung.frames) == ["__schedule", "schedule"])
    }

    @Test func hardLockup() throws {
        let log = """
        [ 5300.443503] NMI watchdog: Watchdog detected hard LOCKUP on cpu 1
        [ 5300.443571] CPU: 1 PID: 0 Comm: swapper/1 Tainted: G OE 5.10.0-18-2-amd64 #1 Debian 5.10.140-1
        [ 5300.443580] Call Trace:
        [ 5300.443584]  qi_flush_iotlb+0x83/0xb0
        [ 5300.443586]  ? fq_ring_free+0x100/0x100
        [ 5300.443590]  ? clockevents_program_event+0x8d/0xf0
        [ 5300.443591]  run_timer_softirq+0x26/0x50
        [ 5300.443595]  asm_sysvec_apic_timer_interrupt+0x12/0x20
        """
        let lockup = try #require(ConsoleWatcher.events(in: log).only)
        #expect(lockup.kind == .hardLockup)
        #expect(lockup.cpu == 1)
        #expect(lockup.detectedBy == nil)
        #expect(lockup.pid == 0)
        #expect(lockup.task == "swapper/1")
        #expect(lockup.frames.count == 5)
        #expect(lockup.topFrame?.function == "qi_flush_iotlb")
    }

    @Test func hardLockupReportedAsWarningByOldKernels() throws {
        // 3.16 reported a hard lockup through WARN(); old-style frames with addresses.
        let log = """
        [86738.578155] ------------[ cut here ]------------
        [86738.583940] WARNING: CPU: 3 PID: 0 at /build/linux-xkTWug/linux-3.16.7-ckt11/kernel/watchdog.c:265 watchdog_overflow_callback+0x98/0xc0()
        [86738.597479] Watchdog detected hard LOCKUP on cpu 3
        [86738.602108] Modules linked in: l2tp_ppp l2tp_netlink l2tp_core ipt_REJECT xt_ratelimit(O) xt_nat
        [86738.704405] CPU: 3 PID: 0 Comm: swapper/3 Tainted: G        W  O  3.16.0-4-amd64 #1 Debian 3.16.7-ckt11-1+deb8u5
        [86738.715991] Hardware name: Gigabyte Technology Co., Ltd. To be filled by O.E.M./Z77-D3H, BIOS F22 11/14/2013
        [86738.727250]  0000000000000009 ffffffff8150b4c5 ffff88021f385c98 ffffffff81067767
        [86738.754019] Call Trace:
        [86738.757919]  <NMI>  [<ffffffff8150b4c5>] ? dump_stack+0x41/0x51
        [86738.765334]  [<ffffffff81067767>] ? warn_slowpath_common+0x77/0x90
        [86738.772980]  [<ffffffff810677cc>] ? warn_slowpath_fmt+0x4c/0x50
        """
        let lockup = try #require(ConsoleWatcher.events(in: log).only)
        #expect(lockup.kind == .hardLockup)
        #expect(lockup.cpu == 3)
        #expect(lockup.pid == 0)
        #expect(lockup.task == "swapper/3")
        #expect(lockup.headline.hasPrefix("WARNING: CPU: 3 PID: 0 at "))
        #expect(lockup.frames == [
            KernelFrame(function: "dump_stack", offset: 0x41, size: 0x51, reliable: false),
            KernelFrame(function: "warn_slowpath_common", offset: 0x77, size: 0x90, reliable: false),
            KernelFrame(function: "warn_slowpath_fmt", offset: 0x4C, size: 0x50, reliable: false),
        ])
    }

    @Test func buddyWatchdogHardLockupNamesTheDetectingCPU() throws {
        let lockup = try #require(ConsoleWatcher.events(in: "[  100.000001] watchdog: CPU1: Watchdog detected hard LOCKUP on cpu 2\n").only)
        #expect(lockup.kind == .hardLockup)
        #expect(lockup.cpu == 2)
        #expect(lockup.detectedBy == 1)
    }

    @Test func panicEndsBeforeItsEndMarker() throws {
        // 6.11, then the "---[ end Kernel panic" line that must not start another panic.
        let log = """
        [    0.987030] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)
        [    0.987874] CPU: 0 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.11.2-300.fc41.x86_64 #1
        [    0.988690] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS edk2-20240813-1.fc40 08/13/2024
        [    0.989607] Call Trace:
        [    0.990007]  <TASK>
        [    0.990409]  dump_stack_lvl+0x5d/0x80
        [    0.990952]  panic+0x155/0x316
        [    0.991418]  mount_root_generic+0x1ce/0x270
        [    0.991981]  prepare_namespace+0x1ec/0x240
        [    0.992520]  kernel_init_freeable+0x2d7/0x310
        [    0.993130]  ? __pfx_kernel_init+0x10/0x10
        [    0.993737]  kernel_init+0x1a/0x140
        ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0) ]---
        """
        var watcher = ConsoleWatcher()
        let events = watcher.feed(Array(log.utf8) + [0x0A])
        let panic = try #require(events.only)
        #expect(panic.kind == .panic)
        #expect(panic.headline == "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)")
        #expect(panic.cpu == 0)
        #expect(panic.pid == 1)
        #expect(panic.task == "swapper/0")
        #expect(panic.frames.count == 7)
        #expect(panic.frames[5] == KernelFrame(function: "__pfx_kernel_init", offset: 0x10, size: 0x10, reliable: false))
        #expect(watcher.flush().isEmpty)
    }

    @Test func oops() throws {
        // 5.4: "invalid opcode" without the "Oops: " prefix of 6.10+.
        let log = """
        [ 1989.380931] invalid opcode: 0000 [#1] SMP NOPTI
        [ 1989.380938] CPU: 3 PID: 6411 Comm: insmod Tainted: G           OE     5.4.18-111-generic #100-KYLINOS
        [ 1989.380943] Hardware name: LENOVO 59083197/CF4620, BIOS VSBA26ZX 03/03/2020
        [ 1989.380948] RIP: 0010:__send_ipi_mask+0x1c1/0x230
        [ 1989.380954] RSP: 0018:ffffaac140e07af0 EFLAGS: 00010002
        """
        let oops = try #require(ConsoleWatcher.events(in: log).only)
        #expect(oops.kind == .oops)
        #expect(oops.cpu == 3)
        #expect(oops.pid == 6411)
        #expect(oops.task == "insmod")
        #expect(oops.rip == KernelFrame(function: "__send_ipi_mask", offset: 0x1C1, size: 0x230))
    }

    @Test func unableToHandlePageFaultAndItsOopsAreOneEvent() throws {
        let log = """
        [24876.683186] BUG: unable to handle page fault for address: 000000006764f0a3
        [24876.684061] #PF: supervisor read access in kernel mode
        [24876.684882] #PF: error_code(0x0000) - not-present page
        [24876.685683] PGD 0 P4D 0
        [24876.686469] Oops: 0000 [#1] SMP NOPTI
        [24876.687256] CPU: 0 PID: 2475854 Comm: sysctl Tainted: G           OE     5.10.35.tfw-aa86f5d #1
        [24876.688064] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS rel-1.15.0-0-g2dd4b9b3f840-prebuilt.qemu.org 04/01/2014
        [24876.689711] RIP: 0010:frang_resp_handler+0x105/0x330 [tempesta_fw]
        [24876.692263] RSP: 0018:ffffb32d800039e8 EFLAGS: 00010202
        """
        let bug = try #require(ConsoleWatcher.events(in: log).only)
        #expect(bug.kind == .bug)
        #expect(bug.headline == "BUG: unable to handle page fault for address: 000000006764f0a3")
        #expect(bug.cpu == 0)
        #expect(bug.pid == 2475854)
        #expect(bug.task == "sysctl")
        #expect(bug.rip == KernelFrame(function: "frang_resp_handler", offset: 0x105, size: 0x330, module: "tempesta_fw"))
    }

    @Test func kernelBUGAt() throws {
        // 7.1: "CPU: N UID: N PID: N", a command name with a space.
        let log = """
        [ 8638.470708] ------------[ cut here ]------------
        [ 8638.470712] kernel BUG at fs/iomap/buffered-io.c:1061!
        [ 8638.470722] Oops: invalid opcode: 0000 [#1] SMP NOPTI
        [ 8638.470726] CPU: 15 UID: 1000 PID: 72081 Comm: Execution worke Tainted: G           O        7.1.3-2-cachyos #1 PREEMPT(full)  4cbaa5915f0b68ebe7d2b4f6ce70e3c8f070458a
        [ 8638.470731] Tainted: [O]=OOT_MODULE
        [ 8638.470735] RIP: 0010:iomap_write_end+0x205/0x210
        [ 8638.470741] RSP: 0018:ffffd258e80978a8 EFLAGS: 00010206
        """
        let bug = try #require(ConsoleWatcher.events(in: log).only)
        #expect(bug.kind == .bug)
        #expect(bug.headline == "kernel BUG at fs/iomap/buffered-io.c:1061!")
        #expect(bug.cpu == 15)
        #expect(bug.pid == 72081)
        #expect(bug.task == "Execution worke")
        #expect(bug.rip == KernelFrame(function: "iomap_write_end", offset: 0x205, size: 0x210))
    }

    @Test func kernelNULLPointerDereference() throws {
        let log = """
        [ 3846.639479] BUG: kernel NULL pointer dereference, address: 0000000000000000
        [ 3846.639481] #PF: supervisor instruction fetch in kernel mode
        [ 3846.639482] #PF: error_code(0x0010) - not-present page
        [ 3846.639483] PGD 0 P4D 0
        [ 3846.639485] Oops: 0010 [#12] SMP PTI
        [ 3846.639486] CPU: 0 PID: 5454 Comm: bpftrace Tainted: G      D    OE     5.2.0-2-amd64 #1 Debian 5.2.7-1
        [ 3846.639489] RIP: 0010:0x0
        [ 3846.639491] Code: Bad RIP value.
        """
        let bug = try #require(ConsoleWatcher.events(in: log).only)
        #expect(bug.kind == .bug)
        #expect(bug.cpu == 0)
        #expect(bug.pid == 5454)
        #expect(bug.task == "bpftrace")
        #expect(bug.rip == nil)
    }

    @Test func warningWithPrintkCallerField() throws {
        // CONFIG_PRINTK_CALLER adds "[    T0]" after the time stamp.
        let log = """
        [    3.278821][    T0] ------------[ cut here ]------------
        [    3.278823][    T0] WARNING: CPU: 1 PID: 0 at arch/powerpc/mm/mmu_context.c:106 switch_mm_irqs_off+0x120/0x150
        [    3.278834][    T0] Modules linked in:
        [    3.278837][    T0] CPU: 1 PID: 0 Comm: swapper/1 Not tainted 6.6.0-rc2 #410
        """
        let warning = try #require(ConsoleWatcher.events(in: log).only)
        #expect(warning.kind == .warning)
        #expect(warning.timestamp == 3.278823)
        #expect(warning.cpu == 1)
        #expect(warning.pid == 0)
        #expect(warning.task == "swapper/1")
    }

    @Test func warningWithRIPAndTrace() throws {
        let log = """
        WARNING: CPU: 1 PID: 4789 at /build/linux-hwe-jDoxDp/linux-hwe-4.18.0/kernel/signal.c:2233 get_signal+0x579/0x5c0
        RIP: 0010:get_signal+0x579/0x5c0
        RSP: 0018:ffffa98f02b5fdb0 EFLAGS: 00010046
        DR3: 0000000000000000 DR6: 00000000fffe0ff0 DR7: 0000000000000400
        Call Trace:
         do_signal+0x37/0x720
         ? __switch_to_asm+0x40/0x70
         ? kmem_cache_free+0x1a7/0x1d0
        """
        let warning = try #require(ConsoleWatcher.events(in: log).only)
        #expect(warning.kind == .warning)
        #expect(warning.timestamp == nil)
        #expect(warning.cpu == 1)
        #expect(warning.pid == 4789)
        #expect(warning.rip == KernelFrame(function: "get_signal", offset: 0x579, size: 0x5C0))
        #expect(functions(warning.frames) == ["do_signal", "__switch_to_asm", "kmem_cache_free"])
        #expect(warning.topFrame == warning.rip)
    }

    @Test func warningInTheNewerFormat() throws {
        // Since 6.19: "WARNING: file:line at function, CPU#N: comm/pid".
        let line = "WARNING: kernel/sched/core.c:6348 at sched_core_cpu_starting+0x510/0x540, CPU#1: swapper/1/0\n"
        let warning = try #require(ConsoleWatcher.events(in: line).only)
        #expect(warning.kind == .warning)
        #expect(warning.cpu == 1)
        #expect(warning.task == "swapper/1")
        #expect(warning.pid == 0)
    }

    @Test func selfDetectedStall() throws {
        let log = """
        rcu: INFO: rcu_preempt self-detected stall on CPU
        rcu:         0-....: (1 GPs behind) idle=3514/0/0x3 softirq=671080/671080 fqs=3762
        rcu:         (t=21002 jiffies g=1292137 q=85 ncpus=2)
        CPU: 0 UID: 0 PID: 0 Comm: swapper/0 Not tainted 6.18.33 #1-NixOS PREEMPT(lazy)
        Hardware name: Oxide OxVM, BIOS v0.8 The Aftermath 30, 3185 YOLD
        RIP: 0010:handle_softirqs+0x8b/0x2a0
        """
        let stall = try #require(ConsoleWatcher.events(in: log).only)
        #expect(stall.kind == .rcuStall)
        #expect(stall.stalledCPUs == [0])
        #expect(stall.cpu == 0)
        #expect(stall.detectedBy == 0)
        #expect(stall.task == "swapper/0")
        #expect(stall.rip == KernelFrame(function: "handle_softirqs", offset: 0x8B, size: 0x2A0))
    }

    @Test func idleCPUAnswersTheNMIWithoutATrace() throws {
        let log = """
        [  553.456118] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:
        [  553.457413] rcu: \t0-...!: (0 ticks this GP) idle=5fc/0/0x0 softirq=11204/11204 fqs=0  (false positive?)
        [  553.460077] \t(detected by 1, t=5252 jiffies, g=12425, q=473)
        [  553.460077] Sending NMI from CPU 1 to CPUs 0:
        [  553.460394] NMI backtrace for cpu 0 skipped: idling at native_safe_halt+0xe/0x20
        [  553.460663] rcu: rcu_sched kthread starved for 5252 jiffies! g12425 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402 ->cpu=0
        [  553.461483] rcu: \tUnless rcu_sched kthread gets sufficient CPU time, OOM is now expected behavior.
        [  553.461483] rcu: RCU grace-period kthread stack dump:
        [  553.461483] task:rcu_sched       state:I stack:    0 pid:   13 ppid:     2 flags:0x00004000
        [  553.461483] Call Trace:
        [  553.461483]  __schedule+0x282/0x880
        [  553.461483]  schedule+0x46/0xb0
        """
        let events = ConsoleWatcher.events(in: log)
        #expect(events.map(\.kind) == [.rcuStall, .nmiBacktrace, .rcuKthreadStarved])
        #expect(events[0].stalledCPUs == [0])
        #expect(events[0].detectedBy == 1)
        #expect(events[0].nmiTargetsWithoutBacktrace(in: events.dropFirst()) == [])
        #expect(events[1].cpu == 0)
        #expect(events[1].detectedBy == 1)
        #expect(events[1].rip == KernelFrame(function: "native_safe_halt", offset: 0xE, size: 0x20))
        #expect(events[1].frames.isEmpty)
        #expect(events[2].cpu == 0)
        #expect(events[2].task == "rcu_sched")
        #expect(events[2].pid == 13)
        #expect(events[2].frames.isEmpty)
    }

    @Test func nmiSenderIsForgottenWhenAnotherReportStarts() throws {
        let log = """
        [   23.279220] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
        [   23.279220] Sending NMI from CPU 1 to CPUs 0:
        [   57.236620] watchdog: BUG: soft lockup - CPU#1 stuck for 52s! [swapper/0:1]
        [   60.000000] NMI backtrace for cpu 0
        """
        let events = ConsoleWatcher.events(in: log)
        #expect(events.map(\.kind) == [.rcuStall, .softLockup, .nmiBacktrace])
        #expect(events[2].cpu == 0)
        #expect(events[2].detectedBy == nil)
    }

    @Test func oldStallWithSeveralCPUsAndTaskDumps() throws {
        // 4.4 arm64, no time stamps, each line indented by a tab.
        let log = """
        INFO: rcu_sched detected stalls on CPUs/tasks:
        \t0-...: (1 GPs behind) idle=d09/1/0 softirq=1302/3861 fqs=20997
        \t2-...: (1 GPs behind) idle=157/2/0 softirq=1341/3334 fqs=20998
        \t(detected by 3, t=21010 jiffies, g=-93, c=-94, q=1)
        Task dump for CPU 0:
        swapper/0       R  running task        0     0      0 0x00000002
        Call trace:
        [<ffffffc000086ed4>] __switch_to+0xd4/0xf8
        [<          (null)>]           (null)
        Task dump for CPU 2:
        swapper/2       R  running task        0     0      1 0x00000000
        Call trace:
        [<ffffffc000086ed4>] __switch_to+0xd4/0xf8
        """
        let stall = try #require(ConsoleWatcher.events(in: log).only)
        #expect(stall.kind == .rcuStall)
        #expect(stall.stalledCPUs == [0, 2])
        #expect(stall.detectedBy == 3)
        #expect(stall.frames == [KernelFrame(function: "__switch_to", offset: 0xD4, size: 0xF8)])
    }

    @Test func stallWithBlockedTasksLine() throws {
        let log = """
        [ 2077.394266] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
        [ 2077.394277] rcu: \tTasks blocked on level-0 rcu_node (CPUs 0-10): P3744/1:b..l
        [ 2077.394280] rcu: \t3-...!: (0 ticks this GP) idle=9ad4/1/0x4000000000000000 softirq=28/28 fqs=8
        [ 2077.394288] \t(detected by 5, t=5252 jiffies, g=-1155, q=21 ncpus=11)
        """
        let stall = try #require(ConsoleWatcher.events(in: log).only)
        #expect(stall.stalledCPUs == [3])
        #expect(stall.detectedBy == 5)
    }

    @Test func expeditedStallsWithSeveralCPUsAndTasks() throws {
        let text = "[  263.138248] rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 1-...D 3-...D P4242 } 21 jiffies s: 173 root: 0x2/.\n"
        let stall = try #require(ConsoleWatcher.events(in: text).only)
        #expect(stall.kind == .rcuExpeditedStall)
        #expect(stall.stalledCPUs == [1, 3])
    }

    @Test func expeditedStallFollowedByNMIBacktrace() throws {
        let log = """
        [178278.672126] rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 3-.... } 235 jiffies s: 2269 root: 0x8/.
        [178278.672212] rcu: blocking rcu_node structures (internal RCU debug):
        [178278.672252] Sending NMI from CPU 0 to CPUs 3:
        [178278.672267] NMI backtrace for cpu 3
        [178278.672272] CPU: 3 PID: 431 Comm: irq/41-iwlwifi Tainted: G        W   E      6.4.8-20230810 #2
        [178278.672277] Hardware name: Default string Default string/Default string, BIOS 4.6.5 10/10/2019
        [178278.672280] RIP: 0010:_raw_spin_lock+0x12/0x30
        """
        let events = ConsoleWatcher.events(in: log)
        #expect(events.map(\.kind) == [.rcuExpeditedStall, .nmiBacktrace])
        #expect(events[0].stalledCPUs == [3])
        #expect(events[0].detectedBy == 0)
        #expect(events[0].nmiTargets == [3])
        #expect(events[1].cpu == 3)
        #expect(events[1].detectedBy == 0)
        #expect(events[1].pid == 431)
        #expect(events[1].task == "irq/41-iwlwifi")
        #expect(events[1].rip == KernelFrame(function: "_raw_spin_lock", offset: 0x12, size: 0x30))
    }

    @Test func expeditedStallTaskDumpEndsAtTask() throws {
        let log = """
        [   27.285351] rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 0-... } 6 jiffies s: 85 root: 0x1/.
        [   27.286588] rcu: blocking rcu_node structures (internal RCU debug):
        [   27.288773] Task dump for CPU 0:
        [   27.289259] task:kworker/u4:4    state:R  running task     stack:    0 pid:  314 ppid:     2 flags:0x00004008
        [   27.290203] Workqueue: events_unbound p_check_integrity [p_lkrg]
        [   27.291091] Call Trace:
        [   27.291776]  <TASK>
        [   27.292109]  __schedule+0x246/0x5c0
        [   27.292716]  __cond_resched+0x33/0x50
        [   27.292990]  process_one_work+0x23c/0x3f0
        [   27.295013]  </TASK>
        """
        var watcher = ConsoleWatcher()
        let events = watcher.feed(Array(log.utf8) + [0x0A])
        let stall = try #require(events.only)
        #expect(watcher.pending == nil)
        #expect(stall.stalledCPUs == [0])
        #expect(stall.task == "kworker/u4:4")
        #expect(stall.pid == 314)
        #expect(functions(stall.frames) == ["__schedule", "__cond_resched", "process_one_work"])
    }

    @Test func framesAndPointersParse() {
        #expect(KernelFrame(traceLine: "smp_call_function_many_cond+0x18c/0x778 (P)")
            == KernelFrame(function: "smp_call_function_many_cond", offset: 0x18C, size: 0x778))
        #expect(KernelFrame(traceLine: "? nmi_cpu_backtrace+0xde/0x110")
            == KernelFrame(function: "nmi_cpu_backtrace", offset: 0xDE, size: 0x110, reliable: false))
        #expect(KernelFrame(traceLine: "foo+0x10/0x20 [virtio_blk]")
            == KernelFrame(function: "foo", offset: 0x10, size: 0x20, module: "virtio_blk"))
        #expect(KernelFrame(traceLine: "nf_confirm+0xfd/0x2b0 [nf_conntrack 0123456789abcdef]")?.module == "nf_conntrack")
        #expect(KernelFrame(traceLine: "[<ffffffff8135067c>] ? __mutex_lock_common.isra.5+0xff/0x164")
            == KernelFrame(function: "__mutex_lock_common.isra.5", offset: 0xFF, size: 0x164, reliable: false))
        #expect(KernelFrame(traceLine: "0xffffffffa06a4368") == nil)
        #expect(KernelFrame(traceLine: "unwind_backtrace from show_stack+0x10/0x14") == nil)
        #expect(KernelFrame(traceLine: "Modules linked in: foo") == nil)
        #expect(KernelFrame(instructionPointer: "0010:smp_call_function_many_cond+0xf1/0x330")
            == KernelFrame(function: "smp_call_function_many_cond", offset: 0xF1, size: 0x330))
        #expect(KernelFrame(instructionPointer: "0010:[<ffffffff812c8ca4>]  [<ffffffff812c8ca4>] intel_idle+0x94/0xe0")?.function == "intel_idle")
        #expect(KernelFrame(instructionPointer: "0033:0x7f1eb35ceffb") == nil)
    }

    @Test func interleavedHostLinesAndJobPrefixesAreIgnored() throws {
        let log = """
        vsock2| [   57.236620] watchdog: BUG: soft lockup - CPU#1 stuck for 52s! [swapper/0:1]
        2026-11-24T19:53:54+0000 notice kite: [kite] port I/O: guest write at unknown address 0x70
        vsock2| [   57.239125] CPU: 1 PID: 1 Comm: swapper/0 Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2
        vsock2| [   57.239125] Call Trace:
        vsock2| [   57.239125]  <TASK>
        2026-11-24T19:53:55+0000 notice kite: [kite] port I/O: guest write at unknown address 0x71
        vsock2| [   57.239125]  on_each_cpu_cond_mask+0x20/0x40
        vsock2| [   57.239125]  </TASK>
        """
        let lockup = try #require(ConsoleWatcher.events(in: log).only)
        #expect(lockup.kind == .softLockup)
        #expect(lockup.timestamp == 57.23662)
        #expect(lockup.headline == "watchdog: BUG: soft lockup - CPU#1 stuck for 52s! [swapper/0:1]")
        #expect(functions(lockup.frames) == ["on_each_cpu_cond_mask"])
    }
}

// MARK: - Streaming

@Suite("ConsoleWatcher: streaming")
struct ConsoleWatcherStreamingTests {
    @Test(arguments: ["kite-vsock2-stall.log", "seed-qemu-srso-icr.txt", "seed-libkrun-gic.txt"])
    func chunkedFeedingGivesTheSameEvents(name: String) throws {
        let log = try fixture(name)
        let whole = ConsoleWatcher.events(in: log)
        #expect(!whole.isEmpty)

        var generator = SplitMix64(seed: 0x4B49_5445)
        let bytes = Array(log.utf8)
        var watcher = ConsoleWatcher()
        var chunked: [KernelEvent] = []
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + Int.random(in: 1...100, using: &generator))
            chunked += watcher.feed(bytes[start..<end])
            start = end
        }
        chunked += watcher.flush()
        #expect(chunked == whole)

        var byteByByte = ConsoleWatcher()
        var single: [KernelEvent] = []
        for byte in bytes { single += byteByByte.feed(CollectionOfOne(byte)) }
        single += byteByByte.flush()
        #expect(single == whole)
    }

    @Test func pendingShowsTheHeadlineAtOnce() throws {
        var watcher = ConsoleWatcher()
        #expect(watcher.pending == nil)
        #expect(watcher.feed("[   57.236620] watchdog: BUG: soft lockup - CPU#1 stuck for 52s! [swapper".utf8).isEmpty)
        #expect(watcher.pending == nil) // the headline line is not finished yet
        #expect(watcher.feed("/0:1]\r\n".utf8).isEmpty)
        let pending = try #require(watcher.pending)
        #expect(pending.kind == .softLockup)
        #expect(pending.cpu == 1)
        #expect(pending.stuckSeconds == 52)
        #expect(pending.task == "swapper/0")

        #expect(watcher.feed("[   57.239125] RIP: 0010:smp_call_function_many_cond+0xf1/0x330\n".utf8).isEmpty)
        #expect(watcher.feed("[   57.239125] Call Trace:\n[   57.239125]  <TASK>\n".utf8).isEmpty)
        #expect(watcher.feed("[   57.239125]  on_each_cpu_cond_mask+0x20/0x40\n".utf8).isEmpty)
        #expect(watcher.pending?.frames.count == 1)
        let completed = watcher.feed("[   57.239125]  </TASK>\n".utf8)
        #expect(completed.map(\.kind) == [.softLockup])
        #expect(completed.first?.rip?.function == "smp_call_function_many_cond")
        #expect(watcher.pending == nil)
        #expect(watcher.flush().isEmpty)
    }

    @Test func flushEndsAReportAndReadsAnUnfinishedLine() throws {
        var watcher = ConsoleWatcher()
        #expect(watcher.feed("[  23.279220] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n".utf8).isEmpty)
        #expect(watcher.feed("[  23.279220] rcu: \t0-...!: (0 ticks this GP) idle=9ad4/1/0x4000000000000000".utf8).isEmpty)
        #expect(watcher.pending?.stalledCPUs == [])
        let flushed = try #require(watcher.flush().only)
        #expect(flushed.kind == .rcuStall)
        #expect(flushed.stalledCPUs == [0])
        #expect(watcher.pending == nil)
        #expect(watcher.bufferedLineLength == 0)
    }

    @Test func aLaterTimestampEndsAReport() throws {
        let log = """
        [  100.000000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
        [  100.000001] rcu: \t1-...!: (0 ticks this GP) idle=9ad4/1/0x4000000000000000 softirq=28/28 fqs=8
        [  130.000000] CPU: 0 PID: 99 Comm: unrelated Not tainted 6.1.0 #1
        """
        var watcher = ConsoleWatcher()
        let completed = watcher.feed(Array(log.utf8) + [0x0A])
        let stall = try #require(completed.only)
        #expect(stall.stalledCPUs == [1])
        #expect(stall.task == nil)
        #expect(stall.cpu == nil)
        #expect(watcher.pending == nil)
    }
}

// MARK: - Hostile input

@Suite("ConsoleWatcher: hostile input")
struct ConsoleWatcherHostileInputTests {
    @Test func randomBytesDoNotCrashOrGrow() {
        var generator = SplitMix64(seed: 0xDEAD_BEEF)
        var watcher = ConsoleWatcher()
        var chunk = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<256 { // 1 MiB
            for index in chunk.indices { chunk[index] = UInt8.random(in: 0...255, using: &generator) }
            for event in watcher.feed(chunk) {
                #expect(event.frames.count <= ConsoleWatcher.maximumFramesPerEvent)
            }
            #expect(watcher.bufferedLineLength <= ConsoleWatcher.maximumLineLength)
        }
        _ = watcher.flush()
        #expect(watcher.pending == nil)
    }

    @Test func randomLinesMadeOfReportWordsDoNotCrash() {
        // Fragments of real reports glued at random, to reach the parsers' odd corners.
        let pieces = [
            "[", "]", " ", "\t", "\n", "0", "1-...D", "{", "}", "P12", ":", "+0x", "/0x", "ff", "[<", ">]", "?",
            "<TASK>", "</TASK>", "<NMI>", "RIP: ", "0010:", "CPU: ", " PID: ", " Comm: ", "task:", " state:", " pid:",
            "watchdog: BUG: soft lockup - CPU#", "stuck for ", "s! [", "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "detected expedited stalls on CPUs/tasks: ", "(detected by ", "Sending NMI from CPU ", " to CPUs ", "-",
            "NMI backtrace for cpu ", " skipped: idling at ", "INFO: task ", " blocked for more than ", "Call Trace:",
            "kthread starved for ", "->cpu=", "WARNING: CPU: ", ", CPU#", "BUG: ", "Oops: ", "[#1]", "99999999999999999999",
            "\u{1B}[31m", "\u{1B}]0;title\u{07}", "\r", "\u{0}", "é", "\u{FFFD}",
        ]
        var generator = SplitMix64(seed: 42)
        var watcher = ConsoleWatcher()
        for _ in 0..<20_000 {
            let piece = pieces[Int.random(in: 0..<pieces.count, using: &generator)]
            for event in watcher.feed(piece.utf8) {
                #expect(event.frames.count <= ConsoleWatcher.maximumFramesPerEvent)
                #expect(event.stalledCPUs.count <= ConsoleWatcher.maximumCPUsPerList)
                #expect(event.nmiTargets.count <= ConsoleWatcher.maximumCPUsPerList)
            }
        }
        _ = watcher.flush()
    }

    @Test func aHugeLineWithoutNewlineIsCapped() throws {
        var watcher = ConsoleWatcher()
        let headline = Array("watchdog: BUG: soft lockup - CPU#7 stuck for 30s! [".utf8)
        #expect(watcher.feed(headline + [UInt8](repeating: UInt8(ascii: "x"), count: 100 * 1024)).isEmpty)
        #expect(watcher.bufferedLineLength == ConsoleWatcher.maximumLineLength)
        let event = try #require(watcher.flush().only)
        #expect(event.kind == .softLockup)
        #expect(event.cpu == 7)
        #expect(event.headline.utf8.count == ConsoleWatcher.maximumLineLength)
        #expect(watcher.bufferedLineLength == 0)
    }

    @Test func endlessTracesAreCapped() throws {
        var watcher = ConsoleWatcher()
        _ = watcher.feed("[    1.000000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [init:1]\nCall Trace:\n".utf8)
        var completed: [KernelEvent] = []
        for index in 0..<10_000 {
            completed += watcher.feed(" frame_\(index)+0x1/0x2\n".utf8)
            #expect((watcher.pending?.frames.count ?? 0) <= ConsoleWatcher.maximumFramesPerEvent)
        }
        // The line cap ended the report long before the 10,000th frame.
        let lockup = try #require(completed.only)
        #expect(lockup.frames.count == ConsoleWatcher.maximumFramesPerEvent)
        #expect(lockup.frames.last?.function == "frame_63")
        #expect(watcher.pending == nil)
    }

    @Test func hugeCPUListsAreCapped() throws {
        let log = """
        rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
        Sending NMI from CPU 1 to CPUs 0-999999999:
        """
        let stall = try #require(ConsoleWatcher.events(in: log).only)
        #expect(stall.nmiTargets.count == ConsoleWatcher.maximumCPUsPerList)
        #expect(stall.nmiTargets.first == 0)
        #expect(stall.detectedBy == 1)
    }

    @Test func controlBytesEscapesAndInvalidUTF8AreDropped() throws {
        var bytes = Array("\u{1B}[1;31m[  476.006034] watch\u{0}dog: BUG: soft lockup - CPU#3 stuck for 443s! [".utf8)
        bytes += [0xFF, 0xFE] // invalid UTF-8 in the task name
        bytes += Array("(udev-worker):634]\u{1B}[0m\r\n".utf8)
        var watcher = ConsoleWatcher()
        #expect(watcher.feed(bytes).isEmpty)
        let lockup = try #require(watcher.pending)
        #expect(lockup.kind == .softLockup)
        #expect(lockup.timestamp == 476.006034)
        #expect(lockup.cpu == 3)
        #expect(lockup.stuckSeconds == 443)
        #expect(lockup.task == "\u{FFFD}\u{FFFD}(udev-worker)")
        #expect(lockup.pid == 634)
    }
}

private extension Array {
    /// The single element, or nil when there are none or several.
    var only: Element? { count == 1 ? first : nil }
}

@Suite struct ReportShapedLineTests {
    @Test func piecesOfAReportAreReportShaped() {
        for line in [
            "[   84.032947]  </TASK>", "[   84.341676] Modules linked in:",
            "[   84.363357] CPU: 1 PID: 20 Comm: migration/1 Tainted: G             L     6.1.0-57-cloud-amd64 #1",
            "[   84.408760] Stopper: multi_cpu_stop+0x0/0x120 <- stop_machine_from_inactive_cpu+0x11d/0x180",
            "[   84.449134] RIP: 0010:rcu_momentary_eqs+0x0/0x70", "[   84.472786] Code: 47 2d 8e e8 12 0b 8f 00",
            "[   84.556858] RSP: 0018:ff6ac10a800bbe70 EFLAGS: 00000246",
            "[   84.761039] FS:  0000000000000000(0000) GS:ff3408e0fe680000(0000) knlGS:0000000000000000",
            "[   84.864833] PKRU: 55555554", "[   84.880013] Call Trace:", "[   84.910948]  multi_cpu_stop+0xbb/0x120",
            "[   84.931459]  ? stop_machine_yield+0x10/0x10", "[  224.3] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996)",
            "[  1.5] ---[ end trace 0000000000000000 ]---", "[  84.9]  kthread+0xda/0x100\r\n",
        ] {
            #expect(ConsoleWatcher.isReportShaped(line), "\(line)")
        }
    }

    @Test func ordinaryLinesAreNot() {
        for line in [
            "KITE-GUEST: hotplug round 4", "[  128.853084] smpboot: CPU 23 is now offline",
            "[    0.179573] ACPI: INT_SRC_OVR (bus 0 bus_irq 9 global_irq 9 high level)",
            "[    7.6] DMA: preallocated 128 KiB GFP_KERNEL pool for atomic allocations",
            "[    2.2] smp: Brought up 1 node, 32 CPUs", "", "[   26.7] PCI: CLS 0 bytes, default 64",
        ] {
            #expect(!ConsoleWatcher.isReportShaped(line), "\(line)")
        }
    }
}
