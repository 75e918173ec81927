# One vCPU for `userspace` mode, 64-bit long mode at 0x1000 (Kite's identity-mapped page
# tables; CR8 exists only in 64-bit mode). Checks that the task priority is one register
# whether the guest writes it through the APIC page or as CR8:
# 1. TPR 0x20 written through the APIC page reads back as CR8 2 ('T', else 'F').
# 2. CR8 = 15 holds back a self-IPI of vector 0x42 even with interrupts on, over two exits
#    ('B', 'C'); were CR8 lost on Kite's side, 'I' would come first.
# 3. CR8 = 0 lets it through: the handler says 'I' and halts (no IRET, see xapic_ap.S).
.code64
.include "idt.inc"
.globl _start
_start:
    cli
    gate64 0x42, handler         # vector 0x42: Kite's 64-bit code segment (idt.inc)
    lidt idt_desc
    mov $0xfee00000, %ebx            # the APIC page (above 2 GiB: no absolute address)
    movl $0x1ff, 0xf0(%rbx)          # spurious vector register: software enable
    movl $0x20, 0x80(%rbx)           # TPR 0x20 through the APIC page
    mov %cr8, %rax
    mov $0x10, %dx
    cmp $2, %rax
    jne fail
    mov $'T', %al
    out %al, %dx
    mov $15, %rax
    mov %rax, %cr8                   # block every vector
    movl $0x00044042, 0x300(%rbx)    # ICR: self, fixed, vector 0x42
    sti
    nop
    nop
    mov $'B', %al
    out %al, %dx
    mov $'C', %al                    # a second exit with the IPI still held back
    out %al, %dx
    xor %eax, %eax
    mov %rax, %cr8                   # lower it: the IPI is deliverable now
    mov $'L', %al
    out %al, %dx
1:  hlt
    jmp 1b
fail:
    mov $'F', %al
    out %al, %dx
2:  hlt
    jmp 2b
handler:
    mov $0x10, %dx
    mov $'I', %al
    out %al, %dx
3:  hlt
    jmp 3b
idt_desc:
    idt_descriptor64
