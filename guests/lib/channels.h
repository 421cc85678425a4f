/* channels.h - event channels and grant copy (hv/abi.h, docs/channels.md). */
#ifndef GUEST_CHANNELS_H
#define GUEST_CHANNELS_H

#include <stdint.h>
#include "hypercall.h"

static inline long hv_partition_id(void) { return hv_hypercall0(HV_HC_PARTITION_ID); }

static inline long evtchn_alloc_unbound(uint32_t peer)
{
    return hv_hypercall1(HV_HC_EVTCHN_ALLOC_UNBOUND, peer);
}

static inline long evtchn_bind_interdomain(uint32_t peer, uint32_t remote_port)
{
    return hv_hypercall2(HV_HC_EVTCHN_BIND_INTERDOMAIN, peer, remote_port);
}

static inline long evtchn_send(uint64_t port) { return hv_hypercall1(HV_HC_EVTCHN_SEND, port); }
static inline long evtchn_close(uint64_t port) { return hv_hypercall1(HV_HC_EVTCHN_CLOSE, port); }

static inline long evtchn_status(uint64_t port, struct hv_evtchn_status *out)
{
    return hv_hypercall2(HV_HC_EVTCHN_STATUS, port, (uintptr_t)out);
}

static inline long grant_table_register(struct hv_grant_entry *table, uint64_t count)
{
    return hv_hypercall2(HV_HC_GRANT_TABLE_REGISTER, (uintptr_t)table, count);
}

static inline long grant_copy(struct hv_grant_copy_seg *segs, uint64_t count)
{
    return hv_hypercall2(HV_HC_GRANT_COPY, (uintptr_t)segs, count);
}

static inline long grant_end(uint64_t ref) { return hv_hypercall1(HV_HC_GRANT_END, ref); }

/* Write entry `ref`: frame of `page` to `peer`; flags last, so a peer never
 * sees a permit with an old frame. */
static inline void grant_entry_set(struct hv_grant_entry *e, uint32_t peer, const void *page,
                                   int readonly)
{
    e->domid = (uint16_t)peer;
    e->frame = (uint32_t)((uintptr_t)page >> 12);
    __atomic_store_n(&e->flags, (uint16_t)(HV_GTF_PERMIT_ACCESS | (readonly ? HV_GTF_READONLY : 0)),
                     __ATOMIC_RELEASE);
}

#endif
