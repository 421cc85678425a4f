/*
* probe_entry.S - the way into a probed function and back (probe.h).
 *
 * probe_enter saves the callee-saved registers and RSP, then calls the
 * function (ring 0) or IRETQs to it (ring 3) with a return address that
 * points at a `ud2` in ring 3.  Whatever exception comes, probe_catch()
 * (probe.c) records it and rewrites the frame so that IRETQ lands on
 * probe_resume in ring 0, on the saved stack, which returns from
 * probe_enter.
 */
#include "asm.h"
#include "x86.h"

    .text
/* int probe_enter(fn, user_rsp (0: ring 0), rflags): 0 returned, 1 faulted */
    .globl probe_enter
probe_enter:
    SAVE_CALLEE_SAVED
    mov     %rsp, probe_saved_rsp(%rip)
    movb    $1, probe_armed(%rip)
    test    %rsi, %rsi
    jnz     1f
    call    *%rdi                   /* ring 0 */
    movb    $0, probe_armed(%rip)
    xor     %eax, %eax
    jmp     probe_out
1:  lea     probe_user_done(%rip), %rax
    sub     $8, %rsi
    mov     %rax, (%rsi)            /* fn's return address, on the user stack */
    IRET_TO_RING3 rip=%rdi, rsp=%rsi, rflags=%rdx

    .globl probe_user_done
probe_user_done:                    /* ring 3: fn returned */
    ud2

    .globl probe_resume
probe_resume:                       /* ring 0, RSP = probe_saved_rsp */
    mov     $GDT_DATA, %ecx         /* IRETQ to ring 3 nulled DS and ES */
    mov     %ecx, %ds
    mov     %ecx, %es
    mov     $1, %eax
probe_out:
    RESTORE_CALLEE_SAVED
    ret

    .globl probe_stub_13_noerror
probe_stub_13_noerror:
    pushq   $0
    pushq   $13
    jmp     trap_common

    .globl probe_stub_0x40
probe_stub_0x40:
    pushq   $0
    pushq   $0x40
    jmp     trap_common

    .bss
    .balign 8
    .globl probe_saved_rsp, probe_armed
probe_saved_rsp:
    .skip 8
probe_armed:
    .skip 1

    .section .note.GNU-stack, "", @progbits
