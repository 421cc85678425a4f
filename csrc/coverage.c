/*
 * coverage.c - let a process that ends without exit() keep its coverage.
 *
 * The coverage build (make coverage: hv._core_coverage, compiled with
 * --coverage and HV_COVERAGE) writes its counters when the process exits
 * normally.  Test helpers that fork a child and end it with _exit()
 * (hv/testing/isolate.py) call hv_coverage_flush() first, or the child's
 * counts are lost.  In every other build it does nothing.
 */
#include "hv.h"

#ifdef HV_COVERAGE
void __gcov_dump(void);

void hv_coverage_flush(void)
{
    __gcov_dump();
}
#else
void hv_coverage_flush(void)
{
}
#endif
