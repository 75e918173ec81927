import GuestMemory

/// How the boot vCPU enters the kernel.
public enum BootEntry: Equatable, Sendable {
    /// bzImage 64-bit entry: long mode, identity paging, RSI = boot_params.
    case linux64(rip: UInt64, bootParams: UInt64)
    /// PVH entry: 32-bit protected mode, paging off, EBX = hvm_start_info.
    case pvh32(rip: UInt64, startInfo: UInt64)
    /// Multiboot entry: 32-bit protected mode, paging off, EAX = 0x2BADB002, EBX = the
    /// multiboot information block.
    case multiboot32(rip: UInt64, info: UInt64)
}

public enum KernelFormat: Equatable, Sendable {
    case bzImage, elfPVH, multiboot

    /// Detects the format from the file's first 8 KiB: a bzImage by its HdrS header, a
    /// multiboot kernel by its multiboot header (ELF32 or with address fields), otherwise
    /// an ELF vmlinux entered through PVH.
    public static func detect(_ image: some ImageSource) throws -> KernelFormat {
        guard image.size >= 64 else { throw BootError.truncatedKernel("\(image.size) bytes is too small for a kernel") }
        let head = try image.bytes(at: 0, count: Int(min(image.size, UInt64(MultibootKernel.searchLength))))
        if BzImage.isBzImage(head) { return .bzImage }
        if MultibootKernel.isMultiboot(head) { return .multiboot }
        if ELFKernel.isELF(head) { return .elfPVH }
        throw BootError.notAKernel("neither a bzImage (no HdrS header), a multiboot kernel nor an ELF vmlinux")
    }

    /// The command line a kernel of this format gets when none is given: Linux's console
    /// on the first serial port; nothing for a multiboot kernel, whose arguments are its own.
    public var defaultCommandLine: String { self == .multiboot ? "" : "console=ttyS0" }
}

/// Puts a kernel, its initrd and command line into guest RAM following the Linux x86 boot
/// protocol (bzImage) or PVH (ELF vmlinux), and says where to enter.
public enum KernelLoader {
    public static func load(kernel: some ImageSource, initrd: (some ImageSource)?, commandLine: String,
                            memory: GuestMemory, rsdp: UInt64) throws -> BootEntry {
        let ramSize = memory.size
        let lowEnd = GuestLayout.ramRegions(size: ramSize)[0].size
        let e820 = E820.map(ramSize: ramSize)
        let format = try KernelFormat.detect(kernel)

        // 1. Kernel image and the limits it sets.
        let kernelEnd: UInt64
        let commandLineMax: Int
        var initrdCeiling = lowEnd
        let bz: BzImage?
        let elf: ELFKernel?
        switch format {
        case .multiboot:
            return try loadMultiboot(kernel: kernel, initrd: initrd, commandLine: commandLine, memory: memory)
        case .bzImage:
            let image = try BzImage(kernel)
            kernelEnd = image.kernelEnd
            commandLineMax = min(image.commandLineMaximum, GuestLayout.maxCommandLine - 1)
            initrdCeiling = min(lowEnd, image.initrdAddressMax &+ 1)
            guard kernelEnd <= lowEnd else { throw BootError.memoryTooSmall(needed: kernelEnd, have: ramSize) }
            try kernel.read(at: image.setupSize,
                            into: memory.hostBuffer(at: GuestAddress(GuestLayout.kernelLoad), length: image.kernelSize))
            bz = image; elf = nil
        case .elfPVH:
            let image = try ELFKernel(kernel)
            kernelEnd = image.kernelEnd
            commandLineMax = GuestLayout.maxCommandLine - 1
            try loadSegments(image.segments, from: kernel, into: memory, below: lowEnd)
            bz = nil; elf = image
        }

        // 2. Command line (NUL-terminated; the limit excludes the NUL).
        let cmdline = Array(commandLine.utf8)
        guard cmdline.count <= commandLineMax else {
            throw BootError.commandLineTooLong(length: cmdline.count, maximum: commandLineMax)
        }
        try memory.write(cmdline + [0], at: GuestAddress(GuestLayout.commandLine))

        // 3. Initrd at the top of low RAM, page-aligned, above the kernel.
        var initrdPlace: (address: UInt64, size: UInt64)?
        if let initrd {
            let size = initrd.size
            let free = initrdCeiling > kernelEnd ? initrdCeiling - kernelEnd : 0
            guard size <= free else { throw BootError.initrdTooLarge(initrd: size, available: free) }
            let address = (initrdCeiling - size) & ~0xFFF
            guard address >= kernelEnd else { throw BootError.initrdTooLarge(initrd: size, available: free) }
            try initrd.read(at: 0, into: memory.hostBuffer(at: GuestAddress(address), length: size))
            initrdPlace = (address, size)
        }

        // 4. Boot information and where to start.
        if let bz {
            let zeroPage = bz.bootParams(commandLine: GuestLayout.commandLine, commandLineLength: cmdline.count,
                                         initrd: initrdPlace, e820: e820, rsdp: rsdp)
            try memory.write(zeroPage, at: GuestAddress(GuestLayout.zeroPage))
            return .linux64(rip: GuestLayout.kernelLoad + BzImage.entry64Offset, bootParams: GuestLayout.zeroPage)
        }
        let startInfo = PVHStartInfo.build(at: GuestLayout.pvhStartInfo, commandLine: GuestLayout.commandLine,
                                           initrd: initrdPlace, rsdp: rsdp, e820: e820)
        try memory.write(startInfo, at: GuestAddress(GuestLayout.pvhStartInfo))
        return .pvh32(rip: elf!.pvhEntry, startInfo: GuestLayout.pvhStartInfo)
    }

    /// Copies each segment to its address and zeroes its bss. Every segment must lie
    /// between 1 MiB (below it Kite keeps the GDT, the boot information and the ACPI tables)
    /// and `ceiling` (the end of low RAM); the checks cannot overflow.
    static func loadSegments(_ segments: [LoadSegment], from kernel: some ImageSource, into memory: GuestMemory,
                             below ceiling: UInt64) throws {
        for s in segments {
            let place = "segment at 0x\(hex(s.address)) (\(s.memorySize) bytes)"
            guard s.address >= GuestLayout.kernelLoad else {
                throw BootError.kernelOverlapsBootData("\(place) is below 1 MiB, where Kite keeps its boot information")
            }
            let (end, overflow) = s.address.addingReportingOverflow(s.memorySize)
            guard !overflow, end <= GuestLayout.mmioHoleStart else {
                throw BootError.kernelOutsideRAM("\(place) reaches past 3 GiB, where low RAM ends")
            }
            guard end <= ceiling else { throw BootError.memoryTooSmall(needed: end, have: memory.size) }
            try kernel.read(at: s.fileOffset, into: memory.hostBuffer(at: GuestAddress(s.address), length: s.fileSize))
            try memory.zero(at: GuestAddress(s.address + s.fileSize), length: s.memorySize - s.fileSize)
        }
    }

    /// Multiboot: the image's segments, the initrd as the one module (page-aligned, at the
    /// top of low RAM), and the information block with the command line "KERNEL ARGS" (as
    /// GRUB and QEMU pass it: argument 0 is the kernel's name) and the memory map.
    static func loadMultiboot(kernel: some ImageSource, initrd: (some ImageSource)?, commandLine: String,
                              memory: GuestMemory) throws -> BootEntry {
        let lowEnd = GuestLayout.ramRegions(size: memory.size)[0].size
        let image = try MultibootKernel(kernel)
        try loadSegments(image.segments, from: kernel, into: memory, below: lowEnd)
        var module: MultibootInfo.Module?
        if let initrd {
            let kernelEnd = (image.kernelEnd + 0xFFF) & ~0xFFF
            let free = lowEnd > kernelEnd ? lowEnd - kernelEnd : 0
            guard initrd.size <= free else { throw BootError.initrdTooLarge(initrd: initrd.size, available: free) }
            let address = (lowEnd - initrd.size) & ~0xFFF
            try initrd.read(at: 0, into: memory.hostBuffer(at: GuestAddress(address), length: initrd.size))
            module = .init(start: address, end: address + initrd.size, name: initrd.name)
        }
        let arguments = commandLine.isEmpty ? kernel.name : kernel.name + " " + commandLine
        let block = try MultibootInfo.build(
            at: GuestLayout.multibootInfo, strings: GuestLayout.multibootStrings,
            stringsRoom: GuestLayout.multibootStringsRoom, commandLine: arguments, module: module,
            memoryLower: GuestLayout.ebdaStart, memoryUpper: lowEnd - GuestLayout.kernelLoad,
            e820: E820.map(ramSize: memory.size))
        guard block.info.count <= GuestLayout.multibootInfoRoom else {
            throw BootError.unsupportedKernel("the multiboot information block does not fit its page")
        }
        try memory.write(block.info, at: GuestAddress(GuestLayout.multibootInfo))
        try memory.write(block.strings, at: GuestAddress(GuestLayout.multibootStrings))
        return .multiboot32(rip: image.entry, info: GuestLayout.multibootInfo)
    }
}
