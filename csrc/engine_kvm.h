/* engine_kvm.h - the KVM engine's vCPU, shared by engine_kvm.c (running)
 * and engine_kvm_snapshot.c (the whole CPU state, for snapshots). */
#ifndef HV_ENGINE_KVM_H
#define HV_ENGINE_KVM_H

#include <linux/kvm.h>
#include "engine.h"

struct kvm_vcpu_state {
    int fd;
    struct kvm_run *run;
    uint8_t *in_data;           /* where an IN or MMIO read wants its value */
    uint32_t in_size;
    uint64_t debug_addr[HV_DEBUG_SLOTS];    /* kvm_set_debug's slots, to name a hit */
    uint32_t debug_kind[HV_DEBUG_SLOTS];
};

/* engine_kvm_snapshot.c */
int kvm_get_state(void *vcpu, struct hv_cpu_state *s);
int kvm_set_state(void *vcpu, const struct hv_cpu_state *s);

#endif
