#!/bin/bash
# Build the L2 guest initramfs: busybox-static + virtio modules (decompressed) + /init.
# Output: .cache/guest/initramfs.cpio.gz. Idempotent (rebuilds only if inputs changed).
set -euo pipefail
. "$(dirname "$0")/common.sh"

ensure_cmds /bin/busybox:busybox-static cpio:cpio gzip:gzip python3:python3 socat:socat
"$KITE_ROOT/testbed/fetch-kernel.sh" >/dev/null
. "$CACHE/kernel/env"
file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || \
  { ldd /bin/busybox >/dev/null 2>&1 && ensure_cmds /bin/busybox.static:busybox-static; }

OUT="$CACHE/guest/initramfs.cpio.gz"
INIT="$KITE_ROOT/testbed/guest/init"
MODS="virtio virtio_ring virtio_mmio virtio_pci virtio_pci_modern_dev virtio_pci_legacy_dev
      virtio_blk virtio_net net_failover failover virtio_console virtio-rng rng-core
      vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport"
mkdir -p "$CACHE/guest"
take_lock guest
STAMP="$CACHE/guest/stamp"
want="$(cat "$INIT" "$0" "$KITE_ROOT/testbed/common.sh" /bin/busybox "$(command -v socat)" | sha256sum | cut -c1-16) $KVER"
if [ -f "$OUT" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    [ -n "${VERBOSE:-}" ] && log "cached: $OUT"; echo "$OUT"; exit 0
fi

W="$CACHE/guest/root"
rm -rf "$W"; mkdir -p "$W"/{bin,sbin,dev,proc,sys,tmp,lib/modules}
stage_busybox_and_modules "$W" $MODS
log "modules: $(tr '\n' ' ' <"$W/lib/modules/load-order")"
install -m 0755 "$INIT" "$W/init"
copy_with_libs "$(command -v socat)" "$W" /usr/bin/socat   # vsock tests: AF_VSOCK peer
mkdir -p "$CACHE/guest"
( cd "$W" && { find . -print; } | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 ) >"$OUT.cpio.tmp"
add_console_node "$OUT.cpio.tmp"
gzip -9 -n -c "$OUT.cpio.tmp" >"$OUT.tmp"
rm -f "$OUT.cpio.tmp"
mv "$OUT.tmp" "$OUT"
echo "$want" >"$STAMP"
log "built $OUT ($(du -h "$OUT" | cut -f1))"
echo "$OUT"
