import CKVM

/// One CPUID leaf/subleaf as KVM sees it (kvm_cpuid_entry2), as a plain Swift value.
public struct CPUIDEntry: Equatable, Sendable {
    public var function: UInt32
    public var index: UInt32
    /// KVM_CPUID_FLAG_SIGNIFCANT_INDEX (1) when `index` selects a subleaf.
    public var flags: UInt32
    public var eax: UInt32
    public var ebx: UInt32
    public var ecx: UInt32
    public var edx: UInt32

    public static let significantIndex: UInt32 = 1

    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0,
                eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function; self.index = index; self.flags = flags
        self.eax = eax; self.ebx = ebx; self.ecx = ecx; self.edx = edx
    }

    static func entries(of table: inout ckvm_cpuid) -> [CPUIDEntry] {
        let n = Int(min(table.nent, UInt32(CKVM_MAX_CPUID_ENTRIES)))
        return withUnsafeBytes(of: &table.entries) { raw in
            // Sound: `entries` is a fixed C array of CKVM_MAX_CPUID_ENTRIES kvm_cpuid_entry2.
            let e = raw.bindMemory(to: kvm_cpuid_entry2.self)
            return (0..<n).map { i in
                CPUIDEntry(function: e[i].function, index: e[i].index, flags: e[i].flags,
                           eax: e[i].eax, ebx: e[i].ebx, ecx: e[i].ecx, edx: e[i].edx)
            }
        }
    }

    static func table(from entries: [CPUIDEntry]) -> ckvm_cpuid {
        var table = ckvm_cpuid()
        table.nent = UInt32(min(entries.count, Int(CKVM_MAX_CPUID_ENTRIES)))
        withUnsafeMutableBytes(of: &table.entries) { raw in
            // Sound: as above; at most CKVM_MAX_CPUID_ENTRIES are written.
            let e = raw.bindMemory(to: kvm_cpuid_entry2.self)
            for (i, s) in entries.prefix(Int(CKVM_MAX_CPUID_ENTRIES)).enumerated() {
                e[i] = kvm_cpuid_entry2(function: s.function, index: s.index, flags: s.flags,
                                        eax: s.eax, ebx: s.ebx, ecx: s.ecx, edx: s.edx,
                                        padding: (0, 0, 0))
            }
        }
        return table
    }
}
