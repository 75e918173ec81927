import KVM

/// A readable dump of a vCPU's registers, for crash exits.
enum CrashReport {
    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 16 - s.count)) + s
    }

    static func registers(of vcpu: VCPU) -> String {
        var lines = ["vCPU \(vcpu.id) registers:"]
        if let r = try? vcpu.registers() {
            lines.append("  rip=\(hex(r.rip)) rsp=\(hex(r.rsp)) rflags=\(hex(r.rflags))")
            lines.append("  rax=\(hex(r.rax)) rbx=\(hex(r.rbx)) rcx=\(hex(r.rcx)) rdx=\(hex(r.rdx))")
            lines.append("  rsi=\(hex(r.rsi)) rdi=\(hex(r.rdi)) rbp=\(hex(r.rbp))")
            lines.append("  r8=\(hex(r.r8)) r9=\(hex(r.r9)) r10=\(hex(r.r10)) r11=\(hex(r.r11))")
            lines.append("  r12=\(hex(r.r12)) r13=\(hex(r.r13)) r14=\(hex(r.r14)) r15=\(hex(r.r15))")
        } else {
            lines.append("  (general registers unavailable)")
        }
        if let s = try? vcpu.specialRegisters() {
            lines.append("  cr0=\(hex(s.cr0)) cr2=\(hex(s.cr2)) cr3=\(hex(s.cr3)) cr4=\(hex(s.cr4)) efer=\(hex(s.efer))")
            lines.append("  cs=\(String(s.cs.selector, radix: 16)) base=\(hex(s.cs.base)) l=\(s.cs.l) db=\(s.cs.db)"
                         + " gdt=\(hex(s.gdt.base))/\(s.gdt.limit) idt=\(hex(s.idt.base))/\(s.idt.limit)")
        }
        if let mp = try? vcpu.mpState() { lines.append("  mp_state=\(mp)") }
        return lines.joined(separator: "\n")
    }
}
