#define _GNU_SOURCE
#include "ckvm.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

int ckvm_trap_msrs(int vmfd, uint32_t count, const uint32_t *indexes, const uint32_t *flags) {
    uint8_t denied[16] = {0};   // one MSR per range, its bit clear: denied, so the access exits
    struct kvm_msr_filter filter;
    if (count > 16 || count > KVM_MSR_FILTER_MAX_RANGES) return -EINVAL;
    memset(&filter, 0, sizeof filter);
    filter.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
    for (uint32_t i = 0; i < count; i++) {
        filter.ranges[i].flags = flags[i];
        filter.ranges[i].nmsrs = 1;
        filter.ranges[i].base = indexes[i];
        filter.ranges[i].bitmap = &denied[i];   // KVM copies the bitmaps during the ioctl
    }
    return ioctl(vmfd, KVM_X86_SET_MSR_FILTER, &filter) < 0 ? -errno : 0;
}

int ckvm_set_msi_routes(int vmfd, uint32_t count, const uint32_t *gsis, const uint64_t *addresses,
                        const uint32_t *datas) {
    // kvm_irq_routing ends in a flexible array: a fixed one of 64 entries after it.
    struct { struct kvm_irq_routing head; struct kvm_irq_routing_entry entries[64]; } table;
    if (count > 64) return -EINVAL;
    memset(&table, 0, sizeof table);
    table.head.nr = count;
    for (uint32_t i = 0; i < count; i++) {
        table.entries[i].gsi = gsis[i];
        table.entries[i].type = KVM_IRQ_ROUTING_MSI;
        table.entries[i].u.msi.address_lo = (uint32_t)addresses[i];
        table.entries[i].u.msi.address_hi = (uint32_t)(addresses[i] >> 32);
        table.entries[i].u.msi.data = datas[i];
    }
    return ioctl(vmfd, KVM_SET_GSI_ROUTING, &table) < 0 ? -errno : 0;
}

const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
const unsigned long CKVM_IRQFD = KVM_IRQFD;
const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
const unsigned long CKVM_ENABLE_CAP = KVM_ENABLE_CAP;
const unsigned long CKVM_SET_CLOCK = KVM_SET_CLOCK;
const unsigned long CKVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;
const unsigned long CKVM_SIGNAL_MSI = KVM_SIGNAL_MSI;
const unsigned long CKVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;
const unsigned long CKVM_RUN = KVM_RUN;
const unsigned long CKVM_INTERRUPT = KVM_INTERRUPT;
const unsigned long CKVM_NMI = KVM_NMI;
const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
const unsigned long CKVM_GET_MSRS = KVM_GET_MSRS;
const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;
const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;
const unsigned long CKVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
const unsigned long CKVM_GET_XCRS = KVM_GET_XCRS;
const unsigned long CKVM_SET_XCRS = KVM_SET_XCRS;
const unsigned long CKVM_GET_STATS_FD = KVM_GET_STATS_FD;

