import CHost
import CKVM
import GuestMemory
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A KVM virtual machine: memory slots, the in-kernel interrupt controllers and PIT,
/// interrupt lines, and vCPU creation. Owns the VM fd.
public final class VirtualMachine: Sendable {
    public let fd: Int32
    public let system: KVMSystem
    /// Memory registered as KVM slots stays alive as long as the VM: KVM holds raw host
    /// addresses into it, so unmapping it first would pull pages out from under the guest.
    private let mapped = Mutex<[GuestMemory]>([])

    init(fd: Int32, system: KVMSystem) {
        self.fd = fd
        self.system = system
    }

    deinit { close(fd) }

    /// Registers every region of `memory` as a KVM memory slot.
    public func map(_ memory: GuestMemory) throws(KVMError) {
        mapped.withLock { $0.append(memory) }
        for (slot, region) in memory.regions.enumerated() {
            var r = kvm_userspace_memory_region(
                slot: UInt32(slot), flags: 0, guest_phys_addr: region.base.raw,
                memory_size: region.size, userspace_addr: UInt64(region.hostAddress))
            _ = try check("KVM_SET_USER_MEMORY_REGION", host_ioctl_ptr(fd, CKVM_SET_USER_MEMORY_REGION, &r))
        }
    }

    /// x86: the three pages KVM needs for real-mode emulation on Intel, and the identity
    /// map page; both must lie outside RAM.
    public func setSystemPages(tss: UInt64, identityMap: UInt64) throws(KVMError) {
        _ = try check("KVM_SET_TSS_ADDR", host_ioctl_val(fd, CKVM_SET_TSS_ADDR, UInt(tss)))
        var addr = identityMap
        _ = try check("KVM_SET_IDENTITY_MAP_ADDR", host_ioctl_ptr(fd, CKVM_SET_IDENTITY_MAP_ADDR, &addr))
    }

    /// In-kernel PIC, IOAPIC and local APICs. Must precede vCPU creation.
    public func createInterruptController() throws(KVMError) {
        _ = try check("KVM_CREATE_IRQCHIP", host_ioctl_val(fd, CKVM_CREATE_IRQCHIP, 0))
    }

    /// KVM_CAP_SPLIT_IRQCHIP: local APICs in KVM, the IOAPIC and PIC left to the VMM, which
    /// sends their interrupts as MSIs; `pins` IOAPIC routes are reserved. Before any vCPU.
    public func enableSplitInterruptController(pins: UInt64) throws(KVMError) {
        var cap = kvm_enable_cap()
        cap.cap = UInt32(KVM_CAP_SPLIT_IRQCHIP)
        cap.args.0 = pins
        _ = try check("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)", host_ioctl_ptr(fd, CKVM_ENABLE_CAP, &cap))
    }

    /// Sends the guest's reads, writes or both of each MSR to Kite as `.msrRead`/`.msrWrite`
    /// exits (KVM_CAP_X86_USER_SPACE_MSR with filter exits, and one filter for the VM, so
    /// every trapped MSR in one call; at most 16).
    public func trapMSRs(_ msrs: [(index: UInt32, reads: Bool, writes: Bool)]) throws(KVMError) {
        var cap = kvm_enable_cap()
        cap.cap = UInt32(KVM_CAP_X86_USER_SPACE_MSR)
        cap.args.0 = UInt64(KVM_MSR_EXIT_REASON_FILTER)
        _ = try check("KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)", host_ioctl_ptr(fd, CKVM_ENABLE_CAP, &cap))
        let flags = msrs.map { UInt32($0.reads ? KVM_MSR_FILTER_READ : 0) | UInt32($0.writes ? KVM_MSR_FILTER_WRITE : 0) }
        let rc = ckvm_trap_msrs(fd, UInt32(msrs.count), msrs.map(\.index), flags)
        if rc < 0 {
            throw KVMError("KVM_X86_SET_MSR_FILTER \(msrs.map { "0x" + String($0.index, radix: 16) }.joined(separator: ","))", errno: -rc)
        }
    }

    /// Sends an MSI (address, data) to the in-kernel local APICs (KVM_SIGNAL_MSI). Thread-safe.
    public func signalMSI(address: UInt64, data: UInt32) throws(KVMError) {
        var msi = kvm_msi()
        msi.address_lo = UInt32(truncatingIfNeeded: address)
        msi.address_hi = UInt32(truncatingIfNeeded: address >> 32)
        msi.data = data
        _ = try check("KVM_SIGNAL_MSI", host_ioctl_ptr(fd, CKVM_SIGNAL_MSI, &msi))
    }

    /// KVM_CAP_X2APIC_API with 32-bit APIC IDs (MSI destinations above 255 in the address's
    /// upper word) and no xAPIC broadcast quirk (in x2APIC mode 0xFF is APIC 255, not
    /// everyone): what a guest with more than 254 vCPUs needs. Before any vCPU.
    public func enableX2APICAPI() throws(KVMError) {
        var cap = kvm_enable_cap()
        cap.cap = UInt32(KVM_CAP_X2APIC_API)
        cap.args.0 = 0x3   // KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK
        _ = try check("KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)", host_ioctl_ptr(fd, CKVM_ENABLE_CAP, &cap))
    }

    /// Replaces the VM's GSI routing with MSI routes, one per (gsi, address, data)
    /// (KVM_SET_GSI_ROUTING, at most 64). In `split` mode these tell KVM's local APICs which
    /// vectors are the IOAPIC's level-triggered ones, whose EOIs must come back to Kite.
    public func setMSIRoutes(_ routes: [(gsi: UInt32, address: UInt64, data: UInt32)]) throws(KVMError) {
        let rc = ckvm_set_msi_routes(fd, UInt32(routes.count), routes.map(\.gsi), routes.map(\.address), routes.map(\.data))
        if rc < 0 { throw KVMError("KVM_SET_GSI_ROUTING (\(routes.count) MSI routes)", errno: -rc) }
    }

    /// In-kernel i8254 PIT, with port 0x61 (speaker) handled by KVM too.
    public func createPIT() throws(KVMError) {
        var config = kvm_pit_config()
        config.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
        _ = try check("KVM_CREATE_PIT2", host_ioctl_ptr(fd, CKVM_CREATE_PIT2, &config))
    }

    /// Drives interrupt line `gsi` of the in-kernel PIC/IOAPIC to `level`. Thread-safe.
    public func setInterruptLine(_ gsi: UInt32, level: Bool) throws(KVMError) {
        var line = kvm_irq_level()
        line.irq = gsi
        line.level = level ? 1 : 0
        _ = try check("KVM_IRQ_LINE", host_ioctl_ptr(fd, CKVM_IRQ_LINE, &line))
    }

    /// Makes every write to `eventFD` raise interrupt line `gsi` (an edge: KVM pulses it).
    public func attachInterrupt(eventFD: Int32, gsi: UInt32) throws(KVMError) {
        var irqfd = kvm_irqfd()
        irqfd.fd = UInt32(bitPattern: eventFD)
        irqfd.gsi = gsi
        _ = try check("KVM_IRQFD gsi \(gsi)", host_ioctl_ptr(fd, CKVM_IRQFD, &irqfd))
    }

    /// Makes a 4-byte guest write of `value` to MMIO `address` signal `eventFD` inside KVM,
    /// without an exit to Kite (virtio queue notifications).
    public func attachMMIOWrite(address: UInt64, value: UInt32, eventFD: Int32) throws(KVMError) {
        var io = kvm_ioeventfd()
        io.addr = address
        io.len = 4
        io.datamatch = UInt64(value)
        io.fd = eventFD
        io.flags = UInt32(1) << UInt32(kvm_ioeventfd_flag_nr_datamatch)
        _ = try check("KVM_IOEVENTFD 0x\(String(address, radix: 16))", host_ioctl_ptr(fd, CKVM_IOEVENTFD, &io))
    }

    public func createVCPU(id: Int) throws(KVMError) -> VCPU {
        let vfd = try check("KVM_CREATE_VCPU \(id)", host_ioctl_val(fd, CKVM_CREATE_VCPU, UInt(id)))
        do throws(KVMError) {
            return try VCPU(fd: vfd, id: id, mmapSize: system.vcpuMmapSize())
        } catch {
            close(vfd)
            throw error
        }
    }
}
