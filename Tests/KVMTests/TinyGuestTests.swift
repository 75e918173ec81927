import HostCalls
import CHost
import CKVM
import Dispatch
import Devices
import Diagnosis
import GuestMemory
import KVM
import Synchronization
import Testing
import TestSupport
import X86Boot
@testable import VMM
#if canImport(Glibc)
import Glibc
#endif

/// KVM tests on the host's /dev/kvm with tiny hand-written guests (Tests/TinyGuests/*.S). They need
/// /dev/kvm and fail, not skip, without it.
@Suite(.serialized) struct TinyGuestTests {
    /// A VM with RAM below 1 MiB (except the MMIO window) and `program` at `origin`, with one real-mode vCPU at it.
    static func makeVM(program: [UInt8], origin: UInt64 = 0x1000, irqchip: Bool = false) throws -> (KVMSystem, VirtualMachine, GuestMemory) {
        let kvm = try KVMSystem()
        let vm = try kvm.createVM()
        try vm.setSystemPages(tss: GuestLayout.kvmTSS, identityMap: GuestLayout.kvmIdentityMap)
        // RAM up to 0xD0000, a hole for MMIO at 0xD0000-0xDFFFF, RAM again to 1 MiB.
        let memory = try GuestMemory(layout: [(0, 0xD0000), (0xE0000, 0x20000)])
        try memory.write(program, at: GuestAddress(origin))
        try vm.map(memory)
        if irqchip { try vm.createInterruptController() }
        return (kvm, vm, memory)
    }

    static func enterRealMode(_ vcpu: VCPU, at rip: UInt64) throws {
        var s = try vcpu.specialRegisters()
        s.cs.base = 0
        s.cs.selector = 0
        try vcpu.setSpecialRegisters(s)
        var r = Registers()
        r.rip = rip
        r.rflags = 2
        try vcpu.setRegisters(r)
    }

    @Test func serialOutputThenHalt() throws {
        let (_, vm, _) = try Self.makeVM(program: GuestPrograms.serialHlt)
        let vcpu = try vm.createVCPU(id: 0)
        try Self.enterRealMode(vcpu, at: 0x1000)
        var out: [UInt8] = []
        var halted = false
        for _ in 0..<100 {
            switch try vcpu.run() {
            case .ioOut(let port, let size, let data):
                #expect(port == 0x3F8 && size == 1)
                out += Array(data)
            case .halt:
                halted = true
            case let other:
                let r = try vcpu.registers()
                Issue.record("unexpected exit \(other) at rip 0x\(String(r.rip, radix: 16))")
                return
            }
            if halted { break }
        }
        #expect(String(decoding: out, as: UTF8.self) == "Kite\n")
        #expect(halted)
    }

    /// KVM's own exit counter (its statistics fd) moves with every exit, whether or not the
    /// exit reaches Kite; the hang diagnosis uses it to tell a vCPU that ran from one that did not.
    @Test func kernelExitCountFollowsTheGuestsExits() throws {
        let (_, vm, _) = try Self.makeVM(program: GuestPrograms.serialHlt)
        let vcpu = try vm.createVCPU(id: 0)
        try Self.enterRealMode(vcpu, at: 0x1000)
        let before = try #require(vcpu.kernelExitCount(), "the host's KVM has no statistics fd (Linux 5.14+)")
        #expect(vcpu.kernelExitCount() == before)   // nothing ran: no exit
        var userExits = 0
        for _ in 0..<100 {
            userExits += 1
            if case .halt = try vcpu.run() { break }
        }
        let after = try #require(vcpu.kernelExitCount())
        #expect(after >= before + UInt64(userExits))
    }

    @Test func mmioOutsideRAMExitsWithAddressAndData() throws {
        let (_, vm, _) = try Self.makeVM(program: GuestPrograms.mmio)
        let vcpu = try vm.createVCPU(id: 0)
        try Self.enterRealMode(vcpu, at: 0x1000)
        var writes: [(UInt64, [UInt8])] = []
        var reads: [UInt64] = []
        var echoed: UInt8?
        loop: for _ in 0..<100 {
            switch try vcpu.run() {
            case .mmioWrite(let address, let data): writes.append((address, Array(data)))
            case .mmioRead(let address, let data):
                reads.append(address)
                #expect(data.count == 1)
                data[0] = 0x99
            case .ioOut(_, _, let data): echoed = data.first
            case .halt: break loop
            case let other: Issue.record("unexpected exit \(other)")
            }
        }
        #expect(writes.count == 2)
        #expect(writes.first?.0 == 0xD0000 && writes.first?.1 == [0x42])
        #expect(writes.last?.0 == 0xD0002 && writes.last?.1 == [0x34, 0x12])
        #expect(reads == [0xD0004])
        #expect(echoed == 0x99)
    }

    /// Records what the guests write to test port 0x10; 'B' ends the test.
    final class TestPort: BusDevice {
        let seen = Mutex<[UInt8]>([])
        let control: MachineControl
        let stopOn: UInt8
        let onByte: @Sendable (UInt8) -> Void
        init(control: MachineControl, stopOn: UInt8 = UInt8(ascii: "B"), onByte: @escaping @Sendable (UInt8) -> Void = { _ in }) {
            self.control = control; self.stopOn = stopOn; self.onByte = onByte
        }
        func read(offset: UInt64, width: Int) -> UInt64 { 0 }
        func write(offset: UInt64, width: Int, value: UInt64) {
            let b = UInt8(truncatingIfNeeded: value)
            seen.withLock { $0.append(b) }
            onByte(b)
            if b == stopOn { control.stop(.powerOff) }
        }
    }

    /// Waits (in poll, no spinning) until the machine is told to stop, at most `seconds`.
    static func waitForStop(_ control: MachineControl, seconds: Int32) -> Bool {
        var fd = pollfd(fd: control.wakeFD, events: Int16(POLLIN), revents: 0)
        return poll(&fd, 1, seconds * 1000) == 1
    }

    /// Attaches `threads` to `controller` and starts them, runs `whileRunning`, waits up to
    /// 20 s for the guest to stop the machine, then stops, releases and joins every thread
    /// and the controller. Returns whether the guest stopped the machine in time.
    static func run(_ threads: [VCPUThread], _ controller: any InterruptController, _ control: MachineControl,
                    whileRunning: () -> Void = {}) throws -> Bool {
        try controller.attach(threads)
        for t in threads { try t.start() }
        whileRunning()
        let finished = waitForStop(control, seconds: 20)
        control.stop(.vmmError("test timed out"))
        for t in threads { t.release() }
        for t in threads { #expect(t.join(withinMilliseconds: 10_000)) }
        controller.stop()
        return finished
    }

    @Test func secondVCPUStartsWithINITSIPIAndAnswersAnIPI() throws {
        let (kvm, vm, memory) = try Self.makeVM(program: GuestPrograms.smpBsp, irqchip: true)
        try memory.write(GuestPrograms.smpAp, at: GuestAddress(0x8000))
        _ = host_install_kick_handler(VCPU.kickSignal)
        let control = try MachineControl()
        let port = TestPort(control: control)
        let ports = try Bus(name: "ports", ranges: [.init(base: 0x10, length: 1, device: port)], report: { _ in })
        let mmio = try Bus(name: "mmio", ranges: [], report: { _ in })
        let template = CPUIDTemplate(supported: try kvm.supportedCPUID(), vcpuCount: 2)
        var threads: [VCPUThread] = []
        for id in 0..<2 {
            let vcpu = try vm.createVCPU(id: id)
            try vcpu.setCPUID(template.entries(forVCPU: id))
            if id == 0 { try Self.enterRealMode(vcpu, at: 0x1000) }
            #expect(try vcpu.mpState() == (id == 0 ? .runnable : .uninitialized))
            threads.append(VCPUThread(vcpu: vcpu, ports: ports, mmio: mmio, interrupts: TestInterrupts(), control: control))
        }
        for t in threads { try t.start() }
        let finished = Self.waitForStop(control, seconds: 20)
        control.stop(.vmmError("test timed out"))
        for t in threads { t.vcpu.kick() }
        for t in threads { #expect(t.join(withinMilliseconds: 10_000)) }
        #expect(finished, "the guests did not finish within 20 s")
        #expect(control.exitReason == .powerOff)
        // AP started ('A'), took the IPI ('I'), and the BSP saw the acknowledgement ('B').
        #expect(String(decoding: port.seen.withLock { $0 }, as: UTF8.self) == "AIB")
        #expect(try memory.read(at: GuestAddress(0x500), count: 2) == [1, 1])
    }

    /// vCPU 0 in flat 32-bit protected mode at 0x1000 (Kite's PVH entry state), on a thread
    /// with `interrupts`; `kiteAPIC`: CPUID for Kite's own local APICs.
    static func protectedModeVCPU(_ kvm: KVMSystem, _ vm: VirtualMachine, ports: Bus, mmio: Bus,
                                  interrupts: any InterruptController, control: MachineControl,
                                  kiteAPIC: Bool, longMode: Bool = false) throws -> VCPUThread {
        let vcpu = try vm.createVCPU(id: 0)
        try vcpu.setCPUID(CPUIDTemplate(supported: try kvm.supportedCPUID(), vcpuCount: 1,
                                        localAPICsInKVM: !kiteAPIC).entries(forVCPU: 0))
        let entry = longMode ? BootEntry.linux64(rip: 0x1000, bootParams: 0) : BootEntry.pvh32(rip: 0x1000, startInfo: 0)
        try vcpu.setSpecialRegisters(EntryState.specialRegisters(try vcpu.specialRegisters(), for: entry))
        try vcpu.setRegisters(EntryState.registers(for: entry))
        return VCPUThread(vcpu: vcpu, ports: ports, mmio: mmio, interrupts: interrupts, control: control)
    }

    /// `userspace` mode: no interrupt controller in KVM. Kite's own local APICs start the
    /// AP with INIT/SIPI, hold it until then, and wake it from HLT with the BSP's IPI, all
    /// through xAPIC MMIO exits and KVM_INTERRUPT.
    @Test func userspaceAPICsStartAnAPAndWakeItFromHLTWithAnIPI() throws {
        let (kvm, vm, memory) = try Self.makeVM(program: GuestPrograms.xapicBsp)
        try memory.write(GuestPrograms.xapicAp, at: GuestAddress(0x8000))
        _ = host_install_kick_handler(VCPU.kickSignal)
        let control = try MachineControl()
        let port = TestPort(control: control)
        let ports = try Bus(name: "ports", ranges: [.init(base: 0x10, length: 1, device: port)], report: { _ in })
        let mmio = try Bus(name: "mmio", ranges: [], report: { _ in })
        let controller = try UserspaceInterruptController(vcpuCount: 2)
        let template = CPUIDTemplate(supported: try kvm.supportedCPUID(), vcpuCount: 2, localAPICsInKVM: false)
        var threads: [VCPUThread] = []
        for id in 0..<2 {
            let vcpu = try vm.createVCPU(id: id)
            try vcpu.setCPUID(template.entries(forVCPU: id))
            if id == 0 {
                try vcpu.setSpecialRegisters(EntryState.specialRegisters(try vcpu.specialRegisters(),
                                                                         for: .pvh32(rip: 0x1000, startInfo: 0)))
                try vcpu.setRegisters(EntryState.registers(for: .pvh32(rip: 0x1000, startInfo: 0)))
            }
            threads.append(VCPUThread(vcpu: vcpu, ports: ports, mmio: mmio, interrupts: controller, control: control))
        }
        let finished = try Self.run(threads, controller, control)
        #expect(finished, "the guests did not finish within 20 s: \(String(decoding: port.seen.withLock { $0 }, as: UTF8.self))")
        #expect(control.exitReason == .powerOff)
        #expect(String(decoding: port.seen.withLock { $0 }, as: UTF8.self) == "AIB")
        #expect(try memory.read(at: GuestAddress(0x500), count: 2) == [1, 1])
    }

    /// `userspace` mode: Kite's local APIC timer wakes a halted vCPU (its own timed wait)
    /// and interrupts one spinning in the guest (the timer thread's kick), 10 ms after the
    /// guest armed it.
    @Test(arguments: [false, true]) func userspaceAPICTimerFires(spinning: Bool) throws {
        let (kvm, vm, memory) = try Self.makeVM(program: GuestPrograms.xapicTimer)
        try EntryState.writeTables(into: memory, longMode: false)
        try memory.write([spinning ? 1 : 0], at: GuestAddress(0x600))
        _ = host_install_kick_handler(VCPU.kickSignal)
        let control = try MachineControl()
        let port = TestPort(control: control, stopOn: UInt8(ascii: "T"))
        let ports = try Bus(name: "ports", ranges: [.init(base: 0x10, length: 1, device: port)], report: { _ in })
        let mmio = try Bus(name: "mmio", ranges: [], report: { _ in })
        let controller = try UserspaceInterruptController(vcpuCount: 1)
        let thread = try Self.protectedModeVCPU(kvm, vm, ports: ports, mmio: mmio, interrupts: controller,
                                                control: control, kiteAPIC: true)
        try controller.attach([thread])
        let start = monotonicNanoseconds()
        try thread.start()
        let finished = Self.waitForStop(control, seconds: 20)
        let elapsed = monotonicNanoseconds() - start
        control.stop(.vmmError("test timed out"))
        thread.release()
        #expect(thread.join(withinMilliseconds: 10_000))
        controller.stop()
        #expect(finished, "the timer never fired")
        #expect(control.exitReason == .powerOff, "\(String(describing: control.exitReason))")
        #expect(String(decoding: port.seen.withLock { $0 }, as: UTF8.self) == "T")
        #expect(elapsed >= 10_000_000, "fired after \(elapsed) ns, before the 10 ms count ran out")
    }

    /// `userspace` mode: the task priority is one register whether the guest writes the
    /// APIC page's TPR or CR8 (KVM keeps CR8 without an in-kernel APIC; Kite hands it over
    /// before each entry and takes it back after each exit). A high CR8 holds a self-IPI
    /// back over two exits; lowering it lets the IPI through (KVM_EXIT_SET_TPR where KVM sees the write,
    /// or the next exit where it emulates it).
    @Test func userspaceAPICTaskPriorityIsCR8() throws {
        let (kvm, vm, memory) = try Self.makeVM(program: GuestPrograms.xapicCr8_64)
        try EntryState.writeTables(into: memory, longMode: true)
        _ = host_install_kick_handler(VCPU.kickSignal)
        let control = try MachineControl()
        let port = TestPort(control: control, stopOn: UInt8(ascii: "I"))
        let ports = try Bus(name: "ports", ranges: [.init(base: 0x10, length: 1, device: port)], report: { _ in })
        let mmio = try Bus(name: "mmio", ranges: [], report: { _ in })
        let controller = try UserspaceInterruptController(vcpuCount: 1)
        let thread = try Self.protectedModeVCPU(kvm, vm, ports: ports, mmio: mmio, interrupts: controller,
                                                control: control, kiteAPIC: true, longMode: true)
        let finished = try Self.run([thread], controller, control)
        let seen = String(decoding: port.seen.withLock { $0 }, as: UTF8.self)
        #expect(finished, "the guest said \(seen)")
        #expect(control.exitReason == .powerOff, "\(String(describing: control.exitReason))")
        #expect(seen == "TBCI" || seen == "TBCLI", "\(seen)")
    }

    /// The wake-up protocol on real threads (Docs/WakeupProtocol.md; Models/wakeup.pml is
    /// its exhaustive check): a test thread raises an interrupt at a random moment after
    /// the guest answered the last one: at once, while the vCPU's thread still handles the
    /// guest's port write, in a short spin, or after a sleep, when the vCPU is halted (in
    /// Kite in `userspace` mode, in KVM otherwise) or, every 64th round, still running its
    /// handler with interrupts off. Every one must be taken, in every mode; a lost wake-up
    /// is a round that times out. The seed is in the failure message.
    @Test(arguments: ["kernel", "split", "userspace"])
    func everyInterruptRaisedAtARandomMomentIsTaken(mode: String) throws {
        let rounds: UInt32 = 4000
        let seed = UInt64(monotonicNanoseconds())
        var random = SplitMix64(seed: seed)
        let lastAnswer = Mutex<UInt32>(0)
        let answered = DispatchSemaphore(value: 0)
        let (thread, controller, control, machine) = try Self.startWakeGuest(mode) { count in
            lastAnswer.withLock { $0 = count }
            answered.signal()
        }
        defer { Self.finish(thread, controller, control); withExtendedLifetime(machine) {} }
        var lost: String?
        for round in 1...rounds {
            switch random.next() % 4 {
            case 0: break                                                    // at once
            case 1: let until = monotonicNanoseconds() + random.next() % 20_000  // spin up to 20 µs
                    while monotonicNanoseconds() < until {}
            default: usleep(UInt32(20 + random.next() % 500))               // sleep 20-520 µs
            }
            controller.setLine(5, level: true)
            controller.setLine(5, level: false)
            guard answered.wait(timeout: .now() + 10) == .success else {
                let report = thread.threadReport(now: monotonicNanoseconds())
                lost = "round \(round) of \(rounds) was never taken (seed \(seed)); the vCPU's thread is \(report.state)"
                break
            }
            let answer = lastAnswer.withLock { $0 }
            guard answer == round else {
                lost = "round \(round): the guest counted \(answer) interrupts (seed \(seed))"
                break
            }
        }
        #expect(lost == nil, "\(lost ?? "")")
        #expect(control.exitReason == nil, "\(String(describing: control.exitReason))")
    }

    /// The i8042's keyboard (Firecracker's SendCtrlAltDel) in every mode: one edge on IRQ 1
    /// for the four bytes, then one more each time the guest's handler reads a byte and more
    /// wait, as Linux's i8042 driver needs (it reads one byte per interrupt): the guest,
    /// reading a byte per interrupt and writing EOI after it, must see all four. The edges go
    /// through an irqfd where KVM has the IOAPIC (kernel) or its routes (split), as `Machine`
    /// wires them; Kite's own IOAPIC (userspace) gets the pulse directly.
    @Test(arguments: ["kernel", "split", "userspace"])
    func ctrlAltDeleteArrivesAByteAnInterrupt(mode: String) throws {
        let (kvm, vm, memory) = try Self.makeVM(program: GuestPrograms.kbd_64)
        try EntryState.writeTables(into: memory, longMode: true)
        let controller = try Self.interruptController(mode, vm)
        _ = host_install_kick_handler(VCPU.kickSignal)
        let control = try MachineControl()
        let ready = DispatchSemaphore(value: 0)
        let port = TestPort(control: control, stopOn: 0x71, onByte: { if $0 == UInt8(ascii: "R") { ready.signal() } })
        let irqfd = try EventFD()
        if mode != "userspace" { try controller.attachEdgeTrigger(eventFD: irqfd.fd, gsi: 1) }
        let viaIRQFD = mode != "userspace"
        let keyboard = I8042(onReset: {}, keyboardInterrupt: { @Sendable in
            if viaIRQFD { irqfd.signal(); return }
            controller.setLine(1, level: true)
            controller.setLine(1, level: false)
        })
        let ports = try Self.portBus([.init(base: 0x10, length: 1, device: port),
                                      .init(base: Machine.Ports.i8042, length: 5, device: keyboard)], controller)
        let ioapic = controller.makeIOAPICDevice()
        let mmio = try Bus(name: "mmio", ranges: ioapic.map { [.init(base: GuestLayout.ioapicAddress, length: IOAPICWindow.length,
                                                                      device: $0)] } ?? [], report: { _ in })
        let thread = try Self.protectedModeVCPU(kvm, vm, ports: ports, mmio: mmio, interrupts: controller,
                                                control: control, kiteAPIC: mode == "userspace", longMode: true)
        let (wasReady, finished) = try Self.runRaisingWhenHalted(thread, controller, control, ready: ready) {
            #expect(keyboard.pressCtrlAltDelete())
        }
        let seen = port.seen.withLock { $0 }
        #expect(wasReady && finished, "the guest said \(seen)")
        #expect(seen == [UInt8(ascii: "R"), 0x14, 0x11, 0xE0, 0x71])
    }

    /// Pause (Firecracker's PATCH /vm) in every mode: an interrupt raised while the vCPU is
    /// held out of the guest is not taken then, and is taken once it resumes; nothing is lost.
    @Test(arguments: ["kernel", "split", "userspace"])
    func anInterruptRaisedWhilePausedIsTakenOnResume(mode: String) throws {
        let answered = DispatchSemaphore(value: 0)
        let (thread, controller, control, machine) = try Self.startWakeGuest(mode) { _ in answered.signal() }
        defer { Self.finish(thread, controller, control); withExtendedLifetime(machine) {} }
        #expect(thread.pause(untilNanoseconds: monotonicNanoseconds() + 5_000_000_000), "the vCPU did not leave the guest")
        #expect(thread.threadReport(now: monotonicNanoseconds()).state == .paused)
        controller.setLine(5, level: true)
        controller.setLine(5, level: false)
        #expect(answered.wait(timeout: .now() + 0.3) == .timedOut, "a paused vCPU took an interrupt")
        thread.resume()
        #expect(answered.wait(timeout: .now() + 10) == .success, "the interrupt raised while paused was lost")
    }

    /// Starts xapic_wake_64.S on one vCPU in `mode` and returns once the guest said it is
    /// ready; `onAnswer` gets its count after each interrupt it takes (port 0x11). Stop it
    /// with `finish`.
    /// The VM and its memory are in the result so that they live as long as the guest runs.
    static func startWakeGuest(_ mode: String, onAnswer: @escaping @Sendable (UInt32) -> Void) throws
        -> (thread: VCPUThread, controller: any InterruptController, control: MachineControl,
            keepAlive: (KVMSystem, VirtualMachine, GuestMemory)) {
        let (kvm, vm, memory) = try makeVM(program: GuestPrograms.xapicWake_64)
        try EntryState.writeTables(into: memory, longMode: true)
        let controller = try interruptController(mode, vm)
        _ = host_install_kick_handler(VCPU.kickSignal)
        let control = try MachineControl()
        let ready = DispatchSemaphore(value: 0)
        let port = TestPort(control: control, stopOn: 0, onByte: { if $0 == UInt8(ascii: "R") { ready.signal() } })
        let ports = try Bus(name: "ports", ranges: [.init(base: 0x10, length: 1, device: port),
                                                    .init(base: 0x11, length: 4, device: CountPort(onCount: onAnswer))], report: { _ in })
        let ioapic = controller.makeIOAPICDevice()
        let mmio = try Bus(name: "mmio", ranges: ioapic.map { [.init(base: GuestLayout.ioapicAddress, length: IOAPICWindow.length,
                                                                      device: $0)] } ?? [], report: { _ in })
        let thread = try protectedModeVCPU(kvm, vm, ports: ports, mmio: mmio, interrupts: controller,
                                           control: control, kiteAPIC: mode == "userspace", longMode: true)
        try controller.attach([thread])
        try thread.start()
        guard ready.wait(timeout: .now() + 20) == .success else {
            finish(thread, controller, control)
            throw SetupError("the guest never said it was ready")
        }
        return (thread, controller, control, (kvm, vm, memory))
    }

    /// Stops what `startWakeGuest` started, in order.
    static func finish(_ thread: VCPUThread, _ controller: any InterruptController, _ control: MachineControl) {
        control.stop(.vmmError("test over"))
        thread.release()
        #expect(thread.join(withinMilliseconds: 10_000))
        controller.stop()
    }

    /// Port 0x11: the guest's 32-bit count of interrupts taken.
    final class CountPort: BusDevice {
        let onCount: @Sendable (UInt32) -> Void
        init(onCount: @escaping @Sendable (UInt32) -> Void) { self.onCount = onCount }
        func read(offset: UInt64, width: Int) -> UInt64 { 0 }
        func write(offset: UInt64, width: Int, value: UInt64) { onCount(UInt32(truncatingIfNeeded: value)) }
    }

    /// `userspace` mode: a guest that clears IA32_APIC_BASE's enable bit (its writes are
    /// trapped to Kite) finds no APIC at its page, and after setting the bit again an APIC in
    /// its power-up state, as kvm-unit-tests' apic_disable test expects; a new base moves the
    /// APIC's page (its apicbase test).
    @Test func userspaceAPICCanBeDisabledEnabledAndMoved() throws {
        let (kvm, vm, memory) = try Self.makeVM(program: GuestPrograms.xapicDisable)
        try EntryState.writeTables(into: memory, longMode: false)
        try vm.trapMSRs(UserspaceInterruptController.trappedMSRs)
        _ = host_install_kick_handler(VCPU.kickSignal)
        let control = try MachineControl()
        let port = TestPort(control: control, stopOn: UInt8(ascii: "M"))
        let ports = try Bus(name: "ports", ranges: [.init(base: 0x10, length: 1, device: port)], report: { _ in })
        let mmio = try Bus(name: "mmio", ranges: [], report: { _ in })
        let controller = try UserspaceInterruptController(vcpuCount: 1)
        let thread = try Self.protectedModeVCPU(kvm, vm, ports: ports, mmio: mmio, interrupts: controller,
                                                control: control, kiteAPIC: true)
        try X86VCPUSetup.configure(thread.vcpu, cpuid: CPUIDTemplate(supported: try kvm.supportedCPUID(), vcpuCount: 1,
                                                                     localAPICsInKVM: false).entries(forVCPU: 0),
                                   localAPICInKVM: false)
        try thread.vcpu.setSpecialRegisters(EntryState.specialRegisters(try thread.vcpu.specialRegisters(),
                                                                        for: .pvh32(rip: 0x1000, startInfo: 0)))
        try thread.vcpu.setRegisters(EntryState.registers(for: .pvh32(rip: 0x1000, startInfo: 0)))
        let finished = try Self.run([thread], controller, control)
        let seen = String(decoding: port.seen.withLock { $0 }, as: UTF8.self)
        #expect(finished, "the guest said \(seen); \(String(describing: control.exitReason))")
        #expect(seen == "DEM")
    }

    /// The `--irqchip` mode's controller for a one-vCPU VM (devices' eventfds not watched).
    static func interruptController(_ mode: String, _ vm: VirtualMachine) throws -> any InterruptController {
        switch mode {
        case "kernel": try KernelInterruptController(vm: vm)
        case "split": try SplitInterruptController(vm: vm)
        default: try UserspaceInterruptController(vcpuCount: 1)
        }
    }

    /// Runs one vCPU thread whose guest signals `ready` and then halts; `raise` comes 50 ms
    /// after the signal, so that the interrupt must wake the halted vCPU rather than catch it
    /// running. Returns whether the guest got ready, and whether it stopped the machine in time.
    static func runRaisingWhenHalted(_ thread: VCPUThread, _ controller: any InterruptController,
                                     _ control: MachineControl, ready: DispatchSemaphore,
                                     raise: () -> Void) throws -> (ready: Bool, finished: Bool) {
        var wasReady = false
        let finished = try run([thread], controller, control) {
            wasReady = ready.wait(timeout: .now() + 20) == .success
            usleep(50_000)
            raise()
        }
        return (wasReady, finished)
    }

    /// A port bus with `ranges` and, where they are Kite's, the controller's PICs where a PC has them.
    static func portBus(_ ranges: [Bus.Range], _ controller: any InterruptController) throws -> Bus {
        var ranges = ranges
        if let pics = controller.makeLegacyPICDevices() {
            ranges += [.init(base: Machine.Ports.picMaster, length: LegacyPICDevices.chipPortCount, device: pics.master),
                       .init(base: Machine.Ports.picSlave, length: LegacyPICDevices.chipPortCount, device: pics.slave),
                       .init(base: Machine.Ports.edgeLevelControl, length: LegacyPICDevices.edgeLevelControlPortCount,
                             device: pics.edgeLevelControl)]
        }
        return try Bus(name: "ports", ranges: ranges, report: { _ in })
    }

    /// An ISA line raised on another thread reaches the halted boot vCPU through the 8259
    /// PICs the guest programmed over ports 0x20/0xA0 and through LINT0 in its reset state
    /// (ExtINT, unmasked): KVM's PIC and APIC in `kernel` mode; Kite's PIC and KVM's APIC
    /// (KVM_INTERRUPT once KVM says the vCPU can take it) in `split`; Kite's PIC and APIC in
    /// `userspace`. The vector is the one the guest gave, and its EOI empties the PIC's ISR.
    @Test(arguments: ["kernel", "split", "userspace"])
    func picInterruptWakesTheHaltedBootVCPU(mode: String) throws {
        let (kvm, vm, memory) = try Self.makeVM(program: GuestPrograms.picExtint)
        try EntryState.writeTables(into: memory, longMode: false)
        let controller = try Self.interruptController(mode, vm)
        _ = host_install_kick_handler(VCPU.kickSignal)
        let control = try MachineControl()
        let ready = DispatchSemaphore(value: 0)
        let port = TestPort(control: control, stopOn: UInt8(ascii: "E"), onByte: { if $0 == UInt8(ascii: "R") { ready.signal() } })
        #expect((controller.makeLegacyPICDevices() == nil) == (mode == "kernel"))
        let ports = try Self.portBus([.init(base: 0x10, length: 1, device: port)], controller)
        let mmio = try Bus(name: "mmio", ranges: [], report: { _ in })
        let thread = try Self.protectedModeVCPU(kvm, vm, ports: ports, mmio: mmio, interrupts: controller,
                                                control: control, kiteAPIC: mode == "userspace")
        let (wasReady, finished) = try Self.runRaisingWhenHalted(thread, controller, control, ready: ready) {
            controller.setLine(5, level: true)
            controller.setLine(5, level: false)
        }
        let seen = String(decoding: port.seen.withLock { $0 }, as: UTF8.self)
        #expect(wasReady && finished, "the guest said \(seen)")
        #expect(control.exitReason == .powerOff, "\(String(describing: control.exitReason))")
        #expect(seen == "RPE")
    }

    /// A device line raised on another thread reaches the halted vCPU through Kite's IOAPIC
    /// (programmed by the guest over MMIO): in `userspace` mode through Kite's local APIC,
    /// in `split` mode as an MSI to KVM's. Edge-triggered (xapic_ioapic.S), it wakes the
    /// vCPU once; level-triggered and held high (xapic_ioapic_level.S), the guest's EOI must
    /// come back to the IOAPIC (Kite's APIC's level EOI, or KVM_EXIT_IOAPIC_EOI, which KVM
    /// sends only for vectors Kite gave it as routes) and the interrupt comes again.
    @Test(arguments: [("userspace", false), ("userspace", true), ("split", false), ("split", true)])
    func ioapicLineWakesAHaltedVCPU(mode: String, levelTriggered: Bool) throws {
        let (kvm, vm, memory) = try Self.makeVM(program: levelTriggered ? GuestPrograms.xapicIoapicLevel : GuestPrograms.xapicIoapic)
        try EntryState.writeTables(into: memory, longMode: false)
        let controller = try Self.interruptController(mode, vm)
        _ = host_install_kick_handler(VCPU.kickSignal)
        let control = try MachineControl()
        let ready = DispatchSemaphore(value: 0)
        let last = UInt8(ascii: levelTriggered ? "E" : "D")
        let port = TestPort(control: control, stopOn: last, onByte: { if $0 == UInt8(ascii: "R") { ready.signal() } })
        let ports = try Self.portBus([.init(base: 0x10, length: 1, device: port)], controller)
        let mmio = try Bus(name: "mmio", ranges: [.init(base: GuestLayout.ioapicAddress, length: IOAPICWindow.length,
                                                         device: controller.makeIOAPICDevice()!)], report: { _ in })
        let thread = try Self.protectedModeVCPU(kvm, vm, ports: ports, mmio: mmio, interrupts: controller,
                                                control: control, kiteAPIC: mode == "userspace")
        let (wasReady, finished) = try Self.runRaisingWhenHalted(thread, controller, control, ready: ready) {
            controller.setLine(5, level: true)
        }
        let seen = String(decoding: port.seen.withLock { $0 }, as: UTF8.self)
        #expect(wasReady && finished, "the guest said \(seen)")
        #expect(control.exitReason == .powerOff, "\(String(describing: control.exitReason))")
        #expect(seen == (levelTriggered ? "RDE" : "RD"))
    }

    /// `split` mode: a device's eventfd is an irqfd on its IOAPIC pin, and the pin's MSI
    /// route, installed when the guest unmasks the entry, carries the edge from the eventfd
    /// to KVM's APIC with no thread of Kite's in between (this test runs no device thread).
    /// Before the guest programs the entry there is no route, and a signal is dropped, as
    /// the IOAPIC drops an edge on a masked entry.
    @Test func splitModeDeviceEdgesGoStraightFromTheEventFDToKVM() throws {
        let (kvm, vm, memory) = try Self.makeVM(program: GuestPrograms.xapicIoapic)
        try EntryState.writeTables(into: memory, longMode: false)
        let controller = try Self.interruptController("split", vm)
        let device = try EventFD()
        try controller.attachEdgeTrigger(eventFD: device.fd, gsi: 5)
        device.signal()   // the entry is still masked: no route, nothing delivered
        _ = host_install_kick_handler(VCPU.kickSignal)
        let control = try MachineControl()
        let ready = DispatchSemaphore(value: 0)
        let signalled = Mutex(false), tookTheEarlyOne = Mutex(false)
        let port = TestPort(control: control, stopOn: UInt8(ascii: "D"), onByte: { byte in
            if byte == UInt8(ascii: "R") { ready.signal() }
            if byte == UInt8(ascii: "D") && !signalled.withLock({ $0 }) { tookTheEarlyOne.withLock { $0 = true } }
        })
        let ports = try Self.portBus([.init(base: 0x10, length: 1, device: port)], controller)
        let mmio = try Bus(name: "mmio", ranges: [.init(base: GuestLayout.ioapicAddress, length: IOAPICWindow.length,
                                                         device: controller.makeIOAPICDevice()!)], report: { _ in })
        let thread = try Self.protectedModeVCPU(kvm, vm, ports: ports, mmio: mmio, interrupts: controller,
                                                control: control, kiteAPIC: false)
        let (wasReady, finished) = try Self.runRaisingWhenHalted(thread, controller, control, ready: ready) {
            signalled.withLock { $0 = true }
            device.signal()
        }
        let seen = String(decoding: port.seen.withLock { $0 }, as: UTF8.self)
        #expect(wasReady && finished, "the guest said \(seen)")
        #expect(seen == "RD")
        #expect(!tookTheEarlyOne.withLock { $0 }, "the signal sent while the entry was masked was delivered")
    }

    /// More than 254 vCPUs (`split`): each local APIC starts in x2APIC mode with its 32-bit
    /// ID, the BSP flag only on vCPU 0; below that, xAPIC mode as before.
    @Test func manyVCPUsStartInX2APICMode() throws {
        let (kvm, vm, _) = try Self.makeVM(program: [0xF4])
        _ = try SplitInterruptController(vm: vm, x2apicIDs: true)
        let template = CPUIDTemplate(supported: try kvm.supportedCPUID(), vcpuCount: 300, extendedDestinationIDs: true)
        for id in [0, 299] {
            let vcpu = try vm.createVCPU(id: id)
            try X86VCPUSetup.configure(vcpu, cpuid: template.entries(forVCPU: id), x2apicMode: true)
            let base = try #require(try vcpu.readMSRs([0x1B]).first ?? nil)
            #expect(base == 0xFEE0_0C00 | (id == 0 ? 0x100 : 0), "vCPU \(id): APIC base 0x\(String(base, radix: 16))")
            // In x2APIC mode (with 32-bit IDs) the ID register holds the whole x2APIC ID.
            let page = try vcpu.localAPIC()
            #expect(page.get(UInt32.self, at: 0x20) == UInt32(id))
        }
        let small = try vm.createVCPU(id: 1)
        try X86VCPUSetup.configure(small, cpuid: template.entries(forVCPU: 1))
        #expect(try small.readMSRs([0x1B]).first ?? nil == 0xFEE0_0800)
    }

    /// A started vCPU thread whose guest spins (`jmp .`) without ever exiting. The VM and
    /// its memory come back too: the caller keeps them alive while the vCPU runs.
    static func startSpinningVCPU() throws -> (VCPUThread, VCPU, MachineControl, (VirtualMachine, GuestMemory)) {
        let spin: [UInt8] = [0xEB, 0xFE]            // jmp .
        let (_, vm, memory) = try makeVM(program: spin)
        _ = host_install_kick_handler(VCPU.kickSignal)
        let control = try MachineControl()
        let vcpu = try vm.createVCPU(id: 0)
        try enterRealMode(vcpu, at: 0x1000)
        let bus = try Bus(name: "none", ranges: [], report: { _ in })
        let t = VCPUThread(vcpu: vcpu, ports: bus, mmio: bus, interrupts: TestInterrupts(), control: control)
        try t.start()
        return (t, vcpu, control, (vm, memory))
    }

    @Test func kickStopsAVCPUThatNeverExits() throws {
        let (t, vcpu, control, machine) = try Self.startSpinningVCPU()
        withExtendedLifetime(machine) {
            #expect(!Self.waitForStop(control, seconds: 1))   // still spinning in the guest
            control.stop(.stopped(signal: SIGTERM))
            vcpu.kick()
            #expect(t.join(withinMilliseconds: 10_000))       // ends only if the kick worked
            #expect(control.exitReason == .stopped(signal: SIGTERM))
        }
        #expect(try vcpu.registers().rip == 0x1000)
    }

    @Test func joinGivesUpOnAThreadThatStaysInTheGuest() throws {
        // A stop without a kick leaves the thread inside KVM_RUN, as a thread stuck in the
        // host kernel would be: the join must time out instead of waiting forever.
        let (t, vcpu, control, machine) = try Self.startSpinningVCPU()
        withExtendedLifetime(machine) {
            #expect(!Self.waitForStop(control, seconds: 1))
            control.stop(.stopped(signal: SIGTERM))
            #expect(!t.join(withinMilliseconds: 300))
            #expect(t.threadReport(now: monotonicNanoseconds()).state == .inGuest)
            vcpu.kick()
            #expect(t.join(withinMilliseconds: 10_000))
        }
    }

    @Test func undeliverableExceptionIsACrashWithRegisters() throws {
        // Flat 32-bit protected mode with an IDT limit of 0: int3 raises #GP, which cannot
        // be delivered either (#DF), which is a triple fault.
        let (_, vm, _) = try Self.makeVM(program: [0xCC])
        _ = host_install_kick_handler(VCPU.kickSignal)
        let vcpu = try vm.createVCPU(id: 0)
        var s = EntryState.specialRegisters(try vcpu.specialRegisters(), for: .pvh32(rip: 0x1000, startInfo: 0))
        s.idt.limit = 0
        try vcpu.setSpecialRegisters(s)
        try vcpu.setRegisters(EntryState.registers(for: .pvh32(rip: 0x1000, startInfo: 0)))
        let control = try MachineControl()
        let bus = try Bus(name: "none", ranges: [], report: { _ in })
        let t = VCPUThread(vcpu: vcpu, ports: bus, mmio: bus, interrupts: TestInterrupts(), control: control)
        try t.start()
        let stopped = Self.waitForStop(control, seconds: 10)
        control.stop(.vmmError("timeout"))
        vcpu.kick()
        #expect(t.join(withinMilliseconds: 10_000))
        #expect(stopped)
        guard case .crash(let id, let reason, let report) = control.exitReason else {
            Issue.record("expected a crash, got \(String(describing: control.exitReason))")
            return
        }
        #expect(id == 0)
        // Hardware KVM reports the triple fault; kvm_pvm reports the failed exception
        // delivery as an emulation failure. Both must end the machine as a crash.
        #expect(reason.contains("triple fault") || reason.contains("internal error"), "\(reason)")
        #expect(report.contains("vCPU 0 registers") && report.contains("cr0="))
    }
}

/// The interrupt controller seam for VMs the tests build by hand: lines go nowhere; the
/// local APIC is read from KVM where the test created the in-kernel one.
final class TestInterrupts: InterruptController {
    let mode = "test"
    func setLine(_ gsi: UInt32, level: Bool) {}
    func attachEdgeTrigger(eventFD: Int32, gsi: UInt32) throws(KVMError) {}
}
