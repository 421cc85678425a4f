/*
 * event.c - event delivery: pending bits, the timer, injection, wake-ups.
 *
 * T:530 Events are bits in a page the guest registered.  Whoever raises one
 * (a timer here, a device backend in the parent, later another partition)
 * sets the pending bit atomically and, if the guest has no upcall
 * outstanding, asks for the vector to be injected.  Injection itself happens
 * in exactly one place: event_before_entry(), which the run loop calls before
 * every guest entry.  Other threads never touch the engine; they set flags
 * and kick the vCPU's thread.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "core.h"

/* A real-time signal interrupts the vCPU's thread out of the engine; Python
 * leaves real-time signals alone. */
#define KICK_SIGNAL (SIGRTMIN + 4)

static __thread struct hv_vcpu *thread_vcpu;
static __thread volatile sig_atomic_t thread_kicked;

static void kick_handler(int sig)
{
    (void)sig;
    thread_kicked = 1;
    struct hv_vcpu *v = thread_vcpu;
    if (v && v->engine_vcpu)
        v->partition->engine->kick_from_signal(v->engine_vcpu);
}

static void install_kick_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler;   /* no SA_RESTART: KVM_RUN must return */
    sigemptyset(&sa.sa_mask);
    sigaction(KICK_SIGNAL, &sa, NULL);
}

/* Runs on the vCPU's own thread when it is created. */
void vcpu_thread_setup(struct hv_vcpu *v)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_kick_handler);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    v->tid = (pid_t)syscall(SYS_gettid);
    thread_vcpu = v;

    /* The timer signals this thread, so a guest spinning without exits is
     * still interrupted when its deadline passes. */
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = KICK_SIGNAL;
    sev._sigev_un._tid = v->tid;
    v->host_timer_ok = timer_create(CLOCK_MONOTONIC, &sev, &v->host_timer) == 0;
}

void vcpu_thread_teardown(struct hv_vcpu *v)
{
    if (v->host_timer_ok)
        timer_delete(v->host_timer);
    v->host_timer_ok = 0;
    if (thread_vcpu == v)
        thread_vcpu = NULL;
}

/* Was the last interruption of this thread hv's own kick (or timer)? */
int event_consume_kick(void)
{
    int kicked = thread_kicked;
    thread_kicked = 0;
    return kicked;
}

/* Wake the vCPU if it sleeps in block or hlt.  Any thread. */
static void vcpu_wake(struct hv_vcpu *v)
{
    pthread_mutex_lock(&v->lock);
    pthread_cond_broadcast(&v->wake);
    pthread_mutex_unlock(&v->lock);
}

/* Make the vCPU notice new work: wake it if it sleeps, interrupt it if it
 * runs guest code.  Any thread. */
void vcpu_kick(struct hv_vcpu *v)
{
    vcpu_wake(v);
    if (v->in_guest && v->tid && v->tid != (pid_t)syscall(SYS_gettid))
        syscall(SYS_tgkill, getpid(), v->tid, KICK_SIGNAL);
}

static struct hv_event_page *event_page(const struct hv_partition *p)
{
    uint64_t gpa = __atomic_load_n(&p->event_page_gpa, __ATOMIC_ACQUIRE);
    return gpa ? (struct hv_event_page *)(p->ram + gpa) : NULL;
}

int event_raise(struct hv_partition *p, uint32_t event)
{
    if (event >= HV_EVENTS_MAX)
        return -HV_EINVAL;
    struct hv_event_page *page = event_page(p);
    if (!page)
        return -HV_EPERM;
    uint64_t bit = 1ull << (event % 64);
    unsigned word = event / 64;
    __atomic_fetch_or(&page->pending[word], bit, __ATOMIC_SEQ_CST);
    int masked = !!(__atomic_load_n(&page->masked[word], __ATOMIC_SEQ_CST) & bit);
    /* The vCPU may be going away on its own thread: hold it while we kick. */
    pthread_mutex_lock(&p->vcpu_lock);
    struct hv_vcpu *v = p->vcpu;
    if (v) {
        /* Only the 0 -> 1 edge of upcall_pending injects: one upcall at a time. */
        if (!masked && __atomic_exchange_n(&page->upcall_pending, 1, __ATOMIC_SEQ_CST) == 0) {
            __atomic_store_n(&v->inject_pending, 1, __ATOMIC_SEQ_CST);
            vcpu_kick(v);
        } else {
            vcpu_wake(v);   /* block waits for any pending bit, masked ones too */
        }
    }
    pthread_mutex_unlock(&p->vcpu_lock);
    return 0;
}

int event_any_pending(const struct hv_partition *p)
{
    const struct hv_event_page *page = event_page(p);
    if (!page)
        return 0;
    for (int i = 0; i < HV_EVENT_WORDS; i++)
        if (__atomic_load_n(&page->pending[i], __ATOMIC_SEQ_CST))
            return 1;
    return 0;
}

/* A partition-clock deadline as an absolute CLOCK_MONOTONIC time. */
static struct timespec deadline_to_host(const struct hv_partition *p, uint64_t deadline)
{
    uint64_t ns = (uint64_t)p->epoch.tv_nsec + deadline;
    return (struct timespec){ p->epoch.tv_sec + (time_t)(ns / 1000000000ull),
                              (long)(ns % 1000000000ull) };
}

int event_timer_arm(struct hv_vcpu *v, uint64_t deadline)
{
    if (deadline > (1ull << 62))
        deadline = 1ull << 62;      /* ~146 years: keeps the timespec math in range */
    v->timer_deadline = deadline;
    if (!v->host_timer_ok || v->partition->deterministic)
        return 0;               /* checked at every entry and wait anyway */
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    if (deadline) {
        its.it_value = deadline_to_host(v->partition, deadline);
        /* Repeat every millisecond until the deadline is consumed: a kick
         * can land just before an engine enters (Unicorn clears its stop
         * request on entry), and a guest spinning without exits must not
         * miss its timer for good. */
        its.it_interval.tv_nsec = 1000000;
    }
    timer_settime(v->host_timer, TIMER_ABSTIME, &its, NULL);
    return 0;
}

static void timer_check(struct hv_vcpu *v)
{
    if (v->timer_deadline && partition_clock_ns(v->partition) >= v->timer_deadline) {
        event_timer_arm(v, 0);          /* consumed: stop the repeats */
        event_raise(v->partition, HV_EVENT_TIMER);
    }
}

void event_before_entry(struct hv_vcpu *v)
{
    const struct engine_ops *e = v->partition->engine;
    timer_check(v);
    if (!__atomic_load_n(&v->inject_pending, __ATOMIC_SEQ_CST))
        return;
    if (e->interruptible(v->engine_vcpu)) {
        __atomic_store_n(&v->inject_pending, 0, __ATOMIC_SEQ_CST);
        e->request_window(v->engine_vcpu, 0);
        uint8_t vector = (uint8_t)v->partition->event_vector;
        TRACE(v, HV_TRACE_INJECT, vector, NULL, 0);
        if (e->inject)
            e->inject(v->engine_vcpu, vector);
        else if (idt_deliver(v, vector, 0))
            v->inject_pending = 1;          /* IDT unusable now; retried next entry */
    } else {
        e->request_window(v->engine_vcpu, 1);   /* exit when IF becomes 1 */
    }
}

/* Sleep until something is pending, the timer passes, or a pause.
 * The checks run under v->lock and a raiser's kick takes it too, so a raise
 * cannot slip between the check and the sleep.  timer_check() raises (and
 * so kicks) itself: it runs with the lock dropped. */
int event_wait(struct hv_vcpu *v)
{
    for (;;) {
        timer_check(v);
        pthread_mutex_lock(&v->lock);
        int result = event_any_pending(v->partition) ? 0
                   : v->pause_requested ? -HV_EAGAIN : 1;
        if (result == 1 && v->partition->deterministic && v->timer_deadline) {
            /* Virtual time: an idle guest skips ahead to its deadline. */
            if (v->instructions < v->timer_deadline)
                v->instructions = v->timer_deadline;
            pthread_mutex_unlock(&v->lock);
            continue;
        }
        if (result == 1) {
            if (v->timer_deadline) {
                struct timespec until = deadline_to_host(v->partition, v->timer_deadline);
                pthread_cond_timedwait(&v->wake, &v->lock, &until);   /* CLOCK_MONOTONIC */
            } else {
                pthread_cond_wait(&v->wake, &v->lock);
            }
        }
        pthread_mutex_unlock(&v->lock);
        if (result != 1)
            return result;
    }
}
