#!/usr/bin/env bash
# Builds the platform fuzz target (libFuzzer + AddressSanitizer; one target, the first input
# byte picks the device or interrupt controller) for the guest-facing surface that is not
# virtio: the port-I/O and MMIO devices of Sources/Devices and the interrupt controllers of
# Sources/APIC. Runs it for a bounded number of inputs and exits non-zero if the fuzzer finds
# a crash; the crashing input is left in the build directory (crash-*), reproduce with:
# <binary> <crash file>. At exit the harness prints the inputs run per target.
#
# Usage: Fuzz/run-platform-fuzz.sh [runs]   (default 200000; FUZZ_BUILD overrides the build dir)
set -euo pipefail

runs="${1:-200000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${FUZZ_BUILD:-$root/.build/fuzz-platform}"
mkdir -p "$build/corpus"

flags=(-sanitize=fuzzer,address -parse-as-library -O -g -swift-version 6)

# Devices and APIC depend on nothing but the standard library (and Synchronization), so each
# is one instrumented module; the harness links against both.
swiftc "${flags[@]}" -wmo -module-name Devices -emit-module -emit-module-path "$build/Devices.swiftmodule" \
    -c "$root"/Sources/Devices/*.swift -o "$build/Devices.o"
swiftc "${flags[@]}" -wmo -module-name APIC -emit-module -emit-module-path "$build/APIC.swiftmodule" \
    -c "$root"/Sources/APIC/*.swift -o "$build/APIC.o"
swiftc "${flags[@]}" -module-name PlatformFuzz -I "$build" \
    "$root/Fuzz/Platform/fuzz.swift" "$build/Devices.o" "$build/APIC.o" -o "$build/platform-fuzz"

echo "fuzzing the platform devices and interrupt controllers for $runs runs (corpus: $build/corpus)"
# The Swift runtime backtracer fights with ASan's signal handlers; let the sanitizer report.
# An input runs in well under a millisecond: one that takes 10 s is a hang (a guest spinning
# a vCPU thread in a device model), reported as a timeout-* artifact.
SWIFT_BACKTRACE=enable=no "$build/platform-fuzz" -runs="$runs" -max_len=4096 -print_final_stats=1 -timeout=10 \
    -artifact_prefix="$build/" "$build/corpus"
