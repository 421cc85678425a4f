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
    pthread_mutex_lock(&v->h.lock);
    pthread_cond_broadcast(&v->h.wake);
    pthread_mutex_unlock(&v->h.lock);
}

/* Sleep until something is pending, the timer passes, or a pause.
 * The checks run under v->h.lock and a raiser's kick takes it too, so a raise
 * cannot slip between the check and the sleep.  timer_check() raises (and
 * so kicks) itself: it runs with the lock dropped. */
int event_wait(struct hv_vcpu *v)
{
    for (;;) {
        timer_check(v);
        lapic_poll_timer(v);        /* the local APIC's timer, too (lapic.c) */
        uint64_t deadline = v->g.timer_deadline, apic = lapic_deadline(v);
        if (apic && (!deadline || apic < deadline))
            deadline = apic;
        pthread_mutex_lock(&v->h.lock);
        int result = event_any_pending(v->partition) || lapic_has_interrupt(v) ? 0
                   : v->h.pause_requested ? -HV_EAGAIN : 1;
        if (result == 1 && v->partition->deterministic && deadline) {
            /* Virtual time: an idle guest skips ahead to its deadline. */
            if (v->g.instructions < deadline)
                v->g.instructions = deadline;
            pthread_mutex_unlock(&v->h.lock);
            continue;
        }
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
