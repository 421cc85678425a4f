/*
 * sched_worker.c - N host threads run M vCPUs.
 *
 * T:592 A worker is a host thread that loops: wake blocked vCPUs whose
 * deadline passed, pick the next vCPU (sched.c), run it through the same
 * run loop a lone vCPU thread uses (vcpu.c) until its slice ends, it
 * blocks, yields or needs the parent, and put it back where it belongs.
 * A per-worker host timer ends the slice with the kick signal, so a guest
 * spinning without exits is preempted too.  Nothing here holds the policy
 * lock while guest code runs.
 *
 * A vCPU that needs the parent holds no worker: its exit record goes onto
 * one queue that the parent serves from a few threads
 * (hv_sched_next_exit), and hv_sched_continue puts it back on a runqueue.
 *
 * A deterministic scheduler (hv_sched_create_deterministic) has one worker
 * whose clock is the guest instructions it has run: slices end at an exact
 * instruction (the engine counts to h.insn_slice_end), never by a host
 * timer, and a wake-up never preempts, so what runs when replays exactly.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "core.h"

struct worker {
    struct hv_sched *hs;
    int index;
    pthread_t thread;
    int started;
    pid_t tid;
    pthread_cond_t wake;       /* an idle worker sleeps on it */
    int idle;
    int notified;              /* notify() came while idle: look before sleeping */
    timer_t timer;             /* ends the slice: the kick signal */
    int timer_ok;
    uint64_t armed_at;         /* when the timer fires, 0 = disarmed (its thread only) */
    int untimed;               /* runs a vCPU with no slice timer: it was alone (lock) */
    struct hv_vcpu *running;
    int handed_to_parent;      /* its last vCPU went to the parent's queue */
    /* Idle (T:599): how long it polls before sleeping and how early it
     * wakes for a deadline of its own, both adapted; what that cost. */
    uint64_t poll_ns, advance_ns;
    uint64_t spin_ns, poll_hits;
    uint64_t recent_spin_ns, recent_idle_ns;    /* SPIN_SHARE's window */
    int after_handoff;         /* idle after its HANDOFF_SPIN_NS look found nothing */
};

/* How long a worker looks for the vCPU it handed to the parent, and a
 * parent's exit server for the next record, before sleeping. */
#define HANDOFF_SPIN_NS 30000ull

struct hv_sched {
    struct sched s;            /* the policy, and the lock everything here takes */
    struct worker w[SCHED_WORKERS_MAX];
    int nworkers;
    int stopping;
    pthread_cond_t stopped;    /* a vCPU left a worker (pause, detach wait for it) */
    pthread_cond_t exit_ready; /* the parent's queue has a record */
    struct hv_vcpu *exitq_head, *exitq_tail;
    int deterministic;         /* one worker, slices in guest instructions */
    int server_spinning;       /* an exit server looks for the next record (T:597) */
    uint64_t vclock;           /* deterministic: instructions run, the policy's clock */
};

static __thread struct worker *this_worker;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static struct timespec ns_to_timespec(uint64_t ns)
{
    return (struct timespec){ (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
}

/* The policy's clock (under hs->s.lock): host time, or a deterministic
 * scheduler's guest instructions. */
static uint64_t sched_now(const struct hv_sched *hs)
{
    return hs->deterministic ? hs->vclock : now_ns();
}

/* A partition-clock deadline as host CLOCK_MONOTONIC ns (0 stays 0). */
static uint64_t deadline_host_ns(const struct hv_partition *p, uint64_t deadline)
{
    if (!deadline || p->deterministic)
        return 0;               /* virtual time never waits for the host clock */
    struct timespec t = timer_deadline_to_host(p, deadline);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static uint64_t vcpu_deadline_host(struct hv_vcpu *v)
{
    uint64_t d = v->g.timer_deadline, apic = lapic_deadline(v);
    if (apic && (!d || apic < d))
        d = apic;
    return deadline_host_ns(v->partition, d);
}

/* Tell worker i about new work: wake it if idle, else kick what it runs
 * (the woken vCPU has more credit).  Under hs->s.lock. */
static void notify(struct hv_sched *hs, int i)
{
    struct worker *w = &hs->w[i];
    if (w->idle) {
        __atomic_store_n(&w->notified, 1, __ATOMIC_RELEASE);   /* a polling worker looks */
        pthread_cond_signal(&w->wake);
    }
    else if (!hs->deterministic && w->tid && w->running && w->running->h.in_guest)
        syscall(SYS_tgkill, getpid(), w->tid, kick_signal());
}

static void arm(struct worker *w, uint64_t at)
{
    if (!w->timer_ok || at == w->armed_at)
        return;
    w->armed_at = at;
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    if (at) {
        its.it_value = ns_to_timespec(at);
        /* Repeat until disarmed: a kick can land just before the engine
         * enters (Unicorn clears its stop request on entry). */
        its.it_interval.tv_nsec = 1000000;
    }
    timer_settime(w->timer, TIMER_ABSTIME, &its, NULL);
}

/* T:595 A worker that dispatches a vCPU with nothing else on its queue, no
 * cap and no deadline to watch arms no slice timer: timer_settime costs tens
 * of microseconds here (the host kernel is itself a guest), twice per
 * dispatch, and a wake-up would pay it before the guest runs.  Whoever
 * later queues work for that worker asks its vCPU to stop instead (below):
 * the flag is checked by the run loop, also right after it says it is in
 * the guest, so the request and the kick cannot both miss.  Under the lock. */
static void resched_untimed(struct hv_sched *hs)
{
    for (int i = 0; i < hs->nworkers; i++) {
        struct worker *w = &hs->w[i];
        if (!w->untimed || !w->running || !hs->s.w[i].head)
            continue;
        w->untimed = 0;
        __atomic_store_n(&w->running->h.resched, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&w->running->h.in_guest, __ATOMIC_SEQ_CST))
            syscall(SYS_tgkill, getpid(), w->tid, kick_signal());
    }
}

static uint64_t earliest(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* T:599 An idle worker.  A wake-up through the host (a futex, a timer) costs
 * tens of microseconds here at the median and hundreds in the tail -- the
 * host kernel is a guest itself -- so, as KVM does for a halted vCPU, a
 * worker that expects work soon waits for it awake:
 *
 *  - Halt polling (KVM's halt_poll_ns): before sleeping it watches its
 *    runqueue for poll_ns.  poll_ns grows (doubling from POLL_START_NS up to
 *    POLL_MAX_NS) after an event woke it within POLL_MAX_NS of going idle,
 *    and halves after a wake-up polling could not have caught: a worker
 *    that is woken rarely polls not at all.
 *  - Timer advance (KVM's lapic_timer_advance_ns): for a deadline of a vCPU
 *    whose home it is, it sleeps until advance_ns before and spins the rest,
 *    so the host's wake-up lateness is spent before the deadline, not
 *    after.  advance_ns follows the lateness it sees (up quickly, down
 *    slowly), within ADVANCE_MIN_NS..ADVANCE_MAX_NS.
 *
 * Each spin is bounded (the deadline, or poll_ns) and counted (spin_ns), and
 * a worker spins at most 1/SPIN_SHARE of its recent idle time (many guests
 * with frequent timers would otherwise keep it spinning from one deadline
 * to the next).  Neither runs on a deterministic scheduler (virtual time).
 * A vCPU that spins on its own (fairness, caps) never leaves a worker idle,
 * so neither costs those anything. */
#define POLL_START_NS   10000ull
#define POLL_MAX_NS    200000ull
#define ADVANCE_MIN_NS  10000ull
#define ADVANCE_MAX_NS 150000ull
#define SPIN_SHARE          4
#define SPIN_WINDOW_NS 100000000ull     /* 100 ms: older idle time counts half */

/* Spin with the lock dropped until w has work or was notified (work may
 * wait on another worker's queue for it to take), the scheduler stops, or
 * `until`; 1 if any of those came. */
static int spin_for_work(struct hv_sched *hs, struct worker *w, uint64_t until)
{
    uint64_t start = now_ns(), t = start;
    int work = 0;
    pthread_mutex_unlock(&hs->s.lock);
    while (!(work = __atomic_load_n(&hs->s.w[w->index].head, __ATOMIC_ACQUIRE) != NULL ||
                    __atomic_load_n(&w->notified, __ATOMIC_ACQUIRE) ||
                    __atomic_load_n(&hs->stopping, __ATOMIC_ACQUIRE)) && t < until) {
        __builtin_ia32_pause();
        t = now_ns();
    }
    pthread_mutex_lock(&hs->s.lock);
    w->spin_ns += t - start;
    w->recent_spin_ns += t - start;
    return work;
}

/* Sleep on w->wake until `until` (0: no deadline); 1 if it timed out.  A
 * notify() that came while w polled counts as a wake-up. */
static int sleep_until(struct hv_sched *hs, struct worker *w, uint64_t until)
{
    if (w->notified || hs->stopping)
        return 0;
    if (!until) {
        pthread_cond_wait(&w->wake, &hs->s.lock);
        return 0;
    }
    struct timespec ts = ns_to_timespec(until);
    return pthread_cond_timedwait(&w->wake, &hs->s.lock, &ts) == ETIMEDOUT;
}

/* Nothing to run: wait for work or `deadline` (the earliest of the
 * scheduler's; `own` is the earliest of the vCPUs whose home w is). */
static void idle_wait(struct hv_sched *hs, struct worker *w, uint64_t deadline, uint64_t own)
{
    w->idle = 1;
    w->notified = 0;
    if (hs->deterministic) {
        sleep_until(hs, w, deadline);
        w->idle = 0;
        return;
    }
    uint64_t start = now_ns();
    int may_spin = w->recent_spin_ns * SPIN_SHARE <= w->recent_idle_ns;
    /* Its vCPU is with the parent and the hand-over look (T:597) passed:
     * the parent is slow this time, and polling on would take the CPU the
     * parent's thread needs.  Such a wake-up teaches poll_ns nothing. */
    int handoff = w->after_handoff;
    w->after_handoff = 0;
    if (w->poll_ns && may_spin && !handoff) {
        uint64_t until = start + w->poll_ns;
        if (spin_for_work(hs, w, deadline && deadline < until ? deadline : until)) {
            w->poll_hits++;
            w->recent_idle_ns += now_ns() - start;
            w->idle = 0;
            return;
        }
    }
    uint64_t target = deadline;
    int advanced = may_spin && own && own == deadline;
    if (advanced)
        target = own > start + w->advance_ns ? own - w->advance_ns : start;
    int timed_out = (target && target <= now_ns()) || sleep_until(hs, w, target);
    uint64_t woke = now_ns();
    if (timed_out && advanced) {
        uint64_t late = woke > target ? woke - target : 0, want = late + late / 4 + ADVANCE_MIN_NS;
        if (want > w->advance_ns)
            w->advance_ns += (want - w->advance_ns + 1) / 2;
        else
            w->advance_ns -= w->advance_ns / 32;
        if (w->advance_ns < ADVANCE_MIN_NS)
            w->advance_ns = ADVANCE_MIN_NS;
        if (w->advance_ns > ADVANCE_MAX_NS)
            w->advance_ns = ADVANCE_MAX_NS;
        if (woke < own)
            spin_for_work(hs, w, own);
    } else if (!timed_out && !handoff) {
        /* Woken by an event: would polling have caught it? */
        if (woke - start <= POLL_MAX_NS)
            w->poll_ns = w->poll_ns ? w->poll_ns * 2 : POLL_START_NS;
        else
            w->poll_ns /= 2;
        if (w->poll_ns > POLL_MAX_NS)
            w->poll_ns = POLL_MAX_NS;
        if (w->poll_ns < POLL_START_NS)
            w->poll_ns = 0;
    }
    w->recent_idle_ns += now_ns() - start;
    if (w->recent_idle_ns > SPIN_WINDOW_NS) {
        w->recent_idle_ns /= 2;
        w->recent_spin_ns /= 2;
    }
    w->idle = 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct hv_sched *hs = w->hs;
    /* Signals are the parent's business (Python handles them on its main
     * thread); a worker takes only the kick. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    kick_thread_init();
    /* Timed waits end on time, not up to the default 50 us late: the
     * worker's deadlines are guests' timers. */
    prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul);
    this_worker = w;
    w->tid = (pid_t)syscall(SYS_gettid);
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = kick_signal();
    sev._sigev_un._tid = w->tid;
    w->timer_ok = timer_create(CLOCK_MONOTONIC, &sev, &w->timer) == 0;

    pthread_mutex_lock(&hs->s.lock);
    while (!hs->stopping) {
        uint64_t now = sched_now(hs), slice;
        int woken[SCHED_WORKERS_MAX], n;
        uint64_t own_deadline[SCHED_WORKERS_MAX];
        uint64_t next_deadline = sched_expire(&hs->s, now, woken, SCHED_WORKERS_MAX, &n,
                                              own_deadline);
        for (int i = 0; i < n; i++)
            if (woken[i] != w->index)
                notify(hs, woken[i]);
        resched_untimed(hs);
        struct sched_entity *e = sched_pick(&hs->s, w->index, now, &slice);
        if (!e && w->handed_to_parent && !hs->deterministic) {
            /* T:597 The vCPU this worker just handed to the parent usually
             * comes back within microseconds (a hypercall served in
             * Python): look for it a little before sleeping, so its return
             * costs no futex wake-up (one costs tens of µs here). */
            w->handed_to_parent = 0;
            w->after_handoff = 1;
            pthread_mutex_unlock(&hs->s.lock);
            uint64_t until = sched_now(hs) + HANDOFF_SPIN_NS;
            while (!__atomic_load_n(&hs->s.w[w->index].head, __ATOMIC_ACQUIRE) &&
                   !__atomic_load_n(&hs->stopping, __ATOMIC_ACQUIRE) && sched_now(hs) < until)
                __builtin_ia32_pause();
            pthread_mutex_lock(&hs->s.lock);
            continue;
        }
        w->handed_to_parent = 0;
        if (!e) {
            arm(w, 0);              /* an idle worker takes no signals */
            idle_wait(hs, w, next_deadline, own_deadline[w->index]);
            continue;
        }
        /* T:594 Dispatch: kicks to this thread now reach this vCPU. */
        struct hv_vcpu *v = e->owner;
        w->running = v;
        w->untimed = !hs->deterministic && !hs->s.w[w->index].head && !e->cap && !next_deadline;
        pthread_mutex_unlock(&hs->s.lock);

        kick_set_current(v);
        uint64_t insns = v->partition->g.instructions;
        if (hs->deterministic) {
            v->h.insn_slice_end = insns + slice;    /* one instruction, one ns */
        } else {
            uint64_t guest_at = vcpu_deadline_host(v);
            if (guest_at <= now)
                guest_at = 0;       /* passed: the run loop raises it before entry */
            if (!w->untimed)
                arm(w, earliest(now + slice, earliest(guest_at, next_deadline)));
            else if (guest_at)
                arm(w, guest_at);
        }
        struct hv_exit *exit = v->h.sched_exit;
        exit->kind = 0;
        exit->vcpu = v->id;
        exit->data_len = 0;
        v->h.exit = exit;
        enum vcpu_run_end end = vcpu_run_loop(v, exit, 1);
        if (hs->deterministic) {
            v->h.insn_slice_end = 0;
            timer_insn_stop_update(v);
        }
        kick_set_current(NULL);
        event_consume_kick();
        uint64_t wake_at = end == RUN_BLOCKED ? vcpu_deadline_host(v) : 0;

        pthread_mutex_lock(&hs->s.lock);
        if (hs->deterministic)
            hs->vclock += v->partition->g.instructions - insns;
        w->running = NULL;
        w->untimed = 0;
        v->h.resched = 0;
        static const enum sched_stop why[] = {
            [RUN_TO_PARENT] = SCHED_STOP_PARENT, [RUN_BLOCKED] = SCHED_STOP_BLOCK,
            [RUN_KICKED] = SCHED_STOP_PREEMPT, [RUN_YIELDED] = SCHED_STOP_YIELD,
            [RUN_DOWN] = SCHED_STOP_DOWN,
        };
        sched_stop(&hs->s, e, why[end], wake_at, sched_now(hs));
        if (end == RUN_DOWN)        /* parked in DOWN: now vcpu_up may start it (smp.c) */
            __atomic_store_n(&v->g.up, 0, __ATOMIC_RELEASE);
        if (e->state == SCHED_PARENT) {
            /* T:596 The exit record waits for the parent; no worker waits. */
            v->h.exitq_next = NULL;
            if (hs->exitq_tail)
                hs->exitq_tail->h.exitq_next = v;
            else
                hs->exitq_head = v;
            hs->exitq_tail = v;
            v->h.queued = 1;
            w->handed_to_parent = 1;
            /* A server that spins for it takes it; the flag drops before
             * that server takes the lock to sleep, so no record is missed. */
            if (!__atomic_load_n(&hs->server_spinning, __ATOMIC_ACQUIRE))
                pthread_cond_signal(&hs->exit_ready);
        }
        pthread_cond_broadcast(&hs->stopped);
    }
    pthread_mutex_unlock(&hs->s.lock);
    if (w->timer_ok)
        timer_delete(w->timer);
    return NULL;
}

static int sched_create(int nworkers, int deterministic, struct hv_sched **out)
{
    if (nworkers <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nworkers = cpus > 0 ? (int)cpus : 1;
    }
    if (nworkers > SCHED_WORKERS_MAX)
        return -EINVAL;
    struct hv_sched *hs = calloc(1, sizeof(*hs));
    if (!hs)
        return -ENOMEM;
    pthread_mutex_init(&hs->s.lock, NULL);
    sched_init(&hs->s, nworkers);
    hs->nworkers = nworkers;
    hs->deterministic = deterministic;
    hs->s.parent_holds_group = deterministic;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&hs->stopped, &attr);
    pthread_cond_init(&hs->exit_ready, &attr);
    for (int i = 0; i < nworkers; i++) {
        hs->w[i].hs = hs;
        hs->w[i].index = i;
        pthread_cond_init(&hs->w[i].wake, &attr);
    }
    pthread_condattr_destroy(&attr);
    for (int i = 0; i < nworkers; i++) {
        if (pthread_create(&hs->w[i].thread, NULL, worker_main, &hs->w[i])) {
            hv_sched_destroy(hs);
            return -EAGAIN;
        }
        hs->w[i].started = 1;
    }
    *out = hs;
    return 0;
}

int hv_sched_create(int nworkers, struct hv_sched **out)
{
    return sched_create(nworkers, 0, out);
}

int hv_sched_create_deterministic(struct hv_sched **out)
{
    return sched_create(1, 1, out);
}

/* Every vCPU must be detached first. */
void hv_sched_destroy(struct hv_sched *hs)
{
    pthread_mutex_lock(&hs->s.lock);
    hs->stopping = 1;
    for (int i = 0; i < hs->nworkers; i++)
        pthread_cond_signal(&hs->w[i].wake);
    pthread_cond_broadcast(&hs->exit_ready);
    pthread_mutex_unlock(&hs->s.lock);
    for (int i = 0; i < hs->nworkers; i++)
        if (hs->w[i].started)
            pthread_join(hs->w[i].thread, NULL);
    for (int i = 0; i < hs->nworkers; i++)
        pthread_cond_destroy(&hs->w[i].wake);
    pthread_cond_destroy(&hs->stopped);
    pthread_cond_destroy(&hs->exit_ready);
    pthread_mutex_destroy(&hs->s.lock);
    free(hs);
}

int hv_sched_workers(const struct hv_sched *hs) { return hs->nworkers; }

/* T:583 The vCPU joins the scheduler DOWN; hv_sched_start()
 * makes it runnable.  The vCPUs of one TCG partition form a group: Unicorn
 * has no parallel mode, so they must never run at once. */
int hv_sched_attach(struct hv_sched *hs, struct hv_vcpu *v, uint32_t weight, uint32_t cap)
{
    if (v->h.sched)
        return -EBUSY;
    if (v->g.wait != WAIT_NONE && v->g.wait != WAIT_EVENT)
        return -EBUSY;
    if (weight > 65535 || cap > 100)
        return -EINVAL;
    if (hs->deterministic != v->partition->deterministic)
        return -EINVAL;             /* virtual time and host time do not mix on a worker */
    v->h.sched_exit = calloc(1, sizeof(*v->h.sched_exit));
    if (!v->h.sched_exit)
        return -ENOMEM;
    /* Its worker's timer stands in for the vCPU's own host timer, which
     * would signal the thread that created it. */
    timer_host_delete(v);
    kick_thread_release(v);
    int tcg = v->partition->engine == &engine_tcg_ops;
    pthread_mutex_lock(&hs->s.lock);
    v->h.se.owner = v;
    sched_add(&hs->s, &v->h.se, tcg ? v->partition->id : 0, weight, cap, tcg);
    v->h.sched = hs;
    pthread_mutex_unlock(&hs->s.lock);
    return 0;
}

int hv_sched_start(struct hv_vcpu *v)
{
    struct hv_sched *hs = v->h.sched;
    if (!hs)
        return -EINVAL;
    pthread_mutex_lock(&hs->s.lock);
    int err = v->h.se.state == SCHED_DOWN ? 0 : -EBUSY;
    if (!err) {
        int w = sched_start(&hs->s, &v->h.se, sched_now(hs));
        if (w >= 0)
            notify(hs, w);
        resched_untimed(hs);
    }
    pthread_mutex_unlock(&hs->s.lock);
    return err;
}

/* vcpu_up (smp.c, under the partition's vcpu_lock): v is parked DOWN. */
void sched_vcpu_start(struct hv_vcpu *v, int paused)
{
    struct hv_sched *hs = v->h.sched;
    pthread_mutex_lock(&hs->s.lock);
    if (paused) {
        sched_start_paused(&hs->s, &v->h.se, sched_now(hs));
    } else {
        int w = sched_start(&hs->s, &v->h.se, sched_now(hs));
        if (w >= 0)
            notify(hs, w);
        resched_untimed(hs);
    }
    pthread_mutex_unlock(&hs->s.lock);
}

struct hv_vcpu *hv_sched_next_exit(struct hv_sched *hs, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    uint64_t end = (uint64_t)until.tv_sec * 1000000000ull + (uint64_t)until.tv_nsec
                 + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
    until = ns_to_timespec(end);
    /* The next exit is often near (HANDOFF_SPIN_NS).  One server looks for
     * it at a time: on two host CPUs a second spinner takes the CPU the
     * server handling the last record, or the worker, needs. */
    if (!hs->deterministic && !__atomic_exchange_n(&hs->server_spinning, 1, __ATOMIC_ACQ_REL)) {
        uint64_t spin_end = sched_now(hs) + HANDOFF_SPIN_NS;
        while (!__atomic_load_n(&hs->exitq_head, __ATOMIC_ACQUIRE) &&
               !__atomic_load_n(&hs->stopping, __ATOMIC_ACQUIRE) && sched_now(hs) < spin_end)
            __builtin_ia32_pause();
        __atomic_store_n(&hs->server_spinning, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_lock(&hs->s.lock);
    while (!hs->exitq_head && !hs->stopping)
        if (pthread_cond_timedwait(&hs->exit_ready, &hs->s.lock, &until) == ETIMEDOUT)
            break;
    struct hv_vcpu *v = hs->exitq_head;
    if (v) {
        hs->exitq_head = v->h.exitq_next;
        if (!hs->exitq_head)
            hs->exitq_tail = NULL;
        v->h.queued = 0;
    }
    pthread_mutex_unlock(&hs->s.lock);
    return v;
}

struct hv_exit *hv_vcpu_exit_record(struct hv_vcpu *v)
{
    return v->h.sched_exit;
}

int hv_sched_continue(struct hv_vcpu *v)
{
    struct hv_sched *hs = v->h.sched;
    if (!hs)
        return -EINVAL;
    if (v->g.wait != WAIT_NONE && v->g.wait != WAIT_EVENT)
        return -EBUSY;              /* hv_vcpu_complete() first */
    pthread_mutex_lock(&hs->s.lock);
    int err = v->h.se.state == SCHED_PARENT && !v->h.queued ? 0 : -EINVAL;
    if (!err) {
        int w = sched_parent_done(&hs->s, &v->h.se, sched_now(hs));
        if (w >= 0)
            notify(hs, w);
        resched_untimed(hs);
    }
    pthread_mutex_unlock(&hs->s.lock);
    return err;
}

/* Kick v off its worker (under the lock) so a pending pause or take-down
 * is applied when it stops. */
static void kick_running(struct hv_vcpu *v)
{
    if (v->h.se.state == SCHED_RUNNING && v->h.in_guest)
        syscall(SYS_tgkill, getpid(), v->h.tid, kick_signal());
}

int hv_sched_pause(struct hv_vcpu *v)
{
    struct hv_sched *hs = v->h.sched;
    if (!hs)
        return -EINVAL;
    pthread_mutex_lock(&hs->s.lock);
    if (!sched_pause(&hs->s, &v->h.se)) {
        while (v->h.se.state == SCHED_RUNNING) {
            kick_running(v);
            struct timespec until = ns_to_timespec(now_ns() + 1000000);   /* re-kick each ms */
            pthread_cond_timedwait(&hs->stopped, &hs->s.lock, &until);
        }
    }
    pthread_mutex_unlock(&hs->s.lock);
    return 0;
}

int hv_sched_resume(struct hv_vcpu *v)
{
    struct hv_sched *hs = v->h.sched;
    if (!hs)
        return -EINVAL;
    pthread_mutex_lock(&hs->s.lock);
    int w = sched_resume(&hs->s, &v->h.se, sched_now(hs));
    if (w >= 0)
        notify(hs, w);
    resched_untimed(hs);
    pthread_mutex_unlock(&hs->s.lock);
    return 0;
}

/* Take v out of the scheduler; returns once no worker holds it.  Its exit
 * record, if queued, is withdrawn.  v runs on no thread afterwards. */
void hv_sched_detach(struct hv_vcpu *v)
{
    struct hv_sched *hs = v->h.sched;
    if (!hs)
        return;
    pthread_mutex_lock(&hs->s.lock);
    if (!sched_take_down(&hs->s, &v->h.se)) {
        while (v->h.se.state != SCHED_DOWN) {
            kick_running(v);
            struct timespec until = ns_to_timespec(now_ns() + 1000000);
            pthread_cond_timedwait(&hs->stopped, &hs->s.lock, &until);
        }
    }
    if (v->h.queued) {
        struct hv_vcpu **pp = &hs->exitq_head, *prev = NULL;
        while (*pp != v) {
            prev = *pp;
            pp = &(*pp)->h.exitq_next;
        }
        *pp = v->h.exitq_next;
        if (hs->exitq_tail == v)
            hs->exitq_tail = prev;
        v->h.queued = 0;
    }
    sched_forget(&hs->s, &v->h.se);
    v->h.sched = NULL;
    pthread_mutex_unlock(&hs->s.lock);
    free(v->h.sched_exit);
    v->h.sched_exit = NULL;
    v->h.exit = NULL;
}

int hv_sched_vcpu_info(struct hv_vcpu *v, struct hv_sched_info *out)
{
    struct hv_sched *hs = v->h.sched;
    if (!hs)
        return -EINVAL;
    pthread_mutex_lock(&hs->s.lock);
    const struct sched_entity *e = &v->h.se;
    /* A vCPU running alone may not stop for a long time (T:595): count
     * the run in progress too. */
    uint64_t now = sched_now(hs), ran = 0;
    if (e->state == SCHED_RUNNING && now > e->run_start)
        ran = now - e->run_start;
    *out = (struct hv_sched_info){
        .state = e->state, .home = e->home, .worker = e->worker, .credit = e->credit,
        .runtime_ns = e->runtime_ns + ran, .dispatches = e->dispatches,
        .migrations = e->migrations, .blocks = e->blocks, .parent_waits = e->parent_waits };
    pthread_mutex_unlock(&hs->s.lock);
    return 0;
}

int hv_sched_set_share(struct hv_vcpu *v, uint32_t weight, uint32_t cap)
{
    struct hv_sched *hs = v->h.sched;
    if (!hs)
        return -EINVAL;
    if (weight == 0 || weight > 65535 || cap > 100)
        return -EINVAL;
    pthread_mutex_lock(&hs->s.lock);
    v->h.se.weight = weight;
    v->h.se.cap = cap;
    pthread_mutex_unlock(&hs->s.lock);
    return 0;
}

/* T:598 An event for a scheduled vCPU (event_raise, a device, a timer):
 * if it was blocked it becomes runnable, and the worker sched_wake names
 * (idle, or running something with less credit) hears of it. */
void sched_vcpu_wake(struct hv_vcpu *v)
{
    struct hv_sched *hs = v->h.sched;
    if (!hs)
        return;
    pthread_mutex_lock(&hs->s.lock);
    int w = sched_wake(&hs->s, &v->h.se, sched_now(hs));
    if (w >= 0)
        notify(hs, w);
    resched_untimed(hs);
    pthread_mutex_unlock(&hs->s.lock);
}

/* The guest moved its timer while running: cover the new deadline with
 * this worker's timer (the run loop checks it at the next stop). */
void sched_vcpu_timer_changed(struct hv_vcpu *v)
{
    struct worker *w = this_worker;
    if (!w || w->running != v)
        return;                 /* not running: the deadline is read at its next stop */
    uint64_t at = vcpu_deadline_host(v);
    if (at && (!w->armed_at || w->armed_at <= now_ns() || at < w->armed_at))
        arm(w, at);             /* else the slice ends first anyway */
}
