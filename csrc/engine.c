/*
 * engine.c - the table of engines, and what every engine tells the guest
 * through CPUID.
 */
#include <stddef.h>
#include "engine.h"

/* Indexed by HV_ENGINE_*. */
static const struct engine_ops *const engines[] = {
    [HV_ENGINE_KVM]  = &engine_kvm_ops,
    [HV_ENGINE_TCG]  = &engine_tcg_ops,
    [HV_ENGINE_NONE] = &engine_none_ops,
};

const struct engine_ops *engine_lookup(int engine)
{
    if (engine < 0 || (size_t)engine >= sizeof(engines) / sizeof(engines[0]))
        return NULL;
    return engines[engine];
}

/* T:405 Discovery (abi.h): the hv leaves, identical on every engine, so a
 * guest cannot tell which engine runs it from CPUID's hv leaves. */
void engine_hv_cpuid(uint32_t leaf, uint32_t *eax, uint32_t *ebx,
                     uint32_t *ecx, uint32_t *edx)
{
    *eax = *ebx = *ecx = *edx = 0;
    switch (leaf) {
    case HV_CPUID_BASE:
        *eax = HV_CPUID_MAX_LEAF;
        *ebx = HV_CPUID_SIG_EBX;
        *ecx = HV_CPUID_SIG_ECX;
        *edx = HV_CPUID_SIG_EDX;
        break;
    case HV_CPUID_VERSION:
        *eax = (HV_ABI_VERSION_MAJOR << 16) | HV_ABI_VERSION_MINOR;
        break;
    case HV_CPUID_TRANSPORT:
        *eax = 1;
        *ebx = HV_PORT_HYPERCALL;
        *ecx = HV_PORT_HYPERCALL_PAGE;
        *edx = HV_FEATURE_EVENTS | HV_FEATURE_TIMER | HV_FEATURE_MULTICALL | HV_FEATURE_CLOCK |
               HV_FEATURE_CHANNELS | HV_FEATURE_SMP;
        break;
    }
}
