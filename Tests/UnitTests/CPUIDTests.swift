import Testing
import KVM
@testable import X86Boot

/// A plausible KVM_GET_SUPPORTED_CPUID answer from an AMD host.
let amdSupported: [CPUIDEntry] = [
    CPUIDEntry(function: 0, eax: 0xD, ebx: 0x6874_7541, ecx: 0x444D_4163, edx: 0x6974_6E65),
    CPUIDEntry(function: 1, eax: 0x00A5_0F00, ebx: 0x0000_0800, ecx: 0x7EF8_3203 | (1 << 26), edx: 0x178B_FBFF),
    CPUIDEntry(function: 0xB, index: 0, flags: 1, eax: 1, ebx: 2, ecx: 0x100, edx: 7),
    CPUIDEntry(function: 0xD, index: 0, flags: 1, eax: 0x207, ebx: 0x240, ecx: 0x1234, edx: 0),
    CPUIDEntry(function: 0xD, index: 1, flags: 1, eax: 0x5),
    CPUIDEntry(function: 0xD, index: 2, flags: 1, eax: 0x100, ebx: 0x240),
    CPUIDEntry(function: 0xD, index: 9, flags: 1, eax: 8, ebx: 0xA80),
    CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001),
    CPUIDEntry(function: 0x4000_0001, eax: 0x01FF_FFFF, edx: 1),
    CPUIDEntry(function: 0x8000_0000, eax: 0x8000_001F),
    CPUIDEntry(function: 0x8000_0001, ecx: 0x0040_0004 | 0x2),
    CPUIDEntry(function: 0x8000_0008, eax: 0x3030, ecx: 0x7003),
    CPUIDEntry(function: 0x8000_001E, eax: 9, ebx: 0x109, ecx: 0x300),
]

@Suite struct CPUIDTests {
    func leaf(_ entries: [CPUIDEntry], _ f: UInt32, _ i: UInt32 = 0) -> CPUIDEntry? {
        entries.first { $0.function == f && ($0.flags & 1 == 0 || $0.index == i) }
    }

    @Test(arguments: [1, 2, 4, 10, 64])
    func everyVCPUGetsItsOwnAPICID(count: Int) throws {
        let t = CPUIDTemplate(supported: amdSupported, vcpuCount: count)
        var ids = Set<UInt32>()
        for v in 0..<count {
            let e = t.entries(forVCPU: v)
            let l1 = try #require(leaf(e, 1))
            let apic = l1.ebx >> 24
            #expect(apic == CPUIDTemplate.apicID(forVCPU: v))
            #expect(leaf(e, 0xB, 0)?.edx == apic)
            #expect(leaf(e, 0xB, 1)?.edx == apic)
            #expect(leaf(e, 0x8000_001E)?.eax == apic)
            ids.insert(apic)
        }
        #expect(ids.count == count)
    }

    @Test func topologyIsConsistent() throws {
        let e = CPUIDTemplate(supported: amdSupported, vcpuCount: 10).entries(forVCPU: 3)
        let smt = try #require(leaf(e, 0xB, 0))
        let core = try #require(leaf(e, 0xB, 1))
        let end = try #require(leaf(e, 0xB, 2))
        #expect(smt.ebx == 1 && (smt.ecx >> 8) & 0xFF == 1 && smt.eax == 0)
        #expect(core.ebx == 10 && (core.ecx >> 8) & 0xFF == 2 && core.eax == 4)   // 10 cores need 4 bits
        #expect(end.ebx == 0 && (end.ecx >> 8) & 0xFF == 0)
        let l1 = try #require(leaf(e, 1))
        #expect((l1.ebx >> 16) & 0xFF == 16)                                     // addressable IDs: 2^4
        #expect(l1.edx & (1 << 28) != 0)                                         // HTT
        let ext8 = try #require(leaf(e, 0x8000_0008))
        #expect(ext8.ecx & 0xFF == 9 && (ext8.ecx >> 12) & 0xF == 4)
        let ext1 = try #require(leaf(e, 0x8000_0001))
        #expect(ext1.ecx & 0x2 != 0)                                             // CmpLegacy
        #expect(ext1.ecx & 0x4 == 0)                                             // no SVM
    }

    @Test func hypervisorLeavesCarryKVMsPVFeatures() throws {
        let e = CPUIDTemplate(supported: amdSupported, vcpuCount: 4).entries(forVCPU: 0)
        let sig = try #require(leaf(e, 0x4000_0000))
        #expect(sig.eax == 0x4000_0001)
        #expect(sig.ebx == 0x4B4D_564B && sig.ecx == 0x564B_4D56 && sig.edx == 0x4D)
        let features = try #require(leaf(e, 0x4000_0001))
        for f: CPUIDTemplate.KVMFeature in [.clocksource2, .pvEOI, .pvUnhalt, .pvTLBFlush, .pvSendIPI,
                                             .stealTime, .pvSchedYield, .clocksourceStableBit] {
            #expect(features.eax & (1 << UInt32(f.rawValue)) != 0, "missing \(f)")
        }
        #expect(features.eax & (1 << 15) == 0)    // no MSI extended destination ID
        #expect(features.edx == 0)                // never KVM_HINTS_REALTIME
        let l1 = try #require(leaf(e, 1))
        #expect(l1.ecx & (1 << 31) != 0)          // hypervisor present
        #expect(l1.ecx & (1 << 21) != 0)          // x2APIC
    }

    @Test(arguments: [false, true])
    func tscDeadlineTimerIsOfferedOnlyWhenKVMHasIt(available: Bool) throws {
        var host = amdSupported
        host[host.firstIndex { $0.function == 1 }!].ecx |= 1 << 24   // a host table that claims it anyway
        let e = CPUIDTemplate(supported: host, vcpuCount: 2, tscDeadlineTimer: available).entries(forVCPU: 1)
        let l1 = try #require(leaf(e, 1))
        #expect((l1.ecx & (1 << 24) != 0) == available)
        #expect(l1.ecx & (1 << 21) != 0)          // x2APIC untouched
    }

    @Test func withLocalAPICsInKiteTheGuestSeesNoneOfKVMsAPICFeatures() throws {
        let e = CPUIDTemplate(supported: amdSupported, vcpuCount: 2, tscDeadlineTimer: true,
                              localAPICsInKVM: false).entries(forVCPU: 1)
        let l1 = try #require(leaf(e, 1))
        #expect(l1.ecx & (1 << 21) == 0)          // no x2APIC
        #expect(l1.ecx & (1 << 24) != 0)          // the TSC-deadline timer, its MSR trapped to Kite
        #expect(l1.edx & (1 << 9) != 0)           // the xAPIC itself stays
        let features = try #require(leaf(e, 0x4000_0001)).eax
        for f in CPUIDTemplate.apicDependentFeatures {
            #expect(features & (1 << UInt32(f.rawValue)) == 0, "\(f) must be hidden")
        }
        for f: CPUIDTemplate.KVMFeature in [.clocksource2, .stealTime, .pvTLBFlush, .clocksourceStableBit] {
            #expect(features & (1 << UInt32(f.rawValue)) != 0, "\(f) does not need KVM's APIC")
        }
    }

    /// MSI_EXT_DEST_ID only where Kite's IOAPIC takes 15-bit destinations (`split`);
    /// with KVM's own IOAPIC a guest using it would send interrupts nowhere.
    @Test(arguments: [false, true])
    func extendedDestinationIDsOnlyWhenAsked(offered: Bool) throws {
        var host = amdSupported
        host[host.firstIndex { $0.function == 0x4000_0001 }!].eax |= 1 << 15   // a host table that claims it
        let e = CPUIDTemplate(supported: host, vcpuCount: 300, extendedDestinationIDs: offered).entries(forVCPU: 299)
        #expect((try #require(leaf(e, 0x4000_0001)).eax & (1 << 15) != 0) == offered)
        // The x2APIC ID is whole in leaf 0xB; leaf 1 has its low 8 bits, as on hardware.
        #expect(e.first { $0.function == 0xB && $0.index == 0 }?.edx == 299)
        #expect(try #require(leaf(e, 1)).ebx >> 24 == 299 & 0xFF)
    }

    @Test func pvFeaturesTheHostLacksAreNotInvented() throws {
        var host = amdSupported
        host[8].eax = 1 << 3                      // only kvmclock2
        let e = CPUIDTemplate(supported: host, vcpuCount: 2).entries(forVCPU: 1)
        #expect(leaf(e, 0x4000_0001)?.eax == 1 << 3)
    }

    @Test func xsaveLeafSizesMatchTheOfferedFeatures() throws {
        let e = CPUIDTemplate(supported: amdSupported, vcpuCount: 2).entries(forVCPU: 0)
        let main = try #require(leaf(e, 0xD, 0))
        #expect(main.eax == 0x207)
        #expect(main.ecx == 0xA80 + 8)            // PKRU ends the standard-format area
        // A component whose subleaf is missing is not offered.
        var host = amdSupported
        host.removeAll { $0.function == 0xD && $0.index == 9 }
        let e2 = CPUIDTemplate(supported: host, vcpuCount: 2).entries(forVCPU: 0)
        let main2 = try #require(leaf(e2, 0xD, 0))
        #expect(main2.eax == 0x7)
        #expect(main2.ecx == 0x240 + 0x100)
    }
}

@Suite struct EntryStateTests {
    @Test func gdtHasBootProtocolSelectors() {
        let g = EntryState.gdt(longMode: true)
        #expect(g.count == 5)
        #expect(g[2] == 0x00AF_9B00_0000_FFFF)    // 64-bit code, selector 0x10
        #expect(g[3] == 0x00CF_9300_0000_FFFF)    // data, selector 0x18
        #expect(EntryState.gdt(longMode: false)[2] == 0x00CF_9B00_0000_FFFF)
    }

    @Test func longModeEntryRegisters() {
        let s = EntryState.specialRegisters(SpecialRegisters(), for: .linux64(rip: 0x100200, bootParams: 0x7000))
        #expect(s.cs.selector == 0x10 && s.cs.l == 1 && s.cs.db == 0 && s.cs.limit == 0xFFFF_FFFF)
        #expect(s.ds.selector == 0x18 && s.ss.selector == 0x18 && s.ds.db == 1)
        #expect(s.cr0 & 0x8000_0001 == 0x8000_0001 && s.cr4 & 0x20 != 0 && s.efer == 0x500)
        #expect(s.cr3 == GuestLayout.pml4)
        let r = EntryState.registers(for: .linux64(rip: 0x100200, bootParams: 0x7000))
        #expect(r.rip == 0x100200 && r.rsi == 0x7000 && r.rflags == 2)
    }

    @Test func pvhEntryIsFlat32BitWithoutPaging() {
        let s = EntryState.specialRegisters(SpecialRegisters(), for: .pvh32(rip: 0x1000000, startInfo: 0x6000))
        #expect(s.cs.l == 0 && s.cs.db == 1 && s.cs.base == 0 && s.cs.limit == 0xFFFF_FFFF)
        #expect(s.cr0 & 0x8000_0000 == 0 && s.cr0 & 1 == 1 && s.efer == 0)
        let r = EntryState.registers(for: .pvh32(rip: 0x1000000, startInfo: 0x6000))
        #expect(r.rbx == 0x6000 && r.rip == 0x1000000)
    }
}
