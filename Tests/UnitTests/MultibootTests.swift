import Foundation
import GuestMemory
import KVM
import Testing
@testable import X86Boot

/// An ELF32 i386 image: one program header per segment (PT_LOAD), then (unless the segments
/// carry their own) a multiboot header without address fields, then the segments' data.
/// `virtualOffset` is added to each segment's physical address for p_vaddr.
func makeELF32(segments: [(physical: UInt32, data: [UInt8], memorySize: UInt32)], entry: UInt32,
               machine: UInt16 = 3, virtualOffset: UInt32 = 0, withHeader: Bool = true) -> [UInt8] {
    let headerSize = 52, entrySize = 32
    var b = [UInt8](repeating: 0, count: headerSize + entrySize * segments.count)
    if withHeader { b += Array(multibootHeader(flags: 0x3, addresses: []).prefix(12)) }
    b[0] = 0x7F; b[1] = 0x45; b[2] = 0x4C; b[3] = 0x46
    b[4] = 1; b[5] = 1; b[6] = 1                    // ELFCLASS32, little-endian, version 1
    b.put(UInt16(2), at: 0x10)                      // ET_EXEC
    b.put(machine, at: 0x12)
    b.put(UInt32(1), at: 0x14)
    b.put(entry &+ virtualOffset, at: 0x18)
    b.put(UInt32(headerSize), at: 0x1C)             // e_phoff
    b.put(UInt16(headerSize), at: 0x28)             // e_ehsize
    b.put(UInt16(entrySize), at: 0x2A)
    b.put(UInt16(segments.count), at: 0x2C)
    for (i, s) in segments.enumerated() {
        let ph = headerSize + i * entrySize
        b.put(UInt32(1), at: ph)                    // PT_LOAD
        b.put(UInt32(b.count), at: ph + 4)
        b.put(s.physical &+ virtualOffset, at: ph + 8)
        b.put(s.physical, at: ph + 12)
        b.put(UInt32(s.data.count), at: ph + 16)
        b.put(s.memorySize, at: ph + 20)
        b += s.data
    }
    return b
}

/// The project's multiboot test kernel with flag bit 16 cleared (checksum fixed), wrapped in
/// an ELF32 whose bss runs to the header's bss_end_addr: the ELF path of the same kernel.
func multibootKernelAsELF32(virtualOffset: UInt32 = 0) -> [UInt8] {
    var code = TestKernels.multiboot
    let flags = code.get(UInt32.self, at: 4)! & ~MultibootKernel.Flag.addressFields
    code.put(flags, at: 4)
    code.put(0 &- (MultibootKernel.headerMagic &+ flags), at: 8)
    let load = code.get(UInt32.self, at: 16)!, bssEnd = code.get(UInt32.self, at: 24)!, entry = code.get(UInt32.self, at: 28)!
    // The ELF header comes first in the file, so the multiboot header moves down by the
    // ELF headers' 84 bytes: still 4-byte aligned and within the first 8 KiB.
    return makeELF32(segments: [(load, code, bssEnd - load)], entry: entry, virtualOffset: virtualOffset, withHeader: false)
}

/// A header with address fields: magic, flags, checksum, then header/load/load-end/bss-end/entry.
func multibootHeader(flags: UInt32 = 0x0001_0003, addresses: [UInt32]) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 32)
    b.put(MultibootKernel.headerMagic, at: 0)
    b.put(flags, at: 4)
    b.put(0 &- (MultibootKernel.headerMagic &+ flags), at: 8)
    for (i, a) in addresses.enumerated() { b.put(a, at: 12 + 4 * i) }
    return b
}

@Suite struct MultibootLoaderTests {
    let memory: GuestMemory
    init() throws { memory = try GuestMemory(layout: GuestLayout.ramRegions(size: 128 << 20)) }

    func load(_ kernel: [UInt8], initrd: [UInt8]? = nil, commandLine: String = "", memory: GuestMemory? = nil) throws -> BootEntry {
        try KernelLoader.load(kernel: ByteImage(kernel, name: "/tests/mb.bin"),
                              initrd: initrd.map { ByteImage($0, name: "/tests/env") }, commandLine: commandLine,
                              memory: memory ?? self.memory, rsdp: 0)
    }

    func infoBlock() throws -> [UInt8] { try memory.read(at: GuestAddress(GuestLayout.multibootInfo), count: 512) }

    func string(at address: UInt32) throws -> String {
        let bytes = try memory.read(at: GuestAddress(UInt64(address)), count: 256)
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    @Test func detectsMultibootBesideTheOtherFormats() throws {
        #expect(try KernelFormat.detect(ByteImage(TestKernels.multiboot)) == .multiboot)
        #expect(try KernelFormat.detect(ByteImage(multibootKernelAsELF32())) == .multiboot)
        #expect(try KernelFormat.detect(ByteImage(makeBzImage())) == .bzImage)
        // A bad checksum is no header.
        var bad = TestKernels.multiboot
        bad[8] ^= 1
        #expect(MultibootKernel.findHeader(in: bad) == nil)
        #expect(throws: BootError.self) { try KernelFormat.detect(ByteImage(bad)) }
        // The header must start within the first 8 KiB.
        let late = [UInt8](repeating: 0, count: 8192) + TestKernels.multiboot
        #expect(MultibootKernel.findHeader(in: late) == nil)
        // An ELF64 with a multiboot header but no address fields is left to PVH.
        var elf64 = [UInt8](repeating: 0, count: 128)
        elf64[0] = 0x7F; elf64[1] = 0x45; elf64[2] = 0x4C; elf64[3] = 0x46; elf64[4] = 2; elf64[5] = 1
        elf64.replaceSubrange(64..<96, with: multibootHeader(flags: 0x3, addresses: [0, 0, 0, 0, 0]))
        #expect(try KernelFormat.detect(ByteImage(elf64)) == .elfPVH)
        #expect(KernelFormat.multiboot.defaultCommandLine == "")
        #expect(KernelFormat.bzImage.defaultCommandLine == "console=ttyS0")
    }

    @Test func addressFieldImageLoadsWithItsInformationBlock() throws {
        let kernel = TestKernels.multiboot
        let bssEnd = UInt64(kernel.get(UInt32.self, at: 24)!)
        // Leftovers where the bss goes must be zeroed by the loader.
        let bssStart = 0x100000 + UInt64(kernel.count)
        try memory.write([UInt8](repeating: 0xAA, count: Int(bssEnd - bssStart)), at: GuestAddress(bssStart))
        let module = Array("NR_CPUS=2\n".utf8)
        let entry = try load(kernel, initrd: module, commandLine: "exit=5 -x")
        #expect(entry == .multiboot32(rip: UInt64(kernel.get(UInt32.self, at: 28)!), info: GuestLayout.multibootInfo))
        #expect(try memory.read(at: GuestAddress(0x100000), count: kernel.count) == kernel)
        #expect(try memory.read(at: GuestAddress(bssStart), count: Int(bssEnd - bssStart)).allSatisfy { $0 == 0 })

        let mbi = try infoBlock()
        let flags = mbi.get(UInt32.self, at: 0)!
        for bit in [0, 2, 3, 6, 9] { #expect(flags & (1 << bit) != 0, "flag bit \(bit)") }
        #expect(mbi.get(UInt32.self, at: 4) == 639)                       // mem_lower, KiB below the EBDA
        #expect(mbi.get(UInt32.self, at: 8) == UInt32(127 << 10))         // mem_upper, KiB above 1 MiB
        #expect(try string(at: mbi.get(UInt32.self, at: 16)!) == "/tests/mb.bin exit=5 -x")
        #expect(try string(at: mbi.get(UInt32.self, at: 64)!) == "Kite")
        #expect(mbi.get(UInt32.self, at: 20) == 1)                        // mods_count
        let mods = try memory.read(at: GuestAddress(UInt64(mbi.get(UInt32.self, at: 24)!)), count: 16)
        let start = mods.get(UInt32.self, at: 0)!, end = mods.get(UInt32.self, at: 4)!
        #expect(start % 4096 == 0 && end - start == UInt32(module.count))
        #expect(UInt64(start) >= bssEnd && UInt64(end) <= 128 << 20)
        #expect(try memory.read(at: GuestAddress(UInt64(start)), count: module.count) == module)
        #expect(try string(at: mods.get(UInt32.self, at: 8)!) == "/tests/env")

        // The memory map is the e820 map, 24 bytes an entry (size field 20).
        let map = E820.map(ramSize: 128 << 20)
        #expect(mbi.get(UInt32.self, at: 44) == UInt32(map.count * 24))
        let raw = try memory.read(at: GuestAddress(UInt64(mbi.get(UInt32.self, at: 48)!)), count: map.count * 24)
        for (i, e) in map.enumerated() {
            #expect(raw.get(UInt32.self, at: i * 24) == 20)
            #expect(raw.get(UInt64.self, at: i * 24 + 4) == e.address)
            #expect(raw.get(UInt64.self, at: i * 24 + 12) == e.size)
            #expect(raw.get(UInt32.self, at: i * 24 + 20) == e.kind.rawValue)
        }
        // Everything the block points at is below 1 MiB, so no part of the image can hide it.
        for pointer in [16, 24, 48, 64] { #expect(UInt64(mbi.get(UInt32.self, at: pointer)!) < GuestLayout.kernelLoad) }
    }

    @Test func elf32ImageLoadsAtPhysicalAddressesWithTheEntryTranslated() throws {
        let kernel = multibootKernelAsELF32(virtualOffset: 0xC000_0000)
        let code = TestKernels.multiboot
        let bssEnd = UInt64(code.get(UInt32.self, at: 24)!)
        let bssStart = 0x100000 + UInt64(code.count)
        try memory.write([UInt8](repeating: 0x55, count: Int(bssEnd - bssStart)), at: GuestAddress(bssStart))
        let entry = try load(kernel)
        #expect(entry == .multiboot32(rip: UInt64(code.get(UInt32.self, at: 28)!), info: GuestLayout.multibootInfo))
        #expect(try memory.read(at: GuestAddress(0x100000 + 32), count: code.count - 32) == Array(code[32...]))
        #expect(try memory.read(at: GuestAddress(bssStart), count: Int(bssEnd - bssStart)).allSatisfy { $0 == 0 })
        let mbi = try infoBlock()
        #expect(mbi.get(UInt32.self, at: 20) == 0)                        // no initrd, no module
        #expect(try string(at: mbi.get(UInt32.self, at: 16)!) == "/tests/mb.bin")
    }

    @Test func entryStateIsProtectedModeWithTheMagic() {
        let r = EntryState.registers(for: .multiboot32(rip: 0x100020, info: 0x6000))
        #expect(r.rip == 0x100020 && r.rax == 0x2BAD_B002 && r.rbx == 0x6000)
        #expect(r.rflags & 0x200 == 0)                                    // IF clear
        let s = EntryState.specialRegisters(SpecialRegisters(), for: .multiboot32(rip: 0x100020, info: 0x6000))
        #expect(s.cr0 & 0x8000_0001 == 0x1)                               // PE on, PG off
        #expect(s.cs.db == 1 && s.cs.l == 0 && s.cs.base == 0 && s.cs.limit == 0xFFFF_FFFF)
        #expect(s.ds.base == 0 && s.ds.limit == 0xFFFF_FFFF && s.efer == 0)
    }

    // MARK: hostile images: one error each, nothing written outside guest RAM

    func expectError(_ kernel: [UInt8], _ text: String, memory: GuestMemory? = nil, initrd: [UInt8]? = nil,
                     commandLine: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try load(kernel, initrd: initrd, commandLine: commandLine, memory: memory)
            Issue.record("loaded; expected an error containing '\(text)'", sourceLocation: sourceLocation)
        } catch let e as BootError {
            #expect(e.description.contains(text), "\(e)", sourceLocation: sourceLocation)
            #expect(!e.description.contains("\n"), sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func segmentsOutsideLowRAMOrOverTheBootDataAreRefused() throws {
        let code: [UInt8] = [0xF4]
        expectError(makeELF32(segments: [(0x8000, code, 1)], entry: 0x8000), "below 1 MiB")
        expectError(makeELF32(segments: [(0x100000, code, 1), (0x0, code, 0x1000)], entry: 0x100000), "below 1 MiB")
        expectError(makeELF32(segments: [(0xFFFF_0000, code, 0x20000)], entry: 0xFFFF_0000), "past 3 GiB")
        expectError(makeELF32(segments: [(0x100000, code, 0xFFFF_FFFF)], entry: 0x100000), "past 3 GiB")
        expectError(makeELF32(segments: [(0x100000, code, 200 << 20)], entry: 0x100000), "raise --memory")
        expectError(makeELF32(segments: [(0x100000, code, 1)], entry: 0x200000), "outside every loadable segment")
        expectError(makeELF32(segments: [(0x100000, code, 1)], entry: 0x100000, machine: 0x3E), "not i386")
        expectError(makeELF32(segments: [(0x100000, [1, 2, 3, 4], 2)], entry: 0x100000), "memsz < filesz")
        expectError(makeELF32(segments: [], entry: 0x100000), "program header table")
    }

    @Test func truncatedAndInconsistentFilesAreRefused() throws {
        var short = makeELF32(segments: [(0x100000, [UInt8](repeating: 0xF4, count: 64), 64)], entry: 0x100000)
        short.removeLast(10)
        expectError(short, "runs past the end of the file")
        var phoff = makeELF32(segments: [(0x100000, [0xF4], 1)], entry: 0x100000)
        phoff.put(UInt32(0xFFFF_FF00), at: 0x1C)
        expectError(phoff, "program headers run past the end")

        // Address fields: header at file offset 0 and address 0x100000.
        let body = [UInt8](repeating: 0x90, count: 64)
        func aout(_ a: [UInt32], flags: UInt32 = 0x0001_0003) -> [UInt8] { multibootHeader(flags: flags, addresses: a) + body }
        #expect(try load(aout([0x100000, 0x100000, 0, 0x110000, 0x100020])) == .multiboot32(rip: 0x100020, info: 0x6000))
        expectError(aout([0x100000, 0x100000, 0x100000 + 4096, 0, 0x100020]), "past the end of the file")
        expectError(aout([0x100000, 0x100004, 0, 0, 0x100020]), "does not fit header_addr")
        expectError(aout([0x100000, 0x0F_0000, 0, 0, 0x100020]), "does not fit header_addr")
        expectError(aout([0x100000, 0x100000, 0x0F_0000, 0, 0x100020]), "load_end_addr is below load_addr")
        expectError(aout([0x100000, 0x100000, 0, 0x100010, 0x100020]), "bss_end_addr is below")
        expectError(aout([0x100000, 0x100000, 0, 0, 0x200000]), "entry_addr")
        expectError(aout([0x100000, 0x100000, 0, 0xFFFF_FFFF, 0x100020]), "past 3 GiB")
        expectError(aout([0x8000, 0x8000, 0, 0, 0x8010]), "below 1 MiB")
        expectError(aout([0x100000, 0x100000, 0, 0, 0x100020], flags: 0x0001_0007), "video mode")
        expectError(aout([0x100000, 0x100000, 0, 0, 0x100020], flags: 0x0001_0013), "flags 0x10")
        // The header's address fields cut off by the end of the file.
        let cut = [UInt8](repeating: 0, count: 40) + Array(multibootHeader(addresses: [0, 0, 0, 0, 0]).prefix(24))
        expectError(cut, "address fields run past the end of the file")
    }

    @Test func initrdAndCommandLineLimits() throws {
        let small = try GuestMemory(layout: GuestLayout.ramRegions(size: 16 << 20))
        expectError(TestKernels.multiboot, "initrd is", memory: small, initrd: [UInt8](repeating: 1, count: 16 << 20))
        expectError(TestKernels.multiboot, "command line", commandLine: String(repeating: "a", count: 70000))
        // The limit is the strings' room, so a long line that fits is passed whole.
        let long = String(repeating: "b", count: 8000)
        _ = try load(TestKernels.multiboot, commandLine: long)
        #expect(try memory.read(at: GuestAddress(GuestLayout.multibootStrings), count: 13 + 1 + 8000 + 1)
                == Array("/tests/mb.bin \(long)".utf8) + [0])
    }
}

/// `kite run` boots the project's multiboot test kernel on the host's /dev/kvm: it checks
/// its entry state, prints the information block and fw_cfg, and exits through isa-debug-exit
/// with the digit its command line ends with.
@Suite struct MultibootKernelRunTests {
    static func boot(_ kernel: [UInt8], name: String, _ extra: [String]) throws -> CLITests.Result {
        let path = try CLITests.temp("mb-\(name)", kernel)
        return try CLITests.run(["run", "--kernel", path, "--memory", "128M"] + extra)
    }

    @Test func addressFieldKernelReadsFirmwareConfigAndExitsWithItsStatus() throws {
        let module = try CLITests.temp("mb-module", Array("NR_CPUS=3\n".utf8))
        let r = try Self.boot(TestKernels.multiboot, name: "aout",
                              ["--cpus", "3", "--initrd", module, "--cmdline", "smp exit=5", "--test-devices"])
        #expect(r.status == 11, "status \(r.status); stdout: \(r.stdout); stderr: \(r.stderr)")   // (5 << 1) | 1
        #expect(r.stdout.contains("MB cmdline=\(CLITests.tempPath("mb-aout")) smp exit=5\n"), "\(r.stdout)")
        #expect(r.stdout.contains("MB mem_upper=1fc00 mods=1 module=NR_CPUS=3\n"), "\(r.stdout)")
        #expect(r.stdout.contains("MB fw_cfg=QEMU cpus=3 ram_mib=80\n"), "\(r.stdout)")
        #expect(!r.stdout.contains("bad entry"))
        #expect(r.stderr.isEmpty, "\(r.stderr)")
    }

    @Test func elf32KernelBootsTheSame() throws {
        let r = try Self.boot(multibootKernelAsELF32(virtualOffset: 0xC000_0000), name: "elf",
                              ["--cmdline", "exit=0", "--test-devices"])
        #expect(r.status == 1, "status \(r.status); stdout: \(r.stdout); stderr: \(r.stderr)")     // (0 << 1) | 1
        #expect(r.stdout.contains("MB mem_upper=1fc00 mods=0\n"), "\(r.stdout)")
        #expect(r.stdout.contains("MB fw_cfg=QEMU cpus=1 ram_mib=80\n"), "\(r.stdout)")
    }

    @Test(arguments: ["split", "userspace"]) func bootsTheSameWithOtherInterruptControllers(irqchip: String) throws {
        // --irqchip split or userspace: no PIC or PIT, and in userspace no local APICs in KVM;
        // the kernel never needs them, so it runs as with KVM's chips.
        let r = try Self.boot(TestKernels.multiboot, name: irqchip, ["--cmdline", "exit=3", "--test-devices",
                                                                     "--irqchip", irqchip, "--cpus", "2"])
        #expect(r.status == 7, "status \(r.status); stdout: \(r.stdout); stderr: \(r.stderr)")   // (3 << 1) | 1
        #expect(r.stdout.contains("MB fw_cfg=QEMU cpus=2 ram_mib=80\n"), "\(r.stdout)")
    }

    @Test func splitModeTakesMoreThan254VCPUs() throws {
        // KVM_CAP_X2APIC_API on, x2APIC entries in the MADT for APIC IDs 255 and up, 300 vCPU
        // threads started and stopped in order; the kernel reads the count from fw_cfg.
        let r = try Self.boot(TestKernels.multiboot, name: "split300", ["--cmdline", "exit=3", "--test-devices",
                                                                        "--irqchip", "split", "--cpus", "300"])
        #expect(r.status == 7, "status \(r.status); stdout: \(r.stdout); stderr: \(r.stderr)")   // (3 << 1) | 1
        #expect(r.stdout.contains("MB fw_cfg=QEMU cpus=12c ram_mib=80\n"), "\(r.stdout)")   // hex
    }

    @Test func withoutTestDevicesTheExitPortIsJustAnUnknownPort() throws {
        // No --cmdline: the kernel's arguments are its name alone, and the guest's write to
        // 0xf4 is ignored, so it powers off through ACPI and kite exits 0.
        let r = try Self.boot(TestKernels.multiboot, name: "plain", [])
        #expect(r.status == 0, "status \(r.status); stderr: \(r.stderr)")
        #expect(r.stdout.contains("MB cmdline=\(CLITests.tempPath("mb-plain"))\n"), "\(r.stdout)")
        #expect(r.stdout.contains("MB no debug-exit device: powering off"))
        #expect(r.stderr.contains("unknown address 0xf4"), "\(r.stderr)")
    }
}
