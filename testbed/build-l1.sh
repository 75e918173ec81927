#!/bin/bash
# Build the L1 testbed initramfs for one job script:
#   .cache/l1/initramfs.cpio.gz = base.cpio.gz (busybox, irqbypass/kvm/kvm-amd, kite + its
#   libraries, guest kernel + initramfs, /init; cached) + a small cpio with /job.sh.
# Env: KITE_BIN (default .build/release/kite), L1_INITRD (output path),
#      L1_EXTRA_BINS (host binaries to add with their libraries, e.g. a stand-in VMM),
#      L1_EXTRA_DIRS (host directories copied to the same path, e.g. /usr/share/qemu, or
#      to another with HOSTDIR=L1DIR; L1 mounts a fresh /tmp, so nothing can live there).
set -euo pipefail
. "$(dirname "$0")/common.sh"

JOB="${1:?usage: build-l1.sh JOBFILE}"
[ -f "$JOB" ] || die "no job file $JOB"
KITE_BIN="${KITE_BIN:-$KITE_ROOT/.build/release/kite}"
[ -x "$KITE_BIN" ] || die "kite binary not found: $KITE_BIN (build it, or set KITE_BIN)"
OUT="${L1_INITRD:-$CACHE/l1/initramfs.cpio.gz}"
L1="$CACHE/l1"; mkdir -p "$L1" "$(dirname "$OUT")"

ensure_cmds /bin/busybox:busybox-static cpio:cpio gzip:gzip socat:socat mkfs.ext4:e2fsprogs
"$KITE_ROOT/testbed/fetch-kernel.sh" >/dev/null
. "$CACHE/kernel/env"
GUEST_INITRD_HOST="$("$KITE_ROOT/testbed/build-guest-initramfs.sh")"

# Copy an executable plus everything ldd lists (and the dynamic loader) under ROOT.
stamp_inputs() {
    cat "$KITE_BIN" "$GUEST_INITRD_HOST" "$KERNEL" "$VMLINUX" "$(dirname "$KERNEL")/System.map-$KVER" "$0" "$KITE_ROOT/testbed/common.sh" \
        "$KITE_ROOT/testbed/l1/init" "$KITE_ROOT/testbed/lib.sh" /bin/busybox "$(command -v socat)" "$(command -v mkfs.ext4)" "$(command -v debugfs)" "$(command -v dmsetup)"
    echo "extra: ${L1_EXTRA_BINS:-} | ${L1_EXTRA_DIRS:-}"
    for b in ${L1_EXTRA_BINS:-}; do cat "$b"; done
    for d in ${L1_EXTRA_DIRS:-}; do find "${d%%=*}" -type f -print0 | LC_ALL=C sort -z | xargs -0 -r cat; done
}
# The base image is cached by a hash of its inputs (several can coexist, e.g. for two
# different kite binaries); builds are serialized, files replaced atomically.
want="$(stamp_inputs | sha256sum | cut -c1-16)"
BASE="$L1/base-$want.cpio.gz"
take_lock l1
if [ ! -f "$BASE" ]; then
    log "building L1 base image"
    W="$L1/root"
    rm -rf "$W"; mkdir -p "$W"/{bin,sbin,usr/bin,dev,proc,sys,tmp,run,lib/modules,guest,testbed}
    stage_busybox_and_modules "$W" irqbypass kvm kvm-amd tun dm-mod
    copy_with_libs "$KITE_BIN" "$W" /usr/bin/kite
    copy_with_libs "$(command -v socat)" "$W" /usr/bin/socat   # vsock tests: Unix-socket peer
    # disk tests: make an ext4 image and read files back out of it on the host side
    copy_with_libs "$(command -v mkfs.ext4)" "$W" /usr/bin/mkfs.ext4
    copy_with_libs "$(command -v debugfs)" "$W" /usr/bin/debugfs
    # disk fault tests: a device-mapper "error" target fails every I/O (EIO)
    copy_with_libs "$(command -v dmsetup)" "$W" /usr/sbin/dmsetup
    for b in ${L1_EXTRA_BINS:-}; do copy_with_libs "$b" "$W"; done
    for d in ${L1_EXTRA_DIRS:-}; do
        src="${d%%=*}"; dst="${d#*=}"
        mkdir -p "$W$dst"; cp -a "$src/." "$W$dst/"
    done
    cp "$KERNEL" "$W/guest/vmlinuz"
    cp "$VMLINUX" "$W/guest/vmlinux"
    # Symbols for hang reports; kite finds System.map-<release> next to the kernel itself.
    cp "$(dirname "$KERNEL")/System.map-$KVER" "$W/guest/System.map-$KVER"
    cp "$GUEST_INITRD_HOST" "$W/guest/initramfs.cpio.gz"
    install -m 0755 "$KITE_ROOT/testbed/l1/init" "$W/init"
    install -m 0644 "$KITE_ROOT/testbed/lib.sh" "$W/testbed/lib.sh"
    ( cd "$W" && find . -print | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 ) >"$L1/base.cpio"
    add_console_node "$L1/base.cpio"
    gzip -1 -n -c "$L1/base.cpio" >"$BASE.tmp" && mv "$BASE.tmp" "$BASE"
    rm -f "$L1/base.cpio"
    rm -rf "$W"
    # keep the 4 newest base images
    ls -1t "$L1"/base-*.cpio.gz 2>/dev/null | tail -n +5 | xargs -r rm -f
    log "L1 base: $BASE ($(du -h "$BASE" | cut -f1))"
fi
touch "$BASE"
exec 9>&-  # release the lock

# Job segment: a second cpio (the kernel unpacks concatenated archives in order).
J="$(mktemp -d "$L1/job.XXXXXX")"
install -m 0755 "$JOB" "$J/job.sh"
( cd "$J" && echo job.sh | cpio -o -H newc --quiet -R 0:0 ) | gzip -1 -n >"$J/job.cpio.gz"
cat "$BASE" "$J/job.cpio.gz" >"$OUT.tmp.$$"
mv "$OUT.tmp.$$" "$OUT"
rm -rf "$J"
echo "$OUT"
