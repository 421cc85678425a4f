/*
 * debug-demo - a kernel to practise GDB on (hv run --gdb, docs/debugging.md).
 *
 * add_up() sums 1..n into the global `total`, one call of step() per
 * number, so there is a function to break at, a local and a global to
 * print, a line to step over and a memory word to watch; then it prints
 * the sum and ends with SUCCESS.
 */
#include "printf.h"
#include "test.h"

volatile long total;            /* watched in the tests: `watch total` */

static __attribute__((noipa)) void step(long i)
{
    total += i;                 /* each call writes the watched word once */
}

static __attribute__((noipa)) long add_up(long n)
{
    for (long i = 1; i <= n; i++)
        step(i);
    return total;
}

int main(void)
{
    long sum = add_up(4);

    printf("total=%ld\n", sum);
    GUEST_ASSERT_EQ(sum, 10);
    test_success();
}
