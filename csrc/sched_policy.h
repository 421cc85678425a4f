/*
 * sched_policy.h - the scheduler's policy (sched.c) and its workers (sched_worker.c).
 *
 * The policy is plain bookkeeping under one lock: which entity (a vCPU) is
 * in which state, which worker runs it, how much credit it has.  It never
 * reads a clock itself: every call takes `now` (CLOCK_MONOTONIC ns), so the
 * model test can drive it step by step with made-up times.
 */
#ifndef HV_SCHED_POLICY_H
#define HV_SCHED_POLICY_H

#include <pthread.h>
#include <stdint.h>
#include "hv.h"

#define SCHED_WORKERS_MAX HV_SCHED_WORKERS_MAX
#define SCHED_WEIGHT_DEFAULT HV_SCHED_WEIGHT_DEFAULT
#define SCHED_SLICE_MIN_NS HV_SCHED_SLICE_MIN_NS      /* 0.5 ms */
#define SCHED_SLICE_MAX_NS HV_SCHED_SLICE_MAX_NS    /* 10 ms */
#define SCHED_RATELIMIT_NS HV_SCHED_RATELIMIT_NS     /* a waker preempts only after 1 ms */
#define SCHED_CREDIT_INIT ((int64_t)HV_SCHED_CREDIT_INIT)     /* one reset gives this much */
#define SCHED_CAP_PERIOD_NS HV_SCHED_CAP_PERIOD_NS    /* caps are budgets per 10 ms */
#define SCHED_YIELD_BIAS_NS ((int64_t)HV_SCHED_YIELD_BIAS_NS)   /* a yielder goes after its peers */
#define SCHED_MIGRATE_RESIST_NS HV_SCHED_MIGRATE_RESIST_NS   /* wait this long before moving */

enum sched_state {
    SCHED_DOWN = HV_SCHED_DOWN,        /* not started, or taken out */
    SCHED_RUNNABLE = HV_SCHED_RUNNABLE,        /* on a runqueue */
    SCHED_RUNNING = HV_SCHED_RUNNING,         /* a worker runs it */
    SCHED_BLOCKED = HV_SCHED_BLOCKED,         /* block/hlt: until sched_wake or its deadline */
    SCHED_PARENT = HV_SCHED_PARENT,          /* its exit record waits for the parent */
    SCHED_PAUSED = HV_SCHED_PAUSED,          /* held by the parent; never runs */
};

/* Why a worker stopped running an entity. */
enum sched_stop {
    SCHED_STOP_PREEMPT = HV_SCHED_STOP_PREEMPT,    /* slice over or kicked: still runnable */
    SCHED_STOP_YIELD = HV_SCHED_STOP_YIELD,          /* the guest gave the CPU away */
    SCHED_STOP_BLOCK = HV_SCHED_STOP_BLOCK,          /* nothing to do until an event */
    SCHED_STOP_PARENT = HV_SCHED_STOP_PARENT,         /* an exit record for the parent */
    SCHED_STOP_DOWN = HV_SCHED_STOP_DOWN,             /* the guest took it down (vcpu_down) */
};

struct sched_entity {
    struct sched_entity *next, *prev;   /* runqueue links (RUNNABLE only) */
    struct sched_entity *all_next;      /* every entity of the scheduler */
    void    *owner;                     /* the vCPU (NULL in tests) */
    enum sched_state state;
    uint32_t group;          /* nonzero: members never run at once (one TCG partition) */
    uint32_t weight;         /* share against others, default 256 */
    uint32_t cap;            /* percent of one host CPU; 0 = none */
    int      home;           /* the worker whose runqueue it joins */
    int      worker;         /* the worker running it, -1 if none */
    int64_t  credit;         /* weighted ns; the highest runs */
    uint64_t run_start;      /* when the current run began */
    uint64_t runnable_since;
    uint64_t period_start, budget_used;   /* cap accounting */
    uint64_t wake_at;        /* BLOCKED: deadline (0 = none) */
    int      wake_pending;   /* woken while not BLOCKED: do not block next time */
    int      pause_pending;  /* pause once it stops running / the parent returns it */
    int      down_pending;   /* take it out once it stops running */
    int      paused_blocked; /* PAUSED from BLOCKED: goes back there on resume */
    int      yielded;        /* counts SCHED_YIELD_BIAS_NS less until it runs */
    int      migrate_cheap;  /* TCG: moving workers costs nothing */
    /* Counters. */
    uint64_t runtime_ns, dispatches, migrations, blocks, parent_waits;
};

struct sched_worker_state {
    struct sched_entity *head, *tail;   /* runqueue */
    struct sched_entity *current;       /* running, or NULL (idle) */
    uint32_t load;                      /* entities whose home this is */
};

struct sched {
    pthread_mutex_t lock;
    int nworkers;
    struct sched_worker_state w[SCHED_WORKERS_MAX];
    struct sched_entity *all;
    uint64_t resets;
    /* Deterministic: a group member waiting for the parent holds its group
     * too, so no other member runs for as long as the parent happens to
     * take (the interleaving must not depend on host time). */
    int parent_holds_group;
};

/* sched.c: the policy.  All under s->lock (the caller holds it). */
void sched_init(struct sched *s, int nworkers);
void sched_add(struct sched *s, struct sched_entity *e, uint32_t group, uint32_t weight,
               uint32_t cap, int migrate_cheap);
void sched_forget(struct sched *s, struct sched_entity *e);   /* must be DOWN */
/* DOWN -> RUNNABLE.  Returns a worker to notify, or -1. */
int  sched_start(struct sched *s, struct sched_entity *e, uint64_t now);
/* DOWN -> PAUSED (started while its partition is paused): resume runs it. */
void sched_start_paused(struct sched *s, struct sched_entity *e, uint64_t now);
/* The entity worker w should run next (RUNNING from now), and its slice. */
struct sched_entity *sched_pick(struct sched *s, int w, uint64_t now, uint64_t *slice);
/* Worker w stops running e.  wake_at: for SCHED_STOP_BLOCK. */
void sched_stop(struct sched *s, struct sched_entity *e, enum sched_stop why,
                uint64_t wake_at, uint64_t now);
/* An event for e: BLOCKED -> RUNNABLE.  Returns a worker to notify (idle, or
 * running something with less credit), or -1. */
int  sched_wake(struct sched *s, struct sched_entity *e, uint64_t now);
/* The parent is done with e's exit: PARENT -> RUNNABLE (or PAUSED). */
int  sched_parent_done(struct sched *s, struct sched_entity *e, uint64_t now);
/* 1 if e is off its worker now (PAUSED or will be when it stops: 0). */
int  sched_pause(struct sched *s, struct sched_entity *e);
int  sched_resume(struct sched *s, struct sched_entity *e, uint64_t now);
/* Take e out; 1 if done now, 0 if it is running (DOWN when it stops). */
int  sched_take_down(struct sched *s, struct sched_entity *e);
/* Wake every BLOCKED entity whose deadline passed; the earliest deadline
 * still ahead (0 = none).  own (NULL, or one per worker): the earliest of
 * the entities whose home each worker is. */
uint64_t sched_expire(struct sched *s, uint64_t now, int *notify, int max_notify, int *nnotify,
                      uint64_t *own);
/* Internal consistency (tests): 0, or a code saying what is wrong. */
int  sched_check(const struct sched *s);

#endif
