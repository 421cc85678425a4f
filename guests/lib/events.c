/* events.c - hv events: a page of pending bits and one interrupt vector. */
#include "events.h"
#include "hypercall.h"
#include "smp.h"
#include "traps.h"

/* Shared with hv; page aligned because hv demands it (HV_HC_EVENT_REGISTER).
 * One block per vCPU (abi.h, "Events"); block 0 is 1.2's whole page. */
static struct hv_vcpu_events event_blocks[HV_VCPUS_MAX] __attribute__((aligned(HV_PAGE_SIZE)));
static event_handler_fn user_handler;

void event_entry(void);         /* entry.S */
void events_dispatch(void);     /* called from event_entry only */

/*
 * T:360 Registration: the vector's IDT gate first (an event may be injected
 * as soon as hv knows the vector and IF=1), then tell hv the page's
 * guest-physical address, which under the identity map is its address.
 */
long hv_events_init(unsigned vector, event_handler_fn handler)
{
    user_handler = handler;
    idt_set_gate(vector, event_entry);
    return hv_hypercall2(HV_HC_EVENT_REGISTER, (uintptr_t)event_blocks, vector);
}

struct hv_event_page *hv_event_page(void)
{
    return (struct hv_event_page *)&event_blocks[0];
}

struct hv_vcpu_events *hv_event_block(unsigned cpu)
{
    return &event_blocks[cpu];
}

/*
 * T:370 The upcall.  Clear upcall_pending first, then take each word of
 * pending bits with an atomic exchange: an event hv sets after the clear
 * either lands in a word not yet taken (handled now) or raises a new upcall
 * (handled next time), so none is lost (hv/abi.h, "Events").
 */
void events_dispatch(void)
{
    struct hv_vcpu_events *page = &event_blocks[smp_cpu_id()];   /* the CPU it came to */
    __atomic_store_n(&page->upcall_pending, 0, __ATOMIC_SEQ_CST);
    for (unsigned w = 0; w < HV_EVENT_WORDS; w++) {
        if (__atomic_load_n(&page->pending[w], __ATOMIC_RELAXED) == 0)
            continue;   /* skip the locked exchange for empty words */
        uint64_t bits = __atomic_exchange_n(&page->pending[w], 0, __ATOMIC_SEQ_CST);

        while (bits != 0) {
            unsigned bit = __builtin_ctzll(bits);

            bits &= bits - 1;
            user_handler(w * 64 + bit);
        }
    }
}

long hv_event_raise(unsigned event)
{
    return hv_hypercall1(HV_HC_EVENT_RAISE, event);
}

/* Sleep until an event is pending; call with IF=0 to close the check/sleep race. */
long hv_block(void)
{
    return hv_hypercall0(HV_HC_BLOCK);
}

long hv_set_timer(uint64_t deadline_ns)
{
    return hv_hypercall1(HV_HC_SET_TIMER, deadline_ns);
}

uint64_t hv_clock_read(void)
{
    return (uint64_t)hv_hypercall0(HV_HC_CLOCK_READ);
}
