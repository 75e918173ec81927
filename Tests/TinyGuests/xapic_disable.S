# One vCPU for `userspace` mode, flat 32-bit protected mode at 0x1000: hardware-disables its
# local APIC (IA32_APIC_BASE bit 11 cleared), when its page must read as nothing (all-ones)
# and writes to it must go nowhere; then enables it again, when it must be in its power-up
# state (version readable, software-disabled); then moves it to 0xFED40000, where it must be
# found, and not at its old page. Says 'D' after the disabled read, 'E' after the enabled
# one, 'M' after the move; on a wrong value 'F', after 'V' (the version) or 'S' (the SVR).
.code32
.globl _start
_start:
    cli
    movl $0x1ff, 0xfee000f0          # software enable, so a reset must show
    mov $0x1b, %ecx                  # IA32_APIC_BASE
    rdmsr
    and $~0x800, %eax                # clear the global enable
    wrmsr
    cmpl $0xffffffff, 0xfee00030     # the version register is gone
    jne fail
    movl $0x12345678, 0xfee00080     # a TPR write that must go nowhere
    mov $0x10, %dx                   # (rdmsr wrote EDX)
    mov $'D', %al
    out %al, %dx
    rdmsr
    or $0x800, %eax                  # enable again
    wrmsr
    mov $0x10, %dx
    cmpl $0x00050014, 0xfee00030     # version 0x14, 6 LVT entries
    jne failv
    cmpl $0x000000ff, 0xfee000f0     # power-up SVR: software-disabled
    jne fails
    cmpl $0, 0xfee00080              # power-up TPR
    jne fail
    mov $0x10, %dx
    mov $'E', %al
    out %al, %dx
    mov $0x1b, %ecx                  # move the APIC to 0xFED40000 (enabled, BSP)
    mov $0xfed40900, %eax
    xor %edx, %edx
    wrmsr
    mov $0x10, %dx
    cmpl $0x00050014, 0xfed40030     # the version register at its new page
    jne fail
    cmpl $0xffffffff, 0xfee00030     # and nothing at the old one
    jne fail
    mov $'M', %al
    out %al, %dx
1:  hlt
    jmp 1b
failv:
    mov $'V', %al
    out %al, %dx
    jmp fail
fails:
    mov $'S', %al
    out %al, %dx
fail:
    mov $0x10, %dx
    mov $'F', %al
    out %al, %dx
2:  hlt
    jmp 2b
