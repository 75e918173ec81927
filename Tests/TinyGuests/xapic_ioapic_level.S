# One vCPU, flat 32-bit protected mode at 0x1000, for `split` and `userspace` modes: routes
# IOAPIC pin 5 level-triggered (fixed) to vector 0x42 on APIC 0, enables its local APIC,
# says 'R' on test port 0x10 and halts with interrupts on. The test raises the line and
# keeps it high. The first interrupt says 'D', writes EOI and halts again with interrupts
# on (no IRET: see xapic_ap.S); the IOAPIC must send again, because the line is still
# asserted once the EOI has reached it; the second interrupt says 'E'. An EOI that never
# reaches the IOAPIC leaves its remote IRR set, and the guest waits for ever after 'D'.
.code32
.include "idt.inc"
.globl _start
_start:
    cli
    mov $0x6000, %esp
    movl $0, 0x600                   # interrupts taken
    gate32 0x42, handler, 0x10   # vector 0x42: Kite's PVH entry code segment (idt.inc)
    lidt idt_desc
    mov $0xff, %al                   # mask both 8259 PICs, as an OS that uses the IOAPIC does:
    out %al, $0x21                   # the line is an ISA IRQ too, and the boot APIC's LINT0
    out %al, $0xa1                   # passes the PIC's INTR at reset (virtual wire)
    movl $0x1ff, 0xfee000f0          # spurious vector register: software enable
    movl $0x1b, 0xfec00000           # IOREGSEL: redirection entry 5, high half
    movl $0x00000000, 0xfec00010     # destination APIC 0
    movl $0x1a, 0xfec00000           # low half
    movl $0x00008042, 0xfec00010     # vector 0x42, fixed, physical, level, active high, unmasked
    mov $0x10, %dx
    mov $'R', %al
    out %al, %dx
    sti
1:  hlt
    jmp 1b
handler:
    incl 0x600
    cmpl $2, 0x600
    je second
    mov $0x10, %dx
    mov $'D', %al
    out %al, %dx
    movl $0, 0xfee000b0              # EOI
    sti
2:  hlt
    jmp 2b
second:
    mov $0x10, %dx
    mov $'E', %al
    out %al, %dx
3:  hlt
    jmp 3b
idt_desc:
    idt_descriptor32
