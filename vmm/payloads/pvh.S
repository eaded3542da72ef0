# One guest for two VMMs: sbx's kvm engine enters it at e_entry (`_start`
# in lib.S, 64-bit mode, paging on), QEMU (`-M microvm -kernel`, or any PVH
# loader) at the 32-bit entry its Xen PVH ELF note names (protected mode,
# paging off, flat segments; %ebx = start_info, unused here). Both paths
# print the same line on COM1 and write 0 to the exit port: the kvm engine
# reports ExitCode(0), QEMU's `isa-debug-exit,iobase=0x501` exits with
# status (0 << 1) | 1 = 1.
    .include "lib.S"

    .set XEN_ELFNOTE_PHYS32_ENTRY, 18

    .section .text
main:
    lea msg(%rip), %rsi
    call puts
    xor %eax, %eax
    ret

# The PVH entry: same output, same exit, in 32-bit code (no stack needed).
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    mov $msg, %esi
    mov $COM1, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  xor %eax, %eax
    mov $EXIT_PORT, %dx
    out %al, %dx
3:  hlt
    jmp 3b
    .code64

    .section .rodata
msg:
    .asciz "hello from an sbx pvh guest\n"

# ELF note "Xen", type XEN_ELFNOTE_PHYS32_ENTRY, desc = the 32-bit entry.
    .section .note.Xen, "a", @note
    .balign 4
    .long 2f - 1f               # n_namesz
    .long 4f - 3f               # n_descsz
    .long XEN_ELFNOTE_PHYS32_ENTRY
1:  .asciz "Xen"
2:  .balign 4
3:  .long pvh_start32
4:  .balign 4
