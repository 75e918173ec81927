/// Why KVM_RUN returned, decoded once from the shared kvm_run page. The buffers point
/// into that page and are valid only until the next `VCPU.run()`.
public enum VCPUExit {
    /// Port read of `size` bytes, `data.count / size` times (rep ins); fill `data`.
    case ioIn(port: UInt16, size: Int, data: UnsafeMutableRawBufferPointer)
    /// Port write of `size`-byte values (rep outs when data holds several).
    case ioOut(port: UInt16, size: Int, data: UnsafeRawBufferPointer)
    /// MMIO read outside RAM; fill `data`.
    case mmioRead(address: UInt64, data: UnsafeMutableRawBufferPointer)
    case mmioWrite(address: UInt64, data: UnsafeRawBufferPointer)
    case halt
    /// The guest can take an interrupt now (asked for with `requestInterruptWindow`; only
    /// without an in-kernel local APIC).
    case interruptWindowOpen
    /// The guest's local APIC (in KVM) sent an EOI for a level-triggered `vector` that the
    /// VMM's IOAPIC routed (split irqchip).
    case ioapicEOI(vector: UInt8)
    /// Without an in-kernel local APIC: the guest lowered CR8 (its task priority), so an
    /// interrupt it held back may be deliverable now (`VCPU.cr8` has the new value).
    case taskPriorityLowered
    /// A read or write of an MSR trapped to the VMM (`VirtualMachine.trapMSRs`); answer with
    /// `VCPU.completeMSR` before the next run.
    case msrRead(index: UInt32)
    case msrWrite(index: UInt32, value: UInt64)
    /// Triple fault or similar: the vCPU cannot continue.
    case shutdown
    case failEntry(reason: UInt64)
    case internalError(suberror: UInt32)
    case systemEvent(type: UInt32)
    /// KVM_RUN returned EINTR (a kick) or KVM_EXIT_INTR.
    case interrupted
    case unknown(reason: UInt32)
}
