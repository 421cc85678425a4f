/* traps.h - the IDT: CPU exceptions are fatal; one vector for hv events. */
#ifndef GUEST_TRAPS_H
#define GUEST_TRAPS_H

#include <stdint.h>

/* What entry.S leaves on the stack, lowest address first. */
struct trap_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;                     /* pushed by the stub */
    uint64_t rip, cs, rflags, rsp, ss;          /* pushed by the CPU */
};

void traps_init(void);
void traps_load(void);            /* load the IDT traps_init filled (secondary CPUs) */
void idt_set_gate(unsigned vector, void (*entry)(void));
void idt_set_dpl(unsigned vector, unsigned dpl);
void trap_entry(struct trap_frame *f);
__attribute__((noreturn)) void trap_fatal(const struct trap_frame *f);

#endif
