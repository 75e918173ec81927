import CKVM
import GuestMemory
import KVM

/// The CPU state at kernel entry: GDT, identity page tables, and the register values the
/// boot protocol (or PVH) requires.
public enum EntryState {
    /// GDT selectors: the boot protocol wants __BOOT_CS = 0x10 and __BOOT_DS = 0x18.
    public static let codeSelector: UInt16 = 0x10
    public static let dataSelector: UInt16 = 0x18
    public static let tssSelector: UInt16 = 0x20

    /// A GDT descriptor from flags (access byte in bits 0-7, flags nibble in 12-15), base, limit.
    public static func descriptor(flags: UInt64, base: UInt64, limit: UInt64) -> UInt64 {
        ((base & 0xFF00_0000) << 32) | ((flags & 0xF0FF) << 40) | ((limit & 0x000F_0000) << 32)
            | ((base & 0x00FF_FFFF) << 16) | (limit & 0xFFFF)
    }

    /// null, null, code, data, TSS. `longMode` picks a 64-bit (L) or 32-bit (D) code segment.
    public static func gdt(longMode: Bool) -> [UInt64] {
        [0, 0,
         descriptor(flags: longMode ? 0xA09B : 0xC09B, base: 0, limit: 0xFFFFF),
         descriptor(flags: 0xC093, base: 0, limit: 0xFFFFF),
         descriptor(flags: 0x008B, base: 0, limit: 0xFFFFF)]
    }

    /// Writes the GDT, an empty IDT and (for long mode) page tables identity-mapping 4 GiB.
    public static func writeTables(into memory: GuestMemory, longMode: Bool) throws {
        for (i, d) in gdt(longMode: longMode).enumerated() {
            try memory.store(d, at: GuestAddress(GuestLayout.gdt + UInt64(i * 8)))
        }
        try memory.store(UInt64(0), at: GuestAddress(GuestLayout.idt))
        guard longMode else { return }
        try memory.zero(at: GuestAddress(GuestLayout.pml4), length: 0x6000)
        try memory.store(GuestLayout.pdpt | 0x3, at: GuestAddress(GuestLayout.pml4))
        for d in 0..<4 {
            let pd = GuestLayout.pageDirectories + UInt64(d) * 0x1000
            try memory.store(pd | 0x3, at: GuestAddress(GuestLayout.pdpt + UInt64(d) * 8))
            for e in 0..<512 {
                let physical = (UInt64(d) << 30) | (UInt64(e) << 21)
                try memory.store(physical | 0x83, at: GuestAddress(pd + UInt64(e) * 8)) // present, writable, 2 MiB
            }
        }
    }

    /// What INIT followed by a start-up IPI with `vector` leaves (Intel SDM vol. 3A table
    /// 10-1, "Following INIT"; then CS = vector << 8, base vector << 12, IP 0): real mode,
    /// paging and protection off, every segment 64 KiB at its selector. A VMM that keeps the
    /// local APICs itself must set this; KVM does it only for its own APICs. `current` keeps
    /// what INIT does not change (the APIC base).
    public static func startUpState(_ current: SpecialRegisters, vector: UInt8) -> (SpecialRegisters, Registers) {
        var s = current
        func real(_ selector: UInt16, type: UInt8) -> kvm_segment {
            var seg = kvm_segment()
            seg.selector = selector
            seg.base = UInt64(selector) << 4
            seg.limit = 0xFFFF
            seg.type = type
            seg.present = 1
            seg.s = 1
            return seg
        }
        s.cs = real(UInt16(vector) << 8, type: 0xB)          // execute/read, accessed
        for keyPath in [\SpecialRegisters.ds, \.es, \.fs, \.gs, \.ss] { s[keyPath: keyPath] = real(0, type: 0x3) }
        s.ldt = real(0, type: 0x2)
        s.ldt.s = 0
        s.tr = real(0, type: 0x3)                            // 16-bit busy TSS, as at reset
        s.tr.s = 0
        s.gdt.base = 0
        s.gdt.limit = 0xFFFF
        s.idt.base = 0
        s.idt.limit = 0xFFFF
        s.cr0 = 0x6000_0010                                  // CD, NW, ET
        s.cr2 = 0
        s.cr3 = 0
        s.cr4 = 0
        s.cr8 = 0
        s.efer = 0
        var r = Registers()
        r.rflags = 2
        r.rip = 0
        return (s, r)
    }

    static func segment(_ descriptor: UInt64, selector: UInt16) -> kvm_segment {
        var s = kvm_segment()
        s.base = ((descriptor >> 16) & 0xFF_FFFF) | ((descriptor >> 32) & 0xFF00_0000)
        var limit = UInt32((descriptor & 0xFFFF) | ((descriptor >> 32) & 0xF_0000))
        s.g = UInt8((descriptor >> 55) & 1)
        if s.g == 1 { limit = (limit << 12) | 0xFFF }
        s.limit = limit
        s.selector = selector
        s.type = UInt8((descriptor >> 40) & 0xF)
        s.present = UInt8((descriptor >> 47) & 1)
        s.dpl = UInt8((descriptor >> 45) & 3)
        s.db = UInt8((descriptor >> 54) & 1)
        s.s = UInt8((descriptor >> 44) & 1)
        s.l = UInt8((descriptor >> 53) & 1)
        s.avl = UInt8((descriptor >> 52) & 1)
        s.unusable = s.present == 0 ? 1 : 0
        return s
    }

    /// Special registers for `entry`, starting from the vCPU's reset values.
    public static func specialRegisters(_ base: SpecialRegisters, for entry: BootEntry) -> SpecialRegisters {
        var s = base
        let longMode: Bool
        if case .linux64 = entry { longMode = true } else { longMode = false }
        let table = gdt(longMode: longMode)
        let code = segment(table[2], selector: codeSelector)
        let data = segment(table[3], selector: dataSelector)
        s.cs = code
        s.ds = data; s.es = data; s.fs = data; s.gs = data; s.ss = data
        s.tr = segment(table[4], selector: tssSelector)
        s.gdt.base = GuestLayout.gdt
        s.gdt.limit = UInt16(table.count * 8 - 1)
        s.idt.base = GuestLayout.idt
        s.idt.limit = 0
        if longMode {
            s.cr0 = 0x8000_0011        // PG | ET | PE
            s.cr3 = GuestLayout.pml4
            s.cr4 = 0x20               // PAE
            s.efer = 0x500             // LME | LMA
        } else {
            s.cr0 = 0x11               // ET | PE, paging off
            s.cr3 = 0
            s.cr4 = 0
            s.efer = 0
        }
        return s
    }

    /// General registers for `entry`.
    public static func registers(for entry: BootEntry) -> Registers {
        var r = Registers()
        r.rflags = 0x2
        switch entry {
        case .linux64(let rip, let bootParams):
            r.rip = rip
            r.rsi = bootParams
            r.rsp = GuestLayout.bootStack
            r.rbp = GuestLayout.bootStack
        case .pvh32(let rip, let startInfo):
            r.rip = rip
            r.rbx = startInfo
        case .multiboot32(let rip, let info):
            r.rip = rip
            r.rax = UInt64(MultibootKernel.bootloaderMagic)
            r.rbx = info
        }
        return r
    }
}
