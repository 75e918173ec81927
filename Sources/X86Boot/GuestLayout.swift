import GuestMemory

/// Where Kite puts things in guest-physical memory on x86-64. One table, so the boot
/// recipe, the e820 map and the tests agree.
public enum GuestLayout {
    /// GDT used at entry (null, null, code at 0x10, data at 0x18, TSS at 0x20).
    public static let gdt: UInt64 = 0x500
    /// An empty IDT (limit 0): any exception before the kernel sets its own is a triple fault.
    public static let idt: UInt64 = 0x520
    /// PVH hvm_start_info, followed by its module list and memory map.
    public static let pvhStartInfo: UInt64 = 0x6000
    /// The multiboot information block, its module list and memory map (a kernel is one
    /// format or the other, so it shares the page with PVH's start info).
    public static let multibootInfo: UInt64 = 0x6000
    public static let multibootInfoRoom = 0x1000
    /// The multiboot command line, boot loader name and module name.
    public static let multibootStrings: UInt64 = 0x20000
    public static let multibootStringsRoom = 0x10000
    /// boot_params, the "zero page" of the Linux boot protocol.
    public static let zeroPage: UInt64 = 0x7000
    /// Initial stack top used at entry.
    public static let bootStack: UInt64 = 0x8FF0
    /// Identity page tables: PML4, PDPT, then four page directories (4 GiB in 2 MiB pages).
    public static let pml4: UInt64 = 0x9000
    public static let pdpt: UInt64 = 0xA000
    public static let pageDirectories: UInt64 = 0xB000
    /// Kernel command line; `maxCommandLine` bytes including the NUL (x86 COMMAND_LINE_SIZE).
    public static let commandLine: UInt64 = 0x20000
    public static let maxCommandLine = 2048
    /// End of conventional RAM below the EBDA.
    public static let ebdaStart: UInt64 = 0x9FC00
    /// ACPI tables (RSDP first) in the BIOS area, where the legacy RSDP scan looks too.
    public static let acpiTables: UInt64 = 0xE0000
    public static let acpiTablesEnd: UInt64 = 0x100000
    /// The x86 reset vector (F000:FFF0). Linux jumps here in real mode for a "BIOS" reboot.
    public static let resetVector: UInt64 = 0xFFFF0
    /// Where the protected-mode kernel is loaded (bzImage).
    public static let kernelLoad: UInt64 = 0x100000
    /// The 32-bit MMIO hole: RAM stops here and resumes at 4 GiB.
    public static let mmioHoleStart: UInt64 = 0xC000_0000
    public static let highRAMStart: UInt64 = 0x1_0000_0000
    public static let ioapicAddress: UInt64 = 0xFEC0_0000
    public static let localAPICAddress: UInt64 = 0xFEE0_0000
    /// KVM's private pages for Intel real-mode support, inside the hole.
    public static let kvmTSS: UInt64 = 0xFFFB_D000
    public static let kvmIdentityMap: UInt64 = 0xFFFB_C000
    /// The smallest guest RAM Kite accepts at all (a kernel needs far more; see the loader).
    public static let minimumRAM: UInt64 = 16 << 20

    /// RAM regions for `size` bytes of guest memory: below the MMIO hole, then above 4 GiB.
    public static func ramRegions(size: UInt64) -> [(base: UInt64, size: UInt64)] {
        if size <= mmioHoleStart { return [(0, size)] }
        return [(0, mmioHoleStart), (highRAMStart, size - mmioHoleStart)]
    }
}
