import Diagnosis
import KVM

/// A vCPU's architectural state as read by its own thread (outside KVM_RUN): what a hang
/// snapshot shows of it. Any part KVM refused to give is nil.
struct VCPUStateReading: Sendable {
    var registers: VCPURegisters?
    var mpState: VCPURunnability?
    var apic: LocalAPICState?
    var events: VCPUEvents?
    /// MSR_LSTAR: the runtime address of the guest kernel's `entry_SYSCALL_64` once Linux
    /// set it up (0 before), from which the KASLR offset follows.
    var syscallEntry: UInt64?

    static let msrLSTAR: UInt32 = 0xC000_0082

    static func read(_ vcpu: VCPU, interrupts: any InterruptController) -> VCPUStateReading {
        var r = VCPUStateReading()
        if let regs = try? vcpu.registers(), let sregs = try? vcpu.specialRegisters() {
            r.registers = VCPURegisters(rip: regs.rip, rsp: regs.rsp, rflags: regs.rflags, cr3: sregs.cr3,
                                        cpl: UInt8(sregs.cs.selector & 3))
        }
        if let mp = try? vcpu.mpState() { r.mpState = runnability(mp) }
        r.apic = interrupts.localAPIC(of: vcpu)
        if let e = try? vcpu.events() {
            r.events = VCPUEvents(nmiPending: e.nmi.pending != 0, nmiInjected: e.nmi.injected != 0,
                                  nmiMasked: e.nmi.masked != 0,
                                  injectedInterrupt: e.interrupt.injected != 0 ? e.interrupt.nr : nil,
                                  exception: e.exception.injected != 0 || e.exception.pending != 0
                                      ? e.exception.nr : nil)
        }
        if let values = try? vcpu.readMSRs([msrLSTAR]), let lstar = values.first ?? nil, lstar != 0 {
            r.syscallEntry = lstar
        }
        return r
    }

    static func runnability(_ mp: MPState) -> VCPURunnability {
        switch mp {
        case .runnable: .runnable
        case .halted: .halted
        case .uninitialized: .waitingForSIPI
        case .initReceived: .initReceived
        case .sipiReceived: .sipiReceived
        }
    }
}
