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

int event_timer_arm(struct hv_vcpu *v, uint64_t deadline)
{
    if (deadline > (1ull << 62))
        deadline = 1ull << 62;      /* ~146 years: keeps the timespec math in range */
    v->g.timer_deadline = deadline;
    if (!v->h.host_timer_ok || v->partition->deterministic)
        return 0;               /* checked at every entry and wait anyway */
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    if (deadline) {
        its.it_value = timer_deadline_to_host(v->partition, deadline);
        /* Repeat every millisecond until the deadline is consumed: a kick
         * can land just before an engine enters (Unicorn clears its stop
         * request on entry), and a guest spinning without exits must not
         * miss its timer for good. */
        its.it_interval.tv_nsec = 1000000;
    }
    timer_settime(v->h.host_timer, TIMER_ABSTIME, &its, NULL);
    return 0;
}

/* Raise the timer event if the deadline has passed. */
void timer_check(struct hv_vcpu *v)
{
    if (v->g.timer_deadline && partition_clock_ns(v->partition) >= v->g.timer_deadline) {
        event_timer_arm(v, 0);          /* consumed: stop the repeats */
        event_raise(v->partition, HV_EVENT_TIMER);
    }
}
