/*
 * test.h - XTF-style results and KVM-selftest-style assertions.
 *
 * T:375 A test kernel ends with exactly one result line, the last thing it
 * prints, and a shutdown code from result.h.  Each function below prints
 * that line and does not return.  A failed assertion reads
 *     FAILURE: hcall-selftest/main.c:42: ret == -HV_EINVAL (-14 != -22)
 */
#ifndef GUEST_TEST_H
#define GUEST_TEST_H

#include <stdint.h>

#define NORETURN_PRINTF __attribute__((noreturn, format(printf, 1, 2)))

__attribute__((noreturn)) void test_success(void);
NORETURN_PRINTF void test_skip(const char *fmt, ...);
NORETURN_PRINTF void test_error(const char *fmt, ...);
NORETURN_PRINTF void test_failure(const char *fmt, ...);

#define GUEST_ASSERT(cond)                                                      \
    do {                                                                        \
        if (!(cond))                                                            \
            test_failure("%s:%d: %s", __FILE__, __LINE__, #cond);               \
    } while (0)

/* Both sides are evaluated once and compared as 64-bit signed values. */
#define GUEST_ASSERT_EQ(a, b)                                                   \
    do {                                                                        \
        int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                           \
        if (a_ != b_)                                                           \
            test_failure("%s:%d: %s == %s (%ld != %ld)", __FILE__, __LINE__,    \
                         #a, #b, a_, b_);                                       \
    } while (0)

#endif
