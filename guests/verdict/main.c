/*
 * verdict - end with the result the command line names, so the host's
 * result-line parsing (hv.testing.results) is checked against the real
 * guest library rather than against strings typed in a test:
 *
 *   success | skip | error | failure   test_success() / test_skip() / ...
 *   assert                             a failing GUEST_ASSERT
 *   assert-eq                          a failing GUEST_ASSERT_EQ
 *   noise                              lines that merely look like results,
 *                                      then SUCCESS (the last line counts)
 *   return=N                           a plain kernel: main() returns N
 */
#include <stdbool.h>
#include "kernel.h"
#include "printf.h"
#include "start_info.h"
#include "test.h"

static bool is(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

static bool starts(const char *a, const char *prefix)
{
    while (*prefix && *a == *prefix) {
        a++;
        prefix++;
    }
    return *prefix == '\0';
}

int main(void)
{
    const char *cmd = start_info_cmdline();
    volatile int two = 2;

    if (is(cmd, "success"))
        test_success();
    if (is(cmd, "skip"))
        test_skip("verdict demo: %s", "skipped on purpose");
    if (is(cmd, "error"))
        test_error("verdict demo: error %d", 42);
    if (is(cmd, "failure"))
        test_failure("verdict demo: failure %x", 0xbad);
    if (is(cmd, "assert"))
        GUEST_ASSERT(two == 3);
    if (is(cmd, "assert-eq"))
        GUEST_ASSERT_EQ(two + 1, 4);
    if (is(cmd, "noise")) {
        printf("FAILURE: (not a result: an earlier line)\n");
        printf("SKIPPED is not a result word\n");
        printf("  ERROR: indented, not a result line\n");
        test_success();
    }
    if (starts(cmd, "return=")) {
        int n = 0;
        for (const char *s = cmd + 7; *s >= '0' && *s <= '9'; s++)
            n = n * 10 + (*s - '0');
        printf("returning %d\n", n);
        return n;
    }
    test_error("unknown verdict '%s'", cmd);
}
