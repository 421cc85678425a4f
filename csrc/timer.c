/*
 * timer.c - the vCPU's one-shot timer.
 *
 * T:536 The guest sets a deadline on its partition clock (set_timer); when
 * the clock passes it, the timer event is raised.  The deadline is checked
 * before every guest entry and in every wait, so the host timer only has to
 * get a spinning guest out of the engine in time: it signals the vCPU's
 * thread with the kick signal.  In deterministic mode the clock is the
 * guest's instruction count and the engine itself stops at the deadline.
 */
#include <signal.h>
#include <string.h>
#include <time.h>
#include "core.h"

/* The host timer signals the vCPU's thread (v->h.tid, set by the caller). */
void timer_host_create(struct hv_vcpu *v)
{
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = kick_signal();
    sev._sigev_un._tid = v->h.tid;
    v->h.host_timer_ok = timer_create(CLOCK_MONOTONIC, &sev, &v->h.host_timer) == 0;
}

void timer_host_delete(struct hv_vcpu *v)
{
    if (v->h.host_timer_ok)
        timer_delete(v->h.host_timer);
    v->h.host_timer_ok = 0;
}

/* A partition-clock deadline as an absolute CLOCK_MONOTONIC time. */
struct timespec timer_deadline_to_host(const struct hv_partition *p, uint64_t deadline)
{
    uint64_t ns = (uint64_t)p->epoch.tv_nsec + deadline;
    return (struct timespec){ p->epoch.tv_sec + (time_t)(ns / 1000000000ull),
                              (long)(ns % 1000000000ull) };
}

/* Program the one-shot host timer for partition-clock time `at`. */
static void host_timer_set(struct hv_vcpu *v, uint64_t at)
{
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    its.it_value = timer_deadline_to_host(v->partition, at);
    timer_settime(v->h.host_timer, TIMER_ABSTIME, &its, NULL);
    v->h.host_timer_at = at;
}

/* T:538 Raise the timer event if the deadline has passed; otherwise make
 * sure the host timer fires no later than the deadline.  timer_settime()
 * costs tens of microseconds on a machine whose kernel is itself a guest,
 * so the host timer is touched only when it would fire too late: a
 * cancelled or later deadline leaves it alone (firing early costs one
 * harmless kick, after which this re-aims it), and a deadline already past
 * needs no host timer at all (timer_due makes the run loop look before the
 * guest runs again).  A guest re-arming at a high rate then costs a clock
 * read per call, not a system call. */
static void aim_host_timer(struct hv_vcpu *v, uint64_t deadline, uint64_t now)
{
    if (!v->h.host_timer_ok || v->partition->deterministic)
        return;                     /* the engine counts to the deadline itself */
    if (v->h.host_timer_at && v->h.host_timer_at <= now)
        v->h.host_timer_at = 0;     /* one-shot: it has fired */
    if (!v->h.host_timer_at || deadline < v->h.host_timer_at)
        host_timer_set(v, deadline);
}

static uint64_t earliest(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* T:541 Deterministic SMP: every vCPU of the partition counts into the
 * one clock, and they run one at a time on one worker, so a blocked
 * vCPU's timer must fire at its exact instruction while another runs: the
 * running vCPU stops there too, and its timer check fires the others'.
 * The earliest timer of the partition's other vCPUs (0 = none). */
uint64_t timer_others_earliest(const struct hv_vcpu *v)
{
    const struct hv_partition *p = v->partition;
    uint64_t d = 0;
    for (uint32_t i = 0; i < p->nvcpus; i++) {
        const struct hv_vcpu *t = p->vcpus[i];
        if (t && t != v && t->g.up)
            d = earliest(d, t->g.timer_deadline);
    }
    return d;
}

/* Deterministic mode: where the engine must stop counting -- the guest's
 * timer (any vCPU's of an SMP partition) or the end of its slice,
 * whichever comes first. */
void timer_insn_stop_update(struct hv_vcpu *v)
{
    uint64_t d = v->g.timer_deadline, slice = v->h.insn_slice_end;
    if (v->partition->deterministic && v->partition->nvcpus > 1)
        d = earliest(d, timer_others_earliest(v));
    v->h.insn_stop = earliest(d, slice);
}

/* The other vCPUs' timers that the one clock has passed (deterministic
 * SMP: only the worker running v touches them). */
static void others_check(struct hv_vcpu *v, uint64_t now)
{
    struct hv_partition *p = v->partition;
    for (uint32_t i = 0; i < p->nvcpus; i++) {
        struct hv_vcpu *t = p->vcpus[i];
        if (t && t != v && t->g.up && t->g.timer_deadline && now >= t->g.timer_deadline) {
            t->g.timer_deadline = 0;
            event_raise_vcpu(p, t->id, HV_EVENT_TIMER);     /* wakes it on the scheduler */
        }
    }
}

void timer_check(struct hv_vcpu *v)
{
    uint64_t deadline = v->g.timer_deadline;
    v->h.timer_due = 0;
    if (deadline) {
        uint64_t now = partition_clock_ns(v->partition);
        if (now >= deadline) {
            v->g.timer_deadline = 0;
            event_raise_vcpu(v->partition, v->id, HV_EVENT_TIMER);   /* its own timer: on itself */
        } else {
            aim_host_timer(v, deadline, now);
        }
    }
    if (v->partition->deterministic && v->partition->nvcpus > 1)
        others_check(v, partition_clock_ns(v->partition));
    timer_insn_stop_update(v);
}

/* set_timer: the event itself is raised by timer_check(), before the next
 * entry or in a wait, never inside the hypercall. */
int event_timer_arm(struct hv_vcpu *v, uint64_t deadline)
{
    if (deadline > (1ull << 62))
        deadline = 1ull << 62;      /* ~146 years: keeps the timespec math in range */
    v->g.timer_deadline = deadline;
    timer_insn_stop_update(v);      /* an inline call on TCG: the engine reads it next */
    if (!deadline)
        return 0;
    uint64_t now = partition_clock_ns(v->partition);
    if (now >= deadline)
        v->h.timer_due = 1;
    else if (v->h.sched)
        sched_vcpu_timer_changed(v);    /* its worker's timer covers it */
    else
        aim_host_timer(v, deadline, now);
    return 0;
}
