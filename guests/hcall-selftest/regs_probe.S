/*
 * regs_probe.S - does a hypercall keep every register but RAX?
 *
 * long regs_probe(void *stub, const uint64_t in[14], uint64_t out[14])
 *
 * Loads all general registers except RAX and RSP from in[] (order below),
 * calls the stub, stores them to out[] and returns RAX.  The C side puts the
 * hypercall's arguments in the RDI, RSI, RDX, R10 and R8 slots and patterns
 * elsewhere.  This file and lib/hypercall.h are the only places that know
 * the calling convention; this one exists to check it.
 *
 * in[]/out[]: 0 RBX, 1 RCX, 2 RDX, 3 RSI, 4 RDI, 5 RBP, 6 R8, 7 R9, 8 R10,
 *             9 R11, 10 R12, 11 R13, 12 R14, 13 R15
 */
#include "asm.h"

    .text
    .globl regs_probe
regs_probe:
    SAVE_CALLEE_SAVED               /* the SysV ABI's, given back below */
    push    %rdx                    /* out, for after the call */
    mov     %rdi, %rax              /* the stub; it loads RAX itself */
    mov     0*8(%rsi), %rbx
    mov     1*8(%rsi), %rcx
    mov     2*8(%rsi), %rdx
    mov     4*8(%rsi), %rdi
    mov     5*8(%rsi), %rbp
    mov     6*8(%rsi), %r8
    mov     7*8(%rsi), %r9
    mov     8*8(%rsi), %r10
    mov     9*8(%rsi), %r11
    mov     10*8(%rsi), %r12
    mov     11*8(%rsi), %r13
    mov     12*8(%rsi), %r14
    mov     13*8(%rsi), %r15
    mov     3*8(%rsi), %rsi         /* last: RSI held in[] */
    call    *%rax
    push    %rax                    /* the result */
    mov     8(%rsp), %rax           /* out */
    mov     %rbx, 0*8(%rax)
    mov     %rcx, 1*8(%rax)
    mov     %rdx, 2*8(%rax)
    mov     %rsi, 3*8(%rax)
    mov     %rdi, 4*8(%rax)
    mov     %rbp, 5*8(%rax)
    mov     %r8, 6*8(%rax)
    mov     %r9, 7*8(%rax)
    mov     %r10, 8*8(%rax)
    mov     %r11, 9*8(%rax)
    mov     %r12, 10*8(%rax)
    mov     %r13, 11*8(%rax)
    mov     %r14, 12*8(%rax)
    mov     %r15, 13*8(%rax)
    pop     %rax
    add     $8, %rsp                /* drop out */
    RESTORE_CALLEE_SAVED
    ret

    .section .note.GNU-stack, "", @progbits
