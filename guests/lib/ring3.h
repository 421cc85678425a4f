/*
 * ring3.h - what ring 3 needs beyond the library's ring-0 setup: a GDT
 * with user segments and a 64-bit TSS, the user bit on the first 2 MiB
 * (where the kernel image lives), and optionally an I/O permission bitmap.
 *
 * Selectors (the library's ring-0 code 0x08 and data 0x10 stay put):
 *   0x18 user data (DPL 3), 0x20 user code (DPL 3, L=1), 0x28 the TSS.
 * That order is also what SYSRET wants: STAR[63:48] = 0x10 gives SS 0x18
 * and CS 0x20 (SDM Vol. 2B, SYSRET).  Assembly includes this file too
 * (asm.h's IRET_TO_RING3 takes the selectors from here).
 */
#ifndef GUEST_RING3_H
#define GUEST_RING3_H

#define SEL_USER_DATA   0x18
#define SEL_USER_CODE   0x20
#define SEL_TSS         0x28
#define RPL_USER        3
#define PTE_U           0x004
#define RFLAGS_IOPL3    0x3000
#define RING3_GDT_ENTRIES 7             /* null, 4 segments, the TSS's two slots */
#define TSS64_BYTES     104             /* a TSS without an I/O bitmap */

#ifndef __ASSEMBLER__
#include <stdint.h>

/* The 64-bit TSS (SDM Vol. 3A 8.7). */
struct __attribute__((packed)) tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
};
_Static_assert(sizeof(struct tss64) == TSS64_BYTES, "the SDM's TSS layout");

/* The one CPU's ring 3: load the GDT and TSS (RSP0 = a stack of its own)
 * and set the user bit on the first 2 MiB.  with_iomap: the TSS limit
 * covers an I/O bitmap that denies every port until ring3_allow_port. */
void ring3_init(int with_iomap);
void ring3_allow_port(uint16_t port);

/* The parts, for a kernel with a TSS per CPU (smp-compute): fill gdt with
 * the segments above and a descriptor for the tss_bytes at tss, and load
 * both on this CPU; set the user bit on the first two_mib_pages 2 MiB pages. */
void ring3_load(uint64_t gdt[RING3_GDT_ENTRIES], const void *tss, uint32_t tss_bytes);
void ring3_user_pages(unsigned two_mib_pages);
#endif

#endif
