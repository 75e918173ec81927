# One vCPU, flat 32-bit protected mode at 0x1000, for every --irqchip mode: programs the two
# 8259 PICs as Linux does (master vectors 0x30-0x37, slave 0x38-0x3F on the master's line 2),
# unmasks only IRQ 5, and leaves the local APIC as reset left it: the boot processor's LINT0
# is ExtINT and unmasked (virtual wire), so the PIC's INTR reaches the processor. Says 'R' on
# test port 0x10 and halts with interrupts on. The IRQ 5 edge the test raises must wake it
# with vector 0x35: the handler writes 'P', ends the interrupt with a non-specific EOI, reads
# the master's ISR (OCW3), writes 'E' if it is empty, and halts (no IRET: see xapic_ap.S).
.code32
.include "idt.inc"
.globl _start
_start:
    cli
    mov $0x6000, %esp
    gate32 0x35, handler, 0x10   # vector 0x35: Kite's PVH entry code segment (idt.inc)
    lidt idt_desc
    mov $0x11, %al                   # ICW1: edge, cascade, ICW4 follows
    out %al, $0x20
    out %al, $0xa0
    mov $0x30, %al                   # ICW2: vector bases
    out %al, $0x21
    mov $0x38, %al
    out %al, $0xa1
    mov $0x04, %al                   # ICW3: slave on line 2
    out %al, $0x21
    mov $0x02, %al
    out %al, $0xa1
    mov $0x01, %al                   # ICW4: 8086 mode
    out %al, $0x21
    out %al, $0xa1
    mov $0xdf, %al                   # OCW1: only IRQ 5 unmasked
    out %al, $0x21
    mov $0xff, %al
    out %al, $0xa1
    mov $0x10, %dx
    mov $'R', %al
    out %al, %dx
    sti
1:  hlt
    jmp 1b
handler:
    mov $0x10, %dx
    mov $'P', %al
    out %al, %dx
    mov $0x20, %al                   # OCW2: non-specific EOI
    out %al, $0x20
    mov $0x0b, %al                   # OCW3: the command port reads ISR
    out %al, $0x20
    in $0x20, %al
    test %al, %al
    jnz 2f
    mov $0x10, %dx
    mov $'E', %al
    out %al, %dx
2:  hlt
    jmp 2b
idt_desc:
    idt_descriptor32
