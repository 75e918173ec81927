import GuestMemory
import KVM
import X86Boot

/// Per-vCPU x86 state before the first KVM_RUN: CPUID, boot MSRs, FPU, local APIC LVTs,
/// and for the boot vCPU the entry registers.
enum X86VCPUSetup {
    /// MSRs set on every vCPU (index, value): SYSENTER/SYSCALL MSRs cleared, fast strings
    /// enabled, MTRRs on with write-back as the default memory type.
    static let bootMSRs: [(index: UInt32, value: UInt64)] = [
        (0x174, 0), (0x175, 0), (0x176, 0),             // IA32_SYSENTER_CS/ESP/EIP
        (0xC000_0081, 0), (0xC000_0082, 0), (0xC000_0083, 0), (0xC000_0084, 0), // STAR, LSTAR, CSTAR, SFMASK
        (0xC000_0102, 0),                                // KERNEL_GS_BASE
        (0x1A0, 1),                                      // IA32_MISC_ENABLE: fast strings
        (0x2FF, (1 << 11) | 6),                          // MTRRdefType: enabled, write-back
    ]

    /// Local APIC register offsets and LVT delivery modes.
    enum APIC {
        static let lvtLINT0 = 0x350
        static let lvtLINT1 = 0x360
        static let deliveryModeMask: UInt32 = 0x700
        static let extINT: UInt32 = 0x700
        static let nmi: UInt32 = 0x400
        static let masked: UInt32 = 1 << 16
    }

    /// `x2apicMode` (more than 254 vCPUs): the local APIC starts in x2APIC mode, as firmware
    /// leaves it for so many CPUs (SeaBIOS does the same). Linux reads the MADT's x2APIC
    /// entries with the APIC driver it starts with, and the xAPIC one ignores every ID above
    /// 254 ("ACPI: x2apic entry ignored"); an APIC already in x2APIC mode makes it switch to
    /// x2APIC first.
    static func configure(_ vcpu: VCPU, cpuid: [CPUIDEntry], localAPICInKVM: Bool = true,
                          x2apicMode: Bool = false) throws {
        try vcpu.setCPUID(cpuid)
        // XCR0 starts with every offered XSAVE component enabled, so leaf 0xD EBX (which KVM
        // derives from XCR0) already matches what the guest will enable. Under nested SVM
        // without an XSETBV intercept KVM never sees the guest's own XCR0 write, and Linux
        // would warn "XSAVE consistency problem".
        if let xcr0 = offeredXCR0(cpuid) { try vcpu.setXCR0(xcr0) }
        try vcpu.setMSRs(bootMSRs)
        try vcpu.resetFPU()
        // Kite's own local APIC (`userspace`) starts with every LVT masked; the guest sets
        // LINT0/LINT1 itself. The paravirtual features CPUID hides must fault if used.
        guard localAPICInKVM else {
            // IA32_APIC_BASE as firmware leaves it: the xAPIC at 0xFEE00000, enabled, BSP
            // flag on vCPU 0 (KVM keeps this MSR even without its own APIC).
            try vcpu.setMSRs([(0x1B, 0xFEE0_0800 | (vcpu.id == 0 ? 0x100 : 0))])
            try vcpu.enforcePVFeatureCPUID()
            return
        }
        var page = try vcpu.localAPIC()
        // LINT0: ExtINT, masked. Kite's guests route every interrupt through the IOAPIC;
        // an unmasked ExtINT would let the never-initialized 8259 inject vector irq_base+N.
        let lint0 = page.get(UInt32.self, at: APIC.lvtLINT0) ?? 0
        page.put((lint0 & ~APIC.deliveryModeMask) | APIC.extINT | APIC.masked, at: APIC.lvtLINT0)
        // LINT1: NMI (the MADT's Local APIC NMI entry says the same).
        let lint1 = page.get(UInt32.self, at: APIC.lvtLINT1) ?? 0
        page.put((lint1 & ~(APIC.deliveryModeMask | APIC.masked)) | APIC.nmi, at: APIC.lvtLINT1)
        try vcpu.setLocalAPIC(page)
        if x2apicMode {
            // IA32_APIC_BASE: 0xFEE00000, enabled, x2APIC (EXTD), BSP flag on vCPU 0. KVM
            // then gives the APIC its 32-bit x2APIC ID (the vCPU's index, as CPUID says).
            try vcpu.setMSRs([(0x1B, 0xFEE0_0C00 | (vcpu.id == 0 ? 0x100 : 0))])
        }
    }

    /// The XSAVE components leaf 0xD offers, when leaf 1 says XSAVE exists.
    static func offeredXCR0(_ cpuid: [CPUIDEntry]) -> UInt64? {
        guard let leaf1 = cpuid.first(where: { $0.function == 1 }), leaf1.ecx & (1 << 26) != 0,
              let xsave = cpuid.first(where: { $0.function == 0xD && $0.index == 0 }) else { return nil }
        return (UInt64(xsave.edx) << 32 | UInt64(xsave.eax)) | 0x3
    }

    static func enter(_ vcpu: VCPU, at entry: BootEntry) throws {
        try vcpu.setSpecialRegisters(EntryState.specialRegisters(vcpu.specialRegisters(), for: entry))
        try vcpu.setRegisters(EntryState.registers(for: entry))
    }
}
