/*
 * probe.h - run a piece of code, in ring 0 or ring 3, and catch the one
 * exception it raises: the vector, error code, RIP, CS and CR2 the CPU
 * reported.  For test kernels that check what a CPU (or hv) does on a
 * fault, the way kvm-unit-tests and XTF do.
 *
 *     struct probe p;
 *     probe_ring0(write_to_read_only_page, &p);
 *     GUEST_ASSERT_EQ(p.vector, X86_PF);
 *
 * Ring 3 needs ring3_init() first (ring3.h).  A function run in ring 3
 * returns to a `ud2` in ring 3: that #UD is reported as PROBE_NO_FAULT.
 */
#ifndef GUEST_PROBE_H
#define GUEST_PROBE_H

#include <stdint.h>
#include "traps.h"

#define PROBE_NO_FAULT (~0ull)

struct probe {
    uint64_t vector;            /* PROBE_NO_FAULT if the code returned */
    uint64_t error;             /* as the CPU pushed it (0 if it pushes none) */
    uint64_t rip, cs, cr2;
};

typedef void (*probe_fn)(void);

void probe_ring0(probe_fn fn, struct probe *out);
/* rflags: what ring 3 starts with (IOPL in bits 12-13; IF stays 0). */
void probe_ring3(probe_fn fn, uint64_t rflags, struct probe *out);

/* traps.c calls this first for every exception: 1 if the probe took it
 * (the frame then resumes in probe_resume). */
int probe_catch(struct trap_frame *f);

/* Stubs for vectors whose gate a test points elsewhere: a frame without a
 * CPU error code, as the generic stubs build (entry.S). */
void probe_stub_13_noerror(void);
void probe_stub_0x40(void);

#endif
