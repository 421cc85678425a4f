/*
 * bench-hypercall - the guest half of `tools/bench hypercall`.
 *
 * Runs N null hypercalls (HV_HC_VERSION) back to back and reports how long
 * they took on the partition clock:
 *
 *     bench-hypercall: n=N ns=T
 *
 * N comes from the kernel command line ("n=N", default 1000).  The loop is
 * exactly the instruction sequence of tools/bench_raw/rawkvm.c, the raw KVM
 * baseline:
 *
 *     1:  call *%rbx          rbx = stub HV_HC_VERSION of the hypercall page
 *         dec  %ecx           (mov $0,%eax; out %al,$0xea; ret)
 *         jnz  1b
 *
 * T0 and T1 are HV_HC_CLOCK_READ hypercalls just before and after the loop:
 * hv reads CLOCK_MONOTONIC while handling those two exits, as rawkvm reads it
 * while handling its two marker exits around the same loop.  Whether hv
 * finishes HV_HC_VERSION in C or sends it to Python is the host's choice
 * (Partition.serve); the guest is the same.
 */
#include <stdint.h>
#include "events.h"
#include "hv.h"
#include "hypercall.h"
#include "kernel.h"
#include "printf.h"
#include "result.h"
#include "start_info.h"

#define ABI_VERSION ((HV_ABI_VERSION_MAJOR << 16) | HV_ABI_VERSION_MINOR)

/* "n=123" anywhere in the command line (space separated); else fallback. */
static unsigned long cmdline_n(const char *s, unsigned long fallback)
{
    while (*s) {
        while (*s == ' ')
            s++;
        if (s[0] == 'n' && s[1] == '=') {
            unsigned long n = 0;
            for (s += 2; *s >= '0' && *s <= '9'; s++)
                n = n * 10 + (unsigned long)(*s - '0');
            return n;
        }
        while (*s && *s != ' ')
            s++;
    }
    return fallback;
}

/* n >= 1 iterations; returns RAX after the last call. */
static long null_loop(void *stub, unsigned long n)
{
    long rax;

    asm volatile("1:  call *%%rbx\n\t"
                 "    dec  %%ecx\n\t"
                 "    jnz  1b"
                 : "=a"(rax), "+c"(n)
                 : "b"(stub)
                 : "memory", "cc");
    return rax;
}

int main(void)
{
    if (!hv_hypercalls_ready()) {
        printf("SKIP: not running under hv\n");
        return GUEST_RESULT_SKIP;
    }
    unsigned long n = cmdline_n(start_info_cmdline(), 1000);
    if (n > 0xffffffffu) {
        printf("ERROR: n=%lu does not fit the 32-bit loop counter\n", n);
        return GUEST_RESULT_ERROR;
    }
    long last = ABI_VERSION;
    uint64_t t0 = hv_clock_read();
    if (n)
        last = null_loop(hv_stub(HV_HC_VERSION), n);
    uint64_t t1 = hv_clock_read();
    printf("bench-hypercall: n=%lu ns=%lu\n", n, (unsigned long)(t1 - t0));
    if (last != ABI_VERSION) {
        printf("ERROR: HV_HC_VERSION returned %ld, expected %d\n", last, ABI_VERSION);
        return GUEST_RESULT_ERROR;
    }
    return GUEST_RESULT_SUCCESS;
}
