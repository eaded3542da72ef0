# Runtime shared by the test guests: entry, own GDT, serial output, exits,
# an IDT with a default handler, the 8259 PIC. Each payload defines `main`
# (returns the exit code in %eax, 0 = success).
#
# Register use: arguments in %rdi, %rsi, %rdx, %rcx, %r8, %r9 (SysV order);
# helpers may clobber %rax, %rcx, %rdx, %r8-%r11.

    .set COM1, 0x3f8
    .set EXIT_PORT, 0x501
    .set PIC1_CMD, 0x20
    .set PIC1_DATA, 0x21
    .set PIC2_CMD, 0xa0
    .set PIC2_DATA, 0xa1
    .set IRQ_VECTOR_BASE, 0x20
    .set IDT_ENTRIES, 64

    .code64
    .section .text
    .globl _start
_start:
    cli
    lea stack0_top(%rip), %rsp
    lgdt gdt_ptr(%rip)
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    pushq $0x08
    lea 1f(%rip), %rax
    pushq %rax
    lretq
1:  call idt_init
    call main
    jmp exit_code

# Ends the VM with exit code %al through the exit port.
exit_code:
    mov $EXIT_PORT, %dx
    out %al, %dx
1:  cli
    hlt
    jmp 1b

# Ends the VM through the i8042 CPU reset.
exit_reset:
    mov $0xfe, %al
    out %al, $0x64
1:  cli
    hlt
    jmp 1b

# Prints the NUL-terminated string at %rsi.
puts:
    push %rsi
1:  lodsb
    test %al, %al
    jz 2f
    mov $COM1, %dx
    out %al, %dx
    jmp 1b
2:  pop %rsi
    ret

# Prints %rdi as 16 hex digits.
puthex:
    push %rdi
    mov $16, %ecx
    lea hexdigits(%rip), %r8
1:  rol $4, %rdi
    mov %edi, %eax
    and $0xf, %eax
    mov (%r8,%rax), %al
    mov $COM1, %dx
    out %al, %dx
    dec %ecx
    jnz 1b
    pop %rdi
    ret

# Prints a newline.
newline:
    mov $'\n', %al
    mov $COM1, %dx
    out %al, %dx
    ret

# Compares %rcx bytes at %rdi and %rsi: %eax = 0 when equal.
memcmp:
    push %rsi
    push %rdi
    xor %eax, %eax
    repe cmpsb
    setne %al
    pop %rdi
    pop %rsi
    ret

# Copies %rcx bytes from %rsi to %rdi.
memcpy:
    push %rsi
    push %rdi
    rep movsb
    pop %rdi
    pop %rsi
    ret

# Fills the IDT with the default handler and loads it.
idt_init:
    xor %edi, %edi
1:  lea unexpected_interrupt(%rip), %rsi
    push %rdi
    call set_gate
    pop %rdi
    inc %edi
    cmp $IDT_ENTRIES, %edi
    jb 1b
    lidt idt_ptr(%rip)
    ret

# Installs handler %rsi as the interrupt gate of vector %edi.
set_gate:
    lea idt(%rip), %rax
    shl $4, %rdi
    add %rdi, %rax
    mov %rsi, %rdx
    mov %dx, (%rax)             # offset 15..0
    movw $0x08, 2(%rax)         # code selector
    movw $0x8e00, 4(%rax)       # present, DPL 0, 64-bit interrupt gate
    shr $16, %rdx
    mov %dx, 6(%rax)            # offset 31..16
    shr $16, %rdx
    mov %edx, 8(%rax)           # offset 63..32
    movl $0, 12(%rax)
    ret

# An exception or interrupt nobody expected: say so and exit with 99.
unexpected_interrupt:
    lea msg_unexpected(%rip), %rsi
    call puts
    mov (%rsp), %rdi            # error code or rip
    call puthex
    call newline
    mov $99, %al
    jmp exit_code

# Remaps the PICs to vectors 0x20..0x2f and unmasks the IRQs set in %di.
pic_init:
    mov $0x11, %al              # ICW1: edge, cascade, ICW4
    out %al, $PIC1_CMD
    out %al, $PIC2_CMD
    mov $IRQ_VECTOR_BASE, %al   # ICW2: vector bases
    out %al, $PIC1_DATA
    mov $IRQ_VECTOR_BASE + 8, %al
    out %al, $PIC2_DATA
    mov $4, %al                 # ICW3: slave on IRQ2
    out %al, $PIC1_DATA
    mov $2, %al
    out %al, $PIC2_DATA
    mov $1, %al                 # ICW4: 8086 mode
    out %al, $PIC1_DATA
    out %al, $PIC2_DATA
    mov %di, %ax
    not %ax
    out %al, $PIC1_DATA
    mov %ah, %al
    out %al, $PIC2_DATA
    ret

# End of interrupt on the master PIC.
pic_eoi:
    mov $0x20, %al
    out %al, $PIC1_CMD
    ret

    .section .rodata
hexdigits:
    .ascii "0123456789abcdef"
msg_unexpected:
    .asciz "unexpected interrupt or exception, top of stack: "

    .section .data
    .align 16
gdt:
    .quad 0
    .quad 0x00af9b000000ffff    # 0x08: 64-bit code
    .quad 0x00cf93000000ffff    # 0x10: data
    .quad 0x00cf9b000000ffff    # 0x18: 32-bit code (AP trampoline)
gdt_end:
    .align 8
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
idt_ptr:
    .word IDT_ENTRIES * 16 - 1
    .quad idt

    .section .bss
    .align 16
idt:
    .skip IDT_ENTRIES * 16
    .align 16
stack0:
    .skip 0x4000
stack0_top:
