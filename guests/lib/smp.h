/*
 * smp.h - several CPUs: start-up, per-CPU data, spinlocks, IPIs, a barrier.
 *
 * T:396 The boot CPU calls smp_init(); smp_start_cpu(id, fn, arg) brings
 * vCPU `id` up (HV_HC_VCPU_UP) on a stack of its own, and it runs fn(id,
 * arg) with the library's GDT and IDT loaded and interrupts off.  Each CPU
 * finds its struct smp_cpu through GS (smp_this_cpu()), so the event
 * upcall serves the CPU it arrives on (events.c).  printf has one line
 * buffer: print from one CPU at a time.
 */
#ifndef GUEST_SMP_H
#define GUEST_SMP_H

#include <stddef.h>
#include <stdint.h>
#include "hv/abi.h"

typedef void (*smp_fn)(unsigned id, void *arg);

struct smp_cpu {
    struct smp_cpu *self;       /* %gs:0 */
    unsigned id;
    volatile int started;       /* it reached C (smp_wait_started) */
    smp_fn fn;
    void *arg;
    void *local;                /* the kernel's own per-CPU data */
};

extern struct smp_cpu smp_cpus[HV_VCPUS_MAX];
extern int smp_active;          /* smp_init ran: GS holds the CPU's struct */

/* The boot CPU, once: its per-CPU data; returns the vCPU count. */
unsigned smp_init(void);
unsigned smp_cpu_count(void);
/* Bring vCPU id up running fn(id, arg): 0 or hv's -HV_E* error. */
long smp_start_cpu(unsigned id, smp_fn fn, void *arg);
void smp_wait_started(unsigned id);
/* The calling CPU goes down (HV_HC_VCPU_DOWN): does not return, unless it
 * is the last one up (then it returns -HV_EBUSY). */
long smp_cpu_down(void);

static inline struct smp_cpu *smp_this_cpu(void)
{
    struct smp_cpu *c;
    asm volatile("mov %%gs:0, %0" : "=r"(c));
    return c;
}

static inline unsigned smp_cpu_id(void)
{
    return smp_active ? smp_this_cpu()->id : 0;
}

static inline void cpu_relax(void) { asm volatile("pause" : : : "memory"); }

/* An IPI: raise `event` on vCPU `cpu` (HV_HC_VCPU_SEND_EVENT). */
long smp_send_ipi(unsigned cpu, unsigned event);
/* Flush the TLBs of the CPUs in mask (bit i = vCPU i), waiting for them. */
long smp_tlb_flush(uint64_t mask);

/* A test-and-set spinlock.  A waiter that spins long gives its host CPU
 * away (HV_HC_YIELD), as pause-loop exiting would: on TCG the holder may
 * be waiting for this very worker. */
typedef struct { volatile uint32_t locked; } spinlock_t;
void spin_lock(spinlock_t *l);
static inline void spin_unlock(spinlock_t *l)
{
    __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

/* Every one of n CPUs waits here until all n have arrived; reusable. */
struct smp_barrier { volatile uint32_t arrived, generation; };
void smp_barrier_wait(struct smp_barrier *b, unsigned n);

#endif
