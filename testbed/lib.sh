# Helpers sourced by every job script before it runs (busybox sh in L1, bash on a host).
# Environment a job script gets:
#   KITE          path of the kite binary
#   GUEST_KERNEL  path of the guest (L2) vmlinuz (bzImage)
#   GUEST_VMLINUX the same kernel as an uncompressed ELF vmlinux (booted through PVH)
#   GUEST_SYSMAP  the guest kernel's System.map (also found by kite on its own, next to the kernel)
#   GUEST_INITRD  path of the guest initramfs (busybox + virtio modules, see guest/init)
#   TESTBED       "l1" (inside the nested QEMU/TCG testbed) or "host" (hardware virt)
#   TMPDIR        a writable scratch directory
#
# kite_job NAME DEADLINE_S CMD [ARGS...]
#   Prints "JOB-BEGIN name=NAME deadline=DEADLINE_S", runs CMD (in its own session, stdin
#   /dev/null) with stdout+stderr merged,
#   each output line prefixed with "NAME| ", kills it (TERM, then KILL 5 s later) after
#   DEADLINE_S seconds printing "JOB-TIMEOUT name=NAME", and finally prints
#   "JOB-EXIT name=NAME status=N". Returns N. If the job left kite's hang report in
#   $TMPDIR/NAME.watch.json (boot_tests.py arms the watchdog for every run), it is printed
#   as one line, "NAME| KITE-WATCH-REPORT: <json>", before JOB-EXIT. Where L1's init turned KVM tracing on
#   (KVM_TRACE: the tracefs directory), the job's events come before JOB-EXIT as
#   "NAME| L1 kvm trace: ..." lines, and the trace is cleared for the next job.
# shellcheck shell=sh

kite_job() {
    _kj_name=$1; _kj_dl=$2; shift 2
    _kj_dir=${TMPDIR:-/tmp}
    _kj_st="$_kj_dir/kite_job.$_kj_name.status"
    _kj_to="$_kj_dir/kite_job.$_kj_name.timeout"
    rm -f "$_kj_st" "$_kj_to"
    echo "JOB-BEGIN name=$_kj_name deadline=$_kj_dl"
    {
        # own session/process group, so a timeout kills everything it started
        setsid "$@" </dev/null 2>&1 &
        _kj_pid=$!
        (
            sleep "$_kj_dl"
            : >"$_kj_to"
            kill -TERM -"$_kj_pid" 2>/dev/null || kill -TERM "$_kj_pid" 2>/dev/null
            sleep 5
            kill -KILL -"$_kj_pid" 2>/dev/null || kill -KILL "$_kj_pid" 2>/dev/null
        ) >/dev/null 2>&1 </dev/null &
        _kj_wd=$!
        wait "$_kj_pid"
        echo $? >"$_kj_st"
        kill "$_kj_wd" 2>/dev/null
    } | while IFS= read -r _kj_line || [ -n "$_kj_line" ]; do
        printf '%s| %s\n' "$_kj_name" "$_kj_line"
    done
    _kj_rc=$(cat "$_kj_st" 2>/dev/null || echo 255)
    [ -e "$_kj_to" ] && echo "JOB-TIMEOUT name=$_kj_name after=${_kj_dl}s"
    # The hang watchdog's snapshot, where the job armed it (boot_tests.py's watch_args).
    [ -s "$_kj_dir/$_kj_name.watch.json" ] &&
        echo "$_kj_name| KITE-WATCH-REPORT: $(tr -d '\n' <"$_kj_dir/$_kj_name.watch.json")"
    if [ -n "${KVM_TRACE:-}" ]; then
        grep -v '^#' "$KVM_TRACE/trace" | sed "s/^/$_kj_name| L1 kvm trace: /"
        : >"$KVM_TRACE/trace"
    fi
    echo "JOB-EXIT name=$_kj_name status=$_kj_rc"
    return "$_kj_rc"
}

# kite_boot NAME DEADLINE_S CPUS MEMORY CMDLINE [EXTRA KITE ARGS...]
#   kite_job around "$KITE run $KITE_RUN_ARGS --kernel $GUEST_KERNEL --initrd $GUEST_INITRD ...";
#   KITE_BOOT_KERNEL, when set, replaces $GUEST_KERNEL (e.g. "$GUEST_VMLINUX" for PVH).
kite_boot() {
    _kb_name=$1; _kb_dl=$2; _kb_cpus=$3; _kb_mem=$4; _kb_cmd=$5; shift 5
    kite_job "$_kb_name" "$_kb_dl" "$KITE" run ${KITE_RUN_ARGS:-} --kernel "${KITE_BOOT_KERNEL:-$GUEST_KERNEL}" --initrd "$GUEST_INITRD" \
        --cmdline "$_kb_cmd" --cpus "$_kb_cpus" --memory "$_kb_mem" "$@"
}
