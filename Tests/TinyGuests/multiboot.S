# A multiboot (version 1) kernel linked at 1 MiB, with the header's address fields (flag
# bit 16; the tests clear that bit and wrap the same bytes in an ELF32 for the ELF path).
# It checks the entry state, prints what the loader and fw_cfg told it on COM1:
#   MB cmdline=<command line>
#   MB mem_upper=<hex KiB> mods=<hex count> module=<first bytes of the module>
#   MB fw_cfg=<signature> cpus=<hex> ram_mib=<hex>
# then writes the last digit of its command line (0 if none) to isa-debug-exit (port 0xf4).
# If the machine has no such device, it says so and powers off through Kite's ACPI port.
.code32
.set MAGIC, 0x1BADB002
.set FLAGS, 0x00010003          # page-aligned modules, memory information, address fields
.set COM1, 0x3f8
.set FWCFG, 0x510
.globl _start
header:
    .long MAGIC, FLAGS, -(MAGIC + FLAGS)
    .long header, header, 0, bss_end, _start   # header, load, load end (file end), bss end, entry

_start:
    cli
    mov $stack_top, %esp
    cmp $0x2BADB002, %eax
    jne bad_entry
    pushf
    pop %eax
    test $0x200, %eax              # IF must be clear
    jnz bad_entry
    mov %cr0, %eax
    test $0x80000000, %eax         # paging must be off
    jnz bad_entry
    mov %ebx, %ebp                 # the multiboot information block

    mov $s_cmdline, %esi
    call puts
    mov 16(%ebp), %esi
    call puts
    call newline

    mov $s_mem, %esi
    call puts
    mov 8(%ebp), %eax
    call puthex
    mov $s_mods, %esi
    call puts
    mov 20(%ebp), %eax
    call puthex
    cmpl $1, 20(%ebp)
    jne 2f
    mov $s_module, %esi
    call puts
    mov 24(%ebp), %edi             # the module list's first entry
    mov (%edi), %esi               # mod_start
    mov 4(%edi), %ecx              # mod_end
    sub %esi, %ecx
    cmp $32, %ecx
    jbe 1f
    mov $32, %ecx
1:  test %ecx, %ecx
    jz 2f
    lodsb
    cmp $0x20, %al                 # printable only
    jb 3f
    call putc
3:  dec %ecx
    jmp 1b
2:  call newline

    mov $s_fwcfg, %esi
    call puts
    xor %eax, %eax                 # key 0: signature
    call fwcfg_select
    mov $4, %ecx
4:  inb %dx, %al
    call putc
    loop 4b
    mov $s_cpus, %esi
    call puts
    mov $5, %eax                   # key 5: CPU count, 16 bits
    call fwcfg_select
    xor %eax, %eax
    inb %dx, %al
    mov %al, %bl
    inb %dx, %al
    mov %al, %ah
    mov %bl, %al
    call puthex
    mov $s_ram, %esi
    call puts
    mov $3, %eax                   # key 3: RAM size, 64 bits; print the MiB
    call fwcfg_select
    xor %ebx, %ebx
    mov $4, %ecx
5:  inb %dx, %al
    mov %al, %bl
    ror $8, %ebx                   # bytes arrive little-endian: rotate each into place
    loop 5b
    mov %ebx, %eax
    shr $20, %eax
    call puthex
    call newline

    mov 16(%ebp), %esi             # exit value: the command line's last character, if a digit
    xor %eax, %eax
6:  mov (%esi), %bl
    test %bl, %bl
    jz 7f
    mov %bl, %al
    inc %esi
    jmp 6b
7:  sub $'0', %al
    cmp $9, %al
    jbe 8f
    xor %eax, %eax
8:  movzbl %al, %eax
    mov $0xf4, %dx
    outl %eax, %dx
    mov $s_still, %esi             # only without --test-devices
    call puts
    mov $0x600, %dx                # ACPI sleep control: SLP_EN | S5 (5 << 2)
    mov $0x34, %al
    outb %al, %dx
9:  hlt
    jmp 9b

bad_entry:
    mov $s_bad, %esi
    call puts
    jmp 9b

fwcfg_select:                      # key in %ax; leaves %dx at the data port
    mov $FWCFG, %dx
    outw %ax, %dx
    inc %dx
    ret

putc:                              # %al
    push %edx
    mov $COM1, %dx
    outb %al, %dx
    pop %edx
    ret

puts:                              # %esi: NUL-terminated
    push %eax
1:  lodsb
    test %al, %al
    jz 2f
    call putc
    jmp 1b
2:  pop %eax
    ret

newline:
    push %eax
    mov $'\n', %al
    call putc
    pop %eax
    ret

puthex:                            # %eax, as up to 8 hex digits without leading zeros
    push %eax
    push %ebx
    push %ecx
    mov %eax, %ebx
    mov $8, %ecx
    xor %ah, %ah                   # %ah: a non-zero digit was printed
1:  rol $4, %ebx
    mov %bl, %al
    and $0xf, %al
    cmp $1, %ecx
    je 2f
    test %ah, %ah
    jnz 2f
    test %al, %al
    jz 3f
2:  mov $1, %ah
    add $'0', %al
    cmp $'9', %al
    jbe 4f
    add $('a' - '0' - 10), %al
4:  call putc
3:  loop 1b
    pop %ecx
    pop %ebx
    pop %eax
    ret

s_cmdline: .asciz "MB cmdline="
s_mem:     .asciz "MB mem_upper="
s_mods:    .asciz " mods="
s_module:  .asciz " module="
s_fwcfg:   .asciz "MB fw_cfg="
s_cpus:    .asciz " cpus="
s_ram:     .asciz " ram_mib="
s_still:   .asciz "MB no debug-exit device: powering off\n"
s_bad:     .asciz "MB bad entry state\n"

.bss
.align 16
    .space 4096
stack_top:
bss_end:
