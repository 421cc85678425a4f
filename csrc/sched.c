/*
 * sched.c - which vCPU runs next: credit scheduling, as Xen's credit2 does it.
 *
 * T:580 The scheduler's policy, apart from its threads (sched_worker.c).
 * Every vCPU is an entity in one of six states (docs/scheduler.md draws
 * them): DOWN, RUNNABLE (on its home worker's runqueue), RUNNING, BLOCKED
 * (block or hlt, off every runqueue), PARENT (its exit record waits for the
 * parent partition; it holds no worker) and PAUSED.
 *
 * Credit is debited from timestamps, never ticks: when a worker stops an
 * entity, it loses (time run) * 256 / weight credit, so a weight-512 entity
 * pays half as much per ns as a weight-256 one and runs twice as long for
 * the same credit.  A worker runs the entity with the most credit; once the
 * best has none left, everyone gets SCHED_CREDIT_INIT more (a "reset"; the
 * total is capped there, so a long sleeper cannot bank credit).  The slice
 * is the time until the runner's credit falls to the next one's, clamped
 * to 0.5..10 ms.  A cap is a budget of cap% of each 10 ms period.
 */
#include <stddef.h>
#include <string.h>
#include "sched_policy.h"

static void rq_insert(struct sched *s, struct sched_entity *e, uint64_t now)
{
    struct sched_worker_state *w = &s->w[e->home];
    e->next = NULL;
    e->prev = w->tail;
    if (w->tail)
        w->tail->next = e;
    else
        w->head = e;
    w->tail = e;
    e->state = SCHED_RUNNABLE;
    e->runnable_since = now;
}

static void rq_remove(struct sched *s, struct sched_entity *e)
{
    struct sched_worker_state *w = &s->w[e->home];
    if (e->prev)
        e->prev->next = e->next;
    else
        w->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        w->tail = e->prev;
    e->next = e->prev = NULL;
}

void sched_init(struct sched *s, int nworkers)
{
    if (nworkers < 1)
        nworkers = 1;
    if (nworkers > SCHED_WORKERS_MAX)
        nworkers = SCHED_WORKERS_MAX;
    s->nworkers = nworkers;
    for (int i = 0; i < nworkers; i++)
        s->w[i] = (struct sched_worker_state){0};
    s->all = NULL;
    s->resets = 0;
    s->parent_holds_group = 0;
}

/* T:582 A new vCPU joins the least-loaded worker, which stays its home:
 * a KVM vCPU's first KVM_RUN on another host thread costs ~20 us and more. */
void sched_add(struct sched *s, struct sched_entity *e, uint32_t group, uint32_t weight,
               uint32_t cap, int migrate_cheap)
{
    int best = 0;
    for (int i = 1; i < s->nworkers; i++)
        if (s->w[i].load < s->w[best].load)
            best = i;
    /* The vCPUs of one TCG partition share a home (they run interleaved). */
    for (struct sched_entity *o = s->all; group && o; o = o->all_next)
        if (o->group == group) {
            best = o->home;
            break;
        }
    *e = (struct sched_entity){ .owner = e->owner, .group = group,
                                .weight = weight ? weight : SCHED_WEIGHT_DEFAULT,
                                .cap = cap > 100 ? 100 : cap, .home = best, .worker = -1,
                                .credit = SCHED_CREDIT_INIT, .migrate_cheap = migrate_cheap };
    s->w[best].load++;
    e->all_next = s->all;
    s->all = e;
}

void sched_forget(struct sched *s, struct sched_entity *e)
{
    for (struct sched_entity **pp = &s->all; *pp; pp = &(*pp)->all_next)
        if (*pp == e) {
            *pp = e->all_next;
            s->w[e->home].load--;
            return;
        }
}

/* Is another member of e's group running (or, deterministic, waiting for
 * the parent)? */
static int group_busy(const struct sched *s, const struct sched_entity *e)
{
    if (!e->group)
        return 0;
    for (int i = 0; i < s->nworkers; i++) {
        const struct sched_entity *c = s->w[i].current;
        if (c && c != e && c->group == e->group)
            return 1;
    }
    for (const struct sched_entity *o = s->parent_holds_group ? s->all : NULL; o; o = o->all_next)
        if (o != e && o->group == e->group && o->state == SCHED_PARENT)
            return 1;
    return 0;
}

static uint64_t cap_budget(const struct sched_entity *e)
{
    return SCHED_CAP_PERIOD_NS * e->cap / 100;
}

/* Refill a capped entity's budget once its period is over. */
static void cap_refill(struct sched_entity *e, uint64_t now)
{
    if (e->cap && now - e->period_start >= SCHED_CAP_PERIOD_NS) {
        /* Periods stay on their grid, so a late look does not stretch one,
         * and a slice that overran (the host was late to stop it) is paid
         * for out of the next periods' budgets. */
        uint64_t periods = (now - e->period_start) / SCHED_CAP_PERIOD_NS;
        uint64_t refill = periods * cap_budget(e);
        e->period_start += periods * SCHED_CAP_PERIOD_NS;
        e->budget_used = e->budget_used > refill ? e->budget_used - refill : 0;
    }
}

static int eligible(const struct sched *s, struct sched_entity *e, uint64_t now)
{
    cap_refill(e, now);
    if (e->cap && e->budget_used >= cap_budget(e))
        return 0;
    return !group_busy(s, e);
}

/* Credit as the pick sees it: a vCPU that yielded counts a little less
 * until it next runs, so it goes after its peers - but only by a bounded
 * bias, so a yielder is never starved by vCPUs that do not yield. */
static int64_t pick_credit(const struct sched_entity *e)
{
    return e->yielded ? e->credit - SCHED_YIELD_BIAS_NS : e->credit;
}

/* The best eligible entity on worker q's runqueue (skipping `not`). */
static struct sched_entity *rq_best(const struct sched *s, int q, uint64_t now,
                                    const struct sched_entity *not)
{
    struct sched_entity *best = NULL;
    for (struct sched_entity *e = s->w[q].head; e; e = e->next) {
        if (e == not || !eligible(s, e, now))
            continue;
        if (!best || pick_credit(e) > pick_credit(best))
            best = e;
    }
    return best;
}

static void credit_reset(struct sched *s)
{
    s->resets++;
    for (struct sched_entity *e = s->all; e; e = e->all_next) {
        e->credit += SCHED_CREDIT_INIT;
        if (e->credit > SCHED_CREDIT_INIT)
            e->credit = SCHED_CREDIT_INIT;
    }
}

static void rehome(struct sched *s, struct sched_entity *e, int w)
{
    s->w[e->home].load--;
    e->home = w;
    s->w[w].load++;
}

/* T:584 A worker picks: the most credit on its own runqueue; if that is
 * empty, an entity that has waited on another worker's runqueue longer
 * than the migration resistance (at once if moving is cheap: TCG). */
struct sched_entity *sched_pick(struct sched *s, int w, uint64_t now, uint64_t *slice)
{
    struct sched_entity *e = rq_best(s, w, now, NULL);
    if (!e) {
        for (int i = 1; i < s->nworkers && !e; i++) {
            int q = (w + i) % s->nworkers;
            struct sched_entity *c = rq_best(s, q, now, NULL);
            if (c && (c->migrate_cheap || now - c->runnable_since >= SCHED_MIGRATE_RESIST_NS))
                e = c;
        }
        if (!e)
            return NULL;
        rq_remove(s, e);
        if (!e->migrate_cheap)
            e->migrations++;
        rehome(s, e, w);
        /* A TCG partition's vCPUs share one runqueue: the rest follow. */
        for (struct sched_entity *o = s->all; e->group && o; o = o->all_next) {
            if (o == e || o->group != e->group)
                continue;
            if (o->state == SCHED_RUNNABLE) {
                uint64_t since = o->runnable_since;
                rq_remove(s, o);
                rehome(s, o, w);
                rq_insert(s, o, since);
            } else {
                rehome(s, o, w);
            }
        }
    } else {
        rq_remove(s, e);
    }
    if (e->credit <= 0)
        credit_reset(s);
    e->state = SCHED_RUNNING;
    e->worker = w;
    e->run_start = now;
    e->yielded = 0;
    e->dispatches++;
    s->w[w].current = e;

    uint64_t len = SCHED_SLICE_MAX_NS;
    struct sched_entity *next = rq_best(s, w, now, e);
    if (next && e->credit > pick_credit(next))
        len = (uint64_t)(e->credit - pick_credit(next)) * e->weight / SCHED_WEIGHT_DEFAULT;
    else if (next)
        len = SCHED_SLICE_MIN_NS;
    if (len < SCHED_SLICE_MIN_NS)
        len = SCHED_SLICE_MIN_NS;
    if (len > SCHED_SLICE_MAX_NS)
        len = SCHED_SLICE_MAX_NS;
    if (e->cap) {
        uint64_t left = cap_budget(e) - e->budget_used;
        if (len > left)
            len = left;
    }
    /* A capped entity waiting for its next period gets it on time. */
    for (struct sched_entity *o = s->w[w].head; o; o = o->next) {
        if (!o->cap || o->budget_used < cap_budget(o))
            continue;
        uint64_t refill = o->period_start + SCHED_CAP_PERIOD_NS;
        if (refill > now && refill - now < len)
            len = refill - now;
    }
    *slice = len;
    return e;
}

/* T:586 The worker stops the entity: debit what it ran (weighted), then
 * put it where the stop reason says.  A block that raced with a wake-up
 * (the event came while it was still running) does not block. */
void sched_stop(struct sched *s, struct sched_entity *e, enum sched_stop why,
                uint64_t wake_at, uint64_t now)
{
    uint64_t ran = now > e->run_start ? now - e->run_start : 0;
    e->credit -= (int64_t)(ran * SCHED_WEIGHT_DEFAULT / e->weight);
    e->runtime_ns += ran;
    if (e->cap)
        e->budget_used += ran;
    s->w[e->worker].current = NULL;
    e->worker = -1;

    if (e->down_pending) {
        e->state = SCHED_DOWN;
        return;
    }
    switch (why) {
    case SCHED_STOP_DOWN:
        /* The guest's vcpu_down: DOWN until a vcpu_up starts it again. */
        e->state = SCHED_DOWN;
        e->wake_pending = e->pause_pending = e->paused_blocked = e->yielded = 0;
        return;
    case SCHED_STOP_BLOCK:
        e->blocks++;
        if (e->wake_pending)
            break;
        e->state = SCHED_BLOCKED;
        e->wake_at = wake_at;
        break;
    case SCHED_STOP_PARENT:
        e->parent_waits++;
        e->state = SCHED_PARENT;
        return;                 /* a pause waits for the parent's return */
    case SCHED_STOP_YIELD:
        e->yielded = 1;
        break;
    case SCHED_STOP_PREEMPT:
        break;
    }
    e->wake_pending = 0;
    if (e->pause_pending) {
        e->pause_pending = 0;
        e->paused_blocked = e->state == SCHED_BLOCKED;
        e->state = SCHED_PAUSED;
        return;
    }
    if (e->state != SCHED_BLOCKED)
        rq_insert(s, e, now);
}

/* Where a newly runnable entity should be noticed: its home worker if idle,
 * another idle worker, or the worker running the entity with the least
 * credit below it that has run past the rate limit. */
static int notify_for(const struct sched *s, const struct sched_entity *e, uint64_t now)
{
    if (!s->w[e->home].current)
        return e->home;
    for (int i = 0; i < s->nworkers; i++)
        if (!s->w[i].current)
            return i;
    int victim = -1;
    int64_t lowest = e->credit;
    for (int i = 0; i < s->nworkers; i++) {
        const struct sched_entity *c = s->w[i].current;
        uint64_t ran = now > c->run_start ? now - c->run_start : 0;
        /* Its credit as if it stopped now. */
        int64_t credit = c->credit - (int64_t)(ran * SCHED_WEIGHT_DEFAULT / c->weight);
        if (credit < lowest && ran >= SCHED_RATELIMIT_NS) {
            lowest = credit;
            victim = i;
        }
    }
    return victim;
}

static int make_runnable(struct sched *s, struct sched_entity *e, uint64_t now)
{
    if (e->pause_pending) {
        e->pause_pending = 0;
        e->paused_blocked = 0;
        e->state = SCHED_PAUSED;
        return -1;
    }
    rq_insert(s, e, now);
    return notify_for(s, e, now);
}

int sched_start(struct sched *s, struct sched_entity *e, uint64_t now)
{
    if (e->state != SCHED_DOWN || e->down_pending)
        return -1;
    e->period_start = now;
    return make_runnable(s, e, now);
}

void sched_start_paused(struct sched *s, struct sched_entity *e, uint64_t now)
{
    (void)s;
    if (e->state != SCHED_DOWN || e->down_pending)
        return;
    e->period_start = now;
    e->state = SCHED_PAUSED;
    e->paused_blocked = 0;
}

/* T:588 An event for a blocked vCPU: it goes back on its runqueue and a
 * worker hears of it.  Credit is what makes wake-ups fast: a vCPU that
 * slept has not spent any, so it outranks the CPU-bound ones. */
int sched_wake(struct sched *s, struct sched_entity *e, uint64_t now)
{
    switch (e->state) {
    case SCHED_BLOCKED:
        e->wake_at = 0;
        e->wake_pending = 0;
        return make_runnable(s, e, now);
    case SCHED_PAUSED:
        if (e->paused_blocked)
            e->paused_blocked = 0;      /* resumes runnable */
        return -1;
    case SCHED_RUNNING:
    case SCHED_RUNNABLE:
    case SCHED_PARENT:
        e->wake_pending = 1;            /* its next block returns at once */
        return -1;
    case SCHED_DOWN:
        break;
    }
    return -1;
}

int sched_parent_done(struct sched *s, struct sched_entity *e, uint64_t now)
{
    if (e->state != SCHED_PARENT)
        return -1;
    if (e->down_pending) {
        e->state = SCHED_DOWN;
        return -1;
    }
    return make_runnable(s, e, now);
}

int sched_pause(struct sched *s, struct sched_entity *e)
{
    switch (e->state) {
    case SCHED_RUNNABLE:
        rq_remove(s, e);
        e->state = SCHED_PAUSED;
        e->paused_blocked = 0;
        return 1;
    case SCHED_BLOCKED:
        e->state = SCHED_PAUSED;
        e->paused_blocked = 1;
        return 1;
    case SCHED_RUNNING:
    case SCHED_PARENT:
        e->pause_pending = 1;
        return 0;
    case SCHED_PAUSED:
    case SCHED_DOWN:
        break;
    }
    return 1;
}

int sched_resume(struct sched *s, struct sched_entity *e, uint64_t now)
{
    e->pause_pending = 0;
    if (e->state != SCHED_PAUSED)
        return -1;
    /* Back to BLOCKED, unless its deadline passed while it was paused:
     * the workers aimed their timers while it was not BLOCKED, so no
     * expiry scan would come for it (a guest paused over its timer slept
     * for ever).  A deadline still ahead re-aims its home worker. */
    if (e->paused_blocked && !e->wake_pending && !(e->wake_at && e->wake_at <= now)) {
        e->state = SCHED_BLOCKED;
        return e->wake_at ? e->home : -1;
    }
    e->paused_blocked = 0;
    e->wake_pending = 0;
    rq_insert(s, e, now);
    return notify_for(s, e, now);
}

int sched_take_down(struct sched *s, struct sched_entity *e)
{
    if (e->state == SCHED_RUNNING) {
        e->down_pending = 1;
        return 0;
    }
    if (e->state == SCHED_RUNNABLE)
        rq_remove(s, e);
    e->state = SCHED_DOWN;
    e->down_pending = 1;        /* no start, no return from the parent */
    return 1;
}

static void note_deadline(uint64_t *next, uint64_t at)
{
    if (!*next || at < *next)
        *next = at;
}

uint64_t sched_expire(struct sched *s, uint64_t now, int *notify, int max_notify, int *nnotify,
                      uint64_t *own)
{
    uint64_t next = 0;
    *nnotify = 0;
    if (own)
        memset(own, 0, sizeof(*own) * (size_t)s->nworkers);
    for (struct sched_entity *e = s->all; e; e = e->all_next) {
        if (e->state == SCHED_RUNNABLE && e->cap) {
            /* A capped entity out of budget is runnable but not eligible:
             * the worker idles until its next period, so that refill is a
             * deadline too (else an idle worker would sleep past it). */
            cap_refill(e, now);
            uint64_t refill = e->period_start + SCHED_CAP_PERIOD_NS;
            if (e->budget_used >= cap_budget(e)) {
                note_deadline(&next, refill);
                if (own)
                    note_deadline(&own[e->home], refill);
            }
            continue;
        }
        if (e->state != SCHED_BLOCKED || !e->wake_at)
            continue;
        if (e->wake_at <= now) {
            int w = sched_wake(s, e, now);
            if (w >= 0 && *nnotify < max_notify)
                notify[(*nnotify)++] = w;
        } else {
            note_deadline(&next, e->wake_at);
            if (own)
                note_deadline(&own[e->home], e->wake_at);
        }
    }
    return next;
}

int sched_check(const struct sched *s)
{
    int on_queue = 0, runnable = 0;
    for (int i = 0; i < s->nworkers; i++) {
        const struct sched_worker_state *w = &s->w[i];
        const struct sched_entity *prev = NULL;
        for (const struct sched_entity *e = w->head; e; prev = e, e = e->next) {
            if (e->state != SCHED_RUNNABLE)
                return 1;           /* a non-runnable entity on a runqueue */
            if (e->home != i || e->prev != prev)
                return 2;           /* on the wrong queue, or broken links */
            on_queue++;
        }
        if (w->tail != prev)
            return 3;
        if (w->current && (w->current->state != SCHED_RUNNING || w->current->worker != i))
            return 4;               /* a worker's current is not running there */
    }
    for (const struct sched_entity *e = s->all; e; e = e->all_next) {
        if (e->state == SCHED_RUNNABLE)
            runnable++;
        if (e->state == SCHED_RUNNING && s->w[e->worker].current != e)
            return 5;               /* running, but no worker has it */
        if (e->state != SCHED_RUNNING && e->worker != -1)
            return 6;
    }
    return on_queue == runnable ? 0 : 7;   /* 7: a runnable entity on no queue */
}
