import KVM
import Testing
import X86Boot

@Suite struct StartUpStateTests {
    @Test func initThenSIPILeavesRealModeAtTheVectorWhateverRanBefore() {
        // A vCPU that ran Linux: long mode, paging, its own GDT and IDT (CPU hot-plug case).
        var before = SpecialRegisters()
        before.cr0 = 0x8005_0033
        before.cr3 = 0x37E1_0000
        before.cr4 = 0x751EA0
        before.efer = 0xD01
        before.cs.selector = 0x10
        before.cs.l = 1
        before.gdt.base = 0xFFFF_FE00_0000_1000
        before.apic_base = 0xFEE0_0800
        let (s, r) = EntryState.startUpState(before, vector: 0x99)
        #expect(s.cr0 == 0x6000_0010 && s.cr3 == 0 && s.cr4 == 0 && s.efer == 0)
        #expect(s.cs.selector == 0x9900 && s.cs.base == 0x99000 && s.cs.limit == 0xFFFF && s.cs.l == 0 && s.cs.db == 0)
        #expect(s.ds.selector == 0 && s.ds.base == 0 && s.ss.limit == 0xFFFF && s.ss.present == 1)
        #expect(s.gdt.base == 0 && s.gdt.limit == 0xFFFF && s.idt.base == 0 && s.idt.limit == 0xFFFF)
        #expect(s.apic_base == 0xFEE0_0800)        // INIT keeps the APIC base
        #expect(r.rip == 0 && r.rflags == 2)
    }
}
