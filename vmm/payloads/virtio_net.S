# virtio-net: the guest reads its MAC, posts a receive buffer, sends one
# broadcast Ethernet frame (EtherType 0x88b5, local experimental) and waits
# for the host's answer frame, whose payload it checks. Exit code 0, else
# the failing step.
    .include "lib.S"
    .include "virtio.S"

    .set RXQ, 0x300000
    .set TXQ, 0x301000
    .set RXBUF, 0x320000
    .set TXBUF, 0x330000
    .set VNET_HDR, 12
    .set FRAME_LEN, 60

    .section .text
main:
    mov $VIRTIO_MMIO_BASE, %rdi
    mov $1, %esi
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

    # receive buffer: header + 1514 bytes
    mov $RXQ, %rdx
    xor %ecx, %ecx
    mov $RXBUF, %r8
    mov $(VNET_HDR + 1514), %r9d
    mov $DESC_F_WRITE, %r10d
    xor %r11d, %r11d
    call virtq_desc
    mov $VIRTIO_MMIO_BASE, %rdi
    xor %esi, %esi
    xor %ecx, %ecx
    call virtq_submit

    # frame: zero vnet header, broadcast destination, our MAC, EtherType
    mov $TXBUF, %rdi
    mov $(VNET_HDR + FRAME_LEN), %ecx
    xor %eax, %eax
    rep stosb
    movl $0xffffffff, TXBUF + VNET_HDR
    movw $0xffff, TXBUF + VNET_HDR + 4
    mov $VIRTIO_MMIO_BASE, %rsi
    xor %ecx, %ecx
1:  movb R_CONFIG(%rsi,%rcx), %al   # MAC, byte by byte from config space
    mov %al, TXBUF + VNET_HDR + 6(%rcx)
    inc %ecx
    cmp $6, %ecx
    jb 1b
    movw $0xb588, TXBUF + VNET_HDR + 12
    lea TXBUF + VNET_HDR + 14, %rdi
    lea guest_payload(%rip), %rsi
    mov $guest_payload_len, %ecx
    call memcpy

    mov $TXQ, %rdx
    xor %ecx, %ecx
    mov $TXBUF, %r8
    mov $(VNET_HDR + FRAME_LEN), %r9d
    xor %r10d, %r10d
    xor %r11d, %r11d
    call virtq_desc
    mov $VIRTIO_MMIO_BASE, %rdi
    mov $1, %esi
    xor %ecx, %ecx
    call virtq_submit
    call virtq_wait
    mov $20, %ebx
    cmp $-1, %eax
    je fail_step
    lea msg_sent(%rip), %rsi
    call puts

    # Other frames (the host kernel's own chatter) may come first: skip
    # up to 16 of them, handing the buffer back each time.
    mov $16, %r12d
2:  mov $RXQ, %rdx
    call virtq_wait
    mov $30, %ebx
    cmp $-1, %eax
    je fail_step
    cmp $(VNET_HDR + 14 + host_payload_len), %eax
    jb 3f
    cmpw $0xb588, RXBUF + VNET_HDR + 12
    je 4f
3:  mov $32, %ebx
    dec %r12d
    jz fail_step
    mov $VIRTIO_MMIO_BASE, %rdi
    xor %esi, %esi
    mov $RXQ, %rdx
    xor %ecx, %ecx
    call virtq_submit
    jmp 2b
4:
    lea RXBUF + VNET_HDR + 14, %rdi
    lea host_payload(%rip), %rsi
    mov $host_payload_len, %ecx
    call memcmp
    mov $33, %ebx
    test %eax, %eax
    jnz fail_step
    lea msg_received(%rip), %rsi
    call puts
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

    .section .rodata
guest_payload:
    .ascii "sbx guest frame"
    .set guest_payload_len, . - guest_payload
host_payload:
    .ascii "sbx host frame"
    .set host_payload_len, . - host_payload
msg_sent:
    .asciz "net: frame sent\n"
msg_received:
    .asciz "net: host frame received\n"
msg_fail:
    .asciz "virtio-net test failed at step "
