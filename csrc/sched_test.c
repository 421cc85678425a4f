/*
 * sched_test.c - test entries: the scheduler's policy on its own.
 *
 * Entities without vCPUs, numbered 0..n-1, and explicit times, so a
 * Hypothesis state machine (tests/test_sched_model.py) can drive every
 * transition and compare with tests/models/sched.py.  Single-threaded:
 * the lock is taken anyway, as the workers take it.
 */
#include <errno.h>
#include <stdlib.h>
#include "hv.h"
#include "sched_policy.h"

#define TEST_ENTITIES_MAX 256

struct hv_sched_test {
    struct sched s;
    int n;
    struct sched_entity e[TEST_ENTITIES_MAX];
};

struct hv_sched_test *hv_test_sched_create(int nworkers)
{
    struct hv_sched_test *t = calloc(1, sizeof(*t));
    if (t) {
        pthread_mutex_init(&t->s.lock, NULL);
        sched_init(&t->s, nworkers);
    }
    return t;
}

void hv_test_sched_destroy(struct hv_sched_test *t)
{
    pthread_mutex_destroy(&t->s.lock);
    free(t);
}

static struct sched_entity *entity(struct hv_sched_test *t, int id)
{
    return id >= 0 && id < t->n ? &t->e[id] : NULL;
}

#define LOCKED(t, expr) ({ pthread_mutex_lock(&(t)->s.lock); __typeof__(expr) r_ = (expr); \
                           pthread_mutex_unlock(&(t)->s.lock); r_; })

int hv_test_sched_add(struct hv_sched_test *t, uint32_t group, uint32_t weight,
                      uint32_t cap, int migrate_cheap)
{
    if (t->n == TEST_ENTITIES_MAX)
        return -ENOSPC;
    pthread_mutex_lock(&t->s.lock);
    sched_add(&t->s, &t->e[t->n], group, weight, cap, migrate_cheap);
    pthread_mutex_unlock(&t->s.lock);
    return t->n++;
}

int hv_test_sched_start(struct hv_sched_test *t, int id, uint64_t now)
{
    return LOCKED(t, sched_start(&t->s, entity(t, id), now));
}

int hv_test_sched_pick(struct hv_sched_test *t, int worker, uint64_t now, uint64_t *slice)
{
    pthread_mutex_lock(&t->s.lock);
    struct sched_entity *e = sched_pick(&t->s, worker, now, slice);
    pthread_mutex_unlock(&t->s.lock);
    return e ? (int)(e - t->e) : -1;
}

void hv_test_sched_stop(struct hv_sched_test *t, int id, int why, uint64_t wake_at, uint64_t now)
{
    pthread_mutex_lock(&t->s.lock);
    sched_stop(&t->s, entity(t, id), (enum sched_stop)why, wake_at, now);
    pthread_mutex_unlock(&t->s.lock);
}

int hv_test_sched_wake(struct hv_sched_test *t, int id, uint64_t now)
{
    return LOCKED(t, sched_wake(&t->s, entity(t, id), now));
}

int hv_test_sched_parent_done(struct hv_sched_test *t, int id, uint64_t now)
{
    return LOCKED(t, sched_parent_done(&t->s, entity(t, id), now));
}

int hv_test_sched_pause(struct hv_sched_test *t, int id)
{
    return LOCKED(t, sched_pause(&t->s, entity(t, id)));
}

int hv_test_sched_resume(struct hv_sched_test *t, int id, uint64_t now)
{
    return LOCKED(t, sched_resume(&t->s, entity(t, id), now));
}

int hv_test_sched_take_down(struct hv_sched_test *t, int id)
{
    return LOCKED(t, sched_take_down(&t->s, entity(t, id)));
}

uint64_t hv_test_sched_expire(struct hv_sched_test *t, uint64_t now)
{
    int notify[SCHED_WORKERS_MAX], n;
    return LOCKED(t, sched_expire(&t->s, now, notify, SCHED_WORKERS_MAX, &n, NULL));
}

int hv_test_sched_info(struct hv_sched_test *t, int id, struct hv_sched_info *out)
{
    struct sched_entity *e = entity(t, id);
    if (!e)
        return -EINVAL;
    pthread_mutex_lock(&t->s.lock);
    *out = (struct hv_sched_info){
        .state = e->state, .home = e->home, .worker = e->worker, .credit = e->credit,
        .runtime_ns = e->runtime_ns, .dispatches = e->dispatches,
        .migrations = e->migrations, .blocks = e->blocks, .parent_waits = e->parent_waits };
    pthread_mutex_unlock(&t->s.lock);
    return 0;
}

int hv_test_sched_check(struct hv_sched_test *t)
{
    return LOCKED(t, sched_check(&t->s));
}
