/*
 * compute - the guest half of `tools/bench compute`: how fast each engine
 * runs plain guest code, in ring 0 and in ring 3.
 *
 * Command line: "n0=N n3=M" (defaults 20000 and 0; 0 skips that ring).
 * It runs hash_loop (loop.S: five ALU instructions per iteration) N times in
 * ring 0, then M times in ring 3, and prints one line per ring:
 *
 *     compute: ring=R n=N ns=T hash=0x...
 *
 * T is the partition clock (HV_HC_CLOCK_READ, ring 0) just before and just
 * after; for ring 3 that includes the way in (IRETQ) and out (`int $0x80`),
 * a few exits' worth, which tools/bench keeps small against T by choosing M.
 *
 * Ring 3 needs, beyond what the guest library sets up (guests/lib/start.S,
 * traps.c), and all done here so lib/ stays as it is:
 *   - a GDT of our own: the library's ring-0 code (0x08) and data (0x10)
 *     at the same selectors, plus user data (0x18) and user code (0x20),
 *     both DPL 3, and a 64-bit TSS (0x28) whose RSP0 is the stack the CPU
 *     switches to when `int $0x80` comes back to ring 0;
 *   - the user bit in the page-table entries that map the kernel (the first
 *     2 MiB page; the library maps 4 GiB with P|W only), found through CR3;
 *   - an interrupt gate for vector 0x80 with DPL 3, so ring 3 may use it.
 */
#include <stdint.h>
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "result.h"
#include "start_info.h"
#include "events.h"
#include "traps.h"
#include "x86.h"

#define USER_EXIT_VECTOR 3       /* int3 (loop.S) */
#define SEL_USER_DATA    0x18
#define SEL_USER_CODE    0x20
#define SEL_TSS          0x28
#define PTE_U            0x004
#define SEED             0xcbf29ce484222325ull     /* FNV-1's offset basis */

uint64_t hash_loop(uint64_t n, uint64_t h);
uint64_t user_call(uint64_t n, uint64_t h, void *user_stack_top);
void user_exit(void);

/* The 64-bit TSS (SDM Vol. 3A 8.7): only RSP0 matters here. */
struct __attribute__((packed)) tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;        /* past the limit: no I/O bitmap */
};

static struct tss64 tss __attribute__((aligned(16)));
static uint64_t gdt[7] __attribute__((aligned(16))) = {
    0,
    0x00af9a000000ffffull,      /* 0x08: ring-0 code, L=1 (as the library's) */
    0x00cf92000000ffffull,      /* 0x10: ring-0 data (as the library's) */
    0x00cff2000000ffffull,      /* 0x18: ring-3 data (DPL 3) */
    0x00affa000000ffffull,      /* 0x20: ring-3 code, L=1 (DPL 3) */
    0, 0,                       /* 0x28: the TSS, 16 bytes; filled at run time */
};
static uint8_t kernel_stack[4096] __attribute__((aligned(16)));   /* RSP0 */
static uint8_t user_stack[4096] __attribute__((aligned(16)));

/* "key=123" anywhere in the command line (space separated); else fallback. */
static uint64_t cmdline_u64(const char *s, const char *key, uint64_t fallback)
{
    while (*s) {
        while (*s == ' ')
            s++;
        const char *k = key, *p = s;
        while (*k && *p == *k)
            k++, p++;
        if (!*k && *p == '=') {
            uint64_t n = 0;
            for (p++; *p >= '0' && *p <= '9'; p++)
                n = n * 10 + (uint64_t)(*p - '0');
            return n;
        }
        while (*s && *s != ' ')
            s++;
    }
    return fallback;
}

static void ring3_setup(void)
{
    /* The TSS descriptor: limit 103, type 9 (available 64-bit TSS), P. */
    uint64_t base = (uint64_t)&tss, limit = sizeof(tss) - 1;
    tss.rsp[0] = (uint64_t)(kernel_stack + sizeof(kernel_stack));
    tss.iomap_base = sizeof(tss);
    gdt[5] = (limit & 0xffff) | (base & 0xffffff) << 16 | 0x89ull << 40 |
             (limit >> 16 & 0xf) << 48 | (base >> 24 & 0xff) << 56;
    gdt[6] = base >> 32;
    struct desc_ptr gdtr = { .limit = sizeof(gdt) - 1, .base = (uint64_t)gdt };
    asm volatile("lgdt %0" : : "m"(gdtr));
    asm volatile("ltr %w0" : : "r"((uint16_t)SEL_TSS));

    /* User bit on the path to the first 2 MiB page (identity-mapped, so the
     * physical addresses in the entries are pointers too). */
    uint64_t cr3;
    asm volatile("mov %%cr3, %0" : "=r"(cr3));
    uint64_t *pml4 = (uint64_t *)(cr3 & ~0xfffull);
    uint64_t *pdpt = (uint64_t *)(pml4[0] & ~0xfffull);
    uint64_t *pd = (uint64_t *)(pdpt[0] & ~0xfffull);
    pml4[0] |= PTE_U;
    pdpt[0] |= PTE_U;
    pd[0] |= PTE_U;
    asm volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");     /* flush the TLB */

    /* Vector 0x80: the library's gate (DPL 0), then DPL 3 (type byte 0xee). */
    idt_set_gate(USER_EXIT_VECTOR, user_exit);
    struct desc_ptr idtr;
    asm volatile("sidt %0" : "=m"(idtr));
    ((volatile uint8_t *)idtr.base)[USER_EXIT_VECTOR * 16 + 5] = 0xee;
}

static void report(int ring, uint64_t n, uint64_t ns, uint64_t h)
{
    printf("compute: ring=%d n=%lu ns=%lu hash=0x%lx\n", ring, (unsigned long)n,
           (unsigned long)ns, (unsigned long)h);
}

int main(void)
{
    if (!hv_hypercalls_ready()) {
        printf("SKIP: not running under hv\n");
        return GUEST_RESULT_SKIP;
    }
    const char *cmdline = start_info_cmdline();
    uint64_t n0 = cmdline_u64(cmdline, "n0", 20000), n3 = cmdline_u64(cmdline, "n3", 0);

    if (n0) {
        uint64_t t0 = hv_clock_read();
        uint64_t h = hash_loop(n0, SEED);
        uint64_t t1 = hv_clock_read();
        report(0, n0, t1 - t0, h);
    }
    if (n3) {
        ring3_setup();
        uint64_t t0 = hv_clock_read();
        uint64_t h = user_call(n3, SEED, user_stack + sizeof(user_stack));
        uint64_t t1 = hv_clock_read();
        report(3, n3, t1 - t0, h);
    }
    printf("SUCCESS\n");
    return GUEST_RESULT_SUCCESS;
}
