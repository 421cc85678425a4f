/*
 * hypercall.h - the one place that knows how a guest calls hv.
 *
 * T:345 A hypercall is a CALL into the hypercall page: the stub for number
 * N sits at page + HV_HYPERCALL_STUB_SIZE * N and loads RAX = N itself, then
 * traps to hv.  Arguments go in RDI, RSI, RDX, R10, R8 (the Linux syscall
 * registers, with R10 for RCX); the result comes back in RAX, >= 0 on
 * success or a negative -HV_E* error.  hv preserves every other register
 * (hv/abi.h), so the arguments are plain inputs; "memory" because hv reads
 * and writes guest memory, "cc" because the flags are not promised.
 */
#ifndef GUEST_HYPERCALL_H
#define GUEST_HYPERCALL_H

#include <stdint.h>
#include "hv.h"

static inline void *hv_stub(unsigned long nr)
{
    return hypercall_page + HV_HYPERCALL_STUB_SIZE * nr;
}

#define HV_CALL(...) \
    asm volatile("call *%[stub]" : "=a"(ret) : [stub] "r"(hv_stub(nr)), ##__VA_ARGS__ \
                 : "memory", "cc")

static inline long hv_hypercall0(unsigned long nr)
{
    long ret;
    HV_CALL();
    return ret;
}

static inline long hv_hypercall1(unsigned long nr, uint64_t a0)
{
    long ret;
    HV_CALL("D"(a0));
    return ret;
}

static inline long hv_hypercall2(unsigned long nr, uint64_t a0, uint64_t a1)
{
    long ret;
    HV_CALL("D"(a0), "S"(a1));
    return ret;
}

static inline long hv_hypercall3(unsigned long nr, uint64_t a0, uint64_t a1, uint64_t a2)
{
    long ret;
    HV_CALL("D"(a0), "S"(a1), "d"(a2));
    return ret;
}

static inline long hv_hypercall4(unsigned long nr, uint64_t a0, uint64_t a1, uint64_t a2,
                                 uint64_t a3)
{
    register uint64_t r10 asm("r10") = a3;
    long ret;
    HV_CALL("D"(a0), "S"(a1), "d"(a2), "r"(r10));
    return ret;
}

static inline long hv_hypercall5(unsigned long nr, uint64_t a0, uint64_t a1, uint64_t a2,
                                 uint64_t a3, uint64_t a4)
{
    register uint64_t r10 asm("r10") = a3;
    register uint64_t r8 asm("r8") = a4;
    long ret;
    HV_CALL("D"(a0), "S"(a1), "d"(a2), "r"(r10), "r"(r8));
    return ret;
}

#undef HV_CALL

/*
 * The trap the stubs hide: an 8-bit OUT to HV_PORT_HYPERCALL with the number
 * in RAX.  Only the self-test uses it, to reach numbers no stub has (>= 64).
 */
static inline long hv_hypercall_raw5(uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2,
                                     uint64_t a3, uint64_t a4)
{
    register uint64_t r10 asm("r10") = a3;
    register uint64_t r8 asm("r8") = a4;
    long ret = (long)nr;

    asm volatile("outb %%al, %[port]"
                 : "+a"(ret)
                 : [port] "N"(HV_PORT_HYPERCALL), "D"(a0), "S"(a1), "d"(a2), "r"(r10), "r"(r8)
                 : "memory", "cc");
    return ret;
}

#endif
