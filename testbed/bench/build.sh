#!/bin/bash
# Build the static benchmark helpers (vmm-probe, ipi-pingpong) that run inside the
# busybox guest (no libc there, hence -static). Output: $CACHE/bench/<name>; prints that
# directory on stdout (logs go to stderr). Rebuilds a binary only when its source is newer.
set -euo pipefail
. "$(dirname "$0")/../common.sh"

ensure_cmds gcc:gcc strip:binutils
LIBC_A=/usr/lib/x86_64-linux-gnu/libc.a
[ -e "$LIBC_A" ] || ensure_cmds "$LIBC_A:libc6-dev"

SRC="$KITE_ROOT/testbed/bench"
OUT="$CACHE/bench"
mkdir -p "$OUT"
take_lock bench
for name in vmm-probe ipi-pingpong; do
    src="$SRC/$name.c" bin="$OUT/$name"
    if [ -x "$bin" ] && [ ! "$src" -nt "$bin" ]; then
        [ -n "${VERBOSE:-}" ] && log "cached: $bin"
        continue
    fi
    log "building $name"
    gcc -O2 -static -pthread -Wall -Wextra -Werror -o "$bin.tmp" "$src"
    strip "$bin.tmp"
    mv -f "$bin.tmp" "$bin"
done
echo "$OUT"
