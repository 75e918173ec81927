#!/usr/bin/env python3
"""kvm-unit-tests under kite and under QEMU/KVM, side by side (issue 11's conformance table).

kvm-unit-tests is not part of Kite: fetch and build it yourself, outside this repository
(its README: ./configure && make), and point --kut at the build tree. This script only
runs the .flat files it finds there.

    python3 testbed/conformance.py --kut ~/kvm-unit-tests            # in the testbed (L1)
    python3 testbed/conformance.py --kut ~/kvm-unit-tests --here     # on this host's /dev/kvm
    python3 testbed/conformance.py --kut ... --tests apic,smptest --markdown table.md
    python3 testbed/conformance.py --kut ... --irqchip split,userspace   # Kite's own irqchips

With --irqchip, each test runs once per mode: kite with `--irqchip MODE`, QEMU with the
matching `-machine kernel-irqchip=` (kernel: on, split: split, userspace: off).

Each test runs twice in the same place (the same L1 session, or this host): under kite
(`kite run --kernel X.flat --cpus N --memory 128M --test-devices [--cmdline ARGS]`) and
under QEMU with the flags kvm-unit-tests' own x86/run gives it (pc-testdev,
isa-debug-exit, pci-testdev, kvm-pit lost_tick_policy=discard, the unittests.cfg entry's
-smp, -cpu and -append; QEMU's default 128 MiB). Neither gets kvm-unit-tests' environment
file, so both read the CPU count from fw_cfg. The exit status is kvm-unit-tests'
((code << 1) | 1 through isa-debug-exit): 1 = PASS, 3 = FAIL, 77 = SKIP, 127 = abort.

Prints one line per test and VMM with the counts of PASS/FAIL/SKIP checks, then every check
whose result differs between the two, and (with --markdown) writes the table.
"""
import argparse
import datetime
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("KITE_CACHE", os.path.join(ROOT, ".cache"))
TESTBED = os.path.join(ROOT, "testbed")
DEADLINE = 90          # s per run, as kvm-unit-tests' default timeout
# Tests that loop over many exits (apic: 100000 NMI pairs in multiple_nmi; vmexit: timed
# loops) need far longer in the testbed, where every L2 exit goes through emulated SVM.
TESTBED_DEADLINES = {"apic": 2400, "vmexit_ipi": 300, "vmexit_ipi_halt": 300, "vmexit_tscdeadline": 300,
                     "kvmclock_test": 300, "sieve": 300}
L1_OVERHEAD = 300      # s for L1 to boot and load kvm-amd

# name: (flat file, vCPUs, kite --cmdline / QEMU -append, QEMU's extra flags from unittests.cfg)
TESTS = {
    "apic":             ("apic", 2, "", "-cpu qemu64,+x2apic,+tsc-deadline"),
    "smptest":          ("smptest", 2, "", ""),
    "smptest3":         ("smptest", 3, "", ""),
    "ioapic":           ("ioapic", 4, "", "-cpu qemu64,+x2apic"),
    "eventinj":         ("eventinj", 1, "", ""),
    "vmexit_ipi":       ("vmexit", 2, "ipi", "-machine pit=off"),
    "vmexit_ipi_halt":  ("vmexit", 2, "ipi_halt", ""),
    "vmexit_tscdeadline": ("vmexit", 1, "tscdeadline", "-cpu qemu64,+x2apic,+tsc-deadline"),
    "tsc_adjust":       ("tsc_adjust", 1, "", "-cpu max"),
    "kvmclock_test":    ("kvmclock_test", 2, "10000000 $(date +%s)", ""),
    "tsc":              ("tsc", 1, "", "-cpu qemu64,+rdtscp"),
    "msr":              ("msr", 1, "", "-cpu max"),
    "hypercall":        ("hypercall", 1, "", ""),
    "sieve":            ("sieve", 1, "", ""),
}
DEFAULT_TESTS = list(TESTS)
QEMU_BASE = ("qemu-system-x86_64 --no-reboot -nodefaults -global kvm-pit.lost_tick_policy=discard "
             "-device pc-testdev -device isa-debug-exit,iobase=0xf4,iosize=0x4 -display none -serial stdio "
             "-device pci-testdev -machine accel=kvm")
MAX_LISTED = 12        # differing checks printed per test (all of them go to differences.txt)
VERDICTS = {1: "PASS", 3: "FAIL", 77: "SKIP", 127: "ABORT"}
CHECK = re.compile(r"^(PASS|FAIL|SKIP|XFAIL|XPASS|KFAIL): (.*)$")


# kite's --irqchip mode: QEMU's matching -machine kernel-irqchip= setting
QEMU_IRQCHIP = {"kernel": "on", "split": "split", "userspace": "off"}


def commands(name, kut, kite, mode="kernel"):
    flat, cpus, args, qemu_extra = TESTS[name]
    kernel = f"{kut}/{flat}.flat"
    kite_cmd = f"{kite} run --kernel {kernel} --cpus {cpus} --memory 128M --test-devices"
    qemu_cmd = f"{QEMU_BASE} -kernel {kernel} -smp {cpus} {qemu_extra}".rstrip()
    if mode != "kernel":
        kite_cmd += f" --irqchip {mode}"
        qemu_cmd += f" -machine kernel-irqchip={QEMU_IRQCHIP[mode]}"
    if args:
        kite_cmd += f' --cmdline "{args}"'
        qemu_cmd += f' -append "{args}"'
    return {"kite": kite_cmd, "qemu": qemu_cmd}


class Run:
    def __init__(self, test, vmm, command, mode="kernel"):
        self.test, self.vmm, self.command, self.mode = test, vmm, command, mode
        self.lines, self.status, self.timed_out, self.seconds = [], None, False, None

    @property
    def name(self):
        """The job's name in the testbed and the log file's: test[.mode].vmm."""
        return f"{self.test}.{self.vmm}" if self.mode == "kernel" else f"{self.test}.{self.mode}.{self.vmm}"

    @property
    def label(self):
        return self.test if self.mode == "kernel" else f"{self.test} ({self.mode})"

    @property
    def checks(self):
        out, seen = [], {}
        for ln in self.lines:
            m = CHECK.match(ln.strip())
            if m:
                key = m.group(2).strip()
                seen[key] = seen.get(key, 0) + 1
                out.append((key if seen[key] == 1 else f"{key} (#{seen[key]})", m.group(1)))
        return out

    @property
    def summary(self):
        return next((ln.strip() for ln in self.lines if ln.strip().startswith("SUMMARY:")), None)

    @property
    def verdict(self):
        if self.timed_out:
            return "TIMEOUT"
        if self.status is None:
            return "NO RESULT"
        # A guest reset (triple fault): kite says so and exits 4; QEMU with --no-reboot exits 0.
        if self.vmm == "kite" and self.status == 4 and any("triple fault" in ln for ln in self.lines):
            return "RESET"
        if self.vmm == "qemu" and self.status == 0 and self.summary is None:
            return "RESET"
        return VERDICTS.get(self.status, f"EXIT {self.status}")

    def counts(self):
        c = {}
        for _, r in self.checks:
            c[r] = c.get(r, 0) + 1
        return c

    def cell(self):
        c = self.counts()
        parts = [f"{c.get(k, 0)} {k.lower()}" for k in ("PASS", "FAIL", "SKIP") if c.get(k, 0)]
        parts += [f"{c[k]} {k.lower()}" for k in ("XFAIL", "XPASS", "KFAIL") if c.get(k, 0)]
        return f"{self.verdict}" + (f" ({', '.join(parts)})" if parts else "")


def write_job(path, runs):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n# generated by testbed/conformance.py\n")
        for r in runs:
            f.write(f"kite_job {r.name} {TESTBED_DEADLINES.get(r.test, DEADLINE)} sh -c {shlex.quote(r.command)}\n")


def parse_session(log_lines, runs):
    by_name = {r.name: r for r in runs}
    for ln in log_lines:
        ln = ln.rstrip("\r\n").replace("\r", "")
        m = re.match(r"^([\w.]+)\| ?(.*)$", ln)
        if m and m.group(1) in by_name:
            by_name[m.group(1)].lines.append(m.group(2))
            continue
        m = re.search(r"JOB-EXIT name=([\w.]+) status=(\d+)", ln)
        if m and m.group(1) in by_name:
            by_name[m.group(1)].status = int(m.group(2))
        m = re.search(r"JOB-TIMEOUT name=([\w.]+)", ln)
        if m and m.group(1) in by_name:
            by_name[m.group(1)].timed_out = True


def run_here(runs, logdir):
    for r in runs:
        start = time.monotonic()
        cmd = r.command.replace("$(date +%s)", str(int(time.time())))
        # Its own session, so a timeout kills the VMM too and not just the shell around it.
        p = subprocess.Popen(cmd, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=DEADLINE)
            r.status = p.returncode
        except subprocess.TimeoutExpired:
            r.timed_out = True
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
        r.seconds = time.monotonic() - start
        r.lines = out.decode("utf-8", "replace").replace("\r", "").splitlines()
        with open(os.path.join(logdir, f"{r.name}.log"), "w") as f:
            f.write(r.command + "\n" + "\n".join(r.lines) + "\n")
        print(f"  {r.label} {r.vmm}: {r.cell()} ({r.seconds:.1f} s)", flush=True)


def run_testbed(runs, kut, logdir, l1_smp):
    stage = os.path.join(CACHE, "kut-stage")
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    for flat in sorted({TESTS[r.test][0] for r in runs}):
        shutil.copy(os.path.join(kut, "x86", f"{flat}.flat"), stage)
    job = os.path.join(logdir, "job.sh")
    write_job(job, runs)
    slog = os.path.join(logdir, "session.console.log")
    env = dict(os.environ, L1_SMP=str(l1_smp), JOB_TIMEOUT=str(L1_OVERHEAD + sum(TESTBED_DEADLINES.get(r.test, DEADLINE) + 15 for r in runs)),
               L1_EXTRA_BINS=shutil.which("qemu-system-x86_64") or "",
               L1_EXTRA_DIRS=f"/usr/share/qemu /usr/share/seabios {stage}=/kut")
    print(f"# one L1 session (-smp {l1_smp}), console {slog}", flush=True)
    subprocess.run([os.path.join(TESTBED, "run-job.sh"), job, slog], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
    with open(slog, errors="replace") as f:
        lines = f.readlines()
    parse_session(lines, runs)
    for r in runs:
        print(f"  {r.label} {r.vmm}: {r.cell()}", flush=True)
    return lines


def differences(kite, qemu):
    a, b = dict(kite.checks), dict(qemu.checks)
    out = []
    for key in list(a) + [k for k in b if k not in a]:
        if a.get(key) != b.get(key):
            out.append((key, a.get(key, "-"), b.get(key, "-")))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kut", required=True, help="a kvm-unit-tests build tree (x86/*.flat)")
    ap.add_argument("--tests", default=",".join(DEFAULT_TESTS), help="comma-separated names: " + " ".join(TESTS))
    ap.add_argument("--here", action="store_true", help="run on this host's /dev/kvm instead of the testbed")
    ap.add_argument("--l1-smp", type=int, default=2, help="CPUs of the testbed's L1 (default 2)")
    ap.add_argument("--irqchip", default="kernel",
                    help="comma-separated kite --irqchip modes, each beside QEMU's matching kernel-irqchip= (default kernel)")
    ap.add_argument("--deadline", type=int, metavar="S",
                    help="seconds each run may take, instead of the per-test defaults")
    ap.add_argument("--markdown", help="write the side-by-side table here")
    ap.add_argument("--from-log", help="read the results from an earlier testbed session's console log instead of running")
    args = ap.parse_args()
    if args.deadline:
        global DEADLINE
        DEADLINE = args.deadline
        TESTBED_DEADLINES.clear()
    names = [n for n in args.tests.split(",") if n]
    unknown = [n for n in names if n not in TESTS]
    if unknown:
        sys.exit(f"unknown tests: {' '.join(unknown)}; known: {' '.join(TESTS)}")
    modes = [m for m in args.irqchip.split(",") if m]
    if not modes or any(m not in QEMU_IRQCHIP for m in modes):
        sys.exit(f"--irqchip takes a comma-separated list of: {' '.join(QEMU_IRQCHIP)}")
    kut = os.path.abspath(args.kut)
    for n in names:
        if not os.path.isfile(os.path.join(kut, "x86", TESTS[n][0] + ".flat")):
            sys.exit(f"{kut}/x86/{TESTS[n][0]}.flat not found: build kvm-unit-tests first")
    commit = subprocess.run(["git", "-C", kut, "log", "-1", "--format=%H %cs"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    kite = os.environ.get("KITE_BIN", os.path.join(ROOT, ".build/release/kite"))
    logdir = os.path.join(CACHE, "logs", "conformance-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(logdir)
    where = "this host's /dev/kvm" if args.here else f"the testbed (L1 -smp {args.l1_smp})"
    if args.from_log:
        where = f"the testbed session logged in {args.from_log}"
    print(f"# kvm-unit-tests {commit}; {where}; logs in {logdir}", flush=True)
    runs = []
    for mode in modes:
        for n in names:
            if args.here:
                cmds = commands(n, shlex.quote(os.path.join(kut, "x86")), shlex.quote(kite), mode)
            else:
                cmds = commands(n, "/kut", '"$KITE"', mode)
            for vmm in ("kite", "qemu"):
                runs.append(Run(n, vmm, cmds[vmm], mode))
    cases = [(n, m) for m in modes for n in names]
    if args.from_log:
        with open(args.from_log, errors="replace") as f:
            parse_session(f.readlines(), runs)
        runs = [r for r in runs if r.lines or r.status is not None]
        cases = [(n, m) for n, m in cases
                 if all(any(r.test == n and r.mode == m and r.vmm == v for r in runs) for v in ("kite", "qemu"))]
    elif args.here:
        run_here(runs, logdir)
    else:
        run_testbed(runs, kut, logdir, args.l1_smp)
    if not args.here:
        for r in runs:
            with open(os.path.join(logdir, f"{r.name}.log"), "w") as f:
                f.write(r.command + "\n" + "\n".join(r.lines) + "\n")

    rows, same = [], 0
    print()
    for n, mode in cases:
        k = next(r for r in runs if r.test == n and r.mode == mode and r.vmm == "kite")
        q = next(r for r in runs if r.test == n and r.mode == mode and r.vmm == "qemu")
        diff = differences(k, q)
        agree = k.verdict == q.verdict and not diff
        same += agree
        print(f"{'SAME' if agree else 'DIFFERENT'} {k.label}: kite {k.cell()}; qemu {q.cell()}")
        if not k.checks or not q.checks:
            diff = []   # nothing to compare check by check: one side printed no checks
        for key, a, b in diff[:MAX_LISTED]:
            print(f"    {key}: kite {a}, qemu {b}")
        if len(diff) > MAX_LISTED:
            print(f"    ... {len(diff) - MAX_LISTED} more in {logdir}/differences.txt")
        with open(os.path.join(logdir, "differences.txt"), "a") as f:
            f.writelines(f"{k.label}: {key}: kite {a}, qemu {b}\n" for key, a, b in diff)
        rows.append((k.label, TESTS[n][1], k, q, diff))
    print(f"{same} of {len(cases)} tests give the same result under kite and QEMU")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"kvm-unit-tests {commit}, run {datetime.date.today()} in {where}.\n\n")
            f.write("| test | vCPUs | kite | QEMU | checks that differ |\n|---|---|---|---|---|\n")
            for n, cpus, k, q, diff in rows:
                d = "; ".join(f"{key}: kite {a}, QEMU {b}" for key, a, b in diff[:MAX_LISTED]) or "none"
                if len(diff) > MAX_LISTED:
                    d += f"; {len(diff) - MAX_LISTED} more"
                f.write(f"| {n} | {cpus} | {k.cell()} | {q.cell()} | {d} |\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
