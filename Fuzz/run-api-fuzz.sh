#!/usr/bin/env bash
# Builds the Firecracker API fuzz target (libFuzzer + AddressSanitizer) over what `kite
# firecracker` reads from its clients: HTTP framing, JSON, routes and schemas. Runs it for a
# bounded number of inputs and exits non-zero if the fuzzer finds a crash; the crashing input
# is left in the build directory (crash-*), reproduce with: <binary> <crash file>.
#
# Usage: Fuzz/run-api-fuzz.sh [runs]   (default 200000; FUZZ_BUILD overrides the build dir)
set -euo pipefail

runs="${1:-200000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${FUZZ_BUILD:-$root/.build/fuzz-api}"
mkdir -p "$build/corpus"

flags=(-sanitize=fuzzer,address -parse-as-library -O -g -swift-version 6)

# JSON depends on nothing but the standard library; the API's parsing files on JSON only
# (the server and the VMM glue in the same target are not part of this module).
swiftc "${flags[@]}" -wmo -module-name JSON -emit-module -emit-module-path "$build/JSON.swiftmodule" \
    -c "$root"/Sources/JSON/*.swift -o "$build/JSON.o"
api="$root/Sources/FirecrackerAPI"
swiftc "${flags[@]}" -wmo -module-name FirecrackerAPI -I "$build" -emit-module -emit-module-path "$build/FirecrackerAPI.swiftmodule" \
    -c "$api/HTTP.swift" "$api/APIRequest.swift" "$api/BodyDecoder.swift" "$api/Schema.swift" -o "$build/FirecrackerAPI.o"
swiftc "${flags[@]}" -module-name APIFuzz -I "$build" \
    "$root/Fuzz/API/fuzz.swift" "$build/JSON.o" "$build/FirecrackerAPI.o" -o "$build/api-fuzz"

# Seeds: the requests Kata and the Go SDK send, so the fuzzer starts from real traffic.
seed() { printf '%s' "$2" >"$build/corpus/$1"; }
seed boot $'\x40\x03PUT /boot-source HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 61\r\n\r\n{"kernel_image_path":"/k","boot_args":"console=ttyS0 acpi=off"}'
seed drive $'\x10\x03PUT /drives/drive_0 HTTP/1.1\r\nContent-Length: 89\r\n\r\n{"drive_id":"drive_0","path_on_host":"/d","is_root_device":false,"is_read_only":false}\n'
seed net $'\x08\x02PUT /network-interfaces/eth0 HTTP/1.1\r\nContent-Length: 103\r\n\r\n{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"02:00:00:00:00:01","rx_rate_limiter":{},"tx_rate_limiter":{}}'
seed pipelined $'\xff\x03GET / HTTP/1.1\r\n\r\nPATCH /vm HTTP/1.1\r\nContent-Length: 18\r\n\r\n{"state":"Paused"}GET /machine-config HTTP/1.0\r\n\r\n'
seed json $'[1,-2.5e3,"\\u00e9\\ud83d\\udc27",{"a":null,"b":[true,false]}]'

echo "fuzzing the Firecracker API parsers for $runs runs (corpus: $build/corpus)"
SWIFT_BACKTRACE=enable=no "$build/api-fuzz" -runs="$runs" -max_len=8192 -print_final_stats=1 -timeout=10 \
    -artifact_prefix="$build/" "$build/corpus"
