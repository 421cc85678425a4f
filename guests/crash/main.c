/*
 * crash - misbehave on purpose, as the command line says.  For the parent's
 * crash handling and lifecycle tests (tests/test_guests.py, test_cli.py).
 *
 *   triple-fault   load an empty IDT, then int3: #GP -> #DF -> triple fault
 *   halt           cli; hlt: nothing can ever wake the vCPU
 *   exception      ud2: the guest library reports the exception and shuts
 *                  down with HV_SHUTDOWN_CRASH, code GUEST_RESULT_FAILURE
 *   page-fault     read an address beyond the 4 GiB identity map: the same
 *                  report, vector 14
 *   bad-shutdown   HV_HC_SHUTDOWN with an unknown reason (hv must refuse it
 *                  with -HV_EINVAL), then a clean SUCCESS
 *   spin           loop forever without a single exit (pause/destroy tests)
 *   spin=MS        loop until the partition clock reaches MS milliseconds,
 *                  calling clock_read between rounds, then SUCCESS
 *
 * Anything else: ERROR naming the word.  Only the first word counts.
 */
#include <stdbool.h>
#include <stddef.h>
#include "events.h"
#include "hv.h"
#include "hypercall.h"
#include "kernel.h"
#include "printf.h"
#include "start_info.h"
#include "test.h"
#include "x86.h"

#define UNMAPPED_ADDR 0x0000000200000000ull     /* past start.S's 4 GiB map */

/* Does the first word of `cmd` equal `word`?  Sets *rest past it. */
static bool word_is(const char *cmd, const char *word, const char **rest)
{
    while (*word && *cmd == *word) {
        cmd++;
        word++;
    }
    if (*word)
        return false;
    if (*cmd != '\0' && *cmd != ' ' && *cmd != '=')
        return false;
    *rest = cmd;
    return true;
}

static uint64_t parse_uint(const char *s, bool *ok)
{
    uint64_t v = 0;

    *ok = *s >= '0' && *s <= '9';
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (uint64_t)(*s - '0');
    if (*s != '\0' && *s != ' ')
        *ok = false;
    return v;
}

static __attribute__((noreturn)) void triple_fault(void)
{
    static const struct desc_ptr null_idt = { .limit = 0, .base = 0 };

    printf("crash: triple fault\n");
    lidt(&null_idt);
    asm volatile("int3");
    for (;;)
        ;
}

static __attribute__((noreturn)) void halt_forever(void)
{
    printf("crash: cli; hlt\n");
    for (;;) {
        cli();
        hlt();
    }
}

static __attribute__((noreturn)) void spin_ms(uint64_t ms)
{
    if (!hv_hypercalls_ready())
        test_skip("spin=MS needs hv's clock");
    uint64_t deadline = ms * 1000000ull;

    while (hv_clock_read() < deadline)
        for (volatile int i = 0; i < 100; i++)
            ;
    test_success();
}

int main(void)
{
    const char *cmd = start_info_cmdline();
    const char *rest;

    while (*cmd == ' ')
        cmd++;
    if (word_is(cmd, "triple-fault", &rest))
        triple_fault();
    if (word_is(cmd, "halt", &rest))
        halt_forever();
    if (word_is(cmd, "exception", &rest)) {
        printf("crash: ud2\n");
        asm volatile("ud2");
        test_failure("ud2 did not trap");
    }
    if (word_is(cmd, "page-fault", &rest)) {
        printf("crash: read 0x%lx\n", (unsigned long)UNMAPPED_ADDR);
        (void)*(volatile uint64_t *)UNMAPPED_ADDR;
        test_failure("reading an unmapped address did not fault");
    }
    if (word_is(cmd, "bad-shutdown", &rest)) {
        if (!hv_hypercalls_ready())
            test_skip("not running under hv");
        long ret = hv_hypercall2(HV_HC_SHUTDOWN, 0x7fff, 0);
        GUEST_ASSERT_EQ(ret, -HV_EINVAL);
        ret = hv_hypercall2(HV_HC_SHUTDOWN, HV_SHUTDOWN_POWEROFF, 256);
        GUEST_ASSERT_EQ(ret, -HV_EINVAL);
        test_success();
    }
    if (word_is(cmd, "spin", &rest)) {
        if (*rest == '=') {
            bool ok;
            uint64_t ms = parse_uint(rest + 1, &ok);
            if (!ok)
                test_error("spin=MS: bad number '%s'", rest + 1);
            spin_ms(ms);
        }
        printf("crash: spinning\n");
        for (;;)
            asm volatile("pause");
    }
    test_error("unknown crash mode '%s' (triple-fault, halt, exception, page-fault, "
               "bad-shutdown, spin, spin=MS)", cmd);
}
