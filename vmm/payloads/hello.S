# Prints on the serial port and ends the VM through the i8042 reset.
    .include "lib.S"

    .section .text
main:
    lea msg(%rip), %rsi
    call puts
    jmp exit_reset

    .section .rodata
msg:
    .asciz "hello from an sbx test guest\n"
