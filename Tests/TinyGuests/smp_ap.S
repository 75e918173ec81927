# Second vCPU, started by SIPI at 0x8000 (CS=0x0800). Installs an interrupt handler for
# vector 0x40, enables its x2APIC, says 'A' on port 0x10, marks itself ready and halts.
# The handler says 'I', acknowledges at 0x501 and sends EOI.
.code16
.globl _start
_start:
    ljmp $0, $main
main:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x6000, %sp
    movw $irq, (0x40 * 4)
    movw $0, (0x40 * 4 + 2)
    mov $0x1b, %ecx
    rdmsr
    or $0xc00, %eax
    wrmsr
    mov $0x80f, %ecx
    mov $0x1ff, %eax
    xor %edx, %edx
    wrmsr
    mov $0x10, %dx
    mov $'A', %al
    out %al, %dx
    movb $1, (0x500)
    sti
1:  hlt
    jmp 1b
irq:
    pushal
    mov $0x10, %dx
    mov $'I', %al
    out %al, %dx
    movb $1, (0x501)
    mov $0x80b, %ecx         # EOI
    xor %eax, %eax
    xor %edx, %edx
    wrmsr
    popal
    iret
