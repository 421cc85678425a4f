/* hv.h - are we under hv?  The hypercall page, and how to stop. */
#ifndef GUEST_HV_H
#define GUEST_HV_H

#include <stdbool.h>
#include <stdint.h>
#include "hv/abi.h"

extern uint8_t hypercall_page[HV_PAGE_SIZE];

void hv_init(void);
bool hv_detected(void);         /* CPUID carries hv's signature */
bool hv_hypercalls_ready(void); /* ...and the hypercall page holds stubs */

/*
 * Stop the machine: under hv through HV_HC_SHUTDOWN(reason, code); else
 * through QEMU's isa-debug-exit (exit status (code << 1) | 1, no reason).
 */
__attribute__((noreturn)) void hv_shutdown(unsigned reason, unsigned code);

#endif
