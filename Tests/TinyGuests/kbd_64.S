# One vCPU, 64-bit long mode at 0x1000, for the i8042 keyboard (SendCtrlAltDel): routes
# IOAPIC pin 1 (edge, fixed) to vector 0x41 on APIC 0, says 'R' on test port 0x10, then
# halts with interrupts on. Each interrupt reads one byte from the i8042's data port, as
# Linux's driver does, writes it to port 0x10, writes EOI and returns (IRETQ): the next
# byte must come with an interrupt of its own.
.code64
.include "idt.inc"
.globl _start
_start:
    cli
    mov $0x6000, %rsp
    gate64 0x41, handler
    lidt idt_desc
    mov $0xfee00000, %ebx            # the APIC page
    movl $0x1ff, 0xf0(%rbx)          # spurious vector register: software enable
    movl $0x10000, 0x350(%rbx)       # mask LINT0 (the PIC's virtual wire)
    mov $0xfec00000, %ecx            # the IOAPIC
    movl $0x13, (%rcx)               # IOREGSEL: redirection entry 1, high half
    movl $0x00000000, 0x10(%rcx)     # destination APIC 0
    movl $0x12, (%rcx)               # low half
    movl $0x00000041, 0x10(%rcx)     # vector 0x41, fixed, physical, edge, unmasked
    mov $0x10, %dx
    mov $'R', %al
    out %al, %dx
1:  sti
    hlt
    jmp 1b
handler:
    push %rax
    push %rdx
    push %rbx
    in $0x60, %al                    # one byte of the keyboard's output buffer
    mov $0x10, %dx
    out %al, %dx
    mov $0xfee00000, %ebx
    movl $0, 0xb0(%rbx)              # EOI
    pop %rbx
    pop %rdx
    pop %rax
    iretq
idt_desc:
    idt_descriptor64
