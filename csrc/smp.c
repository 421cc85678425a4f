/*
 * smp.c - partitions with several vCPUs: bring them up and down, send an
 * event to one (an IPI), flush their TLBs.
 *
 * T:750 A partition has nvcpus vCPUs, all created by the parent before the
 * guest starts; vCPU 0 boots and the others are down (g.up = 0) until a
 * running vCPU calls vcpu_up with a 64-bit context.  Up and down are guest
 * state (struct vcpu_guest_state), the scheduler's DOWN is where a down
 * vCPU sits: vcpu_up loads the context and starts it there, vcpu_down asks
 * the vCPU to stop before its next instruction (down_requested), and its
 * worker parks it back in DOWN (sched_worker.c) before g.up goes to 0, so
 * an up that sees g.up == 0 finds the vCPU on no worker.
 *
 * Every state change here happens under the partition's vcpu_lock, after
 * every check has passed: an error changes nothing.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "core.h"

static int vcpus_up(const struct hv_partition *p)
{
    int n = 0;
    for (uint32_t i = 0; i < p->nvcpus; i++) {
        const struct hv_vcpu *t = p->vcpus[i];
        n += t && t->g.up && !t->g.down_requested;
    }
    return n;
}

/* T:751 vcpu_up: the context is read (and checked) before anything moves. */
int64_t hc_vcpu_up(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t id = arg[0], context = arg[1];
    struct hv_partition *p = v->partition;
    (void)exit;
    if (id >= p->nvcpus)
        return -HV_EINVAL;
    struct hv_vcpu_context ctx;
    if (hv_copy_from_guest(v, &ctx, context, sizeof(ctx)))
        return -HV_EFAULT;
    if (ctx.cr3 % HV_PAGE_SIZE || ctx.cr3 >= p->mem_size)
        return -HV_EINVAL;
    pthread_mutex_lock(&p->vcpu_lock);
    struct hv_vcpu *t = p->vcpus[id];
    int64_t r = 0;
    if (!t)
        r = -HV_EINVAL;             /* the parent did not create it */
    else if (__atomic_load_n(&t->g.up, __ATOMIC_ACQUIRE))
        r = -HV_EBUSY;              /* up, or not yet parked after a down */
    else if (vcpu_set_long_entry(t, &ctx))
        r = -HV_EINVAL;             /* page 0 is not hv's: a partition set up by hand */
    if (r == 0) {
        /* A fresh start: nothing of its last life is owed or pending --
         * but an event raised while it was down is in its block, and if
         * that raise set upcall_pending its upcall is owed now: no later
         * raise would inject one (only the 0 -> 1 edge does), and the
         * guest would never hear of that event or any after it. */
        t->g.wait = WAIT_NONE;
        t->g.mc = (struct multicall_state){0};
        t->g.timer_deadline = 0;
        t->g.inject_pending = event_upcall_outstanding(t);
        t->g.down_requested = 0;
        t->g.tlb_flush_pending = 0;
        t->h.pause_requested = 0;
        t->h.yielded = 0;
        __atomic_store_n(&t->g.up, 1, __ATOMIC_RELEASE);
        if (t->h.sched)
            sched_vcpu_start(t, p->paused);
        else
            vcpu_wake(t);           /* a thread that runs every vCPU in turn */
    }
    pthread_mutex_unlock(&p->vcpu_lock);
    return r;
}

/* T:752 vcpu_down: the target stops at its next look at the run loop,
 * which a kick brings about at once (vcpu.c returns RUN_DOWN). */
int64_t hc_vcpu_down(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t id = arg[0];
    struct hv_partition *p = v->partition;
    (void)exit;
    if (id >= p->nvcpus)
        return -HV_EINVAL;
    pthread_mutex_lock(&p->vcpu_lock);
    struct hv_vcpu *t = p->vcpus[id];
    int64_t r = 0;
    if (!t || !t->g.up || t->g.down_requested)
        r = -HV_EPERM;
    else if (vcpus_up(p) <= 1)
        r = -HV_EBUSY;              /* the last one: shutdown says what the guest means */
    else {
        __atomic_store_n(&t->g.down_requested, 1, __ATOMIC_SEQ_CST);
        if (t != v)
            vcpu_kick(t);
    }
    pthread_mutex_unlock(&p->vcpu_lock);
    return r;
}

int64_t hc_vcpu_id(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    (void)arg; (void)exit;
    return v->id;
}

int64_t hc_vcpu_count(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    (void)arg; (void)exit;
    return v->partition->nvcpus;
}

int64_t hc_vcpu_send_event(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t id = arg[0], event = arg[1];
    (void)exit;
    if (id >= v->partition->nvcpus || event >= HV_EVENTS_MAX)
        return -HV_EINVAL;
    return event_raise_vcpu(v->partition, (uint32_t)id, (uint32_t)event);
}

int64_t hc_event_bind_vcpu(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t event = arg[0], id = arg[1];
    (void)exit;
    if (event >= HV_EVENTS_MAX || event == HV_EVENT_TIMER || id >= v->partition->nvcpus)
        return -HV_EINVAL;
    __atomic_store_n(&v->partition->g.event_vcpu[event], (uint8_t)id, __ATOMIC_RELAXED);
    return 0;
}

/* T:753 TLB shootdown.  Each target gets tlb_flush_pending, which its run
 * loop honours right after it sets in_guest and before the engine runs
 * (smp_before_run).  Both sides store, then load the other's flag, each
 * with a full barrier: a target that was not in the guest when we looked
 * is sure to see the flag before it enters, so only targets that were
 * running are waited for -- kicked out of the guest, they flush on the way
 * back in.  The caller's own TLB is flushed here and now.  TCG vCPUs of
 * one partition never run at once, so a TCG caller never waits. */
int64_t hc_tlb_flush(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t mask = arg[0];
    struct hv_partition *p = v->partition;
    (void)exit;                     /* arg[1], the address: every engine flushes all */
    if (mask >> HV_VCPUS_MAX)
        return -HV_EINVAL;
    uint32_t waiting = 0;
    pthread_mutex_lock(&p->vcpu_lock);
    for (uint32_t i = 0; i < p->nvcpus; i++) {
        struct hv_vcpu *t = p->vcpus[i];
        if (!(mask >> i & 1) || !t)
            continue;
        if (t == v) {
            p->engine->flush_tlb(v->engine_vcpu);
            continue;
        }
        __atomic_store_n(&t->g.tlb_flush_pending, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&t->h.in_guest, __ATOMIC_SEQ_CST)) {
            waiting |= 1u << i;
            syscall(SYS_tgkill, getpid(), t->h.tid, kick_signal());
        }
    }
    pthread_mutex_unlock(&p->vcpu_lock);
    /* vCPUs are destroyed only once none runs, so the pointers stay valid
     * while this (running) vCPU waits. */
    for (unsigned spins = 0; waiting; spins++) {
        for (uint32_t i = 0; i < p->nvcpus; i++) {
            struct hv_vcpu *t = p->vcpus[i];
            if (!(waiting >> i & 1))
                continue;
            if (!__atomic_load_n(&t->g.tlb_flush_pending, __ATOMIC_SEQ_CST) ||
                !__atomic_load_n(&t->h.in_guest, __ATOMIC_SEQ_CST))
                waiting &= ~(1u << i);
            else if (spins % 1024 == 1023)      /* a kick can land just before an entry */
                syscall(SYS_tgkill, getpid(), t->h.tid, kick_signal());
        }
        if (waiting)
            sched_yield();
    }
    return 0;
}

void smp_before_run(struct hv_vcpu *v)
{
    if (__atomic_load_n(&v->g.tlb_flush_pending, __ATOMIC_SEQ_CST)) {
        v->partition->engine->flush_tlb(v->engine_vcpu);
        __atomic_store_n(&v->g.tlb_flush_pending, 0, __ATOMIC_SEQ_CST);
    }
}

/* T:754 Pause and resume a scheduled partition: every vCPU, and a vCPU
 * brought up meanwhile starts paused (p->paused, read by vcpu_up under
 * vcpu_lock).  The lock is not held while waiting for a vCPU to stop: it
 * may be in a hypercall that needs it. */
int hv_partition_pause(struct hv_partition *p)
{
    pthread_mutex_lock(&p->vcpu_lock);
    p->paused = 1;
    pthread_mutex_unlock(&p->vcpu_lock);
    for (uint32_t i = 0; i < p->nvcpus; i++) {
        struct hv_vcpu *t = p->vcpus[i];
        if (t && t->h.sched)
            hv_sched_pause(t);
    }
    return 0;
}

int hv_partition_resume(struct hv_partition *p)
{
    pthread_mutex_lock(&p->vcpu_lock);
    p->paused = 0;
    pthread_mutex_unlock(&p->vcpu_lock);
    for (uint32_t i = 0; i < p->nvcpus; i++) {
        struct hv_vcpu *t = p->vcpus[i];
        if (t && t->h.sched)
            hv_sched_resume(t);
    }
    return 0;
}
