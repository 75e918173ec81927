import APIC
import Devices
import Diagnosis
import KVM
import Sandbox
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `split` mode (KVM_CAP_SPLIT_IRQCHIP): the local APICs stay in KVM; the IOAPIC is Kite's
/// (`APIC.IOAPIC`, MMIO at 0xFEC00000), and every interrupt it sends reaches KVM's APICs as
/// an MSI. The two 8259 PICs are Kite's too (`LegacyPIC`, ports 0x20, 0xA0, 0x4D0): ISA
/// lines 0-15 drive both, as KVM's default routing does. There is no PIT: Linux keeps time
/// with kvmclock and the local APIC's TSC-deadline timer.
///
/// The PIC's interrupt: when its output rises, the boot vCPU is kicked (or, halted in KVM,
/// woken by the kick); before its next entry (`beforeEntry`), if KVM says the guest can take
/// an external interrupt, which includes its LINT0 being ExtINT and unmasked, Kite
/// acknowledges the PIC and hands KVM the vector (KVM_INTERRUPT); while one is left, it asks
/// for an interrupt window. This is QEMU's way in this mode.
///
/// GSI routing: whenever the guest changes the IOAPIC's entries, Kite gives KVM one MSI
/// route per entry that needs one (gsi = pin; `IOAPIC.routes(directPins:)`):
/// - the devices' edges (virtio): each device's eventfd is an irqfd on its pin's GSI, so an
///   interrupt goes from the device straight to KVM's APICs as the entry's MSI, with no
///   thread of Kite's in between; a masked entry has no route, and KVM drops the edge, as
///   the IOAPIC would;
/// - level-triggered entries: KVM's local APICs send an EOI back to Kite
///   (KVM_EXIT_IOAPIC_EOI) only for vectors it finds in its routes, as QEMU arranges in
///   this mode; these interrupts themselves go by KVM_SIGNAL_MSI from Kite's IOAPIC, which
///   keeps their remote IRR.
/// Lines Kite drives itself (the UART, the test devices) go through Kite's IOAPIC (then
/// KVM_SIGNAL_MSI) and PICs.
final class SplitInterruptController: InterruptController, @unchecked Sendable {
    let mode = "split"
    private let vm: VirtualMachine
    /// The IOAPIC, the pins whose device signals KVM directly (an irqfd), and the routes
    /// KVM has (installed under the same lock, so in the order the guest wrote the entries).
    /// Sending MSIs needs no lock.
    private struct IOAPICState {
        var ioapic = IOAPIC()
        var directPins: Set<Int> = []
        var routed: [IOAPIC.Route] = []
    }
    private let state = Mutex(IOAPICState())
    private let pic = LegacyPIC()
    /// The boot vCPU's thread, which takes the PIC's interrupts: set once before it starts.
    private let bootVCPU = Mutex<VCPUThread?>(nil)

    /// Enables the split irqchip; must come before any vCPU exists. `x2apicIDs` (more than
    /// 254 vCPUs): KVM takes 32-bit APIC IDs, so that MSIs reach APIC IDs above 255.
    init(vm: VirtualMachine, x2apicIDs: Bool = false) throws(KVMError) {
        try vm.enableSplitInterruptController(pins: UInt64(IOAPIC.pins))
        if x2apicIDs { try vm.enableX2APICAPI() }
        self.vm = vm
    }

    func setLine(_ gsi: UInt32, level: Bool) {
        send(state.withLock { $0.ioapic.setLine(Int(gsi), level: level) })
        if let change = pic.setLine(gsi, level: level) { picOutputChanged(change) }
    }

    func attach(_ threads: [VCPUThread], seccomp: SeccompFilters?) throws {
        bootVCPU.withLock { $0 = threads.first }
    }

    func makeLegacyPICDevices() -> LegacyPICDevices? {
        pic.makeDevices(changed: { [unowned self] in picOutputChanged($0) })
    }

    /// A rising output kicks the boot vCPU, whose next look before entry injects.
    private func picOutputChanged(_ change: LegacyPIC.OutputChange) {
        guard change.level else { return }
        bootVCPU.withLock { $0 }?.wake()
    }

    /// The boot vCPU, before each entry: the PIC's vector if KVM can take it now, and an
    /// interrupt window while the PIC still asks.
    func beforeEntry(_ index: Int, vcpu: VCPU) {
        guard index == 0 else { return }
        let (vector, stillAsking) = pic.update { p -> (UInt8?, Bool) in
            guard p.output, vcpu.canTakeInterrupt else { return (nil, p.output) }
            return (p.acknowledge(), p.output)
        }.0
        if let vector { try? vcpu.injectInterrupt(vector) }
        vcpu.requestInterruptWindow(stillAsking)
    }

    /// Each signal of `eventFD` is an edge on IOAPIC pin `gsi`, delivered by KVM itself: an
    /// irqfd on GSI `gsi`, whose MSI route follows the pin's entry (none while it is masked).
    /// A pin outside the IOAPIC is refused.
    func attachEdgeTrigger(eventFD: Int32, gsi: UInt32) throws(KVMError) {
        guard gsi < UInt32(IOAPIC.pins) else { throw KVMError("no IOAPIC pin \(gsi) for an irqfd", errno: EINVAL) }
        state.withLock { s in
            s.directPins.insert(Int(gsi))
            updateRoutes(&s)
        }
        try vm.attachInterrupt(eventFD: eventFD, gsi: gsi)
    }

    func endOfInterrupt(vector: UInt8) {
        send(state.withLock { $0.ioapic.endOfInterrupt(vector: vector) })
    }

    func makeIOAPICDevice() -> (any BusDevice)? {
        IOAPICWindow(read: { [unowned self] offset in state.withLock { $0.ioapic.read(offset) } },
                     write: { [unowned self] offset, value in send(state.withLock { s in
                         let sent = s.ioapic.write(offset, value)
                         updateRoutes(&s)
                         return sent
                     }) })
    }

    /// Under the IOAPIC's lock: gives KVM the routes the entries need, if they changed.
    private func updateRoutes(_ s: inout IOAPICState) {
        let routes = s.ioapic.routes(directPins: s.directPins)
        guard routes != s.routed else { return }
        do {
            try vm.setMSIRoutes(routes.map { (gsi: UInt32($0.pin), address: $0.message.msi.address, data: $0.message.msi.data) })
            s.routed = routes
        } catch {
            printLine("kite: split irqchip: \(error); the guest's device interrupts may not arrive, and its "
                      + "level-triggered ones may not be acknowledged")
        }
    }

    /// The IOAPIC's messages as MSIs to KVM's local APICs.
    private func send(_ messages: [InterruptMessage]) {
        for m in messages {
            let msi = m.msi
            try? vm.signalMSI(address: msi.address, data: msi.data)
        }
    }
}

/// An IOAPIC's register window on the MMIO bus (`split` and `userspace` modes): 32-bit
/// accesses to IOREGSEL and IOWIN; other widths read 0 and are ignored.
final class IOAPICWindow: BusDevice, @unchecked Sendable {
    /// The window the MMIO bus gives it at `GuestLayout.ioapicAddress`.
    static let length: UInt64 = 0x20
    private let readRegister: (UInt64) -> UInt32
    private let writeRegister: (UInt64, UInt32) -> Void

    init(read: @escaping (UInt64) -> UInt32, write: @escaping (UInt64, UInt32) -> Void) {
        readRegister = read
        writeRegister = write
    }

    func read(offset: UInt64, width: Int) -> UInt64 {
        width == 4 ? UInt64(readRegister(offset)) : 0
    }

    func write(offset: UInt64, width: Int, value: UInt64) {
        guard width == 4 else { return }
        writeRegister(offset, UInt32(truncatingIfNeeded: value))
    }
}
