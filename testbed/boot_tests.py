#!/usr/bin/env python3
"""Kite Linux boot tests.

Boots Debian's cloud kernel + the busybox test initramfs (testbed/guest/init) with kite,
several guests per testbed session: inside L1 (QEMU TCG with emulated SVM, see
testbed/run-job.sh) when this host has no usable hardware virtualization, else directly.

    python3 testbed/boot_tests.py                  # boot1..boot32 seeds4 pvh2 reboot2 rebootkbd2
    python3 testbed/boot_tests.py --extended       # + boot64, boot288-split, the short SMP boots in a two-CPU L1, healthy4 for 10 minutes
    python3 testbed/boot_tests.py --only boot4,seeds4
    python3 testbed/boot_tests.py --cpus-list 1,3,8
    python3 testbed/boot_tests.py --l1-smp 2       # every test in a two-CPU L1 (see TWO_CPU_L1_BOOTS)
    python3 testbed/boot_tests.py --jobs 1         # one L1 session at a time

Sessions run side by side while their L1s' CPUs fit in the host's (main): on two host CPUs,
two one-CPU L1 sessions at once; a two-CPU session (--extended, --l1-smp 2) runs first, alone.

The bring-up test (issue 10) boots 32 vCPUs with BRINGUP_CMDLINE under kite. --extended runs
it five times in a one-CPU and five times in a two-CPU L1, each beside the same guest under
QEMU/KVM in the same L1 sessions as the control ("CONTROL PASS/FAIL qemu-...", never counted
as a failure); "SIDE BY SIDE" lines compare the two.

Env: KITE_BIN (default .build/release/kite), KITE_FORCE_L1=1, and what run-job.sh reads.
Prints one line per test ("PASS name (12.3 s)" / "FAIL name: reason"), then exactly
"N passed, N failed"; exits 1 if any test failed. Failures of the testbed itself (L1
panicked, never printed "L1: kvm ready", died or timed out before/while a test ran) are
reported as "FAIL name: TESTBED FAILURE: ..."; such a test runs once more in a new L1
session ("RETRY name"), and counts as failed if the testbed fails it again. A test whose
kite run fails is also run once more: if that passes it is listed as "FLAKY name: ..."
(an intermittent bug to find), if it fails too the test fails. The log ends with a summary of
every retry and what its first run's failure was ("# retries: ...").

Every kite run has the hang watchdog armed (--hang-timeout and --report; see watch_args), so
a guest that stalls leaves kite's snapshot, and a failure's reason quotes its diagnosis.
"""
import argparse
import functools
import json
import os
import queue
import re
import shlex
import struct
import shutil
import signal
import subprocess
import sys
import threading
import time

# ---- tunables -------------------------------------------------------------------------
# Per-test deadline (seconds of wall time from the VMM's start to its exit), by test name;
# DEFAULT_DEADLINES by kind when the name is not listed. Generous: TCG is slow.
DEADLINES = {
    "boot16": 300,
    "boot32": 600,
    "boot64": 900,
    "boot288-split": 2400,
    "boot32-userspace": 600,
    "seeds4": 240,
}
DEFAULT_DEADLINES = {"bringup": 900, "hang": 240, "healthy": 900, "boot": 120, "seeds": 240, "pvh": 120, "reboot": 120, "input": 120, "rng": 120, "hvc": 120, "net": 240, "vsock": 240, "netifs": 120, "disk": 240, "diskro": 120, "ext4": 360, "disksync": 240, "diskfull": 240, "diskeio": 240, "tapgone": 240, "vsockpeer": 120, "triplefault": 60, "boottest": 1200, "boottesthang": 400, "fckata": 420, "fcsdk": 300}
GUEST_MEMORY = "1G"
L1_READY_TIMEOUT = 240    # s from session start (includes building the L1 image) to "kvm ready"
HOST_SLACK = 30           # s past a test's deadline before the host kills the whole session
# L1's init prints "L1: alive ..." every 10 s while its kernel still schedules its own tasks.
# Silence (no line at all) for this long means L1 itself is stuck (with one CPU: held in the L2 guest, or its
# kernel wedged), which no VMM inside it can report: the session is killed as a testbed failure.
L1_HEARTBEAT_LIMIT = 90
BATCH_SIZE = 6            # most L2 boots per L1 session
TAIL_LINES = 40

# Any of these in an L2 console fails the test.
GUEST_BAD = [
    "soft lockup", "rcu: INFO", "blocked for more than", "BUG:", "Call Trace:",
    "Kernel panic",
]
# Any of these on L1's own console (not an L2 line) marks a testbed failure.
L1_BAD = [
    "Kernel panic", "BUG:", "Call Trace:", "soft lockup", "rcu: INFO", "blocked for more than",
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("KITE_CACHE", os.path.join(ROOT, ".cache"))
TESTBED = os.path.join(ROOT, "testbed")


class Test:
    scale = 1.0  # --deadline-scale

    # kind -> (guest init mode, kite exit status expected, kernel variable in the job)
    KINDS = {
        "boot": ("boot", 0, "$GUEST_KERNEL"),
        "seeds": ("seeds", 0, "$GUEST_KERNEL"),
        "pvh": ("boot", 0, "$GUEST_VMLINUX"),     # ELF vmlinux entered through its PVH note
        "reboot": ("reboot", 3, "$GUEST_KERNEL"),  # guest reboot: kite exits with status 3
        "input": ("input", 0, "$GUEST_KERNEL"),    # console input: kite's stdin -> ttyS0
        "rng": ("rng", 0, "$GUEST_KERNEL"),        # virtio-rng over virtio-mmio (kite --rng)
        "hvc": ("hvc", 0, "$GUEST_KERNEL"),        # virtio-console: output and input on hvc0
        "net": ("net", 0, "$GUEST_KERNEL"),        # virtio-net on a tap: ping both ways, 16 MiB TCP
        "tapgone": ("tapgone", 0, "$GUEST_KERNEL"),  # the tap deleted under the running guest
        "vsock": ("vsock", 0, "$GUEST_KERNEL"),    # virtio-vsock both ways over Unix sockets
        "vsockpeer": ("vsockpeer", 0, "$GUEST_KERNEL"),  # host peers that hang up or never read
        "netifs": ("netifs", 0, "$GUEST_KERNEL"),  # two --net interfaces with configured MACs
        "disk": ("disk", 0, "$GUEST_KERNEL"),      # virtio-blk: 64 MiB written, checked on the host side
        "diskro": ("diskro", 0, "$GUEST_KERNEL"),  # virtio-blk readonly=on: writes fail in the guest
        # ext4 made in the testbed: 64 MiB written by the guest, read back by debugfs, then a
        # second boot mounts it read-only (one test, two kite runs)
        "ext4": ("ext4", 0, "$GUEST_KERNEL"),
        # The image's host file system fills up part-way (a 40 MiB tmpfs under a 64 MiB
        # image): the guest sees write errors, its flushed data survives, kite goes on.
        "diskfull": ("diskfull", 0, "$GUEST_KERNEL"),
        # A disk on device-mapper's error target: every read, write-back and flush fails (EIO).
        "diskeio": ("diskeio", 0, "$GUEST_KERNEL"),
        # SIGKILL right after the guest's sync: the job exits 0 once it killed kite.
        "disksync": ("disksync", 0, "$GUEST_KERNEL"),
        # A tiny multiboot guest that triple-faults (ud2 with no IDT, TRIPLE_FAULT_GUEST): kite
        # exits 4, and the crash report or, on AMD where KVM resets the registers first,
        # L1's KVM trace must still say where (see check_triplefault_log).
        "triplefault": (None, 4, "$TMPDIR/triplefault.bin"),
        # Hang diagnosis: kite --inject stall-vcpu=2@45s under a load (the test's mode, see
        # HANG_LOADS); kite must report the hang and exit 5 (see check_hang_log).
        "hang": (None, 5, "$GUEST_KERNEL"),
        # No false alarm: 10 minutes of the same load with the watchdog armed, kite inspect
        # on the side; the guest powers off by itself.
        "healthy": ("modload", 0, "$GUEST_KERNEL"),
        # Issue 10: 32 vCPUs brought up, modules loaded, every CPU hot-plugged three times
        # (31 more bring-ups each round), power-off; with the guest's own lockup and RCU stall
        # detectors on short fuses (BRINGUP_CMDLINE) and kite's hang watchdog armed. Run under
        # kite and, as the control, under QEMU/KVM in the same L1 (vmm="qemu").
        "bringup": ("seeds", 0, "$GUEST_KERNEL"),
        # `kite boot-test` (BOOTTEST_ARGS): its table, --json and --junit checked by
        # check_boottest_log. boottest: Kite's built-in initramfs, every run must pass (exit 0);
        # boottesthang: one run stalled by --inject must be a "hung" row (exit 1).
        "boottest": (None, 0, "$GUEST_KERNEL"),
        "boottesthang": (None, 1, "$GUEST_KERNEL"),
        # Issue 16, `kite firecracker` driven as its clients drive Firecracker (write_fc_job):
        # fckata: Kata's Go runtime: a config file with its drives (a 0-byte placeholder), a
        # tap, vsock, logger and metrics FIFOs; GET / until Running; PATCH /drives swaps the
        # placeholder; PATCH /vm pauses 3 s; SendCtrlAltDel restarts the guest: exit 0.
        # fcsdk: firecracker-go-sdk's requests as firecracker-containerd sends them (relative
        # paths, log and metrics FIFOs, the root drive last, a stub drive PATCHed after
        # boot); then SIGTERM, as the SDK's StopVMM: exit 143.
        "fckata": ("fckata", 0, "$GUEST_KERNEL"),
        "fcsdk": ("fcsdk", 143, "$GUEST_KERNEL"),
    }
    BRINGUP_CMDLINE = "panic=-1 rcupdate.rcu_cpu_stall_timeout=10 watchdog_thresh=5"
    # The control VMM: what issue 10's report compared kite with, with the same kernel,
    # initramfs, memory and command line. -no-reboot: a guest reset ends QEMU (status 0,
    # without the guest's "poweroff" line, so the check fails it).
    QEMU = ("qemu-system-x86_64 -enable-kvm -cpu host -m {memory} -smp {cpus} -nodefaults -display none "
            "-no-reboot -serial stdio -kernel \"$GUEST_KERNEL\" -initrd \"$GUEST_INITRD\" -append {cmdline}")
    # hang test name -> (guest init mode, what the waiting vCPUs may spin in, or None when
    # no vCPU needs to wait: the idle guest's hang shows as an RCU stall). The stall can also
    # catch vCPU 2 holding a spinlock (a runqueue lock, inside the scheduler): then the others
    # wait for it in the spinlock slow path.
    HANG_LOADS = {
        "hangmodload4": ("modload", ["smp_call_function", "on_each_cpu", "text_poke", "flush_tlb",
                                     "kick_all_cpus_sync", "csd_lock_wait", "stop_machine", "multi_cpu_stop",
                                     "spin_lock_slowpath"]),
        "hanghotplug4": ("hotplugloop", ["multi_cpu_stop", "stop_machine", "smp_call_function", "on_each_cpu",
                                         "cpuhp", "flush_tlb", "csd_lock_wait", "spin_lock_slowpath"]),
        "hangidle4": ("busy2", None),
    }
    # hangkallsyms4: hangmodload4 with no System.map anywhere (the kernel is copied to a
    # directory of its own, and no --symbols): kite must name the same waiting functions from
    # the guest kernel's own kallsyms, and its report must say so.
    HANG_LOADS["hangkallsyms4"] = HANG_LOADS["hangmodload4"]
    # Where each hang test's kite gets its names. hangmodload4: the System.map it finds next
    # to the kernel by itself; the others: no System.map anywhere, so the guest's kallsyms
    # (as for most users: Debian ships a placeholder). Every name in every report is checked
    # against the real System.map on the host (check_report_names), so a kallsyms run must
    # name each address exactly as the System.map would.
    HANG_SYMBOLS = {"hangmodload4": "found", "hangkallsyms4": "kallsyms",
                    "hanghotplug4": "kallsyms", "hangidle4": "kallsyms"}
    KALLSYMS_ORIGIN = "kallsyms in guest memory"
    # s after kite starts; the guests are in their loops by then. Their init comes 15-22 s
    # after the start, but 30 s and more when two testbed sessions share a loaded host (a
    # stall at 30 s once came before init, and once before the load's first round).
    HANG_STALL_AT = 45
    HANG_TIMEOUT = 30        # kite --hang-timeout
    # hangidle4: the guest is quiet from its start, so with 30 s kite would judge it 15 s
    # after the stall, before the guest's RCU stall report (21 s): give the RCU path time.
    HANG_TIMEOUTS = {"hangidle4": 60}
    HANG_REPORT_WITHIN = 60  # s after the stall
    # healthy4's load runs 4 minutes (8 hang timeouts) by default; --extended runs issue 4's
    # 10 minutes (kept out of the default run, which CI must finish in under 45 minutes).
    HEALTHY_SECONDS = 240
    HEALTHY_SECONDS_EXTENDED = 600
    # Extra kite options by kind.
    KITE_ARGS = {"rng": "--rng", "hvc": "--console virtio",
                 "netifs": "--net tap=kitea0,mac=06:00:00:00:00:10 --net tap=kitea1,mac=06:00:00:00:00:11"}

    def __init__(self, name, kind, cpus, cmdline_extra="", vmm="kite", l1_smp=None, irqchip=None):
        self.name, self.kind, self.cpus, self.vmm = name, kind, cpus, vmm
        self.l1_smp = l1_smp or 1   # how many CPUs L1 gets: see TWO_CPU_L1_BOOTS
        if kind == "bringup":
            cmdline_extra = (Test.BRINGUP_CMDLINE + " " + cmdline_extra).strip()
        self.deadline = max(1, round(DEADLINES.get(name, DEFAULT_DEADLINES[kind]) * Test.scale))
        mode, self.expect_status, self.kernel = Test.KINDS[kind]
        if kind == "hang":
            mode = Test.HANG_LOADS[name][0]
        if kind == "healthy":
            cmdline_extra = (cmdline_extra + f" kite.duration={Test.HEALTHY_SECONDS}").strip()
        self.cmdline = f"console=ttyS0 kite.test={mode}" + (f" {cmdline_extra}" if cmdline_extra else "")
        self.kite_args = Test.KITE_ARGS.get(kind, "")
        self.irqchip = irqchip
        if irqchip:   # this test's own mode, whatever --irqchip says for the rest
            self.kite_args = (self.kite_args + f" --irqchip {irqchip}").strip()
        self.tries = 0


# How many CPUs L1 gets: one, for every test of the default run. --extended
# adds the short SMP boots (TWO_CPU_L1_BOOTS) once more in a two-CPU L1, where two vCPUs
# really run at the same time. They left the default run on 2026-12-06: in the five CI runs
# before, the emulated CPU's instruction-fetch fault (emulated_fetch_faults) failed most of
# them every time, each was judged again in a one-CPU L1, and the two-CPU session cost about
# 8 of the run's 45 minutes for one verdict of its own (boot10, once). Tests that keep a
# guest busy for tens of seconds never run in a two-CPU L1: it fails under nested load by
# itself (soft lockups and RCU stalls in L1's own kernel on a CPU running L2, "stack guard
# page was hit", L2 triple faults and L2 vCPUs that sit on pending interrupts, with QEMU as
# the L2 VMM too), while the one-CPU L1 has run the same loads cleanly. --l1-smp overrides.
TWO_CPU_L1_BOOTS = ("boot2", "boot4", "boot10", "pvh2", "boot4-split", "boot4-userspace")


def build_matrix(args):
    cpus_list = [int(c) for c in args.cpus_list.split(",")] if args.cpus_list else [1, 2, 4, 10, 16, 32]
    tests = [Test(f"boot{n}", "boot", n) for n in cpus_list]
    tests.append(Test("seeds4", "seeds", 4))
    tests.append(Test("pvh2", "pvh", 2))
    tests.append(Test("reboot2", "reboot", 2))                          # ACPI reset register
    tests.append(Test("rebootkbd2", "reboot", 2, cmdline_extra="reboot=k"))  # i8042 pulse reset
    tests.append(Test("input2", "input", 2))
    tests.append(Test("rng2", "rng", 2))
    tests.append(Test("hvc2", "hvc", 2))
    tests.append(Test("net2", "net", 2))
    tests.append(Test("vsock2", "vsock", 2))
    tests.append(Test("netifs2", "netifs", 2))
    tests.append(Test("tapgone2", "tapgone", 2))
    tests.append(Test("vsockpeer2", "vsockpeer", 2))
    tests.append(Test("disk2", "disk", 2))
    tests.append(Test("diskro2", "diskro", 2))
    tests.append(Test("ext4disk2", "ext4", 2))
    tests.append(Test("disksync2", "disksync", 2))
    tests.append(Test("diskfull2", "diskfull", 2))
    tests.append(Test("diskeio2", "diskeio", 2))
    tests.append(Test("triplefault2", "triplefault", 2))
    tests.append(Test("fckata2", "fckata", 2))
    tests.append(Test("fcsdk2", "fcsdk", 2))
    # Issue 12: Kite's own interrupt controllers. split: KVM's local APICs, Kite's IOAPIC;
    # userspace: every local APIC, the IOAPIC and the APIC timers in Kite (32 vCPUs: every
    # bring-up IPI, timer and wake-up goes through Kite's wake-up protocol).
    for mode in ("split", "userspace"):
        tests.append(Test(f"boot4-{mode}", "boot", 4, irqchip=mode))
        tests.append(Test(f"seeds4-{mode}", "seeds", 4, irqchip=mode))
    tests.append(Test("boot32-userspace", "boot", 32, irqchip="userspace"))
    tests.append(Test("boottest", "boottest", 2))
    tests.append(Test("boottesthang4", "boottesthang", 4))
    tests += [Test(name, "hang", 4) for name in Test.HANG_LOADS]
    tests.append(Test("healthy4", "healthy", 4))
    tests += bringup_tests(args.extended)
    if args.extended:
        tests += [Test(t.name + "-smp2", t.kind, t.cpus, vmm=t.vmm, l1_smp=2, irqchip=t.irqchip)
                  for t in tests if t.name in TWO_CPU_L1_BOOTS]
        tests += [Test("boot64", "boot", 64)]
        # More than 254 vCPUs: split mode with 32-bit APIC IDs and 15-bit IOAPIC destinations.
        tests += [Test("boot288-split", "boot", 288, irqchip="split")]
    if args.only:
        want = set(args.only.split(","))
        unknown = want - {t.name for t in tests}
        # Allow --only bootN / seedsN for any N.
        for name in sorted(unknown):
            m = re.fullmatch(r"(boot|seeds|pvh|reboot|input|rng|hvc|net|vsock|netifs|disk|diskro|disksync|diskfull|diskeio|tapgone|vsockpeer|ext4)(\d+)", name)
            if not m:
                sys.exit(f"unknown test {name!r}; known: {' '.join(t.name for t in tests)}")
            n = int(m.group(2))
            tests.append(Test(name, m.group(1), n))
        tests = [t for t in tests if t.name in want]
    if args.l1_smp:
        for t in tests:
            t.l1_smp = args.l1_smp
    return tests


BRINGUP_RUNS_EXTENDED = 5


def bringup_tests(extended):
    """Issue 10's guard: 32 vCPUs with BRINGUP_CMDLINE. By default kite once, in a one-CPU
    L1. --extended: five runs under kite and five under QEMU, side by side in the same L1
    sessions, in a one-CPU and in a two-CPU L1 (about 80 minutes: each run takes 190-230 s in an
    unloaded testbed, and up to the 900 s deadline in a loaded one). The QEMU runs are the control (CONTROL
    lines, never a failure): a failure QEMU shows too in the same kind of L1 is the testbed's."""
    if not extended:
        return [Test("bringup32", "bringup", 32, l1_smp=1)]
    tests = []
    for smp in (1, 2):
        base = "bringup32" + ("-smp2" if smp == 2 else "")
        for i in range(1, BRINGUP_RUNS_EXTENDED + 1):
            suffix = f".{i}" if i > 1 else ""
            tests.append(Test(base + suffix, "bringup", 32, l1_smp=smp))
            tests.append(Test("qemu-" + base + suffix, "bringup", 32, vmm="qemu", l1_smp=smp))
    return tests


def side_by_side(results):
    """'bringup32 (L1 -smp 1): kite 5/5, qemu 5/5' per group of bring-up tests."""
    groups = {}
    for r in results:
        t = r.test
        if t.kind != "bringup":
            continue
        key = t.name.removeprefix("qemu-").split(".")[0]
        counts = groups.setdefault((key, t.l1_smp), {"kite": [0, 0], "qemu": [0, 0]})
        counts[t.vmm][0] += r.ok
        counts[t.vmm][1] += 1
    return [f"{key} (L1 -smp {smp}): kite {c['kite'][0]}/{c['kite'][1]}, qemu {c['qemu'][0]}/{c['qemu'][1]}"
            for (key, smp), c in groups.items() if c["qemu"][1]]   # only where the control ran


# ---- checking one L2 console ----------------------------------------------------------
def check_guest_log(lines, kind, cpus, allow_xstate_warning=False):
    """Return a list of failure reasons for one L2 console (empty list = good)."""
    reasons = []
    skip_trace = False
    for ln in lines:
        if allow_xstate_warning and "WARNING:" in ln and "fpu__init_system_xstate" in ln:
            skip_trace = True  # known emulated-CPU xstate warning: ignore its Call Trace
        if skip_trace and "---[ end trace" in ln:
            skip_trace = False
            continue
        for pat in GUEST_BAD:
            if pat in ln and not (skip_trace and pat == "Call Trace:"):
                reasons.append(f"guest console has {pat!r}: {ln.strip()[:160]}")
                break
    for ln in lines:
        if "KITE-GUEST: FAIL" in ln:
            reasons.append(ln.strip()[ln.find("KITE-GUEST"):][:160])
    text = "\n".join(lines)

    def marker(rx):
        return re.findall(rx, text)
    init = marker(r"KITE-GUEST: init reached cpus=(\d+)")
    if not init:
        reasons.append("guest never reached init (no 'KITE-GUEST: init reached')")
    elif int(init[-1]) != cpus:
        reasons.append(f"wrong CPU count: guest has {init[-1]} online, requested {cpus}")
    got = marker(r"KITE-GUEST: cpus=(\d+)")
    if init and not got:
        reasons.append("no 'KITE-GUEST: cpus=N' line")
    elif got and int(got[-1]) != cpus:
        reasons.append(f"wrong CPU count: KITE-GUEST: cpus={got[-1]}, requested {cpus}")
    for line, reason in REQUIRED_LINES(kind):
        if init and line not in text:
            reasons.append(reason)
    if kind == "seeds":
        if init and "KITE-GUEST: modules ok" not in text:
            reasons.append("virtio modules did not all load")
        if init and "KITE-GUEST: hotplug ok" not in text:
            reasons.append("CPU hot-plug did not complete ('KITE-GUEST: hotplug ok' missing)")
        done = marker(r"KITE-GUEST: seeds done cpus=(\d+)")
        if init and not done:
            reasons.append("seeds path did not finish ('KITE-GUEST: seeds done' missing)")
        elif done and int(done[-1]) != cpus:
            reasons.append(f"wrong CPU count after seeds: {done[-1]}, requested {cpus}")
    if kind == "fckata":
        reads = marker(r'KITE-HOST: fc metrics: "block":\{"read_count":(\d+)')
        if reads and int(reads[-1]) == 0:
            reasons.append("the metrics say the guest read nothing from its disks")
        gap = marker(r"KITE-GUEST: fc largest gap=(\d+) ms")
        if init and (not gap or int(gap[-1]) < 2500):
            reasons.append(f"the guest's clock did not stop for the 3 s pause (longest gap: {gap[-1] if gap else 'none'} ms)")
    last = {"reboot": "reboot", "disksync": "synced", "fckata": "fc ready for ctrl-alt-del", "fcsdk": "fc sdk ready"}.get(kind, "poweroff")
    if init and f"KITE-GUEST: {last}" not in text:
        reasons.append(f"guest never reached {last}")
    # de-duplicate, keep order
    seen, out = set(), []
    for r in reasons:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


# ---- one testbed session --------------------------------------------------------------
class Result:
    def __init__(self, test, ok, reason="", elapsed=None, testbed=False, log=None):
        self.test, self.ok, self.reason, self.elapsed = test, ok, reason, elapsed
        self.testbed, self.log = testbed, log


def write_kite_in_script(f, t, script, label, kite_args):
    """A kite_job line that runs `sh -c SCRIPT LABEL kite run ...` for test t: the script gets
    the kite command line as "$@" (with t's kernel, initramfs, command line, vCPUs and memory,
    then `kite_args`)."""
    f.write("kite_job %s %d sh -c %s %s \"$KITE\" run --kernel \"%s\" --initrd \"$GUEST_INITRD\" "
            "--cmdline %s --cpus %d --memory %s %s\n" % (
                t.name, t.deadline, shlex.quote(script), label, t.kernel, shlex.quote(t.cmdline),
                t.cpus, GUEST_MEMORY, kite_args))


# Every kite run that does not arm the hang watchdog for its own checks (hang, healthy and
# bring-up tests do) runs with it armed: a guest that stalls leaves kite's snapshot, which
# kite_job prints ("NAME| KITE-WATCH-REPORT: <json>") and a failure's reason quotes. A quiet
# guest that is not stuck is never stopped by it. The timeout is half the test's deadline,
# at least 60 s: a guest with many more vCPUs than L1 has CPUs can be silent for minutes
# while every vCPU spins with interrupts off, slowly (boot288-split: 60 s was judged a hang
# at ACPI init, where the same boot passes in under 7 minutes).
WATCH_HANG_TIMEOUT = 60


def watch_args(t):
    if t.vmm != "kite" or t.kind in ("hang", "healthy", "bringup"):
        return ""
    timeout = max(WATCH_HANG_TIMEOUT, t.deadline // 2)
    return f"--hang-timeout {timeout} --report $TMPDIR/{t.name}.watch.json "


def write_job(path, tests, irqchip="kernel"):
    """The job script for one testbed session. Every `kite run`, in whatever shell string it
    sits, gets $KITE_RUN_ARGS, which carries --irqchip when it is not the default, and the
    hang watchdog's arguments (watch_args)."""
    write_job_lines(path, tests, irqchip)
    by_name = {t.name: t for t in tests}
    with open(path) as f:
        lines = f.read().split("\n")
    with open(path, "w") as f:
        for line in lines:
            words = line.split(" ", 2)
            t = by_name.get(words[1]) if len(words) > 2 and words[0] in ("kite_job", "kite_boot") else None
            watch = watch_args(t) if t else ""
            line = line.replace('"$KITE" run ', '"$KITE" run $KITE_RUN_ARGS ' + watch)
            if t and words[0] == "kite_boot" and watch:
                line = line + " " + watch.strip()   # kite_boot passes extra arguments on to kite
            f.write(line + "\n" if line else "")


def write_job_lines(path, tests, irqchip):
    with open(path, "w") as f:
        f.write("# generated by testbed/boot_tests.py\n")
        f.write("export KITE_RUN_ARGS=%s\n" % shlex.quote("" if irqchip == "kernel" else f"--irqchip {irqchip}"))
        for t in tests:
            if t.vmm == "qemu":
                f.write("kite_job %s %d %s\n" % (t.name, t.deadline, Test.QEMU.format(
                    memory=GUEST_MEMORY, cpus=t.cpus, cmdline=shlex.quote(t.cmdline))))
                continue
            if t.kind == "bringup":
                # kite's hang watchdog armed, its JSON report printed afterwards for the log
                report = f"$TMPDIR/{t.name}.report.json"
                script = ('"$@"; rc=$?; '
                          f'[ -e {report} ] && echo "KITE-REPORT: $(tr -d "\\n" <{report})"; exit $rc')
                write_kite_in_script(f, t, script, "bringup", f"--hang-timeout 60 --report {report}")
                continue
            if t.kind in ("hang", "healthy"):
                write_watchdog_job(f, t)
                continue
            if t.kind in ("boottest", "boottesthang"):
                write_boottest_job(f, t)
                continue
            if t.kind in ("fckata", "fcsdk"):
                write_fc_job(f, t)
                continue
            if t.kind == "triplefault":
                image = "".join("\\%03o" % b for b in TRIPLE_FAULT_GUEST)
                f.write(f"printf '{image}' >{t.kernel}\n")
                f.write(f'echo "{t.name}| KITE-HOST: kvm trace ${{KVM_TRACE:-off}}"\n')
                f.write("kite_job %s %d \"$KITE\" run --kernel \"%s\" --cpus %d --memory 64M\n" % (
                    t.name, t.deadline, t.kernel, t.cpus))
                continue
            if t.kind in ("net", "tapgone"):
                if t.kind == "net":
                    # ping the guest, and serve it 16 MiB over TCP
                    host = ('ping -c 2 -W 2 192.0.2.2 >/dev/null 2>&1 && echo "KITE-HOST: ping guest ok") & '
                            f'yes KITE-NET-PATTERN | head -c {NET_BYTES} | nc -l -p 5000 >/dev/null & nc=$!; '
                            '"$@"; rc=$?; kill $nc 2>/dev/null; exit $rc')
                else:
                    # delete the tap under the running guest
                    host = ('sleep 2; ip link delete kitetap0 && echo "KITE-HOST: tap deleted") & '
                            '"$@"; rc=$?; wait; exit $rc')
                script = (
                    # the host side of the tap, once kite has created it and the guest answers on it
                    '(i=0; while [ ! -e /sys/class/net/kitetap0 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; '
                    'ip addr add 192.0.2.1/24 dev kitetap0; ip link set kitetap0 up; '
                    'i=0; until ping -c 1 -W 1 192.0.2.2 >/dev/null 2>&1 || [ $i -ge 90 ]; do i=$((i+1)); sleep 1; done; '
                    + host)
                # On a host with hardware virtualization, the tap and its addresses live in a
                # network namespace of their own (inside L1 they are in that VM already).
                f.write('if [ "$TESTBED" = host ]; then NETNS="unshare --net"; else NETNS=; fi\n')
                f.write("kite_job %s %d $NETNS sh -c %s %s \"$KITE\" run --kernel \"%s\" "
                        "--initrd \"$GUEST_INITRD\" --cmdline %s --cpus %d --memory %s --net tap=kitetap0\n" % (
                            t.name, t.deadline, shlex.quote(script), t.kind + "-host", t.kernel, shlex.quote(t.cmdline),
                            t.cpus, GUEST_MEMORY))
                continue
            if t.kind == "vsockpeer":
                sock = f"$TMPDIR/{t.name}.sock"
                script = (
                    # port 6000: a peer that hangs up at once; 6001: one that never reads
                    f"socat UNIX-LISTEN:{sock}_6000 SYSTEM:'exit 0' & dead=$!; "
                    f"socat UNIX-LISTEN:{sock}_6001 SYSTEM:'exec 2>/dev/null; exec sleep 300' & deaf=$!; "
                    '"$@"; rc=$?; pkill -P $deaf 2>/dev/null; kill $dead $deaf 2>/dev/null; exit $rc')
                write_kite_in_script(f, t, script, "vsock-peers", f"--vsock cid=3,socket={sock}")
                continue
            if t.kind == "vsock":
                sock = f"$TMPDIR/{t.name}.sock"
                script = (
                    # guest-initiated connections to host port 6000 land here
                    f"socat UNIX-LISTEN:{sock}_6000 SYSTEM:'read l; echo host-got-$l' & "
                    '"$@" & kite=$!; '
                    # host-initiated: CONNECT 5000 once the guest listens (retry until it does)
                    'i=0; out=; while [ $i -lt 90 ]; do '
                    f"out=$(printf 'CONNECT 5000\\nhost-to-guest\\n' | socat -t 3 - UNIX-CONNECT:{sock} 2>/dev/null); "
                    'case "$out" in OK*host-to-guest*) break ;; esac; i=$((i+1)); sleep 1; done; '
                    'case "$out" in OK*host-to-guest*) echo "KITE-HOST: vsock host-initiated ok" ;; '
                    '*) echo "KITE-HOST: vsock host-initiated got: $(echo $out)" ;; esac; '
                    'wait $kite')
                write_kite_in_script(f, t, script, "vsock-host", f"--vsock cid=3,socket={sock}")
                continue
            if t.kind == "ext4":
                img = f"$TMPDIR/{t.name}.img"
                f.write(f"dd if=/dev/zero of={img} bs=1M count=100 2>/dev/null && mkfs.ext4 -q -F {img}\n")
                run = ('"$KITE" run --kernel "%s" --initrd "$GUEST_INITRD" --cmdline "console=ttyS0 kite.test=%s" '
                       '--cpus %d --memory %s --disk "path=%s%s"')
                script = (
                    run % (t.kernel, "ext4", t.cpus, GUEST_MEMORY, img, "") + " || exit $?; "
                    f'echo "KITE-HOST: ext4 data.bin md5=$(debugfs -R \'cat /data.bin\' {img} 2>/dev/null | md5sum | cut -d" " -f1)"; '
                    + run % (t.kernel, "ext4ro", t.cpus, GUEST_MEMORY, img, ",readonly=on"))
                f.write("kite_job %s %d sh -c %s ext4-host\n" % (t.name, t.deadline, shlex.quote(script)))
                continue
            if t.kind == "disksync":
                img = f"$TMPDIR/{t.name}.img"
                out = f"$TMPDIR/{t.name}.out"
                f.write(f"dd if=/dev/zero of={img} bs=1M count=80 2>/dev/null\n")
                script = (
                    f'"$@" >{out} 2>&1 & pid=$!; i=0; '
                    f'while [ $i -lt {(t.deadline - 30) * 5} ] && ! grep -q "KITE-GUEST: synced" {out}; do sleep 0.2; i=$((i+1)); done; '
                    f'kill -9 $pid; wait $pid; rc=$?; cat {out}; echo "KITE-HOST: killed status=$rc"; '
                    f'echo "KITE-HOST: disk md5=$(head -c {DISK_BYTES} {img} | md5sum | cut -d" " -f1)"')
                write_kite_in_script(f, t, script, "kill-after-sync", f'--disk "path={img}"')
                continue
            if t.kind == "diskeio":
                # 64 MiB where every I/O fails; devtmpfs names it /dev/dm-N.
                dev = f"$TMPDIR/{t.name}.dev"
                f.write(f"dmsetup create --noudevsync kite-{t.name} --table '0 131072 error' && "
                        f"ln -sf /dev/$(dmsetup info -c --noheadings -o blkdevname kite-{t.name}) {dev}\n")
                write_kite_in_script(f, t, '"$@"', "disk-eio", f'--disk "path={dev}"')
                f.write(f"dmsetup remove --noudevsync kite-{t.name}\n")
                continue
            if t.kind == "diskfull":
                # A sparse 64 MiB image on a 40 MiB tmpfs: the host runs out of room part-way.
                # (On a host rather than in L1, mounting needs root, as net2's tap does.)
                full = f"$TMPDIR/{t.name}.fs"
                img = f"{full}/disk.img"
                f.write(f"mkdir -p {full} && mount -t tmpfs -o size=40m tmpfs {full} && truncate -s 64M {img}\n")
                script = ('"$@"; rc=$?; '
                          f'echo "KITE-HOST: first part md5=$(head -c 4194304 {img} | md5sum | cut -d" " -f1)"; exit $rc')
                write_kite_in_script(f, t, script, "disk-full", f'--disk "path={img}"')
                f.write(f"umount {full}\n")
                continue
            if t.kind in ("disk", "diskro"):
                # A raw image made in the testbed; after kite exits, its bytes are checked
                # there (the host side of the guest's writes).
                img = f'"$TMPDIR/{t.name}.img"'
                f.write(f"dd if=/dev/zero of={img} bs=1M count=80 2>/dev/null\n")
                if t.kind == "diskro":
                    f.write(f"printf 'KITE-RO!' | dd of={img} conv=notrunc 2>/dev/null\n")
                    opts = "readonly=on"
                else:
                    opts = "serial=kite-test-disk"
                f.write("kite_job %s %d sh -c '\"$@\"; rc=$?; echo \"KITE-HOST: disk md5=$(head -c %d %s | md5sum | cut -d\" \" -f1)\"; exit $rc' "
                        "disk-check \"$KITE\" run --kernel \"%s\" --initrd \"$GUEST_INITRD\" --cmdline %s "
                        "--cpus %d --memory %s --disk \"path=%s,%s\"\n" % (
                            t.name, t.deadline, DISK_BYTES, img.strip('"'), t.kernel,
                            shlex.quote(t.cmdline), t.cpus, GUEST_MEMORY, img.strip('"'), opts))
                continue
            if t.kind in ("input", "hvc"):
                # kite's stdin is a pipe that says "ping" once a second until kite exits.
                f.write("kite_job %s %d sh -c 'i=0; while [ $i -lt %d ]; do echo ping; sleep 1; "
                        "i=$((i+1)); done | \"$@\"' input-feeder \"$KITE\" run --kernel \"%s\" "
                        "--initrd \"$GUEST_INITRD\" --cmdline %s --cpus %d --memory %s %s\n" % (
                            t.name, t.deadline, t.deadline, t.kernel, shlex.quote(t.cmdline),
                            t.cpus, GUEST_MEMORY, t.kite_args))
                continue
            f.write('KITE_BOOT_KERNEL="%s"\n' % t.kernel)
            f.write("kite_boot %s %d %d %s %s %s\n" % (
                t.name, t.deadline, t.cpus, GUEST_MEMORY, shlex.quote(t.cmdline), t.kite_args))


def multiboot_image(entry_code, load=0x100000):
    """A multiboot v1 image with its load addresses in the header (flag bit 16): the 32-byte
    header, then `entry_code` at load + 32, padded to 4 KiB (kite refuses smaller kernels)."""
    magic, flags = 0x1BADB002, 1 << 16
    header = struct.pack("<8I", magic, flags, (-(magic + flags)) & 0xFFFFFFFF,
                         load, load, 0, 0, load + 32)
    return (header + entry_code).ljust(4096, b"\0")


# ud2 in 32-bit protected mode with kite's multiboot entry IDT (limit 0): #UD cannot be
# delivered, nor can the #DF after it, so the vCPU triple-faults at TRIPLE_FAULT_RIP.
TRIPLE_FAULT_RIP = 0x100020
TRIPLE_FAULT_GUEST = multiboot_image(b"\x0f\x0b" + b"\xf4" * 14)


def check_triplefault_log(lines):
    """The fault site must be recoverable: in kite's crash report where KVM keeps a triple
    fault's registers (Intel, kvm_pvm), or, where it resets them first (AMD), from the note
    kite prints and L1's kvm_exit trace event for the shutdown."""
    text = "\n".join(lines)
    if "crashed on vCPU 0: triple fault" not in text:
        return ["kite did not report a triple fault on vCPU 0"]
    if f"rip=0x{TRIPLE_FAULT_RIP:016x}" in text:
        return []
    reasons = []
    if "rip=0x000000000000fff0" not in text or "reset state" not in text:
        reasons.append("the crash report has neither the fault's rip nor the reset-state note")
    if "KITE-HOST: kvm trace off" in text:
        return reasons   # no tracefs here (a host run without root): the note is all there is
    traced = [ln for ln in lines if "L1 kvm trace:" in ln and "reason shutdown" in ln]
    if not any(f"rip {TRIPLE_FAULT_RIP:#x}" in ln for ln in traced):
        reasons.append(f"no L1 kvm trace event for the shutdown at rip {TRIPLE_FAULT_RIP:#x}: "
                       + ("; ".join(traced)[:200] or "none"))
    return reasons


# kite boot-test's arguments per test kind (after --kernel, --output, --json, --junit).
# boottest: no --initrd, so the guests run Kite's built-in init. boottesthang: the hanghotplug4
# guest (CPUs 1 and 3 offline and online in a loop) with vCPU 2 stalled at 30 s.
BOOTTEST_ARGS = {
    "boottest": "--cpus 1,2 --irqchip kernel,split --timeout 240",
    "boottesthang": ('--initrd "$GUEST_INITRD" --cmdline "console=ttyS0 kite.test=hotplugloop" --cpus 4 --memory 1G '
                     f'--inject stall-vcpu=2@{Test.HANG_STALL_AT}s --hang-timeout {Test.HANG_TIMEOUT} --timeout 240'),
}
# What each boottest run must be: (name, result).
BOOTTEST_EXPECT = {
    "boottest": [(f"cpus{n}-{m}", "passed") for n in (1, 2) for m in ("kernel", "split")],
    "boottesthang": [("cpus4-kernel", "hung")],
}


def write_boottest_job(f, t):
    """kite boot-test with its results in $TMPDIR/NAME; afterwards the built-in init's lines
    from every console, the --json file (one line) and the --junit file (base64) are printed
    for check_boottest_log."""
    out = f"$TMPDIR/{t.name}"
    script = ('"$@"; rc=$?; '
              f'grep -H "kite-init:" {out}/*.console.log | sed "s|^.*/||; s|^|KITE-BOOTTEST-CONSOLE |"; '
              f'echo "KITE-BOOTTEST-JSON: $(tr -d "\\n" <{out}.json)"; '
              f'echo "KITE-BOOTTEST-JUNIT: $(base64 -w0 <{out}.junit.xml)"; exit $rc')
    f.write("kite_job %s %d sh -c %s boot-test \"$KITE\" boot-test --kernel \"%s\" --output %s --json %s.json "
            "--junit %s.junit.xml %s\n" % (t.name, t.deadline, shlex.quote(script), t.kernel, out, out, out,
                                            BOOTTEST_ARGS[t.kind]))


def check_boottest_log(lines, t, logdir):
    """kite boot-test's own verdicts must be the expected ones (BOOTTEST_EXPECT), in its
    table, its --json and its --junit (validated with check_junit.py: xml.etree, and
    junitparser); a passing run needs the built-in init's PASS line and a
    time to userspace; the hung run's diagnosis must name vCPU 2 as starved."""
    import base64
    sys.path.insert(0, TESTBED)
    import check_junit
    reasons = []
    expect = BOOTTEST_EXPECT[t.kind]
    rep = json_line(lines, "KITE-BOOTTEST-JSON: ")
    if rep is None:
        return ["boot-test wrote no --json file, or it is not JSON"]
    runs = {r.get("name"): r for r in rep.get("runs", [])}
    if sorted(runs) != sorted(n for n, _ in expect):
        reasons.append(f"boot-test ran {sorted(runs)}, expected {sorted(n for n, _ in expect)}")
    for name, result in expect:
        r = runs.get(name)
        if r is None:
            continue
        if r.get("result") != result:
            reasons.append(f"{name}: {r.get('result')}, expected {result}: {str(r.get('diagnosis'))[:200]}")
        if not any(ln.startswith(name) and f" {result} " in ln + " " for ln in lines):
            reasons.append(f"the table has no '{name} ... {result}' row")
        if result == "passed":
            cpus = r.get("cpus")
            if f"KITE-BOOTTEST-CONSOLE {name}.console.log:kite-init: PASS: {cpus} of {cpus} CPUs online" not in lines:
                reasons.append(f"{name}: the console lacks the built-in init's PASS line")
            if not any(ln.startswith(f"KITE-BOOTTEST-CONSOLE {name}.console.log:kite-init: Linux 6.") for ln in lines):
                reasons.append(f"{name}: the console lacks the built-in init's 'kite-init: Linux <release>' line")
            if not isinstance(r.get("userspace_ms"), (int, float)):
                reasons.append(f"{name}: no time to userspace (the init's boot timer marker)")
        if result == "hung":
            d = str(r.get("diagnosis"))
            if "vCPU 2" not in d or "starved" not in d:
                reasons.append(f"{name}: the diagnosis does not say vCPU 2 was starved: {d[:300]}")
            if r.get("exit_status") != 5 or not r.get("report"):
                reasons.append(f"{name}: kite's exit status {r.get('exit_status')}, report {r.get('report')}")
            if not any(ln.startswith(f"{name}: hung: ") for ln in lines):
                reasons.append(f"{name}: the table's failure lines lack '{name}: hung: ...'")
    if rep.get("all_passed") != all(result == "passed" for _, result in expect):
        reasons.append(f"--json all_passed is {rep.get('all_passed')}")
    junit = next((ln[len("KITE-BOOTTEST-JUNIT: "):] for ln in reversed(lines) if ln.startswith("KITE-BOOTTEST-JUNIT: ")), "")
    path = os.path.join(logdir, f"{t.name}.junit.xml")
    try:
        with open(path, "wb") as f:
            f.write(base64.b64decode(junit, validate=True))
        failures = sum(result != "passed" for _, result in expect)
        problems, cases, failed = check_junit.check(path, len(expect), failures)
        reasons += [f"--junit: {p}" for p in problems]
        if not problems:
            print(f"INFO {t.name}: --junit valid: {cases} testcases, {failed} failures ({path})", flush=True)
    except (ValueError, check_junit.ET.ParseError) as e:
        reasons.append(f"--junit output unreadable: {e}")
    return reasons


# The kernel parameters Kata's Go runtime gives a Firecracker guest (fc.go), less acpi=off:
# Debian's cloud kernel has neither CONFIG_X86_MPPARSE nor CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES,
# so without ACPI it would find one CPU and no devices under any VMM (Kata's own guest kernel
# has both; Kite writes the MP table and the command-line devices for it). Firecracker's own
# i8042 parameters keep atkbd from probing a keyboard that only acknowledges.
FC_KATA_ARGS = "reboot=k panic=1 pci=off iommu=off net.ifnames=0 random.trust_cpu=on i8042.noaux i8042.nomux i8042.dumbkbd"
FC_SWAP_BYTES = 4 << 20

# Shell helpers for the fc jobs' host scripts (in L1): fc_api METHOD PATH [BODY] prints the answer's status
# line and body (one request per connection, as curl would send it); fc_wait TEXT FILE waits
# (at most 300 s) for TEXT in FILE.
FC_SHELL = r"""
fc_api() {
    printf '%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %s\r\n\r\n%s' \
        "$1" "$2" "${#3}" "$3" | socat -t 10 - "UNIX-CONNECT:$FC_SOCK" | tr -d '\r' | sed -n '1p;$p'
}
fc_wait() { i=0; while ! grep -q "$1" "$2" 2>/dev/null && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done; }
"""


# kite firecracker (the job's "$@") in the background: its pid and exit status in files, its
# output (the console, then its own lines) live in the log and in $out for fc_wait.
FC_START = ('( "$@" --api-sock $FC_SOCK {args} 2>&1 & echo $! >{d}/pid; wait $!; echo $? >{d}/rc ) | tee $out & ')


def fc_call(f, d, label, method, path, body):
    """Writes BODY to a file in the job (so that $GUEST_KERNEL and $TMPDIR expand there) and
    returns the host-script step that sends it and prints "KITE-HOST: fc LABEL: STATUS LINE"."""
    fc_call.count = getattr(fc_call, "count", 0) + 1
    req = f"{d}/request{fc_call.count}.json"
    f.write(f"cat >{req} <<FCEOF\n{body}\nFCEOF\n")
    return f'echo "KITE-HOST: fc {label}: $(fc_api {method} {path} "$(cat {req})" | head -1)"; '


def write_fc_job(f, t):
    """`kite firecracker` in L1 with a host script playing Kata's Go runtime (fckata) or the
    Go SDK (fcsdk); the script's KITE-HOST lines and the console are checked by REQUIRED_LINES."""
    d = f"$TMPDIR/{t.name}"
    args = f"console=ttyS0 kite.test={t.kind} {FC_KATA_ARGS}"
    f.write(f"mkdir -p {d} && rm -f {d}/*\n")
    if t.kind == "fckata":
        f.write(f"dd if=/dev/zero of={d}/rootfs.img bs=1M count=8 2>/dev/null && "
                f"printf 'KITE-RO!' | dd of={d}/rootfs.img conv=notrunc 2>/dev/null\n")
        f.write(f": >{d}/drive0.img && yes KITE-SWAP-PATTERN | head -c {FC_SWAP_BYTES} >{d}/swap.img\n")
        f.write(f"mkfifo {d}/log.fifo {d}/metrics.fifo\n")
        # Kata's fcConfig.json, as its json.MarshalIndent writes it (tabs)
        f.write(f"""cat >{d}/fcConfig.json <<FCEOF
{{
	"boot-source": {{"kernel_image_path": "$GUEST_KERNEL", "initrd_path": "$GUEST_INITRD", "boot_args": "{args}"}},
	"machine-config": {{"mem_size_mib": 1024, "smt": false, "vcpu_count": {t.cpus}}},
	"vsock": {{"guest_cid": 3, "uds_path": "{d}/kata.hvsock", "vsock_id": "root"}},
	"logger": {{"level": "Error", "log_path": "{d}/log.fifo"}},
	"metrics": {{"metrics_path": "{d}/metrics.fifo"}},
	"drives": [
		{{"drive_id": "rootfs", "path_on_host": "{d}/rootfs.img", "is_root_device": false, "is_read_only": true}},
		{{"drive_id": "drive_0", "path_on_host": "{d}/drive0.img", "is_root_device": false, "is_read_only": false, "cache_type": "Unsafe"}}
	],
	"network-interfaces": [{{"iface_id": "eth0", "host_dev_name": "kitefc0", "guest_mac": "02:fc:00:00:00:02", "rx_rate_limiter": {{}}, "tx_rate_limiter": {{}}}}]
}}
FCEOF
""")
        host = (
            f'FC_SOCK={d}/firecracker.socket; out={d}/console; '
            + FC_START.format(d=d, args=f"--config-file {d}/fcConfig.json") +
            # Kata: GET / every 10 ms until Running (10 s); here every 0.1 s, up to 60 s
            """i=0; until fc_api GET / | grep -q '"state":"Running"' || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done; """
            """fc_api GET / | grep -q '"state":"Running"' && echo "KITE-HOST: fc state running"; """
            f'[ -S {d}/kata.hvsock ] && chmod 0640 {d}/kata.hvsock && echo "KITE-HOST: fc vsock socket ready"; '
            'fc_wait "fc waiting for the drive" $out; '
            + fc_call(f, d, "patch drive", "PATCH", "/drives/drive_0", f'{{"drive_id":"drive_0","path_on_host":"{d}/swap.img"}}') +
            'fc_wait "fc pause window" $out; '
            + fc_call(f, d, "pause", "PATCH", "/vm", '{"state":"Paused"}') +
            """echo "KITE-HOST: fc state while paused: $(fc_api GET / | grep -o '"state":"[A-Za-z ]*"')"; """
            'sleep 3; '
            + fc_call(f, d, "resume", "PATCH", "/vm", '{"state":"Resumed"}') +
            'fc_wait "fc ready for ctrl-alt-del" $out; '
            + fc_call(f, d, "flush metrics", "PUT", "/actions", '{"action_type":"FlushMetrics"}') +
            # what Kata reads from its metrics FIFO: the guest read its disks, so block reads > 0
            f"""echo "KITE-HOST: fc metrics: $(timeout 5 head -n 1 {d}/metrics.fifo | grep -o '"block":{{[^}}]*}}')"; """
            + fc_call(f, d, "ctrl-alt-del", "PUT", "/actions", '{"action_type":"SendCtrlAltDel"}') +
            f'wait; rc=$(cat {d}/rc); echo "KITE-HOST: fc kite exit status=$rc"; exit $rc')
    else:
        f.write(f"dd if=/dev/zero of={d}/root.img bs=1M count=8 2>/dev/null && "
                f"printf 'KITE-ROOT' | dd of={d}/root.img conv=notrunc 2>/dev/null\n")
        f.write(f"dd if=/dev/zero of={d}/data.img bs=1M count=8 2>/dev/null && "
                f"printf 'KITE-DATA' | dd of={d}/data.img conv=notrunc 2>/dev/null\n")
        # firecracker-containerd's stub drive: one 512-byte sector, its id base32 letters
        f.write(f"dd if=/dev/zero of={d}/stub0 bs=512 count=1 2>/dev/null && mkfifo {d}/fc-logs.fifo {d}/fc-metrics.fifo\n")
        # firecracker-go-sdk's handlers in order (SDK handlers.go), as firecracker-containerd
        # uses them: paths relative to the shim's directory (the socket, vsock, the PATCH),
        # logger and metrics FIFOs, the root drive last from the DrivesBuilder, a stub drive
        # PATCHed to a real file after boot; then StopVMM's SIGTERM.
        requests = [
            ("PUT", "/logger", '{"log_path":"fc-logs.fifo","level":"Debug","show_level":true,"show_log_origin":false}'),
            ("PUT", "/metrics", '{"metrics_path":"fc-metrics.fifo"}'),
            ("PUT", "/machine-config", f'{{"vcpu_count":{t.cpus},"mem_size_mib":1024,"smt":false}}'),
            ("GET", "/machine-config", ""),
            ("PUT", "/boot-source", f'{{"kernel_image_path":"$GUEST_KERNEL","initrd_path":"$GUEST_INITRD","boot_args":"{args}"}}'),
            ("PUT", "/drives/MFRGGZDF", '{"drive_id":"MFRGGZDF","path_on_host":"stub0","is_root_device":false,"is_read_only":false}'),
            ("PUT", "/drives/root_drive", f'{{"drive_id":"root_drive","path_on_host":"{d}/root.img","is_root_device":true,"is_read_only":false}}'),
            ("PUT", "/vsock", '{"guest_cid":3,"uds_path":"firecracker.vsock","vsock_id":"agent_api"}'),
            ("PUT", "/actions", '{"action_type":"InstanceStart"}'),
            ("GET", "/", ""),
        ]
        calls = "".join(fc_call(f, d, f"{m} {p}", m, p, b) for m, p, b in requests)
        host = (
            f'cd {d}; FC_SOCK=firecracker.sock; out={d}/console; '
            + FC_START.format(d=d, args=f"--id {t.name}") +
            # the SDK's waitForSocket: stat the socket, then GET /machine-config, every 10 ms
            'i=0; until [ -S $FC_SOCK ] && fc_api GET /machine-config | grep -q vcpu_count || [ $i -ge 300 ]; do sleep 0.1; i=$((i+1)); done; '
            + calls +
            '[ -S firecracker.vsock ] && echo "KITE-HOST: fc vsock socket ready"; '
            'fc_wait "fc waiting for the stub" $out; '
            + fc_call(f, d, "patch stub", "PATCH", "/drives/MFRGGZDF", '{"drive_id":"MFRGGZDF","path_on_host":"data.img"}') +
            'fc_wait "fc sdk ready" $out; '
            f'kill -TERM $(cat {d}/pid); '
            f'wait; rc=$(cat {d}/rc); echo "KITE-HOST: fc kite exit status=$rc"; '
            '[ -e $FC_SOCK ] || echo "KITE-HOST: fc socket removed"; exit $rc')
    # The helpers go inside the script: kite_job runs it in a shell of its own.
    f.write("kite_job %s %d sh -c %s %s \"$KITE\" firecracker\n" % (
        t.name, t.deadline, shlex.quote(FC_SHELL + host), t.kind + "-host"))


def write_watchdog_job(f, t):
    """Hang tests: kite with the hang watchdog armed and a JSON report; afterwards the
    report (and for the healthy test, what `kite inspect` said) is printed for the checks."""
    report = f"$TMPDIR/{t.name}.report.json"
    sock = f"$TMPDIR/{t.name}.api"
    inspect = f"$TMPDIR/{t.name}.inspect"
    f.write(f"rm -f {report}\n")
    args = f"--hang-timeout {Test.HANG_TIMEOUTS.get(t.name, Test.HANG_TIMEOUT)} --report {report}"
    if t.kind == "hang":
        args += f" --inject stall-vcpu=2@{Test.HANG_STALL_AT}s"
        if Test.HANG_SYMBOLS[t.name] == "kallsyms":
            f.write('mkdir -p "$TMPDIR/nosymbols" && cp "$GUEST_KERNEL" "$TMPDIR/nosymbols/bzImage"\n')
        script = '"$@"; rc=$?'
    else:
        args += f" --api-socket {sock}"
        script = ('"$@" & kite=$!; '
                  f'(sleep 120; "$KITE" inspect --json {sock} >{inspect}.json 2>&1; '
                  f'"$KITE" inspect {sock} >{inspect}.txt 2>&1) & '
                  'wait $kite; rc=$?; wait; '
                  f'echo "KITE-INSPECT-JSON: $(tr -d "\\n" <{inspect}.json)"; '
                  f'sed "s/^/KITE-INSPECT: /" {inspect}.txt')
    script += (f'; if [ -e {report} ]; then echo "KITE-REPORT: $(tr -d "\\n" <{report})"; '
               'else echo "KITE-HOST: no report file"; fi; exit $rc')
    kernel = "$TMPDIR/nosymbols/bzImage" if Test.HANG_SYMBOLS.get(t.name) == "kallsyms" else t.kernel
    f.write("kite_job %s %d sh -c %s watchdog-job \"$KITE\" run --kernel \"%s\" --initrd \"$GUEST_INITRD\" "
            "--cmdline %s --cpus %d --memory %s %s\n" % (
                t.name, t.deadline, shlex.quote(script), kernel, shlex.quote(t.cmdline), t.cpus,
                GUEST_MEMORY, args))


def json_line(lines, prefix):
    """The JSON object printed after PREFIX on the last such line, or None."""
    for ln in reversed(lines):
        if ln.startswith(prefix):
            try:
                return json.loads(ln[len(prefix):])
            except ValueError:
                return None
    return None


def check_hang_log(lines, name, cpus):
    """What a hang test must show: the stall came while the load ran; within 60 s of it kite
    reported a hang naming vCPU 2 (and, under load, the function the waiting CPU spins in),
    exited 5, and the JSON report says the same."""
    reasons = []
    text = "\n".join(lines)
    mode, wait_functions = Test.HANG_LOADS[name]
    if f"KITE-GUEST: init reached cpus={cpus}" not in text:
        return ["guest never reached init (no 'KITE-GUEST: init reached')"]
    stall = next((i for i, ln in enumerate(lines) if "--inject: vCPU 2" in ln), None)
    if stall is None:
        return ["kite never injected the stall of vCPU 2"]
    # The load must have begun when the stall comes (its first round can take longer than
    # 30 s when two testbed sessions share the host, so the check is not on a round done).
    started = {"modload": "KITE-GUEST: modload loop started", "hotplugloop": "KITE-GUEST: hotplug loop started",
               "busy2": "KITE-GUEST: busy on cpu 2"}[mode]
    if not any(started in ln for ln in lines[:stall]):
        reasons.append(f"the stall came before the load ran ('{started}' not before it): raise HANG_STALL_AT")
    hung = [ln for ln in lines if ln.startswith("kite: the guest hung")]
    if not hung:
        reasons.append("kite did not say 'kite: the guest hung'")
    elif "vCPU 2" not in hung[-1]:
        reasons.append(f"the hang line does not name vCPU 2: {hung[-1][:200]}")
    rep = json_line(lines, "KITE-REPORT: ")
    if rep is None:
        return reasons + ["no JSON report (--report) was written, or it is not JSON"]
    if rep.get("hang") is not True:
        reasons.append("the JSON report does not say hang: true")
    # Where the names came from: the guest's kallsyms when no System.map is anywhere, else
    # a System.map; and every name, whatever its source, is the one the System.map gives.
    symbols = rep.get("symbols") or ""
    if Test.HANG_SYMBOLS[name] == "kallsyms":
        if symbols != Test.KALLSYMS_ORIGIN:
            reasons.append(f"the report's names did not come from the guest's kallsyms: symbols = {symbols!r}")
    elif "System.map" not in symbols:
        reasons.append(f"the report's names did not come from a System.map: symbols = {symbols!r}")
    system_map = host_system_map()
    if system_map is None:
        reasons.append("no System.map on the host to check the report's names against")
    else:
        problems, checked, offset = check_report_names(rep, system_map)
        reasons += problems
        if not problems:
            print(f"INFO {name}: the report's {len(checked)} named RIPs ({', '.join(sorted(set(checked)))}) "
                  f"are the System.map's names at KASLR offset {offset:#x} (names from {symbols})", flush=True)
    findings = rep.get("findings", [])
    if not any(f.get("vcpus", [None])[0] == 2 and "starved" in f.get("sentence", "") for f in findings):
        reasons.append("no finding says vCPU 2 was starved: " + "; ".join(f.get("sentence", "") for f in findings)[:300])
    # The waiter can be a sleeping task (the hot-plug thread in wait_for_completion, a
    # module load flushing work queued on CPU 2) while every other vCPU idles: then no vCPU
    # spins, and the starved vCPU 2 with its pending IPI is the whole story. Only then is a
    # report without a spinning waiter accepted (and said so in the output).
    # Likewise when the others are halted or run freely: no finding is about any vCPU but 2
    # (a vCPU caught in an interrupt's entry while the others idle, with no rule calling it
    # stuck: what it runs, a report without a stack cannot say).
    others_idle = all(v.get("mp_state") == "halted" for v in rep.get("vcpus", []) if v.get("id") != 2)
    others_free = all(f.get("vcpus", [None])[0] == 2 for f in findings)
    waiter_sleeps = others_idle or others_free
    if wait_functions is not None and waiter_sleeps:
        running = [v.get("id") for v in rep.get("vcpus", []) if v.get("id") != 2 and v.get("mp_state") != "halted"]
        print(f"INFO {name}: no vCPU spins; the waiting task sleeps (vCPU 2 has IRR "
              f"{[v.get('apic', {}).get('irr') for v in rep.get('vcpus', []) if v.get('id') == 2]}"
              + (f"; vCPUs {running} run, and no rule calls them stuck" if running else "") + ")", flush=True)
    if wait_functions is not None and not waiter_sleeps:
        waiters = [f for f in findings if "waiting for" in f.get("sentence", "") and f.get("vcpus", [2])[0] != 2]
        # the waiter may be caught in the delay loop of the guest's own stall report, waiting
        # for CPU 2's NMI backtrace, or in printk waiting for the console that CPU 2 was
        # writing to when it was stalled: those are waits for CPU 2 too
        also = ["sent an NMI for a backtrace", "which owns the console"]
        if not any(any(w in f["sentence"] for w in wait_functions + also) for f in waiters):
            reasons.append("no finding names the function a waiting vCPU spins in: "
                           + "; ".join(f.get("sentence", "") for f in findings)[:300])
        elif not any(2 in f.get("vcpus", [])[1:] for f in waiters):
            reasons.append("the waiting vCPU is not said to wait for CPU 2")
    elif wait_functions is None:
        rcu = [e for e in rep.get("console_events", []) if e.get("kind", "").startswith("RCU") and 2 in e.get("stalled_cpus", [])]
        if not rcu:
            reasons.append("the report has no RCU stall naming CPU 2 from the guest's console")
    uptime = rep.get("uptime_seconds")
    if not isinstance(uptime, (int, float)) or uptime > Test.HANG_STALL_AT + Test.HANG_REPORT_WITHIN:
        reasons.append(f"the hang was reported at {uptime} s, more than {Test.HANG_REPORT_WITHIN} s after the stall")
    return reasons


@functools.cache   # read once for all the hang tests
def host_system_map():
    """The guest kernel's real System.map on the host (testbed/fetch-kernel.sh puts it next
    to the kernel), as {name: [link-time addresses]} of its text symbols; None without one."""
    try:
        env = dict(ln.strip().split("=", 1) for ln in open(os.path.join(CACHE, "kernel", "env")) if "=" in ln)
        path = os.path.join(os.path.dirname(env["KERNEL"].strip('"')), f"System.map-{env['KVER'].strip(chr(34))}")
        table = {}
        with open(path) as f:
            for ln in f:
                parts = ln.split()
                if len(parts) == 3 and parts[1] in "tTwW":
                    table.setdefault(parts[2], []).append(int(parts[0], 16))
        return table if len(table) > 1000 else None
    except (OSError, KeyError, ValueError):
        return None


def check_report_names(rep, system_map):
    """Every vCPU RIP the report names ("name+0xoff/0xsize") must be that System.map symbol
    plus that offset, all at one KASLR offset (2 MiB aligned; the report's own kaslr_offset
    when it gives one). Returns (problems, names checked, offset)."""
    problems, checked, offsets = [], [], set()
    for v in rep.get("vcpus", []):
        sym, rip = v.get("rip_symbol"), v.get("rip")
        if not sym or not rip or sym.endswith("]"):
            continue   # unnamed, or in a module (which no System.map covers)
        m = re.fullmatch(r"([\w.$]+)\+0x([0-9a-f]+)/0x([0-9a-f]+)", sym)
        if not m:
            problems.append(f"vCPU {v.get('id')}: RIP name {sym!r} is not name+0xoffset/0xsize")
            continue
        name, off = m.group(1), int(m.group(2), 16)
        if off >= int(m.group(3), 16):
            problems.append(f"vCPU {v.get('id')}: RIP name {sym!r} has its offset past the symbol's size")
            continue
        if name not in system_map:
            problems.append(f"vCPU {v.get('id')}: {name} is not a text symbol in the System.map")
            continue
        candidates = {(int(rip, 16) - (addr + off)) % (1 << 64) for addr in system_map[name]}
        offsets.add(frozenset(candidates))
        checked.append(name)
    if not checked:
        return problems + ["no vCPU RIP in the report has a name to check"], checked, 0
    common = frozenset.intersection(*offsets)
    common = {o for o in common if o % (2 << 20) == 0}
    if rep.get("kaslr_offset") is not None:
        common &= {int(rep["kaslr_offset"], 16)}
    if not common:
        problems.append("the report's RIP names do not agree with the System.map at one KASLR offset: "
                        + ", ".join(f"{v.get('rip')}={v.get('rip_symbol')}" for v in rep.get("vcpus", [])))
        return problems, checked, 0
    return problems, checked, min(common)


def check_healthy_log(lines, cpus):
    """No false alarm: the guest ran its load to the end and powered off, kite reported
    nothing, and kite inspect (taken on the side) showed every vCPU with a named RIP."""
    reasons = check_guest_log(lines, "healthy", cpus)
    text = "\n".join(lines)
    rounds = re.findall(r"KITE-GUEST: modload round (\d+)", text)
    if not rounds:
        reasons.append("the module load loop never completed a round")
    if "KITE-GUEST: modload done" not in text:
        reasons.append("the load did not run to its end")
    # kite's own reports (lines it prints itself; `kite inspect` output is prefixed)
    if any(ln.startswith(("kite: hang report", "kite: the guest hung")) for ln in lines):
        reasons.append("false alarm: kite reported a hang")
    if "KITE-HOST: no report file" not in text:
        reasons.append("false alarm: a --report file was written")
    ins = json_line(lines, "KITE-INSPECT-JSON: ")
    if ins is None:
        reasons.append("kite inspect --json gave no JSON")
    else:
        vcpus = ins.get("vcpus", [])
        if len(vcpus) != cpus:
            reasons.append(f"kite inspect shows {len(vcpus)} vCPUs, expected {cpus}")
        if not all(v.get("answered") for v in vcpus):
            reasons.append("kite inspect: a vCPU did not answer")
        if not any(v.get("rip_symbol") for v in vcpus):
            reasons.append("kite inspect resolved no RIP to a kernel symbol")
        if ins.get("hang"):
            reasons.append("kite inspect calls a healthy guest hung: " + str(ins.get("summary"))[:200])
    if not any(ln.startswith("KITE-INSPECT: ") and "vCPU 0" in ln for ln in lines):
        reasons.append("kite inspect (text) did not describe vCPU 0")
    return reasons


DISK_BYTES = 64 << 20
NET_BYTES = 16 << 20


def pattern_md5(line, size):
    """MD5 of `yes LINE | head -c SIZE`, what the guests and the testbed send."""
    import hashlib
    return hashlib.md5((line * (size // len(line) + 1))[:size]).hexdigest()


def REQUIRED_LINES(kind):
    """(console line, failure reason) pairs a test of this kind must show, beyond the
    markers every test needs."""
    disk = pattern_md5(b"KITE-DISK-PATTERN\n", DISK_BYTES)
    net = pattern_md5(b"KITE-NET-PATTERN\n", NET_BYTES)
    first = pattern_md5(b"KITE-DISK-FIRST\n", 4 << 20)
    swap = pattern_md5(b"KITE-SWAP-PATTERN\n", FC_SWAP_BYTES)
    return {
        "disk": [
            ("KITE-GUEST: disk written", "the guest did not finish writing /dev/vda"),
            ("KITE-GUEST: disk serial=kite-test-disk", "the disk's serial (GET_ID) is not kite-test-disk"),
            (f"KITE-GUEST: disk readback md5={disk}", "the guest read back different bytes than it wrote"),
            (f"KITE-HOST: disk md5={disk}",
             "the image file on the host does not hold the bytes the guest wrote and synced"),
        ],
        "tapgone": [
            ("KITE-GUEST: ping host ok", "the guest could not ping the host before the tap went"),
            ("KITE-HOST: tap deleted", "the host could not delete the tap"),
            ("KITE-GUEST: host lost", "the guest did not lose the host when its tap went"),
            ("kite: virtio-net0 (kitetap0): backend", "kite did not say that the tap failed"),
        ],
        "vsockpeer": [
            ("KITE-GUEST: dead peer: stream ended", "a stream whose host peer hung up did not end in the guest"),
            ("KITE-GUEST: deaf peer: send held back", "a send to a host peer that never reads did not wait"),
        ],
        "diskeio": [
            ("KITE-GUEST: first flush failed", "the guest's flush to a failing disk did not fail"),
            ("KITE-GUEST: later flush failed", "a later flush to the failing disk did not fail"),
            ("KITE-GUEST: read failed", "a read from the failing disk did not fail"),
            ("Input/output error", "kite did not say why the disk's requests failed (EIO)"),
        ],
        "diskfull": [
            ("KITE-GUEST: first part flushed", "the guest could not write and sync the first 4 MiB"),
            ("KITE-GUEST: full disk write failed", "the guest's writes past the host's free space did not fail"),
            (f"KITE-GUEST: first part readback md5={first}", "after the failed writes the guest read back other bytes"),
            (f"KITE-HOST: first part md5={first}", "the image lacks the first 4 MiB the guest had flushed"),
            ("No space left on device", "kite did not say why the writes failed (ENOSPC)"),
        ],
        "disksync": [
            ("KITE-GUEST: synced", "the guest never finished its sync"),
            ("KITE-HOST: killed status=137", "kite was not killed with SIGKILL after the guest's sync"),
            (f"KITE-HOST: disk md5={disk}", "after SIGKILL the image file lacks data the guest had synced"),
        ],
        "ext4": [
            ("KITE-GUEST: ext4 written", "the guest could not write 64 MiB to the ext4 disk"),
            ("KITE-GUEST: ext4 unmounted", "the guest could not unmount the ext4 disk"),
            (f"KITE-HOST: ext4 data.bin md5={disk}", "the image's ext4 file does not hold the bytes the guest wrote"),
            (f"KITE-GUEST: ext4 readonly md5={disk}", "the second boot (readonly=on) read different data"),
            ("KITE-GUEST: ext4 write refused", "a write to the read-only mounted disk did not fail in the guest"),
        ],
        "diskro": [
            ("KITE-GUEST: disk ro=1", "the guest does not see the disk as read-only"),
            ("KITE-GUEST: readonly write refused", "a write to the read-only disk was not refused in the guest"),
            ("KITE-GUEST: disk first bytes=KITE-RO!", "the read-only disk's contents were not readable"),
        ],
        "net": [
            ("KITE-GUEST: ping host ok", "the guest could not ping the host over virtio-net"),
            ("KITE-HOST: ping guest ok", "the host could not ping the guest over virtio-net"),
            (f"KITE-GUEST: tcp received md5={net}", "the 16 MiB TCP transfer did not arrive intact"),
        ],
        "hvc": [
            ("KITE-HVC: hello from hvc0", "nothing the guest wrote to hvc0 reached kite's stdout"),
            ("KITE-GUEST: hvc got ping", "the line sent to kite's stdin never reached the guest's hvc0"),
        ],
        "vsock": [
            ("KITE-GUEST: vsock guest-initiated reply=host-got-guest-to-host",
             "a guest connection to host port 6000 did not reach the Unix socket PATH_6000 and back"),
            ("KITE-HOST: vsock host-initiated ok",
             "a host connection (CONNECT 5000) did not get OK and its echo back from the guest"),
        ],
        "netifs": [("KITE-GUEST: net eth0=06:00:00:00:00:10 eth1=06:00:00:00:00:11",
                    "the guest does not see two interfaces with the configured MAC addresses")],
        # KVM's in-kernel APIC has the TSC-deadline mode, and kite offers it (CPUID.1:ECX[24])
        "boot": [("TSC deadline timer available", "the guest did not find the APIC's TSC-deadline timer")],
        "rng": [("KITE-GUEST: hwrng bytes=64", "the guest could not read 64 bytes from /dev/hwrng (virtio-rng)")],
        "input": [("KITE-GUEST: got ping", "the guest never read the line sent to kite's stdin")],
        "fckata": [
            ("KITE-HOST: fc state running", "GET / never said Running after the config-file boot"),
            ("KITE-HOST: fc vsock socket ready", "the vsock socket was not there when the guest ran (Kata chmods it)"),
            ("KITE-GUEST: fc rootfs first bytes=KITE-RO!", "the guest could not read the rootfs drive (vda)"),
            ("KITE-GUEST: fc drive0 sectors=0", "the 0-byte placeholder drive (vdb) is not there or not empty"),
            ("KITE-GUEST: fc eth0 mac=02:fc:00:00:00:02", "the guest has no eth0 with the configured MAC"),
            ("KITE-HOST: fc patch drive: HTTP/1.1 204", "PATCH /drives/drive_0 was not answered 204"),
            (f"KITE-GUEST: fc swapped drive sectors={FC_SWAP_BYTES // 512} md5={swap}",
             "the guest did not see the swapped drive's size and contents"),
            ("KITE-HOST: fc pause: HTTP/1.1 204", "PATCH /vm Paused was not answered 204"),
            ('KITE-HOST: fc state while paused: "state":"Paused"', "GET / did not say Paused"),
            ("KITE-HOST: fc resume: HTTP/1.1 204", "PATCH /vm Resumed was not answered 204"),
            ("KITE-HOST: fc flush metrics: HTTP/1.1 204", "FlushMetrics was not answered 204"),
            ('KITE-HOST: fc metrics: "block":{"read_count":', "the metrics FIFO got no line with the block counters"),
            ("KITE-HOST: fc ctrl-alt-del: HTTP/1.1 204", "SendCtrlAltDel was not answered 204"),
            ("reboot: Restarting system", "the guest did not restart after Ctrl+Alt+Delete"),
            ("KITE-HOST: fc kite exit status=0", "kite firecracker did not exit 0 when the guest restarted"),
        ],
        "fcsdk": [
            ("KITE-HOST: fc PUT /actions: HTTP/1.1 204", "InstanceStart was not answered 204"),
            ("KITE-HOST: fc GET /machine-config: HTTP/1.1 200", "GET /machine-config was not answered 200"),
            ("KITE-GUEST: fc root first bytes=KITE-ROOT stub sectors=1",
             "the root drive (given last) is not /dev/vda, or the stub drive not /dev/vdb"),
            ("KITE-HOST: fc vsock socket ready", "the vsock socket (a relative path) was not there"),
            ("KITE-HOST: fc patch stub: HTTP/1.1 204", "PATCH of the stub drive (a relative path) was not answered 204"),
            ("KITE-GUEST: fc stub patched sectors=16384 first bytes=KITE-DATA", "the guest did not see the stub drive's new file"),
            ("KITE-GUEST: fc cmdline names the root drive", "the command line lacks root=/dev/vda rw"),
            ("kite: stopped by signal 15", "kite did not say that SIGTERM stopped it"),
            ("KITE-HOST: fc kite exit status=143", "kite firecracker did not exit 143 on SIGTERM"),
            ("KITE-HOST: fc socket removed", "the API socket was left behind"),
        ],
    }.get(kind, [])


def tail(path, n=TAIL_LINES):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-n:]
    except OSError:
        return []


def guest_log_path(logdir, t):
    """NAME.log for a test's first run, NAME.try2.log for its second: a retry must not
    overwrite the evidence of the failure that caused it."""
    runs = getattr(t, "runs", t.tries)
    return os.path.join(logdir, f"{t.name}.log" if runs <= 1 else f"{t.name}.try{runs}.log")


def l1_monitor(path, command, timeout=10):
    """Sends one command to QEMU's human monitor of L1 (run-job.sh's L1_MONITOR) and returns
    its answer, or an error line; never waits longer than `timeout`."""
    import socket

    def until_prompt(sock):
        data = b""
        while not data.endswith(b"(qemu) "):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            until_prompt(sock)   # the greeting
            sock.sendall(command.encode() + b"\n")
            data = until_prompt(sock)
        text = data.decode("utf-8", "replace").replace("\r", "")
        return text.removesuffix("(qemu) ").split("\n", 1)[-1]   # drop the echoed command
    except OSError as e:
        return f"(L1 monitor {path}: {e})"


def l1_cpu_places(registers):
    """'CPU 0 at RIP ffffffff81234567 (CPL 0, HLT=0)' for each CPU in `info registers -a`."""
    out, cpu = [], None
    for ln in registers.splitlines():
        m = re.match(r"^CPU#(\d+)", ln)
        if m:
            cpu = m.group(1)
        m = re.search(r"[RE]IP=([0-9a-f]+) .*CPL=(\d).*HLT=(\d)", ln)
        if m and cpu is not None:
            out.append(f"CPU {cpu} at RIP {m.group(1)} (CPL {m.group(2)}, HLT={m.group(3)})")
    return out


def emulated_fetch_faults(lines):
    """The two-CPU L1's instruction-fetch fault, from L1's KVM trace of this test: KVM
    injecting a page fault with error code 0x10 (a supervisor instruction fetch from a page
    not present: with nested paging KVM injects one only when its own emulator cannot fetch
    the guest's instruction), or a triple fault whose exit says a #PF with error code 0x10 was
    being delivered. A healthy guest kernel never fetches from unmapped kernel text; QEMU as
    the L2 VMM hits the same in this testbed (README, "The nested testbed"), the one-CPU L1
    has not. Returns a sentence, or "" when the trace shows neither."""
    injected = [ln for ln in lines if "L1 kvm trace:" in ln and "kvm_inj_exception: #PF (0x10)" in ln]
    delivering = [ln for ln in lines if "L1 kvm trace:" in ln and "reason shutdown" in ln
                  and "intr_info 0x80000b0e" in ln and "error_code 0x00000010" in ln]
    if not injected and not delivering:
        return ""
    what = []
    if injected:
        what.append(f"L1's KVM injected {len(injected)} instruction-fetch page fault(s) (#PF error code 0x10)")
    if delivering:
        what.append("the guest triple-faulted while such a fault was being delivered")
    return " and ".join(what) + " (the emulated CPU's nested-paging failure in a two-CPU L1; the retry runs in a one-CPU L1)"


def run_session(tests, idx, logdir, args):
    """Run tests in one testbed session. Returns (results, tests_not_started)."""
    job = os.path.join(logdir, f"session{idx}.job.sh")
    slog = os.path.join(logdir, f"session{idx}.console.log")
    write_job(job, tests, args.irqchip)
    smp = tests[0].l1_smp
    monitor = f"/tmp/kite-l1-{os.getpid()}-{idx}.monitor"
    env = dict(os.environ, L1_SMP=str(smp), L1_MONITOR=monitor,
               JOB_TIMEOUT=str(L1_READY_TIMEOUT + sum(t.deadline + 15 for t in tests) + 60))
    if any(t.vmm == "qemu" for t in tests):
        # the control VMM, with its firmware and option ROMs, inside L1
        env["L1_EXTRA_BINS"] = (env.get("L1_EXTRA_BINS", "") + " " + (shutil.which("qemu-system-x86_64") or "")).strip()
        env["L1_EXTRA_DIRS"] = (env.get("L1_EXTRA_DIRS", "") + " /usr/share/qemu /usr/share/seabios").strip()
    print(f"# session {idx}: {' '.join(t.name for t in tests)} (L1 -smp {smp}; "
          f"console {slog})", flush=True)
    proc = subprocess.Popen([os.path.join(TESTBED, "run-job.sh"), job, slog],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    q = queue.Queue()

    def reader():
        for raw in proc.stdout:
            q.put(raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", ""))
        q.put(None)
    threading.Thread(target=reader, daemon=True).start()

    by_name = {t.name: t for t in tests}
    results, started = {}, set()
    guest_logs = {}
    l1_tail, l1_trouble = [], None
    ready = False
    cur, cur_start, cur_timeout = None, None, False
    t0 = time.monotonic()
    killed_reason = None
    heartbeat = None   # when L1 last printed anything, once it has said "L1: alive" (never on a host)
    last_alive = None

    def kill():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(t, exit_status):
        elapsed = time.monotonic() - cur_start
        glog = guest_log_path(logdir, t)
        with open(glog, "w") as f:
            f.write("\n".join(guest_logs.get(t.name, [])) + "\n")
        lines = guest_logs.get(t.name, [])
        if l1_trouble:
            return Result(t, False, f"L1 kernel trouble during this test: {l1_trouble}",
                          elapsed, testbed=True, log=slog)
        reasons = []
        if cur_timeout or elapsed > t.deadline:
            reasons.append(f"deadline missed ({elapsed:.0f} s, limit {t.deadline} s)")
        if exit_status is None:
            reasons.append("kite did not exit")
        elif exit_status != t.expect_status:
            reasons.append(f"kite exit status {exit_status}, expected {t.expect_status}")
        if t.kind == "triplefault":
            reasons += check_triplefault_log(lines)
        elif t.kind == "hang":
            reasons += check_hang_log(lines, t.name, t.cpus)
        elif t.kind == "healthy":
            reasons += check_healthy_log(lines, t.cpus)
        elif t.kind in ("boottest", "boottesthang"):
            reasons += check_boottest_log(lines, t, logdir)
        else:
            # QEMU passes the emulated CPU's inconsistent XSAVE leaf on (kite builds its own),
            # so its guests always print the fpu__init_system_xstate WARNING.
            reasons += check_guest_log(lines, "seeds" if t.kind == "bringup" else t.kind, t.cpus,
                                       args.allow_xstate_warning or t.vmm == "qemu")
        # A stall under the armed watchdog: quote kite's diagnosis with the failure.
        watch = json_line(lines, "KITE-WATCH-REPORT: ")
        if reasons and watch:
            reasons.append(f"kite's hang report ({watch.get('trigger', '?')}): {str(watch.get('summary'))[:300]}")
        # On AMD a triple fault's registers are reset before the VMM can read them; L1's
        # KVM trace (l1/init, lib.sh) still has the guest's rip at the shutdown exit.
        if t.kind != "triplefault":
            reasons += [f"L1's KVM saw a guest triple fault: {ln[ln.find('kvm_exit:'):][:160]}"
                        for ln in lines if "L1 kvm trace:" in ln and "reason shutdown" in ln]
        fetch_faults = emulated_fetch_faults(lines)
        if reasons and fetch_faults and t.vmm == "kite" and t.l1_smp == 2 and t.kind != "triplefault":
            # The two-CPU L1's own failure (README, "The nested testbed"): judged again in a
            # one-CPU L1 by the retry logic, and never counted as a pass.
            reasons.insert(0, f"the testbed failed: {fetch_faults}")
            result = Result(t, False, "; ".join(reasons), elapsed, testbed=True, log=glog)
            result.fetch_fault = fetch_faults
            return result
        return Result(t, not reasons, "; ".join(reasons), elapsed, log=glog)

    while True:
        now = time.monotonic()
        if not ready:
            limit = t0 + L1_READY_TIMEOUT
        elif cur:
            limit = cur_start + cur.deadline + HOST_SLACK
        else:
            limit = now + 120  # between tests: L1 must keep talking
        l1_stopped = heartbeat is not None and heartbeat + L1_HEARTBEAT_LIMIT < limit
        if l1_stopped:
            limit = heartbeat + L1_HEARTBEAT_LIMIT
        try:
            line = q.get(timeout=max(0.1, limit - now))
        except queue.Empty:
            if not ready:
                killed_reason = f"L1 never printed 'L1: kvm ready' within {L1_READY_TIMEOUT} s"
            elif l1_stopped:
                # Where L1's CPUs are, twice a second apart, before the session is killed.
                samples = [l1_monitor(monitor, "info registers -a")]
                time.sleep(1)
                samples.append(l1_monitor(monitor, "info registers -a"))
                with open(os.path.join(logdir, f"session{idx}.l1-registers.txt"), "w") as f:
                    f.write("\n---- 1 s later ----\n".join(samples))
                places = "; ".join(" then ".join(p) for p in zip(*(l1_cpu_places(x) for x in samples)))
                killed_reason = (f"L1 stopped: no output and no 'L1: alive' heartbeat for {L1_HEARTBEAT_LIMIT} s, "
                                 f"so L1's kernel no longer ran its own tasks (last heartbeat: {last_alive}); "
                                 f"L1's {places or 'CPUs could not be read'} (session{idx}.l1-registers.txt)")
            elif cur:
                killed_reason = "deadline"
            else:
                killed_reason = "testbed silent for 120 s between tests"
            kill()
            break
        if line is None:
            break
        m = re.match(r"^([A-Za-z0-9_.-]+)\| ?(.*)$", line)
        if m and m.group(1) in by_name:
            guest_logs.setdefault(m.group(1), []).append(m.group(2))
            continue
        # Any line is news from L1's user space; "L1: alive" makes sure one comes every 10 s.
        if line.startswith("L1: alive "):
            last_alive, heartbeat = line.strip(), time.monotonic()
            continue
        if last_alive:
            heartbeat = time.monotonic()
        l1_tail = (l1_tail + [line])[-TAIL_LINES:]
        if re.search(r"^(L1|HOST): kvm ready", line):
            ready = True
        elif re.search(r"^(L1|HOST): FAIL", line):
            l1_trouble = l1_trouble or line.strip()
        elif any(p in line for p in L1_BAD):
            l1_trouble = l1_trouble or line.strip()[:200]
        m = re.match(r"^JOB-BEGIN name=(\S+)", line)
        if m and m.group(1) in by_name:
            cur, cur_start, cur_timeout = by_name[m.group(1)], time.monotonic(), False
            started.add(cur.name)
            continue
        if re.match(r"^JOB-TIMEOUT name=", line):
            cur_timeout = True
            continue
        m = re.match(r"^JOB-EXIT name=(\S+) status=(\d+)", line)
        if m and cur and m.group(1) == cur.name:
            r = finish(cur, int(m.group(2)))
            results[cur.name] = r
            report(r)
            cur = None
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        kill()
        proc.wait()
    try:
        os.unlink(monitor)
    except OSError:
        pass

    if cur:  # a test was running when the session ended
        if killed_reason == "deadline" and not l1_trouble:
            r = finish(cur, None)
            rest = [x for x in r.reason.split("; ") if x and not x.startswith(
                ("deadline missed", "kite did not exit", "guest never reached poweroff"))]
            r.reason = "; ".join([f"deadline missed (no exit after {cur.deadline + HOST_SLACK} s, "
                                  f"limit {cur.deadline} s; testbed session killed)"] + rest)
            r.ok = False
        else:
            why = l1_trouble or killed_reason or "L1 exited while the test ran"
            r = finish(cur, None)
            r.ok, r.testbed, r.log = False, True, slog
            r.reason = f"{why} (guest console: {guest_log_path(logdir, cur)})"
        results[cur.name] = r
        report(r)
    not_started = [t for t in tests if t.name not in started]
    if not ready:
        why = killed_reason or "L1 never printed 'L1: kvm ready'"
        if l1_trouble:
            why += f" ({l1_trouble})"
        for t in not_started:
            r = Result(t, False, why, testbed=True, log=slog)
            results[t.name] = r
        if not_started:
            report_testbed_batch(not_started, why, slog)
        not_started = []
    return list(results.values()), not_started


FAILED_REPORTED = set()
# (test, first failure) for tests whose first run failed in kite and were run again.
FLAKY = []
# (test, "kite" or "testbed", first failure) for every test that ran a second time.
RETRIES = []


def retry_summary(results):
    """The CI log's last word on retries: each one, why the first run failed, and how the
    second ended."""
    if not RETRIES:
        return ["# retries: none"]
    out = [f"# retries: {len(RETRIES)}"]
    for name, whose, reason in RETRIES:
        second = next((r for r in results if r.test.name == name), None)
        ended = "passed" if second and second.ok else "failed too"
        first = "the testbed failed" if whose == "testbed" else "kite's run failed"
        out.append(f"#   {name}: first run: {first}: {reason[:300]}; second run {ended}")
    return out


# Sessions run side by side (main): a report's lines are printed together.
PRINT_LOCK = threading.Lock()


def printed_together(function):
    @functools.wraps(function)
    def locked(*args):
        with PRINT_LOCK:
            return function(*args)
    return locked


@printed_together
def report(r):
    # The control VMM's runs are evidence about the testbed, never a failure of kite's.
    control = "CONTROL " if r.test.vmm != "kite" else ""
    if r.ok:
        print(f"{control}PASS {r.test.name} ({r.elapsed:.1f} s)", flush=True)
        return
    tb = "TESTBED FAILURE: " if r.testbed else ""
    print(f"{control}FAIL {r.test.name}: {tb}{r.reason}", flush=True)
    if r.log:
        print(f"  log: {r.log} (last {TAIL_LINES} lines)")
        for ln in tail(r.log):
            print(f"  | {ln}")
    sys.stdout.flush()
    FAILED_REPORTED.add(r.test.name)


@printed_together
def report_testbed_batch(tests, why, slog):
    for i, t in enumerate(tests):
        control = "CONTROL " if t.vmm != "kite" else ""
        print(f"{control}FAIL {t.name}: TESTBED FAILURE: {why}", flush=True)
        FAILED_REPORTED.add(t.name)
    print(f"  L1 console: {slog} (last {TAIL_LINES} lines)")
    for ln in tail(slog):
        print(f"  | {ln}")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated test names (e.g. boot4,seeds4; bootN/seedsN allowed)")
    ap.add_argument("--cpus-list", help="comma-separated vCPU counts for the boot tests (default 1,2,4,10)")
    ap.add_argument("--extended", action="store_true", help="add boot64 and boot288-split, the short SMP boots once more in a two-CPU L1 (NAME-smp2), and the bring-up runs beside QEMU; healthy4 runs 10 minutes instead of 4")
    ap.add_argument("--allow-xstate-warning", action="store_true",
                    help="ignore the Call Trace of the known fpu__init_system_xstate WARNING "
                         "(emulated CPU's inconsistent CPUID leaf 0xD)")
    ap.add_argument("--irqchip", choices=("kernel", "split", "userspace"), default="kernel",
                    help="run every kite with these interrupt controllers (default: kernel)")
    ap.add_argument("--l1-smp", type=int, choices=(1, 2),
                    help="run every test in an L1 with this many CPUs (default: per test)")
    ap.add_argument("--jobs", type=int, metavar="CPUS",
                    help="host CPUs the L1 sessions may use at once: one-CPU L1s run side by side "
                         "while their CPUs fit (default: the CPUs this process may run on)")
    ap.add_argument("--deadline-scale", type=float, default=1.0,
                    help="multiply every deadline (e.g. 2 on a slow machine)")
    args = ap.parse_args()
    Test.scale = args.deadline_scale
    if args.extended:
        Test.HEALTHY_SECONDS = Test.HEALTHY_SECONDS_EXTENDED

    tests = build_matrix(args)
    kite = os.environ.get("KITE_BIN", os.path.join(ROOT, ".build/release/kite"))
    if not os.access(kite, os.X_OK):
        print(f"kite binary not found: {kite} (scripts/build-release, "
              "or set KITE_BIN)", file=sys.stderr)
        return 2
    for script in ("fetch-kernel.sh", "build-guest-initramfs.sh"):
        subprocess.run([os.path.join(TESTBED, script)], check=True, stdout=subprocess.DEVNULL)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(CACHE, "logs", stamp)
    os.makedirs(logdir, exist_ok=True)
    latest = os.path.join(CACHE, "logs", "latest")
    try:
        if os.path.islink(latest):
            os.unlink(latest)
        os.symlink(stamp, latest)
    except OSError:
        pass

    results = []
    pending = list(tests)
    session = 0
    t_all = time.monotonic()
    # Sessions run side by side while their L1s' CPUs fit in the host's (--jobs): a one-CPU
    # L1 keeps one host CPU busy, so on two host CPUs two one-CPU sessions run at once, and
    # a two-CPU session runs alone.
    slots = args.jobs or len(os.sched_getaffinity(0))
    # The default run's two long tests (healthy4's minutes of load, bringup32) go first and
    # head sessions of their own, so that they run beside the others instead of after them.
    # (--extended keeps its order: its bring-up runs stay beside their QEMU controls.)
    long_kinds = () if args.extended else ("healthy", "bringup")
    pending.sort(key=lambda t: t.kind not in long_kinds)
    running = {}             # session number -> the L1's CPUs
    done = queue.Queue()     # (session number, results, tests not started)

    def start(batch, number):
        res, not_started = run_session(batch, number, logdir, args)
        done.put((number, res, not_started))

    while pending or running:
        free = slots - sum(running.values())
        # the widest pending L1 that fits: the two-CPU sessions first, while nothing else
        # runs, then the one-CPU ones side by side (their retries, which come later, too)
        fits = max((t.l1_smp for t in pending if t.l1_smp <= free or not running), default=None)
        if fits is not None:
            batch = []
            for t in pending:
                if t.l1_smp == fits and len(batch) < BATCH_SIZE and not (
                        t.kind in long_kinds and any(b.kind in long_kinds for b in batch)):
                    batch.append(t)
            pending = [t for t in pending if t not in batch]
            for t in batch:
                t.tries += 1
                t.runs = getattr(t, "runs", 0) + 1   # every run, for its log's name (tries restart in a one-CPU L1)
            session += 1
            running[session] = fits
            threading.Thread(target=start, args=(batch, session), daemon=True).start()
            time.sleep(2)   # L1s that start together would compete for the same CPU while they boot
            continue
        number, res, not_started = done.get()
        del running[number]
        retry = []
        for r in res:
            fetch_fault = getattr(r, "fetch_fault", "")
            if fetch_fault and r.test.vmm == "kite" and not getattr(r.test, "moved_to_one_cpu", False):
                # The two-CPU L1's fetch fault (emulated_fetch_faults): the test's verdict comes
                # from a one-CPU L1, where the same guest runs without it.
                print(f"RETRY {r.test.name}: the testbed failed, not kite ({fetch_fault}); "
                      "running it again in a one-CPU L1", flush=True)
                RETRIES.append((r.test.name, "testbed", r.reason))
                r.test.moved_to_one_cpu = True
                r.test.l1_smp = 1
                r.test.tries = 0   # the one-CPU L1 judges it afresh (its own FLAKY retry included)
                retry.append(r.test)
                continue
            if r.ok or r.test.tries >= 2 or r.test.vmm != "kite":
                results.append(r)   # the control VMM's runs are counted as they come
            elif r.testbed:
                # The nested testbed itself failed (L1's kernel panicked or hung, which Kite
                # cannot cause from user space): say so and run that test once more.
                print(f"RETRY {r.test.name}: the testbed failed, not kite; running it again "
                      "in a new L1 session", flush=True)
                RETRIES.append((r.test.name, "testbed", r.reason))
                retry.append(r.test)
            else:
                # A kite failure gets one more run to tell an intermittent problem from a
                # broken one; either way it is reported (FLAKY below) and never hidden.
                print(f"RETRY {r.test.name}: kite's run failed; running it again to see whether "
                      "the failure is intermittent", flush=True)
                FLAKY.append((r.test.name, r.reason))
                RETRIES.append((r.test.name, "kite", r.reason))
                retry.append(r.test)
        for t in not_started:  # the session died before these ran: that was not their try
            t.tries -= 1
            t.runs -= 1
            t.sessions_lost = getattr(t, "sessions_lost", 0) + 1
            if t.sessions_lost < 2:
                retry.append(t)
            else:
                r = Result(t, False, "not run: testbed session ended before it started",
                           testbed=True)
                results.append(r)
                report(r)
        pending = retry + pending

    order = {t.name: i for i, t in enumerate(tests)}
    results.sort(key=lambda r: order[r.test.name])
    for line in side_by_side(results):
        print(f"SIDE BY SIDE {line}")
    controls = [r for r in results if r.test.vmm != "kite"]
    if controls:
        print(f"# QEMU control runs: {sum(r.ok for r in controls)} of {len(controls)} passed "
              "(evidence about the testbed; not counted below)")
    results = [r for r in results if r.test.vmm == "kite"]
    passed = sum(r.ok for r in results)
    failed = len(results) - passed
    for name, reason in FLAKY:
        second = next((r for r in results if r.test.name == name), None)
        if second and second.ok:
            print(f"FLAKY {name}: the first run failed ({reason[:200]}), the second passed. "
                  "An intermittent failure is a bug to find, not noise.")
    for line in retry_summary(results):
        print(line)
    print(f"# logs: {logdir}  total {time.monotonic() - t_all:.0f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
