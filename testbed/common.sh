# Shared helpers for the Kite testbed scripts (sourced, not executed).
# shellcheck shell=bash
KITE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KITE_CACHE:-$KITE_ROOT/.cache}"
mkdir -p "$CACHE"

log() { echo "[$(basename "$0")] $*" >&2; }
die() { echo "[$(basename "$0")] ERROR: $*" >&2; exit 1; }

# ensure_cmds CMD:PKG ... -> installs missing Debian packages (apt-get update first).
ensure_cmds() {
    local missing=() spec cmd pkg
    for spec in "$@"; do
        cmd="${spec%%:*}"; pkg="${spec#*:}"
        if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -e "$cmd" ]; then
            missing+=("$pkg")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]} and not root"
    log "installing: ${missing[*]}"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# True when this host has usable hardware virtualization (not the kvm_pvm software one).
# KITE_FORCE_L1=1 / KITE_FORCE_HOST=1 override the detection (the latter for testing).
host_has_hw_virt() {
    [ -n "${KITE_FORCE_L1:-}" ] && return 1
    [ -n "${KITE_FORCE_HOST:-}" ] && return 0
    grep -qE '\b(vmx|svm)\b' /proc/cpuinfo || return 1
    [ -e /sys/module/kvm_pvm ] && return 1
    [ -c /dev/kvm ] || return 1
    return 0
}

# Decompress a kernel module file (.ko, .ko.xz, .ko.zst, .ko.gz) into DEST (.ko).
decompress_ko() {
    local src="$1" dest="$2"
    case "$src" in
        *.ko.xz)  xz -dc "$src" >"$dest" ;;
        *.ko.zst) zstd -qdc "$src" >"$dest" ;;
        *.ko.gz)  gzip -dc "$src" >"$dest" ;;
        *.ko)     cp "$src" "$dest" ;;
        *) die "unknown module format: $src" ;;
    esac
}

# Print the module paths (relative to MODDIR, from modules.dep) needed to load the given
# module names, dependencies first, each once. Names may use '-' or '_'.
resolve_modules() {
    local moddir="$1"; shift
    python3 - "$moddir" "$@" <<'PY'
import os, sys
moddir, names = sys.argv[1], sys.argv[2:]
dep = {}
byname = {}
def norm(n): return n.replace('-', '_')
def modname(path):
    b = os.path.basename(path)
    return norm(b.split('.ko')[0])
with open(os.path.join(moddir, 'modules.dep')) as f:
    for line in f:
        if ':' not in line: continue
        k, v = line.split(':', 1)
        dep[k] = v.split()
        byname[modname(k)] = k
builtin = set()
bf = os.path.join(moddir, 'modules.builtin')
if os.path.exists(bf):
    builtin = {modname(l.strip()) for l in open(bf) if l.strip()}
out, seen = [], set()
def visit(p):
    if p in seen: return
    seen.add(p)
    # modules.dep lists all (transitive) deps; load them deepest-first.
    for d in reversed(dep.get(p, [])):
        visit(d)
    out.append(p)
for n in names:
    n = norm(n)
    if n in byname:
        visit(byname[n])
    elif n in builtin:
        print(f"# {n} is built in", file=sys.stderr)
    else:
        print(f"# {n} not found (skipped)", file=sys.stderr)
print('\n'.join(out))
PY
}

# Append a /dev/console char device (5:1) entry to an uncompressed newc cpio archive, so
# the kernel can open the console before devtmpfs is mounted (works without mknod/root).
add_console_node() {
    python3 - "$1" <<'PY'
import sys
data = open(sys.argv[1], 'rb').read()
i = data.rfind(b'070701')          # the TRAILER!!! header is the last one
assert b'TRAILER!!!' in data[i:i + 120], 'no cpio trailer'
body = data[:i]
def ent(name, mode, rmaj=0, rmin=0, ino=900000):
    n = name.encode() + b'\0'
    e = b'070701' + b''.join(b'%08X' % v for v in
        (ino, mode, 0, 0, 1, 0, 0, 0, 0, rmaj, rmin, len(n), 0)) + n
    return e + b'\0' * ((4 - len(e) % 4) % 4)
body += ent('dev/console', 0o020600, 5, 1) + ent('TRAILER!!!', 0, ino=0)
body += b'\0' * ((512 - len(body) % 512) % 512)
open(sys.argv[1], 'wb').write(body)
PY
}

# Serialize builds of shared cache entries between concurrent runs: take_lock NAME holds
# an exclusive lock on $CACHE/.lock-NAME until the calling script exits.
take_lock() {
    exec 9>"$CACHE/.lock-$1"
    flock 9
}

# stage_busybox_and_modules ROOT MODULE... : busybox (with its applet links) in ROOT/bin, the
# named modules and their dependencies (decompressed, from $MODDIR) in ROOT/lib/modules,
# and their load order in ROOT/lib/modules/load-order.
stage_busybox_and_modules() {
    local root=$1 rel base; shift
    mkdir -p "$root/bin" "$root/lib/modules"
    cp /bin/busybox "$root/bin/busybox"
    for a in $("$root/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
    : >"$root/lib/modules/load-order"
    while read -r rel; do
        [ -n "$rel" ] || continue
        base="$(basename "$rel")"; base="${base%%.ko*}.ko"
        decompress_ko "$MODDIR/$rel" "$root/lib/modules/$base"
        echo "$base" >>"$root/lib/modules/load-order"
    done < <(resolve_modules "$MODDIR" "$@")
}

# copy_with_libs BINARY ROOT [DEST]: a dynamic binary and the libraries ldd lists.
copy_with_libs() {
    local bin="$1" root="$2" dest="${3:-$1}" lib out
    mkdir -p "$root/$(dirname "$dest")"
    cp -L "$bin" "$root/$dest"; chmod 0755 "$root/$dest"
    if out="$(ldd "$bin" 2>&1)"; then
        if grep -q 'not found' <<<"$out"; then die "missing libraries for $bin: $out"; fi
        for lib in $(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i}' <<<"$out"); do
            [ -e "$root$lib" ] && continue
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
    fi  # else: static binary ("not a dynamic executable")
}

