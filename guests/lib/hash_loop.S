/*
 * hash_loop.S - the compute loop of guests/compute and guests/smp-compute.
 * In assembly so the instructions per iteration are fixed (five) and the
 * same in ring 0 and ring 3, on every engine and compiler.
 *
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

    .section .note.GNU-stack, "", @progbits
