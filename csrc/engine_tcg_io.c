/*
 * engine_tcg_io.c - port I/O and the virtio window on the TCG engine.
 *
 * T:482 Unicorn calls an OUT or IN hook in the middle of the instruction.
 * Two rules make that match a CPU:
 *
 *  - I/O privilege first (Intel SDM vol. 1, 19.5).  QEMU's own check is
 *    compiled out of Unicorn, so ring 3 could reach hv's hypercall port.
 *    When CPL > IOPL, every port of the access must be clear in the TSS's
 *    I/O permission bitmap (if the TSS limit covers it); otherwise the
 *    instruction raises #GP(0) and does nothing.
 *  - Stops happen at block boundaries (engine_tcg.c), so the rest of the
 *    block runs after a port write the parent must see.  Later port writes
 *    of that block are queued, in order, in a queue that grows: no legal
 *    instruction sequence can overflow it.
 */
#include <errno.h>
#include <stdlib.h>
#include "engine_tcg.h"

#define CR0_PE      (1ull << 0)
#define RFLAGS_IOPL (3ull << 12)
#define TSS_IOMAP_BASE 102          /* offset of the bitmap's offset in a 64-bit TSS */

/* May the guest access `size` ports from `port` now?  (SDM vol. 1, 19.5.2) */
static int io_allowed(struct tcg_vcpu *c, uint16_t port, int size)
{
    uc_engine *uc = c->uc;
    uint64_t cs = 0;
    uc_reg_read(uc, UC_X86_REG_CS, &cs);
    unsigned cpl = (unsigned)cs & 3;
    if (cpl == 0)
        return 1;                   /* the common case: one register read */
    if (!(tcg_read_reg(uc, UC_X86_REG_CR0) & CR0_PE))
        return 1;                   /* real mode: no I/O protection */
    unsigned iopl = (unsigned)((tcg_read_reg(uc, UC_X86_REG_RFLAGS) & RFLAGS_IOPL) >> 12);
    if (cpl <= iopl)
        return 1;
    uc_x86_mmr tr = {0};
    uc_reg_read(uc, UC_X86_REG_TR, &tr);
    uint16_t base;
    if (tr.limit < TSS_IOMAP_BASE + 1 ||
        c->host->read_guest(c->owner, tr.base + TSS_IOMAP_BASE, &base, 2))
        return 0;
    /* The two bytes holding the access's bits must lie within the limit. */
    uint32_t at = base + port / 8u;
    if (at + 1 > tr.limit)
        return 0;
    uint16_t bits;
    if (c->host->read_guest(c->owner, tr.base + at, &bits, 2))
        return 0;
    uint16_t mask = (uint16_t)(((1u << size) - 1) << (port % 8));
    return (bits & mask) == 0;
}

static int queue_push(struct tcg_vcpu *c, const struct engine_exit *ex)
{
    if (c->nqueued == c->queue_cap) {
        unsigned cap = c->queue_cap ? c->queue_cap * 2 : 16;
        struct engine_exit *q = malloc(cap * sizeof(*q));
        if (!q)
            return -ENOMEM;
        for (unsigned i = 0; i < c->nqueued; i++)
            q[i] = c->queued[(c->queue_head + i) % c->queue_cap];
        free(c->queued);
        c->queued = q;
        c->queue_head = 0;
        c->queue_cap = cap;
    }
    c->queued[(c->queue_head + c->nqueued++) % c->queue_cap] = *ex;
    return 0;
}

int tcg_io_dequeue(struct tcg_vcpu *c, struct engine_exit *exit)
{
    if (!c->nqueued)
        return 0;
    *exit = c->queued[c->queue_head];
    c->queue_head = (c->queue_head + 1) % c->queue_cap;
    c->nqueued--;
    return 1;
}

/* After the core handled an exit in a hook: keep emulating, or stop so the
 * run loop sees what is now pending (a parent exit, block, an upcall). */
static void after_inline_exit(struct tcg_vcpu *c, int to_parent)
{
    if (to_parent)
        tcg_request_stop(c, STOP_RETURN);
    else if (c->host->needs_loop(c->owner))
        tcg_request_stop(c, STOP_LOOP);
}

/* Every OUT but a hypercall met with no stop pending (below). */
static void __attribute__((noinline)) out_other(struct tcg_vcpu *c, uint16_t port, int size,
                                                uint32_t value)
{
    if (c->stop == STOP_EXCEPTION)
        return;                     /* the block is being abandoned */
    if (!io_allowed(c, port, size)) {
        tcg_raise_fault(c, 13, 0);
        return;
    }
    struct engine_exit ex = { .kind = ENGINE_EXIT_IO, .port = port, .size = (uint8_t)size,
                              .write = 1, .value = value };
    if (c->stop != STOP_NONE) {
        /* The block runs on to its end after a stop: keep this write for
         * the run loop instead of overwriting the exit being returned. */
        if (queue_push(c, &ex))
            tcg_raise_fault(c, 8, 0);       /* out of host memory: give up on the guest */
        return;
    }
    after_inline_exit(c, c->host->handle_exit(c->owner, &ex));
}

/* T:483 A hypercall with nothing else going on goes straight to the core's
 * dispatch: no exit record to build, no switch on its kind, one batch read
 * of its registers and CS (tcg_prefetch_hypercall) -- hundreds of
 * millions a second can pass here, each instruction counts. */
static void tcg_on_out(uc_engine *uc, uint32_t port, int size, uint32_t value, void *user)
{
    struct tcg_vcpu *c = user;
    (void)uc;
    c->regs_valid = 0;
    if (port != HV_PORT_HYPERCALL || c->stop != STOP_NONE) {
        out_other(c, (uint16_t)port, size, value);
    } else {
        int64_t cs = tcg_prefetch_hypercall(c);
        if ((cs < 0 || (cs & 3)) && !io_allowed(c, (uint16_t)port, size)) {
            c->batch_fresh = 0;
            tcg_raise_fault(c, 13, 0);
            return;
        }
        after_inline_exit(c, c->host->hypercall(c->owner));
        c->batch_fresh = 0;         /* only ever for the exit it was read for */
    }
    c->regs_valid = 0;              /* the guest runs on and changes them */
}

/* A device answered in the middle of an instruction (IN, MMIO) may have
 * made an interrupt wait (a local APIC EOI or self-IPI, a device raising
 * an event for this vCPU): the block hook looks for IF from now on. */
static void after_device_access(struct tcg_vcpu *c)
{
    if (c->host->interrupt_waiting(c->owner))
        c->window = 1;
}

/* The PC platform's ports (UART, ACPI) answer in C (platform.c); other
 * reads see an empty bus, as the parent answers on KVM (hv/partition.py:
 * _on_io).  A read ring 3 may not make is #GP(0). */
static uint32_t tcg_on_in(uc_engine *uc, uint32_t port, int size, void *user)
{
    struct tcg_vcpu *c = user;
    uint32_t value = 0;
    (void)uc;
    if (c->stop != STOP_EXCEPTION && !io_allowed(c, (uint16_t)port, size)) {
        tcg_raise_fault(c, 13, 0);
        return 0;
    }
    int found = c->host->port_read(c->owner, (uint16_t)port, (uint8_t)size, &value) == 0;
    after_device_access(c);
    if (found)
        return value;
    return size == 4 ? 0xffffffffu : size == 2 ? 0xffffu : 0xffu;
}

/* The virtio window: Unicorn calls these in the middle of an instruction;
 * the core's register file answers at once.  They never stop the
 * emulator: a stop here would restart the instruction (engine_tcg.c). */
static uint64_t tcg_mmio_read(uc_engine *uc, uint64_t offset, unsigned size, void *user)
{
    struct tcg_vcpu *c = user;
    uint64_t value = 0;
    (void)uc;
    c->host->mmio(c->owner, HV_VIRTIO_MMIO_BASE + offset, size, 0, &value);
    after_device_access(c);
    return value;
}

static void tcg_mmio_write(uc_engine *uc, uint64_t offset, unsigned size, uint64_t value, void *user)
{
    struct tcg_vcpu *c = user;
    (void)uc;
    c->host->mmio(c->owner, HV_VIRTIO_MMIO_BASE + offset, size, 1, &value);
    after_device_access(c);
}

/* The IOAPIC and local APIC windows (platform.c), answered the same way.
 * uc_mmio_map's callbacks get offsets: each window knows its base. */
static uint64_t tcg_platform_read(uc_engine *uc, uint64_t offset, unsigned size, void *user)
{
    struct tcg_window *w = user;
    uint64_t value = 0;
    (void)uc;
    w->c->host->mmio(w->c->owner, w->base + offset, size, 0, &value);
    after_device_access(w->c);
    return value;
}

static void tcg_platform_write(uc_engine *uc, uint64_t offset, unsigned size, uint64_t value,
                               void *user)
{
    struct tcg_window *w = user;
    (void)uc;
    w->c->host->mmio(w->c->owner, w->base + offset, size, 1, &value);
    after_device_access(w->c);
}

int tcg_io_hooks_add(struct tcg_vcpu *c, uint64_t ram_size)
{
    uc_hook h;
    static const uint64_t platform_bases[2] = { HV_IOAPIC_BASE, HV_LAPIC_BASE };
    if (ram_size <= HV_VIRTIO_MMIO_BASE &&
        uc_mmio_map(c->uc, HV_VIRTIO_MMIO_BASE, HV_VIRTIO_MMIO_SLOTS * HV_VIRTIO_MMIO_SLOT,
                    tcg_mmio_read, c, tcg_mmio_write, c) != UC_ERR_OK)
        return -EIO;
    for (int i = 0; i < 2; i++) {
        c->windows[i] = (struct tcg_window){ c, platform_bases[i] };
        if (ram_size <= platform_bases[i] &&
            uc_mmio_map(c->uc, platform_bases[i], HV_PAGE_SIZE, tcg_platform_read,
                        &c->windows[i], tcg_platform_write, &c->windows[i]) != UC_ERR_OK)
            return -EIO;
    }
    if (uc_hook_add(c->uc, &h, UC_HOOK_INSN, (void *)tcg_on_out, c, 1, 0, UC_X86_INS_OUT) ||
        uc_hook_add(c->uc, &h, UC_HOOK_INSN, (void *)tcg_on_in, c, 1, 0, UC_X86_INS_IN))
        return -EIO;
    return 0;
}
