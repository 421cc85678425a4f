/*
 * loop.S - smp-compute's ring-3 loop and the way there and back, per CPU.
 *
 * The same five-instruction hash loop as guests/compute, entered by IRETQ
 * and left by `int3`.  Each CPU keeps its kernel stack pointer in
 * saved_rsp[its id] (its id from %gs, guests/lib/smp.h): the CPUs go in
 * and out of ring 3 at the same time.
 */
    .text
    .globl smp_hash_loop
smp_hash_loop:                      /* uint64_t (uint64_t n, uint64_t h), n >= 1 */
    mov     %rsi, %rax
    movabs  $0x100000001b3, %rdx
1:  xor     %rdi, %rax
    imul    %rdx, %rax
    rol     $13, %rax
    dec     %rdi
    jnz     1b
    ret

    /* uint64_t (uint64_t n, uint64_t h, void *user_stack_top, uint64_t *rsp0_slot) */
    .globl smp_user_call
smp_user_call:
    push    %rbx
    push    %rbp
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, (%rcx)
    pushq   $0x1b                   /* SS: user data, RPL 3 */
    pushq   %rdx                    /* RSP: the user stack */
    pushq   $0x2                    /* RFLAGS: IF=0 */
    pushq   $0x23                   /* CS: user code, RPL 3 */
    lea     user_entry(%rip), %rax
    push    %rax
    iretq

user_entry:                         /* ring 3 */
    call    smp_hash_loop
    int3
    ud2

    .globl smp_user_exit
smp_user_exit:                      /* ring 0, on this CPU's RSP0 stack */
    mov     40(%rsp), %rsp          /* the slot at RSP0 */
    mov     $0x10, %ecx             /* GDT_DATA */
    mov     %ecx, %ds
    mov     %ecx, %es
    mov     %ecx, %ss
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbp
    pop     %rbx
    ret

    .section .note.GNU-stack, "", @progbits
