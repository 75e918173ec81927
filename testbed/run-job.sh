#!/bin/bash
# Run a job script where kite can boot Linux guests:
#  - directly on this host if it has hardware virtualization (vmx/svm, not kvm_pvm);
#  - otherwise inside L1 = QEMU TCG with emulated SVM running Debian's cloud kernel + kvm-amd.
# The job's output (and, in L1 mode, L1's whole console) goes to stdout and to LOG if given.
# Usage: run-job.sh JOBFILE [LOG]
# Env: KITE_BIN (kite binary, default .build/release/kite), JOB_TIMEOUT (s, default 1800),
#      L1_SMP (default 2), L1_MEM (default 4096m), L1_APPEND (extra L1 kernel args),
#      KITE_FORCE_L1=1 (use L1 even with hardware virtualization), L1_MONITOR (a Unix socket
#      path for QEMU's human monitor of L1: `info registers -a` shows where L1's CPUs are).
# Markers: "L1: kvm ready" / "HOST: kvm ready" before the job, "L1: job done status=N" /
#          "HOST: job done status=N" after it; "L1: FAIL ..." when the testbed is broken.
set -euo pipefail
. "$(dirname "$0")/common.sh"

JOB="$(readlink -f "${1:?usage: run-job.sh JOBFILE [LOG]}")"
LOG="${2:-}"
[ -f "$JOB" ] || die "no job file $JOB"
JOB_TIMEOUT="${JOB_TIMEOUT:-1800}"
export KITE_BIN="${KITE_BIN:-$KITE_ROOT/.build/release/kite}"

"$KITE_ROOT/testbed/fetch-kernel.sh" >/dev/null
. "$CACHE/kernel/env"
GUEST_INITRD_HOST="$("$KITE_ROOT/testbed/build-guest-initramfs.sh")"

run_host() {
    export KITE="$KITE_BIN" GUEST_KERNEL="$KERNEL" GUEST_VMLINUX="$VMLINUX" GUEST_INITRD="$GUEST_INITRD_HOST" GUEST_SYSMAP="$(dirname "$KERNEL")/System.map-$KVER" TESTBED=host
    export TMPDIR; TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/kite-job.XXXXXX")"
    echo "HOST: kvm ready ($(uname -r))"
    local rc=0
    timeout --foreground -k 10 "$JOB_TIMEOUT" \
        bash -c '. "$1"; . "$2"' job "$KITE_ROOT/testbed/lib.sh" "$JOB" || rc=$?
    [ "$rc" -eq 124 ] && echo "HOST: FAIL job timed out after ${JOB_TIMEOUT}s"
    echo "HOST: job done status=$rc"
    rm -rf "$TMPDIR"
    return 0
}

run_l1() {
    ensure_cmds qemu-system-x86_64:qemu-system-x86
    local rc=0
    # A private copy of the L1 image per run, so concurrent runs don't clash.
    mkdir -p "$CACHE/l1"
    find "$CACHE/l1" -maxdepth 1 -name 'run.*.cpio.gz' -mmin +720 -delete 2>/dev/null || true
    RUN_INITRD="$(mktemp "$CACHE/l1/run.XXXXXX.cpio.gz")"
    trap 'rm -f "$RUN_INITRD"' EXIT
    L1_INITRD="$RUN_INITRD" "$KITE_ROOT/testbed/build-l1.sh" "$JOB" >/dev/null
    local monitor=()
    [ -n "${L1_MONITOR:-}" ] && monitor=(-monitor "unix:$L1_MONITOR,server=on,wait=off")
    timeout --foreground -k 10 "$JOB_TIMEOUT" \
        qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp "${L1_SMP:-2}" -m "${L1_MEM:-4096m}" \
        -display none -nodefaults -no-reboot -serial stdio "${monitor[@]}" \
        -kernel "$KERNEL" -initrd "$RUN_INITRD" \
        -append "console=ttyS0 quiet panic=-1 ${L1_APPEND:-}" || rc=$?
    [ "$rc" -eq 124 ] && echo "L1: FAIL testbed timed out after ${JOB_TIMEOUT}s"
    return 0
}

if host_has_hw_virt; then mode=run_host; else mode=run_l1; fi
log "mode: ${mode#run_}"
if [ -n "$LOG" ]; then
    mkdir -p "$(dirname "$LOG")"
    $mode 2>&1 | tee "$LOG"
else
    $mode
fi
