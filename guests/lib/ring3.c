/* ring3.c - GDT, TSS and page bits for ring 3 (ring3.h). */
#include "ring3.h"
#include "x86.h"

#define IOMAP_BYTES (65536 / 8)

/* The TSS and, right after it, the I/O permission bitmap with its
 * terminating all-ones byte (SDM Vol. 1 19.5.2). */
struct __attribute__((packed)) tss_with_iomap {
    struct tss64 tss;
    uint8_t iomap[IOMAP_BYTES + 1];
};

static struct tss_with_iomap tss __attribute__((aligned(16)));
static uint64_t gdt[RING3_GDT_ENTRIES] __attribute__((aligned(16)));
static uint8_t kernel_stack[8192] __attribute__((aligned(16)));

void ring3_load(uint64_t g[RING3_GDT_ENTRIES], const void *t, uint32_t tss_bytes)
{
    g[0] = 0;
    g[1] = 0x00af9a000000ffffull;       /* 0x08: ring-0 code, L=1 (as start.S) */
    g[2] = 0x00cf92000000ffffull;       /* 0x10: ring-0 data (as start.S) */
    g[3] = 0x00cff2000000ffffull;       /* 0x18: ring-3 data */
    g[4] = 0x00affa000000ffffull;       /* 0x20: ring-3 code, L=1 */
    /* 0x28: an available 64-bit TSS (type 9), 16 bytes (SDM Vol. 3A 8.2.3). */
    uint64_t base = (uint64_t)t, limit = tss_bytes - 1;
    g[5] = (limit & 0xffff) | (base & 0xffffff) << 16 | 0x89ull << 40 |
           (limit >> 16 & 0xf) << 48 | (base >> 24 & 0xff) << 56;
    g[6] = base >> 32;
    struct desc_ptr gdtr = { .limit = RING3_GDT_ENTRIES * 8 - 1, .base = (uint64_t)g };
    asm volatile("lgdt %0" : : "m"(gdtr));
    asm volatile("ltr %w0" : : "r"((uint16_t)SEL_TSS));
}

void ring3_user_pages(unsigned two_mib_pages)
{
    /* The user bit on the path to the first pages (identity-mapped by
     * start.S, so the entries' physical addresses are pointers too). */
    uint64_t cr3;
    asm volatile("mov %%cr3, %0" : "=r"(cr3));
    uint64_t *pml4 = (uint64_t *)(cr3 & ~0xfffull);
    uint64_t *pdpt = (uint64_t *)(pml4[0] & ~0xfffull);
    uint64_t *pd = (uint64_t *)(pdpt[0] & ~0xfffull);
    pml4[0] |= PTE_U;
    pdpt[0] |= PTE_U;
    for (unsigned i = 0; i < two_mib_pages; i++)
        pd[i] |= PTE_U;
    asm volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
}

void ring3_init(int with_iomap)
{
    tss.tss.rsp[0] = (uint64_t)(kernel_stack + sizeof(kernel_stack));
    tss.tss.iomap_base = (uint16_t)__builtin_offsetof(struct tss_with_iomap, iomap);
    for (unsigned i = 0; i <= IOMAP_BYTES; i++)
        tss.iomap[i] = 0xff;
    ring3_load(gdt, &tss, with_iomap ? sizeof(tss) : TSS64_BYTES);
    ring3_user_pages(1);
}

void ring3_allow_port(uint16_t port)
{
    tss.iomap[port / 8] &= (uint8_t)~(1u << (port % 8));
}
