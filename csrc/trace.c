/*
 * trace.c - a ring of trace records per partition.
 *
 * T:560 When tracing is on, the core appends one fixed-size record for
 * every hypercall, every hand-over to the parent and its completion, every
 * injected vector and every engine exit it handles itself.  The vCPU thread
 * writes, the parent reads (hv/trace.py decodes with the ABI's names); a
 * full ring drops the newest records and the gap shows in `seq`.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"

int hv_partition_trace_enable(struct hv_partition *p, uint32_t capacity)
{
    if (capacity == 0 || p->trace.ring)
        return -EINVAL;
    p->trace.ring = calloc(capacity, sizeof(*p->trace.ring));
    if (!p->trace.ring)
        return -ENOMEM;
    p->trace.capacity = capacity;
    return 0;
}

void trace_free(struct hv_partition *p)
{
    free(p->trace.ring);
    p->trace.ring = NULL;
}

void trace_record(struct hv_vcpu *v, uint32_t kind, uint64_t nr,
                  const uint64_t args[5], int64_t result)
{
    struct trace_ring *t = &v->partition->trace;
    uint64_t seq = t->seq++;
    uint64_t head = __atomic_load_n(&t->head, __ATOMIC_RELAXED);
    if (head - __atomic_load_n(&t->tail, __ATOMIC_ACQUIRE) >= t->capacity)
        return;                         /* full: this record is dropped */
    struct hv_trace_record *r = &t->ring[head % t->capacity];
    r->seq = seq;
    r->time_ns = partition_clock_ns(v->partition);
    r->vcpu = v->id;
    r->kind = kind;
    r->nr = nr;
    if (args)
        memcpy(r->args, args, sizeof(r->args));
    else
        memset(r->args, 0, sizeof(r->args));
    r->result = result;
    __atomic_store_n(&t->head, head + 1, __ATOMIC_RELEASE);
    /* Half full: have the run loop return so the parent drains it, long
     * before a record could be lost. */
    if (head + 1 - t->tail >= t->capacity / 2)
        v->h.trace_drain = 1;
}

/* One executed instruction: its address and bytes, read as the CPU fetched
 * them (through the guest's page tables), and whether long mode was on
 * (args[2], so the decoder knows 32- from 64-bit code). */
void trace_insn(struct hv_vcpu *v, uint64_t rip, uint32_t size)
{
    uint64_t words[5] = { 0 };
    struct hv_sregs s;
    if (size > 16)
        size = 16;
    if (copy_guest_system(v, rip, words, size, 0))
        size = 0;
    if (v->partition->engine->get_sregs(v->engine_vcpu, &s) == 0)
        words[2] = !!(s.efer & (1ull << 10));           /* EFER.LMA */
    trace_record(v, HV_TRACE_INSN, rip, words, size);
}

uint32_t hv_partition_trace_read(struct hv_partition *p, struct hv_trace_record *out, uint32_t max)
{
    struct trace_ring *t = &p->trace;
    if (!t->ring)
        return 0;
    uint64_t tail = t->tail, head = __atomic_load_n(&t->head, __ATOMIC_ACQUIRE);
    uint32_t n = 0;
    while (tail != head && n < max)
        out[n++] = t->ring[tail++ % t->capacity];
    __atomic_store_n(&t->tail, tail, __ATOMIC_RELEASE);
    return n;
}
