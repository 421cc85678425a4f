/*
 * debug.c - what a debugger in the parent (hv/gdbstub.py) needs from the
 * core: register writes, and stops on breakpoints, single steps and
 * watchpoints as HV_EXIT_DEBUG exits.
 *
 * T:465 Debugging.  Software breakpoints are INT3 bytes the debugger writes
 * into guest memory; with HV_DEBUG_SW_BP set, an INT3 returns to the parent
 * instead of reaching the guest's IDT, whichever way the engine reports it
 * (TCG: a software exception; KVM: a debug exit, or an emulation failure on
 * a software KVM).  Stepping and hardware slots are the engine's
 * (set_debug: KVM's guest-debug registers, TCG's code and memory hooks).
 */
#include <errno.h>
#include "core.h"

int debug_stop(struct hv_exit *exit, uint32_t reason, uint64_t address)
{
    exit->kind = HV_EXIT_DEBUG;
    exit->reason = reason;
    exit->code = address;
    return 1;
}

int debug_int3_stop(struct hv_vcpu *v, uint8_t insn_len, struct hv_exit *exit)
{
    const struct engine_ops *e = v->partition->engine;
    struct hv_regs *r = e->regs(v->engine_vcpu);
    r->rip -= insn_len ? insn_len : 1;      /* back at the INT3, as a debugger expects */
    e->regs_dirty(v->engine_vcpu);
    return debug_stop(exit, HV_DEBUG_STOP_BREAKPOINT, r->rip);
}

int hv_vcpu_set_regs(struct hv_vcpu *v, const struct hv_regs *regs)
{
    const struct engine_ops *e = v->partition->engine;
    *e->regs(v->engine_vcpu) = *regs;
    e->regs_dirty(v->engine_vcpu);
    return 0;
}

int hv_vcpu_set_debug(struct hv_vcpu *v, uint32_t flags, const uint64_t *addr, const uint32_t *kind)
{
    const struct engine_ops *e = v->partition->engine;
    int any_slot = 0;
    for (int i = 0; i < HV_DEBUG_SLOTS; i++)
        any_slot |= kind[i] != 0;
    if ((flags & HV_DEBUG_STEP) || any_slot || flags & HV_DEBUG_SW_BP) {
        if (!e->set_debug)
            return -ENOTSUP;
    }
    if (e->set_debug) {
        int err = e->set_debug(v->engine_vcpu, flags, addr, kind);
        if (err)
            return err;
    }
    v->h.debug_flags = flags;
    return 0;
}
