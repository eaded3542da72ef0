# Two vCPUs: the boot CPU prints, wakes the second through its local APIC
# (INIT, SIPI, SIPI) into a real-mode trampoline at 0x10000 that climbs to
# long mode; the second prints; the boot CPU sees it and exits with 0.
    .include "lib.S"

    .set APIC_BASE, 0xfee00000
    .set APIC_SVR, 0xf0
    .set APIC_ICR_LOW, 0x300
    .set APIC_ICR_HIGH, 0x310
    .set SIPI_VECTOR, 0x10          # trampoline page 0x10000

    .section .text
main:
    lea msg_cpu0(%rip), %rsi
    call locked_puts
    mov %cr3, %rax
    mov %eax, ap_cr3(%rip)
    mov $APIC_BASE, %rbx
    movl $0x1ff, APIC_SVR(%rbx)     # software-enable the local APIC
    movl $(1 << 24), APIC_ICR_HIGH(%rbx)
    movl $0x4500, APIC_ICR_LOW(%rbx)    # INIT, assert
    call short_delay
    movl $(1 << 24), APIC_ICR_HIGH(%rbx)
    movl $(0x4600 | SIPI_VECTOR), APIC_ICR_LOW(%rbx)
    call short_delay
    cmpl $0, ap_ready(%rip)
    jne 2f
    movl $(1 << 24), APIC_ICR_HIGH(%rbx)
    movl $(0x4600 | SIPI_VECTOR), APIC_ICR_LOW(%rbx)
2:  mov $2000000000, %rcx
1:  cmpl $0, ap_ready(%rip)
    jne 3f
    pause
    dec %rcx
    jnz 1b
    lea msg_timeout(%rip), %rsi
    call locked_puts
    mov $2, %eax
    ret
3:  lea msg_both(%rip), %rsi
    call locked_puts
    xor %eax, %eax
    ret

short_delay:
    mov $100000, %ecx
1:  pause
    dec %ecx
    jnz 1b
    ret

# puts under a spinlock shared by both CPUs.
locked_puts:
1:  mov $1, %eax
    xchg %eax, print_lock(%rip)
    test %eax, %eax
    jz 2f
    pause
    jmp 1b
2:  call puts
    movl $0, print_lock(%rip)
    ret

ap_main64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    lea stack1_top(%rip), %rsp
    lea msg_cpu1(%rip), %rsi
    call locked_puts
    movl $1, ap_ready(%rip)
1:  cli
    hlt
    jmp 1b

    .section .trampoline, "ax"
    .code16
ap_start:
    cli
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (tramp_gdt_ptr - ap_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x18, $ap_start32
    .code32
ap_start32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $0x20, %eax                  # PAE
    mov %eax, %cr4
    mov ap_cr3, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx           # EFER.LME
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax            # paging on: long mode
    mov %eax, %cr0
    ljmp $0x08, $ap_main64
    .align 8
tramp_gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt
    .code64

    .section .rodata
msg_cpu0:
    .asciz "cpu 0: up\n"
msg_cpu1:
    .asciz "cpu 1: up\n"
msg_both:
    .asciz "cpu 0: saw cpu 1\n"
msg_timeout:
    .asciz "cpu 0: cpu 1 never came up\n"

    .section .data
    .align 4
print_lock:
    .long 0
ap_ready:
    .long 0
ap_cr3:
    .long 0

    .section .bss
    .align 16
stack1:
    .skip 0x4000
stack1_top:
