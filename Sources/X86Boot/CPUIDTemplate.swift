import KVM

/// Turns the CPUID leaves KVM supports into what one vCPU of an N-vCPU guest sees: a
/// distinct APIC ID, a consistent topology (one socket, N cores, one thread per core),
/// KVM's paravirtual leaves, x2APIC, and an XSAVE leaf whose sizes agree with the features
/// it offers.
public struct CPUIDTemplate: Sendable {
    public let supported: [CPUIDEntry]
    public let vcpuCount: Int
    /// Offer the local APIC's TSC-deadline timer mode (CPUID.1:ECX[24]). KVM emulates it in
    /// the in-kernel APIC but leaves it out of KVM_GET_SUPPORTED_CPUID; the VMM sets the bit
    /// when KVM_CAP_TSC_DEADLINE_TIMER says so (QEMU and Firecracker do the same). Without it
    /// Linux programs the APIC timer through its divide and count registers.
    public let tscDeadlineTimer: Bool
    /// The local APICs are KVM's (`kernel`, `split`). When they are Kite's (`userspace`),
    /// the guest must not see what only KVM's APIC provides: x2APIC (KVM cannot forward its
    /// MSRs) and the paravirtual features that KVM implements on its own APIC
    /// (`apicDependentFeatures`): with those a guest's IPI or wake-up would be lost. (The
    /// TSC-deadline timer is offered when Kite traps its MSR: `tscDeadlineTimer`.)
    public let localAPICsInKVM: Bool
    /// Offer KVM's MSI_EXT_DEST_ID: the IOAPIC is the VMM's (`split`) and takes 15-bit
    /// destinations, so a guest without interrupt remapping can send device interrupts to
    /// APIC IDs above 255 (Linux otherwise leaves those CPUs offline). QEMU offers it with
    /// its split irqchip too.
    public let extendedDestinationIDs: Bool

    public init(supported: [CPUIDEntry], vcpuCount: Int, tscDeadlineTimer: Bool = false, localAPICsInKVM: Bool = true,
                extendedDestinationIDs: Bool = false) {
        self.supported = supported
        self.vcpuCount = vcpuCount
        self.tscDeadlineTimer = tscDeadlineTimer
        self.localAPICsInKVM = localAPICsInKVM
        self.extendedDestinationIDs = extendedDestinationIDs
    }

    /// KVM features that work only with KVM's local APIC: PV send-IPI and sched-yield walk
    /// KVM's APIC map, PV unhalt kicks KVM's APIC, PV EOI and async page faults live in
    /// KVM's APIC code, and halt-poll control is about KVM's halt.
    public static let apicDependentFeatures: [KVMFeature] = [
        .asyncPF, .pvEOI, .pvUnhalt, .asyncPFVMExit, .pvSendIPI, .pollControl, .pvSchedYield, .asyncPFInt,
    ]

    /// KVM paravirtual feature bits in leaf 0x40000001 EAX.
    public enum KVMFeature: Int, CaseIterable, Sendable {
        case clocksource = 0, nopIODelay = 1, mmuOp = 2, clocksource2 = 3, asyncPF = 4, stealTime = 5
        case pvEOI = 6, pvUnhalt = 7, pvTLBFlush = 9, asyncPFVMExit = 10, pvSendIPI = 11
        case pollControl = 12, pvSchedYield = 13, asyncPFInt = 14, msiExtDestID = 15
        case hcMapGPARange = 16, migrationControl = 17, clocksourceStableBit = 24
    }

    public static let hypervisorBase: UInt32 = 0x4000_0000
    public static let kvmSignature: (UInt32, UInt32, UInt32) = (0x4B4D_564B, 0x564B_4D56, 0x0000_004D) // "KVMKVMKVM\0\0\0"

    /// Bits needed to number `count` things (ceil(log2)).
    static func bits(for count: Int) -> UInt32 {
        var b: UInt32 = 0
        while (1 << b) < count { b += 1 }
        return b
    }

    /// The APIC ID Kite gives vCPU `index`: the index itself (cores numbered densely).
    public static func apicID(forVCPU index: Int) -> UInt32 { UInt32(index) }

    public var isAMD: Bool {
        guard let v = supported.first(where: { $0.function == 0 }) else { return false }
        return v.ebx == 0x6874_7541 // "Auth"enticAMD
    }

    public func entries(forVCPU index: Int) -> [CPUIDEntry] {
        let apicID = Self.apicID(forVCPU: index)
        let n = max(vcpuCount, 1)
        let coreBits = Self.bits(for: n)
        var out: [CPUIDEntry] = []
        let maxExtended = supported.first(where: { $0.function == 0x8000_0000 })?.eax ?? 0

        for var e in supported {
            switch e.function {
            case 0x1:
                // EBX: APIC ID [31:24], addressable logical IDs [23:16], CLFLUSH size kept.
                let logical = min(UInt32(1) << coreBits, 255)
                e.ebx = (apicID << 24) | (max(logical, 1) << 16) | (e.ebx & 0xFFFF)
                e.ecx |= 1 << 31                   // running under a hypervisor
                if localAPICsInKVM {
                    e.ecx |= 1 << 21               // x2APIC (KVM emulates it in the in-kernel APIC)
                } else {
                    e.ecx &= ~(UInt32(1) << 21)
                }
                if tscDeadlineTimer { e.ecx |= 1 << 24 } else { e.ecx &= ~(UInt32(1) << 24) }
                e.ecx &= ~(UInt32(1) << 5)         // no VMX: Kite does not offer nested virtualization
                if n > 1 { e.edx |= 1 << 28 } else { e.edx &= ~(UInt32(1) << 28) } // HTT: multi-core package
            case 0x4:
                // Deterministic cache parameters: cores per package [31:26]; sharing [25:14]:
                // L1/L2 private to a core, L3 shared by the package.
                let level = (e.eax >> 5) & 0x7
                let sharing: UInt32 = level >= 3 ? UInt32(n - 1) : 0
                e.eax = (e.eax & 0x3FFF) | (min(sharing, 0xFFF) << 14) | (min(UInt32(n - 1), 63) << 26)
                if e.eax & 0x1F == 0 { e.eax = 0 } // no cache at this subleaf
            case 0x6:
                e.ecx &= ~UInt32(1 << 3)           // no energy-performance bias MSR
            case 0xA:
                e = CPUIDEntry(function: 0xA)      // no architectural PMU
            case 0xB, 0x1F:
                e = Self.topologyLeaf(function: e.function, subleaf: e.index, apicID: apicID,
                                      vcpuCount: n, coreBits: coreBits)
            case 0xD:
                continue                            // rebuilt below
            case Self.hypervisorBase:
                e.eax = Self.hypervisorBase + 1
                (e.ebx, e.ecx, e.edx) = Self.kvmSignature
            case Self.hypervisorBase + 1:
                // Pass every PV feature this host supports, but never claim dedicated CPUs:
                // KVM_HINTS_REALTIME would make the guest spin instead of yielding, fatal
                // on an overcommitted host. MSI extended destination IDs only where the
                // IOAPIC is Kite's (KVM's own takes 8-bit destinations).
                let extDestID = UInt32(1) << UInt32(KVMFeature.msiExtDestID.rawValue)
                if extendedDestinationIDs { e.eax |= extDestID } else { e.eax &= ~extDestID }
                if !localAPICsInKVM {
                    for f in Self.apicDependentFeatures { e.eax &= ~(UInt32(1) << UInt32(f.rawValue)) }
                }
                e.edx = 0
            case 0x8000_0001:
                e.ecx &= ~UInt32(1 << 2)           // no SVM (nested)
                if isAMD {
                    if n > 1 { e.ecx |= 1 << 1 } else { e.ecx &= ~UInt32(1 << 1) } // CmpLegacy
                }
            case 0x8000_0008:
                if isAMD {
                    // NC [7:0] = cores - 1, ApicIdCoreIdSize [15:12].
                    e.ecx = (e.ecx & ~UInt32(0xF0FF)) | (coreBits << 12) | UInt32(min(n - 1, 255))
                }
            case 0x8000_001E:
                // AMD extended APIC ID, core ID, one thread per core, one node.
                e.eax = apicID
                e.ebx = apicID & 0xFF
                e.ecx = 0
                e.edx = 0
            default:
                break
            }
            out.append(e)
        }
        // Topology leaf 0xB must exist with subleaves 0, 1, 2 even when the host omits it.
        for sub in UInt32(0)...2 where !out.contains(where: { $0.function == 0xB && $0.index == sub }) {
            out.append(Self.topologyLeaf(function: 0xB, subleaf: sub, apicID: apicID, vcpuCount: n, coreBits: coreBits))
        }
        if maxExtended >= 0x8000_001E, !out.contains(where: { $0.function == 0x8000_001E }), isAMD {
            out.append(CPUIDEntry(function: 0x8000_001E, eax: apicID, ebx: apicID & 0xFF))
        }
        out.append(contentsOf: xsaveLeaves())
        if let i = out.firstIndex(where: { $0.function == 0 }), out[i].eax < 0xB { out[i].eax = 0xB }
        return out
    }

    /// Extended topology: subleaf 0 = SMT level (1 thread), subleaf 1 = core level (N),
    /// higher subleaves invalid; EDX is always the x2APIC ID.
    static func topologyLeaf(function: UInt32, subleaf: UInt32, apicID: UInt32, vcpuCount: Int,
                             coreBits: UInt32) -> CPUIDEntry {
        var e = CPUIDEntry(function: function, index: subleaf, flags: CPUIDEntry.significantIndex)
        e.edx = apicID
        switch subleaf {
        case 0: e.eax = 0; e.ebx = 1; e.ecx = (1 << 8) | 0
        case 1: e.eax = coreBits; e.ebx = UInt32(vcpuCount); e.ecx = (2 << 8) | 1
        default: e.eax = 0; e.ebx = 0; e.ecx = subleaf
        }
        return e
    }

    /// Leaf 0xD made consistent: a user state component is offered only when its subleaf
    /// gives a size, and the maximum sizes are recomputed from the offered components'
    /// offsets and sizes (KVM fixes EBX at run time as the guest sets XCR0).
    func xsaveLeaves() -> [CPUIDEntry] {
        let xsave = supported.filter { $0.function == 0xD }
        guard var main = xsave.first(where: { $0.index == 0 }) else { return [] }
        var mask = (UInt64(main.edx) << 32) | UInt64(main.eax)
        var end: UInt32 = 512 + 64 // legacy area + XSAVE header
        var out: [CPUIDEntry] = []
        for bit in 2..<63 where mask & (1 << UInt64(bit)) != 0 {
            guard let sub = xsave.first(where: { $0.index == UInt32(bit) }), sub.eax > 0,
                  sub.ebx >= 576 || sub.ecx & 1 != 0 else {
                mask &= ~(1 << UInt64(bit))
                continue
            }
            if sub.ecx & 1 == 0 { end = max(end, sub.ebx + sub.eax) } // user state at a fixed offset
            out.append(sub)
        }
        main.eax = UInt32(truncatingIfNeeded: mask)
        main.edx = UInt32(truncatingIfNeeded: mask >> 32)
        main.ecx = end
        main.ebx = 576 // size for XCR0 = x87 only, the reset state; KVM updates it
        main.flags = CPUIDEntry.significantIndex
        var list = [main]
        if let one = xsave.first(where: { $0.index == 1 }) { list.append(one) }
        return list + out
    }
}
