import Testing
import GuestMemory
@testable import X86Boot

/// A synthetic bzImage: 4 KiB of setup with a valid header, then `payload` bytes of
/// "protected-mode kernel".
func makeBzImage(payload: Int = 0x10000, version: UInt16 = 0x020F, xloadflags: UInt16 = 0x3,
                 initSize: UInt32 = 0x200_0000, cmdlineSize: UInt32 = 2047, sysSize: UInt32? = nil,
                 entryCode: [UInt8]? = nil) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 0x1000 + payload)
    b[0x1F1] = 7                                  // setup_sects: (7 + 1) * 512 = 4 KiB
    b.put(sysSize ?? UInt32(payload / 16), at: 0x1F4)
    b.put(UInt16(0xAA55), at: 0x1FE)
    b[0x200] = 0xEB; b[0x201] = 0x6A              // jmp: header ends at 0x26C
    b.put(UInt32(0x5372_6448), at: 0x202)         // "HdrS"
    b.put(version, at: 0x206)
    b[0x211] = 0x01                               // LOADED_HIGH
    b.put(UInt32(0x7FFF_FFFF), at: 0x22C)         // initrd_addr_max
    b.put(UInt32(0x20_0000), at: 0x230)           // kernel_alignment
    b[0x234] = 1                                  // relocatable
    b.put(xloadflags, at: 0x236)
    b.put(cmdlineSize, at: 0x238)
    b.put(UInt64(0x100_0000), at: 0x258)          // pref_address
    b.put(initSize, at: 0x260)
    for i in 0..<payload { b[0x1000 + i] = UInt8(truncatingIfNeeded: i * 7 + 1) }
    if let entryCode {   // 64-bit code at the boot protocol's 64-bit entry (load address + 0x200)
        for (i, c) in entryCode.enumerated() { b[0x1000 + 0x200 + i] = c }
    }
    return b
}

@Suite struct KernelLoaderTests {
    let memory: GuestMemory
    init() throws { memory = try GuestMemory(layout: GuestLayout.ramRegions(size: 256 << 20)) }

    @Test func bzImageLoadsPerTheBootProtocol() throws {
        let kernel = makeBzImage()
        let initrd = ByteImage([UInt8](repeating: 0xAB, count: 3 << 20))
        let entry = try KernelLoader.load(kernel: ByteImage(kernel), initrd: initrd,
                                          commandLine: "console=ttyS0 quiet", memory: memory, rsdp: 0xE0000)
        #expect(entry == .linux64(rip: 0x100200, bootParams: GuestLayout.zeroPage))
        // Protected-mode kernel at 1 MiB, byte for byte.
        #expect(try memory.read(at: GuestAddress(0x100000), count: 0x10000) == Array(kernel[0x1000...]))
        let zp = try memory.read(at: GuestAddress(GuestLayout.zeroPage), count: 4096)
        #expect(zp.get(UInt32.self, at: 0x202) == 0x5372_6448)        // header copied
        #expect(zp[0x210] == 0xFF)                                      // type_of_loader
        #expect(zp[0x211] & 0x81 == 0x81)                               // LOADED_HIGH | CAN_USE_HEAP
        #expect(zp.get(UInt16.self, at: 0x1FA) == 0xFFFF)
        #expect(zp.get(UInt32.self, at: 0x228) == UInt32(GuestLayout.commandLine))
        #expect(zp.get(UInt64.self, at: 0x070) == 0xE0000)              // acpi_rsdp_addr
        let rdAddr = UInt64(zp.get(UInt32.self, at: 0x218)!)
        #expect(zp.get(UInt32.self, at: 0x21C) == 3 << 20)
        #expect(rdAddr % 4096 == 0)
        #expect(rdAddr + (3 << 20) <= 256 << 20)
        #expect(rdAddr >= 0x100_0000 + 0x200_0000)                      // above the decompression area
        #expect(try memory.read(at: GuestAddress(rdAddr), count: 16) == [UInt8](repeating: 0xAB, count: 16))
        #expect(try memory.read(at: GuestAddress(GuestLayout.commandLine), count: 20)
                == Array("console=ttyS0 quiet".utf8) + [0])
        // e820 in boot_params matches the map.
        let map = E820.map(ramSize: 256 << 20)
        #expect(Int(zp[0x1E8]) == map.count)
        for (i, e) in map.enumerated() {
            #expect(zp.get(UInt64.self, at: 0x2D0 + 20 * i) == e.address)
            #expect(zp.get(UInt64.self, at: 0x2D0 + 20 * i + 8) == e.size)
            #expect(zp.get(UInt32.self, at: 0x2D0 + 20 * i + 16) == e.kind.rawValue)
        }
    }

    @Test func e820DescribesRAMAndTheBIOSArea() {
        let map = E820.map(ramSize: 4 << 30)
        #expect(map[0] == E820Entry(0, 0x9FC00, .ram))
        #expect(map.contains(E820Entry(0xE0000, 0x20000, .reserved)))
        #expect(map.contains(E820Entry(0x100000, GuestLayout.mmioHoleStart - 0x100000, .ram)))
        #expect(map.contains(E820Entry(1 << 32, (4 << 30) - GuestLayout.mmioHoleStart, .ram)))
        let ram = map.filter { $0.kind == .ram }.reduce(0) { $0 + $1.size }
        #expect(ram == (4 << 30) - 0x100000 + 0x9FC00)
        // No two entries overlap.
        let sorted = map.sorted { $0.address < $1.address }
        for (a, b) in zip(sorted, sorted.dropFirst()) { #expect(a.address + a.size <= b.address) }
    }

    @Test func commandLineLimitIsTheKernels() throws {
        let kernel = ByteImage(makeBzImage(cmdlineSize: 255))
        _ = try KernelLoader.load(kernel: kernel, initrd: ByteImage?.none,
                                  commandLine: String(repeating: "a", count: 255), memory: memory, rsdp: 0)
        #expect(throws: BootError.commandLineTooLong(length: 256, maximum: 255)) {
            try KernelLoader.load(kernel: kernel, initrd: ByteImage?.none,
                                  commandLine: String(repeating: "a", count: 256), memory: memory, rsdp: 0)
        }
    }

    @Test func initrdLargerThanRAMIsRefused() throws {
        let initrd = ByteImage([UInt8](repeating: 0, count: 250 << 20))
        #expect(throws: BootError.self) {
            try KernelLoader.load(kernel: ByteImage(makeBzImage()), initrd: initrd,
                                  commandLine: "", memory: memory, rsdp: 0)
        }
        do {
            _ = try KernelLoader.load(kernel: ByteImage(makeBzImage()), initrd: initrd, commandLine: "", memory: memory, rsdp: 0)
        } catch let e as BootError {
            guard case .initrdTooLarge = e else { Issue.record("wrong error \(e)"); return }
            #expect(e.description.contains("raise --memory"))
        }
    }

    @Test func memoryTooSmallForTheKernel() throws {
        let small = try GuestMemory(layout: GuestLayout.ramRegions(size: 32 << 20))
        #expect(throws: BootError.memoryTooSmall(needed: 0x300_0000, have: 32 << 20)) {
            try KernelLoader.load(kernel: ByteImage(makeBzImage()), initrd: ByteImage?.none,
                                  commandLine: "", memory: small, rsdp: 0)
        }
    }

    @Test func badKernelsAreRefused() throws {
        // Not a kernel at all.
        #expect(throws: BootError.self) { try KernelFormat.detect(ByteImage(Array(repeating: 0x41, count: 8192))) }
        // Too small to hold a header.
        #expect(throws: BootError.self) { try KernelFormat.detect(ByteImage([0x7F])) }
        // Truncated: header promises more than the file has.
        var truncated = makeBzImage()
        truncated.removeLast(0x8000)
        #expect(throws: BootError.self) { try BzImage(ByteImage(truncated)) }
        // Corrupt: bad boot flag.
        var corrupt = makeBzImage()
        corrupt[0x1FE] = 0
        #expect(throws: BootError.self) { try BzImage(ByteImage(corrupt)) }
        // Too old for a 64-bit entry, or no 64-bit entry.
        #expect(throws: BootError.self) { try BzImage(ByteImage(makeBzImage(version: 0x020A))) }
        #expect(throws: BootError.self) { try BzImage(ByteImage(makeBzImage(xloadflags: 0))) }
        // init_size smaller than the kernel itself.
        #expect(throws: BootError.self) { try BzImage(ByteImage(makeBzImage(initSize: 0x100))) }
    }

    @Test func detectsFormats() throws {
        #expect(try KernelFormat.detect(ByteImage(makeBzImage())) == .bzImage)
        #expect(try KernelFormat.detect(ByteImage(makeELF())) == .elfPVH)
    }
}

/// A synthetic x86-64 ELF with one PT_LOAD at 16 MiB and a PT_NOTE holding the PVH entry.
func makeELF(entry: UInt32 = 0x100_0040, withNote: Bool = true, loadAddress: UInt64 = 0x100_0000) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 0x2000)
    b[0] = 0x7F; b[1] = 0x45; b[2] = 0x4C; b[3] = 0x46; b[4] = 2; b[5] = 1; b[6] = 1
    b.put(UInt16(2), at: 0x10); b.put(UInt16(0x3E), at: 0x12)
    b.put(UInt64(64), at: 0x20)                   // e_phoff
    b.put(UInt16(56), at: 0x36); b.put(UInt16(withNote ? 2 : 1), at: 0x38)
    // PT_LOAD: file 0x1000..0x1800 -> loadAddress, memsz 0x3000 (rest zeroed)
    b.put(UInt32(1), at: 64); b.put(UInt64(0x1000), at: 64 + 8); b.put(loadAddress, at: 64 + 24)
    b.put(UInt64(0x800), at: 64 + 32); b.put(UInt64(0x3000), at: 64 + 40)
    if withNote {
        // PT_NOTE at 0x800: one unrelated note, then Xen PHYS32_ENTRY.
        let ph = 64 + 56
        b.put(UInt32(4), at: ph); b.put(UInt64(0x800), at: ph + 8); b.put(UInt64(48), at: ph + 32)
        var n = 0x800
        b.put(UInt32(4), at: n); b.put(UInt32(4), at: n + 4); b.put(UInt32(3), at: n + 8)
        b[n + 12] = 0x47; b[n + 13] = 0x4E; b[n + 14] = 0x55            // "GNU\0"
        n += 20
        b.put(UInt32(4), at: n); b.put(UInt32(4), at: n + 4); b.put(UInt32(18), at: n + 8)
        b[n + 12] = 0x58; b[n + 13] = 0x65; b[n + 14] = 0x6E            // "Xen\0"
        b.put(entry, at: n + 16)
    }
    for i in 0..<0x800 { b[0x1000 + i] = 0xCC }
    return b
}

@Suite struct PVHTests {
    @Test func elfLoadsThroughItsPVHNote() throws {
        let memory = try GuestMemory(layout: GuestLayout.ramRegions(size: 128 << 20))
        try memory.write([UInt8](repeating: 0x55, count: 0x3000), at: GuestAddress(0x100_0000))
        let entry = try KernelLoader.load(kernel: ByteImage(makeELF()), initrd: ByteImage([1, 2, 3, 4]),
                                          commandLine: "console=ttyS0", memory: memory, rsdp: 0xE0000)
        #expect(entry == .pvh32(rip: 0x100_0040, startInfo: GuestLayout.pvhStartInfo))
        #expect(try memory.read(at: GuestAddress(0x100_0000), count: 4) == [0xCC, 0xCC, 0xCC, 0xCC])
        #expect(try memory.read(at: GuestAddress(0x100_0800), count: 4) == [0, 0, 0, 0]) // bss zeroed
        let si = try memory.read(at: GuestAddress(GuestLayout.pvhStartInfo), count: 56)
        #expect(si.get(UInt32.self, at: 0) == PVHStartInfo.magic)
        #expect(si.get(UInt32.self, at: 4) == 1)
        #expect(si.get(UInt32.self, at: 12) == 1)                        // one module: the initrd
        #expect(si.get(UInt64.self, at: 24) == GuestLayout.commandLine)
        #expect(si.get(UInt64.self, at: 32) == 0xE0000)
        let modlist = si.get(UInt64.self, at: 16)!
        let rd = try memory.load(UInt64.self, at: GuestAddress(modlist))
        #expect(try memory.read(at: GuestAddress(rd), count: 4) == [1, 2, 3, 4])
        #expect(try memory.load(UInt64.self, at: GuestAddress(modlist + 8)) == 4)
        let memmap = si.get(UInt64.self, at: 40)!
        let count = Int(si.get(UInt32.self, at: 48)!)
        #expect(count == E820.map(ramSize: 128 << 20).count)
        #expect(try memory.load(UInt32.self, at: GuestAddress(memmap + 16)) == 1)   // first entry is RAM
    }

    @Test func elfWithoutPVHNoteIsRefused() {
        #expect(throws: BootError.self) { try ELFKernel(ByteImage(makeELF(withNote: false))) }
    }

    @Test func elfSegmentOutsideRAMIsRefused() throws {
        let memory = try GuestMemory(layout: GuestLayout.ramRegions(size: 64 << 20))
        #expect(throws: BootError.self) {
            try KernelLoader.load(kernel: ByteImage(makeELF(loadAddress: 0x8000_0000)), initrd: ByteImage?.none,
                                  commandLine: "", memory: memory, rsdp: 0)
        }
    }

    @Test func bzImageWithAHostilePreferredAddressIsRefusedNotATrap() throws {
        var kernel = makeBzImage()
        kernel.put(UInt64.max - 0x1000, at: 0x258)    // pref_address + init_size overflows
        let memory = try GuestMemory(layout: GuestLayout.ramRegions(size: 64 << 20))
        #expect(throws: BootError.memoryTooSmall(needed: .max, have: 64 << 20)) {
            try KernelLoader.load(kernel: ByteImage(kernel), initrd: ByteImage?.none, commandLine: "", memory: memory, rsdp: 0)
        }
        // Its one line must not overflow either.
        #expect(BootError.memoryTooSmall(needed: .max, have: 64 << 20).description.contains("17592186044416 MiB"))
    }

    @Test func elfSegmentWhoseEndOverflowsIsRefusedNotATrap() throws {
        let memory = try GuestMemory(layout: GuestLayout.ramRegions(size: 64 << 20))
        #expect(throws: BootError.self) {
            try KernelLoader.load(kernel: ByteImage(makeELF(loadAddress: 0xFFFF_FFFF_FFFF_F000)), initrd: ByteImage?.none,
                                  commandLine: "", memory: memory, rsdp: 0)
        }
    }

    @Test func truncatedELFIsRefused() {
        #expect(throws: BootError.self) { try ELFKernel(ByteImage(Array(makeELF().prefix(0x900)))) }
    }
}
