import GuestMemory

/// A piece of a kernel file loaded at a guest-physical address: `fileSize` bytes from
/// `fileOffset`, then zeros up to `memorySize` (the bss).
public struct LoadSegment: Equatable, Sendable {
    public var fileOffset: UInt64
    public var fileSize: UInt64
    public var address: UInt64
    public var memorySize: UInt64

    /// The first address past the segment; UInt64.max when a hostile header's address and
    /// size overflow (the loader then refuses the segment instead of trapping).
    public var end: UInt64 {
        let (end, overflow) = address.addingReportingOverflow(memorySize)
        return overflow ? .max : end
    }
}

/// An uncompressed x86-64 ELF vmlinux entered through its PVH note
/// (XEN_ELFNOTE_PHYS32_ENTRY): 32-bit protected mode, paging off, EBX = hvm_start_info.
public struct ELFKernel: Sendable {
    public typealias Segment = LoadSegment

    public static let pvhEntryNoteType: UInt32 = 18 // XEN_ELFNOTE_PHYS32_ENTRY
    public let segments: [Segment]
    public let pvhEntry: UInt64

    public static func isELF(_ first: [UInt8]) -> Bool {
        first.count >= 4 && first[0] == 0x7F && first[1] == 0x45 && first[2] == 0x4C && first[3] == 0x46
    }

    public init(_ image: some ImageSource) throws {
        guard image.size >= 64 else { throw BootError.truncatedKernel("ELF header needs 64 bytes") }
        let eh = try image.bytes(at: 0, count: 64)
        guard Self.isELF(eh) else { throw BootError.notAKernel("no ELF magic") }
        guard eh[4] == 2, eh[5] == 1 else { throw BootError.unsupportedKernel("ELF is not 64-bit little-endian") }
        guard eh.get(UInt16.self, at: 0x12) == 0x3E else { throw BootError.unsupportedKernel("ELF is not x86-64") }
        let phoff = eh.get(UInt64.self, at: 0x20)!
        let phentsize = Int(eh.get(UInt16.self, at: 0x36)!)
        let phnum = Int(eh.get(UInt16.self, at: 0x38)!)
        guard phentsize >= 56, phnum > 0, phnum <= 128 else {
            throw BootError.notAKernel("ELF program header table is malformed (\(phnum) x \(phentsize) bytes)")
        }
        guard phoff <= image.size, UInt64(phnum * phentsize) <= image.size - phoff else {
            throw BootError.truncatedKernel("ELF program headers run past the end of the file")
        }
        let table = try image.bytes(at: phoff, count: phnum * phentsize)
        var segments: [Segment] = []
        var entry: UInt64?
        for i in 0..<phnum {
            let ph = Array(table[(i * phentsize)..<(i * phentsize + 56)])
            let type = ph.get(UInt32.self, at: 0)!
            let offset = ph.get(UInt64.self, at: 8)!
            let fileSize = ph.get(UInt64.self, at: 32)!
            guard offset <= image.size, fileSize <= image.size - offset else {
                throw BootError.truncatedKernel("ELF segment \(i) runs past the end of the file")
            }
            if type == 1 { // PT_LOAD
                let memSize = ph.get(UInt64.self, at: 40)!
                guard memSize >= fileSize else { throw BootError.notAKernel("ELF segment \(i) memsz < filesz") }
                segments.append(Segment(fileOffset: offset, fileSize: fileSize,
                                        address: ph.get(UInt64.self, at: 24)!, memorySize: memSize))
            } else if type == 4, entry == nil, fileSize <= 1 << 20 { // PT_NOTE
                entry = Self.pvhEntry(inNotes: try image.bytes(at: offset, count: Int(fileSize)))
            }
        }
        guard !segments.isEmpty else { throw BootError.notAKernel("ELF has no loadable segments") }
        guard let entry else {
            throw BootError.unsupportedKernel("ELF vmlinux has no PVH entry note (build with CONFIG_PVH=y)")
        }
        self.segments = segments
        self.pvhEntry = entry
    }

    /// Walks an ELF note section for the Xen PHYS32_ENTRY note.
    static func pvhEntry(inNotes notes: [UInt8]) -> UInt64? {
        var at = 0
        func align4(_ n: Int) -> Int { (n + 3) & ~3 }
        while at + 12 <= notes.count {
            let nameSize = Int(notes.get(UInt32.self, at: at)!)
            let descSize = Int(notes.get(UInt32.self, at: at + 4)!)
            let type = notes.get(UInt32.self, at: at + 8)!
            let nameAt = at + 12
            guard nameSize <= notes.count, descSize <= notes.count else { return nil }
            let descAt = nameAt + align4(nameSize)
            guard descAt + descSize <= notes.count else { return nil }
            let name = notes[nameAt..<nameAt + nameSize].prefix { $0 != 0 }
            if Array(name) == Array("Xen".utf8), type == pvhEntryNoteType, descSize >= 4 {
                return UInt64(notes.get(UInt32.self, at: descAt)!)
            }
            at = descAt + align4(descSize)
        }
        return nil
    }

    /// The first address above everything the kernel occupies.
    public var kernelEnd: UInt64 { segments.map(\.end).max() ?? 0 }
}

/// hvm_start_info and its tables (xen/include/public/arch-x86/hvm/start_info.h), version 1.
public enum PVHStartInfo {
    public static let magic: UInt32 = 0x336E_C578
    public static let size = 56
    public static let moduleEntrySize = 32
    public static let memoryMapEntrySize = 24

    /// Bytes for start_info at `at`, with the module list and memory map right after it.
    public static func build(at: UInt64, commandLine: UInt64, initrd: (address: UInt64, size: UInt64)?,
                             rsdp: UInt64, e820: [E820Entry]) -> [UInt8] {
        let modules = initrd == nil ? 0 : 1
        let modlistAt = size
        let memmapAt = modlistAt + modules * moduleEntrySize
        var b = [UInt8](repeating: 0, count: memmapAt + e820.count * memoryMapEntrySize)
        b.put(magic, at: 0)
        b.put(UInt32(1), at: 4)                  // version
        b.put(UInt32(0), at: 8)                  // flags
        b.put(UInt32(modules), at: 12)           // nr_modules
        b.put(modules == 0 ? UInt64(0) : at + UInt64(modlistAt), at: 16)
        b.put(commandLine, at: 24)
        b.put(rsdp, at: 32)
        b.put(at + UInt64(memmapAt), at: 40)
        b.put(UInt32(e820.count), at: 48)
        if let initrd {
            b.put(initrd.address, at: modlistAt)
            b.put(initrd.size, at: modlistAt + 8)
        }
        for (i, e) in e820.enumerated() {
            let o = memmapAt + i * memoryMapEntrySize
            b.put(e.address, at: o)
            b.put(e.size, at: o + 8)
            b.put(e.kind.rawValue, at: o + 16)
        }
        return b
    }
}
