# virtio-console, one port: the guest posts a receive buffer, says hello on
# the transmit queue, waits for the host's bytes, and sends them back
# prefixed with "echo: ". Exit code 0, else the failing step.
    .include "lib.S"
    .include "virtio.S"

    .set RXQ, 0x300000
    .set TXQ, 0x301000
    .set RXBUF, 0x320000
    .set TXBUF, 0x330000
    .set ECHOBUF, 0x331000

    .section .text
main:
    mov $VIRTIO_MMIO_BASE, %rdi
    mov $3, %esi
    call virtio_init
    test %eax, %eax
    jnz fail
    xor %esi, %esi
    mov $RXQ, %rdx
    call virtq_setup
    test %eax, %eax
    jnz fail
    mov $1, %esi
    mov $TXQ, %rdx
    call virtq_setup
    test %eax, %eax
    jnz fail
    call virtio_driver_ok

    # receive buffer: 256 bytes, device-writable
    mov $RXQ, %rdx
    xor %ecx, %ecx
    mov $RXBUF, %r8
    mov $256, %r9d
    mov $DESC_F_WRITE, %r10d
    xor %r11d, %r11d
    call virtq_desc
    mov $VIRTIO_MMIO_BASE, %rdi
    xor %esi, %esi
    xor %ecx, %ecx
    call virtq_submit

    # hello
    mov $TXBUF, %rdi
    lea hello(%rip), %rsi
    mov $hello_len, %ecx
    call memcpy
    mov $hello_len, %esi
    mov $TXBUF, %rdi
    call transmit
    mov $20, %ebx
    cmp $-1, %eax
    je fail_step

    # wait for the host's bytes
    mov $RXQ, %rdx
    call virtq_wait
    mov $30, %ebx
    cmp $-1, %eax
    je fail_step
    test %eax, %eax
    jz fail_step
    mov %eax, %r12d                 # received length
    lea msg_got(%rip), %rsi
    call puts

    # "echo: " + the bytes
    mov $ECHOBUF, %rdi
    lea echo(%rip), %rsi
    mov $echo_len, %ecx
    call memcpy
    lea ECHOBUF + echo_len, %rdi
    mov $RXBUF, %rsi
    mov %r12d, %ecx
    call memcpy
    lea echo_len(%r12), %esi
    mov $ECHOBUF, %rdi
    call transmit
    mov $40, %ebx
    cmp $-1, %eax
    je fail_step
    lea msg_done(%rip), %rsi
    call puts
    xor %eax, %eax
    ret

# transmit: %rdi = buffer, %esi = length. Waits until the device used it.
transmit:
    mov $TXQ, %rdx
    xor %ecx, %ecx
    mov %rdi, %r8
    mov %esi, %r9d
    xor %r10d, %r10d
    xor %r11d, %r11d
    call virtq_desc
    mov $VIRTIO_MMIO_BASE, %rdi
    mov $1, %esi
    xor %ecx, %ecx
    call virtq_submit
    call virtq_wait
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

    .section .rodata
hello:
    .ascii "hello from the guest console\n"
    .set hello_len, . - hello
echo:
    .ascii "echo: "
    .set echo_len, . - echo
msg_got:
    .asciz "console: received bytes from the host\n"
msg_done:
    .asciz "console: echoed\n"
msg_fail:
    .asciz "virtio-console test failed at step "
