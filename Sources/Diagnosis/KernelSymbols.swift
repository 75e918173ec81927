/// The text symbols of one Linux kernel build, for printing a guest instruction address the
/// way the kernel prints it: `smp_call_function_many_cond+0xf1/0x330`.
///
/// Built from a System.map (or a /proc/kallsyms dump) or from the `.symtab` of an ELF vmlinux.
/// Only text symbols are kept (about 50k for a distribution kernel), stored compactly: every
/// name in one byte arena, addresses and sizes in flat arrays, about 2 MiB in all.
///
/// Addresses are link-time addresses. A guest running with KASLR runs its kernel at
/// link-time address + offset: learn the offset with `kaslrOffset(runtimeAddress:of:)` (from
/// MSR_LSTAR, which holds the runtime address of `entry_SYSCALL_64`) or from the
/// "Kernel Offset:" line of a panic (`kaslrOffset(fromConsoleLine:)`), then use
/// `describe(runtime:kaslrOffset:)`.
///
/// Several symbols at one address are aliases; `describe` prints the one the kernel prints
/// (see `SymbolRank`): for example `startup_64`, not `_stext` or `_text`. An address at
/// `_etext` or `_einittext` (with no function of its own there) is outside the kernel's text.
public struct KernelSymbols: Sendable {
    /// Link-time addresses, ascending; aliases (equal addresses) are ordered best name first.
    private let addresses: [UInt64]
    /// Symbol i's name is `names[nameStarts[i] ..< nameStarts[i + 1]]` (printable ASCII).
    private let nameStarts: [UInt32]
    private let names: [UInt8]
    /// The extent `describe` gives each symbol and prints after the slash; 0 if unknown.
    private let sizes: [UInt32]
    /// `SymbolRank` raw values: which alias is printed, which is global, where text ends.
    private let ranks: [UInt8]

    /// The longest name accepted (the kernel's KSYM_NAME_LEN).
    static let maximumNameLength = 512
    /// Largest System.map read.
    static let systemMapSizeLimit: UInt64 = 64 << 20
    /// Largest total of `.symtab` and `.strtab` read from an ELF file (the rest of the file,
    /// code and debug info, is never read).
    static let elfSymbolDataLimit: UInt64 = 512 << 20

    fileprivate init(addresses: [UInt64], nameStarts: [UInt32], names: [UInt8], sizes: [UInt32], ranks: [UInt8]) {
        self.addresses = addresses
        self.nameStarts = nameStarts
        self.names = names
        self.sizes = sizes
        self.ranks = ranks
    }

    /// Number of text symbols kept, aliases included.
    public var count: Int { addresses.count }

    /// Bytes held by the tables (capacities, not counting array headers).
    var storageBytes: Int {
        addresses.capacity * 8 + nameStarts.capacity * 4 + names.capacity + sizes.capacity * 4 + ranks.capacity
    }

    /// Link-time address of the text symbol with exactly this name; when several symbols
    /// share the name (local functions of different files) the global one, else the lowest.
    public func address(of name: String) -> UInt64? {
        let wanted = Array(name.utf8)
        var found: Int?
        for i in 0..<addresses.count where nameEquals(i, wanted) {
            if SymbolRank(raw: ranks[i]).binding == .global { return addresses[i] }
            if found == nil { found = i }
        }
        return found.map { addresses[$0] }
    }

    /// Where an address lies: a symbol's name, the offset into it and its size.
    public struct Location: Sendable, Equatable, CustomStringConvertible {
        public var name: String
        public var offset: UInt64
        public var size: UInt64

        public init(name: String, offset: UInt64, size: UInt64) {
            self.name = name
            self.offset = offset
            self.size = size
        }

        /// "name+0xoff/0xsize", as the kernel's `%pS` prints it.
        public var description: String {
            "\(name)+0x\(String(offset, radix: 16))/0x\(String(size, radix: 16))"
        }
    }

    /// The symbol a link-time address lies in; nil before the first symbol, past a symbol's
    /// end (the next symbol of any kind in the map, or `st_size` in an ELF file) when no
    /// other symbol starts there, and at or past `_etext` / `_einittext`.
    public func symbol(at address: UInt64) -> Location? {
        // Binary search for the first symbol above `address`; the one before it is the candidate.
        var low = 0
        var high = addresses.count
        while low < high {
            let middle = low + (high - low) / 2
            if addresses[middle] <= address { low = middle + 1 } else { high = middle }
        }
        guard low > 0 else { return nil }
        var i = low - 1
        while i > 0, addresses[i - 1] == addresses[i] { i -= 1 }  // the best alias comes first
        guard !SymbolRank(raw: ranks[i]).isTextEnd else { return nil }
        let offset = address - addresses[i]
        let size = UInt64(sizes[i])
        guard offset < size || (size == 0 && offset == 0) else { return nil }
        return Location(name: name(at: i), offset: offset, size: size)
    }

    /// "function+0xoff/0xsize" for a link-time address; nil outside the kernel's text
    /// (see `symbol(at:)`).
    public func describe(_ address: UInt64) -> String? {
        symbol(at: address)?.description
    }

    /// "function+0xoff/0xsize" for a runtime address of a kernel relocated by `kaslrOffset`.
    public func describe(runtime address: UInt64, kaslrOffset: UInt64) -> String? {
        describe(address &- kaslrOffset)
    }

    /// The KASLR offset (runtime minus link-time address) from the runtime address of a
    /// known symbol, such as MSR_LSTAR for `entry_SYSCALL_64`. Nil if the symbol is unknown,
    /// or if the offset is not a multiple of 2 MiB (x86-64 relocates the kernel by multiples
    /// of CONFIG_PHYSICAL_ALIGN, at least 2 MiB), which happens when LSTAR is not set yet
    /// (early boot) or the symbols are for another kernel.
    public func kaslrOffset(runtimeAddress: UInt64, of symbol: String) -> UInt64? {
        guard let link = address(of: symbol) else { return nil }
        let offset = runtimeAddress &- link
        return offset % Self.kaslrAlignment == 0 ? offset : nil
    }

    /// The granularity of the x86-64 kernel's KASLR offset.
    static let kaslrAlignment: UInt64 = 2 << 20

    /// The KASLR offset a kernel printed on panic: "Kernel Offset: 0x1e000000 from
    /// 0xffffffff81000000 (relocation range: ...)" gives 0x1e000000, "Kernel Offset: disabled"
    /// gives 0; nil for any other line.
    public static func kaslrOffset(fromConsoleLine line: String) -> UInt64? {
        let bytes = Array(line.utf8)
        let marker = Array("Kernel Offset: ".utf8)
        guard let start = firstIndex(of: marker, in: bytes) else { return nil }
        let rest = bytes[(start + marker.count)...]
        if rest.starts(with: "disabled".utf8) { return 0 }
        guard rest.starts(with: "0x".utf8) else { return nil }
        var value: UInt64 = 0
        var digits = 0
        for byte in rest.dropFirst(2) {
            guard let digit = hexDigitValue(byte) else { break }
            guard digits < 16 else { return nil }
            value = value << 4 | digit
            digits += 1
        }
        return digits > 0 ? value : nil
    }

    /// Every symbol as (link-time address, name), in address order (aliases best first).
    var allSymbols: [(address: UInt64, name: String)] {
        addresses.indices.map { (addresses[$0], name(at: $0)) }
    }

    private func name(at i: Int) -> String {
        String(decoding: names[Int(nameStarts[i]) ..< Int(nameStarts[i + 1])], as: UTF8.self)
    }

    private func nameEquals(_ i: Int, _ wanted: [UInt8]) -> Bool {
        let start = Int(nameStarts[i])
        let end = Int(nameStarts[i + 1])
        guard end - start == wanted.count else { return false }
        return names[start ..< end].elementsEqual(wanted)
    }
}

/// Why symbols could not be read; `description` is one line naming the file.
public struct KernelSymbolsError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The file could not be opened or read.
        case unreadable
        /// The file (or its symbol table) is over the size limit.
        case tooLarge
        /// An ELF file that is not 64-bit little-endian x86-64 style, or is a relocatable object.
        case unsupportedELF
        /// An ELF file whose headers point outside the file or make no sense.
        case malformedELF
        /// A stripped ELF file, or a compressed kernel image (bzImage), which has no symbol table.
        case noSymbolTable
        /// The input parsed, but held no text symbol (for example Debian's stub System.map).
        case noTextSymbols
    }

    public var kind: Kind
    public var description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

// MARK: - System.map

extension KernelSymbols {
    /// Parses System.map text ("ffffffff81000000 T startup_64" lines; /proc/kallsyms dumps
    /// work too). Keeps symbols of type t, T, w and W; lines that do not parse, and names
    /// that are not printable ASCII, are skipped. Throws if no text symbol is left.
    public init(systemMap text: String) throws(KernelSymbolsError) {
        guard let symbols = Self.parseSystemMap(Array(text.utf8)) else {
            throw KernelSymbolsError(.noTextSymbols, "the System.map text has no kernel text symbols")
        }
        self = symbols
    }

    /// Reads symbols from a System.map file or an ELF vmlinux, whichever `path` is.
    public init(contentsOf path: String) throws(KernelSymbolsError) {
        let file = try KernelFile(path: path)
        let head = try file.read(at: 0, count: Int(min(file.size, 0x210)))
        if ELFImage.hasMagic(head) {
            self = try Self(elf: file)
            return
        }
        if head.count >= 0x206, head[0x202 ..< 0x206].elementsEqual("HdrS".utf8) {
            throw KernelSymbolsError(.noSymbolTable, "\(path): a compressed kernel image (bzImage) has no symbol table; give its System.map or an unstripped vmlinux")
        }
        let bytes = try file.readAll(limit: Self.systemMapSizeLimit, what: "a System.map")
        guard let symbols = Self.parseSystemMap(bytes) else {
            throw KernelSymbolsError(.noTextSymbols, "\(path): no kernel text symbols (Debian's /boot/System.map is a stub; the real one is in the linux-image-*-dbg package)")
        }
        self = symbols
    }

    static func parseSystemMap(_ bytes: [UInt8]) -> KernelSymbols? {
        var builder = SymbolTableBuilder()
        var lineStart = 0
        while lineStart < bytes.count {
            var lineEnd = lineStart
            while lineEnd < bytes.count, bytes[lineEnd] != 0x0A { lineEnd += 1 }
            parseSystemMapLine(bytes, lineStart, lineEnd, into: &builder)
            lineStart = lineEnd + 1
        }
        return builder.build()
    }

    /// One "address type name[\t[module]]" line in `bytes[start..<end]`.
    private static func parseSystemMapLine(_ bytes: [UInt8], _ start: Int, _ end: Int, into builder: inout SymbolTableBuilder) {
        func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0D }
        var p = start
        while p < end, isBlank(bytes[p]) { p += 1 }
        var address: UInt64 = 0
        var digits = 0
        while p < end, let digit = hexDigitValue(bytes[p]) {
            guard digits < 16 else { return }
            address = address << 4 | digit
            digits += 1
            p += 1
        }
        guard digits > 0, p < end, isBlank(bytes[p]) else { return }
        while p < end, isBlank(bytes[p]) { p += 1 }
        guard p + 1 < end, isBlank(bytes[p + 1]) else { return }  // a one-letter type, then a blank
        let type = bytes[p]
        p += 1
        while p < end, isBlank(bytes[p]) { p += 1 }
        let nameStart = p
        while p < end, !isBlank(bytes[p]) { p += 1 }
        builder.add(address: address, type: type, name: bytes[nameStart ..< p])
    }
}

/// Symbol names are identifiers: printable ASCII only, so a hostile map cannot put terminal
/// escapes into Kite's output.
func isAcceptableName(_ name: ArraySlice<UInt8>) -> Bool {
    guard !name.isEmpty, name.count <= KernelSymbols.maximumNameLength else { return false }
    return name.allSatisfy { $0 > 0x20 && $0 < 0x7F }
}

func hexDigitValue(_ byte: UInt8) -> UInt64? {
    switch byte {
    case UInt8(ascii: "0") ... UInt8(ascii: "9"): UInt64(byte - UInt8(ascii: "0"))
    case UInt8(ascii: "a") ... UInt8(ascii: "f"): UInt64(byte - UInt8(ascii: "a") + 10)
    case UInt8(ascii: "A") ... UInt8(ascii: "F"): UInt64(byte - UInt8(ascii: "A") + 10)
    default: nil
    }
}

func firstIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
    guard !needle.isEmpty, haystack.count >= needle.count else { return nil }
    for start in 0 ... (haystack.count - needle.count)
    where haystack[start] == needle[0] && haystack[start ..< start + needle.count].elementsEqual(needle) {
        return start
    }
    return nil
}

// MARK: - Ranking aliases

/// What decides which of several symbols at one address `describe` prints, packed in a byte.
///
/// The kernel prints the first alias of its kallsyms table, which scripts/kallsyms.c sorts
/// by: strong before weak, then linker-script markers (`__start_*`, `__*_end`, ...) last,
/// then fewer leading underscores, then `nm -n` order (by name). `SymbolRank` follows that,
/// and also puts `_text`-style markers with the linker-script ones and `__pfx_*`/`__cfi_*`
/// preambles after real names.
struct SymbolRank {
    enum Binding: UInt8 {
        case global = 0, weak = 1, local = 2, weakUndefined = 3
    }

    let raw: UInt8

    private static let weakBit: UInt8 = 1 << 2
    private static let markerBit: UInt8 = 1 << 1
    private static let preambleBit: UInt8 = 1 << 0
    private static let textEndBit: UInt8 = 1 << 3
    private static let bindingShift: UInt8 = 4

    init(raw: UInt8) { self.raw = raw }

    init(name: ArraySlice<UInt8>, binding: Binding) {
        var raw = binding.rawValue << Self.bindingShift
        if binding == .weak || binding == .weakUndefined { raw |= Self.weakBit }
        if Self.isMarker(name) { raw |= Self.markerBit }
        if name.starts(with: "__pfx_".utf8) || name.starts(with: "__cfi_".utf8) { raw |= Self.preambleBit }
        if Self.textEnds.contains(where: { name.elementsEqual($0) }) { raw |= Self.textEndBit }
        self.raw = raw
    }

    var binding: Binding { Binding(rawValue: raw >> Self.bindingShift) ?? .local }
    /// `_etext` or `_einittext`: the end of a text region, not a function.
    var isTextEnd: Bool { raw & Self.textEndBit != 0 }
    /// The criteria before the leading-underscore count, smaller first.
    var precedence: UInt8 { raw & (Self.weakBit | Self.markerBit | Self.preambleBit) }

    private static let textEnds: [[UInt8]] = ["_etext", "_einittext"].map { Array($0.utf8) }
    private static let markers: [[UInt8]] = ["_text", "_stext", "_etext", "_sinittext", "_einittext", "_sdata", "_edata", "_end"]
        .map { Array($0.utf8) }

    /// Linker-script provided as scripts/kallsyms.c guesses it, or one of the `_text` family.
    private static func isMarker(_ name: ArraySlice<UInt8>) -> Bool {
        if markers.contains(where: { name.elementsEqual($0) }) { return true }
        guard name.count >= 8, name.starts(with: "__".utf8) else { return false }
        let rest = name.dropFirst(2)
        return rest.starts(with: "start_".utf8) || rest.starts(with: "stop_".utf8) || rest.starts(with: "end_".utf8)
            || name.reversed().starts(with: "_start".utf8.reversed())
            || name.reversed().starts(with: "_end".utf8.reversed())
    }

    /// Whether alias `a` (name `nameA`) prints before alias `b`; nil if they tie.
    static func precedes(_ a: SymbolRank, _ nameA: ArraySlice<UInt8>, _ b: SymbolRank, _ nameB: ArraySlice<UInt8>) -> Bool? {
        if a.precedence != b.precedence { return a.precedence < b.precedence }
        let underscoresA = nameA.prefix { $0 == UInt8(ascii: "_") }.count
        let underscoresB = nameB.prefix { $0 == UInt8(ascii: "_") }.count
        if underscoresA != underscoresB { return underscoresA < underscoresB }
        if nameA.elementsEqual(nameB) { return nil }
        return nameA.lexicographicallyPrecedes(nameB)
    }
}

// MARK: - Building the tables

/// Collects symbols in any order, then sorts them and works out their sizes.
struct SymbolTableBuilder {
    private var names: [UInt8] = []
    private var nameEnds: [UInt32] = []
    private var addresses: [UInt64] = []
    private var explicitSizes: [UInt64] = []
    private var ranks: [UInt8] = []
    /// Addresses of every other symbol (data, section starts and ends): where a text
    /// symbol without an explicit size ends.
    private var boundaries: [UInt64] = []

    /// A text symbol; `size` 0 means "up to the next symbol or boundary".
    mutating func addText(address: UInt64, name: ArraySlice<UInt8>, binding: SymbolRank.Binding, size: UInt64) {
        guard names.count + name.count <= Int(UInt32.max) else { return }
        names.append(contentsOf: name)
        nameEnds.append(UInt32(names.count))
        addresses.append(address)
        explicitSizes.append(size)
        ranks.append(SymbolRank(name: name, binding: binding).raw)
    }

    /// A symbol of System.map type letter `type` (the `nm` letter, which kallsyms stores too):
    /// t, T, W and w are kept as text; absolute and undefined symbols are dropped; any other
    /// (data, rodata, bss) is not kept but ends the text symbol before it. Names that are
    /// not printable ASCII are skipped.
    mutating func add(address: UInt64, type: UInt8, name: ArraySlice<UInt8>) {
        guard isAcceptableName(name) else { return }
        let binding: SymbolRank.Binding
        switch type {
        case UInt8(ascii: "T"): binding = .global
        case UInt8(ascii: "W"): binding = .weak
        case UInt8(ascii: "t"): binding = .local
        case UInt8(ascii: "w"): binding = .weakUndefined
        case UInt8(ascii: "A"), UInt8(ascii: "a"), UInt8(ascii: "U"), UInt8(ascii: "v"):
            return  // absolute or undefined: not a place in the kernel's memory
        default:
            // Data, rodata, bss: not kept, but it ends the text symbol before it.
            if address != 0 { addBoundary(address) }
            return
        }
        guard address != 0 else { return }  // an undefined weak symbol
        addText(address: address, name: name, binding: binding, size: 0)
    }

    mutating func addBoundary(_ address: UInt64) {
        boundaries.append(address)
    }

    /// The finished tables, nil when no text symbol was added.
    func build() -> KernelSymbols? {
        let count = addresses.count
        guard count > 0 else { return nil }
        let addresses = self.addresses
        let ranks = self.ranks
        var order = Array(0 ..< count)
        let names = self.names
        let nameEnds = self.nameEnds
        func name(_ i: Int) -> ArraySlice<UInt8> {
            names[(i == 0 ? 0 : Int(nameEnds[i - 1])) ..< Int(nameEnds[i])]
        }
        order.sort { a, b in
            if addresses[a] != addresses[b] { return addresses[a] < addresses[b] }
            return SymbolRank.precedes(SymbolRank(raw: ranks[a]), name(a), SymbolRank(raw: ranks[b]), name(b)) ?? (a < b)
        }

        var ends = boundaries
        ends.append(contentsOf: addresses)
        ends.sort()

        var sortedAddresses: [UInt64] = []
        var nameStarts: [UInt32] = []
        var sortedNames: [UInt8] = []
        var sizes: [UInt32] = []
        var sortedRanks: [UInt8] = []
        sortedAddresses.reserveCapacity(count)
        nameStarts.reserveCapacity(count + 1)
        sortedNames.reserveCapacity(names.count)
        sizes.reserveCapacity(count)
        sortedRanks.reserveCapacity(count)

        nameStarts.append(0)
        var next = 0  // index into `ends` of the first address above the current symbol
        for i in order {
            let address = addresses[i]
            sortedNames.append(contentsOf: name(i))
            nameStarts.append(UInt32(sortedNames.count))
            sortedAddresses.append(address)
            sortedRanks.append(ranks[i])

            var size = explicitSizes[i]
            if size == 0 || size > UInt64(UInt32.max) {
                while next < ends.count, ends[next] <= address { next += 1 }
                size = next < ends.count ? ends[next] - address : 0
            }
            sizes.append(size <= UInt64(UInt32.max) ? UInt32(size) : 0)
        }
        return KernelSymbols(addresses: sortedAddresses, nameStarts: nameStarts, names: sortedNames,
                             sizes: sizes, ranks: sortedRanks)
    }
}

// MARK: - ELF

extension KernelSymbols {
    /// Reads the `.symtab` and `.strtab` of a 64-bit little-endian ELF vmlinux: functions
    /// and untyped symbols in executable sections, sized by `st_size` when it is not zero.
    /// Only the headers and those two sections are read. Throws a one-line error for a
    /// stripped or malformed file.
    public init(elfFile path: String) throws(KernelSymbolsError) {
        self = try Self(elf: KernelFile(path: path))
    }

    fileprivate init(elf file: borrowing KernelFile) throws(KernelSymbolsError) {
        let image = try ELFImage(file)
        let path = file.path
        guard let symtabIndex = image.sections.firstIndex(where: { $0.type == ELFImage.SectionType.symtab }) else {
            throw KernelSymbolsError(.noSymbolTable, "\(path): no symbol table (.symtab); the file is stripped, give its System.map")
        }
        let symtab = image.sections[symtabIndex]
        guard symtab.link < image.sections.count else {
            throw KernelSymbolsError(.malformedELF, "\(path): malformed ELF: the symbol table's string table is section \(symtab.link), but there are \(image.sections.count) sections")
        }
        let strtab = image.sections[Int(symtab.link)]
        guard strtab.type == ELFImage.SectionType.strtab else {
            throw KernelSymbolsError(.malformedELF, "\(path): malformed ELF: section \(symtab.link), the symbol table's string table, is not a string table")
        }
        guard symtab.entrySize == ELFImage.symbolSize || symtab.entrySize == 0 else {
            throw KernelSymbolsError(.malformedELF, "\(path): malformed ELF: symbol table entries of \(symtab.entrySize) bytes, expected 24")
        }
        guard symtab.size <= Self.elfSymbolDataLimit, strtab.size <= Self.elfSymbolDataLimit - symtab.size else {
            throw KernelSymbolsError(.tooLarge, "\(path): the symbol and string tables are over the \(Self.elfSymbolDataLimit >> 20) MiB limit")
        }
        let symbols = try image.contents(of: symtab, named: "symbol table", in: file)
        let strings = try image.contents(of: strtab, named: "string table", in: file)

        var builder = SymbolTableBuilder()
        for section in image.sections where section.flags & ELFImage.flagAlloc != 0 {
            builder.addBoundary(section.address)
            let (end, overflow) = section.address.addingReportingOverflow(section.size)
            if !overflow { builder.addBoundary(end) }
        }
        let symbolCount = symbols.count / ELFImage.symbolSize
        for index in 1 ..< max(symbolCount, 1) {
            let at = index * ELFImage.symbolSize
            let nameOffset = Int(readLE(symbols, at, 4))
            let info = symbols[at + 4]
            let sectionIndex = Int(readLE(symbols, at + 6, 2))
            let value = readLE(symbols, at + 8, 8)
            let size = readLE(symbols, at + 16, 8)
            // Undefined (0), absolute, common and extended indices (0xff00 and up) are not code.
            guard sectionIndex != 0, sectionIndex < 0xFF00, sectionIndex < image.sections.count else { continue }
            let section = image.sections[sectionIndex]
            guard section.flags & ELFImage.flagAlloc != 0 else { continue }
            builder.addBoundary(value)
            let type = info & 0xF
            guard section.flags & ELFImage.flagExecute != 0, type == 0 || type == 2 else { continue }  // NOTYPE, FUNC
            guard let name = cString(in: strings, at: nameOffset), isAcceptableName(name) else { continue }
            let binding: SymbolRank.Binding = switch info >> 4 {
            case 0: .local
            case 2: .weak
            default: .global
            }
            builder.addText(address: value, name: name, binding: binding, size: size)
        }
        guard let built = builder.build() else {
            throw KernelSymbolsError(.noTextSymbols, "\(path): the symbol table has no text symbols")
        }
        self = built
    }
}

/// The NUL-terminated string at `offset`, at most `maximumNameLength` bytes; nil if it is
/// out of range or unterminated.
private func cString(in strings: [UInt8], at offset: Int) -> ArraySlice<UInt8>? {
    guard offset >= 0, offset < strings.count else { return nil }
    let limit = min(strings.count, offset + KernelSymbols.maximumNameLength + 1)
    guard let end = strings[offset ..< limit].firstIndex(of: 0) else { return nil }
    return strings[offset ..< end]
}

/// A little-endian integer of `width` bytes at `at`; the caller checked the range.
func readLE(_ bytes: [UInt8], _ at: Int, _ width: Int) -> UInt64 {
    var value: UInt64 = 0
    for k in stride(from: width - 1, through: 0, by: -1) {
        value = value << 8 | UInt64(bytes[at + k])
    }
    return value
}

/// The section headers of a 64-bit little-endian ELF file, checked against the file's size.
struct ELFImage {
    struct Section {
        var type: UInt32
        var flags: UInt64
        var address: UInt64
        var offset: UInt64
        var size: UInt64
        var link: UInt32
        var entrySize: UInt64
    }

    enum SectionType {
        static let symtab: UInt32 = 2
        static let strtab: UInt32 = 3
        static let nobits: UInt32 = 8
    }

    static let flagAlloc: UInt64 = 0x2
    static let flagExecute: UInt64 = 0x4
    static let symbolSize = 24
    static let headerSize = 64
    static let sectionHeaderSize = 64
    /// Section header tables past this are nonsense (vmlinux has about 40 sections).
    static let maximumSections = 1 << 16

    var sections: [Section]

    static func hasMagic(_ head: [UInt8]) -> Bool {
        head.count >= 4 && head[0] == 0x7F && head[1] == UInt8(ascii: "E") && head[2] == UInt8(ascii: "L") && head[3] == UInt8(ascii: "F")
    }

    init(_ file: borrowing KernelFile) throws(KernelSymbolsError) {
        let path = file.path
        func malformed(_ why: String) -> KernelSymbolsError {
            KernelSymbolsError(.malformedELF, "\(path): malformed ELF: \(why)")
        }
        let fileSize = file.size
        let header = try file.read(at: 0, count: Int(min(fileSize, UInt64(Self.headerSize))))
        guard Self.hasMagic(header) else {
            throw KernelSymbolsError(.unsupportedELF, "\(path): not an ELF file")
        }
        guard header.count == Self.headerSize else {
            throw malformed("\(fileSize) bytes, shorter than an ELF header")
        }
        guard header[4] == 2, header[5] == 1 else {
            throw KernelSymbolsError(.unsupportedELF, "\(path): not a 64-bit little-endian ELF file")
        }
        let fileType = readLE(header, 0x10, 2)
        guard fileType == 2 || fileType == 3 else {
            throw KernelSymbolsError(.unsupportedELF, "\(path): ELF type \(fileType) is not an executable (a module or object file has no final addresses)")
        }
        let tableOffset = readLE(header, 0x28, 8)
        let entrySize = Int(readLE(header, 0x3A, 2))
        var count = Int(readLE(header, 0x3C, 2))
        guard tableOffset != 0 else {
            throw KernelSymbolsError(.noSymbolTable, "\(path): no section headers, so no symbol table")
        }
        guard entrySize >= Self.sectionHeaderSize else {
            throw malformed("section headers of \(entrySize) bytes, expected 64")
        }
        func checkRange(_ offset: UInt64, _ length: UInt64, _ what: String) throws(KernelSymbolsError) {
            let (end, overflow) = offset.addingReportingOverflow(length)
            guard !overflow, end <= fileSize else {
                throw malformed("\(what) at 0x\(String(offset, radix: 16)), 0x\(String(length, radix: 16)) bytes, ends past the end of the file (0x\(String(fileSize, radix: 16)) bytes)")
            }
        }
        if count == 0 {
            // Extended numbering: the real count is in section 0's sh_size.
            try checkRange(tableOffset, UInt64(Self.sectionHeaderSize), "the section header table")
            let first = try file.read(at: tableOffset, count: Self.sectionHeaderSize)
            let extended = readLE(first, 32, 8)
            guard extended <= UInt64(Self.maximumSections) else { throw malformed("\(extended) sections") }
            count = Int(extended)
        }
        let tableSize = UInt64(count) * UInt64(entrySize)
        guard tableSize <= UInt64(Self.maximumSections * Self.sectionHeaderSize) else {
            throw malformed("a section header table of \(tableSize) bytes")
        }
        try checkRange(tableOffset, tableSize, "the section header table")
        let table = try file.read(at: tableOffset, count: Int(tableSize))
        sections = (0 ..< count).map { index in
            let at = index * entrySize
            return Section(type: UInt32(readLE(table, at + 4, 4)), flags: readLE(table, at + 8, 8),
                           address: readLE(table, at + 16, 8), offset: readLE(table, at + 24, 8),
                           size: readLE(table, at + 32, 8), link: UInt32(readLE(table, at + 40, 4)),
                           entrySize: readLE(table, at + 56, 8))
        }
        for (index, section) in sections.enumerated()
        where section.type == SectionType.symtab || section.type == SectionType.strtab {
            try checkRange(section.offset, section.size, "section \(index)")
        }
    }

    /// The bytes of a section whose range was checked by `init`.
    func contents(of section: Section, named what: String, in file: borrowing KernelFile) throws(KernelSymbolsError) -> [UInt8] {
        guard section.size <= UInt64(Int.max), section.offset <= file.size, section.size <= file.size - section.offset else {
            throw KernelSymbolsError(.malformedELF, "\(file.path): malformed ELF: the \(what) ends past the end of the file")
        }
        return try file.read(at: section.offset, count: Int(section.size))
    }

    /// Whether the file at `path` is an ELF file with a non-empty symbol table.
    static func hasSymbolTable(_ path: String) -> Bool {
        guard let file = try? KernelFile(path: path), let image = try? ELFImage(file) else { return false }
        return image.sections.contains { $0.type == SectionType.symtab && $0.size >= UInt64(2 * symbolSize) }
    }
}
