/*
 * raweventfd - the wake-up baseline of `tools/bench sched`: one host thread
 * waking another through an eventfd, the least a scheduler's wake-up can
 * cost here.  N times: sleep `period` ns (as the guest's timer period), take
 * the time, write the eventfd; the waiter, blocked in read(), takes the time
 * again.  Prints {"n": N, "p50_ns": ..., "p99_ns": ..., "max_ns": ...}.
 *
 *     raweventfd N PERIOD_NS
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static int efd, ack;
static volatile uint64_t sent;
static uint64_t *late;
static int n;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void *waiter(void *arg)
{
    (void)arg;
    for (int i = 0; i < n; i++) {
        uint64_t v;
        if (read(efd, &v, sizeof(v)) != sizeof(v))
            exit(1);
        late[i] = now_ns() - sent;
        uint64_t one = 1;
        if (write(ack, &one, sizeof(one)) != sizeof(one))
            exit(1);
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    n = argc > 1 ? atoi(argv[1]) : 200;
    long period = argc > 2 ? atol(argv[2]) : 1000000;
    if (n < 1)
        return 2;
    late = calloc((size_t)n, sizeof(*late));
    efd = eventfd(0, 0);
    ack = eventfd(0, 0);        /* one round at a time: two writes would fold into one read */
    pthread_t t;
    pthread_create(&t, NULL, waiter, NULL);
    for (int i = 0; i < n; i++) {
        struct timespec d = { 0, period };
        nanosleep(&d, NULL);
        sent = now_ns();
        uint64_t one = 1;
        if (write(efd, &one, sizeof(one)) != sizeof(one))
            return 1;
        if (read(ack, &one, sizeof(one)) != sizeof(one))
            return 1;
    }
    pthread_join(t, NULL);
    qsort(late, (size_t)n, sizeof(*late), cmp);
    printf("{\"n\": %d, \"p50_ns\": %lu, \"p99_ns\": %lu, \"max_ns\": %lu}\n", n,
           (unsigned long)late[n / 2], (unsigned long)late[(n * 99) / 100],
           (unsigned long)late[n - 1]);
    return 0;
}
