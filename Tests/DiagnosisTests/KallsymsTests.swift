import Foundation
import Testing
import TestSupport
@testable import Diagnosis

// MARK: - A kallsyms encoder, following scripts/kallsyms.c

/// One symbol as `nm -n` lists it.
private struct Symbol {
    var address: UInt64
    var type: UInt8
    var name: String
}

/// Writes kallsyms tables the way scripts/kallsyms.c does (sort by address, token table by
/// repeated pair merging, ULEB128 lengths, markers every 256, base-relative offsets), in the
/// 6.1 order (offsets, relative base, num_syms, names, markers, token table, token index) or
/// the 6.4+ order (num_syms, names, markers, token table, token index, offsets, relative
/// base, seqs_of_names). Every table starts 8-aligned relative to the blob's start.
private struct KallsymsEncoder {
    /// linux62: 6.2, 6.3 and 6.1 stable with the backport (Debian 12): the 6.1 order with
    /// kallsyms_seqs_of_names (3 bytes, big-endian, per symbol) between markers and token table.
    enum Order { case linux61, linux62, linux64 }
    var order: Order
    /// CONFIG_KALLSYMS_ABSOLUTE_PERCPU: per-CPU symbols (below `percpuEnd`) become absolute
    /// ('A'), the others get negative offsets from relative_base - 1.
    var absolutePercpu: Bool
    var percpuEnd: UInt64 = 0
    /// u64 markers, as before Linux 4.20.
    var wideMarkers = false

    /// Where the encoder put things, for tests that corrupt them.
    struct Placement {
        var offsets = 0, relativeBase = 0, numSyms = 0, names = 0, markers = 0, seqs = 0, tokenTable = 0, tokenIndex = 0, end = 0
    }

    func encode(_ input: [Symbol]) -> (blob: [UInt8], placement: Placement) {
        // sort_symbols: by address; input order breaks ties (the tests give aliases in the
        // order they want).
        var symbols = input.enumerated().sorted { ($0.element.address, $0.offset) < ($1.element.address, $1.offset) }
            .map(\.element)
        let absolute = symbols.map { absolutePercpu && $0.address <= percpuEnd }  // symbol_in_range: inclusive
        for i in symbols.indices where absolute[i] { symbols[i].type = UInt8(ascii: "A") }
        let relativeBase = symbols.indices.filter { !absolute[$0] }.map { symbols[$0].address }.min()!

        // optimize_token_table
        var data: [[UInt8]] = symbols.map { [$0.type] + Array($0.name.utf8) }
        var table = [[UInt8]?](repeating: nil, count: 256)
        for s in data { for c in s { table[Int(c)] = [c] } }
        for i in stride(from: 255, through: 0, by: -1) where table[i] == nil {
            var profit = [Int](repeating: 0, count: 0x10000)
            for s in data where s.count >= 2 { for k in 0 ..< s.count - 1 { profit[Int(s[k]) + Int(s[k + 1]) << 8] += 1 } }
            var best = 0
            var bestProfit = -10000
            for p in 0 ..< 0x10000 where profit[p] > bestProfit { best = p; bestProfit = profit[p] }
            if bestProfit == 0 { break }
            let a = UInt8(best & 0xFF), b = UInt8(best >> 8)
            table[i] = [a, b]
            data = data.map { s in
                var out: [UInt8] = []
                var k = 0
                while k < s.count {
                    if k + 1 < s.count, s[k] == a, s[k + 1] == b { out.append(UInt8(i)); k += 2 } else { out.append(s[k]); k += 1 }
                }
                return out
            }
        }
        func expand(_ c: UInt8) -> [UInt8] {
            guard let t = table[Int(c)] else { return [] }
            if t.count == 1, t[0] == c { return [c] }
            return t.flatMap(expand)
        }

        var blob: [UInt8] = []
        var placement = Placement()
        func align() { while blob.count % 8 != 0 { blob.append(0) } }
        func put(_ value: UInt64, _ width: Int) { for k in 0 ..< width { blob.append(UInt8(truncatingIfNeeded: value >> (8 * k))) } }

        func writeOffsets() {
            align()
            placement.offsets = blob.count
            for (i, s) in symbols.enumerated() {
                let offset: Int64
                if !absolutePercpu { offset = Int64(s.address - relativeBase) }
                else if absolute[i] { offset = Int64(s.address) }
                else { offset = Int64(bitPattern: relativeBase) &- Int64(bitPattern: s.address) &- 1 }
                put(UInt64(UInt32(truncatingIfNeeded: offset)), 4)
            }
            align()
            placement.relativeBase = blob.count
            put(relativeBase, 8)
        }
        func writeNamesAndTokens() {
            align()
            placement.numSyms = blob.count
            put(UInt64(symbols.count), 4)
            align()
            placement.names = blob.count
            var markers: [Int] = []
            for (i, s) in data.enumerated() {
                if i % 256 == 0 { markers.append(blob.count - placement.names) }
                if s.count <= 0x7F { blob.append(UInt8(s.count)) } else { blob += [UInt8(s.count & 0x7F) | 0x80, UInt8(s.count >> 7)] }
                blob += s
            }
            align()
            placement.markers = blob.count
            for m in markers { put(UInt64(m), wideMarkers ? 8 : 4) }
            if order == .linux62 {
                align()
                placement.seqs = blob.count
                // sort_symbols_by_name: the symbols' indices in name order.
                let byName = symbols.indices.sorted { (symbols[$0].name, symbols[$0].address, $0) < (symbols[$1].name, symbols[$1].address, $1) }
                for i in byName { blob += [UInt8(i >> 16), UInt8((i >> 8) & 0xFF), UInt8(i & 0xFF)] }
            }
            align()
            placement.tokenTable = blob.count
            var index: [Int] = []
            for i in 0 ..< 256 {
                index.append(blob.count - placement.tokenTable)
                blob += expand(UInt8(i)) + [0]
            }
            align()
            placement.tokenIndex = blob.count
            for i in index { put(UInt64(i), 2) }
        }
        switch order {
        case .linux61, .linux62:
            writeOffsets()
            writeNamesAndTokens()
            placement.end = blob.count
        case .linux64:
            writeNamesAndTokens()
            writeOffsets()
            placement.end = blob.count
            align()
            for i in symbols.indices { put(UInt64(i), 3) }  // seqs_of_names (not read)
        }
        return (blob, placement)
    }
}

/// Symbols like a small kernel's: aliases at _text, functions with digits in their names, a
/// name longer than 127 characters (two-byte length), weak functions, data in and after the
/// text, per-CPU variables near 0, _etext, and more than 512 symbols (three markers).
/// Without `percpu`, no symbols near 0 (a kernel without absolute per-CPU symbols has none).
private func sampleSymbols(seed: UInt64, count: Int = 700, percpu: Bool = true) -> [Symbol] {
    var random = SplitMix64(seed: seed)
    let parts = ["sched", "rcu", "irq", "smp", "call", "function", "many", "cond", "lock", "wait", "csd", "x86",
                 "flush", "tlb", "page", "ext4", "sha256", "do", "sys", "kvm", "pv", "apic", "timer", "tick"]
    var symbols = [Symbol(address: 0, type: UInt8(ascii: "D"), name: "__per_cpu_start"),
                   Symbol(address: 0x1000, type: UInt8(ascii: "D"), name: "cpu_debug_store"),
                   Symbol(address: 0x2_0000, type: UInt8(ascii: "D"), name: "__per_cpu_end"),
                   Symbol(address: 0xffff_ffff_8100_0000, type: UInt8(ascii: "T"), name: "startup_64"),
                   Symbol(address: 0xffff_ffff_8100_0000, type: UInt8(ascii: "T"), name: "_stext"),
                   Symbol(address: 0xffff_ffff_8100_0000, type: UInt8(ascii: "T"), name: "_text"),
                   Symbol(address: 0xffff_ffff_8100_0040, type: UInt8(ascii: "T"), name: "digits_0123456789"),
                   Symbol(address: 0xffff_ffff_8100_0080, type: UInt8(ascii: "t"),
                          name: "a_very_long_generated_name_" + String(repeating: "x", count: 120) + "_end0")]
    var address: UInt64 = 0xffff_ffff_8100_0100
    for i in 0 ..< count {
        let name = (0 ..< 1 + Int(random.next() % 3)).map { _ in parts[Int(random.next() % UInt64(parts.count))] }
            .joined(separator: "_") + "_\(i)"
        let types = Array("tttTTTWtd".utf8)
        symbols.append(Symbol(address: address, type: types[Int(random.next() % UInt64(types.count))], name: name))
        address += 0x10 * (1 + random.next() % 32)
    }
    symbols.append(Symbol(address: address, type: UInt8(ascii: "T"), name: "_etext"))
    symbols.append(Symbol(address: address + 0x1000, type: UInt8(ascii: "D"), name: "init_task"))
    symbols.append(Symbol(address: address + 0x2000, type: UInt8(ascii: "B"), name: "_end"))
    return percpu ? symbols : symbols.filter { $0.address >= 0xffff_0000_0000_0000 }
}

/// What a System.map of the same symbols gives: the expected result.
private func systemMap(_ symbols: [Symbol], addressShift: UInt64 = 0) -> String {
    symbols.map { s in
        let address = s.address >= 0xffff_0000_0000_0000 ? s.address &+ addressShift : s.address
        let hex = String(address, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex + " " + String(UnicodeScalar(s.type)) + " " + s.name
    }.joined(separator: "\n")
}

/// `blob` at `offset` in `total` bytes of seeded random bytes.
private func embed(_ blob: [UInt8], at offset: Int, total: Int, seed: UInt64) -> [UInt8] {
    var random = SplitMix64(seed: seed)
    var memory = (0 ..< total).map { _ in UInt8(truncatingIfNeeded: random.next()) }
    memory.replaceSubrange(offset ..< offset + blob.count, with: blob)
    return memory
}

private func readKallsyms(_ bytes: [UInt8]) -> KernelSymbols? {
    bytes.withUnsafeBytes { try? KernelSymbols(kallsymsIn: $0) }
}

private func expectSameSymbols(_ got: KernelSymbols?, _ expected: KernelSymbols,
                               sourceLocation: SourceLocation = #_sourceLocation) {
    guard let got else {
        Issue.record("no kallsyms found", sourceLocation: sourceLocation)
        return
    }
    let a = got.allSymbols, b = expected.allSymbols
    #expect(a.count == b.count, sourceLocation: sourceLocation)
    #expect(a.map(\.address) == b.map(\.address), sourceLocation: sourceLocation)
    #expect(a.map(\.name) == b.map(\.name), sourceLocation: sourceLocation)
    for (address, _) in b {
        #expect(got.describe(address + 4) == expected.describe(address + 4), sourceLocation: sourceLocation)
    }
}

// MARK: - Round trips

@Test(arguments: [(KallsymsEncoder.Order.linux61, true), (.linux61, false), (.linux62, true), (.linux62, false),
                  (.linux64, true), (.linux64, false)])
private func kallsymsRoundTrip(order: KallsymsEncoder.Order, absolutePercpu: Bool) throws {
    let symbols = sampleSymbols(seed: 14, percpu: absolutePercpu)
    let expected = try KernelSymbols(systemMap: systemMap(symbols))
    #expect(expected.count > 600)
    let (blob, placement) = KallsymsEncoder(order: order, absolutePercpu: absolutePercpu, percpuEnd: 0x2_0000).encode(symbols)
    // At several odd offsets in random memory (the reader's alignment is relative to the
    // tables themselves).
    for (k, offset) in [0, 1, 7, 4093, 65_537].enumerated() {
        let memory = embed(blob, at: offset, total: blob.count + offset + 12_345, seed: UInt64(k))
        expectSameSymbols(readKallsyms(memory), expected)
        let table = memory.withUnsafeBytes { Kallsyms.find($0) }
        #expect(table?.layout.offsetsAfterTokenIndex == (order == .linux64))
        #expect(table?.layout.absolutePercpu == absolutePercpu)
        #expect(table?.layout.tokenTable == offset + placement.tokenTable)
        #expect(table?.layout.names == offset + placement.names)
        #expect(table?.layout.seqsOfNames == (order == .linux62 ? offset + placement.seqs : nil))
    }
    let got = readKallsyms(blob)
    #expect(got?.describe(0xffff_ffff_8100_0000) == "startup_64+0x0/0x40")
    #expect(got?.address(of: "digits_0123456789") == 0xffff_ffff_8100_0040)
    #expect(got?.symbol(at: 0xffff_ffff_8100_0090)?.name == "a_very_long_generated_name_" + String(repeating: "x", count: 120) + "_end0")
}

@Test private func kallsymsOldWideMarkers() throws {
    let symbols = sampleSymbols(seed: 3)
    let expected = try KernelSymbols(systemMap: systemMap(symbols))
    let (blob, _) = KallsymsEncoder(order: .linux61, absolutePercpu: true, percpuEnd: 0x2_0000, wideMarkers: true).encode(symbols)
    expectSameSymbols(readKallsyms(embed(blob, at: 333, total: blob.count + 1000, seed: 9)), expected)
}

/// Fewer than 256 symbols: one marker, padded to 8 bytes (the case where the padding could
/// pass for a marker).
@Test(arguments: [KallsymsEncoder.Order.linux61, .linux62, .linux64])
private func kallsymsOneMarker(order: KallsymsEncoder.Order) throws {
    let symbols = sampleSymbols(seed: 5, count: 40)
    let expected = try KernelSymbols(systemMap: systemMap(symbols))
    let (blob, _) = KallsymsEncoder(order: order, absolutePercpu: true, percpuEnd: 0x2_0000).encode(symbols)
    expectSameSymbols(readKallsyms(embed(blob, at: 100, total: blob.count + 200, seed: 2)), expected)
}

/// The kernel relocates kallsyms_relative_base at boot (KASLR); the offsets stay as they
/// are. The addresses read follow the base: runtime addresses.
@Test(arguments: [KallsymsEncoder.Order.linux61, .linux62, .linux64])
private func kallsymsFollowRelocatedBase(order: KallsymsEncoder.Order) throws {
    let symbols = sampleSymbols(seed: 21)
    let shift: UInt64 = 0x2e00_0000
    let expected = try KernelSymbols(systemMap: systemMap(symbols, addressShift: shift))
    var (blob, placement) = KallsymsEncoder(order: order, absolutePercpu: true, percpuEnd: 0x2_0000).encode(symbols)
    let base = blob[placement.relativeBase ..< placement.relativeBase + 8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    for k in 0 ..< 8 { blob[placement.relativeBase + k] = UInt8(truncatingIfNeeded: (base + shift) >> (8 * k)) }
    let got = readKallsyms(blob)
    expectSameSymbols(got, expected)
    #expect(got?.address(of: "startup_64") == 0xffff_ffff_8100_0000 + shift)
}

// MARK: - Hostile input

private func expectNoKallsyms(_ bytes: [UInt8], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let start = ContinuousClock.now
    let got = readKallsyms(bytes)
    #expect(got == nil, "\(what): found \(got?.count ?? 0) symbols", sourceLocation: sourceLocation)
    #expect(ContinuousClock.now - start < .seconds(10), "\(what)", sourceLocation: sourceLocation)
}

@Test(arguments: [KallsymsEncoder.Order.linux61, .linux62, .linux64])
private func kallsymsTruncatedOrCut(order: KallsymsEncoder.Order) {
    let (blob, placement) = KallsymsEncoder(order: order, absolutePercpu: true, percpuEnd: 0x2_0000).encode(sampleSymbols(seed: 7))
    #expect(readKallsyms(blob) != nil)
    // Cut short anywhere before the last byte the reader needs, or started late.
    for fraction in 1 ..< 24 {
        let cut = placement.end * fraction / 24
        expectNoKallsyms(Array(blob[..<cut]), "cut at \(cut)")
    }
    expectNoKallsyms(Array(blob[..<(placement.end - 1)]), "one byte short")
    let first = order == .linux64 ? placement.numSyms : placement.offsets
    expectNoKallsyms(Array(blob[(first + 8)...]), "first table cut")
}

@Test(arguments: [KallsymsEncoder.Order.linux61, .linux62, .linux64])
private func kallsymsCorruptTables(order: KallsymsEncoder.Order) {
    let (blob, placement) = KallsymsEncoder(order: order, absolutePercpu: true, percpuEnd: 0x2_0000).encode(sampleSymbols(seed: 8))
    #expect(readKallsyms(blob) != nil)
    func patched(_ at: Int, _ value: UInt64, _ width: Int) -> [UInt8] {
        var copy = blob
        for k in 0 ..< width { copy[at + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
        return copy
    }
    let count = blob[placement.numSyms ..< placement.numSyms + 4].reversed().reduce(0) { $0 << 8 | Int($1) }
    for lie in [count - 1, count + 1, count + 256, 0, 0xFFFF_FFFF, 1 << 21] {
        expectNoKallsyms(patched(placement.numSyms, UInt64(lie), 4), "num_syms \(lie) instead of \(count)")
    }
    for (entry, value) in [(5, 0xFFFF), (0x31, 0), (0x80, 1), (255, 0x7FFF), (0, 3)] {
        expectNoKallsyms(patched(placement.tokenIndex + 2 * entry, UInt64(value), 2), "token_index[\(entry)] = \(value)")
    }
    // Markers out of order, pointing into an entry, or looping back to the start.
    expectNoKallsyms(patched(placement.markers + 4, 1, 4), "marker 1 inside the first entry")
    expectNoKallsyms(patched(placement.markers + 8, 0, 4), "marker 2 back at 0")
    expectNoKallsyms(patched(placement.markers + 4, 0xFFFF_FFF0, 4), "marker 1 past the names")
    // A names length running past the markers, a zero length, a huge two-byte length.
    expectNoKallsyms(patched(placement.names, 0x7F, 1), "first entry's length 127")
    expectNoKallsyms(patched(placement.names, 0, 1), "first entry's length 0")
    var huge = blob
    huge.replaceSubrange(placement.names ..< placement.names + 2, with: [0xFF, 0x7F])
    expectNoKallsyms(huge, "first entry's two-byte length 0x3fff")
    // A token table without its NULs: one token running into the next.
    let token81 = Int(blob[placement.tokenIndex + 2 * 0x81]) | Int(blob[placement.tokenIndex + 2 * 0x81 + 1]) << 8
    #expect(blob[placement.tokenTable + token81 - 1] == 0)
    expectNoKallsyms(patched(placement.tokenTable + token81 - 1, 0x41, 1), "token 0x80's NUL overwritten")
    // The offsets out of order (the reader checks the table is sorted by address).
    let middle = placement.offsets + 4 * (count / 2)
    expectNoKallsyms(patched(middle, 0x7FFF_FFFF, 4), "an offset out of order")
    expectNoKallsyms(patched(middle, 0x1000_0000, 4), "an unsigned offset out of order")
    if order == .linux62 {
        // A seqs_of_names entry naming a symbol past the count.
        expectNoKallsyms(patched(placement.seqs + 3 * 5, 0xFF_FFFF, 3), "seqs_of_names[5] out of range")
    }
}

@Test private func kallsymsNoiseAndNearMisses() {
    expectNoKallsyms([], "empty")
    expectNoKallsyms(Array(Kallsyms.digitTokens), "the digits alone")
    expectNoKallsyms(embed([], at: 0, total: 1 << 20, seed: 4), "1 MiB of random bytes")
    // Memory full of the digit pattern: every match is a near miss, and the search gives up.
    let pattern = Kallsyms.digitTokens
    expectNoKallsyms((0 ..< (4 << 20) / pattern.count).flatMap { _ in pattern }, "4 MiB of digit tokens")
    // A real token table and index, with nothing valid around them.
    let (blob, placement) = KallsymsEncoder(order: .linux64, absolutePercpu: true, percpuEnd: 0x2_0000).encode(sampleSymbols(seed: 1))
    let tokensOnly = Array(blob[placement.tokenTable ..< placement.tokenIndex + 512])
    expectNoKallsyms(embed(tokensOnly, at: 4096, total: 1 << 16, seed: 5), "a token table alone")
}

// MARK: - A real kernel

/// The reader on a real kernel's bytes against its System.map. scripts/test sets the two
/// variables after testbed/fetch-kernel.sh (Debian's 6.1 cloud kernel: the ELF vmlinux taken
/// out of its bzImage, stripped, and the System.map from its -dbg package); elsewhere the
/// test is reported as skipped.
@Test(.enabled(if: ProcessInfo.processInfo.environment["KITE_KALLSYMS_VMLINUX"] != nil,
               "set KITE_KALLSYMS_VMLINUX and KITE_KALLSYMS_SYSTEM_MAP (scripts/test does)"))
func kallsymsOfARealKernelMatchItsSystemMap() throws {
    let environment = ProcessInfo.processInfo.environment
    let vmlinux = try #require(environment["KITE_KALLSYMS_VMLINUX"])
    let mapPath = try #require(environment["KITE_KALLSYMS_SYSTEM_MAP"], "KITE_KALLSYMS_SYSTEM_MAP is not set")
    let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: vmlinux)))
    let mapText = try String(contentsOfFile: mapPath, encoding: .utf8)
    let map = try KernelSymbols(systemMap: mapText)

    // The file is the memory: kallsyms is self-contained, and its relative base is then the
    // link-time address, as in System.map.
    let table = try #require(bytes.withUnsafeBytes { Kallsyms.find($0) }, "no kallsyms found in \(vmlinux)")
    let symbols = try #require(bytes.withUnsafeBytes { try? KernelSymbols(kallsymsIn: $0) })

    // Every text symbol of the map's, with its address (name -> addresses; locals repeat).
    var mapText2: [String: Set<UInt64>] = [:]
    for line in mapText.split(separator: "\n") {
        let fields = line.split(separator: " ")
        guard fields.count >= 3, "tTwW".contains(fields[1]), let address = UInt64(fields[0], radix: 16) else { continue }
        mapText2[String(fields[2]), default: []].insert(address)
    }
    var textSymbols = 0
    var mismatched: [String] = []
    for i in table.addresses.indices where "tTwW".utf8.contains(table.types[i]) {
        textSymbols += 1
        let name = String(decoding: table.name(i), as: UTF8.self)
        if mapText2[name]?.contains(table.addresses[i]) != true {
            mismatched.append("\(name) at \(String(table.addresses[i], radix: 16))")
        }
    }
    print("kallsyms in \(vmlinux): \(table.addresses.count) symbols, \(textSymbols) text, layout \(table.layout)")
    #expect(textSymbols > 10_000)
    #expect(mismatched.isEmpty, "\(mismatched.count) text symbols not in System.map at that address: \(mismatched.prefix(10))")

    // And what a hang report prints: every System.map function named the same from either.
    var differ: [String] = []
    for (address, name) in map.allSymbols {
        for probe in [address, address + 1] where symbols.describe(probe) != map.describe(probe) {
            differ.append("\(name)+\(probe - address): \(symbols.describe(probe) ?? "nil") vs \(map.describe(probe) ?? "nil")")
        }
    }
    print("kallsyms vs System.map: \(map.count) text symbols compared, \(differ.count) differ")
    #expect(differ.isEmpty, "\(differ.count) addresses described differently: \(differ.prefix(10))")
}
