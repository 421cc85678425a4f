/*
 * channels.h - what the rest of the core sees of event channels (evtchn.c)
 * and grant tables (grant.c): setup and teardown around a partition's
 * life, and the hypercall handlers hypercall.c's table names.
 */
#ifndef HV_CHANNELS_H
#define HV_CHANNELS_H

#include <stdint.h>
#include "core.h"

/* evtchn.c */
int  evtchn_create(struct hv_partition *p);      /* at partition create: -ENOMEM */
void evtchn_teardown(struct hv_partition *p);    /* at destroy, before the id goes */
void evtchn_free(struct hv_partition *p);        /* at the last reference */
int  evtchn_permitted(struct hv_partition *p, uint32_t peer);

int64_t hc_evtchn_alloc_unbound(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_evtchn_bind_interdomain(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_evtchn_send(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_evtchn_close(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_evtchn_bind_vcpu(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_evtchn_status(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);

/* grant.c */
int  grant_create(struct hv_partition *p);
void grant_free(struct hv_partition *p);

int64_t hc_grant_table_register(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_grant_copy(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_grant_end(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);

#endif
