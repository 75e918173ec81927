#!/usr/bin/env bash
# Builds the virtio device fuzz target (libFuzzer + AddressSanitizer; one target, the first
# input byte picks the device) and runs it for a bounded number of inputs. Exits non-zero if
# the fuzzer finds a crash; the crashing input is left in the build directory (crash-*),
# reproduce with: <binary> <crash file>.
#
# Usage: Fuzz/run-device-fuzz.sh [runs]   (default 200000; FUZZ_BUILD overrides the build dir)
#
# HostCalls, GuestMemory, Virtio (the files the devices need) and VirtioDevices are instrumented.
# swift-system (SystemPackage) is taken uninstrumented from a `swift build` of its target in
# "$build/spm"; CHost is compiled with clang and imported through a generated module map.
set -euo pipefail

runs="${1:-200000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${FUZZ_BUILD:-$root/.build/fuzz-devices}"
mkdir -p "$build/corpus" "$build/chost"

flags=(-sanitize=fuzzer,address -parse-as-library -O -g -swift-version 6)

swift build --package-path "$root" --scratch-path "$build/spm" --target SystemPackage >/dev/null
spm="$build/spm/debug"
system_objects=("$spm"/SystemPackage.build/*.o "$spm"/CSystem.build/*.o)

cat > "$build/chost/module.modulemap" <<MAP
module CHost {
    header "$root/Sources/CHost/include/chost.h"
    export *
}
MAP
clang -fsanitize=fuzzer-no-link,address -O1 -g -I "$root/Sources/CHost/include" \
    -c "$root/Sources/CHost/chost.c" -o "$build/chost.o"

includes=(-I "$build" -I "$build/chost" -I "$spm/Modules" -I "$build/spm/checkouts/swift-system/Sources/CSystem/include")
swiftc "${flags[@]}" -wmo -module-name HostCalls -emit-module -emit-module-path "$build/HostCalls.swiftmodule" \
    -c "$root"/Sources/HostCalls/*.swift -o "$build/HostCalls.o"
swiftc "${flags[@]}" -wmo -module-name GuestMemory -emit-module -emit-module-path "$build/GuestMemory.swiftmodule" \
    -c "$root"/Sources/GuestMemory/*.swift -o "$build/GuestMemory.o"
swiftc "${flags[@]}" -wmo -module-name Virtio "${includes[@]}" -emit-module -emit-module-path "$build/Virtio.swiftmodule" \
    -c "$root/Sources/Virtio/DescriptorChain.swift" "$root/Sources/Virtio/Virtqueue.swift" \
       "$root/Sources/Virtio/VirtqueueError.swift" "$root/Sources/Virtio/VirtioDevice.swift" -o "$build/Virtio.o"
swiftc "${flags[@]}" -wmo -module-name VirtioDevices "${includes[@]}" -emit-module \
    -emit-module-path "$build/VirtioDevices.swiftmodule" \
    -c $(find "$root/Sources/VirtioDevices" -name '*.swift' | sort) -o "$build/VirtioDevices.o"
swiftc "${flags[@]}" -module-name DeviceFuzz "${includes[@]}" \
    "$root/Fuzz/Devices/fuzz.swift" "$build/GuestMemory.o" "$build/Virtio.o" "$build/VirtioDevices.o" \
    "$build/HostCalls.o" "$build/chost.o" "${system_objects[@]}" -o "$build/device-fuzz"

echo "fuzzing the virtio devices for $runs runs (corpus: $build/corpus)"
# The Swift runtime backtracer fights with ASan's signal handlers; let the sanitizer report.
SWIFT_BACKTRACE=enable=no "$build/device-fuzz" -runs="$runs" -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$build/" "$build/corpus"
