import GuestMemory

/// The setup header of a bzImage (Linux x86 boot protocol, Documentation/arch/x86/boot.rst),
/// validated. Offsets are from the start of the file, which equal offsets in boot_params.
public struct BzImage: Sendable {
    public enum Offset {
        public static let setupSects = 0x1F1
        public static let sysSize = 0x1F4
        public static let vidMode = 0x1FA
        public static let bootFlag = 0x1FE
        public static let jump = 0x200
        public static let magic = 0x202
        public static let version = 0x206
        public static let typeOfLoader = 0x210
        public static let loadFlags = 0x211
        public static let ramdiskImage = 0x218
        public static let ramdiskSize = 0x21C
        public static let heapEndPtr = 0x224
        public static let cmdLinePtr = 0x228
        public static let initrdAddrMax = 0x22C
        public static let kernelAlignment = 0x230
        public static let relocatableKernel = 0x234
        public static let xloadflags = 0x236
        public static let cmdlineSize = 0x238
        public static let prefAddress = 0x258
        public static let initSize = 0x260
    }
    public static let headerMagic: UInt32 = 0x5372_6448 // "HdrS"
    /// The 64-bit entry point is 0x200 bytes into the protected-mode kernel.
    public static let entry64Offset: UInt64 = 0x200

    /// The setup sectors' header bytes (0x1F1 up to the end the header declares).
    public let header: [UInt8]
    public let version: UInt16
    public let setupSize: UInt64
    /// Size of the protected-mode kernel (the part loaded at 1 MiB).
    public let kernelSize: UInt64
    public let initrdAddressMax: UInt64
    /// Longest command line without its terminating NUL (cmdline_size).
    public let commandLineMaximum: Int
    public let preferredAddress: UInt64
    /// Memory the kernel needs from its load address while decompressing.
    public let initSize: UInt64

    public static func isBzImage(_ first: [UInt8]) -> Bool {
        first.get(UInt32.self, at: Offset.magic) == headerMagic
    }

    /// Parses and validates the header; `image` is read only for its first sectors.
    public init(_ image: some ImageSource) throws {
        guard image.size >= 0x1000 else {
            throw BootError.truncatedKernel("\(image.size) bytes is too small for a bzImage")
        }
        let head = try image.bytes(at: 0, count: 0x1000)
        guard head.get(UInt32.self, at: Offset.magic) == Self.headerMagic else {
            throw BootError.notAKernel("no bzImage header (HdrS) and no ELF magic")
        }
        guard head.get(UInt16.self, at: Offset.bootFlag) == 0xAA55 else {
            throw BootError.notAKernel("bzImage boot flag is not 0xAA55")
        }
        let version = head.get(UInt16.self, at: Offset.version)!
        // 2.12 brought xloadflags (the 64-bit entry flag).
        guard version >= 0x020C else {
            throw BootError.unsupportedKernel(
                "boot protocol \(version >> 8).\(version & 0xFF) is older than 2.12 (no 64-bit entry)")
        }
        let xloadflags = head.get(UInt16.self, at: Offset.xloadflags)!
        guard xloadflags & 1 != 0 else {
            throw BootError.unsupportedKernel("kernel has no 64-bit entry point (XLF_KERNEL_64 clear)")
        }
        guard head[Offset.loadFlags] & 1 != 0 else {
            throw BootError.unsupportedKernel("kernel is not loaded high (zImage)")
        }
        var setupSects = UInt64(head[Offset.setupSects])
        if setupSects == 0 { setupSects = 4 }
        let setupSize = (setupSects + 1) * 512
        guard setupSize < image.size else {
            throw BootError.truncatedKernel("setup is \(setupSize) bytes but the file has \(image.size)")
        }
        // syssize: the protected-mode code's size in 16-byte paragraphs (protocol >= 2.04).
        let declared = UInt64(head.get(UInt32.self, at: Offset.sysSize)!) * 16
        guard image.size >= setupSize + declared else {
            throw BootError.truncatedKernel("the header declares \(setupSize + declared) bytes but the file has \(image.size)")
        }
        let headerEnd = min(Offset.jump + 2 + Int(head[Offset.jump + 1]), 0x1000)
        self.header = Array(head[Offset.setupSects..<max(headerEnd, Offset.initSize + 4)])
        self.version = version
        self.setupSize = setupSize
        self.kernelSize = image.size - setupSize
        self.initrdAddressMax = UInt64(head.get(UInt32.self, at: Offset.initrdAddrMax)!)
        self.commandLineMaximum = Int(head.get(UInt32.self, at: Offset.cmdlineSize)!)
        self.preferredAddress = head.get(UInt64.self, at: Offset.prefAddress)!
        self.initSize = UInt64(head.get(UInt32.self, at: Offset.initSize)!)
        guard initSize >= kernelSize else {
            throw BootError.truncatedKernel("init_size \(initSize) is smaller than the kernel's \(kernelSize) bytes")
        }
    }

    /// The lowest address above which the kernel's decompression leaves memory alone.
    public var kernelEnd: UInt64 {
        // pref_address comes from the file: a hostile value saturates instead of trapping.
        let (decompressed, overflow) = max(preferredAddress, GuestLayout.kernelLoad).addingReportingOverflow(initSize)
        return max(GuestLayout.kernelLoad + kernelSize, overflow ? .max : decompressed)
    }

    /// boot_params (the zero page) for this kernel: its header, the loader fields, e820,
    /// command line, initrd and the ACPI RSDP.
    public func bootParams(commandLine: UInt64, commandLineLength: Int, initrd: (address: UInt64, size: UInt64)?,
                           e820: [E820Entry], rsdp: UInt64?) -> [UInt8] {
        var zp = [UInt8](repeating: 0, count: 4096)
        for (i, b) in header.enumerated() where Offset.setupSects + i < zp.count { zp[Offset.setupSects + i] = b }
        zp.put(UInt16(0xFFFF), at: Offset.vidMode)          // "normal" video mode
        zp[Offset.typeOfLoader] = 0xFF                         // undefined loader
        zp[Offset.loadFlags] |= 0x80                           // CAN_USE_HEAP
        zp.put(UInt16(0xFE00), at: Offset.heapEndPtr)
        zp.put(UInt32(truncatingIfNeeded: commandLine), at: Offset.cmdLinePtr)
        zp.put(UInt32(commandLine >> 32), at: BootParamsOffset.extCmdLinePtr)
        if let initrd {
            zp.put(UInt32(truncatingIfNeeded: initrd.address), at: Offset.ramdiskImage)
            zp.put(UInt32(truncatingIfNeeded: initrd.size), at: Offset.ramdiskSize)
            zp.put(UInt32(initrd.address >> 32), at: BootParamsOffset.extRamdiskImage)
            zp.put(UInt32(initrd.size >> 32), at: BootParamsOffset.extRamdiskSize)
        }
        if let rsdp { zp.put(rsdp, at: BootParamsOffset.acpiRSDPAddress) }
        let entries = e820.prefix(BootParamsOffset.e820MaxEntries)
        zp[BootParamsOffset.e820Entries] = UInt8(entries.count)
        for (i, e) in entries.enumerated() {
            let at = BootParamsOffset.e820Table + i * 20
            zp.put(e.address, at: at)
            zp.put(e.size, at: at + 8)
            zp.put(e.kind.rawValue, at: at + 16)
        }
        return zp
    }
}

/// boot_params fields outside the setup header.
public enum BootParamsOffset {
    public static let acpiRSDPAddress = 0x070
    public static let extRamdiskImage = 0x0C0
    public static let extRamdiskSize = 0x0C4
    public static let extCmdLinePtr = 0x0C8
    public static let e820Entries = 0x1E8
    public static let e820Table = 0x2D0
    public static let e820MaxEntries = 128
}
