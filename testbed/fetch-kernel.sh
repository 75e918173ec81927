#!/bin/bash
# Download Debian's cloud kernel (linux-image-6.1.0-NN-cloud-amd64) and extract it into
# .cache/kernel/. Writes .cache/kernel/env with KERNEL=, VMLINUX= (the ELF, for PVH), MODDIR=, KVER=.
# The real System.map (Debian's image package ships a one-line placeholder; the real one is
# in the -dbg package, 283 MB, of which only System.map is extracted) replaces the
# placeholder next to the kernel, where kite finds it for hang reports. Idempotent.
set -euo pipefail
. "$(dirname "$0")/common.sh"

KDIR="$CACHE/kernel"
ENVF="$KDIR/env"
mkdir -p "$KDIR"
take_lock kernel
if [ -f "$ENVF" ] && [ -z "${KITE_REFETCH:-}" ]; then
    . "$ENVF"
    if [ -f "$KERNEL" ] && [ -f "$MODDIR/modules.dep" ] && [ -f "${VMLINUX:-}" ] \
        && [ "$(wc -l <"$(dirname "$KERNEL")/System.map-$KVER")" -gt 1000 ]; then
        [ -n "${VERBOSE:-}" ] && log "cached: $KERNEL"
        cat "$ENVF"
        exit 0
    fi
fi

ensure_cmds apt-get:apt dpkg-deb:dpkg
mkdir -p "$KDIR/debs"
cd "$KDIR/debs"

# Find the versioned image package the meta-package depends on.
meta_deps() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: *\(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1; }
PKG="$(meta_deps || true)"
if [ -z "$PKG" ]; then
    log "apt-get update (linux-image-cloud-amd64 not known yet)"
    apt-get update -q >&2
    PKG="$(meta_deps)"
fi
[ -n "$PKG" ] || die "could not resolve linux-image-cloud-amd64 dependency"
log "kernel package: $PKG"

ls linux-image-cloud-amd64_*.deb >/dev/null 2>&1 || apt-get download -q linux-image-cloud-amd64 >&2
if ! ls "${PKG}"_*.deb >/dev/null 2>&1; then
    apt-get download -q "$PKG" >&2 || { apt-get update -q >&2; apt-get download -q "$PKG" >&2; }
fi
DEB="$(ls -1 "${PKG}"_*.deb | sort -V | tail -n1)"

KVER="${PKG#linux-image-}"
ROOT="$KDIR/root"
if [ ! -f "$ROOT/boot/vmlinuz-$KVER" ]; then
    rm -rf "$ROOT.tmp"; mkdir -p "$ROOT.tmp"
    log "extracting $DEB"
    dpkg-deb -x "$DEB" "$ROOT.tmp"
    rm -rf "$ROOT"; mv "$ROOT.tmp" "$ROOT"
fi
KERNEL="$ROOT/boot/vmlinuz-$KVER"
MODDIR="$ROOT/lib/modules/$KVER"
[ -f "$KERNEL" ] || die "no vmlinuz in $DEB"
if [ ! -f "$MODDIR/modules.dep" ]; then
    # The .deb does not ship modules.dep (postinst runs depmod); generate it.
    ensure_cmds depmod:kmod
    depmod -b "$ROOT" "$KVER"
fi
# The uncompressed ELF vmlinux, for PVH boots: Debian's bzImage carries it LZ4-compressed
# (legacy LZ4 frame, magic 02 21 4c 18).
VMLINUX="$KDIR/vmlinux-$KVER"
if [ ! -f "$VMLINUX" ]; then
    ensure_cmds lz4:lz4
    off="$(python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); print(d.find(bytes([2,0x21,0x4c,0x18])))' "$KERNEL")"
    [ "$off" -gt 0 ] || die "no LZ4 payload in $KERNEL"
    # lz4 stops with an error at the bzImage's trailing bytes; the ELF check below decides.
    tail -c +"$((off + 1))" "$KERNEL" | lz4 -dc >"$VMLINUX.tmp" 2>/dev/null || true
    [ "$(head -c 4 "$VMLINUX.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || die "could not extract vmlinux from $KERNEL"
    mv "$VMLINUX.tmp" "$VMLINUX"
fi
SYSMAP="$ROOT/boot/System.map-$KVER"
if [ "$(wc -l <"$SYSMAP" 2>/dev/null || echo 0)" -le 1000 ]; then
    DBG="${PKG}-dbg"
    if ! ls "${DBG}"_*.deb >/dev/null 2>&1; then
        log "downloading $DBG for its System.map"
        apt-get download -q "$DBG" >&2 || { apt-get update -q >&2; apt-get download -q "$DBG" >&2; }
    fi
    DBGDEB="$(ls -1 "${DBG}"_*.deb | sort -V | tail -n1)"
    dpkg-deb --fsys-tarfile "$DBGDEB" 2>/dev/null \
        | tar -xO --occurrence=1 "./usr/lib/debug/boot/System.map-$KVER" >"$SYSMAP.tmp" || true
    [ "$(wc -l <"$SYSMAP.tmp")" -gt 1000 ] || die "no System.map-$KVER in $DBGDEB"
    mv "$SYSMAP.tmp" "$SYSMAP"
    rm -f "$DBGDEB"   # 283 MB; only System.map was needed
fi
cat >"$ENVF.tmp" <<EOV
KERNEL=$KERNEL
VMLINUX=$VMLINUX
MODDIR=$MODDIR
KVER=$KVER
EOV
mv "$ENVF.tmp" "$ENVF"
cat "$ENVF"
