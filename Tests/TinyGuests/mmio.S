# Real mode at 0x1000: writes a byte and a word to MMIO at 0xD0000 (outside RAM), reads a
# byte back from 0xD0004, sends it to the UART data port, and halts.
.code16
.globl _start
_start:
    cli
    mov $0xd000, %ax
    mov %ax, %ds
    movb $0x42, (0)
    movw $0x1234, (2)
    mov (4), %al
    mov $0x3f8, %dx
    out %al, %dx
1:  hlt
    jmp 1b
