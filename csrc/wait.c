/*
 * wait.c - a vCPU with nothing to do sleeps here.
 *
 * T:537 block and hlt (with interrupts on) put the vCPU in WAIT_EVENT; the
 * run loop then sleeps in event_wait() until an event is pending, the timer
 * passes, or a pause is asked for.  Raisers wake it through vcpu_wake().
 */
#include <pthread.h>
#include "core.h"

/* Wake the vCPU if it sleeps in block or hlt.  Any thread. */
void vcpu_wake(struct hv_vcpu *v)
{
    if (__atomic_load_n(&v->h.sched, __ATOMIC_ACQUIRE)) {
        sched_vcpu_wake(v);         /* blocked vCPUs sleep in the scheduler */
        return;
    }
    pthread_mutex_lock(&v->h.lock);
    pthread_cond_broadcast(&v->h.wake);
    pthread_mutex_unlock(&v->h.lock);
}

static uint64_t earliest(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* Deterministic SMP: can no other vCPU of v's partition run (each is down
 * or in block/hlt with nothing pending)? */
static int others_idle(const struct hv_vcpu *v)
{
    const struct hv_partition *p = v->partition;
    for (uint32_t i = 0; i < p->nvcpus; i++) {
        struct hv_vcpu *t = p->vcpus[i];
        if (!t || t == v || !t->g.up)
            continue;
        if (t->g.wait != WAIT_EVENT || event_any_pending(t) || lapic_has_interrupt(t))
            return 0;
    }
    return 1;
}

/* T:539 The one answer to "may a vCPU in block or hlt go on?", for the
 * thread-per-vCPU wait below and for the scheduler's workers alike: 0 if an
 * event or an APIC interrupt is pending; 1 if not, with *deadline set to
 * the partition-clock time that would change the answer (0 = none).  The
 * timers are checked first (they raise events); a deterministic partition
 * skips its virtual clock ahead to the deadline instead of sleeping. */
int vcpu_wait_check(struct hv_vcpu *v, uint64_t *deadline)
{
    for (;;) {
        timer_check(v);
        lapic_poll_timer(v);        /* the local APIC's timer, too (lapic.c) */
        uint64_t d = v->g.timer_deadline, apic = lapic_deadline(v);
        if (apic && (!d || apic < d))
            d = apic;
        *deadline = d;
        if (event_any_pending(v) || lapic_has_interrupt(v))
            return 0;
        if (!v->partition->deterministic)
            return 1;
        if (v->partition->nvcpus > 1) {
            /* Deterministic SMP: the clock moves while any vCPU can run;
             * once none can, it skips to the partition's next timer. */
            if (!others_idle(v))
                return 1;
            d = earliest(d, timer_others_earliest(v));
        }
        if (!d)
            return 1;
        /* Virtual time: an idle guest skips ahead to its deadline. */
        if (v->partition->g.instructions < d)
            v->partition->g.instructions = d;
    }
}

/* Deterministic SMP: a vCPU going down (vcpu_down) may leave none of its
 * partition's vCPUs able to run, and then nothing would move the clock
 * again: the others sleep on timers it would have to reach.  So the clock
 * skips to their next timer and raises what it passed, as the last vCPU
 * to block does above.  (Found by test_snapshot_smp's deterministic
 * restore, about one run in ten: a restore changes where slices end, and
 * smp-snap's last vCPU then went down while the others slept.) */
void vcpu_down_clock_skip(struct hv_vcpu *v)
{
    struct hv_partition *p = v->partition;
    if (!p->deterministic || p->nvcpus < 2 || !others_idle(v))
        return;
    uint64_t d = timer_others_earliest(v);
    if (d && p->g.instructions < d)
        p->g.instructions = d;
    timer_check(v);                 /* raises the others' timers it passed */
}

/* Sleep until something is pending, the timer passes, or a pause.
 * The final check runs under v->h.lock and a raiser's kick takes it too, so
 * a raise cannot slip between the check and the sleep.  The timers raise
 * (and so kick) themselves: vcpu_wait_check() runs with the lock dropped. */
int event_wait(struct hv_vcpu *v)
{
    for (;;) {
        uint64_t deadline;
        if (vcpu_wait_check(v, &deadline) == 0)
            return 0;
        pthread_mutex_lock(&v->h.lock);
        int result = event_any_pending(v) || lapic_has_interrupt(v) ? 0
                   : v->h.pause_requested ? -HV_EAGAIN : 1;
        if (result == 1) {
            if (deadline) {
                struct timespec until = timer_deadline_to_host(v->partition, deadline);
                pthread_cond_timedwait(&v->h.wake, &v->h.lock, &until);   /* CLOCK_MONOTONIC */
            } else {
                pthread_cond_wait(&v->h.wake, &v->h.lock);
            }
        }
        pthread_mutex_unlock(&v->h.lock);
        if (result != 1)
            return result;
    }
}
