# A minimal virtio-mmio (version 2) driver for the test guests: device
# discovery and feature negotiation, split virtqueues of 8 entries in one
# page each, descriptor setup, submission and waiting for the used ring.
#
# Virtqueue page Q:
#   Q+0x000 descriptor table (8 x 16 bytes)
#   Q+0x080 available ring: flags, idx, ring[8]
#   Q+0x100 used ring: flags, idx, ring[8] of {id, len}
#   Q+0x200 driver state: the used index seen last (u16)

    .set VIRTIO_MMIO_BASE, 0xd0000000
    .set VIRTIO_IRQ_BASE, 5
    .set R_MAGIC, 0x000
    .set R_VERSION, 0x004
    .set R_DEVICE_ID, 0x008
    .set R_DEVICE_FEATURES, 0x010
    .set R_DEVICE_FEATURES_SEL, 0x014
    .set R_DRIVER_FEATURES, 0x020
    .set R_DRIVER_FEATURES_SEL, 0x024
    .set R_QUEUE_SEL, 0x030
    .set R_QUEUE_NUM_MAX, 0x034
    .set R_QUEUE_NUM, 0x038
    .set R_QUEUE_READY, 0x044
    .set R_QUEUE_NOTIFY, 0x050
    .set R_INTERRUPT_STATUS, 0x060
    .set R_INTERRUPT_ACK, 0x064
    .set R_STATUS, 0x070
    .set R_QUEUE_DESC_LOW, 0x080
    .set R_QUEUE_DESC_HIGH, 0x084
    .set R_QUEUE_DRIVER_LOW, 0x090
    .set R_QUEUE_DRIVER_HIGH, 0x094
    .set R_QUEUE_DEVICE_LOW, 0x0a0
    .set R_QUEUE_DEVICE_HIGH, 0x0a4
    .set R_CONFIG, 0x100
    .set QSIZE, 8
    .set DESC_F_NEXT, 1
    .set DESC_F_WRITE, 2
    .set WAIT_SPINS, 3000000000

    .section .text
# virtio_init: %rdi = MMIO base, %esi = device id.
# Resets the device, accepts VERSION_1 only, sets FEATURES_OK.
# Returns %eax = 0, or a nonzero step number on failure.
virtio_init:
    mov $10, %eax
    cmpl $0x74726976, R_MAGIC(%rdi)
    jne 1f
    mov $11, %eax
    cmpl $2, R_VERSION(%rdi)
    jne 1f
    mov $12, %eax
    cmp %esi, R_DEVICE_ID(%rdi)
    jne 1f
    movl $0, R_STATUS(%rdi)
    movl $1, R_STATUS(%rdi)         # ACKNOWLEDGE
    movl $3, R_STATUS(%rdi)         # DRIVER
    movl $1, R_DEVICE_FEATURES_SEL(%rdi)
    mov $13, %eax
    testl $1, R_DEVICE_FEATURES(%rdi)   # VERSION_1 (bit 32)
    jz 1f
    movl $0, R_DRIVER_FEATURES_SEL(%rdi)
    movl $0, R_DRIVER_FEATURES(%rdi)
    movl $1, R_DRIVER_FEATURES_SEL(%rdi)
    movl $1, R_DRIVER_FEATURES(%rdi)
    movl $0xb, R_STATUS(%rdi)       # FEATURES_OK
    mov $14, %eax
    testl $8, R_STATUS(%rdi)
    jz 1f
    xor %eax, %eax
1:  ret

# virtq_setup: %rdi = MMIO base, %esi = queue index, %rdx = queue page.
# Returns %eax = 0, or 15 when the queue is too small.
virtq_setup:
    mov %esi, R_QUEUE_SEL(%rdi)
    mov $15, %eax
    cmpl $QSIZE, R_QUEUE_NUM_MAX(%rdi)
    jb 1f
    push %rdi
    mov %rdx, %rdi
    mov $512, %ecx
    xor %eax, %eax
    rep stosq
    pop %rdi
    movl $QSIZE, R_QUEUE_NUM(%rdi)
    mov %rdx, %rax
    mov %eax, R_QUEUE_DESC_LOW(%rdi)
    shr $32, %rax
    mov %eax, R_QUEUE_DESC_HIGH(%rdi)
    lea 0x80(%rdx), %rax
    mov %eax, R_QUEUE_DRIVER_LOW(%rdi)
    shr $32, %rax
    mov %eax, R_QUEUE_DRIVER_HIGH(%rdi)
    lea 0x100(%rdx), %rax
    mov %eax, R_QUEUE_DEVICE_LOW(%rdi)
    shr $32, %rax
    mov %eax, R_QUEUE_DEVICE_HIGH(%rdi)
    movl $1, R_QUEUE_READY(%rdi)
    xor %eax, %eax
1:  ret

# virtio_driver_ok: %rdi = MMIO base.
virtio_driver_ok:
    movl $0xf, R_STATUS(%rdi)
    ret

# virtq_desc: %rdx = queue page, %ecx = index, %r8 = address, %r9d = length,
# %r10d = flags, %r11d = next.
virtq_desc:
    mov %ecx, %eax
    shl $4, %eax
    add %rdx, %rax
    mov %r8, (%rax)
    mov %r9d, 8(%rax)
    mov %r10w, 12(%rax)
    mov %r11w, 14(%rax)
    ret

# virtq_submit: %rdi = MMIO base, %esi = queue index, %rdx = queue page,
# %ecx = head descriptor. Publishes the head and notifies the device.
virtq_submit:
    movzwl 0x82(%rdx), %eax
    mov %eax, %r8d
    and $(QSIZE - 1), %r8d
    mov %cx, 0x84(%rdx,%r8,2)
    mfence
    inc %eax
    mov %ax, 0x82(%rdx)
    mfence
    mov %esi, R_QUEUE_NOTIFY(%rdi)
    ret

# virtq_wait: %rdx = queue page. Spins until the device uses a buffer.
# Returns %eax = the used length, or -1 after WAIT_SPINS spins.
virtq_wait:
    movzwl 0x200(%rdx), %ecx
    mov $WAIT_SPINS, %r9
1:  movzwl 0x102(%rdx), %eax
    cmp %ecx, %eax
    jne 2f
    pause
    dec %r9
    jnz 1b
    mov $-1, %eax
    ret
2:  mov %ecx, %r8d
    and $(QSIZE - 1), %r8d
    mov 0x108(%rdx,%r8,8), %eax
    inc %ecx
    mov %cx, 0x200(%rdx)
    ret
