/*
 * smp_entry.S - where a secondary CPU starts (HV_HC_VCPU_UP's context.rip).
 *
 * hv starts it in 64-bit mode on hv's boot GDT, with RSP = its stack and
 * RDI = its struct smp_cpu (smp.c).  It loads the library's GDT (start.S)
 * and reloads every segment it uses from it, then goes to C.
 */
#include "x86.h"

    .text
    .code64
    .globl smp_secondary_entry
smp_secondary_entry:
    lgdt    gdt_ptr(%rip)
    mov     $GDT_DATA, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    pushq   $GDT_CODE64             /* a far return reloads CS */
    lea     1f(%rip), %rax
    push    %rax
    lretq
1:  call    smp_secondary_main      /* RDI: still the struct smp_cpu */
    ud2

    .section .note.GNU-stack, "", @progbits
