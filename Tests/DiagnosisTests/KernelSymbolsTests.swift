import Foundation
import Testing
import TestSupport
@testable import Diagnosis

// MARK: - Helpers

/// A fresh directory under the system temporary directory, removed by `remove()`.
private struct TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "kite-symbols-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let file = path + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }

    func write(_ name: String, _ text: String) throws -> String {
        try write(name, Array(text.utf8))
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

private func expectError(_ kind: KernelSymbolsError.Kind, _ body: () throws(KernelSymbolsError) -> KernelSymbols,
                         sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        let symbols = try body()
        Issue.record("expected a \(kind) error, got \(symbols.count) symbols", sourceLocation: sourceLocation)
    } catch {
        #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        #expect(!error.description.contains("\n"), sourceLocation: sourceLocation)
    }
}

/// A small System.map with the usual features: percpu absolute symbols, aliases at the
/// kernel's start, data inside the text, _etext, and lines that must be skipped.
private let sampleMap = """
0000000000000000 A __per_cpu_start
0000000000001000 A cpu_debug_store
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff81000070 T secondary_startup_64
ffffffff81000100 t __do_sys_getuid16
ffffffff81000100 T __x64_sys_getuid16
ffffffff81000100 T __ia32_sys_getuid16
ffffffff81000160 W weak_alias
ffffffff81000160 t strong_local
ffffffff810001a0 T __pfx_padded
ffffffff810001a0 t padded
ffffffff81000200 t helper
ffffffff81000240 r rodata_in_text
ffffffff81000300 T entry_SYSCALL_64
ffffffff81000340 T __entry_text_end
ffffffff81000340 T last_function
ffffffff81000400 T __indirect_thunk_end
ffffffff81000400 T _etext
ffffffff82000000 D __start_rodata
this line is not a symbol
ffffffff8100zzzz T broken_address
ffffffff81000500 TT two_letter_type
1ffffffff81000500 T seventeen_digits
ffffffff81000500 T
ffffffff81000500 T bad\u{1B}[31mname
ffffffff81000600 w
"""

// MARK: - System.map

@Test func systemMapDescribesStartMiddleAndEnd() throws {
    let symbols = try KernelSymbols(systemMap: sampleMap)
    #expect(symbols.describe(0xFFFF_FFFF_8100_0000) == "startup_64+0x0/0x70")
    #expect(symbols.describe(0xFFFF_FFFF_8100_0010) == "startup_64+0x10/0x70")
    #expect(symbols.describe(0xFFFF_FFFF_8100_006F) == "startup_64+0x6f/0x70")
    #expect(symbols.describe(0xFFFF_FFFF_8100_0070) == "secondary_startup_64+0x0/0x90")
    #expect(symbols.describe(0xFFFF_FFFF_8100_0220) == "helper+0x20/0x40")
    // The last function ends at the marker after it, so _etext is outside the text.
    #expect(symbols.describe(0xFFFF_FFFF_8100_03FF) == "last_function+0xbf/0xc0")
    #expect(symbols.describe(0xFFFF_FFFF_8100_0400) == nil)
    #expect(symbols.describe(0xFFFF_FFFF_8100_0500) == nil)
    #expect(symbols.describe(0xFFFF_FFFF_8200_0000) == nil)
    // Before the first text symbol.
    #expect(symbols.describe(0xFFFF_FFFF_80FF_FFFF) == nil)
    #expect(symbols.describe(0) == nil)
    #expect(symbols.describe(0x1000) == nil)
}

@Test func systemMapSymbolEndsAtTheNextDataSymbol() throws {
    let symbols = try KernelSymbols(systemMap: sampleMap)
    // helper ends where rodata_in_text begins; that range belongs to no function.
    #expect(symbols.describe(0xFFFF_FFFF_8100_023F) == "helper+0x3f/0x40")
    #expect(symbols.describe(0xFFFF_FFFF_8100_0240) == nil)
    #expect(symbols.describe(0xFFFF_FFFF_8100_02FF) == nil)
    #expect(symbols.symbol(at: 0xFFFF_FFFF_8100_0301) == .init(name: "entry_SYSCALL_64", offset: 1, size: 0x40))
}

@Test func systemMapAliasesPrintAsTheKernelDoes() throws {
    let symbols = try KernelSymbols(systemMap: sampleMap)
    // Markers and more leading underscores lose: startup_64, not _stext or _text.
    #expect(symbols.describe(0xFFFF_FFFF_8100_0004) == "startup_64+0x4/0x70")
    // Equal underscores: the nm order (by name), whatever the binding, as scripts/kallsyms.c sorts.
    #expect(symbols.describe(0xFFFF_FFFF_8100_0104) == "__do_sys_getuid16+0x4/0x60")
    // Weak loses to strong.
    #expect(symbols.describe(0xFFFF_FFFF_8100_0160) == "strong_local+0x0/0x40")
    // __pfx_ preambles lose to the real name.
    #expect(symbols.describe(0xFFFF_FFFF_8100_01A8) == "padded+0x8/0x60")
    // A linker-script marker loses to a function.
    #expect(symbols.describe(0xFFFF_FFFF_8100_0340) == "last_function+0x0/0xc0")
    // Fewer leading underscores win before the name order does.
    let underscores = try KernelSymbols(systemMap: "ffffffff81000000 T __a_alias\nffffffff81000000 t b_function\nffffffff81000010 T next\n")
    #expect(underscores.describe(0xFFFF_FFFF_8100_0001) == "b_function+0x1/0x10")
}

@Test func systemMapKeepsOnlyWellFormedTextLines() throws {
    let symbols = try KernelSymbols(systemMap: sampleMap)
    // 17 text lines are well formed; the A, r and D lines and the 7 malformed ones are not kept.
    #expect(symbols.count == 17)
    #expect(symbols.address(of: "startup_64") == 0xFFFF_FFFF_8100_0000)
    #expect(symbols.address(of: "_etext") == 0xFFFF_FFFF_8100_0400)
    #expect(symbols.address(of: "weak_alias") == 0xFFFF_FFFF_8100_0160)
    #expect(symbols.address(of: "rodata_in_text") == nil)
    #expect(symbols.address(of: "__per_cpu_start") == nil)
    #expect(symbols.address(of: "broken_address") == nil)
    #expect(symbols.address(of: "two_letter_type") == nil)
    #expect(symbols.address(of: "seventeen_digits") == nil)
    #expect(symbols.address(of: "bad\u{1B}[31mname") == nil)
    #expect(symbols.address(of: "startup") == nil)
    #expect(symbols.address(of: "") == nil)
}

@Test func systemMapAcceptsCRLFTabsAndKallsymsModules() throws {
    let text = "ffffffff81000000 T first\r\nffffffff81000010\tt\tsecond\r\n"
        + "ffffffffc0001000 t module_func\t[kvm]\nffffffffc0001080 t module_next\t[kvm]\n"
    let symbols = try KernelSymbols(systemMap: text)
    #expect(symbols.count == 4)
    #expect(symbols.describe(0xFFFF_FFFF_8100_0008) == "first+0x8/0x10")
    #expect(symbols.describe(0xFFFF_FFFF_C000_1010) == "module_func+0x10/0x80")
    // The last symbol of all has no known end: only its own address resolves.
    #expect(symbols.describe(0xFFFF_FFFF_C000_1080) == "module_next+0x0/0x0")
    #expect(symbols.describe(0xFFFF_FFFF_C000_1081) == nil)
}

@Test func systemMapPicksTheGlobalOfTwoSameNamedSymbols() throws {
    let symbols = try KernelSymbols(systemMap: """
        ffffffff81000000 t cleanup
        ffffffff81000100 T cleanup
        ffffffff81000200 t cleanup
        ffffffff81000300 t other
        """)
    #expect(symbols.address(of: "cleanup") == 0xFFFF_FFFF_8100_0100)
    let locals = try KernelSymbols(systemMap: "ffffffff81000200 t cleanup\nffffffff81000000 t cleanup\n")
    #expect(locals.address(of: "cleanup") == 0xFFFF_FFFF_8100_0000)
}

@Test func systemMapUnsortedInputIsSorted() throws {
    let symbols = try KernelSymbols(systemMap: """
        ffffffff81000200 T c
        ffffffff81000000 T a
        ffffffff81000100 T b
        ffffffff81000300 d data
        """)
    #expect(symbols.describe(0xFFFF_FFFF_8100_0005) == "a+0x5/0x100")
    #expect(symbols.describe(0xFFFF_FFFF_8100_0105) == "b+0x5/0x100")
    #expect(symbols.describe(0xFFFF_FFFF_8100_0205) == "c+0x5/0x100")
}

@Test func systemMapWithoutTextSymbolsThrows() {
    expectError(.noTextSymbols) { () throws(KernelSymbolsError) in try KernelSymbols(systemMap: "") }
    // Debian's /boot/System.map stub.
    expectError(.noTextSymbols) { () throws(KernelSymbolsError) in
        try KernelSymbols(systemMap: "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n")
    }
    expectError(.noTextSymbols) { () throws(KernelSymbolsError) in
        try KernelSymbols(systemMap: "0000000000000000 w undefined_weak\nffffffff82000000 D data\n")
    }
}

// MARK: - KASLR

@Test func kaslrOffsetRoundTrip() throws {
    let symbols = try KernelSymbols(systemMap: sampleMap)
    let offset: UInt64 = 0x1E00_0000
    let lstar = 0xFFFF_FFFF_8100_0300 + offset
    #expect(symbols.kaslrOffset(runtimeAddress: lstar, of: "entry_SYSCALL_64") == offset)
    #expect(symbols.describe(runtime: 0xFFFF_FFFF_9F00_0021, kaslrOffset: offset) == "startup_64+0x21/0x70")
    #expect(symbols.describe(runtime: lstar + 0x3F, kaslrOffset: offset) == "entry_SYSCALL_64+0x3f/0x40")
    #expect(symbols.describe(runtime: 0xFFFF_FFFF_8100_0021, kaslrOffset: offset) == nil)
    // No KASLR.
    #expect(symbols.kaslrOffset(runtimeAddress: 0xFFFF_FFFF_8100_0300, of: "entry_SYSCALL_64") == 0)
    #expect(symbols.describe(runtime: 0xFFFF_FFFF_8100_0021, kaslrOffset: 0) == "startup_64+0x21/0x70")
}

@Test func kaslrOffsetRejectsUnknownSymbolsAndImplausibleOffsets() throws {
    let symbols = try KernelSymbols(systemMap: sampleMap)
    #expect(symbols.kaslrOffset(runtimeAddress: 0xFFFF_FFFF_9F00_0300, of: "no_such_symbol") == nil)
    // LSTAR still 0 in early boot, and an address that is not 2 MiB away from the link address.
    #expect(symbols.kaslrOffset(runtimeAddress: 0, of: "entry_SYSCALL_64") == nil)
    #expect(symbols.kaslrOffset(runtimeAddress: 0xFFFF_FFFF_9F00_0310, of: "entry_SYSCALL_64") == nil)
}

@Test func kaslrOffsetFromThePanicLine() {
    #expect(KernelSymbols.kaslrOffset(fromConsoleLine:
        "[   12.345678] Kernel Offset: 0x1e000000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)")
        == 0x1E00_0000)
    #expect(KernelSymbols.kaslrOffset(fromConsoleLine: "Kernel Offset: disabled") == 0)
    #expect(KernelSymbols.kaslrOffset(fromConsoleLine: "Kernel Offset: 0x") == nil)
    #expect(KernelSymbols.kaslrOffset(fromConsoleLine: "Kernel Offset: 0x11112222333344445") == nil)
    #expect(KernelSymbols.kaslrOffset(fromConsoleLine: "Kernel panic - not syncing: Fatal exception") == nil)
}

// MARK: - The excerpt of the Debian 6.1.0-56-cloud-amd64 map

private func excerptPath() throws -> String {
    let url = try #require(Bundle.module.url(forResource: "System.map-excerpt", withExtension: nil, subdirectory: "Fixtures"))
    return url.path
}

@Test func debianExcerptResolvesTheStuckIPISender() throws {
    let symbols = try KernelSymbols(contentsOf: excerptPath())
    #expect(symbols.count == 200)
    let function = try #require(symbols.address(of: "smp_call_function_many_cond"))
    #expect(function == 0xFFFF_FFFF_8116_08F0)
    #expect(symbols.describe(function + 0xF1) == "smp_call_function_many_cond+0xf1/0x330")
    #expect(symbols.describe(0xFFFF_FFFF_8116_0C20) == "smp_call_function_many+0x0/0x10")
    let offset: UInt64 = 0x3A0_0000
    #expect(symbols.kaslrOffset(runtimeAddress: function + offset, of: "smp_call_function_many_cond") == offset)
    #expect(symbols.describe(runtime: function + offset + 0xF1, kaslrOffset: offset) == "smp_call_function_many_cond+0xf1/0x330")
    // The kernel's kallsyms table lists __do_sys_getuid16 first of its three aliases.
    #expect(symbols.describe(0xFFFF_FFFF_8116_1E65) == "__do_sys_getuid16+0x5/0x60")
    #expect(symbols.describe(0xFFFF_FFFF_8115_9BEF) == nil)
}

// MARK: - ELF

/// A minimal ELF64 vmlinux: .text, .data, .symtab, .strtab, .shstrtab, section headers last.
struct SyntheticELF {
    struct Symbol {
        var name: String
        var info: UInt8
        var section: UInt16
        var value: UInt64
        var size: UInt64
    }

    static let textAddress: UInt64 = 0xFFFF_FFFF_8100_0000
    static let funcGlobal: UInt8 = 0x12, funcLocal: UInt8 = 0x02, funcWeak: UInt8 = 0x22
    static let notypeGlobal: UInt8 = 0x10, objectGlobal: UInt8 = 0x11

    var bytes: [UInt8] = []
    var sectionHeaderOffset = 0

    static let defaultSymbols: [Symbol] = [
        Symbol(name: "_text", info: notypeGlobal, section: 1, value: textAddress, size: 0),
        Symbol(name: "startup_64", info: funcGlobal, section: 1, value: textAddress, size: 0x40),
        Symbol(name: "do_thing", info: funcLocal, section: 1, value: textAddress + 0x40, size: 0x30),
        Symbol(name: "asm_label", info: notypeGlobal, section: 1, value: textAddress + 0x80, size: 0),
        Symbol(name: "last_func", info: funcWeak, section: 1, value: textAddress + 0xC0, size: 0x20),
        Symbol(name: "some_data", info: objectGlobal, section: 2, value: 0xFFFF_FFFF_8200_0000, size: 8),
        Symbol(name: "undefined", info: notypeGlobal, section: 0, value: 0, size: 0),
        Symbol(name: "absolute", info: notypeGlobal, section: 0xFFF1, value: textAddress + 0x10, size: 0),
        Symbol(name: "bad_section", info: funcGlobal, section: 77, value: textAddress + 0x10, size: 4),
        Symbol(name: "", info: funcGlobal, section: 1, value: textAddress + 0x20, size: 4),
    ]

    init(symbols: [Symbol] = SyntheticELF.defaultSymbols, badNameOffset: Bool = true) {
        func le(_ value: UInt64, _ width: Int) -> [UInt8] { (0 ..< width).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        func pad() { while bytes.count % 8 != 0 { bytes.append(0) } }

        var strtab: [UInt8] = [0]
        var symtab = [UInt8](repeating: 0, count: 24)
        for symbol in symbols {
            let nameOffset = symbol.name.isEmpty ? 0 : strtab.count
            strtab += Array(symbol.name.utf8) + [0]
            symtab += le(UInt64(nameOffset), 4) + [symbol.info, 0] + le(UInt64(symbol.section), 2)
                + le(symbol.value, 8) + le(symbol.size, 8)
        }
        if badNameOffset {  // a function whose name lies past the string table
            symtab += le(0xFFFF, 4) + [Self.funcGlobal, 0] + le(1, 2) + le(Self.textAddress + 0x30, 8) + le(4, 8)
        }
        let names = ["", ".text", ".data", ".symtab", ".strtab", ".shstrtab"]
        var shstrtab: [UInt8] = []
        var nameOffsets: [Int] = []
        for name in names {
            nameOffsets.append(shstrtab.count)
            shstrtab += Array(name.utf8) + [0]
        }

        bytes = [UInt8](repeating: 0, count: 64)
        let textOffset = bytes.count
        bytes += [UInt8](repeating: 0xCC, count: 0x100)
        let symtabOffset = bytes.count
        bytes += symtab
        let strtabOffset = bytes.count
        bytes += strtab
        let shstrtabOffset = bytes.count
        bytes += shstrtab
        pad()
        sectionHeaderOffset = bytes.count

        // (type, flags, address, offset, size, link, info, entsize)
        let sections: [(UInt32, UInt64, UInt64, Int, Int, UInt32, UInt32, UInt64)] = [
            (0, 0, 0, 0, 0, 0, 0, 0),
            (1, 0x6, Self.textAddress, textOffset, 0x100, 0, 0, 0),
            (1, 0x3, 0xFFFF_FFFF_8200_0000, textOffset, 0x10, 0, 0, 0),
            (2, 0, 0, symtabOffset, symtab.count, 4, 1, 24),
            (3, 0, 0, strtabOffset, strtab.count, 0, 0, 0),
            (3, 0, 0, shstrtabOffset, shstrtab.count, 0, 0, 0),
        ]
        for (index, s) in sections.enumerated() {
            bytes += le(UInt64(nameOffsets[index]), 4) + le(UInt64(s.0), 4) + le(s.1, 8) + le(s.2, 8)
                + le(UInt64(s.3), 8) + le(UInt64(s.4), 8) + le(UInt64(s.5), 4) + le(UInt64(s.6), 4) + le(8, 8) + le(s.7, 8)
        }

        // ELF header: 64-bit, little-endian, ET_EXEC, x86-64.
        var header: [UInt8] = [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8)
        header += le(2, 2) + le(62, 2) + le(1, 4) + le(Self.textAddress, 8) + le(0, 8)
        header += le(UInt64(sectionHeaderOffset), 8) + le(0, 4) + le(64, 2) + le(0, 2) + le(0, 2)
        header += le(64, 2) + le(UInt64(sections.count), 2) + le(5, 2)
        bytes.replaceSubrange(0 ..< 64, with: header)
    }

    /// Overwrites `width` bytes at `offset` with `value`, little-endian.
    mutating func patch(_ offset: Int, _ value: UInt64, width: Int) {
        for k in 0 ..< width { bytes[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
    }

    /// The offset of a field of section `index`'s header: 24 sh_offset, 32 sh_size, 40 sh_link.
    func sectionField(_ index: Int, _ field: Int) -> Int { sectionHeaderOffset + index * 64 + field }
}

@Test func elfSymbolTableDescribesFunctions() throws {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    let path = try directory.write("vmlinux", SyntheticELF().bytes)
    for symbols in [try KernelSymbols(elfFile: path), try KernelSymbols(contentsOf: path)] {
        // _text, startup_64, do_thing, asm_label, last_func; not data, undefined, absolute,
        // out-of-range section, unnamed or badly named symbols.
        #expect(symbols.count == 5)
        #expect(symbols.describe(0xFFFF_FFFF_8100_0000) == "startup_64+0x0/0x40")
        #expect(symbols.describe(0xFFFF_FFFF_8100_003F) == "startup_64+0x3f/0x40")
        #expect(symbols.describe(0xFFFF_FFFF_8100_0045) == "do_thing+0x5/0x30")
        // Past do_thing's st_size: padding before asm_label.
        #expect(symbols.describe(0xFFFF_FFFF_8100_0075) == nil)
        // An untyped label without a size ends at the next symbol.
        #expect(symbols.describe(0xFFFF_FFFF_8100_00A0) == "asm_label+0x20/0x40")
        #expect(symbols.describe(0xFFFF_FFFF_8100_00DF) == "last_func+0x1f/0x20")
        #expect(symbols.describe(0xFFFF_FFFF_8100_00E0) == nil)
        #expect(symbols.describe(0xFFFF_FFFF_80FF_FFFF) == nil)
        #expect(symbols.address(of: "last_func") == 0xFFFF_FFFF_8100_00C0)
        #expect(symbols.address(of: "some_data") == nil)
        #expect(symbols.address(of: "absolute") == nil)
        #expect(symbols.address(of: "bad_section") == nil)
    }
}

@Test func elfUntypedSymbolEndsAtItsSectionsEnd() throws {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    let elf = SyntheticELF(symbols: [
        .init(name: "entry", info: SyntheticELF.notypeGlobal, section: 1, value: SyntheticELF.textAddress + 0xF0, size: 0),
    ], badNameOffset: false)
    let symbols = try KernelSymbols(elfFile: directory.write("vmlinux", elf.bytes))
    #expect(symbols.describe(0xFFFF_FFFF_8100_00FF) == "entry+0xf/0x10")
    #expect(symbols.describe(0xFFFF_FFFF_8100_0100) == nil)
}

/// Ways to break the test ELF file, and the error each must give.
enum ELFCorruption: String, CaseIterable, Sendable {
    case truncatedHeader, truncatedInSectionHeaders, sectionHeadersPastEOF, sectionHeaderOffsetOverflows
    case symtabPastEOF, symtabSizeHuge, strtabPastEOF, strtabIndexOutOfRange, strtabIsNotAStringTable
    case symtabEntrySizeWrong, sectionHeaderEntrySizeWrong, bigEndian, thirtyTwoBit, relocatable
    case noSectionHeaders, noSymbolTable, noMagic

    var expected: KernelSymbolsError.Kind {
        switch self {
        case .truncatedHeader, .truncatedInSectionHeaders, .sectionHeadersPastEOF, .sectionHeaderOffsetOverflows,
             .symtabPastEOF, .symtabSizeHuge, .strtabPastEOF, .strtabIndexOutOfRange, .strtabIsNotAStringTable,
             .symtabEntrySizeWrong, .sectionHeaderEntrySizeWrong:
            .malformedELF
        case .bigEndian, .thirtyTwoBit, .relocatable, .noMagic:
            .unsupportedELF
        case .noSectionHeaders, .noSymbolTable:
            .noSymbolTable
        }
    }

    func apply(to elf: inout SyntheticELF) {
        switch self {
        case .truncatedHeader: elf.bytes.removeSubrange(40...)
        case .truncatedInSectionHeaders: elf.bytes.removeSubrange((elf.sectionHeaderOffset + 100)...)
        case .sectionHeadersPastEOF: elf.patch(0x28, UInt64(elf.bytes.count - 64), width: 8)
        case .sectionHeaderOffsetOverflows: elf.patch(0x28, UInt64.max - 10, width: 8)
        case .symtabPastEOF: elf.patch(elf.sectionField(3, 24), UInt64(elf.bytes.count + 24), width: 8)
        case .symtabSizeHuge: elf.patch(elf.sectionField(3, 32), UInt64.max - 7, width: 8)
        case .strtabPastEOF: elf.patch(elf.sectionField(4, 32), UInt64(elf.bytes.count), width: 8)
        case .strtabIndexOutOfRange: elf.patch(elf.sectionField(3, 40), 99, width: 4)
        case .strtabIsNotAStringTable: elf.patch(elf.sectionField(3, 40), 1, width: 4)
        case .symtabEntrySizeWrong: elf.patch(elf.sectionField(3, 56), 16, width: 8)
        case .sectionHeaderEntrySizeWrong: elf.patch(0x3A, 40, width: 2)
        case .bigEndian: elf.bytes[5] = 2
        case .thirtyTwoBit: elf.bytes[4] = 1
        case .relocatable: elf.patch(0x10, 1, width: 2)
        case .noSectionHeaders: elf.patch(0x28, 0, width: 8)
        case .noSymbolTable: elf.patch(elf.sectionField(3, 4), 1, width: 4)
        case .noMagic: elf.bytes[1] = 0
        }
    }
}

@Test(arguments: ELFCorruption.allCases)
func corruptELFThrowsOneLineError(_ corruption: ELFCorruption) throws {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    var elf = SyntheticELF()
    corruption.apply(to: &elf)
    let path = try directory.write("vmlinux", elf.bytes)
    expectError(corruption.expected) { () throws(KernelSymbolsError) in try KernelSymbols(elfFile: path) }
}

@Test func mutatedELFNeverCrashes() throws {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    let original = SyntheticELF().bytes
    var generator = SplitMix64(seed: 0x6B69_7465)
    var parsed = 0
    var failed = 0
    for round in 0 ..< 400 {
        var bytes = original
        for _ in 0 ..< 1 + Int(generator.next() % 8) {
            let at = Int(generator.next() % UInt64(bytes.count))
            bytes[at] = generator.next() % 4 == 0 ? 0xFF : UInt8(truncatingIfNeeded: generator.next())
        }
        if round % 10 == 0 { bytes.removeSubrange(Int(generator.next() % UInt64(bytes.count))...) }
        let path = try directory.write("mutant", bytes)
        do {
            let symbols = try KernelSymbols(elfFile: path)
            _ = symbols.describe(0xFFFF_FFFF_8100_0045)
            parsed += 1
        } catch {
            #expect(!error.description.contains("\n"))
            failed += 1
        }
    }
    #expect(parsed + failed == 400)
    #expect(parsed > 0)
    #expect(failed > 0)
}

// MARK: - Files

/// A bzImage's first 0x1000 bytes: the setup header's "HdrS", the boot protocol version
/// and kernel_version pointing at `version` (at pointer + 0x200).
private func bzImage(version: [UInt8], pointer: UInt16 = 0x400, signature: String = "HdrS", size: Int = 0x1000) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: size)
    bytes[0x1FE] = 0x55
    bytes[0x1FF] = 0xAA
    bytes.replaceSubrange(0x202 ..< 0x206, with: Array(signature.utf8))
    bytes[0x206] = 0x0F
    bytes[0x207] = 0x02
    bytes[0x20E] = UInt8(pointer & 0xFF)
    bytes[0x20F] = UInt8(pointer >> 8)
    let start = Int(pointer) + 0x200
    if start < size {
        let end = min(size, start + version.count)
        bytes.replaceSubrange(start ..< end, with: version[0 ..< (end - start)])
    }
    return bytes
}

private let debianVersion = Array("6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2\0".utf8)

@Test func contentsOfTellsFilesApart() throws {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    let map = try directory.write("System.map", sampleMap)
    #expect(try KernelSymbols(contentsOf: map).count == 17)
    let image = try directory.write("vmlinuz", bzImage(version: debianVersion))
    expectError(.noSymbolTable) { () throws(KernelSymbolsError) in try KernelSymbols(contentsOf: image) }
    let stub = try directory.write("stub", "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n")
    expectError(.noTextSymbols) { () throws(KernelSymbolsError) in try KernelSymbols(contentsOf: stub) }
    let empty = try directory.write("empty", [])
    expectError(.noTextSymbols) { () throws(KernelSymbolsError) in try KernelSymbols(contentsOf: empty) }
    expectError(.unreadable) { () throws(KernelSymbolsError) in try KernelSymbols(contentsOf: directory.path + "/missing") }
    expectError(.unreadable) { () throws(KernelSymbolsError) in try KernelSymbols(contentsOf: directory.path) }
    expectError(.unsupportedELF) { () throws(KernelSymbolsError) in try KernelSymbols(elfFile: map) }
}

@Test func kernelReleaseFromBzImageHeader() throws {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    func release(_ bytes: [UInt8]) throws -> String? {
        KernelSymbolsDiscovery.kernelRelease(ofBzImage: try directory.write("image", bytes))
    }
    #expect(try release(bzImage(version: debianVersion)) == "6.1.0-56-cloud-amd64")
    #expect(try release(bzImage(version: Array("6.8.0-rc1+\0".utf8), pointer: 0x200)) == "6.8.0-rc1+")
    #expect(try release(bzImage(version: debianVersion, signature: "HdrX")) == nil)
    #expect(try release(bzImage(version: debianVersion, pointer: 0)) == nil)
    // The string pointer past the end of the file, and a string running into the end.
    #expect(try release(bzImage(version: debianVersion, pointer: 0xF000)) == nil)
    #expect(try release(bzImage(version: Array("6.1.0-unterminated".utf8), pointer: 0xDEE)) == nil)
    // A release that could climb out of the directory.
    #expect(try release(bzImage(version: Array("../../etc/x (a) #1\0".utf8))) == nil)
    #expect(try release(bzImage(version: Array(" leading-space\0".utf8))) == nil)
    #expect(try release(Array(bzImage(version: debianVersion)[0 ..< 0x208])) == nil)
    #expect(KernelSymbolsDiscovery.kernelRelease(ofBzImage: directory.path + "/missing") == nil)
}

@Test func candidatePathsInOrder() throws {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    let d = directory.path
    // A Debian-named bzImage: its release and its file name agree.
    let debian = try directory.write("vmlinuz-6.1.0-56-cloud-amd64", bzImage(version: debianVersion))
    #expect(KernelSymbolsDiscovery.candidatePaths(forKernel: debian) == [
        d + "/System.map-6.1.0-56-cloud-amd64", "/boot/System.map-6.1.0-56-cloud-amd64",
    ])
    // A renamed bzImage: the release first, then the name.
    let renamed = try directory.write("vmlinuz-custom", bzImage(version: debianVersion))
    #expect(KernelSymbolsDiscovery.candidatePaths(forKernel: renamed) == [
        d + "/System.map-6.1.0-56-cloud-amd64", "/boot/System.map-6.1.0-56-cloud-amd64", d + "/System.map-custom",
    ])
    let bare = try directory.write("bzImage", bzImage(version: debianVersion))
    #expect(KernelSymbolsDiscovery.candidatePaths(forKernel: bare) == [
        d + "/System.map-6.1.0-56-cloud-amd64", "/boot/System.map-6.1.0-56-cloud-amd64",
    ])
    // An unstripped vmlinux is its own symbol file; a stripped one is not.
    let elf = try directory.write("vmlinux-6.6.0-kite", SyntheticELF().bytes)
    #expect(KernelSymbolsDiscovery.candidatePaths(forKernel: elf) == [elf, d + "/System.map-6.6.0-kite"])
    var stripped = SyntheticELF()
    ELFCorruption.noSymbolTable.apply(to: &stripped)
    let strippedPath = try directory.write("vmlinux-6.6.0-stripped", stripped.bytes)
    #expect(KernelSymbolsDiscovery.candidatePaths(forKernel: strippedPath) == [d + "/System.map-6.6.0-stripped"])
    #expect(KernelSymbolsDiscovery.candidatePaths(forKernel: d + "/missing") == [])
    #expect(KernelSymbolsDiscovery.candidatePaths(forKernel: d + "/vmlinuz-") == [])
}

@Test func locateFindsTheMapNextToTheKernel() throws {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    let d = directory.path
    let release = "6.1.0-kite-test-\(UInt32.random(in: 0 ... .max))"
    let kernel = try directory.write("vmlinuz-renamed", bzImage(version: Array("\(release) (me@host) #1 SMP\0".utf8)))
    #expect(KernelSymbolsDiscovery.locate(forKernel: kernel) == nil)

    // Only the map named after the file name.
    let byName = try directory.write("System.map-renamed", sampleMap)
    #expect(KernelSymbolsDiscovery.locate(forKernel: kernel) == byName)
    // The map named after the release wins.
    let byRelease = try directory.write("System.map-" + release, sampleMap)
    #expect(KernelSymbolsDiscovery.locate(forKernel: kernel) == byRelease)
    // Debian's stub is passed over.
    _ = try directory.write("System.map-" + release, "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n")
    #expect(KernelSymbolsDiscovery.locate(forKernel: kernel) == byName)
    // An unreadable candidate (a directory) is passed over too.
    try FileManager.default.removeItem(atPath: byName)
    try FileManager.default.createDirectory(atPath: byName, withIntermediateDirectories: false)
    #expect(KernelSymbolsDiscovery.locate(forKernel: kernel) == nil)

    let elf = try directory.write("vmlinux-x", SyntheticELF().bytes)
    #expect(KernelSymbolsDiscovery.locate(forKernel: elf) == elf)
    #expect(d.hasPrefix("/"))
}
