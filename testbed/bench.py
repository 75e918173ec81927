#!/usr/bin/env python3
"""Kite benchmarks: boot time, VMM memory and IPI latency, side by side with QEMU.

Boots the same Debian cloud kernel and busybox initramfs (testbed/guest/init, mode
"bench") with the same vCPUs and memory under kite, `qemu-system-x86_64 -M microvm` and
`-M pc` (both with KVM and -cpu host), alternating kite, microvm, pc, kite, ... so slow
drifts of the machine hit all three alike. Runs inside the nested testbed (L1 = QEMU TCG
with emulated SVM, testbed/run-job.sh) when this host has no hardware virtualization.

Each run is measured from the outside by testbed/bench/vmm-probe (the same for every VMM):
  boot     wall time from the VMM's fork to the guest's "KITE-GUEST: init reached" line
  memory   at that moment, RSS of the VMM process minus its guest-RAM mappings
           (/proc/PID/smaps, the way Firecracker measures its overhead)
  IPI      then the guest runs testbed/bench/ipi-pingpong: two threads on CPUs 0 and 1
           ping-pong through a futex, so the waiting CPU halts every round; median and p99
           round trip over --ipi-rounds rounds
Kite's own --boot-timing line (first guest instruction, first console byte, init marker
from the boot timer) is collected too.

    python3 testbed/bench.py                       # 1,2,4,16 vCPUs, 5 runs each, 100k IPI rounds
    python3 testbed/bench.py --scaling             # + 8,32,64 vCPUs (--scaling-runs each)
    python3 testbed/bench.py --cpus 2 --runs 2 --ipi-rounds 1000      # a quick look
    python3 testbed/bench.py --profile --cpus 4,16 --runs 3     # where each guest spends its boot (its kernel log)
    python3 testbed/bench.py --irqchip userspace --cpus 2 --runs 3      # one interrupt-controller mode
    python3 testbed/bench.py --irqchip split --vmms kite --cpus 2 --runs 1 --ipi-rounds 1000000 --hang-timeout 60
    python3 testbed/bench.py --render-modes DIR DIR DIR   # one table across the modes' runs

--irqchip gives kite `--irqchip MODE` and both QEMUs the matching `kernel-irqchip=` (kernel:
on, split: split, userspace: off). In a soak (with --hang-timeout), a lost wake-up is a
guest that stops: kite's watchdog reports the hang and ends the run (trouble, no IPI
result), or failing that the probe's deadline does.

Prints Markdown tables (also written to .cache/bench/<stamp>/results.md, raw numbers to
results.json, every console to session*.log). Not a test: it never fails on a number.
Env: KITE_BIN (default .build/release/kite), QEMU (default qemu-system-x86_64),
KITE_FORCE_L1=1, and what run-job.sh reads.
"""
import argparse
import glob
import json
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTBED = os.path.join(ROOT, "testbed")
CACHE = os.environ.get("KITE_CACHE", os.path.join(ROOT, ".cache"))
MARKER = "KITE-GUEST: init reached"
VMMS = ("kite", "microvm", "pc")
# kite's --irqchip mode: QEMU's matching kernel-irqchip= machine property
QEMU_IRQCHIP = {"kernel": "on", "split": "split", "userspace": "off"}
L1_FILES = "/bench"   # where the benchmark's files sit inside L1
# Signs of a guest in trouble (scaling target: none at 64 vCPUs).
TROUBLE = re.compile(r"soft lockup|hard LOCKUP|rcu: INFO|detected stalls|blocked for more than|"
                     r"Kernel panic|BUG:|kite: the guest (hung|crashed)")


def vmm_command(vmm, cpus, memory_mib, kernel, initrd, cmdline, qemu, irqchip="kernel", hang_timeout=0):
    if vmm == "kite":
        return ["$KITE", "run", "--kernel", kernel, "--initrd", initrd, "--cmdline", cmdline,
                "--cpus", str(cpus), "--memory", f"{memory_mib}M", "--boot-timing"] + \
               (["--irqchip", irqchip] if irqchip != "kernel" else []) + \
               (["--hang-timeout", str(hang_timeout)] if hang_timeout else [])
    machine = vmm if irqchip == "kernel" else f"{vmm},kernel-irqchip={QEMU_IRQCHIP[irqchip]}"
    return [qemu, "-M", machine, "-accel", "kvm", "-cpu", "host", "-smp", str(cpus),
            "-m", f"{memory_mib}M", "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "stdio", "-no-reboot", "-kernel", kernel, "-initrd", initrd,
            "-append", cmdline]


def counted(runs):
    return [r for r in runs if r["run"] > 0]


def wants_ipi(cpus, run):
    """The IPI test runs in counted runs of guests with two CPUs or more."""
    return cpus >= 2 and run > 0


def ipi_rounds_for(cpus, run, rounds, profile=False):
    """The IPI rounds this run asks its guest for (0: no IPI test; none in a --profile run)."""
    return rounds if wants_ipi(cpus, run) and not profile else 0


# --profile: moments of the guest's boot, by the guest's own clock (its kernel log's time
# stamps, kvm-clock from early in the kernel's start), found by these lines.
MILESTONES = (
    ("secondary CPUs", re.compile(r"smp: Bringing up secondary CPUs")),
    ("CPUs up", re.compile(r"smp: Brought up")),
    ("kernel done", re.compile(r"Freeing unused kernel image")),
    ("init", re.compile(r"Run /init as init process")),
)
# kvm-clock's value when the guest started its clock (in ns, though the line says cycles):
# the time from the VM's creation to that moment (firmware, the kernel's decompression, its
# earliest set-up), which the log's time stamps leave out.
SCHED_OFFSET = re.compile(r"kvm-clock: using sched offset of (\d+) cycles")
DMESG_LINE = re.compile(r"KITE-GUEST: dmesg: \[\s*(\d+\.\d+)\] (.*)")
# What bench mode's guest prints of its paravirtual features (testbed/guest/init).
PV_LINE = re.compile(r"kvm-guest|clocksource: Switched|PV spinlocks")


def run_timeout(cpus, ipi_rounds):
    """Seconds a run may take before the probe kills it: boot grows with vCPUs under TCG."""
    return 90 + 10 * cpus + ipi_rounds // 500


def write_job(path, plan, args, files):
    """plan: list of (vmm, cpus, run). The job runs in busybox sh (L1) or bash (host)."""
    initrd = "$B/initramfs-bench.cpio.gz"
    probe = "$B/vmm-probe"
    with open(path, "w") as f:
        f.write("# generated by testbed/bench.py\n")
        # The probe and initramfs: at L1_FILES inside L1, where they were built on a host.
        f.write(f'B={L1_FILES}; [ -d "$B" ] || B={shlex.quote(files)}\n')
        f.write(f'echo "BENCH-HOST nproc=$(nproc) kernel=$(uname -r) '
                f'qemu=$({shlex.quote(args.qemu)} --version | head -n1 | tr " " _)"\n')
        for vmm, cpus, run in plan:
            ipi = ipi_rounds_for(cpus, run, args.ipi_rounds, args.profile)
            # facts: the guest prints its kernel log after the init marker, which --profile reads.
            mode = "facts" if args.profile else "bench"
            cmdline = f"console=ttyS0 quiet panic=-1 kite.test={mode}" + (f" kite.ipi={ipi}" if ipi else "")
            cmd = vmm_command(vmm, cpus, args.memory, "$GUEST_KERNEL", initrd, cmdline, args.qemu, args.irqchip,
                              args.hang_timeout)
            quoted = " ".join(c if c.startswith("$") else shlex.quote(c) for c in cmd)
            f.write(f'echo "BENCH-RUN vmm={vmm} cpus={cpus} run={run} ipi={ipi}"\n')
            f.write(f"{probe} --marker {shlex.quote(MARKER)} --guest-mem-mib {args.memory} "
                    f"--timeout {run_timeout(cpus, ipi)} -- {quoted}\n")
            # What L1's KVM traced during the run (shutdowns, injected exceptions; see
            # l1/init): how many events, and the last few, then cleared for the next run.
            f.write('if [ -n "${KVM_TRACE:-}" ]; then '
                    'echo "L1 kvm trace: $(grep -vc \'^#\' "$KVM_TRACE/trace") events"; '
                    'grep -v \'^#\' "$KVM_TRACE/trace" | tail -n 8 | sed \'s/^/L1 kvm trace: /\'; '
                    ': >"$KVM_TRACE/trace"; fi\n')
            f.write('echo "BENCH-DONE"\n')


def parse_session(lines):
    """Runs from a session console: dicts with vmm, cpus, run and what was measured."""
    runs, cur, host = [], None, {}
    for line in lines:
        m = re.search(r"BENCH-HOST (.*)", line)
        if m:
            host = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
            continue
        m = re.search(r"BENCH-RUN vmm=(\w+) cpus=(\d+) run=(\d+)(?: ipi=(\d+))?", line)
        if m:
            cur = {"vmm": m.group(1), "cpus": int(m.group(2)), "run": int(m.group(3)),
                   "trouble": [], "console": [], "dmesg": []}
            # Logs from before the ipi= field: every counted SMP run asked for the IPI test.
            cur["ipi_asked"] = int(m.group(4)) if m.group(4) is not None else \
                (1 if wants_ipi(cur["cpus"], cur["run"]) else 0)
            runs.append(cur)
            continue
        if cur is None:
            continue
        if "BENCH-DONE" in line:
            cur["done"] = True
            # A guest that never powered off was reset or crashed: under QEMU with
            # -no-reboot that is a silent exit status 0, so look for init's last word.
            if not any("KITE-GUEST: poweroff" in l for l in cur["console"]):
                cur["trouble"].append("the guest did not power off (reset, crash or hang)")
            if cur["ipi_asked"] and "ipi_median_ns" not in cur:
                cur["trouble"].append("no IPI result")
            if cur["dmesg"]:
                cur["milestones"] = {name: next((t for t, text in cur["dmesg"] if rx.search(text)), None)
                                     for name, rx in MILESTONES}
                offset = next(filter(None, (SCHED_OFFSET.search(text) for _, text in cur["dmesg"])), None)
                cur["clock_started_s"] = int(offset.group(1)) / 1e9 if offset else None
                cur["dmesg_gaps"] = dmesg_gaps(cur["dmesg"])
            cur = None
            continue
        cur["console"].append(line)
        m = re.search(r"PROBE marker_ms=([\d.]+) rss_total_kib=(-?\d+) rss_guest_kib=(-?\d+) "
                      r"rss_vmm_kib=(-?\d+) guest_maps=(\S+)(?: pss_vmm_kib=(-?\d+))?(?: anon_vmm_kib=(-?\d+))?", line)
        if m:
            cur.update(boot_ms=float(m.group(1)), rss_total_kib=int(m.group(2)),
                       rss_guest_kib=int(m.group(3)), rss_vmm_kib=int(m.group(4)),
                       guest_maps=m.group(5), pss_vmm_kib=int(m.group(6)) if m.group(6) else None,
                       anon_vmm_kib=int(m.group(7)) if m.group(7) else -1)
        m = re.search(r"PROBE exit_ms=([\d.]+) (status=(-?\d+)|signal=(\d+))", line)
        if m:
            cur["exit_ms"] = float(m.group(1))
            cur["exit"] = f"status {m.group(3)}" if m.group(3) is not None else f"signal {m.group(4)}"
        if "PROBE timeout" in line:
            cur["trouble"].append("timeout")
        m = re.search(r"IPI rounds=(\d+) .*median_ns=(\d+) p99_ns=(\d+)", line)
        if m:
            cur.update(ipi_rounds=int(m.group(1)), ipi_median_ns=int(m.group(2)), ipi_p99_ns=int(m.group(3)))
        m = re.search(r"kite: boot timing \(ms since kite started\): first guest instruction ([\d.]+), "
                      r"first console byte ([\d.]+), init marker ([\d.]+)", line)
        if m:
            cur.update(kite_first_instruction_ms=float(m.group(1)), kite_first_console_ms=float(m.group(2)),
                       kite_init_marker_ms=float(m.group(3)))
        m = DMESG_LINE.search(line)
        if m:   # facts mode: the whole kernel log, with time stamps
            cur["dmesg"].append((float(m.group(1)), m.group(2).strip()))
            if PV_LINE.search(m.group(2)):
                cur.setdefault("guest_pv", []).append(m.group(2).strip())
        else:
            m = re.search(r"KITE-GUEST: dmesg: (.*)", line)
            if m:   # bench mode: the paravirtual lines, time stamps taken off
                cur.setdefault("guest_pv", []).append(m.group(1).strip())
        if TROUBLE.search(line):
            cur["trouble"].append(line.strip()[:160])
    return runs, host


def dmesg_gaps(dmesg):
    """{the line a gap follows, digits blanked: seconds until the next line} of a run's log."""
    gaps = {}
    for (t0, text), (t1, _) in zip(dmesg, dmesg[1:]):
        key = re.sub(r"\d+", "#", text)[:90]
        gaps[key] = gaps.get(key, 0.0) + (t1 - t0)
    return gaps


SILENT = object()   # what run_session's line queue gave when nothing came in time


def run_session(idx, plan, args, files, logdir):
    """Runs `plan` in one testbed session. Returns (completed runs, host facts, wedged):
    wedged when the session went silent (L1 itself stuck, seen with QEMU and kite alike)
    and was killed; the caller then runs what is left in a new session."""
    job = os.path.join(logdir, f"session{idx}.job.sh")
    log = os.path.join(logdir, f"session{idx}.log")
    write_job(job, plan, args, files)
    budget = 120 + sum(run_timeout(c, ipi_rounds_for(c, r, args.ipi_rounds, args.profile)) + 10 for _, c, r in plan)
    env = dict(os.environ, L1_SMP=str(args.l1_smp), JOB_TIMEOUT=str(budget),
               L1_EXTRA_BINS=shutil.which(args.qemu) or args.qemu,
               L1_EXTRA_DIRS=f"/usr/share/qemu /usr/share/seabios {files}={L1_FILES}")
    desc = ", ".join(sorted({f"{c} vCPUs" for _, c, _ in plan}))
    print(f"# session {idx}: {len(plan)} runs ({desc}); console {log}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen([os.path.join(TESTBED, "run-job.sh"), job, log], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: ([lines.put(l) for l in proc.stdout], lines.put(None)), daemon=True).start()
    # A stuck L1 is either silent or still printing its own kernel's complaints (soft
    # lockups every 28 s, seen with khugepaged): so a run also has a deadline of its own,
    # its probe's plus a minute, however much L1 prints.
    wedged, limit, run_deadline = False, 300, None     # L1 boot and image build first
    while True:
        wait = limit if run_deadline is None else max(0.1, min(limit, run_deadline - time.monotonic()))
        try:
            raw = lines.get(timeout=wait)
        except queue.Empty:
            raw = SILENT
        if run_deadline is not None and time.monotonic() >= run_deadline:
            print("  TESTBED: a run went past its deadline (L1 stuck); killing the session", flush=True)
            wedged = True
        elif raw is SILENT:
            print(f"  TESTBED: the session was silent for {limit} s (L1 stuck); killing it", flush=True)
            wedged = True
        if wedged:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        if raw is None:
            break
        m = re.search(rb"BENCH-RUN vmm=\w+ cpus=(\d+) run=(\d+)", raw)
        if m:   # a run is silent at most until its probe's deadline, then speaks
            c = int(m.group(1))
            limit = run_timeout(c, ipi_rounds_for(c, int(m.group(2)), args.ipi_rounds, args.profile)) + 60
            run_deadline = time.monotonic() + limit
        elif b"BENCH-DONE" in raw:
            limit, run_deadline = 180, None
        elif b"PROBE timeout" in raw:   # the probe has killed the VMM: it must report soon
            limit = 60
    proc.wait()
    time.sleep(0.5)   # run-job.sh's tee finishes the log
    with open(log, errors="replace") as f:
        runs, host = parse_session([l.rstrip("\r\n") for l in f])
    runs = [r for r in runs if r.get("done")]
    for r in runs:
        state = f"boot {r['boot_ms']:.0f} ms" if "boot_ms" in r else "no init marker"
        ipi = f", IPI median {r['ipi_median_ns'] / 1000:.1f} us" if "ipi_median_ns" in r else ""
        mem = f", VMM RSS {r['rss_vmm_kib'] / 1024:.1f} MiB" if r.get("rss_vmm_kib", -1) >= 0 else ""
        bad = f"  TROUBLE: {r['trouble'][0]}" if r["trouble"] else ""
        print(f"  {r['vmm']:7} {r['cpus']:2} vCPUs {'warm-up' if r['run'] == 0 else 'run ' + str(r['run'])}: "
              f"{state}{mem}{ipi}, exit {r.get('exit', '?')}{bad}", flush=True)
    print(f"  ({time.monotonic() - t0:.0f} s)", flush=True)
    for r in runs:
        del r["console"], r["dmesg"]
    return runs, host, wedged


def median(xs):
    return statistics.median(xs) if xs else None


def spread(xs):
    return (min(xs), max(xs)) if xs else None


def fmt_range(r, digits=0):
    return "–" if r is None else f"{r[0]:.{digits}f}–{r[1]:.{digits}f}"


def fmt(x, unit="", digits=0):
    return "–" if x is None else f"{x:.{digits}f}{unit}"


def ratio(a, b):
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def summarize(runs, cpus_list):
    """Per (cpus, vmm): medians and counts."""
    out = {}
    for c in cpus_list:
        for v in VMMS:
            rs = [r for r in counted(runs) if r["cpus"] == c and r["vmm"] == v]
            if not rs:
                continue
            ok = [r for r in rs if "boot_ms" in r]
            out[(c, v)] = {
                "runs": len(rs), "booted": len(ok),
                "boot_ms": median([r["boot_ms"] for r in ok]),
                "rss_vmm_mib": median([r["rss_vmm_kib"] / 1024 for r in ok if r["rss_vmm_kib"] >= 0]),
                "anon_vmm_mib": median([r["anon_vmm_kib"] / 1024 for r in ok if r.get("anon_vmm_kib", -1) >= 0]),
                "ipi_median_us": median([r["ipi_median_ns"] / 1000 for r in rs if "ipi_median_ns" in r]),
                "ipi_p99_us": median([r["ipi_p99_ns"] / 1000 for r in rs if "ipi_p99_ns" in r]),
                "ipi_range_us": spread([r["ipi_median_ns"] / 1000 for r in rs if "ipi_median_ns" in r]),
                "boot_range_ms": spread([r["boot_ms"] for r in ok]),
                "ipi_runs": sum("ipi_median_ns" in r for r in rs),
                "trouble": sum(bool(r["trouble"]) for r in rs),
                "kite_first_instruction_ms": median([r["kite_first_instruction_ms"] for r in rs
                                                     if "kite_first_instruction_ms" in r]),
                "kite_first_console_ms": median([r["kite_first_console_ms"] for r in rs
                                                 if "kite_first_console_ms" in r]),
                "kite_init_marker_ms": median([r["kite_init_marker_ms"] for r in rs if "kite_init_marker_ms" in r]),
            }
    return out


def markdown(summary, cpus_list, header):
    g = lambda c, v, k: summary.get((c, v), {}).get(k)
    out = [header, "",
           "| vCPUs | boot kite | boot microvm | boot pc | kite/microvm | kite/pc | runs (booted) k/µ/pc |",
           "|---:|---:|---:|---:|---:|---:|---|"]
    for c in cpus_list:
        counts = "/".join(f"{g(c, v, 'runs') or 0}({g(c, v, 'booted') or 0})" for v in VMMS)
        out.append(f"| {c} | {fmt(g(c, 'kite', 'boot_ms'), ' ms')} | {fmt(g(c, 'microvm', 'boot_ms'), ' ms')} | "
                   f"{fmt(g(c, 'pc', 'boot_ms'), ' ms')} | {ratio(g(c, 'kite', 'boot_ms'), g(c, 'microvm', 'boot_ms'))} | "
                   f"{ratio(g(c, 'kite', 'boot_ms'), g(c, 'pc', 'boot_ms'))} | {counts} |")
    out += ["", "| vCPUs | VMM RSS kite | microvm | pc | of which anonymous: kite | microvm | pc |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cpus_list:
        out.append(f"| {c} | " + " | ".join(fmt(g(c, v, "rss_vmm_mib"), " MiB", 1) for v in VMMS) + " | "
                   + " | ".join(fmt(g(c, v, "anon_vmm_mib"), " MiB", 1) for v in VMMS) + " |")
    out += ["", "Boot: range of the runs (ms)", "", "| vCPUs | kite | microvm | pc |", "|---:|---|---|---|"]
    for c in cpus_list:
        out.append(f"| {c} | " + " | ".join(fmt_range(g(c, v, "boot_range_ms")) for v in VMMS) + " |")
    out += ["", "IPI round trip: median over the runs of each run's median and p99; the range of the "
                "runs' medians shows how much runs differ", "",
            "| vCPUs | IPI median kite | microvm | pc | kite/microvm | kite/pc | "
                "p99 kite | microvm | pc | range of medians kite | microvm | pc | runs k/µ/pc |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|"]
    for c in cpus_list:
        if c < 2:
            continue
        med = [g(c, v, "ipi_median_us") for v in VMMS]
        p99 = [g(c, v, "ipi_p99_us") for v in VMMS]
        counts = "/".join(str(g(c, v, "ipi_runs") or 0) for v in VMMS)
        out.append(f"| {c} | " + " | ".join(fmt(x, " µs", 1) for x in med) +
                   f" | {ratio(med[0], med[1])} | {ratio(med[0], med[2])} | " +
                   " | ".join(fmt(x, " µs", 1) for x in p99) + " | " +
                   " | ".join(fmt_range(g(c, v, "ipi_range_us")) for v in VMMS) + f" | {counts} |")
    out += ["", "| vCPUs | kite: first instruction | first console byte | init marker (boot timer) |"
                " runs with lockup/stall/timeout k/µ/pc |", "|---:|---:|---:|---:|---|"]
    for c in cpus_list:
        trouble = "/".join(str(g(c, v, "trouble") or 0) for v in VMMS)
        out.append(f"| {c} | {fmt(g(c, 'kite', 'kite_first_instruction_ms'), ' ms', 1)} | "
                   f"{fmt(g(c, 'kite', 'kite_first_console_ms'), ' ms')} | "
                   f"{fmt(g(c, 'kite', 'kite_init_marker_ms'), ' ms')} | {trouble} |")
    return "\n".join(out) + "\n"


def profile_markdown(runs, cpus_list, header, top=8):
    """--profile: where each VMM's guest spends its boot, by the guest's own clock."""
    names = [n for n, _ in MILESTONES]
    out = [header, "",
           "Medians over the runs, seconds by the guest's clock (its kernel log); wall boot and "
           "wall boot minus the guest's init (what came before the guest's clock started, and init's first steps) are "
           "the probe's; \"guest clock started\" is kvm-clock's reading when the guest started its clock, the "
           "time since the VM was created.", "",
           "| vCPUs | VMM | runs | wall boot | guest clock started | " + " | ".join(names)
           + " | SMP bring-up | wall boot − guest init |",
           "|---:|---|---:|---:|---:|" + "---:|" * len(names) + "---:|---:|"]
    for c in cpus_list:
        for v in VMMS:
            rs = [r for r in counted(runs) if r["cpus"] == c and r["vmm"] == v and r.get("milestones")]
            if not rs:
                continue
            ms = {n: median([r["milestones"][n] for r in rs if r["milestones"].get(n) is not None]) for n in names}
            smp = median([r["milestones"]["CPUs up"] - r["milestones"]["secondary CPUs"] for r in rs
                          if r["milestones"].get("CPUs up") is not None
                          and r["milestones"].get("secondary CPUs") is not None])
            boot = median([r["boot_ms"] / 1000 for r in rs if "boot_ms" in r])
            pre = median([r["boot_ms"] / 1000 - r["milestones"]["init"] for r in rs
                          if "boot_ms" in r and r["milestones"].get("init") is not None])
            started = median([r["clock_started_s"] for r in rs if r.get("clock_started_s") is not None])
            out.append(f"| {c} | {v} | {len(rs)} | {fmt(boot, ' s', 2)} | {fmt(started, ' s', 2)} | "
                       + " | ".join(fmt(ms[n], " s", 2) for n in names)
                       + f" | {fmt(smp, ' s', 2)} | {fmt(pre, ' s', 2)} |")
    for c in cpus_list:
        per = {}
        for v in VMMS:
            rs = [r for r in counted(runs) if r["cpus"] == c and r["vmm"] == v and r.get("dmesg_gaps")]
            if rs:
                keys = set().union(*(r["dmesg_gaps"] for r in rs))
                per[v] = {k: median([r["dmesg_gaps"].get(k, 0.0) for r in rs]) for k in keys}
        if not per:
            continue
        keys = set()
        for v, gaps in per.items():
            keys |= set(sorted(gaps, key=gaps.get, reverse=True)[:top])
        keys = sorted(keys, key=lambda k: -max(g.get(k, 0.0) for g in per.values()))
        out += ["", f"{c} vCPUs: the kernel-log lines after which the guest's clock ran longest before "
                    f"the next line (median seconds over the runs; each VMM's {top} longest)", "",
                "| line | " + " | ".join(per) + " |", "|---|" + "---:|" * len(per)]
        for k in keys:
            out.append(f"| `{k.replace('|', '/')}` | " + " | ".join(fmt(per[v].get(k, 0.0), "", 2) for v in per) + " |")
    return "\n".join(out) + "\n"


def guest_features(runs):
    """What each VMM's guest reported about paravirtual features (from one run each)."""
    out = ["", "What the guest kernel said about its VMM's paravirtual features (dmesg, the run with the most vCPUs):", ""]
    for v in VMMS:
        # An SMP run: with one vCPU the guest switches its paravirtual spinlocks off.
        r = max((r for r in counted(runs) if r["vmm"] == v and r.get("guest_pv")), key=lambda r: r["cpus"], default=None)
        if r:
            out.append(f"- {v}: " + "; ".join(r["guest_pv"]))
    return "\n".join(out) + "\n"


def render(dirs):
    """One report from the results.json of earlier runs (e.g. the main table and --scaling)."""
    runs, headers = [], []
    for d in dirs:
        for log in sorted(glob.glob(os.path.join(d, "session*.log"))):
            with open(log, errors="replace") as f:
                got, _ = parse_session([l.rstrip("\r\n") for l in f])
            runs += [r for r in got if r.get("done") and r["run"] > 0]
        with open(os.path.join(d, "results.md")) as f:
            headers.append(f.read().split("\n\n| vCPUs")[0].strip())
    counts = sorted({r["cpus"] for r in runs})
    print(markdown(summarize(runs, counts), counts, "\n\n".join(headers)) + guest_features(runs))
    return 0


def render_modes(dirs):
    """One table across interrupt-controller modes, from runs made with --irqchip (one
    directory per mode): boot and IPI medians of each VMM, and kite's ratios."""
    rows = []
    for d in dirs:
        with open(os.path.join(d, "results.json")) as f:
            data = json.load(f)
        mode = data["args"].get("irqchip", "kernel")
        runs = data["runs"]
        counts = sorted({r["cpus"] for r in runs})
        summary = summarize(runs, counts)
        for c in counts:
            rows.append((mode, c, summary, data.get("commit", "?")))
    out = ["| vCPUs | kite --irqchip / QEMU kernel-irqchip= | boot kite | microvm | pc | kite/microvm | kite/pc | "
           "IPI median kite | microvm | pc | kite/microvm | kite/pc | runs k/µ/pc |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for mode, c, summary, commit in rows:
        g = lambda v, k: summary.get((c, v), {}).get(k)
        boot = [g(v, "boot_ms") for v in VMMS]
        ipi = [g(v, "ipi_median_us") for v in VMMS]
        counts = "/".join(str(g(v, "runs") or 0) for v in VMMS)
        out.append(f"| {c} | {mode} / {QEMU_IRQCHIP[mode]} | " + " | ".join(fmt(x, " ms") for x in boot)
                   + f" | {ratio(boot[0], boot[1])} | {ratio(boot[0], boot[2])} | "
                   + " | ".join(fmt(x, " µs", 1) for x in ipi)
                   + f" | {ratio(ipi[0], ipi[1])} | {ratio(ipi[0], ipi[2])} | {counts} |")
    print("\n".join(out))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpus", default="1,2,4,16", help="comma-separated vCPU counts (default 1,2,4,16)")
    ap.add_argument("--runs", type=int, default=5, help="runs per VMM and vCPU count (default 5)")
    ap.add_argument("--scaling", action="store_true", help="also 8, 32 and 64 vCPUs")
    ap.add_argument("--scaling-runs", type=int, default=3, help="runs per VMM at 8, 32, 64 vCPUs (default 3)")
    ap.add_argument("--ipi-rounds", type=int, default=100000, help="IPI round trips per run (default 100000)")
    ap.add_argument("--memory", type=int, default=512, help="guest RAM in MiB (default 512)")
    ap.add_argument("--l1-smp", type=int, default=2, help="L1's CPUs, like the 2-core host (default 2)")
    ap.add_argument("--qemu", default=os.environ.get("QEMU", "qemu-system-x86_64"))
    ap.add_argument("--irqchip", default="kernel", choices=list(QEMU_IRQCHIP),
                    help="interrupt controllers: kite --irqchip, QEMU's matching kernel-irqchip= (default kernel)")
    ap.add_argument("--hang-timeout", type=int, default=0, metavar="S",
                    help="give kite --hang-timeout S: a guest stuck that long gets kite's hang report (default off)")
    ap.add_argument("--vmms", default=",".join(VMMS), help="comma-separated, of kite,microvm,pc (default all three)")
    ap.add_argument("--profile", action="store_true",
                    help="no IPI test: the guest prints its kernel log, and the report says where each "
                         "VMM's guest spent its boot by the guest's own clock")
    ap.add_argument("--render-modes", nargs="+", metavar="DIR",
                    help="run nothing: one table across --irqchip modes from earlier runs (a directory per mode)")
    ap.add_argument("--render", nargs="+", metavar="DIR",
                    help="run nothing: print one report from earlier runs' results.json files")
    args = ap.parse_args()
    if args.render:
        return render(args.render)
    if args.render_modes:
        return render_modes(args.render_modes)
    try:
        cpus_list = sorted({int(c) for c in args.cpus.split(",") if c.strip()})
    except ValueError:
        ap.error(f"--cpus {args.cpus!r}: not a list of numbers")
    if not cpus_list or min(cpus_list) < 1 or max(cpus_list) > 254:
        ap.error("--cpus: counts from 1 to 254")
    vmms = [v for v in args.vmms.split(",") if v]
    if not vmms or any(v not in VMMS for v in vmms):
        ap.error("--vmms: a comma-separated list of kite, microvm, pc")
    if args.runs < 1 or args.scaling_runs < 1 or not 1 <= args.ipi_rounds <= 10_000_000:
        ap.error("--runs and --scaling-runs at least 1, --ipi-rounds 1 to 10000000")
    kite = os.environ.get("KITE_BIN", os.path.join(ROOT, ".build/release/kite"))
    if not os.access(kite, os.X_OK):
        print(f"kite binary not found: {kite} (scripts/build-release, "
              "or set KITE_BIN)", file=sys.stderr)
        return 2
    if not shutil.which(args.qemu):
        subprocess.run([os.path.join(ROOT, "scripts/install-deps")], check=True)

    # What runs in the testbed: the probe, the guest initramfs plus ipi-pingpong.
    bench_bin = subprocess.run([os.path.join(TESTBED, "bench/build.sh")], check=True,
                               stdout=subprocess.PIPE, text=True).stdout.strip()
    guest_initrd = subprocess.run([os.path.join(TESTBED, "build-guest-initramfs.sh")], check=True,
                                  stdout=subprocess.PIPE, text=True).stdout.strip()
    files = os.path.join(CACHE, "bench", "files")
    os.makedirs(os.path.join(files, "root", "bin"), exist_ok=True)
    shutil.copy2(os.path.join(bench_bin, "ipi-pingpong"), os.path.join(files, "root", "bin", "ipi-pingpong"))
    shutil.copy2(os.path.join(bench_bin, "vmm-probe"), os.path.join(files, "vmm-probe"))
    seg = subprocess.run("cd root && echo bin/ipi-pingpong | cpio -o -H newc --quiet -R 0:0 | gzip -n",
                         shell=True, cwd=files, check=True, stdout=subprocess.PIPE).stdout
    with open(guest_initrd, "rb") as src, open(os.path.join(files, "initramfs-bench.cpio.gz"), "wb") as dst:
        dst.write(src.read() + seg)
    shutil.rmtree(os.path.join(files, "root"))

    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(CACHE, "bench", stamp)
    os.makedirs(logdir, exist_ok=True)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                            text=True).stdout.strip()
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"# kite {commit}, {cpu_model}, {os.cpu_count()} CPUs, {platform.release()}; logs in {logdir}",
          flush=True)

    configs = [(c, args.runs) for c in cpus_list]
    if args.scaling:
        configs += [(c, args.scaling_runs) for c in (8, 32, 64) if c not in cpus_list]
    all_runs, host, t_all, idx, lost = [], {}, time.monotonic(), 0, 0
    # One testbed session per vCPU count: a testbed failure costs one configuration. When
    # L1 gets stuck or its kernel panics, what is left runs in a new session (with its own
    # warm-up), twice at most.
    for c, runs in configs:
        # A warm-up round first (run 0, not counted): in the testbed the first boot of a
        # session is up to 1.9 s faster than the rest (fresh L1 memory), whichever VMM it is.
        todo = [(v, c, r) for r in range(1, runs + 1) for v in vmms]   # A B C A B C ...
        for attempt in range(3):
            idx += 1
            done, h, _ = run_session(idx, [(v, c, 0) for v in vmms] + todo, args, files, logdir)
            all_runs += [r for r in done if r["run"] > 0]
            host = host or h
            finished = {(r["vmm"], r["cpus"], r["run"]) for r in done}
            todo = [p for p in todo if p not in finished]
            # A session that went silent was killed; one that ended early (L1's own kernel
            # panicked, as it does now and then with big guests) left runs undone too.
            if not todo:
                break
        lost += len(todo)
    counts = sorted({c for c, _ in configs})
    summary = summarize(all_runs, counts)
    where = (f"testbed L1 ({host.get('qemu', 'QEMU ?').replace('_', ' ')} TCG, -smp {args.l1_smp}, "
             f"kernel {host.get('kernel', '?')}) on" if os.path.exists("/sys/module/kvm_pvm")
             or os.environ.get("KITE_FORCE_L1") else "directly on")
    header = (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, kite {commit}, {where} "
              f"{cpu_model} ({os.cpu_count()} CPUs); interrupt controllers: kite --irqchip {args.irqchip}, "
              f"QEMU kernel-irqchip={QEMU_IRQCHIP[args.irqchip]}; guest {args.memory} MiB, {args.ipi_rounds} IPI rounds, "
              f"medians of {args.runs} runs per VMM" + (f" ({args.scaling_runs} at 8/32/64 vCPUs)" if args.scaling else "")
              + f"; {time.monotonic() - t_all:.0f} s in all"
              + (f"; {lost} planned runs never completed (testbed stuck)" if lost else "") + ".\n\n"
              f"Command: `{' '.join(['python3', 'testbed/bench.py'] + [shlex.quote(a) for a in sys.argv[1:]])}`")
    md = (profile_markdown(all_runs, counts, header) if args.profile else markdown(summary, counts, header)) \
        + guest_features(all_runs)
    with open(os.path.join(logdir, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(logdir, "results.json"), "w") as f:
        json.dump({"runs": all_runs, "host": host, "args": vars(args), "commit": commit}, f, indent=1)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
