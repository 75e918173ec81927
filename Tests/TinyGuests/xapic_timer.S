# One vCPU for `userspace` mode, flat 32-bit protected mode at 0x1000: arms its local APIC
# timer (one-shot, 10 ms, vector 0x41) through the xAPIC page, then waits with interrupts
# on: halted (HLT) if the byte at 0x600 is 0, spinning in the guest otherwise. The timer's
# handler writes 'T' to test port 0x10 and halts (no IRET: see xapic_ap.S).
.code32
.include "idt.inc"
.globl _start
_start:
    cli
    mov $0x6000, %esp
    gate32 0x41, handler, 0x10   # vector 0x41: Kite's PVH entry code segment (idt.inc)
    lidt idt_desc
    movl $0x1ff, 0xfee000f0          # spurious vector register: software enable
    movl $0x0b, 0xfee003e0           # divide by 1
    movl $0x41, 0xfee00320           # LVT timer: one-shot, vector 0x41
    movl $10000000, 0xfee00380       # initial count: 10 ms of 1 ns bus cycles
    sti
    cmpb $0, 0x600
    jne spin
1:  hlt
    jmp 1b
spin:
    jmp spin
handler:
    mov $0x10, %dx
    mov $'T', %al
    out %al, %dx
2:  hlt
    jmp 2b
idt_desc:
    idt_descriptor32
