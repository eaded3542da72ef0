# virtio-blk driven as a driver would: negotiate, set up the request queue,
# then read sector 0 (checks the test's pattern), write sector 1 (the test
# reads it back on the host), flush, get the ID, and read past the end
# (must fail with IOERR). Completions are awaited on the used ring and
# counted through the device interrupt (IRQ 5 via its irqfd, PIC vector
# 0x25). Exit code 0 when all hold, else the failing step.
    .include "lib.S"
    .include "virtio.S"

    .set BLK_VECTOR, IRQ_VECTOR_BASE + VIRTIO_IRQ_BASE
    .set Q, 0x300000
    .set HDR, 0x310000
    .set DATA, 0x311000
    .set STATUS, 0x312000
    .set T_IN, 0
    .set T_OUT, 1
    .set T_FLUSH, 4
    .set T_GET_ID, 8

    .section .text
main:
    mov $BLK_VECTOR, %edi
    lea blk_irq(%rip), %rsi
    call set_gate
    mov $(1 << VIRTIO_IRQ_BASE), %edi
    call pic_init
    sti
    mov $VIRTIO_MMIO_BASE, %rdi
    mov $2, %esi
    call virtio_init
    test %eax, %eax
    jnz fail
    xor %esi, %esi
    mov $Q, %rdx
    call virtq_setup
    test %eax, %eax
    jnz fail
    call virtio_driver_ok

    lea msg_capacity(%rip), %rsi
    call puts
    mov $VIRTIO_MMIO_BASE, %rdi
    mov R_CONFIG(%rdi), %rdi        # capacity in sectors (64-bit read)
    mov %rdi, capacity(%rip)
    call puthex
    call newline

    # 1. read sector 0
    mov $T_IN, %edi
    xor %esi, %esi
    mov $(DESC_F_NEXT | DESC_F_WRITE), %edx
    call request
    mov $20, %ebx
    test %eax, %eax
    jnz fail_step
    mov $DATA, %rdi
    lea pattern0(%rip), %rsi
    mov $pattern0_len, %ecx
    call memcmp
    mov $21, %ebx
    test %eax, %eax
    jnz fail_step
    lea msg_read(%rip), %rsi
    call puts

    # 2. write sector 1
    mov $DATA, %rdi
    lea pattern1(%rip), %rsi
    mov $pattern1_len, %ecx
    call memcpy
    mov $T_OUT, %edi
    mov $1, %esi
    mov $DESC_F_NEXT, %edx
    call request
    mov $30, %ebx
    test %eax, %eax
    jnz fail_step
    lea msg_write(%rip), %rsi
    call puts

    # 3. flush
    mov $T_FLUSH, %edi
    xor %esi, %esi
    mov $-1, %edx                   # no data descriptor
    call request
    mov $40, %ebx
    test %eax, %eax
    jnz fail_step
    lea msg_flush(%rip), %rsi
    call puts

    # 4. get id
    mov $T_GET_ID, %edi
    xor %esi, %esi
    mov $(DESC_F_NEXT | DESC_F_WRITE), %edx
    call request
    mov $50, %ebx
    test %eax, %eax
    jnz fail_step
    lea msg_id(%rip), %rsi
    call puts
    movb $0, DATA + 20
    mov $DATA, %rsi
    call puts
    call newline

    # 5. a sector past the end must fail with IOERR (1)
    mov $T_IN, %edi
    mov capacity(%rip), %rsi
    mov $(DESC_F_NEXT | DESC_F_WRITE), %edx
    call request
    mov $60, %ebx
    cmp $1, %eax
    jne fail_step
    lea msg_bad(%rip), %rsi
    call puts

    mov $70, %ebx
    cmpl $0, irq_count(%rip)
    je fail_step
    lea msg_irqs(%rip), %rsi
    call puts
    mov irq_count(%rip), %edi
    call puthex
    call newline
    xor %eax, %eax
    ret

fail_step:
    mov %ebx, %eax
fail:
    push %rax
    lea msg_fail(%rip), %rsi
    call puts
    mov (%rsp), %rdi
    call puthex
    call newline
    pop %rax
    ret

# request: %edi = type, %rsi = sector, %edx = data descriptor flags (or -1
# for none; the data buffer is 512 bytes at DATA). Returns %eax = the
# status byte, or -1 on timeout.
request:
    mov %edi, HDR
    movl $0, HDR + 4
    mov %rsi, HDR + 8
    movb $0xff, STATUS
    push %rdx
    mov $Q, %rdx
    xor %ecx, %ecx                  # desc 0: header
    mov $HDR, %r8
    mov $16, %r9d
    mov $DESC_F_NEXT, %r10d
    mov $1, %r11d
    pop %rax
    cmp $-1, %eax
    jne 1f
    mov $2, %r11d                   # header straight to status
    call virtq_desc
    jmp 2f
1:  push %rax
    call virtq_desc
    pop %r10                        # desc 1: data
    mov $1, %ecx
    mov $DATA, %r8
    mov $512, %r9d
    mov $2, %r11d
    call virtq_desc
2:  mov $2, %ecx                    # desc 2: status
    mov $STATUS, %r8
    mov $1, %r9d
    mov $DESC_F_WRITE, %r10d
    xor %r11d, %r11d
    call virtq_desc
    mov $VIRTIO_MMIO_BASE, %rdi
    xor %esi, %esi
    xor %ecx, %ecx
    call virtq_submit
    call virtq_wait
    cmp $-1, %eax
    je 3f
    movzbl STATUS, %eax
3:  ret

blk_irq:
    push %rax
    push %rdi
    mov $VIRTIO_MMIO_BASE, %rdi
    mov R_INTERRUPT_STATUS(%rdi), %eax
    mov %eax, R_INTERRUPT_ACK(%rdi)
    incl irq_count(%rip)
    call pic_eoi
    pop %rdi
    pop %rax
    iretq

    .section .rodata
pattern0:
    .ascii "sbx-disk-sector-0"
    .set pattern0_len, . - pattern0
pattern1:
    .ascii "written by the sbx test guest"
    .set pattern1_len, . - pattern1
msg_capacity:
    .asciz "virtio-blk capacity (sectors): "
msg_read:
    .asciz "read sector 0: ok\n"
msg_write:
    .asciz "wrote sector 1: ok\n"
msg_flush:
    .asciz "flush: ok\n"
msg_id:
    .asciz "device id: "
msg_bad:
    .asciz "read past the end: IOERR as expected\n"
msg_irqs:
    .asciz "interrupts: "
msg_fail:
    .asciz "virtio-blk test failed at step "

    .section .data
    .align 8
capacity:
    .quad 0
irq_count:
    .long 0
