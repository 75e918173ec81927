import KVM

/// A readable dump of a vCPU's registers, for crash exits.
enum CrashReport {
    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 16 - s.count)) + s
    }

    /// Why a triple fault's registers may say nothing of where the guest faulted: AMD's KVM
    /// (svm.c `shutdown_interception`) reinitialises the vCPU before it returns
    /// KVM_EXIT_SHUTDOWN, so what KVM_GET_REGS reads back is the reset vector.
    static let resetStateNote = """
          these are the vCPU's reset state (rip 0xfff0, cs base 0xffff0000), not where it faulted: \
        on AMD hosts KVM reinitialises a vCPU before it reports a triple fault; the faulting rip \
        is in the host's kvm:kvm_exit trace event for exit reason 0x7f (shutdown)
        """

    /// True when the registers are x86's power-on state: what an AMD host leaves after a
    /// triple fault. A running guest never executes at the reset vector with paging and
    /// protection off except right after a reset.
    static func isResetState(rip: UInt64, csBase: UInt64, cr0: UInt64) -> Bool {
        rip == 0xfff0 && csBase == 0xffff_0000 && cr0 & 1 == 0 && cr0 & (1 << 31) == 0
    }

    static func registers(of vcpu: VCPU, afterTripleFault: Bool = false) -> String {
        format(vcpuID: vcpu.id, registers: try? vcpu.registers(), special: try? vcpu.specialRegisters(),
               mpState: (try? vcpu.mpState()) ?? nil, afterTripleFault: afterTripleFault)
    }

    static func format(vcpuID: Int, registers: Registers?, special: SpecialRegisters?, mpState: MPState?,
                       afterTripleFault: Bool) -> String {
        var lines = ["vCPU \(vcpuID) registers:"]
        if let r = registers {
            lines.append("  rip=\(hex(r.rip)) rsp=\(hex(r.rsp)) rflags=\(hex(r.rflags))")
            lines.append("  rax=\(hex(r.rax)) rbx=\(hex(r.rbx)) rcx=\(hex(r.rcx)) rdx=\(hex(r.rdx))")
            lines.append("  rsi=\(hex(r.rsi)) rdi=\(hex(r.rdi)) rbp=\(hex(r.rbp))")
            lines.append("  r8=\(hex(r.r8)) r9=\(hex(r.r9)) r10=\(hex(r.r10)) r11=\(hex(r.r11))")
            lines.append("  r12=\(hex(r.r12)) r13=\(hex(r.r13)) r14=\(hex(r.r14)) r15=\(hex(r.r15))")
        } else {
            lines.append("  (general registers unavailable)")
        }
        if let s = special {
            lines.append("  cr0=\(hex(s.cr0)) cr2=\(hex(s.cr2)) cr3=\(hex(s.cr3)) cr4=\(hex(s.cr4)) efer=\(hex(s.efer))")
            lines.append("  cs=\(String(s.cs.selector, radix: 16)) base=\(hex(s.cs.base)) l=\(s.cs.l) db=\(s.cs.db)"
                         + " gdt=\(hex(s.gdt.base))/\(s.gdt.limit) idt=\(hex(s.idt.base))/\(s.idt.limit)")
        }
        if let mp = mpState { lines.append("  mp_state=\(mp)") }
        if afterTripleFault, let r = registers, let s = special,
           isResetState(rip: r.rip, csBase: s.cs.base, cr0: s.cr0) {
            lines.append(resetStateNote)
        }
        return lines.joined(separator: "\n")
    }
}
