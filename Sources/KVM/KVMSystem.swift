import CHost
import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// The open /dev/kvm: capability queries and VM creation. Owns the fd.
public final class KVMSystem: Sendable {
    public let fd: Int32

    /// Opens /dev/kvm (or `path`) and checks the API version is the stable 12.
    public init(path: String = "/dev/kvm") throws(KVMError) {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 { throw KVMError("open \(path)", errno: errno) }
        self.fd = fd
        let version = try check("KVM_GET_API_VERSION", host_ioctl_val(fd, CKVM_GET_API_VERSION, 0))
        if version != KVM_API_VERSION {
            throw KVMError("KVM API version \(version), expected \(KVM_API_VERSION)", errno: ENOTSUP)
        }
    }

    deinit { close(fd) }

    /// KVM_CHECK_EXTENSION: 0 when the capability is absent, else its value.
    public func capability(_ cap: Int32) -> Int32 {
        max(0, host_ioctl_val(fd, CKVM_CHECK_EXTENSION, UInt(cap)))
    }

    /// The most vCPUs one VM may have (KVM_CAP_MAX_VCPUS, falling back to NR_VCPUS).
    public var maxVCPUs: Int {
        let m = capability(KVM_CAP_MAX_VCPUS)
        return Int(m > 0 ? m : max(capability(KVM_CAP_NR_VCPUS), 4))
    }

    public func vcpuMmapSize() throws(KVMError) -> Int {
        Int(try check("KVM_GET_VCPU_MMAP_SIZE", host_ioctl_val(fd, CKVM_GET_VCPU_MMAP_SIZE, 0)))
    }

    /// The CPUID leaves KVM can offer a guest on this host.
    public func supportedCPUID() throws(KVMError) -> [CPUIDEntry] {
        var table = ckvm_cpuid()
        table.nent = UInt32(CKVM_MAX_CPUID_ENTRIES)
        _ = try check("KVM_GET_SUPPORTED_CPUID", host_ioctl_ptr(fd, CKVM_GET_SUPPORTED_CPUID, &table))
        return CPUIDEntry.entries(of: &table)
    }

    public func createVM() throws(KVMError) -> VirtualMachine {
        let vmfd = try check("KVM_CREATE_VM", host_ioctl_val(fd, CKVM_CREATE_VM, 0))
        return VirtualMachine(fd: vmfd, system: self)
    }
}
