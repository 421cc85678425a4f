/*
 * lapic.c - the local APIC (xAPIC, memory-mapped at HV_LAPIC_BASE).
 *
 * T:548 One per vCPU (Intel SDM vol. 3, chapter 11).  Interrupts arrive in
 * IRR (from the IOAPIC, the APIC timer, a self-IPI; any thread, atomically);
 * the run loop's injection point takes the highest one whose priority class
 * is above the processor priority (PPR: TPR or the highest in service),
 * moves it to ISR and delivers it through the engine.  The guest's EOI write
 * retires the highest in-service vector and, for a level-triggered one,
 * tells the IOAPIC.  The timer counts down at the bus clock (the CPUID 0x15
 * crystal: half the TSC), divided by the divide register, one-shot or
 * periodic, measured on the partition clock; a host timer signals the
 * vCPU's thread when it is due, as hv's own timer does (timer.c).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core.h"

/* Register offsets in the 4 KiB window (SDM vol. 3, table 11-1). */
#define REG_ID        0x020
#define REG_VERSION   0x030
#define REG_TPR       0x080
#define REG_APR       0x090
#define REG_PPR       0x0a0
#define REG_EOI       0x0b0
#define REG_LDR       0x0d0
#define REG_DFR       0x0e0
#define REG_SVR       0x0f0
#define REG_ISR       0x100     /* 8 registers, 16 bytes apart */
#define REG_TMR       0x180
#define REG_IRR       0x200
#define REG_ESR       0x280
#define REG_ICR_LOW   0x300
#define REG_ICR_HIGH  0x310
#define REG_LVT_TIMER 0x320     /* then thermal, perf, LINT0, LINT1, error */
#define REG_LVT_ERROR 0x370
#define REG_TIMER_INITIAL 0x380
#define REG_TIMER_CURRENT 0x390
#define REG_TIMER_DIVIDE  0x3e0

#define LVT_COUNT     6
#define LVT_MASKED    (1u << 16)
#define LVT_PERIODIC  (1u << 17)
#define SVR_ENABLED   (1u << 8)
/* Version 0x14 (an integrated xAPIC), LVT_COUNT - 1 as "max LVT entry". */
#define LAPIC_VERSION (0x14u | ((LVT_COUNT - 1u) << 16))

#define ICR_DELIVERY   (7u << 8)
#define ICR_SHORTHAND  (3u << 18)
#define ICR_SELF       (1u << 18)
#define ICR_ALL        (2u << 18)

struct lapic {
    struct hv_vcpu *v;
    uint32_t id, tpr, ldr, dfr, svr, esr, icr_low, icr_high;
    uint32_t lvt[LVT_COUNT];
    uint32_t timer_initial, timer_divide;
    uint64_t timer_start;       /* partition ns when the count was loaded */
    uint64_t timer_deadline;    /* partition ns of the next expiry, 0 = stopped */
    uint32_t irr[8], tmr[8];    /* set by any thread: atomic */
    uint32_t isr[8];            /* the vCPU's thread only */
    timer_t  host_timer;
    int      host_timer_ok;
};

struct lapic *lapic_create(struct hv_vcpu *v)
{
    struct lapic *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->v = v;
    a->id = v->id;
    a->dfr = 0xffffffffu;
    a->svr = 0xff;              /* software-disabled until the guest enables it */
    for (int i = 0; i < LVT_COUNT; i++)
        a->lvt[i] = LVT_MASKED;
    /* Called on the vCPU's thread: the host timer signals it (kick.c). */
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = kick_signal();
    sev._sigev_un._tid = v->h.tid;
    a->host_timer_ok = timer_create(CLOCK_MONOTONIC, &sev, &a->host_timer) == 0;
    return a;
}

void lapic_free(struct lapic *a)
{
    if (!a)
        return;
    if (a->host_timer_ok)
        timer_delete(a->host_timer);
    free(a);
}

/* ---- Vectors: IRR -> ISR -> EOI ------------------------------------------ */

static int highest(const uint32_t bits[8], int atomic)
{
    for (int i = 7; i >= 0; i--) {
        uint32_t w = atomic ? __atomic_load_n(&bits[i], __ATOMIC_ACQUIRE) : bits[i];
        if (w)
            return i * 32 + 31 - __builtin_clz(w);
    }
    return -1;
}

static uint32_t ppr(const struct lapic *a)
{
    int isrv = highest(a->isr, 0);
    uint32_t in_service = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;
    return (a->tpr & 0xf0) >= in_service ? a->tpr & 0xff : in_service;
}

/* The vector the CPU would take now, or -1. */
static int deliverable(const struct lapic *a)
{
    if (!(a->svr & SVR_ENABLED))
        return -1;
    int vector = highest(a->irr, 1);
    if (vector < 0 || ((uint32_t)vector & 0xf0) <= (ppr(a) & 0xf0))
        return -1;
    return vector;
}

/* Tell the run loop (and TCG's block hook) whether a vector waits: they
 * stop the guest to deliver it as soon as IF allows. */
static void update_pending(struct lapic *a)
{
    __atomic_store_n(&a->v->lapic_pending, deliverable(a) >= 0, __ATOMIC_RELEASE);
}

void lapic_accept(struct hv_vcpu *v, uint8_t vector, int level)
{
    struct lapic *a = v->lapic;
    if (!a || vector < 16)
        return;
    uint32_t bit = 1u << (vector % 32);
    if (level)
        __atomic_fetch_or(&a->tmr[vector / 32], bit, __ATOMIC_RELEASE);
    else
        __atomic_fetch_and(&a->tmr[vector / 32], ~bit, __ATOMIC_RELEASE);
    __atomic_fetch_or(&a->irr[vector / 32], bit, __ATOMIC_RELEASE);
    update_pending(a);
    vcpu_kick(v);                   /* wakes hlt; interrupts a running guest on another thread */
}

static void eoi(struct lapic *a)
{
    int vector = highest(a->isr, 0);
    if (vector < 0)
        return;
    a->isr[vector / 32] &= ~(1u << (vector % 32));
    if (__atomic_load_n(&a->tmr[vector / 32], __ATOMIC_ACQUIRE) & (1u << (vector % 32)))
        ioapic_eoi(a->v->partition, (uint8_t)vector);
    update_pending(a);              /* a lower-priority vector may go now */
}

/* ---- The timer ------------------------------------------------------------- */

static uint64_t bus_hz(const struct lapic *a)
{
    return platform_tsc_hz(a->v->partition) / 2;   /* the crystal platform_cpuid reports */
}

static uint32_t divisor(const struct lapic *a)
{
    /* Bits 0, 1 and 3 encode 2, 4, ..., 128, and 0b111 means 1. */
    uint32_t code = (a->timer_divide & 3) | ((a->timer_divide & 8) >> 1);
    return code == 7 ? 1 : 2u << code;
}

static uint64_t ticks_to_ns(const struct lapic *a, uint64_t ticks)
{
    return (uint64_t)((unsigned __int128)ticks * divisor(a) * 1000000000u / bus_hz(a));
}

static void host_timer_set(struct lapic *a)
{
    struct hv_partition *p = a->v->partition;
    if (!a->host_timer_ok || p->deterministic)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    if (a->timer_deadline) {
        its.it_value = timer_deadline_to_host(p, a->timer_deadline);
        its.it_interval.tv_nsec = 1000000;  /* repeat until consumed (timer.c: why) */
    }
    timer_settime(a->host_timer, TIMER_ABSTIME, &its, NULL);
}

static void timer_load(struct lapic *a, uint32_t count)
{
    a->timer_initial = count;
    a->timer_start = partition_clock_ns(a->v->partition);
    a->timer_deadline = count ? a->timer_start + ticks_to_ns(a, count) : 0;
    if (a->timer_deadline == 0 && count)
        a->timer_deadline = 1;
    host_timer_set(a);
}

static uint32_t timer_current(const struct lapic *a)
{
    if (!a->timer_initial || (!a->timer_deadline && !(a->lvt[0] & LVT_PERIODIC)))
        return 0;
    uint64_t elapsed = partition_clock_ns(a->v->partition) - a->timer_start;
    uint64_t ticks = (uint64_t)((unsigned __int128)elapsed * bus_hz(a) / 1000000000u / divisor(a));
    if (a->lvt[0] & LVT_PERIODIC)
        return a->timer_initial - (uint32_t)(ticks % a->timer_initial);
    return ticks >= a->timer_initial ? 0 : a->timer_initial - (uint32_t)ticks;
}

static void apic_timer_check(struct lapic *a)
{
    if (!a->timer_deadline)
        return;
    uint64_t now = partition_clock_ns(a->v->partition);
    if (now < a->timer_deadline)
        return;
    if (!(a->lvt[0] & LVT_MASKED))
        lapic_accept(a->v, (uint8_t)(a->lvt[0] & 0xff), 0);
    if (a->lvt[0] & LVT_PERIODIC) {
        /* The next period boundary after now (missed periods coalesce). */
        uint64_t period = ticks_to_ns(a, a->timer_initial);
        if (!period)
            period = 1;
        uint64_t periods = (now - a->timer_start) / period + 1;
        a->timer_deadline = a->timer_start + periods * period;
    } else {
        a->timer_deadline = 0;
    }
    host_timer_set(a);
}

/* ---- Registers -------------------------------------------------------------- */

static void send_ipi(struct lapic *a)
{
    uint32_t low = a->icr_low, shorthand = low & ICR_SHORTHAND;
    int to_self = shorthand == ICR_SELF || shorthand == ICR_ALL ||
                  (shorthand == 0 && (a->icr_high >> 24) == a->id);
    /* Fixed delivery to this CPU; INIT, SIPI and NMI have no other CPU to
     * reach yet (one vCPU per partition). */
    if ((low & ICR_DELIVERY) == 0 && to_self)
        lapic_accept(a->v, (uint8_t)(low & 0xff), 0);
}

static uint32_t read_register(struct lapic *a, uint32_t reg)
{
    if (reg >= REG_ISR && reg < REG_ISR + 0x80)
        return a->isr[(reg - REG_ISR) / 16];
    if (reg >= REG_TMR && reg < REG_TMR + 0x80)
        return __atomic_load_n(&a->tmr[(reg - REG_TMR) / 16], __ATOMIC_ACQUIRE);
    if (reg >= REG_IRR && reg < REG_IRR + 0x80)
        return __atomic_load_n(&a->irr[(reg - REG_IRR) / 16], __ATOMIC_ACQUIRE);
    if (reg >= REG_LVT_TIMER && reg <= REG_LVT_ERROR)
        return a->lvt[(reg - REG_LVT_TIMER) / 16];
    switch (reg) {
    case REG_ID:       return a->id << 24;
    case REG_VERSION:  return LAPIC_VERSION;
    case REG_TPR:      return a->tpr;
    case REG_PPR:      return ppr(a);
    case REG_LDR:      return a->ldr;
    case REG_DFR:      return a->dfr;
    case REG_SVR:      return a->svr;
    case REG_ESR:      return a->esr;
    case REG_ICR_LOW:  return a->icr_low & ~(1u << 12);   /* delivery status: idle */
    case REG_ICR_HIGH: return a->icr_high;
    case REG_TIMER_INITIAL: return a->timer_initial;
    case REG_TIMER_CURRENT: return timer_current(a);
    case REG_TIMER_DIVIDE:  return a->timer_divide;
    default:           return 0;
    }
}

static void write_register(struct lapic *a, uint32_t reg, uint32_t value)
{
    if (reg >= REG_LVT_TIMER && reg <= REG_LVT_ERROR) {
        unsigned i = (reg - REG_LVT_TIMER) / 16;
        /* While the APIC is software-disabled every LVT stays masked. */
        a->lvt[i] = (a->svr & SVR_ENABLED) ? value : value | LVT_MASKED;
        return;
    }
    switch (reg) {
    case REG_ID:       a->id = value >> 24; break;
    case REG_TPR:      a->tpr = value & 0xff; update_pending(a); break;
    case REG_EOI:      eoi(a); break;
    case REG_LDR:      a->ldr = value & 0xff000000u; break;
    case REG_DFR:      a->dfr = value | 0x0fffffffu; break;
    case REG_SVR:
        a->svr = value & 0x3ff;
        if (!(value & SVR_ENABLED))
            for (int i = 0; i < LVT_COUNT; i++)
                a->lvt[i] |= LVT_MASKED;
        update_pending(a);
        break;
    case REG_ESR:      a->esr = 0; break;     /* a write latches (no errors here) */
    case REG_ICR_HIGH: a->icr_high = value; break;
    case REG_ICR_LOW:  a->icr_low = value; send_ipi(a); break;
    case REG_TIMER_INITIAL: timer_load(a, value); break;
    case REG_TIMER_DIVIDE:  a->timer_divide = value & 0xb; break;
    default:           break;                 /* read-only or reserved */
    }
}

/* Accesses are 32 bits wide at 16-byte-aligned offsets (SDM 11.4.1);
 * anything else reads 0 and writes nothing. */
int lapic_access(struct hv_vcpu *v, uint64_t offset, int write, uint32_t *value)
{
    struct lapic *a = v->lapic;
    if (!a || offset % 16 || offset >= 0x1000) {
        if (!write)
            *value = 0;
        return 0;
    }
    apic_timer_check(a);            /* an expiry is visible in IRR and the count */
    if (write)
        write_register(a, (uint32_t)offset, *value);
    else
        *value = read_register(a, (uint32_t)offset);
    return 0;
}

/* ---- The run loop's side ---------------------------------------------------- */

int lapic_before_entry(struct hv_vcpu *v)
{
    struct lapic *a = v->lapic;
    if (!a)
        return 0;
    apic_timer_check(a);
    int vector = deliverable(a);
    if (vector < 0) {
        update_pending(a);
        return 0;
    }
    const struct engine_ops *e = v->partition->engine;
    if (!e->interruptible(v->engine_vcpu)) {
        e->request_window(v->engine_vcpu, 1);   /* come back when IF is 1 */
        return 0;
    }
    uint32_t bit = 1u << (vector % 32);
    __atomic_fetch_and(&a->irr[vector / 32], ~bit, __ATOMIC_ACQ_REL);
    a->isr[vector / 32] |= bit;
    TRACE(v, HV_TRACE_INJECT, (uint64_t)vector, NULL, 0);
    if (e->inject) {
        e->inject(v->engine_vcpu, (uint8_t)vector);
    } else if (idt_deliver(v, (uint8_t)vector, IDT_EXTERNAL, 0, 0)) {
        /* The IDT cannot take it now: leave it pending. */
        a->isr[vector / 32] &= ~bit;
        __atomic_fetch_or(&a->irr[vector / 32], bit, __ATOMIC_RELEASE);
        return 0;
    }
    update_pending(a);              /* in service now: PPR rose */
    return 1;
}

void lapic_poll_timer(struct hv_vcpu *v)
{
    if (v->lapic)
        apic_timer_check(v->lapic);
}

int lapic_has_interrupt(struct hv_vcpu *v)
{
    return v->lapic && deliverable(v->lapic) >= 0;
}

uint64_t lapic_deadline(struct hv_vcpu *v)
{
    return v->lapic ? v->lapic->timer_deadline : 0;
}

/* ---- Snapshots (csrc/platform_snapshot.c has the rest of the platform) ----- */

int hv_lapic_get_snapshot(struct hv_vcpu *v, struct hv_lapic_snapshot *out)
{
    const struct lapic *a = v->lapic;
    memset(out, 0, sizeof(*out));
    if (!a)
        return -ENOENT;
    _Static_assert(sizeof(out->lvt) == sizeof(a->lvt), "hv.h spells LVT_COUNT for cffi");
    *out = (struct hv_lapic_snapshot){
        .id = a->id, .tpr = a->tpr, .ldr = a->ldr, .dfr = a->dfr, .svr = a->svr,
        .esr = a->esr, .icr_low = a->icr_low, .icr_high = a->icr_high,
        .timer_initial = a->timer_initial, .timer_divide = a->timer_divide,
        .timer_start = a->timer_start, .timer_deadline = a->timer_deadline,
    };
    memcpy(out->lvt, a->lvt, sizeof(a->lvt));
    for (int i = 0; i < 8; i++) {
        out->irr[i] = __atomic_load_n(&a->irr[i], __ATOMIC_ACQUIRE);
        out->tmr[i] = __atomic_load_n(&a->tmr[i], __ATOMIC_ACQUIRE);
        out->isr[i] = a->isr[i];
    }
    return 0;
}

/* T:920 Before the vCPU's first run.  Only what write_register() and
 * lapic_accept() can leave is taken (vectors 0-15 are never pending or in
 * service); the timer's times are partition ns, and the restored clock
 * goes on from where it was saved (T:907), so they mean the same instants:
 * the host timer is aimed at the deadline again. */
int hv_lapic_set_snapshot(struct hv_vcpu *v, const struct hv_lapic_snapshot *in)
{
    struct lapic *a = v->lapic;
    if (!a)
        return -ENOENT;
    if (in->id > 0xff || in->tpr > 0xff || (in->ldr & 0x00ffffffu) || (in->dfr | 0x0fffffffu) != in->dfr ||
        in->svr > 0x3ff || in->esr || (in->timer_divide & ~0xbu) ||
        (in->irr[0] | in->tmr[0] | in->isr[0]) & 0xffffu ||
        (in->timer_deadline && !in->timer_initial))
        return -EINVAL;
    a->id = in->id;
    a->tpr = in->tpr;
    a->ldr = in->ldr;
    a->dfr = in->dfr;
    a->svr = in->svr;
    a->esr = in->esr;
    a->icr_low = in->icr_low;
    a->icr_high = in->icr_high;
    memcpy(a->lvt, in->lvt, sizeof(a->lvt));
    a->timer_initial = in->timer_initial;
    a->timer_divide = in->timer_divide;
    a->timer_start = in->timer_start;
    a->timer_deadline = in->timer_deadline;
    for (int i = 0; i < 8; i++) {
        __atomic_store_n(&a->irr[i], in->irr[i], __ATOMIC_RELEASE);
        __atomic_store_n(&a->tmr[i], in->tmr[i], __ATOMIC_RELEASE);
        a->isr[i] = in->isr[i];
    }
    host_timer_set(a);
    update_pending(a);
    return 0;
}
