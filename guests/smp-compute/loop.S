/*
 * loop.S - smp-compute's way into ring 3 and back, per CPU.
 *
 * The library's five-instruction hash_loop (guests/lib/hash_loop.S), as
 * guests/compute runs it, entered by IRETQ and left by `int3`.  Each CPU
 * keeps its kernel stack pointer in the slot at the top of its own RSP0
 * stack (main.c): the CPUs go in and out of ring 3 at the same time.
 */
#include "asm.h"

    /* uint64_t (uint64_t n, uint64_t h, void *user_stack_top, uint64_t *rsp0_slot) */
    .text
    .globl smp_user_call
smp_user_call:
    SAVE_CALLEE_SAVED
    mov     %rsp, (%rcx)
    lea     user_entry(%rip), %rax
    IRET_TO_RING3 rip=%rax, rsp=%rdx, rflags=$0x2   /* IF=0 */

user_entry:                         /* ring 3 */
    call    hash_loop
    int3
    ud2

    .globl smp_user_exit
smp_user_exit:                      /* ring 0, on this CPU's RSP0 stack */
    mov     40(%rsp), %rsp          /* the slot at RSP0 */
    mov     $0x10, %ecx             /* GDT_DATA */
    mov     %ecx, %ds
    mov     %ecx, %es
    mov     %ecx, %ss
    RESTORE_CALLEE_SAVED
    ret

    .section .note.GNU-stack, "", @progbits
