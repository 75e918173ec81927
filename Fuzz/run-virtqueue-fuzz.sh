#!/usr/bin/env bash
# Builds the split-virtqueue fuzz target (libFuzzer + AddressSanitizer) and runs it for a
# bounded number of inputs. Exits non-zero if the fuzzer finds a crash; the crashing input
# is left in the build directory (crash-*), reproduce with: <binary> <crash file>.
#
# Usage: Fuzz/run-virtqueue-fuzz.sh [runs]   (default 200000; FUZZ_BUILD overrides the build dir)
set -euo pipefail

runs="${1:-200000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${FUZZ_BUILD:-$root/.build/fuzz-virtqueue}"
mkdir -p "$build/corpus"

flags=(-sanitize=fuzzer,address -parse-as-library -O -g -swift-version 6)

# Virtio imports GuestMemory, so build the two library modules separately, then link the
# harness against both. Only the files the virtqueue needs, so other Virtio work in
# progress cannot break the fuzz build.
swiftc "${flags[@]}" -wmo -module-name GuestMemory -emit-module -emit-module-path "$build/GuestMemory.swiftmodule" \
    -c "$root"/Sources/GuestMemory/*.swift -o "$build/GuestMemory.o"
swiftc "${flags[@]}" -wmo -module-name Virtio -I "$build" -emit-module -emit-module-path "$build/Virtio.swiftmodule" \
    -c "$root/Sources/Virtio/DescriptorChain.swift" "$root/Sources/Virtio/Virtqueue.swift" \
       "$root/Sources/Virtio/VirtqueueError.swift" -o "$build/Virtio.o"
swiftc "${flags[@]}" -module-name VirtqueueFuzz -I "$build" \
    "$root/Fuzz/Virtqueue/fuzz.swift" "$build/GuestMemory.o" "$build/Virtio.o" -o "$build/virtqueue-fuzz"

echo "fuzzing the split virtqueue for $runs runs (corpus: $build/corpus)"
# The Swift runtime backtracer fights with ASan's signal handlers; let the sanitizer report.
SWIFT_BACKTRACE=enable=no "$build/virtqueue-fuzz" -runs="$runs" -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$build/" "$build/corpus"
