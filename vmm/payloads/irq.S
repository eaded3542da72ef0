# An interrupt through an irqfd: the serial port's transmitter-empty
# interrupt (IRQ 4, raised by the VMM's UART through its irqfd) reaches the
# handler installed in the IDT through the 8259 PIC. Exits with 0.
    .include "lib.S"

    .set SERIAL_VECTOR, IRQ_VECTOR_BASE + 4

    .section .text
main:
    mov $SERIAL_VECTOR, %edi
    lea serial_irq(%rip), %rsi
    call set_gate
    mov $(1 << 4), %edi
    call pic_init
    mov $(COM1 + 4), %dx            # MCR: OUT2 (IRQ enable on a PC)
    mov $0x08, %al
    out %al, %dx
    sti
    mov $(COM1 + 1), %dx            # IER: transmitter holding register empty
    mov $0x02, %al
    out %al, %dx
    mov $500000000, %rcx
1:  cmpl $0, irq_count(%rip)
    jne 2f
    pause
    dec %rcx
    jnz 1b
    cli
    lea msg_none(%rip), %rsi
    call puts
    mov $3, %eax
    ret
2:  cli
    lea msg_got(%rip), %rsi
    call puts
    xor %eax, %eax
    ret

serial_irq:
    push %rax
    push %rdx
    incl irq_count(%rip)
    mov $(COM1 + 1), %dx            # IER off: one interrupt is enough
    xor %al, %al
    out %al, %dx
    mov $(COM1 + 2), %dx            # IIR read acknowledges
    in %dx, %al
    call pic_eoi
    pop %rdx
    pop %rax
    iretq

    .section .rodata
msg_got:
    .asciz "irq 4 delivered to vector 0x24\n"
msg_none:
    .asciz "no interrupt arrived\n"

    .section .data
    .align 4
irq_count:
    .long 0
