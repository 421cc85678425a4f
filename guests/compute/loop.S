/*
 * loop.S - the compute loop of guests/compute, and the way into ring 3 and
 * back.  In assembly so the instructions per iteration are fixed (five) and
 * the same in ring 0 and ring 3, on every engine and compiler.
 */

/*
 * uint64_t hash_loop(uint64_t n, uint64_t h)  -- n >= 1
 *
 * An integer hash over n iterations, i = n..1:
 *     h ^= i;  h *= 0x100000001b3 (FNV-1's 64-bit prime);  h = rol(h, 13)
 * Five register-only instructions per iteration (xor, imul, rol, dec, jnz):
 * no memory access, so it measures how fast each engine runs plain ALU code.
 */
    .text
    .globl hash_loop
hash_loop:
    mov     %rsi, %rax
    movabs  $0x100000001b3, %rdx
1:  xor     %rdi, %rax
    imul    %rdx, %rax
    rol     $13, %rax
    dec     %rdi
    jnz     1b
    ret

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
    .globl user_call
user_call:
    push    %rbx
    push    %rbp
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, saved_rsp(%rip)
    pushq   $0x1b                   /* SS: user data, RPL 3 */
    pushq   %rdx                    /* RSP: the user stack */
    pushq   $0x2                    /* RFLAGS: IF=0, as in ring 0 here */
    pushq   $0x23                   /* CS: user code, RPL 3 */
    lea     user_entry(%rip), %rax
    push    %rax                    /* RIP */
    iretq

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
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbp
    pop     %rbx
    ret

    .bss
    .balign 8
saved_rsp:
    .skip 8

    .section .note.GNU-stack, "", @progbits
