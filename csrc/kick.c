/*
 * kick.c - getting a vCPU's attention from another thread.
 *
 * T:535 Other threads never touch an engine.  To make a vCPU notice new work
 * (an event to inject, a pause) they set a flag and kick it: wake it if it
 * sleeps in block or hlt, and if it is inside the engine running guest code,
 * send its host thread a real-time signal, whose handler asks the engine to
 * return (KVM_RUN returns -EINTR; Unicorn stops at the next block).  The
 * vCPU's host timer raises the same signal.
 */
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

int kick_signal(void)
{
    return KICK_SIGNAL;
}

/* Let the kick signal reach this thread (vCPU threads, workers). */
void kick_thread_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_kick_handler);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* A worker is about to run v (NULL: it runs nothing): kicks to this thread
 * now stop v's engine. */
void kick_set_current(struct hv_vcpu *v)
{
    if (v)
        v->h.tid = (pid_t)syscall(SYS_gettid);
    thread_vcpu = v;
}

/* The vCPU this thread is running now (in its run loop), or NULL. */
struct hv_vcpu *vcpu_current(void)
{
    return thread_vcpu;
}

/* Runs on the vCPU's own thread when it is created. */
void vcpu_thread_setup(struct hv_vcpu *v)
{
    kick_thread_init();
    v->h.tid = (pid_t)syscall(SYS_gettid);
    thread_vcpu = v;
    timer_host_create(v);
}

void vcpu_thread_teardown(struct hv_vcpu *v)
{
    timer_host_delete(v);
    kick_thread_release(v);
}

/* This thread made v but will not run it (a scheduler's workers will): a
 * kick that reaches this thread later must not touch v, which may be gone
 * by then. */
void kick_thread_release(struct hv_vcpu *v)
{
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

/* Make the vCPU notice new work: wake it if it sleeps, interrupt it if it
 * runs guest code.  Any thread. */
void vcpu_kick(struct hv_vcpu *v)
{
    vcpu_wake(v);
    if (v->h.in_guest && v->h.tid && v->h.tid != (pid_t)syscall(SYS_gettid))
        syscall(SYS_tgkill, getpid(), v->h.tid, KICK_SIGNAL);
}
