import Devices
import Diagnosis
import KVM
import Sandbox
#if canImport(Glibc)
import Glibc
#endif

/// Where device interrupts go and how a vCPU's local APIC is read: one per machine, the seam
/// where Kite's own interrupt controllers (issue 12: `split`, `userspace`) plug in beside
/// KVM's. Whatever a controller posts to a vCPU follows the wake-up protocol of
/// Docs/WakeupProtocol.md.
protocol InterruptController: AnyObject, Sendable {
    /// The mode's name, as `--irqchip` would take it and reports show it.
    var mode: String { get }
    /// Raises or lowers interrupt line `gsi` (the UART, the test devices).
    func setLine(_ gsi: UInt32, level: Bool)
    /// From now on, signalling `eventFD` raises an edge on `gsi` (the virtio devices).
    func attachEdgeTrigger(eventFD: Int32, gsi: UInt32) throws(KVMError)
    /// The vCPU's local APIC, for diagnosis; called on the vCPU's own thread. By default
    /// KVM's (KVM_GET_LAPIC).
    func localAPIC(of vcpu: VCPU) -> LocalAPICState?
    /// Kite's IOAPIC registers for the MMIO bus at `GuestLayout.ioapicAddress`, or nil when
    /// the IOAPIC is KVM's.
    func makeIOAPICDevice() -> (any BusDevice)?
    /// Kite's two 8259 PICs' ports, for the port bus, or nil when the PICs are KVM's.
    func makeLegacyPICDevices() -> LegacyPICDevices?
    /// Before each KVM_RUN where KVM keeps the local APICs, on the vCPU's thread after the
    /// kick was cleared: `split` gives the boot vCPU the PIC's interrupt (KVM_INTERRUPT).
    func beforeEntry(_ index: Int, vcpu: VCPU)
    /// KVM_EXIT_IOAPIC_EOI: the guest ended a level-triggered interrupt of Kite's IOAPIC.
    func endOfInterrupt(vector: UInt8)
    /// The vCPU threads, once created (before they start); the controller's own threads
    /// (userspace mode's APIC timers) start here, confined by `seccomp`'s filters.
    func attach(_ threads: [VCPUThread], seccomp: SeccompFilters?) throws
    /// After every vCPU thread ended: the controller's own threads end too.
    func stop()

    // Where the local APICs live in Kite (`userspace`), the vCPU thread hands these over;
    // `initialState` returning nil (KVM's own APICs) means none of them is ever called.

    /// The per-vCPU state Kite keeps under the vCPU's lock, or nil if KVM keeps it.
    func initialState(forVCPU index: Int, apicID: UInt8) -> UserspaceVCPUState?
    /// Before each KVM_RUN, under the vCPU's lock, after the kick was cleared.
    func prepareEntry(_ index: Int, _ state: inout UserspaceVCPUState, vcpu: VCPU) -> EntryDecision
    /// A HLT exit, under the vCPU's lock.
    func halted(_ state: inout UserspaceVCPUState, vcpu: VCPU)
    /// After an exit at which CR8 (the task priority, which KVM keeps without its own APIC)
    /// differs from what the vCPU entered with: the guest wrote it. Under the vCPU's lock.
    func guestWroteCR8(_ state: inout UserspaceVCPUState, _ cr8: UInt64)
    /// An MMIO access by vCPU `index`, without its lock: true if it was the controller's.
    func localAPICAccess(_ index: Int, address: UInt64, write value: UInt32?, read: (UInt32) -> Void) -> Bool
    /// A trapped MSR access by vCPU `index` (on its thread): a read's value or 0 for a
    /// write, or nil for #GP.
    func msrAccess(_ index: Int, msr: UInt32, write value: UInt64?, vcpu: VCPU) -> UInt64?
}

extension InterruptController {
    func localAPIC(of vcpu: VCPU) -> LocalAPICState? {
        (try? vcpu.localAPIC()).map { LocalAPICState(page: $0) }
    }
    func makeIOAPICDevice() -> (any BusDevice)? { nil }
    func makeLegacyPICDevices() -> LegacyPICDevices? { nil }
    func beforeEntry(_ index: Int, vcpu: VCPU) {}
    func endOfInterrupt(vector: UInt8) {}
    func attach(_ threads: [VCPUThread], seccomp: SeccompFilters?) throws {}
    func stop() {}
    func initialState(forVCPU index: Int, apicID: UInt8) -> UserspaceVCPUState? { nil }
    func prepareEntry(_ index: Int, _ state: inout UserspaceVCPUState, vcpu: VCPU) -> EntryDecision { .enter }
    func halted(_ state: inout UserspaceVCPUState, vcpu: VCPU) {}
    func guestWroteCR8(_ state: inout UserspaceVCPUState, _ cr8: UInt64) {}
    func localAPICAccess(_ index: Int, address: UInt64, write value: UInt32?, read: (UInt32) -> Void) -> Bool { false }
    func msrAccess(_ index: Int, msr: UInt32, write value: UInt64?, vcpu: VCPU) -> UInt64? { nil }
}

/// KVM's in-kernel interrupt controllers: a local APIC per vCPU, the IOAPIC and PIC, and the
/// PIT; lines with KVM_IRQ_LINE, edges from eventfds with KVM_IRQFD. KVM delivers every
/// interrupt and wakes halted vCPUs itself.
final class KernelInterruptController: InterruptController {
    let mode = "kernel"
    private let vm: VirtualMachine

    /// Creates the chips and the PIT; must come before any vCPU exists.
    init(vm: VirtualMachine) throws(KVMError) {
        try vm.createInterruptController()
        try vm.createPIT()
        self.vm = vm
    }

    func setLine(_ gsi: UInt32, level: Bool) {
        try? vm.setInterruptLine(gsi, level: level)
    }

    func attachEdgeTrigger(eventFD: Int32, gsi: UInt32) throws(KVMError) {
        try vm.attachInterrupt(eventFD: eventFD, gsi: gsi)
    }
}

/// Where no irqfd can reach the interrupt controller (`userspace`: KVM has none): each
/// signal of `eventFD`, read by `watch` on the device thread, pulses line `gsi` (high, then
/// low), as KVM's irqfd does for its own IOAPIC.
func pulseLine(_ gsi: UInt32, onSignalOf eventFD: Int32, watch: (Int32, @escaping () -> Void) throws -> Void,
               setLine: @escaping (Bool) -> Void) throws(KVMError) {
    do {
        try watch(eventFD) {
            setLine(true)
            setLine(false)
        }
    } catch {
        throw KVMError("watching the interrupt eventfd of gsi \(gsi): \(error)", errno: EINVAL)
    }
}

extension InterruptController {
    /// Attaches the vCPU threads with no seccomp filter (tests).
    func attach(_ threads: [VCPUThread]) throws { try attach(threads, seccomp: nil) }
}
