/*
 * snippets.S - the instructions cpu-exact probes, each with a label at the
 * instruction that must fault (or right after it, for traps) so the test
 * can compare RIP exactly.  Each snippet is a function: probe.h runs it in
 * ring 0 or ring 3.
 */
#include "asm-defs.h"

#define VBASE 0x40000000            /* main.c: the 4 KiB test pages */

    .text
    .macro snippet name
    .globl \name
\name:
    .endm
    .macro at name
    .globl \name
\name:
    .endm

/* ---- I/O privilege (ring 3) ---- */
snippet out_hypercall
    mov     $ASM_HC_VERSION, %eax
at out_hypercall_insn
    out     %al, $ASM_PORT_HYPERCALL
    ret
snippet out_dx_hypercall
    mov     $ASM_HC_VERSION, %eax
    mov     $ASM_PORT_HYPERCALL, %edx
at out_dx_hypercall_insn
    out     %al, %dx
    ret
snippet in_hypercall_port
at in_hypercall_port_insn
    in      $ASM_PORT_HYPERCALL, %al
    ret
snippet out_port80
    out     %al, $0x80
    ret
snippet outw_port80
at outw_port80_insn
    out     %ax, $0x80              /* ports 0x80 and 0x81: 0x81 is denied */
    ret

/* ---- twelve port writes in one translation block ---- */
snippet twelve_outs
    mov     $1, %eax
    .rept 12
    out     %al, $0x80
    inc     %eax
    .endr
    ret

/* ---- page faults (main.c maps the pages) ---- */
snippet write_read_only
at write_read_only_insn
    movb    $1, VBASE
    ret
snippet fetch_nx
    mov     $(VBASE + 0x1000), %eax
    call    *%rax                   /* faults on the fetch at the target */
    ret
snippet write_unmapped
at write_unmapped_insn
    movb    $1, VBASE + 0x2000
    ret
snippet read_unmapped
at read_unmapped_insn
    mov     VBASE + 0x2000, %al
    ret
snippet read_supervisor
at read_supervisor_insn
    mov     VBASE + 0x3000, %al
    ret
snippet read_reserved
    movabs  $0x10000000000, %rax    /* PML4 entry 2: PS set, a reserved bit */
at read_reserved_insn
    mov     (%rax), %al
    ret
snippet read_noncanonical
    movabs  $0x8000000000000000, %rax
at read_noncanonical_insn
    mov     (%rax), %al
    ret

/* ---- software interrupts ---- */
snippet do_int3
    int3
at do_int3_after
    ret
snippet do_int3_fault               /* ring 3, gate DPL 0: #GP at the int3 */
at do_int3_fault_insn
    int3
    ret
snippet do_int40
at do_int40_insn
    int     $0x40
at do_int40_after
    ret
snippet do_int13
    int     $13
at do_int13_after
    ret
/* INTO is not valid in 64-bit mode: #UD at the instruction, whatever OF
 * says (0xce is emitted by hand: the assembler refuses it in 64-bit code). */
snippet into_of_clear
    xor     %eax, %eax              /* OF = 0 */
at into_of_clear_insn
    .byte   0xce
    ret
snippet into_of_set
    mov     $0x7f, %al
    add     $1, %al                 /* OF = 1 */
at into_of_set_insn
    .byte   0xce
    ret
 /* INTO in compatibility mode (main.c loads a GDT with a 32-bit ring-0
 * code segment at COMPAT_CS): a far call there, INTO, a far return. */
#define COMPAT_CS 0x18
snippet compat_into_of_clear
    lcall   *compat_of_clear(%rip)
    ret
snippet compat_into_of_set
    lcall   *compat_of_set(%rip)
    ret
    .code32
compat_of_clear_code:
    xor     %eax, %eax              /* OF = 0: INTO does nothing */
    .globl compat_into_of_clear_insn
compat_into_of_clear_insn:
    into
    lret
compat_of_set_code:
    mov     $0x7f, %al
    add     $1, %al                 /* OF = 1: #OF, a trap past the INTO */
    into
    .globl compat_into_of_set_after
compat_into_of_set_after:
    lret
compat_syscall_code:
    .globl compat_syscall_insn
compat_syscall_insn:
    syscall                         /* Intel: #UD in compatibility mode */
    lret
    .code64
snippet compat_syscall
    lcall   *compat_syscall_ptr(%rip)
    ret
    .section .rodata
compat_of_clear:  .long compat_of_clear_code; .word COMPAT_CS
compat_of_set:    .long compat_of_set_code;   .word COMPAT_CS
compat_syscall_ptr: .long compat_syscall_code; .word COMPAT_CS
    .text
snippet do_int40_prefixed           /* prefixes change nothing: past all four bytes */
    .byte   0x66, 0x2e
    rex
    int     $0x40
at do_int40_prefixed_after
    ret
snippet do_int40_locked             /* LOCK INT: #UD at the prefix */
at do_int40_locked_insn
    .byte   0xf0
    int     $0x40
    ret
snippet do_int_3_long               /* CD 03: a software interrupt, two bytes */
    int     $3
at do_int_3_long_after
    ret

/* ---- CR3 with reserved bits (bit 62: above any MAXPHYADDR, not PCID's 63) ---- */
snippet bad_cr3
    mov     %cr3, %rax
    mov     %rax, %rcx
    bts     $62, %rax
at bad_cr3_insn
    mov     %rax, %cr3
    mov     %rcx, %cr3              /* not reached on a correct CPU */
    ret

/* ---- MOV to CR0/CR4/CR8 of cr_value (main.c sets it); r8 as the source
 * for CR4, so the instruction carries a REX prefix ---- */
    .globl cr_value
snippet write_cr0
    mov     cr_value(%rip), %rax
at write_cr0_insn
    mov     %rax, %cr0
    ret
snippet write_cr4
    mov     cr_value(%rip), %r8
at write_cr4_insn
    mov     %r8, %cr4
    ret
snippet write_cr8
    mov     cr_value(%rip), %rax
at write_cr8_insn
    mov     %rax, %cr8
    ret

/* ---- STI's interrupt shadow (main.c: an upcall is pending, IF=0) ---- */
    .globl shadow_entry, shadow_seen_rip
shadow_entry:                       /* the event vector: note where it struck */
    push    %rax
    mov     8(%rsp), %rax           /* the interrupted RIP */
    cmpq    $0, shadow_seen_rip(%rip)
    jne     1f
    mov     %rax, shadow_seen_rip(%rip)
1:  pop     %rax
    jmp     event_entry
snippet sti_nop
    sti
at sti_nop_shadowed
    nop                             /* runs before the upcall */
at sti_nop_after
    nop
    cli
    ret
snippet sti_hlt
    sti
at sti_hlt_insn
    hlt                             /* the upcall wakes it: taken after the hlt */
at sti_hlt_after
    cli
    ret

/* ---- SYSCALL / SYSRET ---- */
    .globl syscall_seen_rcx, syscall_seen_r11, syscall_seen_cs, syscall_seen_ss
    .globl syscall_seen_rflags, sysret_seen_cs, sysret_seen_ss
snippet user_syscall
    std                             /* DF: FMASK must clear it in ring 0 */
at user_syscall_insn
    syscall
at user_syscall_after
    cld
    mov     %cs, %eax
    mov     %rax, sysret_seen_cs(%rip)
    mov     %ss, %eax
    mov     %rax, sysret_seen_ss(%rip)
    ret

/* LSTAR: ring 0 on the user's stack (SYSCALL does not switch it), so
 * store to memory only, then go back with SYSRETQ. */
snippet syscall_entry
    mov     %rcx, syscall_seen_rcx(%rip)
    mov     %r11, syscall_seen_r11(%rip)
    mov     %cs, %eax
    mov     %rax, syscall_seen_cs(%rip)
    mov     %ss, %eax
    mov     %rax, syscall_seen_ss(%rip)
    pushfq
    pop     %rax
    mov     %rax, syscall_seen_rflags(%rip)
    sysretq

snippet sysret_noncanonical         /* ring 0 */
    movabs  $0x0000800000000000, %rcx
    mov     $0x2, %r11d
at sysret_noncanonical_insn
    sysretq
    ret

    .bss
    .balign 8
cr_value:            .skip 8
shadow_seen_rip:     .skip 8
syscall_seen_rcx:    .skip 8
syscall_seen_r11:    .skip 8
syscall_seen_cs:     .skip 8
syscall_seen_ss:     .skip 8
syscall_seen_rflags: .skip 8
sysret_seen_cs:      .skip 8
sysret_seen_ss:      .skip 8

    .section .note.GNU-stack, "", @progbits
