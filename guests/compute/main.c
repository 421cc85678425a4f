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
 * after; for ring 3 that includes the way in (IRETQ) and out (`int3`),
 * a few exits' worth, which tools/bench keeps small against T by choosing M.
 *
 * Ring 3 takes the library's GDT, TSS and user bit on the first 2 MiB
 * (guests/lib/ring3.h), plus an interrupt gate of our own with DPL 3 for
 * USER_EXIT_VECTOR, so ring 3 may come back through it.
 */
#include <stdint.h>
#include "hv.h"
#include "kernel.h"
#include "printf.h"
#include "result.h"
#include "ring3.h"
#include "start_info.h"
#include "events.h"
#include "traps.h"
#include "x86.h"

#define USER_EXIT_VECTOR 3       /* int3 (loop.S) */
#define SEED             0xcbf29ce484222325ull     /* FNV-1's offset basis */

uint64_t hash_loop(uint64_t n, uint64_t h);
uint64_t user_call(uint64_t n, uint64_t h, void *user_stack_top);
void user_exit(void);

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
    ring3_init(0);          /* GDT, TSS and the user bit (guests/lib/ring3.c) */

    /* USER_EXIT_VECTOR: the library's gate (DPL 0), then DPL 3 (type byte 0xee). */
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
