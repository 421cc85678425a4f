/*
 * vcpu.c - the vCPU run loop.
 *
 * T:450 hv_vcpu_run() is the hot path.  It enters the guest through the
 * engine and looks at why the guest stopped.  A hypercall trap is dispatched
 * right here; if the handler finished it in C, the result goes into RAX and
 * the guest re-enters without Python ever running.  Anything the parent
 * partition must see (console bytes, shutdown, crashes, unknown ports) is
 * written into an exit record and the call *returns*: Python is never called
 * back from inside the engine.  cffi drops the GIL around this call.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "core.h"
#include "x86_insn.h"

#define RFLAGS_IF (1ull << 9)

int hv_vcpu_create(struct hv_partition *p, uint32_t id, struct hv_vcpu **out)
{
    if (id >= p->nvcpus)
        return -EINVAL;             /* hv_partition_set_vcpus says how many */
    if (p->vcpus[id])
        return -EBUSY;
    struct hv_vcpu *v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    v->partition = p;
    v->id = id;
    v->g.up = id == 0;              /* vCPU 0 boots; the others wait for vcpu_up */
    pthread_mutex_init(&v->h.lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);   /* matches the timer */
    pthread_cond_init(&v->h.wake, &attr);
    pthread_condattr_destroy(&attr);

    int err = p->engine->vcpu_create(p->engine_vm, id, &engine_core_host, v, &v->engine_vcpu);
    /* The engine's optional watchers: an instruction trace, the
     * deterministic clock. */
    if (!err && p->insn_trace_end)
        err = p->engine->trace_code(v->engine_vcpu, p->insn_trace_start, p->insn_trace_end);
    if (!err && p->deterministic)
        err = p->engine->count_instructions(v->engine_vcpu, &p->g.instructions, &v->h.insn_stop);
    if (err) {
        if (v->engine_vcpu)
            p->engine->vcpu_destroy(v->engine_vcpu);
        pthread_cond_destroy(&v->h.wake);
        pthread_mutex_destroy(&v->h.lock);
        free(v);
        return err;
    }
    vcpu_thread_setup(v);
    v->lapic = lapic_create(v);     /* NULL (no memory): the guest sees no APIC */
    pthread_mutex_lock(&p->vcpu_lock);
    p->vcpus[id] = v;
    if (id == 0)
        p->vcpu = v;
    pthread_mutex_unlock(&p->vcpu_lock);
    *out = v;
    return 0;
}

int hv_vcpu_is_up(const struct hv_vcpu *v)
{
    return __atomic_load_n(&v->g.up, __ATOMIC_ACQUIRE);
}

void hv_vcpu_destroy(struct hv_vcpu *v)
{
    if (!v)
        return;
    /* Unpublish first: a device interrupt on another thread may be about
     * to kick this vCPU. */
    pthread_mutex_lock(&v->partition->vcpu_lock);
    v->partition->vcpus[v->id] = NULL;
    if (v->id == 0)
        v->partition->vcpu = NULL;
    pthread_mutex_unlock(&v->partition->vcpu_lock);
    hv_sched_detach(v);             /* off every worker first */
    vcpu_thread_teardown(v);
    lapic_free(v->lapic);
    v->partition->engine->vcpu_destroy(v->engine_vcpu);
    pthread_cond_destroy(&v->h.wake);
    pthread_mutex_destroy(&v->h.lock);
    free(v);
}

/* T:415 The PVH entry state, the same on every engine: a flat 32-bit code
 * segment (selector 0x10) and data segment (0x18) described by a small GDT
 * that hv writes into its own reserved page 0; the guest loads its own GDT
 * before it reloads a segment register. */
static const uint64_t pvh_boot_gdt[5] = {
    0, 0,
    0x00cf9b000000ffffull,      /* 0x10: code, base 0, limit 4 GiB, 32-bit */
    0x00cf93000000ffffull,      /* 0x18: data, base 0, limit 4 GiB (HV_VCPU_UP_DS) */
    0x00af9b000000ffffull,      /* 0x20: code, 64-bit (HV_VCPU_UP_CS: vcpu_up) */
};

_Static_assert(HV_BOOT_GDT_GPA + sizeof(pvh_boot_gdt) <= HV_BOOT_PAGE_GPA,
               "the boot GDT lies in page 0, below the boot page");

int hv_vcpu_set_pvh_entry(struct hv_vcpu *v, uint32_t entry, uint32_t start_info)
{
    struct hv_partition *p = v->partition;
    if (hv_partition_frame_owner(p, HV_BOOT_GDT_GPA) != HV_OWNER_HV)
        return -EINVAL;         /* page 0 must be reserved for hv */
    memcpy(p->ram + HV_BOOT_GDT_GPA, pvh_boot_gdt, sizeof(pvh_boot_gdt));
    ram_written(p, HV_BOOT_GDT_GPA, sizeof(pvh_boot_gdt));
    return p->engine->set_pvh_entry(v->engine_vcpu, entry, start_info, HV_BOOT_GDT_GPA,
                                    sizeof(pvh_boot_gdt) - 1);
}

_Static_assert(HV_BOOT_GDT_LIMIT == sizeof(pvh_boot_gdt) - 1, "core.h's limit");
_Static_assert(HV_VCPU_UP_CS == 4 * 8 && HV_VCPU_UP_DS == 3 * 8, "abi.h's selectors");

/* vcpu_up (smp.c): t runs nowhere.  The boot GDT is written again: the
 * guest may have reused page 0 since it booted. */
int vcpu_set_long_entry(struct hv_vcpu *t, const struct hv_vcpu_context *ctx)
{
    struct hv_partition *p = t->partition;
    if (hv_partition_frame_owner(p, HV_BOOT_GDT_GPA) != HV_OWNER_HV)
        return -EINVAL;
    memcpy(p->ram + HV_BOOT_GDT_GPA, pvh_boot_gdt, sizeof(pvh_boot_gdt));
    ram_written(p, HV_BOOT_GDT_GPA, sizeof(pvh_boot_gdt));
    return p->engine->set_long_entry(t->engine_vcpu, ctx, HV_BOOT_GDT_GPA, HV_BOOT_GDT_LIMIT);
}

static void set_result(struct hv_vcpu *v, int64_t result)
{
    const struct engine_ops *e = v->partition->engine;
    if (e->write_reg) {
        e->write_reg(v->engine_vcpu, HVREG_RAX, (uint64_t)result);
        return;
    }
    e->regs(v->engine_vcpu)->rax = (uint64_t)result;
    e->regs_dirty(v->engine_vcpu);
}

/* T:460 The one place that knows which register carries what:
 * RAX = number, RDI, RSI, RDX, R10, R8 = arguments, result in RAX.
 * Returns 1 if the parent must finish the call. */
static const uint8_t hypercall_regs[6] = { HVREG_RAX, HVREG_RDI, HVREG_RSI, HVREG_RDX, HVREG_R10, HVREG_R8 };

static int vcpu_hypercall(struct hv_vcpu *v, struct hv_exit *exit)
{
    const struct engine_ops *e = v->partition->engine;
    uint64_t r[6];
    if (e->read_regs) {
        e->read_regs(v->engine_vcpu, hypercall_regs, 6, r);
    } else {
        const uint64_t *view = (const uint64_t *)e->regs(v->engine_vcpu);
        for (int i = 0; i < 6; i++)
            r[i] = view[hypercall_regs[i]];
    }
    uint64_t nr = r[0];
    const uint64_t *args = &r[1];
    int64_t result = hypercall_dispatch(v, nr, args, exit);
    if (result == HC_TO_PARENT) {
        if (!v->g.mc.active)          /* a suspended batch traced its entry itself */
            TRACE(v, HV_TRACE_TO_PARENT, nr, args, 0);
        v->g.wait = WAIT_PARENT_HYPERCALL;
        v->h.parent_calls++;
        return 1;
    }
    TRACE(v, HV_TRACE_HYPERCALL, nr, args, result);
    v->h.fast_calls++;
    set_result(v, result);
    return 0;
}

static int crash(struct hv_exit *exit, uint64_t cause, uint64_t detail)
{
    exit->kind = HV_EXIT_CRASH;
    exit->code = cause;
    exit->reason = detail;
    return 1;
}

/* Port I/O that is not hv's own goes to the parent, which may emulate it. */
static int port_to_parent(struct hv_vcpu *v, const struct engine_exit *ex, struct hv_exit *exit)
{
    exit->kind = HV_EXIT_IO;
    exit->io_port = ex->port;
    exit->io_size = ex->size;
    exit->io_write = ex->write;
    exit->io_value = ex->value;
    v->g.wait = ex->write ? WAIT_PARENT_IO_OUT : WAIT_PARENT_IO_IN;
    return 1;
}

/* A batch suspended for the parent resumes before the guest runs again.
 * Returns 1 if the parent must finish another entry. */
static int multicall_resume(struct hv_vcpu *v, struct hv_exit *exit)
{
    uint64_t batch[5] = { v->g.mc.gva, v->g.mc.count };
    int64_t result = multicall_continue(v, exit);
    if (result == HC_TO_PARENT) {
        v->g.wait = WAIT_PARENT_HYPERCALL;
        v->h.parent_calls++;
        return 1;
    }
    TRACE(v, HV_TRACE_HYPERCALL, HV_HC_MULTICALL, batch, result);
    set_result(v, result);
    return 0;
}

/* An instruction the engine could not run.  This machine's KVM gives up on
 * software interrupts (INT3, INT n, INTO) with an internal error; the core
 * runs them as the CPU would (SDM vol. 2A, INT n/INTO/INT3/INT1): INT3 and
 * INT n deliver through the guest's IDT with RIP past them; INTO is #UD in
 * 64-bit mode, and elsewhere does nothing with OF clear and delivers #OF
 * past itself with OF set.  Prefixes before them change nothing but the
 * length (LOCK makes them #UD).  Anything else is an engine failure. */
#define RFLAGS_OF (1ull << 11)
#define EFER_LMA  (1ull << 10)
#define DESC_L    (1ull << 53)      /* a code segment's 64-bit flag */
#define VECTOR_UD 6

/* 64-bit mode: long mode active and CS.L set (1); compatibility or legacy
 * mode (0); -1 if the code segment's descriptor cannot be read. */
static int in_64bit_mode(struct hv_vcpu *v)
{
    const struct engine_ops *e = v->partition->engine;
    struct hv_sregs s;
    uint64_t desc;
    if (e->get_sregs(v->engine_vcpu, &s))
        return -1;
    if (!(s.efer & EFER_LMA))
        return 0;
    if ((s.cs & 4) || copy_guest_system(v, s.gdt_base + (s.cs & ~7u), &desc, 8, 0))
        return -1;                  /* an LDT code segment: not emulated */
    return !!(desc & DESC_L);
}

static int legacy_prefix(uint8_t b)
{
    return b == 0x26 || b == 0x2e || b == 0x36 || b == 0x3e || b == 0x64 || b == 0x65 ||
           b == 0x66 || b == 0x67 || b == 0xf2 || b == 0xf3;
}

static int raise_ud(struct hv_vcpu *v, struct hv_exit *exit)
{
    TRACE(v, HV_TRACE_EXIT, HV_TRACE_EXIT_EXCEPTION,
          ((uint64_t[5]){ VECTOR_UD, v->partition->engine->regs(v->engine_vcpu)->rip }), 0);
    if (idt_deliver(v, VECTOR_UD, IDT_EXCEPTION, 0, 0))
        return crash(exit, HV_CRASH_TRIPLE_FAULT, VECTOR_UD);
    return 0;
}

static int vcpu_emulate(struct hv_vcpu *v, const struct engine_exit *ex, struct hv_exit *exit)
{
    const struct engine_ops *e = v->partition->engine;
    struct hv_regs *r = e->regs(v->engine_vcpu);
    uint8_t insn[2] = {0};
    uint8_t vector, len = 1, prefixes = 0;
    int mode64 = -2, locked = 0;    /* mode64 -2: not asked yet */
    for (;;) {                      /* an instruction is at most 15 bytes */
        if (prefixes == 14 || copy_guest_system(v, r->rip + prefixes, insn, 1, 0))
            return crash(exit, HV_CRASH_ENGINE, ex->detail);
        if ((insn[0] & 0xf0) == 0x40 && mode64 == -2)
            mode64 = in_64bit_mode(v);          /* REX, or INC/DEC outside 64-bit mode */
        if (insn[0] != 0xf0 && !legacy_prefix(insn[0]) &&
            !((insn[0] & 0xf0) == 0x40 && mode64 == 1))
            break;
        locked |= insn[0] == 0xf0;
        prefixes++;
    }
    if (locked && (insn[0] == INSN_INT3 || insn[0] == INSN_INT || insn[0] == INSN_INTO))
        return raise_ud(v, exit);               /* LOCK before them: #UD */
    if (insn[0] == INSN_INT3 && !prefixes && (v->h.debug_flags & HV_DEBUG_SW_BP))
        return debug_stop(exit, HV_DEBUG_STOP_BREAKPOINT, r->rip);   /* a debugger's */
    if (insn[0] == INSN_INT3) {
        vector = 3;
    } else if (insn[0] == INSN_INTO) {
        if (mode64 == -2)
            mode64 = in_64bit_mode(v);
        if (mode64 < 0)
            return crash(exit, HV_CRASH_ENGINE, ex->detail);
        if (mode64)                 /* a fault at the instruction */
            return raise_ud(v, exit);
        if (!(r->rflags & RFLAGS_OF)) {
            r->rip += 1u + prefixes;    /* nothing to raise: on to the next instruction */
            e->regs_dirty(v->engine_vcpu);
            return 0;
        }
        vector = 4;
    } else if (insn[0] == INSN_INT &&
               copy_guest_system(v, r->rip + prefixes + 1, &insn[1], 1, 0) == 0) {
        vector = insn[1];
        len = 2;
    } else {
        return crash(exit, HV_CRASH_ENGINE, ex->detail);
    }
    len += prefixes;
    TRACE(v, HV_TRACE_EXIT, HV_TRACE_EXIT_EXCEPTION, ((uint64_t[5]){ vector, r->rip }), 0);
    r->rip += len;                  /* a software interrupt returns past itself */
    e->regs_dirty(v->engine_vcpu);
    if (idt_deliver(v, vector, IDT_SOFTWARE, 0, len))
        return crash(exit, HV_CRASH_TRIPLE_FAULT, vector);
    return 0;
}

/* T:455 One exit, whatever the engine.  Returns 0 to re-enter the guest, 1
 * when v->h.exit is filled for the parent.  KVM's run() returns each exit and
 * hv_vcpu_run() calls this; the TCG engine calls it from inside its
 * instruction hooks, so a fast hypercall never leaves the emulator. */
int vcpu_handle_exit(struct hv_vcpu *v, const struct engine_exit *ex)
{
    const struct engine_ops *e = v->partition->engine;
    struct hv_exit *exit = v->h.exit;
    v->h.exits++;
    switch (ex->kind) {
    case ENGINE_EXIT_IO:
        if (ex->port == HV_PORT_HYPERCALL && ex->write)
            return vcpu_hypercall(v, exit);
        if (ex->port == HV_PORT_HYPERCALL_PAGE && ex->write && ex->size == 4) {
            hypercall_page_place(v, ex->value);
            return 0;
        }
        {   /* The PC platform's ports (UART, ACPI power) are answered in C. */
            uint32_t value = (uint32_t)ex->value;
            int r = platform_port(v, ex->port, ex->size, ex->write, &value, exit);
            if (r >= 0) {
                if (!ex->write)
                    e->complete_in(v->engine_vcpu, value);
                return r;
            }
        }
        TRACE(v, HV_TRACE_EXIT, HV_TRACE_EXIT_PORT,
              ((uint64_t[5]){ ex->port, ex->value, ex->size, ex->write }), 0);
        return port_to_parent(v, ex, exit);
    case ENGINE_EXIT_MMIO: {
        TRACE(v, HV_TRACE_EXIT, HV_TRACE_EXIT_MMIO,
              ((uint64_t[5]){ ex->addr, ex->value, ex->size, ex->write }), 0);
        /* The virtio window is answered in C; elsewhere an empty bus:
         * reads see all ones, writes are dropped. */
        uint64_t value = ex->value;
        if (virtio_mmio_access(v->partition, ex->addr, ex->size, ex->write, &value) &&
            platform_mmio(v, ex->addr, ex->size, ex->write, &value))
            value = ~0ull;
        if (!ex->write)
            e->complete_in(v->engine_vcpu, value);
        return 0;
    }
    case ENGINE_EXIT_HLT:
        TRACE(v, HV_TRACE_EXIT, HV_TRACE_EXIT_HLT,
              ((uint64_t[5]){ e->regs(v->engine_vcpu)->rip }), 0);
        /* hlt with IF=0 can never be woken (no NMIs here): a hang. */
        if (!(e->regs(v->engine_vcpu)->rflags & RFLAGS_IF))
            return crash(exit, HV_CRASH_HALTED, 0);
        v->g.wait = WAIT_EVENT;
        /* A halted guest may wait for input after a prompt: show it. */
        return platform_uart_flush(v->partition, exit);
    case ENGINE_EXIT_EXCEPTION:
        if (ex->value == 3 && ex->software && (v->h.debug_flags & HV_DEBUG_SW_BP))
            return debug_int3_stop(v, ex->insn_len, exit);          /* a debugger's */
        TRACE(v, HV_TRACE_EXIT, HV_TRACE_EXIT_EXCEPTION,
              ((uint64_t[5]){ ex->value, e->regs(v->engine_vcpu)->rip, ex->error_code }), 0);
        /* An engine without hardware delivery (TCG) hands CPU exceptions
         * to the core, which delivers them through the guest's IDT. */
        if (idt_deliver(v, (uint8_t)ex->value, ex->software ? IDT_SOFTWARE : IDT_EXCEPTION,
                        ex->error_code, ex->insn_len))
            return crash(exit, HV_CRASH_TRIPLE_FAULT, ex->value);
        return 0;
    case ENGINE_EXIT_EMULATE:
        return vcpu_emulate(v, ex, exit);
    case ENGINE_EXIT_DEBUG:
        return debug_stop(exit, (uint32_t)ex->value, ex->addr);
    case ENGINE_EXIT_SHUTDOWN:
        return crash(exit, HV_CRASH_TRIPLE_FAULT, ex->detail);
    case ENGINE_EXIT_INTERRUPTED:
        /* hv's kick or timer: event_before_entry() sees why.  Any other
         * signal (Ctrl-C) is the parent's: return so Python handles it. */
        if (!event_consume_kick()) {
            exit->kind = HV_EXIT_SIGNAL;
            return 1;
        }
        return 0;
    case ENGINE_EXIT_WINDOW:
        return 0;
    case ENGINE_EXIT_RETURN:
    case ENGINE_EXIT_FAIL:
    default:
        return crash(exit, HV_CRASH_ENGINE, ex->detail);
    }
}

/* The same as vcpu_handle_exit() for an OUT to the hypercall port, for an
 * engine that traps it inside the emulator (TCG): no exit record. */
int vcpu_handle_hypercall(struct hv_vcpu *v)
{
    v->h.exits++;
    return vcpu_hypercall(v, v->h.exit);
}

/* A deterministic worker's slice, counted in guest instructions, is over. */
static int slice_spent(const struct hv_vcpu *v)
{
    return v->h.insn_slice_end && v->partition->g.instructions >= v->h.insn_slice_end;
}

/* T:589 The one predicate "does this vCPU need the loop before it
 * re-enters the guest?".  The run loop below does its pending work only
 * when it holds, and engines that handle exits inside the emulator (TCG)
 * ask it through the host interface (engine.h) to decide whether to stop. */
int vcpu_needs_loop(const struct hv_vcpu *v)
{
    /* One OR of all the flags and one branch, not a branch each: TCG asks
     * after every hypercall handled in C, and the answer is almost always 0. */
    int pending = (v->g.wait != WAIT_NONE) | v->g.mc.active | v->h.pause_requested |
                  v->g.inject_pending | v->lapic_pending | v->h.trace_drain | v->h.timer_due |
                  v->h.yielded | v->g.down_requested | v->g.tlb_flush_pending | v->h.resched |
                  v->h.raised_any;
    return pending || slice_spent(v);
}

#define RUN_ON (-1)     /* pending_work: nothing stops the run, enter the guest */

/* The pending work vcpu_needs_loop() announced, in order: a suspended
 * multicall, block/hlt, a pause, a trace drain, a yield, a deterministic
 * slice's end (and a vcpu_down before all of them; a TLB flush is
 * smp_before_run's).  (Upcalls and
 * timers are event_before_entry()'s.)  RUN_ON, or why the run ends. */
static int pending_work(struct hv_vcpu *v, struct hv_exit *exit, int scheduled)
{
    if (v->g.down_requested) {
        vcpu_down_clock_skip(v);    /* deterministic SMP: someone must move the clock */
        return RUN_DOWN;            /* vcpu_down: its worker parks it (smp.c) */
    }
    if (v->g.mc.active && multicall_resume(v, exit))
        return RUN_TO_PARENT;
    if (v->g.wait == WAIT_EVENT) {
        uint64_t deadline;
        if (!scheduled) {
            if (event_wait(v) == 0)
                v->g.wait = WAIT_NONE;
        } else if (vcpu_wait_check(v, &deadline) == 0) {
            v->g.wait = WAIT_NONE;
        } else {
            return RUN_BLOCKED;
        }
    }
    if (v->h.pause_requested) {
        v->h.pause_requested = 0;
        exit->kind = HV_EXIT_PAUSED;
        return RUN_TO_PARENT;
    }
    if (v->h.trace_drain) {
        v->h.trace_drain = 0;
        exit->kind = HV_EXIT_TRACE;
        return RUN_TO_PARENT;
    }
    if (v->h.yielded) {
        v->h.yielded = 0;
        return RUN_YIELDED;
    }
    if (slice_spent(v) || v->h.resched)
        return RUN_KICKED;          /* as a slice timer would (sched_worker.c: T:595) */
    return RUN_ON;
}

/* T:590 The run loop, shared by both ways of running a vCPU.  Alone on a
 * thread of its own (scheduled = 0) it sleeps in block/hlt itself and
 * shrugs off kicks; on a scheduler worker (scheduled = 1) it hands those
 * back, so the worker can run someone else: RUN_BLOCKED (nothing to do
 * until an event), RUN_KICKED (the slice ended, or a kick asks the worker
 * to look), RUN_YIELDED.  RUN_TO_PARENT: the exit record is filled. */
enum vcpu_run_end vcpu_run_loop(struct hv_vcpu *v, struct hv_exit *exit, int scheduled)
{
    const struct engine_ops *e = v->partition->engine;
    for (;;) {
        if (vcpu_needs_loop(v)) {
            int end = pending_work(v, exit, scheduled);
            if (end != RUN_ON)
                return (enum vcpu_run_end)end;
        }
        event_before_entry(v);

        struct engine_exit ex = {0};
        __atomic_store_n(&v->h.in_guest, 1, __ATOMIC_SEQ_CST);
        smp_before_run(v);          /* after in_guest: a TLB flush asked for meanwhile */
        if (__atomic_load_n(&v->h.resched, __ATOMIC_SEQ_CST)) {
            /* Its worker was asked to look while in_guest was still 0
             * (sched_worker.c, T:595): the kick may not have been sent. */
            __atomic_store_n(&v->h.in_guest, 0, __ATOMIC_SEQ_CST);
            return RUN_KICKED;
        }
        int err = e->run(v->engine_vcpu, &ex);
        __atomic_store_n(&v->h.in_guest, 0, __ATOMIC_SEQ_CST);
        if (err) {
            exit->kind = HV_EXIT_ERROR;
            exit->code = (uint64_t)-err;
            return RUN_TO_PARENT;
        }
        if (ex.kind == ENGINE_EXIT_RETURN)     /* handled inside the engine */
            return RUN_TO_PARENT;
        if (scheduled && ex.kind == ENGINE_EXIT_INTERRUPTED) {
            /* Workers block every other signal: this is hv's kick or a
             * timer; the worker decides what runs next. */
            v->h.exits++;
            event_consume_kick();
            return RUN_KICKED;
        }
        if (vcpu_handle_exit(v, &ex))
            return RUN_TO_PARENT;
    }
}

int hv_vcpu_run(struct hv_vcpu *v, struct hv_exit *exit)
{
    exit->kind = 0;
    exit->vcpu = v->id;
    exit->data_len = 0;
    if (v->h.sched)
        return -EBUSY;              /* a scheduler's workers run it */
    if (v->g.wait != WAIT_NONE && v->g.wait != WAIT_EVENT)
        return -EBUSY;              /* the parent owes hv_vcpu_complete() */
    v->h.exit = exit;
    vcpu_run_loop(v, exit, 0);
    return 0;
}

int hv_vcpu_complete(struct hv_vcpu *v, int64_t result)
{
    const struct engine_ops *e = v->partition->engine;
    switch (v->g.wait) {
    case WAIT_PARENT_HYPERCALL:
        TRACE(v, HV_TRACE_COMPLETE, v->h.exit->nr, NULL, result);
        if (v->g.mc.active) {
            multicall_store_result(v, result);   /* the batch goes on at the next run */
            if (!v->g.mc.active)
                set_result(v, -HV_EFAULT);       /* its array vanished meanwhile */
        } else
            set_result(v, result);
        break;
    case WAIT_PARENT_IO_IN:
        e->complete_in(v->engine_vcpu, (uint64_t)result);
        break;
    case WAIT_PARENT_IO_OUT:
        break;
    default:
        return -EINVAL;             /* nothing to complete */
    }
    v->g.wait = WAIT_NONE;
    return 0;
}

int hv_vcpu_get_regs(struct hv_vcpu *v, struct hv_regs *regs)
{
    *regs = *v->partition->engine->regs(v->engine_vcpu);
    return 0;
}

int hv_vcpu_get_sregs(struct hv_vcpu *v, struct hv_sregs *sregs)
{
    return v->partition->engine->get_sregs(v->engine_vcpu, sregs);
}

int hv_vcpu_set_sregs(struct hv_vcpu *v, const struct hv_sregs *sregs)
{
    return v->partition->engine->set_sregs(v->engine_vcpu, sregs);
}

void hv_vcpu_request_pause(struct hv_vcpu *v)
{
    __atomic_store_n(&v->h.pause_requested, 1, __ATOMIC_SEQ_CST);
    vcpu_kick(v);
}

void hv_vcpu_counters(struct hv_vcpu *v, uint64_t *exits, uint64_t *fast, uint64_t *slow)
{
    *exits = v->h.exits;
    *fast = v->h.fast_calls;
    *slow = v->h.parent_calls;
}

/* ---- Test entries: the same dispatcher, no guest running ---------------- */

int hv_test_dispatch(struct hv_vcpu *v, struct hv_regs *regs, struct hv_exit *exit)
{
    const struct engine_ops *e = v->partition->engine;
    if (v->g.wait != WAIT_NONE)
        return -EBUSY;
    exit->kind = 0;
    exit->data_len = 0;
    v->h.exit = exit;
    *e->regs(v->engine_vcpu) = *regs;
    int to_parent = v->g.mc.active ? multicall_resume(v, exit) : vcpu_hypercall(v, exit);
    if (!to_parent && v->g.wait == WAIT_EVENT)
        v->g.wait = WAIT_NONE;        /* tests do not sleep */
    *regs = *e->regs(v->engine_vcpu);
    return !to_parent;
}

/* FNV-1a over every piece of guest-visible hv state. */
static uint64_t fnv(uint64_t h, const void *data, size_t len)
{
    const uint8_t *b = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

uint64_t hv_test_state_digest(struct hv_vcpu *v)
{
    const struct hv_partition *p = v->partition;
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv(h, &p->g, sizeof(p->g));     /* calloc'd: its padding is zero */
    h = fnv(h, p->route, sizeof(p->route));
    h = fnv(h, &v->g.mc, sizeof(v->g.mc));
    /* Every vCPU's: up or down, its timer, what it waits for, its events. */
    for (uint32_t i = 0; i < p->nvcpus; i++) {
        const struct hv_vcpu *t = p->vcpus[i];
        if (!t)
            continue;
        h = fnv(h, &t->g.up, sizeof(t->g.up));
        h = fnv(h, (const void *)&t->g.down_requested, sizeof(t->g.down_requested));
        h = fnv(h, &t->g.timer_deadline, sizeof(t->g.timer_deadline));
        h = fnv(h, &t->g.wait, sizeof(t->g.wait));
        if (p->g.event_page_gpa)
            h = fnv(h, p->ram + p->g.event_page_gpa + (uint64_t)i * HV_VCPU_EVENTS_SIZE,
                    sizeof(struct hv_event_page));
    }
    return h;
}
