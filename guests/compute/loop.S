/*
 * loop.S - the way into ring 3 and back for guests/compute.  The loop
 * itself is the library's hash_loop (guests/lib/hash_loop.S).
 */
#include "asm.h"

/*
 * uint64_t user_call(uint64_t n, uint64_t h, void *user_stack_top)
 *
 * Runs hash_loop(n, h) in ring 3 and returns its result.  main.c has set up (with guests/lib/ring3.c)
 * the GDT (user code 0x20, user data 0x18, both DPL 3), the TSS (RSP0), the
 * user bit in the page tables, and an interrupt gate for USER_EXIT_VECTOR
 * with DPL 3.  IRETQ to CS 0x23 / SS 0x1b enters ring 3; `int3` comes
 * back through that gate onto the TSS's RSP0 stack, and user_exit returns
 * from user_call on the saved kernel stack (the interrupt frame is dropped).
 * RDI and RSI pass through IRETQ untouched, so they are hash_loop's
 * arguments; RAX carries the result back through the interrupt.
 */
    .text
    .globl user_call
user_call:
    SAVE_CALLEE_SAVED
    mov     %rsp, saved_rsp(%rip)
    lea     user_entry(%rip), %rax
    IRET_TO_RING3 rip=%rax, rsp=%rdx, rflags=$0x2   /* IF=0, as in ring 0 here */

user_entry:                         /* ring 3 */
    call    hash_loop
    int3
    ud2

    .globl user_exit
user_exit:                          /* ring 0, on the TSS's RSP0 stack */
    mov     saved_rsp(%rip), %rsp
    mov     $0x10, %ecx             /* GDT_DATA: IRETQ to ring 3 nulled DS/ES, */
    mov     %ecx, %ds               /* the interrupt loaded a null SS */
    mov     %ecx, %es
    mov     %ecx, %ss
    RESTORE_CALLEE_SAVED
    ret

    .bss
    .balign 8
saved_rsp:
    .skip 8

    .section .note.GNU-stack, "", @progbits
