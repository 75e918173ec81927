# One vCPU for `userspace` mode, flat 32-bit protected mode at 0x1000: routes IOAPIC pin 5
# (edge, fixed) to vector 0x42 on APIC 0 through IOREGSEL/IOWIN at 0xFEC00000, enables its
# local APIC, says 'R' on test port 0x10 and halts with interrupts on. The device line
# raised by the test must wake it: the handler writes 'D' and halts (no IRET: see
# xapic_ap.S).
.code32
.include "idt.inc"
.globl _start
_start:
    cli
    mov $0x6000, %esp
    gate32 0x42, handler, 0x10   # vector 0x42: Kite's PVH entry code segment (idt.inc)
    lidt idt_desc
    mov $0xff, %al                   # mask both 8259 PICs, as an OS that uses the IOAPIC does:
    out %al, $0x21                   # the line is an ISA IRQ too, and the boot APIC's LINT0
    out %al, $0xa1                   # passes the PIC's INTR at reset (virtual wire)
    movl $0x1ff, 0xfee000f0          # spurious vector register: software enable
    movl $0x1b, 0xfec00000           # IOREGSEL: redirection entry 5, high half
    movl $0x00000000, 0xfec00010     # destination APIC 0
    movl $0x1a, 0xfec00000           # low half
    movl $0x00000042, 0xfec00010     # vector 0x42, fixed, physical, edge, unmasked
    mov $0x10, %dx
    mov $'R', %al
    out %al, %dx
    sti
1:  hlt
    jmp 1b
handler:
    mov $0x10, %dx
    mov $'D', %al
    out %al, %dx
2:  hlt
    jmp 2b
idt_desc:
    idt_descriptor32
