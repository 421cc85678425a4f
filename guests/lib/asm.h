/*
 * asm.h - assembler macros the library's and the kernels' .S files share.
 *
 * SAVE_CALLEE_SAVED / RESTORE_CALLEE_SAVED: the registers a SysV function
 * must give back (RBX, RBP, R12-R15), for code that leaves its caller's
 * stack (ring 3, a faulting probe) and comes back to it.
 * IRET_TO_RING3 rip, rsp, rflags: build an interrupt frame and IRETQ into
 * ring 3 with the user segments of ring3.h (operands as for push: a
 * register or an $immediate).
 */
#ifndef GUEST_ASM_H
#define GUEST_ASM_H

#include "ring3.h"

.macro SAVE_CALLEE_SAVED
    push    %rbx
    push    %rbp
    push    %r12
    push    %r13
    push    %r14
    push    %r15
.endm

.macro RESTORE_CALLEE_SAVED
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbp
    pop     %rbx
.endm

.macro IRET_TO_RING3 rip, rsp, rflags
    pushq   $(SEL_USER_DATA | RPL_USER)     /* SS */
    pushq   \rsp
    pushq   \rflags
    pushq   $(SEL_USER_CODE | RPL_USER)     /* CS */
    pushq   \rip
    iretq
.endm

#endif
