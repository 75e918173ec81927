# One vCPU, 64-bit long mode at 0x1000, for the randomized wake-up test in every
# interrupt-controller mode: routes IOAPIC pin 5 (edge, fixed) to vector 0x42 on APIC 0,
# says 'R' on test port 0x10, then halts with interrupts on, for ever. Each interrupt
# counts itself at 0x600, writes EOI, tells the test its count on port 0x11 (the test then
# raises the next edge, at a random moment) and returns (IRETQ) to the HLT loop; every
# 64th time it first spins a while, so that edges also land while it runs.
.code64
.include "idt.inc"
.globl _start
_start:
    cli
    mov $0x6000, %rsp
    movl $0, 0x600
    gate64 0x42, handler         # vector 0x42: Kite's 64-bit code segment (idt.inc)
    lidt idt_desc
    mov $0xfee00000, %ebx            # the APIC page
    movl $0x1ff, 0xf0(%rbx)          # spurious vector register: software enable
    movl $0x10000, 0x350(%rbx)       # mask LINT0: KVM's boot APIC starts in virtual-wire
                                     # mode, and its PIC would deliver the same line too
    mov $0xfec00000, %ecx            # the IOAPIC
    movl $0x1b, (%rcx)               # IOREGSEL: redirection entry 5, high half
    movl $0x00000000, 0x10(%rcx)     # destination APIC 0
    movl $0x1a, (%rcx)               # low half
    movl $0x00000042, 0x10(%rcx)     # vector 0x42, fixed, physical, edge, unmasked
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
    incl 0x600
    mov 0x600, %eax
    test $63, %eax
    jnz 3f
    mov $20000, %edx                 # every 64th: run a while with interrupts off
2:  dec %edx
    jnz 2b
3:  mov $0xfee00000, %ebx
    movl $0, 0xb0(%rbx)              # EOI
    mov 0x600, %eax
    mov $0x11, %dx
    out %eax, %dx                    # the count, for the test
    pop %rbx
    pop %rdx
    pop %rax
    iretq
idt_desc:
    idt_descriptor64
