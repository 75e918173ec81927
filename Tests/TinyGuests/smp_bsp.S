# Boot vCPU, real mode at 0x1000, in-kernel local APIC in x2APIC mode (MSRs work in real
# mode). Starts APIC 1 with INIT + SIPI (vector 0x08: 0x8000), waits until it is ready,
# sends it a fixed IPI (vector 0x40), waits for the handler's acknowledgement, then writes
# 'B' to test port 0x10.
.code16
.globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7000, %sp
    mov $0x1b, %ecx          # IA32_APIC_BASE: enable + x2APIC
    rdmsr
    or $0xc00, %eax
    wrmsr
    mov $0x80f, %ecx         # spurious vector register: APIC software enable
    mov $0x1ff, %eax
    xor %edx, %edx
    wrmsr
    mov $0x830, %ecx         # ICR
    mov $1, %edx             # destination: x2APIC ID 1
    mov $0x4500, %eax        # INIT, assert
    wrmsr
    mov $0x4608, %eax        # STARTUP, vector 0x08
    wrmsr
ready:
    pause
    cmpb $1, (0x500)
    jne ready
    mov $0x830, %ecx
    mov $1, %edx
    mov $0x40, %eax          # fixed, vector 0x40
    wrmsr
acked:
    pause
    cmpb $1, (0x501)
    jne acked
    mov $0x10, %dx
    mov $'B', %al
    out %al, %dx
1:  hlt
    jmp 1b
