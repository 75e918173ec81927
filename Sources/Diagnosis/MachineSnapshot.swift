/// What Kite saw of every vCPU at one moment: registers, the in-kernel local APIC, pending
/// events and how the vCPU's thread was doing. Plain data (no KVM types), so diagnosis
/// rules can be tested with hand-made snapshots.
public struct MachineSnapshot: Sendable, Equatable {
    /// Seconds since the machine started running.
    public var uptimeSeconds: Double
    /// Seconds since the guest last printed on any console.
    public var consoleQuietSeconds: Double
    public var vcpus: [VCPUSnapshot]
    /// Which interrupt controllers ran (`--irqchip`: "kernel" for KVM's in-kernel ones);
    /// nil when not known.
    public var interruptController: String?

    public init(uptimeSeconds: Double, consoleQuietSeconds: Double, vcpus: [VCPUSnapshot],
                interruptController: String? = nil) {
        self.uptimeSeconds = uptimeSeconds
        self.consoleQuietSeconds = consoleQuietSeconds
        self.vcpus = vcpus
        self.interruptController = interruptController
    }
}

/// KVM_MP_STATE_* as a diagnosis cares about it.
public enum VCPURunnability: String, Sendable, Equatable {
    case runnable
    case halted
    case waitingForSIPI = "waiting for INIT/SIPI"
    case initReceived = "INIT received"
    case sipiReceived = "SIPI received"
}

/// Where a vCPU's host thread was when the snapshot was taken.
public enum VCPUThreadState: String, Sendable, Equatable {
    /// Inside KVM_RUN (running guest code, or halted inside KVM).
    case inGuest = "in the guest"
    /// Out of KVM_RUN handling an exit (a port or MMIO access) in Kite.
    case handlingExit = "handling an exit in Kite"
    /// Held out of the guest by `--inject stall-vcpu`.
    case stalledByInjection = "held by --inject stall-vcpu"
    /// Held out of the guest because the machine is paused (Firecracker's PATCH /vm).
    case paused = "paused"
    /// Waiting in Kite as the guest asked, with Kite's own local APIC (`--irqchip userspace`):
    /// halted, or waiting for INIT/SIPI. The counterpart of halting inside KVM_RUN.
    case waitingInKite = "waiting in Kite"
    /// The thread has ended.
    case stopped

    /// Where the guest put the vCPU: in KVM_RUN, or waiting in Kite for what would end a
    /// halt inside KVM (not "out of the guest" in the sense of Kite holding it back).
    public var isWhereTheGuestPutIt: Bool { self == .inGuest || self == .waitingInKite }
}

public struct VCPUSnapshot: Sendable, Equatable {
    public var id: Int
    public var thread: VCPUThreadState
    /// `secondsSinceEntry`: for a thread in the guest, how long it has been inside KVM_RUN;
    /// for one out of it, how long since it left (it has not entered since).
    /// `secondsSinceExit`: since the guest last made it come back out (an exit the guest
    /// caused: port, MMIO, HLT, ...; Kite's own kicks do not count).
    public var secondsSinceEntry: Double
    public var secondsSinceExit: Double
    /// Exits to Kite the guest caused so far (kicks not counted).
    public var exitCount: UInt64
    /// False when the vCPU's thread did not answer the snapshot request in time (it is stuck
    /// in the host); then only the thread fields above are known.
    public var answered: Bool
    public var registers: VCPURegisters?
    public var mpState: VCPURunnability?
    public var apic: LocalAPICState?
    public var events: VCPUEvents?
    /// `registers.rip` as "function+0xoff/0xsize", when symbols are known.
    public var ripSymbol: String?
    /// Every VM exit so far, those KVM handles itself included (KVM's statistics), read
    /// before the snapshot's kick; nil where the kernel does not offer it.
    public var kernelExitCount: UInt64?

    public init(id: Int, thread: VCPUThreadState, secondsSinceEntry: Double, secondsSinceExit: Double,
                exitCount: UInt64, answered: Bool, registers: VCPURegisters? = nil,
                mpState: VCPURunnability? = nil, apic: LocalAPICState? = nil, events: VCPUEvents? = nil,
                ripSymbol: String? = nil, kernelExitCount: UInt64? = nil) {
        self.id = id
        self.thread = thread
        self.secondsSinceEntry = secondsSinceEntry
        self.secondsSinceExit = secondsSinceExit
        self.exitCount = exitCount
        self.answered = answered
        self.registers = registers
        self.mpState = mpState
        self.apic = apic
        self.events = events
        self.ripSymbol = ripSymbol
        self.kernelExitCount = kernelExitCount
    }

    /// The function part of `ripSymbol` ("smp_call_function_many_cond"), if known.
    public var ripFunction: String? {
        guard let s = ripSymbol else { return nil }
        return String(s.prefix { $0 != "+" })
    }
}

public struct VCPURegisters: Sendable, Equatable {
    public var rip: UInt64
    public var rsp: UInt64
    public var rflags: UInt64
    public var cr3: UInt64
    /// Current privilege level (0 = kernel, 3 = user).
    public var cpl: UInt8

    public init(rip: UInt64, rsp: UInt64, rflags: UInt64, cr3: UInt64, cpl: UInt8) {
        self.rip = rip
        self.rsp = rsp
        self.rflags = rflags
        self.cr3 = cr3
        self.cpl = cpl
    }

    /// RFLAGS.IF: the vCPU accepts maskable interrupts.
    public var interruptsEnabled: Bool { rflags & (1 << 9) != 0 }
}

/// KVM_GET_VCPU_EVENTS, the parts a hang diagnosis needs.
public struct VCPUEvents: Sendable, Equatable {
    /// An NMI is latched for delivery / being injected now / NMIs are blocked (inside a handler).
    public var nmiPending: Bool
    public var nmiInjected: Bool
    public var nmiMasked: Bool
    /// A maskable interrupt being injected right now, by vector.
    public var injectedInterrupt: UInt8?
    /// An exception being injected or pending, by vector.
    public var exception: UInt8?

    public init(nmiPending: Bool = false, nmiInjected: Bool = false, nmiMasked: Bool = false,
                injectedInterrupt: UInt8? = nil, exception: UInt8? = nil) {
        self.nmiPending = nmiPending
        self.nmiInjected = nmiInjected
        self.nmiMasked = nmiMasked
        self.injectedInterrupt = injectedInterrupt
        self.exception = exception
    }
}

/// The registers of a local APIC page (KVM_GET_LAPIC, the xAPIC MMIO layout) that show
/// where an interrupt is: requested (IRR), in service (ISR), or still being sent (ICR).
public struct LocalAPICState: Sendable, Equatable {
    public var apicID: UInt32
    public var tpr: UInt32
    /// Processor priority (from TPR and the highest in-service vector).
    public var ppr: UInt32
    /// Spurious-interrupt vector register; bit 8 is "APIC software enabled".
    public var svr: UInt32
    /// Vectors set in IRR, ISR and TMR, ascending.
    public var irr: [UInt8]
    public var isr: [UInt8]
    public var tmr: [UInt8]
    /// Interrupt command register: destination (high 32 bits) and command (low 32 bits).
    public var icr: UInt64
    public var timerLVT: UInt32
    public var timerInitialCount: UInt32
    public var timerCurrentCount: UInt32
    public var timerDivide: UInt32

    public init(apicID: UInt32 = 0, tpr: UInt32 = 0, ppr: UInt32 = 0, svr: UInt32 = 0x1ff, irr: [UInt8] = [],
                isr: [UInt8] = [], tmr: [UInt8] = [], icr: UInt64 = 0, timerLVT: UInt32 = 0x10000,
                timerInitialCount: UInt32 = 0, timerCurrentCount: UInt32 = 0, timerDivide: UInt32 = 0) {
        self.apicID = apicID
        self.tpr = tpr
        self.ppr = ppr
        self.svr = svr
        self.irr = irr
        self.isr = isr
        self.tmr = tmr
        self.icr = icr
        self.timerLVT = timerLVT
        self.timerInitialCount = timerInitialCount
        self.timerCurrentCount = timerCurrentCount
        self.timerDivide = timerDivide
    }

    /// Decodes the 1 KiB register page KVM_GET_LAPIC returns (xAPIC layout: each 32-bit
    /// register at a 16-byte aligned offset). A short page decodes as all zeros.
    public init(page: [UInt8]) {
        func reg(_ offset: Int) -> UInt32 {
            guard offset + 4 <= page.count else { return 0 }
            return UInt32(page[offset]) | UInt32(page[offset + 1]) << 8
                | UInt32(page[offset + 2]) << 16 | UInt32(page[offset + 3]) << 24
        }
        func vectors(_ base: Int) -> [UInt8] {
            var v: [UInt8] = []
            for word in 0..<8 {
                let bits = reg(base + 0x10 * word)
                for bit in 0..<32 where bits & (1 << UInt32(bit)) != 0 { v.append(UInt8(word * 32 + bit)) }
            }
            return v
        }
        self.init(apicID: reg(0x20) >> 24, tpr: reg(0x80), ppr: reg(0xA0), svr: reg(0xF0),
                  irr: vectors(0x200), isr: vectors(0x100), tmr: vectors(0x180),
                  icr: UInt64(reg(0x310)) << 32 | UInt64(reg(0x300)),
                  timerLVT: reg(0x320), timerInitialCount: reg(0x380), timerCurrentCount: reg(0x390),
                  timerDivide: reg(0x3E0))
    }

    /// ICR delivery status: 1 = "send pending", the IPI has not been accepted yet.
    public var icrSendPending: Bool { icr & (1 << 12) != 0 }
    public var icrVector: UInt8 { UInt8(truncatingIfNeeded: icr) }
    /// The APIC is software-enabled (SVR bit 8).
    public var softwareEnabled: Bool { svr & (1 << 8) != 0 }
    /// The timer LVT is masked (bit 16).
    public var timerMasked: Bool { timerLVT & (1 << 16) != 0 }
    /// The highest vector in IRR that the APIC would deliver now (above PPR's class).
    public var deliverableVector: UInt8? {
        guard let top = irr.max() else { return nil }
        return UInt32(top) >> 4 > (ppr >> 4) & 0xF ? top : nil
    }
}
