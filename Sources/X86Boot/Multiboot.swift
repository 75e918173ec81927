import GuestMemory

/// A multiboot (version 1) kernel, as test kernels such as kvm-unit-tests' `.flat` files
/// are: an ELF32 image, or any image whose header carries its load addresses (flag bit 16,
/// the "a.out kludge"), with the multiboot header in its first 8 KiB. Entered in 32-bit
/// protected mode with paging off, EAX = 0x2BADB002 and EBX = the multiboot information.
/// Everything here comes from the file and is checked before a byte reaches guest RAM.
public struct MultibootKernel: Sendable {
    public static let headerMagic: UInt32 = 0x1BAD_B002
    public static let bootloaderMagic: UInt32 = 0x2BAD_B002
    /// The header must lie, 4-byte aligned, within the first 8192 bytes.
    public static let searchLength = 8192

    /// Header flag bits 0-15 are requirements a loader must meet or refuse the kernel.
    public enum Flag {
        public static let alignModules: UInt32 = 1 << 0
        public static let memoryInformation: UInt32 = 1 << 1
        public static let videoMode: UInt32 = 1 << 2
        public static let addressFields: UInt32 = 1 << 16
        /// The required bits Kite meets: modules are page-aligned and memory information is always given.
        public static let supportedRequirements: UInt32 = alignModules | memoryInformation
    }

    public struct Header: Equatable, Sendable {
        /// Where the header starts in the file.
        public var fileOffset: UInt64
        public var flags: UInt32
        /// header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr (flag bit 16).
        public var addresses: [UInt32]?
    }

    public let header: Header
    public let segments: [LoadSegment]
    public let entry: UInt64

    /// The multiboot header in the file's first bytes: magic, flags and checksum summing to 0.
    public static func findHeader(in head: [UInt8]) -> Header? {
        var at = 0
        while at + 12 <= min(head.count, searchLength) {
            if head.get(UInt32.self, at: at) == headerMagic {
                let flags = head.get(UInt32.self, at: at + 4)!
                let checksum = head.get(UInt32.self, at: at + 8)!
                if headerMagic &+ flags &+ checksum == 0 {
                    var addresses: [UInt32]?
                    if flags & Flag.addressFields != 0, at + 32 <= head.count {
                        addresses = (0..<5).map { head.get(UInt32.self, at: at + 12 + $0 * 4)! }
                    }
                    return Header(fileOffset: UInt64(at), flags: flags, addresses: addresses)
                }
            }
            at += 4
        }
        return nil
    }

    /// Whether Kite boots this file as multiboot: a header, and either its address fields or
    /// an ELF32 image to take the segments from. (An ELF64 vmlinux with a multiboot header
    /// is left to PVH, as QEMU refuses 64-bit multiboot ELF too.)
    public static func isMultiboot(_ head: [UInt8]) -> Bool {
        guard let h = findHeader(in: head) else { return false }
        if h.flags & Flag.addressFields != 0 { return true }
        return ELFKernel.isELF(head) && head.count > 4 && head[4] == 1
    }

    public init(_ image: some ImageSource) throws {
        let head = try image.bytes(at: 0, count: Int(min(image.size, UInt64(Self.searchLength))))
        guard let header = Self.findHeader(in: head) else {
            throw BootError.notAKernel("no multiboot header (magic 0x1BADB002 with a valid checksum) in the first 8 KiB")
        }
        let required = header.flags & 0xFFFF
        if required & Flag.videoMode != 0 {
            throw BootError.unsupportedKernel("the multiboot header asks for a video mode (flag bit 2); Kite has no display")
        }
        if required & ~Flag.supportedRequirements != 0 {
            let unknown = String(required & ~Flag.supportedRequirements, radix: 16)
            throw BootError.unsupportedKernel("the multiboot header requires features Kite does not know (flags 0x\(unknown))")
        }
        self.header = header
        if header.flags & Flag.addressFields != 0 {
            guard let a = header.addresses else {
                throw BootError.truncatedKernel("the multiboot header's address fields run past the end of the file")
            }
            (segments, entry) = try Self.fromAddressFields(a, headerOffset: header.fileOffset, fileSize: image.size)
        } else {
            (segments, entry) = try Self.fromELF32(image)
        }
    }

    /// Flag bit 16: the file from `load_addr`'s offset is loaded at `load_addr` up to
    /// `load_end_addr` (0: the end of the file), then zeroed up to `bss_end_addr` (0: none).
    static func fromAddressFields(_ a: [UInt32], headerOffset: UInt64, fileSize: UInt64) throws
        -> ([LoadSegment], UInt64) {
        let (headerAddress, load, loadEnd, bssEnd, entry) = (UInt64(a[0]), UInt64(a[1]), UInt64(a[2]), UInt64(a[3]), UInt64(a[4]))
        guard load <= headerAddress, headerAddress - load <= headerOffset else {
            throw BootError.notAKernel("multiboot load_addr 0x\(hex(load)) does not fit header_addr 0x\(hex(headerAddress)) "
                                       + "and the header's place in the file")
        }
        let fileOffset = headerOffset - (headerAddress - load)
        let available = fileSize - fileOffset
        let fileBytes: UInt64
        if loadEnd == 0 {
            fileBytes = available
        } else {
            guard loadEnd >= load else { throw BootError.notAKernel("multiboot load_end_addr is below load_addr") }
            guard loadEnd - load <= available else {
                throw BootError.truncatedKernel("multiboot load_end_addr 0x\(hex(loadEnd)) is past the end of the file")
            }
            fileBytes = loadEnd - load
        }
        var memoryBytes = fileBytes
        if bssEnd != 0 {
            guard bssEnd >= load + fileBytes else { throw BootError.notAKernel("multiboot bss_end_addr is below the loaded image") }
            memoryBytes = bssEnd - load
        }
        guard entry >= load, entry - load < max(memoryBytes, 1), memoryBytes > 0 else {
            throw BootError.notAKernel("multiboot entry_addr 0x\(hex(entry)) is outside the loaded image")
        }
        return ([LoadSegment(fileOffset: fileOffset, fileSize: fileBytes, address: load, memorySize: memoryBytes)], entry)
    }

    /// An ELF32 i386 image: PT_LOAD segments at their physical addresses; the entry point
    /// translated from virtual to physical through the segment that holds it.
    static func fromELF32(_ image: some ImageSource) throws -> ([LoadSegment], UInt64) {
        guard image.size >= 52 else { throw BootError.truncatedKernel("the ELF32 header needs 52 bytes") }
        let eh = try image.bytes(at: 0, count: 52)
        guard ELFKernel.isELF(eh), eh[4] == 1, eh[5] == 1 else {
            throw BootError.unsupportedKernel("a multiboot kernel without address fields must be a 32-bit little-endian ELF")
        }
        guard eh.get(UInt16.self, at: 0x12) == 3 else { throw BootError.unsupportedKernel("the multiboot ELF is not i386") }
        let entry = UInt64(eh.get(UInt32.self, at: 0x18)!)
        let phoff = UInt64(eh.get(UInt32.self, at: 0x1C)!)
        let phentsize = Int(eh.get(UInt16.self, at: 0x2A)!)
        let phnum = Int(eh.get(UInt16.self, at: 0x2C)!)
        guard phentsize >= 32, phnum > 0, phnum <= 128 else {
            throw BootError.notAKernel("ELF32 program header table is malformed (\(phnum) x \(phentsize) bytes)")
        }
        guard phoff <= image.size, UInt64(phnum * phentsize) <= image.size - phoff else {
            throw BootError.truncatedKernel("ELF32 program headers run past the end of the file")
        }
        let table = try image.bytes(at: phoff, count: phnum * phentsize)
        var segments: [LoadSegment] = []
        var physicalEntry: UInt64?
        for i in 0..<phnum {
            let ph = Array(table[(i * phentsize)..<(i * phentsize + 32)])
            guard ph.get(UInt32.self, at: 0) == 1 else { continue }   // PT_LOAD only
            let offset = UInt64(ph.get(UInt32.self, at: 4)!)
            let virtual = UInt64(ph.get(UInt32.self, at: 8)!)
            let physical = UInt64(ph.get(UInt32.self, at: 12)!)
            let fileSize = UInt64(ph.get(UInt32.self, at: 16)!)
            let memorySize = UInt64(ph.get(UInt32.self, at: 20)!)
            guard memorySize >= fileSize else { throw BootError.notAKernel("ELF32 segment \(i) memsz < filesz") }
            guard offset <= image.size, fileSize <= image.size - offset else {
                throw BootError.truncatedKernel("ELF32 segment \(i) runs past the end of the file")
            }
            if memorySize == 0 { continue }
            segments.append(LoadSegment(fileOffset: offset, fileSize: fileSize, address: physical, memorySize: memorySize))
            if physicalEntry == nil, entry >= virtual, entry - virtual < memorySize {
                physicalEntry = physical + (entry - virtual)
            }
        }
        guard !segments.isEmpty else { throw BootError.notAKernel("ELF32 has no loadable segments") }
        guard let physicalEntry else {
            throw BootError.notAKernel("the ELF32 entry point 0x\(hex(entry)) is outside every loadable segment")
        }
        return (segments, physicalEntry)
    }

    /// The first address above everything the kernel occupies.
    public var kernelEnd: UInt64 { segments.map(\.end).max() ?? 0 }
}

/// The multiboot information block (version 1) and what it points to: the command line,
/// the boot loader's name, one module (the initrd) and the memory map.
public enum MultibootInfo {
    /// Bytes of the block Kite writes (through the VBE fields).
    public static let size = 88
    public static let moduleEntrySize = 16
    public static let memoryMapEntrySize = 24
    public static let bootLoaderName = "Kite"

    public enum Flag {
        public static let memory: UInt32 = 1 << 0
        public static let commandLine: UInt32 = 1 << 2
        public static let modules: UInt32 = 1 << 3
        public static let memoryMap: UInt32 = 1 << 6
        public static let bootLoaderName: UInt32 = 1 << 9
    }

    public struct Module: Equatable, Sendable {
        public var start: UInt64
        public var end: UInt64
        public var name: String
        public init(start: UInt64, end: UInt64, name: String) { self.start = start; self.end = end; self.name = name }
    }

    /// The block at `at` (module list and memory map right after it) and the strings at
    /// `strings`. Returns both, or throws when the strings exceed `stringsRoom`.
    public static func build(at: UInt64, strings: UInt64, stringsRoom: Int, commandLine: String,
                             module: Module?, memoryLower: UInt64, memoryUpper: UInt64,
                             e820: [E820Entry]) throws -> (info: [UInt8], strings: [UInt8]) {
        var text: [UInt8] = []
        func place(_ s: String) -> UInt64 {
            let address = strings + UInt64(text.count)
            text += Array(s.utf8) + [0]
            return address
        }
        let commandLineAt = place(commandLine)
        let nameAt = place(bootLoaderName)
        let moduleNameAt = module.map { place($0.name) }
        guard text.count <= stringsRoom else {
            throw BootError.commandLineTooLong(length: text.count - 1, maximum: stringsRoom - 1)
        }
        let modules = module == nil ? 0 : 1
        let moduleListAt = size
        let mapAt = moduleListAt + modules * moduleEntrySize
        var b = [UInt8](repeating: 0, count: mapAt + e820.count * memoryMapEntrySize)
        b.put(Flag.memory | Flag.commandLine | Flag.modules | Flag.memoryMap | Flag.bootLoaderName, at: 0)
        b.put(UInt32(truncatingIfNeeded: memoryLower >> 10), at: 4)
        b.put(UInt32(truncatingIfNeeded: min(memoryUpper >> 10, UInt64(UInt32.max))), at: 8)
        b.put(UInt32(commandLineAt), at: 16)
        b.put(UInt32(modules), at: 20)
        b.put(UInt32(at) + UInt32(moduleListAt), at: 24)
        b.put(UInt32(e820.count * memoryMapEntrySize), at: 44)
        b.put(UInt32(at) + UInt32(mapAt), at: 48)
        b.put(UInt32(nameAt), at: 64)
        if let module, let moduleNameAt {
            b.put(UInt32(module.start), at: moduleListAt)
            b.put(UInt32(module.end), at: moduleListAt + 4)
            b.put(UInt32(moduleNameAt), at: moduleListAt + 8)
        }
        for (i, e) in e820.enumerated() {
            let o = mapAt + i * memoryMapEntrySize
            b.put(UInt32(memoryMapEntrySize - 4), at: o)   // size of the entry after this field
            b.put(e.address, at: o + 4)
            b.put(e.size, at: o + 12)
            b.put(e.kind.rawValue, at: o + 20)
        }
        return (b, text)
    }
}

func hex(_ v: UInt64) -> String { String(v, radix: 16) }
