# Second vCPU for `userspace` mode, started by SIPI at 0x8000 (CS=0x0800): switches to flat
# 32-bit protected mode, installs a handler for vector 0x40 in an IDT at 0x7000, enables
# its xAPIC, says 'A' on port 0x10, marks itself ready at 0x500 and halts with interrupts
# on. The handler says 'I', acknowledges at 0x501, writes the APIC's EOI register and
# halts there: it does not return, because the build machines' software hypervisor
# (kvm_pvm) cannot emulate a 32-bit IRET ("KVM internal error, suberror 1").
.include "idt.inc"
.code16
.globl _start
_start:
    ljmp $0, $main16
main16:
    cli
    xor %ax, %ax
    mov %ax, %ds
    lgdtl gdt_desc
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $pm
.code32
pm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x6000, %esp
    gate32 0x40, handler, 0x08   # interrupt gate for vector 0x40 (idt.inc)
    lidt idt_desc
    movl $0x1ff, 0xfee000f0          # spurious vector register: software enable
    mov $0x10, %dx
    mov $'A', %al
    out %al, %dx
    movb $1, 0x500
    sti
1:  hlt
    jmp 1b
handler:
    mov $0x10, %dx
    mov $'I', %al
    out %al, %dx
    movb $1, 0x501
    movl $0, 0xfee000b0              # EOI
2:  hlt
    jmp 2b
.align 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff         # 0x08: code, flat 32-bit
    .quad 0x00cf92000000ffff         # 0x10: data, flat
gdt_desc:
    .word gdt_desc - gdt - 1
    .long gdt
idt_desc:
    idt_descriptor32
