# Real mode at 0x1000: prints "Kite\n" on the UART data port, then halts.
.code16
.globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov $0x3f8, %dx
    mov $msg, %si
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  hlt
    jmp 2b
msg: .asciz "Kite\n"
