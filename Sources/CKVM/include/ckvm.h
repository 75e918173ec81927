// CKVM: the only place Kite touches <linux/kvm.h> from C.
// Swift cannot import function-like macros (KVM_RUN, ...), so this header exports every
// request number Kite uses as a constant (defined in ckvm.c), with the structs and the
// few calls whose arguments Swift cannot lay out. The ioctl calls themselves go through
// CHost's host_ioctl_ptr/host_ioctl_val.
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
#include <stdint.h>

/// Sends the guest's accesses to `count` MSRs (at most 16) to the VMM: `indexes[i]` for
/// reads when `flags[i]` has KVM_MSR_FILTER_READ (1), writes when it has
/// KVM_MSR_FILTER_WRITE (2); every other access stays KVM's. One filter for the VM, so one
/// call with every MSR. 0 or -errno.
int ckvm_trap_msrs(int vmfd, uint32_t count, const uint32_t *indexes, const uint32_t *flags);
/// Replaces the VM's GSI routing table (KVM_SET_GSI_ROUTING) with `count` MSI routes: route
/// i sends gsi `gsis[i]` as the MSI (`addresses[i]`, `datas[i]`). At most 64. 0 or -errno.
int ckvm_set_msi_routes(int vmfd, uint32_t count, const uint32_t *gsis, const uint64_t *addresses,
                        const uint32_t *datas);

/// Sequentially consistent store to kvm_run.immediate_exit, the byte KVM reads at
/// KVM_RUN entry: a kick sets it after the stop request so the vCPU cannot miss either.
static inline void ckvm_set_immediate_exit(struct kvm_run *run, uint8_t value) {
    __atomic_store_n(&run->immediate_exit, value, __ATOMIC_SEQ_CST);
}

/// The 8-byte MMIO data buffer inside the shared kvm_run page. Swift imports the anonymous
/// union as a computed property (a copy), so writes for MMIO reads must go through this.
static inline uint8_t *ckvm_run_mmio_data(struct kvm_run *run) {
    return run->mmio.data;
}

/// kvm_cpuid2 with a fixed-size entry array (Swift cannot allocate flexible array members).
struct ckvm_cpuid {
    __u32 nent;
    __u32 padding;
    struct kvm_cpuid_entry2 entries[256];
};
#define CKVM_MAX_CPUID_ENTRIES 256

/// kvm_msrs with a fixed-size entry array.
struct ckvm_msrs {
    __u32 nmsrs;
    __u32 pad;
    struct kvm_msr_entry entries[32];
};
#define CKVM_MAX_MSR_ENTRIES 32

// System ioctls
extern const unsigned long CKVM_GET_API_VERSION;
extern const unsigned long CKVM_CREATE_VM;
extern const unsigned long CKVM_CHECK_EXTENSION;
extern const unsigned long CKVM_GET_VCPU_MMAP_SIZE;
extern const unsigned long CKVM_GET_SUPPORTED_CPUID;
// VM ioctls
extern const unsigned long CKVM_SET_USER_MEMORY_REGION;
extern const unsigned long CKVM_SET_TSS_ADDR;
extern const unsigned long CKVM_SET_IDENTITY_MAP_ADDR;
extern const unsigned long CKVM_CREATE_IRQCHIP;
extern const unsigned long CKVM_CREATE_PIT2;
extern const unsigned long CKVM_CREATE_VCPU;
extern const unsigned long CKVM_IRQ_LINE;
extern const unsigned long CKVM_IRQFD;
extern const unsigned long CKVM_IOEVENTFD;
extern const unsigned long CKVM_ENABLE_CAP;
extern const unsigned long CKVM_SET_CLOCK;
extern const unsigned long CKVM_SET_GSI_ROUTING;
// vCPU ioctls
extern const unsigned long CKVM_SIGNAL_MSI;
extern const unsigned long CKVM_GET_TSC_KHZ;
extern const unsigned long CKVM_RUN;
extern const unsigned long CKVM_INTERRUPT;
extern const unsigned long CKVM_NMI;
extern const unsigned long CKVM_GET_REGS;
extern const unsigned long CKVM_SET_REGS;
extern const unsigned long CKVM_GET_SREGS;
extern const unsigned long CKVM_SET_SREGS;
extern const unsigned long CKVM_SET_CPUID2;
extern const unsigned long CKVM_GET_MSRS;
extern const unsigned long CKVM_SET_MSRS;
extern const unsigned long CKVM_GET_LAPIC;
extern const unsigned long CKVM_SET_LAPIC;
extern const unsigned long CKVM_GET_MP_STATE;
extern const unsigned long CKVM_SET_MP_STATE;
extern const unsigned long CKVM_GET_VCPU_EVENTS;
extern const unsigned long CKVM_SET_FPU;
extern const unsigned long CKVM_GET_XCRS;
extern const unsigned long CKVM_SET_XCRS;
extern const unsigned long CKVM_GET_STATS_FD;

#endif
