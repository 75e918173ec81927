#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// The guest kernel's own symbol table (kallsyms), found in guest memory the way crash,
// drgn and vmlinux-to-elf find it, for naming functions when no System.map is at hand.
//
// scripts/kallsyms.c emits these tables into .rodata, each 8-byte aligned (ALGN):
//   kallsyms_num_syms       u32
//   kallsyms_names          per symbol: a length (one byte; on 6.1+ two when the high bit is
//                           set, ULEB128), then that many indices into the token table; the
//                           expanded first character is the `nm` type letter
//   kallsyms_markers        u32 per 256 symbols (u64 on old kernels): names offset of symbol 256i
//   kallsyms_token_table    256 NUL-terminated strings
//   kallsyms_token_index    256 u16: offset of each token in the token table
//   kallsyms_offsets        s32 per symbol, and kallsyms_relative_base (u64)
// Up to 6.1 the offsets and the relative base come first (before num_syms); since 6.4 they
// follow the token index (then kallsyms_seqs_of_names, 3 bytes per symbol). 6.2 and 6.3,
// and 6.1 stable kernels with the backport (Debian 12's), put kallsyms_seqs_of_names between
// the markers and the token table, with the offsets still first.
//
// Finding them: the token table holds the single-character tokens "0" to "9" in order at
// indices 0x30 to 0x39 (digits occur in symbol names, and a character that occurs keeps its
// own token), so "0\01\0...9\0" is searched for; the token index after the table must then
// point at every token's start. The markers end where the token table begins, the names
// end where the markers begin, num_syms sits just before the names, and every candidate is
// checked against all of these (each marker against the decoded names, the count of
// markers against num_syms, the offsets' order and base).
//
// The memory is the guest's: every read is bounds-checked, every loop is bounded, and the
// total work is capped (`Budget`), so a corrupt or hostile table gives nil, never a crash,
// a hang or a huge allocation.

extension KernelSymbols {
    /// The text symbols of the kallsyms tables found in `memory` (for example the guest's RAM,
    /// or the bytes of a vmlinux file), with the addresses the tables give.
    ///
    /// Read from a running guest these are runtime addresses: `kallsyms_relative_base` is
    /// emitted as `_text + offset`, an absolute 64-bit relocation that the x86 kernel's boot
    /// code (the decompressor's `handle_relocations`) adjusts by the KASLR offset along with
    /// every other one, while the per-symbol offsets are plain constants relative to it.
    /// Read from a vmlinux file they are link-time addresses.
    ///
    /// Throws `.noSymbolTable` when no consistent set of tables is found.
    public init(kallsymsIn memory: UnsafeRawBufferPointer) throws(KernelSymbolsError) {
        guard let symbols = Kallsyms.read(memory) else {
            throw KernelSymbolsError(.noSymbolTable, "no kernel symbol table (kallsyms) found in memory")
        }
        self = symbols
    }
}

/// The kallsyms reader; see the top of this file.
enum Kallsyms {
    /// More symbols than any kernel has (a distribution kernel with all symbols has ~200k).
    static let maximumSymbols = 1 << 21
    /// Longest token accepted (real ones are a few characters).
    static let maximumTokenLength = 256
    /// Longest name entry: a two-byte length, then at most one token per character of the
    /// type letter and a KSYM_NAME_LEN name.
    static let maximumEntryBytes = 2 + 1 + KernelSymbols.maximumNameLength
    /// Most bytes of names expanded in all (a kernel has a few MiB).
    static let maximumNameBytes = 64 << 20
    /// Most digit-token matches looked at, and most work units spent in all (about a
    /// second's work): a hostile guest can fill its memory with near-misses.
    static let maximumMatches = 4096
    static let workBudget = 1 << 28

    /// "0\01\0...9\0": the digit tokens 0x30 to 0x39 of a token table.
    static let digitTokens: [UInt8] = (0x30 ... 0x39).flatMap { [UInt8($0), 0] }

    /// Where the tables lie (offsets into the memory read) and how to read the addresses.
    struct Layout: Equatable {
        var tokenTable: Int
        var tokenIndex: Int
        var markers: Int
        var markerWidth: Int
        var names: Int
        var symbolCount: Int
        var offsets: Int
        var relativeBase: UInt64
        /// kallsyms_seqs_of_names between the markers and the token table (6.2, 6.3, and 6.1
        /// stable kernels with the backport).
        var seqsOfNames: Int?
        /// 6.4 and later: offsets and relative base after the token index.
        var offsetsAfterTokenIndex: Bool
        /// CONFIG_KALLSYMS_ABSOLUTE_PERCPU: non-negative offsets are absolute addresses,
        /// negative ones count down from `relativeBase - 1`.
        var absolutePercpu: Bool
    }

    /// A decoded table: per symbol its address, type letter and name.
    struct Table {
        var layout: Layout
        var addresses: [UInt64]
        var types: [UInt8]
        var nameBytes: [UInt8]
        var nameEnds: [Int]

        func name(_ i: Int) -> ArraySlice<UInt8> {
            nameBytes[(i == 0 ? 0 : nameEnds[i - 1]) ..< nameEnds[i]]
        }
    }

    static func read(_ raw: UnsafeRawBufferPointer) -> KernelSymbols? {
        guard let table = find(raw) else { return nil }
        var builder = SymbolTableBuilder()
        for i in table.addresses.indices {
            builder.add(address: table.addresses[i], type: table.types[i], name: table.name(i))
        }
        return builder.build()
    }

    /// The first consistent set of tables in `raw`.
    static func find(_ raw: UnsafeRawBufferPointer) -> Table? {
        let memory = Memory(bytes: raw)
        var budget = Budget(remaining: workBudget)
        var from = 0
        for _ in 0 ..< maximumMatches {
            guard let digits = memory.find(digitTokens, from: from) else { return nil }
            from = digits + 1
            guard let tokens = TokenTable(memory, digitsAt: digits, budget: &budget) else {
                if budget.isExhausted { return nil }
                continue
            }
            if let table = decode(memory, tokens, budget: &budget) { return table }
            if budget.isExhausted { return nil }
        }
        return nil
    }

    // MARK: Markers, names, offsets

    private static func decode(_ memory: Memory, _ tokens: TokenTable, budget: inout Budget) -> Table? {
        // The markers end at the token table, or (6.2 and 6.3, and 6.1 stable kernels with the
        // backport, such as Debian 12's) at kallsyms_seqs_of_names, one 3-byte big-endian
        // entry per symbol, which ends in the padding before the token table.
        if let table = decode(memory, tokens, markersEnd: tokens.start, seqs: false, budget: &budget) { return table }
        let lowest = max(0, tokens.start - 3 * maximumSymbols - 8)
        var seqsStart = tokens.start - 8
        while seqsStart >= lowest, budget.spend(1) {
            defer { seqsStart -= 8 }
            if let table = decode(memory, tokens, markersEnd: seqsStart, seqs: true, budget: &budget) { return table }
        }
        return nil
    }

    private static func decode(_ memory: Memory, _ tokens: TokenTable, markersEnd: Int, seqs: Bool,
                               budget: inout Budget) -> Table? {
        for markers in markerCandidates(memory, endingAt: markersEnd, budget: &budget) {
            guard let (names, count) = locateNames(memory, markers, alignedWith: tokens.start, budget: &budget),
                  !seqs || seqsOfNamesFit(memory, at: markersEnd, count: count, before: tokens.start, budget: &budget),
                  let (types, nameBytes, nameEnds) = expandNames(memory, at: names, count: count, tokens, budget: &budget)
            else { continue }
            // num_syms is 8 bytes before the names; up to 6.3 the relative base is 8 before it.
            let candidates = [(after: true, base: tokens.index + 512), (after: false, base: names - 16)]
            for (after, at) in candidates {
                let offsetsBytes = align8(count * 4)
                let offsets = after ? at : at - offsetsBytes
                let basePosition = after ? at + offsetsBytes : at
                guard let relativeBase = memory.u64(basePosition), relativeBase != 0,
                      budget.spend(count),
                      let values = memory.s32Array(at: offsets, count: count)
                else { continue }
                let layout = Layout(tokenTable: tokens.start, tokenIndex: tokens.index, markers: markers.start,
                                    markerWidth: markers.width, names: names, symbolCount: count, offsets: offsets,
                                    relativeBase: relativeBase, seqsOfNames: seqs ? markersEnd : nil,
                                    offsetsAfterTokenIndex: after, absolutePercpu: false)
                if let table = addresses(values, types: types, layout: layout) {
                    return Table(layout: table.layout, addresses: table.addresses, types: types,
                                 nameBytes: nameBytes, nameEnds: nameEnds)
                }
            }
        }
        return nil
    }

    /// Whether `count` 3-byte entries at `start`, each below `count`, end in the padding
    /// before `end` (a multiple of 8 bytes from `start`).
    private static func seqsOfNamesFit(_ memory: Memory, at start: Int, count: Int, before end: Int,
                                       budget: inout Budget) -> Bool {
        guard align8(3 * count) == end - start, budget.spend(count) else {
            return false
        }
        for i in 0 ..< count {
            guard let high = memory.byte(start + 3 * i), let middle = memory.byte(start + 3 * i + 1),
                  let low = memory.byte(start + 3 * i + 2),
                  Int(high) << 16 | Int(middle) << 8 | Int(low) < count
            else { return false }
        }
        return true
    }

    struct Markers {
        var start: Int
        var width: Int
        var values: [Int]
    }

    /// Marker tables that end at `end` (or 4 bytes before, the alignment padding after an odd
    /// number of u32 markers): strictly increasing by at least 512 (256 entries of two or more
    /// bytes each), starting at 0; u32 entries, or u64 on old kernels.
    static func markerCandidates(_ memory: Memory, endingAt end: Int, budget: inout Budget) -> [Markers] {
        var found: [Markers] = []
        for (width, padding) in [(4, 0), (4, 4), (8, 0)] {
            if padding > 0 {
                guard memory.u32(end - padding) == 0 else { continue }
            }
            var values: [Int] = []
            var position = end - padding
            var complete = false
            while values.count <= maximumSymbols / 256, budget.spend(1) {
                position -= width
                guard let raw = width == 4 ? memory.u32(position).map(UInt64.init) : memory.u64(position),
                      raw < UInt64(Int32.max)
                else { break }
                let value = Int(raw)
                if let next = values.last, !(value < next && next - value >= 512) { break }
                values.append(value)
                if value == 0 {
                    complete = true
                    break
                }
            }
            if complete { found.append(Markers(start: position, width: width, values: values.reversed())) }
        }
        return found
    }

    /// The start of the names and the symbol count: num_syms (a u32, then 4 bytes of padding)
    /// right before the names, the names entries at the markers' offsets, and the last entry
    /// ending in the alignment padding before the markers.
    static func locateNames(_ memory: Memory, _ markers: Markers, alignedWith anchor: Int,
                            budget: inout Budget) -> (start: Int, count: Int)? {
        let last = markers.values[markers.values.count - 1]
        let highest = markers.start - last - 2
        let lowest = max(8, markers.start - last - 256 * maximumEntryBytes - 8)
        guard highest >= lowest else { return nil }
        var start = highest - mod(highest - anchor, 8)
        while start >= lowest, budget.spend(1) {
            defer { start -= 8 }
            guard memory.u32(start - 4) == 0, let count = memory.u32(start - 8).map(Int.init),
                  count > 0, count <= maximumSymbols, (count + 255) / 256 == markers.values.count,
                  entriesMatch(memory, at: start, count: count, markers, budget: &budget)
            else { continue }
            return (start, count)
        }
        return nil
    }

    /// Whether `count` name entries from `start` meet every marker and end in the zero
    /// padding before the markers.
    private static func entriesMatch(_ memory: Memory, at start: Int, count: Int, _ markers: Markers,
                                     budget: inout Budget) -> Bool {
        var position = start
        for i in 0 ..< count {
            guard budget.spend(1) else { return false }
            if i % 256 == 0, position - start != markers.values[i / 256] { return false }
            guard let (header, length) = entryLength(memory, at: position) else { return false }
            position += header + length
            guard position <= markers.start else { return false }
        }
        guard markers.start - position < 8 else { return false }
        return (position ..< markers.start).allSatisfy { memory.byte($0) == 0 }
    }

    /// A names entry's length: (bytes of the length, number of token indices).
    private static func entryLength(_ memory: Memory, at position: Int) -> (Int, Int)? {
        guard let first = memory.byte(position) else { return nil }
        if first & 0x80 == 0 {
            return first == 0 ? nil : (1, Int(first))
        }
        guard let second = memory.byte(position + 1), second & 0x80 == 0, second != 0 else { return nil }
        let length = Int(first & 0x7F) | Int(second) << 7
        return length <= maximumEntryBytes ? (2, length) : nil
    }

    /// Every entry expanded through the token table: type letters, and the names (without
    /// the type) in one arena.
    private static func expandNames(_ memory: Memory, at start: Int, count: Int, _ tokens: TokenTable,
                                    budget: inout Budget) -> ([UInt8], [UInt8], [Int])? {
        var types: [UInt8] = []
        var nameBytes: [UInt8] = []
        var nameEnds: [Int] = []
        types.reserveCapacity(count)
        nameEnds.reserveCapacity(count)
        var expanded: [UInt8] = []
        var position = start
        for _ in 0 ..< count {
            guard let (header, length) = entryLength(memory, at: position), budget.spend(length) else { return nil }
            position += header
            expanded.removeAll(keepingCapacity: true)
            for k in 0 ..< length {
                guard let token = memory.byte(position + k) else { return nil }
                expanded += tokens.tokens[Int(token)]
                guard expanded.count <= 1 + KernelSymbols.maximumNameLength else { return nil }
            }
            position += length
            guard expanded.count >= 2 else { return nil }
            types.append(expanded[0])
            nameBytes += expanded[1...]
            guard nameBytes.count <= maximumNameBytes else { return nil }
            nameEnds.append(nameBytes.count)
        }
        return (types, nameBytes, nameEnds)
    }

    /// The addresses from the offsets, in whichever mode fits: without absolute per-CPU
    /// symbols every offset is unsigned from the base; with them (x86-64 SMP up to 6.14)
    /// text symbols have negative offsets. Checked as scripts/kallsyms.c writes them: sorted
    /// by address, and the lowest relative symbol at the base itself (offset 0, or -1).
    private static func addresses(_ offsets: [Int32], types: [UInt8], layout: Layout) -> (layout: Layout, addresses: [UInt64])? {
        var layout = layout
        let isText: (UInt8) -> Bool = { "tTwW".utf8.contains($0) }
        var sawText = false
        var textNonNegative = false
        for (offset, type) in zip(offsets, types) where isText(type) {
            sawText = true
            if offset >= 0 { textNonNegative = true }
        }
        guard sawText else { return nil }
        layout.absolutePercpu = !textNonNegative
        let base = layout.relativeBase
        var result: [UInt64] = []
        result.reserveCapacity(offsets.count)
        var sawBase = false
        for offset in offsets {
            let address: UInt64
            if !layout.absolutePercpu {
                address = base &+ UInt64(UInt32(bitPattern: offset))
                if offset == 0 { sawBase = true }
            } else if offset >= 0 {
                address = UInt64(offset)
            } else {
                // base - 1 - offset, offset < 0: base + (-offset - 1), in range for any Int32.
                address = base &+ UInt64(-(Int64(offset) + 1))
                if offset == -1 { sawBase = true }
            }
            if let previous = result.last, address < previous { return nil }
            result.append(address)
        }
        return sawBase ? (layout, result) : nil
    }

    private static func align8(_ value: Int) -> Int { (value + 7) & ~7 }

    private static func mod(_ value: Int, _ modulus: Int) -> Int {
        let r = value % modulus
        return r < 0 ? r + modulus : r
    }

    // MARK: Token table

    /// A token table and its index, checked against each other: the index's entries point
    /// at consecutive NUL-terminated, printable, non-empty tokens, the last one ending where
    /// the index (aligned) begins.
    struct TokenTable {
        var start: Int
        var index: Int
        var tokens: [[UInt8]]

        init?(_ memory: Memory, digitsAt digits: Int, budget: inout Budget) {
            // Tokens 0x30 to 0xff from the digits on, to find the end of the table.
            var position = digits
            for _ in 0x30 ... 0xFF {
                guard budget.spend(1), let end = Self.tokenEnd(memory, at: position) else { return nil }
                position = end + 1
            }
            let tableEnd = position
            for padding in 0 ..< 8 {
                let index = tableEnd + padding
                guard memory.u16(index) == 0, let digitsOffset = memory.u16(index + 2 * 0x30) else { continue }
                let start = digits - Int(digitsOffset)
                guard start >= 0, (index - start) % 8 == 0,
                      (tableEnd ..< index).allSatisfy({ memory.byte($0) == 0 })
                else { continue }
                var tokens: [[UInt8]] = []
                tokens.reserveCapacity(256)
                var expected = start
                for k in 0 ..< 256 {
                    guard budget.spend(1), let offset = memory.u16(index + 2 * k), start + Int(offset) == expected,
                          let end = Self.tokenEnd(memory, at: expected)
                    else { break }
                    tokens.append(memory.copy(expected ..< end))
                    expected = end + 1
                }
                guard tokens.count == 256, expected == tableEnd else { continue }
                self.start = start
                self.index = index
                self.tokens = tokens
                return
            }
            return nil
        }

        /// The NUL ending a non-empty token of printable characters at `position`.
        static func tokenEnd(_ memory: Memory, at position: Int) -> Int? {
            for end in position ..< position + Kallsyms.maximumTokenLength + 1 {
                guard let byte = memory.byte(end) else { return nil }
                if byte == 0 { return end > position ? end : nil }
                guard byte > 0x20, byte < 0x7F else { return nil }
            }
            return nil
        }
    }

    // MARK: Memory access

    /// Work left: every loop over guest-controlled data spends from it.
    struct Budget {
        var remaining: Int
        mutating func spend(_ units: Int) -> Bool {
            guard remaining >= units else {
                remaining = 0
                return false
            }
            remaining -= units
            return true
        }
        var isExhausted: Bool { remaining == 0 }
    }

    /// Bounds-checked little-endian reads; nil for any read not wholly inside.
    struct Memory {
        let bytes: UnsafeRawBufferPointer
        var count: Int { bytes.count }

        func contains(_ position: Int, _ length: Int) -> Bool {
            position >= 0 && length >= 0 && position <= count - length
        }

        func byte(_ position: Int) -> UInt8? {
            // Sound: the index was checked against the buffer's size just before.
            contains(position, 1) ? bytes[position] : nil
        }

        func u16(_ position: Int) -> UInt16? {
            // Sound: loadUnaligned reads 2 bytes at a position checked to leave 2 in the buffer.
            contains(position, 2) ? UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt16.self)) : nil
        }

        func u32(_ position: Int) -> UInt32? {
            // Sound: as in u16, for 4 bytes.
            contains(position, 4) ? UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self)) : nil
        }

        func u64(_ position: Int) -> UInt64? {
            // Sound: as in u16, for 8 bytes.
            contains(position, 8) ? UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt64.self)) : nil
        }

        /// `count` s32 values at `position`, or nil unless all lie inside.
        func s32Array(at position: Int, count: Int) -> [Int32]? {
            guard count >= 0, count <= Int.max / 4, contains(position, count * 4) else { return nil }
            return (0 ..< count).map { Int32(bitPattern: u32(position + 4 * $0)!) }  // range checked above
        }

        /// A copy of bytes in a range the caller checked.
        func copy(_ range: Range<Int>) -> [UInt8] {
            guard contains(range.lowerBound, range.count) else { return [] }
            // Sound: the range was checked against the buffer's size just before.
            return Array(UnsafeRawBufferPointer(rebasing: bytes[range]))
        }

        /// The first position at or after `from` where `needle` starts: glibc's memchr finds
        /// each candidate first byte (vectorised), memcmp checks the rest. Many times faster
        /// than a byte loop: the scan covers up to all of guest RAM, and in the nested testbed
        /// a byte loop over a 1 GiB guest took tens of seconds.
        func find(_ needle: [UInt8], from: Int) -> Int? {
            guard let first = needle.first, from >= 0, from <= count - needle.count,
                  let base = bytes.baseAddress else { return nil }
            let last = count - needle.count   // the last position where the needle fits
            return needle.withUnsafeBytes { pattern -> Int? in
                guard let patternBase = pattern.baseAddress else { return nil }
                var position = from
                while position <= last {
                    // Sound: memchr reads [position, last] and memcmp reads needle.count bytes at a
                    // position <= last = count - needle.count: both stay inside this buffer.
                    guard let hit = memchr(base + position, Int32(first), last - position + 1) else { return nil }
                    let at = UnsafeRawPointer(hit) - base
                    if memcmp(base + at, patternBase, pattern.count) == 0 { return at }
                    position = at + 1
                }
                return nil
            }
        }
    }
}
