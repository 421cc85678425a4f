/*
 * ring3.h - what ring 3 needs beyond the library's ring-0 setup: a GDT
 * with user segments and a 64-bit TSS, the user bit on the first 2 MiB
 * (where the kernel image lives), and optionally an I/O permission bitmap.
 *
 * Selectors (the library's ring-0 code 0x08 and data 0x10 stay put):
 *   0x18 user data (DPL 3), 0x20 user code (DPL 3, L=1), 0x28 the TSS.
 * That order is also what SYSRET wants: STAR[63:48] = 0x10 gives SS 0x18
 * and CS 0x20 (SDM Vol. 2B, SYSRET).
 */
#ifndef GUEST_RING3_H
#define GUEST_RING3_H

#include <stdint.h>

#define SEL_USER_DATA   0x18
#define SEL_USER_CODE   0x20
#define SEL_TSS         0x28
#define PTE_U           0x004
#define RFLAGS_IOPL3    0x3000

/* Load the GDT and TSS (RSP0 = a stack of its own).  with_iomap: the TSS
 * limit covers an I/O bitmap that denies every port until ring3_allow_port. */
void ring3_init(int with_iomap);
void ring3_allow_port(uint16_t port);

#endif
