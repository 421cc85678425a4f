/*
 * engine_tcg_debug.c - single steps, hardware breakpoints and watchpoints
 * on TCG, for the debugger in the parent (csrc/debug.c, hv/gdbstub.py).
 *
 * Unicorn has no debug registers of its own to offer: one code hook over
 * every address stops before an instruction (a stop from a code hook is
 * exact), which is a step once the instruction the guest resumes at has
 * run, or a breakpoint when the address is a slot's; memory hooks on a
 * slot's range mark a watchpoint hit, and the code hook stops before the
 * next instruction, so the access has happened, as on x86 (a trap).
 * INT3 breakpoints need no hook (the core sees the #BP), but the debugger
 * writes them into guest RAM: the translated code is flushed each time.
 */
#include <errno.h>
#include <stdlib.h>
#include "engine_tcg.h"

struct tcg_debug {
    uint32_t flags;
    uint64_t addr[HV_DEBUG_SLOTS];
    uint32_t kind[HV_DEBUG_SLOTS];
    uc_hook code, mem[HV_DEBUG_SLOTS];
    int have_code, have_mem[HV_DEBUG_SLOTS];
    uint64_t resume_rip;        /* the instruction the guest resumes at runs first */
    int first;
    uint32_t reason;            /* of the STOP_DEBUG */
    uint64_t where;
};

static void hook_stop(struct tcg_vcpu *c, uint32_t reason, uint64_t where)
{
    c->debug->reason = reason;
    c->debug->where = where;
    c->stop = STOP_DEBUG;
    uc_emu_stop(c->uc);
}

static void on_code(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    struct tcg_vcpu *c = user;
    struct tcg_debug *d = c->debug;
    (void)size;
    if (c->stop != STOP_NONE) {         /* a watchpoint hit (or another hook's stop) */
        uc_emu_stop(uc);
        return;
    }
    if (d->first) {
        d->first = 0;
        if (address == d->resume_rip)
            return;
    }
    if (d->flags & HV_DEBUG_STEP) {
        hook_stop(c, HV_DEBUG_STOP_STEP, address);
        return;
    }
    for (int i = 0; i < HV_DEBUG_SLOTS; i++)
        if ((d->kind[i] & 0xff) == HV_DEBUG_HW_EXEC && d->addr[i] == address) {
            hook_stop(c, HV_DEBUG_STOP_HW_BREAK, address);
            return;
        }
}

static void on_memory(uc_engine *uc, uc_mem_type type, uint64_t address, int size,
                      int64_t value, void *user)
{
    struct tcg_vcpu *c = user;
    struct tcg_debug *d = c->debug;
    (void)uc; (void)type; (void)value;
    for (int i = 0; i < HV_DEBUG_SLOTS; i++) {
        uint32_t len = d->kind[i] >> 8 & 0xff;
        if ((d->kind[i] & 0xff) > HV_DEBUG_HW_EXEC && address < d->addr[i] + (len ? len : 1) &&
            d->addr[i] < address + (uint64_t)size && c->stop == STOP_NONE) {
            d->reason = HV_DEBUG_STOP_WATCH;
            d->where = d->addr[i];
            c->stop = STOP_DEBUG;       /* on_code stops before the next instruction */
        }
    }
}

static void remove_hooks(struct tcg_vcpu *c)
{
    struct tcg_debug *d = c->debug;
    if (d->have_code)
        uc_hook_del(c->uc, d->code);
    for (int i = 0; i < HV_DEBUG_SLOTS; i++)
        if (d->have_mem[i])
            uc_hook_del(c->uc, d->mem[i]);
    d->have_code = 0;
    for (int i = 0; i < HV_DEBUG_SLOTS; i++)
        d->have_mem[i] = 0;
}

int tcg_set_debug(void *vp, uint32_t flags, const uint64_t *addr, const uint32_t *kind)
{
    struct tcg_vcpu *c = vp;
    if (!c->debug && !(c->debug = calloc(1, sizeof(*c->debug))))
        return -ENOMEM;
    struct tcg_debug *d = c->debug;
    remove_hooks(c);
    d->flags = flags;
    int any = flags & HV_DEBUG_STEP;
    for (int i = 0; i < HV_DEBUG_SLOTS; i++) {
        d->addr[i] = addr[i];
        d->kind[i] = kind[i];
        uint32_t type = kind[i] & 0xff, len = kind[i] >> 8 & 0xff;
        any |= type != 0;
        if (type <= HV_DEBUG_HW_EXEC)
            continue;
        int what = type == HV_DEBUG_HW_WRITE ? UC_HOOK_MEM_WRITE
                                             : UC_HOOK_MEM_WRITE | UC_HOOK_MEM_READ;
        if (uc_hook_add(c->uc, &d->mem[i], what, (void *)on_memory, c, addr[i],
                        addr[i] + (len ? len : 1) - 1))
            return -EIO;
        d->have_mem[i] = 1;
    }
    if (any) {
        if (uc_hook_add(c->uc, &d->code, UC_HOOK_CODE, (void *)on_code, c, 1, 0))
            return -EIO;
        d->have_code = 1;
    }
    d->resume_rip = tcg_read_reg(c->uc, UC_X86_REG_RIP);
    d->first = 1;
    /* INT3s written or removed, hooks added: translate afresh. */
    uc_ctl_flush_tb(c->uc);
    return 0;
}

void tcg_debug_exit(struct tcg_vcpu *c, struct engine_exit *exit)
{
    exit->kind = ENGINE_EXIT_DEBUG;
    exit->value = c->debug->reason;
    exit->addr = c->debug->where;
}

void tcg_debug_free(struct tcg_vcpu *c)
{
    free(c->debug);
    c->debug = NULL;
}
