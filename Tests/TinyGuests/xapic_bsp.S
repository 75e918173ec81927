# Boot vCPU for `userspace` mode (Kite's own local APICs), flat 32-bit protected mode at
# 0x1000, interrupts off. Uses the xAPIC page at 0xFEE00000 (MMIO exits to Kite): enables
# its APIC, starts APIC 1 with INIT + SIPI (vector 0x08: 0x8000), waits until the AP has
# halted, sends it a fixed IPI (vector 0x40), waits for the handler's acknowledgement,
# then writes 'B' to test port 0x10.
.code32
.globl _start
_start:
    cli
    movl $0x1ff, 0xfee000f0          # spurious vector register: software enable
    movl $0x01000000, 0xfee00310     # ICR high: APIC ID 1
    movl $0x00004500, 0xfee00300     # INIT, assert
    movl $0x00004608, 0xfee00300     # STARTUP, vector 0x08
ready:
    pause
    cmpb $1, 0x500
    jne ready
    mov $0x100000, %ecx              # give the AP time to reach HLT
1:  loop 1b
    movl $0x01000000, 0xfee00310
    movl $0x00004040, 0xfee00300     # fixed, vector 0x40
acked:
    pause
    cmpb $1, 0x501
    jne acked
    mov $0x10, %dx
    mov $'B', %al
    out %al, %dx
2:  hlt
    jmp 2b
