/*
 * event.c - event bits and their injection.
 *
 * T:530 Events are bits in a page the guest registered.  Whoever raises one
 * (a timer here, a device backend in the parent, later another partition)
 * sets the pending bit atomically and, if the guest has no upcall
 * outstanding, asks for the vector to be injected.  On TCG the guest's own
 * atomics are not atomic against host threads, so there the raiser queues
 * the bit and the vCPU's thread sets it between runs (T:533).  Injection itself happens
 * in exactly one place: event_before_entry(), which the run loop calls before
 * every guest entry.  Other threads never touch the engine; they set flags
 * and kick the vCPU's thread (kick.c).  The timer is in timer.c, sleeping
 * in wait.c.
 */
#include <pthread.h>
#include "core.h"

_Static_assert(sizeof(struct hv_vcpu_events) == HV_VCPU_EVENTS_SIZE, "abi.h: one block per vCPU");
_Static_assert(HV_VCPUS_MAX * HV_VCPU_EVENTS_SIZE <= HV_PAGE_SIZE, "abi.h: the blocks fit the page");
_Static_assert(sizeof(struct hv_event_page) <= sizeof(struct hv_vcpu_events), "1.2's page is block 0");

/* T:531 vCPU `id`'s block of the event page (abi.h, "Events"): its own
 * pending, masked and upcall_pending.  NULL: no page registered. */
static struct hv_vcpu_events *event_block(const struct hv_partition *p, uint32_t id)
{
    uint64_t gpa = __atomic_load_n(&p->g.event_page_gpa, __ATOMIC_ACQUIRE);
    return gpa ? (struct hv_vcpu_events *)(p->ram + gpa + (uint64_t)id * HV_VCPU_EVENTS_SIZE)
               : NULL;
}

/*
 * T:532 Deliver the pending bits `bits` of word `word` into vCPU v's block:
 * set them, and if one is unmasked and no upcall is outstanding, owe an
 * upcall (only the 0 -> 1 edge of upcall_pending injects: one at a time).
 * Returns 1 if an upcall is now owed.
 */
static int deliver(struct hv_vcpu_events *page, struct hv_vcpu *v, unsigned word, uint64_t bits)
{
    struct hv_partition *p = v->partition;
    __atomic_fetch_or(&page->pending[word], bits, __ATOMIC_SEQ_CST);
    uint64_t unmasked = bits & ~__atomic_load_n(&page->masked[word], __ATOMIC_SEQ_CST);
    int owed = unmasked && __atomic_exchange_n(&page->upcall_pending, 1, __ATOMIC_SEQ_CST) == 0;
    /* After the last write to the page (pending, upcall_pending): a
     * migration round that takes the mark then reads the page sees both. */
    ram_written(p, (uint64_t)((uint8_t *)page - p->ram), sizeof(*page));
    if (owed)
        __atomic_store_n(&v->g.inject_pending, 1, __ATOMIC_SEQ_CST);
    return owed;
}

int event_raise_vcpu(struct hv_partition *p, uint32_t id, uint32_t event)
{
    if (event >= HV_EVENTS_MAX || id >= p->nvcpus)
        return -HV_EINVAL;
    struct hv_vcpu_events *page = event_block(p, id);
    if (!page)
        return -HV_EPERM;
    uint64_t bit = 1ull << (event % 64);
    unsigned word = event / 64;
    /* A thread running one of p's vCPUs (a hypercall, its timer) may write
     * the page: TCG runs a partition's vCPUs one at a time, so none of p's
     * guest code runs now. */
    struct hv_vcpu *self = vcpu_current();
    int guest_stopped = self && self->partition == p;
    /* The vCPU may be going away on its own thread: hold it while we kick. */
    pthread_mutex_lock(&p->vcpu_lock);
    struct hv_vcpu *v = p->vcpus[id];
    if (!v) {
        __atomic_fetch_or(&page->pending[word], bit, __ATOMIC_SEQ_CST);  /* no guest runs it */
        ram_written(p, (uint64_t)((uint8_t *)page - p->ram), sizeof(*page));
    } else if (p->engine->guest_rmw_not_host_atomic && !guest_stopped) {
        /* The guest may be inside a `lock and` on this very word: a host
         * store now could be overwritten by its store (the guest's events
         * loop loses an event).  Its own thread delivers it, between runs. */
        __atomic_fetch_or(&v->h.raised[word], bit, __ATOMIC_SEQ_CST);
        /* One kick per batch: while a raise is queued, its kick is on the
         * way.  A kick per raise let a peer sending in a loop stop the
         * vCPU at every block, faster than it could reach its own loop. */
        if (__atomic_exchange_n(&v->h.raised_any, 1, __ATOMIC_SEQ_CST) == 0)
            vcpu_kick(v);
    } else if (deliver(page, v, word, bit)) {
        vcpu_kick(v);
    } else {
        vcpu_wake(v);   /* block waits for any pending bit, masked ones too */
    }
    pthread_mutex_unlock(&p->vcpu_lock);
    return 0;
}

/* T:533 The raised bits queued for v go into its block, on v's own thread
 * with the guest stopped (or from the parent while v is paused); an upcall
 * they owe is left in v->g.inject_pending, as deliver() does. */
void event_deliver_raised(struct hv_vcpu *v)
{
    if (!__atomic_exchange_n(&v->h.raised_any, 0, __ATOMIC_SEQ_CST))
        return;
    struct hv_vcpu_events *page = event_block(v->partition, v->id);
    for (unsigned w = 0; w < HV_EVENT_WORDS; w++) {
        uint64_t bits = __atomic_exchange_n(&v->h.raised[w], 0, __ATOMIC_SEQ_CST);
        if (bits && page)
            deliver(page, v, w, bits);
    }
}

int event_raise(struct hv_partition *p, uint32_t event)
{
    if (event >= HV_EVENTS_MAX)
        return -HV_EINVAL;
    uint32_t id = __atomic_load_n(&p->g.event_vcpu[event], __ATOMIC_RELAXED);
    return event_raise_vcpu(p, id, event);
}

int event_upcall_outstanding(const struct hv_vcpu *v)
{
    const struct hv_vcpu_events *page = event_block(v->partition, v->id);
    return page && __atomic_load_n(&page->upcall_pending, __ATOMIC_SEQ_CST);
}

/* Is an event pending for v, delivered or still queued?  Any thread. */
int event_any_pending(const struct hv_vcpu *v)
{
    const struct hv_vcpu_events *page = event_block(v->partition, v->id);
    if (!page)
        return 0;
    for (int i = 0; i < HV_EVENT_WORDS; i++)
        if (__atomic_load_n(&page->pending[i], __ATOMIC_SEQ_CST) ||
            __atomic_load_n(&v->h.raised[i], __ATOMIC_SEQ_CST))
            return 1;
    return 0;
}

void event_before_entry(struct hv_vcpu *v)
{
    const struct engine_ops *e = v->partition->engine;
    timer_check(v);
    event_deliver_raised(v);
    if (lapic_before_entry(v))      /* the local APIC's interrupts (lapic.c) */
        return;
    if (!__atomic_load_n(&v->g.inject_pending, __ATOMIC_SEQ_CST))
        return;
    if (e->interruptible(v->engine_vcpu)) {
        __atomic_store_n(&v->g.inject_pending, 0, __ATOMIC_SEQ_CST);
        e->request_window(v->engine_vcpu, 0);
        uint8_t vector = (uint8_t)v->partition->g.event_vector;
        TRACE(v, HV_TRACE_INJECT, vector, NULL, 0);
        if (e->inject)
            e->inject(v->engine_vcpu, vector);
        else if (idt_deliver(v, vector, IDT_EXTERNAL, 0, 0))
            v->g.inject_pending = 1;          /* IDT unusable now; retried next entry */
    } else {
        e->request_window(v->engine_vcpu, 1);   /* exit when IF becomes 1 */
    }
}
