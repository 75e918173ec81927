import GuestMemory

/// How the boot vCPU enters the kernel.
public enum BootEntry: Equatable, Sendable {
    /// bzImage 64-bit entry: long mode, identity paging, RSI = boot_params.
    case linux64(rip: UInt64, bootParams: UInt64)
    /// PVH entry: 32-bit protected mode, paging off, EBX = hvm_start_info.
    case pvh32(rip: UInt64, startInfo: UInt64)
}

public enum KernelFormat: Equatable, Sendable {
    case bzImage, elfPVH

    /// Detects the format from the file's first 4 KiB.
    public static func detect(_ image: some ImageSource) throws -> KernelFormat {
        guard image.size >= 64 else { throw BootError.truncatedKernel("\(image.size) bytes is too small for a kernel") }
        let head = try image.bytes(at: 0, count: Int(min(image.size, 0x1000)))
        if ELFKernel.isELF(head) { return .elfPVH }
        if BzImage.isBzImage(head) { return .bzImage }
        throw BootError.notAKernel("neither a bzImage (no HdrS header) nor an ELF vmlinux")
    }
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
            guard kernelEnd <= lowEnd else { throw BootError.memoryTooSmall(needed: kernelEnd, have: ramSize) }
            for s in image.segments {
                guard s.address >= GuestLayout.kernelLoad,
                      memory.contains(GuestAddress(s.address), length: s.memorySize) else {
                    throw BootError.kernelOutsideRAM("segment at 0x\(String(s.address, radix: 16)) (\(s.memorySize) bytes)")
                }
                try kernel.read(at: s.fileOffset, into: memory.hostBuffer(at: GuestAddress(s.address), length: s.fileSize))
                try memory.zero(at: GuestAddress(s.address + s.fileSize), length: s.memorySize - s.fileSize)
            }
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
}
