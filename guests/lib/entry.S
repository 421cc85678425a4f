/*
 * entry.S - the ways into the kernel after boot: CPU exceptions and the hv
 * event upcall.  Both arrive through the IDT (traps.c fills it).
 */
#include "x86.h"

/*
 * T:340 One 16-byte stub per exception vector 0..31.  The CPU pushes an
 * error code for some vectors only (SDM Vol. 3A 6.13); the stubs push a 0
 * for the others so every frame looks the same, then the vector number.
 * The table is aligned to its own size rounded up to a power of two, so no
 * stub crosses a 64 KiB boundary and traps.c can make each IDT gate from the
 * first one by adding TRAP_STUB_SIZE.
 */
    .text
    .balign 512
    .globl trap_stubs
trap_stubs:
    vector = 0
    .rept EXCEPTION_COUNT
    .balign TRAP_STUB_SIZE
    .if vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21 || vector == 29 || vector == 30
    .else
    pushq   $0                      /* no error code from the CPU */
    .endif
    pushq   $vector
    jmp     trap_common
    vector = vector + 1
    .endr

/*
 * Save every general register (struct trap_frame in traps.h, lowest address
 * first) and hand the frame to C.  trap_entry() returns only if a test took
 * the exception (probe.h): then the frame, maybe rewritten, is resumed.  The
 * stack is 16-byte aligned at the call: 5 CPU words + error + vector + 15
 * registers = 22 words.
 */
    .globl trap_common
trap_common:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %rbp
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, %rdi
    call    trap_entry
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rbp
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rbx
    pop     %rax
    add     $16, %rsp               /* vector and error code */
    iretq

/*
 * T:365 The event upcall.  hv injects the vector given to
 * HV_HC_EVENT_REGISTER; we save the registers C may clobber, let
 * events_dispatch() consume the pending bits and return with IRETQ.
 * Nine pushes on top of the CPU's five words keep the call 16-byte aligned.
 */
    .globl event_entry
event_entry:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    call    events_dispatch
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rax
    iretq

    .section .note.GNU-stack, "", @progbits
