# Prints what CPUID leaf 1 tells this vCPU: EBX (APIC ID in bits 31..24)
# and ECX (feature flags), then exits with 0.
    .include "lib.S"

    .section .text
main:
    mov $1, %eax
    xor %ecx, %ecx
    cpuid
    mov %ecx, %r12d
    mov %ebx, %r13d
    lea msg_ebx(%rip), %rsi
    call puts
    mov %r13, %rdi
    call puthex
    call newline
    lea msg_ecx(%rip), %rsi
    call puts
    mov %r12, %rdi
    call puthex
    call newline
    xor %eax, %eax
    ret

    .section .rodata
msg_ebx:
    .asciz "cpuid.1.ebx="
msg_ecx:
    .asciz "cpuid.1.ecx="
