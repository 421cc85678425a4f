/* events.h - hv events: a page of pending bits and one interrupt vector. */
#ifndef GUEST_EVENTS_H
#define GUEST_EVENTS_H

#include "hv/abi.h"

typedef void (*event_handler_fn)(unsigned event);

/* Register the event page and `vector`; `handler` runs once per event, IF=0. */
long hv_events_init(unsigned vector, event_handler_fn handler);

/* The page itself (vCPU 0's block), for code that masks events or looks at
 * pending bits; a given vCPU's block (SMP: each has its own bits). */
struct hv_event_page *hv_event_page(void);
struct hv_vcpu_events *hv_event_block(unsigned cpu);

long hv_event_raise(unsigned event);
long hv_block(void);
long hv_set_timer(uint64_t deadline_ns);
uint64_t hv_clock_read(void);

#endif
