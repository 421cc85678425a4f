/* test.c - print the one result line and shut down with its code. */
#include <stdarg.h>
#include "hv.h"
#include "printf.h"
#include "result.h"
#include "test.h"

static __attribute__((noreturn)) void finish(unsigned code, const char *word,
                                             const char *fmt, va_list ap)
{
    printf("%s: ", word);
    vprintf(fmt, ap);
    printf("\n");
    hv_shutdown(HV_SHUTDOWN_POWEROFF, code);
}

void test_success(void)
{
    printf("SUCCESS\n");
    hv_shutdown(HV_SHUTDOWN_POWEROFF, GUEST_RESULT_SUCCESS);
}

#define RESULT_FN(name, code, word)                                             \
    void name(const char *fmt, ...)                                             \
    {                                                                           \
        va_list ap;                                                             \
        va_start(ap, fmt);                                                      \
        finish(code, word, fmt, ap);                                            \
    }

RESULT_FN(test_skip, GUEST_RESULT_SKIP, "SKIP")
RESULT_FN(test_error, GUEST_RESULT_ERROR, "ERROR")
RESULT_FN(test_failure, GUEST_RESULT_FAILURE, "FAILURE")
