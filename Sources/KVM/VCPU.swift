import CHost
import CKVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public typealias Registers = kvm_regs
public typealias SpecialRegisters = kvm_sregs

/// x86 multiprocessor state of a vCPU (KVM_MP_STATE_*).
public enum MPState: UInt32, Sendable, CustomStringConvertible {
    case runnable = 0, uninitialized = 1, initReceived = 2, halted = 3, sipiReceived = 4
    public var description: String {
        switch self {
        case .runnable: "runnable"
        case .uninitialized: "waiting for INIT/SIPI"
        case .initReceived: "INIT received"
        case .halted: "halted"
        case .sipiReceived: "SIPI received"
        }
    }
}

/// One vCPU: its fd and the shared kvm_run page. `run()` must be called from one thread
/// (the vCPU's own); `kick()` may be called from any thread.
public final class VCPU: @unchecked Sendable {
    public let fd: Int32
    public let id: Int
    private let runPage: UnsafeMutableRawPointer
    private let runPageSize: Int
    /// The thread running this vCPU, once started; kicks are signals to it.
    private let thread = Mutex<pthread_t?>(nil)

    /// The signal used to kick vCPU threads out of KVM_RUN.
    public static let kickSignal: Int32 = SIGUSR2

    /// Where KVM's own count of this vCPU's exits is (its binary statistics fd and the
    /// counter's offset in it); nil where the kernel has no statistics fd (before 5.14).
    private let kernelExits: KVMStatistic?

    init(fd: Int32, id: Int, mmapSize: Int) throws(KVMError) {
        let p = mmap(nil, mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { throw KVMError("mmap kvm_run of vCPU \(id)", errno: errno) }
        self.fd = fd
        self.id = id
        self.runPage = p
        self.runPageSize = mmapSize
        self.kernelExits = KVMStatistic(named: "exits", statisticsOf: fd)
    }

    deinit {
        munmap(runPage, runPageSize)
        close(fd)
    }

    /// Every VM exit of this vCPU so far, those KVM handles itself (HLT, timer, interrupt
    /// windows) included, from KVM's statistics; nil where the kernel does not offer them.
    /// Unlike Kite's own count of the exits that reach it, it moves whenever the vCPU runs
    /// in the guest at all.
    public func kernelExitCount() -> UInt64? { kernelExits?.value() }

    private var runState: UnsafeMutablePointer<kvm_run> {
        // Sound: the mapping is at least sizeof(kvm_run) and lives as long as self.
        runPage.assumingMemoryBound(to: kvm_run.self)
    }

    /// Records the calling thread as this vCPU's thread and lets it receive kicks.
    public func attachCurrentThread() {
        thread.withLock { $0 = pthread_self() }
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, VCPU.kickSignal)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// Makes the next (or current) KVM_RUN return `.interrupted` promptly: sets
    /// immediate_exit (covers a thread about to enter) and signals the thread (covers a
    /// thread inside the guest).
    public func kick() {
        ckvm_set_immediate_exit(runState, 1)
        if let t = thread.withLock({ $0 }) { _ = host_signal_thread(t, VCPU.kickSignal) }
    }

    // MARK: Interrupts without an in-kernel local APIC

    /// Queues external interrupt `vector` for the next entry (KVM_INTERRUPT). Only when
    /// `canTakeInterrupt` says the guest can take one now; call on the vCPU's own thread.
    public func injectInterrupt(_ vector: UInt8) throws(KVMError) {
        var irq = kvm_interrupt()
        irq.irq = UInt32(vector)
        _ = try check("KVM_INTERRUPT vector \(vector)", host_ioctl_ptr(fd, CKVM_INTERRUPT, &irq))
    }

    /// Queues an NMI for the next entry (KVM_NMI).
    public func injectNMI() throws(KVMError) {
        _ = try check("KVM_NMI", host_ioctl_val(fd, CKVM_NMI, 0))
    }

    /// After the last exit: the guest had interrupts enabled and nothing blocked injection
    /// (kvm_run's ready_for_interrupt_injection and if_flag).
    public var canTakeInterrupt: Bool {
        runState.pointee.ready_for_interrupt_injection != 0 && runState.pointee.if_flag != 0
    }

    /// Answers a trapped MSR access: the value a read returns, or nil to raise #GP.
    public func completeMSR(value: UInt64?) {
        runState.pointee.msr.data = value ?? 0
        runState.pointee.msr.error = value == nil ? 1 : 0
    }

    /// KVM_CAP_ENFORCE_PV_FEATURE_CPUID: paravirtual features CPUID does not offer fault
    /// instead of working.
    public func enforcePVFeatureCPUID() throws(KVMError) {
        var cap = kvm_enable_cap()
        cap.cap = UInt32(KVM_CAP_ENFORCE_PV_FEATURE_CPUID)
        cap.args.0 = 1
        _ = try check("KVM_ENABLE_CAP(KVM_CAP_ENFORCE_PV_FEATURE_CPUID)", host_ioctl_ptr(fd, CKVM_ENABLE_CAP, &cap))
    }

    /// The guest TSC's frequency in kHz (KVM_GET_TSC_KHZ).
    public func tscKHz() throws(KVMError) -> UInt64 {
        UInt64(try check("KVM_GET_TSC_KHZ", host_ioctl_val(fd, CKVM_GET_TSC_KHZ, 0)))
    }

    /// CR8 (the task priority, TPR bits 7:4) without an in-kernel local APIC: KVM loads it
    /// from kvm_run at each KVM_RUN and stores the guest's back at each exit, so the VMM's
    /// APIC sets it before entry and reads it after.
    public var cr8: UInt64 {
        get { runState.pointee.cr8 }
        set { runState.pointee.cr8 = newValue }
    }

    /// The guest's RFLAGS.IF at the last exit (kvm_run's if_flag).
    public var interruptsEnabled: Bool { runState.pointee.if_flag != 0 }

    /// Asks KVM to exit with `.interruptWindowOpen` as soon as the guest can take an interrupt.
    public func requestInterruptWindow(_ wanted: Bool) {
        runState.pointee.request_interrupt_window = wanted ? 1 : 0
    }

    /// Clears a kick not yet taken (immediate_exit), before the vCPU's thread looks at what
    /// was posted to it for the last time before KVM_RUN (Docs/WakeupProtocol.md).
    public func clearKick() {
        ckvm_set_immediate_exit(runState, 0)
    }

    /// Enters the guest until the next exit and decodes it.
    public func run() throws(KVMError) -> VCPUExit {
        let r = host_ioctl_val(fd, CKVM_RUN, 0)
        if r == -EINTR || r == -EAGAIN {
            ckvm_set_immediate_exit(runState, 0)
            return .interrupted
        }
        _ = try check("KVM_RUN on vCPU \(id)", r)
        let page = runState
        switch Int32(page.pointee.exit_reason) {
        case KVM_EXIT_IO:
            let io = page.pointee.io
            let size = Int(io.size)
            let bytes = size * Int(io.count)
            let offset = Int(io.data_offset)
            guard offset > 0, offset + bytes <= runPageSize else {
                return .unknown(reason: UInt32(KVM_EXIT_IO))
            }
            let data = UnsafeMutableRawBufferPointer(start: runPage + offset, count: bytes)
            if io.direction == UInt8(KVM_EXIT_IO_OUT) {
                return .ioOut(port: io.port, size: size, data: UnsafeRawBufferPointer(data))
            }
            return .ioIn(port: io.port, size: size, data: data)
        case KVM_EXIT_MMIO:
            let address = page.pointee.mmio.phys_addr
            let length = min(Int(page.pointee.mmio.len), 8)
            let isWrite = page.pointee.mmio.is_write != 0
            // Sound: mmio.data is an 8-byte array inside the mapped run page; length <= 8.
            let data = UnsafeMutableRawBufferPointer(start: ckvm_run_mmio_data(page), count: length)
            return isWrite ? .mmioWrite(address: address, data: UnsafeRawBufferPointer(data))
                           : .mmioRead(address: address, data: data)
        case KVM_EXIT_HLT: return .halt
        case KVM_EXIT_IRQ_WINDOW_OPEN: return .interruptWindowOpen
        case KVM_EXIT_SET_TPR: return .taskPriorityLowered
        case KVM_EXIT_IOAPIC_EOI: return .ioapicEOI(vector: page.pointee.eoi.vector)
        case KVM_EXIT_X86_RDMSR: return .msrRead(index: page.pointee.msr.index)
        case KVM_EXIT_X86_WRMSR: return .msrWrite(index: page.pointee.msr.index, value: page.pointee.msr.data)
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_INTR: return .interrupted
        case KVM_EXIT_FAIL_ENTRY:
            return .failEntry(reason: page.pointee.fail_entry.hardware_entry_failure_reason)
        case KVM_EXIT_INTERNAL_ERROR:
            return .internalError(suberror: page.pointee.internal.suberror)
        case KVM_EXIT_SYSTEM_EVENT:
            return .systemEvent(type: page.pointee.system_event.type)
        default:
            return .unknown(reason: page.pointee.exit_reason)
        }
    }

    // MARK: State

    /// One ioctl that fills a value of type T (KVM_GET_*).
    private func get<T>(_ name: String, _ request: UInt, _ initial: T) throws(KVMError) -> T {
        var value = initial
        _ = try check(name, host_ioctl_ptr(fd, request, &value))
        return value
    }

    /// One ioctl that hands KVM a value of type T (KVM_SET_*).
    private func set<T>(_ name: String, _ request: UInt, _ value: T) throws(KVMError) {
        var v = value
        _ = try check(name, host_ioctl_ptr(fd, request, &v))
    }

    public func registers() throws(KVMError) -> Registers {
        try get("KVM_GET_REGS", CKVM_GET_REGS, kvm_regs())
    }

    public func setRegisters(_ regs: Registers) throws(KVMError) {
        try set("KVM_SET_REGS", CKVM_SET_REGS, regs)
    }

    public func specialRegisters() throws(KVMError) -> SpecialRegisters {
        try get("KVM_GET_SREGS", CKVM_GET_SREGS, kvm_sregs())
    }

    public func setSpecialRegisters(_ sregs: SpecialRegisters) throws(KVMError) {
        try set("KVM_SET_SREGS", CKVM_SET_SREGS, sregs)
    }

    public func setCPUID(_ entries: [CPUIDEntry]) throws(KVMError) {
        try set("KVM_SET_CPUID2", CKVM_SET_CPUID2, CPUIDEntry.table(from: entries))
    }

    /// Writes MSRs; fails unless KVM accepted every one.
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        var table = ckvm_msrs()
        let list = msrs.prefix(Int(CKVM_MAX_MSR_ENTRIES))
        table.nmsrs = UInt32(list.count)
        withUnsafeMutableBytes(of: &table.entries) { raw in
            // Sound: fixed C array of CKVM_MAX_MSR_ENTRIES entries; at most that many written.
            let e = raw.bindMemory(to: kvm_msr_entry.self)
            for (i, m) in list.enumerated() { e[i] = kvm_msr_entry(index: m.index, reserved: 0, data: m.value) }
        }
        let n = try check("KVM_SET_MSRS", host_ioctl_ptr(fd, CKVM_SET_MSRS, &table))
        if n != list.count {
            throw KVMError("KVM_SET_MSRS rejected MSR 0x\(String(list[list.startIndex + Int(n)].index, radix: 16))", errno: EINVAL)
        }
    }

    /// Reads MSRs; nil for any index KVM did not return.
    public func readMSRs(_ indexes: [UInt32]) throws(KVMError) -> [UInt64?] {
        var table = ckvm_msrs()
        let list = Array(indexes.prefix(Int(CKVM_MAX_MSR_ENTRIES)))
        table.nmsrs = UInt32(list.count)
        withUnsafeMutableBytes(of: &table.entries) { raw in
            // Sound: fixed C array of CKVM_MAX_MSR_ENTRIES entries; at most that many written.
            let e = raw.bindMemory(to: kvm_msr_entry.self)
            for (i, index) in list.enumerated() { e[i] = kvm_msr_entry(index: index, reserved: 0, data: 0) }
        }
        let n = Int(try check("KVM_GET_MSRS", host_ioctl_ptr(fd, CKVM_GET_MSRS, &table)))
        return withUnsafeBytes(of: &table.entries) { raw in
            // Sound: the same fixed array, read back; KVM filled the first n entries.
            let e = raw.bindMemory(to: kvm_msr_entry.self)
            return list.indices.map { $0 < n ? e[$0].data : nil }
        }
    }

    /// Pending and injected exceptions, interrupts and NMIs (KVM_GET_VCPU_EVENTS).
    public func events() throws(KVMError) -> kvm_vcpu_events {
        try get("KVM_GET_VCPU_EVENTS", CKVM_GET_VCPU_EVENTS, kvm_vcpu_events())
    }

    /// The in-kernel local APIC's 1 KiB register page.
    public func localAPIC() throws(KVMError) -> [UInt8] {
        var state = try get("KVM_GET_LAPIC", CKVM_GET_LAPIC, kvm_lapic_state())
        return withUnsafeBytes(of: &state.regs) { Array($0) }
    }

    public func setLocalAPIC(_ page: [UInt8]) throws(KVMError) {
        var state = kvm_lapic_state()
        withUnsafeMutableBytes(of: &state.regs) { dst in
            for i in 0..<min(dst.count, page.count) { dst[i] = page[i] }
        }
        try set("KVM_SET_LAPIC", CKVM_SET_LAPIC, state)
    }

    public func mpState() throws(KVMError) -> MPState? {
        MPState(rawValue: try get("KVM_GET_MP_STATE", CKVM_GET_MP_STATE, kvm_mp_state()).mp_state)
    }

    /// Sets XCR0 (the enabled XSAVE state components).
    public func setXCR0(_ value: UInt64) throws(KVMError) {
        var x = kvm_xcrs()
        x.nr_xcrs = 1
        x.xcrs.0 = kvm_xcr(xcr: 0, reserved: 0, value: value)
        try set("KVM_SET_XCRS", CKVM_SET_XCRS, x)
    }

    /// x87/SSE state at reset: FCW 0x37f, MXCSR 0x1f80.
    public func resetFPU() throws(KVMError) {
        var fpu = kvm_fpu()
        fpu.fcw = 0x37f
        fpu.mxcsr = 0x1f80
        try set("KVM_SET_FPU", CKVM_SET_FPU, fpu)
    }
}

