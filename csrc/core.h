/*
 * core.h - the core's internal state.  Every field that describes a
 * partition or vCPU lives in these two structs, so save/restore can walk them.
 */
#ifndef HV_CORE_INTERNAL_H
#define HV_CORE_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include "hv.h"
#include "engine.h"
#include "platform.h"
#include "sched_policy.h"

#define HV_OWNER_HV 0          /* frame owner id meaning "hv itself" */

/* Registers by their position in struct hv_regs (engine read_regs/write_reg). */
enum hv_reg_index {
    HVREG_RAX, HVREG_RBX, HVREG_RCX, HVREG_RDX, HVREG_RSI, HVREG_RDI, HVREG_RSP, HVREG_RBP,
    HVREG_R8, HVREG_R9, HVREG_R10, HVREG_R11, HVREG_R12, HVREG_R13, HVREG_R14, HVREG_R15,
    HVREG_RIP, HVREG_RFLAGS,
};

/* Sentinel a handler returns when the parent partition finishes the call. */
#define HC_TO_PARENT INT64_MIN

struct virtio_dev;
struct evtchn_table;
struct grant_state;

struct trace_ring {
    struct hv_trace_record *ring;   /* NULL = tracing off */
    uint32_t capacity;
    uint64_t head, tail, seq;
};

/* What the guest can observe of its partition's hv state (beyond RAM):
 * snapshot and migration copy this part and nothing of struct
 * partition_host. */
struct partition_guest_state {
    uint64_t hypercall_page_gpa;  /* 0 = not placed */
    uint64_t event_page_gpa;      /* 0 = not registered */
    uint32_t event_vector;
    uint8_t  event_vcpu[HV_EVENTS_MAX];   /* the vCPU each event goes to (0 by default) */
    uint64_t instructions;        /* deterministic mode: the partition clock (every vCPU counts) */
};

struct hv_partition {
    uint32_t id;
    const struct engine_ops *engine;
    void    *engine_vm;
    uint8_t *ram;              /* mmap'd guest RAM, [0, mem_size) */
    uint64_t mem_size;
    uint64_t nframes;
    uint32_t *frame_owner;     /* per 4 KiB frame: partition id or HV_OWNER_HV */
    uint8_t  *written;         /* per frame: hv wrote it since the last round (dirty.c) */
    struct partition_guest_state g;

    /* Host plumbing: how the parent set the partition up, and its lifetime. */
    uint32_t refs;             /* partition_table.c, under its lock */
    int      dying;            /* destroy has begun: partition_get() fails */
    struct hv_ram_hold *ram_hold;  /* RAM's holders: unmapped when the last lets go */
    uint8_t  route[HV_HC_COUNT];  /* HV_ROUTE_CORE or HV_ROUTE_PARENT */
    struct timespec epoch;     /* partition clock zero */
    int deterministic;         /* clock = guest instructions (TCG) */
    uint32_t nvcpus;           /* vCPUs it has (hv_partition_set_vcpus; 1 by default) */
    struct hv_vcpu *vcpus[HV_VCPUS_MAX];   /* those created, by id (smp.c brings them up) */
    struct hv_vcpu *vcpu;      /* vCPU 0, the boot vCPU (== vcpus[0]) */
    pthread_mutex_t vcpu_lock; /* other threads (device interrupts, IPIs) use vcpus under it */
    int      paused;           /* hv_partition_pause: vCPUs brought up start paused */
    struct trace_ring trace;
    uint64_t insn_trace_start, insn_trace_end;   /* end 0: no instruction trace */
    struct virtio_dev *virtio[HV_VIRTIO_MMIO_SLOTS];   /* virtio_mmio.c */
    struct platform *platform; /* the PC's UART and IOAPIC (platform.c): guest-visible */
    struct evtchn_table *evtchn;  /* event channel ports, permitted peers (evtchn.c) */
    struct grant_state *grant;    /* the registered grant table (grant.c) */
    struct dirty_log *dirty;      /* a migration's dirty tracking (dirty.c), or NULL */
};

/* What a vCPU is waiting on between run calls. */
enum vcpu_wait {
    WAIT_NONE = 0,
    WAIT_PARENT_HYPERCALL,     /* parent must hv_vcpu_complete() a hypercall */
    WAIT_PARENT_IO_IN,         /* parent must supply an IN value */
    WAIT_PARENT_IO_OUT,        /* parent acknowledges an OUT */
    WAIT_EVENT,                /* inside block or hlt: sleep until an event */
};

struct multicall_state {
    int      active;
    uint64_t gva;
    uint64_t count;
    uint64_t index;
};

/* The vCPU as the guest sees it, beyond the registers the engine holds:
 * where it is in a call, its timer, an upcall owed.  Snapshot and
 * migration walk this (with the engine's registers) and nothing else. */
struct vcpu_guest_state {
    enum vcpu_wait wait;
    struct multicall_state mc;
    uint64_t timer_deadline;       /* partition-clock ns, 0 = disarmed */
    volatile int inject_pending;   /* an upcall must be injected */
    int      up;                   /* running its code (vCPU 0 from boot; others after vcpu_up) */
    volatile int down_requested;   /* vcpu_down: stop before the next instruction */
    volatile int tlb_flush_pending;   /* tlb_flush: flush before the next guest entry */
};

/* How the host runs the vCPU: its thread, locks, host timer, counters. */
struct vcpu_host {
    pid_t    tid;                  /* the host thread that runs it */
    timer_t  host_timer;           /* signals tid when the deadline passes */
    int      host_timer_ok;
    uint64_t host_timer_at;        /* partition-clock time it is set to fire, 0 = not set */
    int      timer_due;            /* the deadline has passed: the run loop raises it */
    /* Wake-ups from other threads: the parent raising events, pause. */
    pthread_mutex_t lock;
    pthread_cond_t  wake;
    volatile int    pause_requested;
    volatile int    in_guest;      /* inside engine->run() */
    int             trace_drain;   /* the trace ring wants the parent to read it */
    struct hv_exit *exit;          /* the record of the run call in progress */
    uint64_t exits, fast_calls, parent_calls;
    uint32_t debug_flags;          /* HV_DEBUG_* (debug.c) */
    /* Run by a scheduler's workers (sched_worker.c), or NULL: its own thread. */
    struct hv_sched *sched;
    struct sched_entity se;
    struct hv_exit *sched_exit;    /* its exit record, owned while scheduled */
    struct hv_vcpu *exitq_next;    /* the parent's queue of exit records */
    int queued;                    /* on that queue */
    volatile int yielded;          /* the yield hypercall, scheduled */
    volatile int resched;          /* its worker has other work and no slice timer */
    /* Events raised for it and not yet written into its event block, on
     * an engine whose guest RMWs are not atomic against host threads
     * (engine_ops.guest_rmw_not_host_atomic): event_before_entry() writes
     * them on the vCPU's own thread, with the guest stopped. */
    uint64_t raised[HV_EVENT_WORDS];
    volatile int raised_any;
    /* Deterministic mode: the engine stops when the partition clock
     * (partition->g.instructions) reaches
     * insn_stop, the earlier of the guest's timer and the end of the
     * slice a deterministic worker gave it (insn_slice_end, 0 = none). */
    uint64_t insn_stop;
    uint64_t insn_slice_end;
};

struct hv_vcpu {
    struct hv_partition *partition;
    uint32_t id;
    void    *engine_vcpu;
    struct vcpu_guest_state g;
    struct vcpu_host h;
    struct lapic *lapic;       /* the local APIC (lapic.c): guest-visible */
    volatile int lapic_pending;   /* it has a vector the CPU would take now (lapic.c) */
};

/* vcpu.c: run the guest until something ends the stretch (vcpu_run_loop). */
enum vcpu_run_end { RUN_TO_PARENT, RUN_BLOCKED, RUN_KICKED, RUN_YIELDED, RUN_DOWN };
enum vcpu_run_end vcpu_run_loop(struct hv_vcpu *v, struct hv_exit *exit, int scheduled);

/* sched_worker.c: the scheduler's side of a scheduled vCPU. */
void sched_vcpu_wake(struct hv_vcpu *v);           /* an event for it; any thread */
void sched_vcpu_timer_changed(struct hv_vcpu *v);  /* its deadline moved; its worker */
void sched_vcpu_start(struct hv_vcpu *v, int paused); /* vcpu_up: DOWN -> RUNNABLE (or PAUSED) */

/* vcpu.c: does the vCPU need the run loop before it re-enters the guest
 * (a wait, a multicall to resume, a pause, an upcall, a trace drain)?  The
 * one predicate the run loop and engines that handle exits inline share. */
int  vcpu_needs_loop(const struct hv_vcpu *v);

/* debug.c: fill exit as a HV_EXIT_DEBUG stop (returns 1, as for the
 * parent); an INT3 the engine ran (RIP past it) stops at the INT3. */
int  debug_stop(struct hv_exit *exit, uint32_t reason, uint64_t address);
int  debug_int3_stop(struct hv_vcpu *v, uint8_t insn_len, struct hv_exit *exit);

/* vcpu.c: handle one engine exit; 1 = return v->exit to the parent. */
int  vcpu_handle_exit(struct hv_vcpu *v, const struct engine_exit *ex);
/* ... that exit being a write to HV_PORT_HYPERCALL (engine.h's hypercall). */
int  vcpu_handle_hypercall(struct hv_vcpu *v);

/* idt.c: deliver a vector through the guest's IDT in software (engines
 * without hardware injection, and software interrupts KVM gives up on).
 * 0, or -1 if even a double fault cannot be delivered (the caller reports
 * a triple fault). */
enum idt_source {
    IDT_EXTERNAL,       /* an upcall: no error code, EXT=1 in fault codes */
    IDT_EXCEPTION,      /* a CPU exception: error code if the vector has one */
    IDT_SOFTWARE,       /* INT n, INT3, INTO: RIP is past the instruction; gate DPL checked */
};
int  idt_deliver(struct hv_vcpu *v, uint8_t vector, enum idt_source source,
                 uint32_t error_code, uint8_t insn_len);

/* trace.c: append a record when tracing is on (check p->trace.ring first). */
void trace_record(struct hv_vcpu *v, uint32_t kind, uint64_t nr,
                  const uint64_t args[5], int64_t result);
void trace_free(struct hv_partition *p);
void trace_insn(struct hv_vcpu *v, uint64_t rip, uint32_t size);
#define TRACE(v, kind, nr, args, result) \
    do { if ((v)->partition->trace.ring) trace_record((v), (kind), (nr), (args), (result)); } while (0)

/* virtio_mmio.c: a guest access to the device window (0 = handled). */
int  virtio_mmio_access(struct hv_partition *p, uint64_t addr, uint32_t size,
                        int write, uint64_t *value);
void virtio_free(struct hv_partition *p);

/* partition.c */
int  partition_create(int engine, uint64_t mem_size, int fd, struct hv_partition **out);
void partition_free(struct hv_partition *p);    /* the last reference's work */
/* dirty.c: hv wrote [gpa, gpa+len) of p's RAM -- call it after the write.
 * Every write the core makes to guest RAM goes through it (migration's
 * pre-copy rounds rely on that: docs/lifecycle.md). */
void ram_written(struct hv_partition *p, uint64_t gpa, uint64_t len);
uint8_t *dirty_map_alloc(uint64_t nframes);
int  partition_frame_is_guest(const struct hv_partition *p, uint64_t gpa, uint64_t len);
uint64_t partition_clock_ns(const struct hv_partition *p);

/* partition_table.c: find a peer by id and hold it while using it. */
int  partition_table_add(struct hv_partition *p);
void partition_table_remove(struct hv_partition *p);
struct hv_partition *partition_get(uint32_t id);    /* NULL: no such id, or dying */
void partition_put(struct hv_partition *p);
uint32_t partition_table_count(void);

/* pagewalk.c: translate one guest-virtual address for an access. */
#define WALK_WRITE 0x1
#define WALK_USER  0x2
#define WALK_FETCH 0x4
#define PAGING_NXE 0x1
#define PAGING_WP  0x2
int  pagewalk(const struct hv_partition *p, uint64_t cr3, uint64_t gva,
              uint32_t access, uint32_t paging_flags, uint64_t *gpa,
              uint64_t *page_left);
/* Copy as the CPU's own implicit accesses do: supervisor, whatever the CPL. */
int  copy_guest_system(struct hv_vcpu *v, uint64_t gva, void *buf, uint64_t len, int write);
/* Check that [gva, gva+len) is accessible (no copy). */
int  guest_range_ok(struct hv_vcpu *v, uint64_t gva, uint64_t len, uint32_t access);

/* vcpu.c: hv's boot GDT (page 0): PVH's 32-bit selectors and vcpu_up's. */
#define HV_BOOT_GDT_LIMIT 39
int  vcpu_set_long_entry(struct hv_vcpu *t, const struct hv_vcpu_context *ctx);

/* smp.c: the SMP hypercalls, and what the run loop does for them. */
int64_t hc_vcpu_up(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_vcpu_down(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_vcpu_id(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_vcpu_count(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_vcpu_send_event(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_tlb_flush(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
int64_t hc_event_bind_vcpu(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);
/* Right after in_guest is set, before the engine runs: a flush owed. */
void smp_before_run(struct hv_vcpu *v);

/* hypercall.c */
int64_t hypercall_dispatch(struct hv_vcpu *v, uint64_t nr, const uint64_t args[5],
                           struct hv_exit *exit);
int64_t multicall_continue(struct hv_vcpu *v, struct hv_exit *exit);
void    multicall_store_result(struct hv_vcpu *v, int64_t result);
void    hypercall_page_place(struct hv_vcpu *v, uint64_t pfn);

/* event.c: event bits, injection.  event_raise delivers to the vCPU the
 * event is bound to (HV_HC_EVENT_BIND_VCPU, default 0), event_raise_vcpu
 * to the one named. */
int  event_raise(struct hv_partition *p, uint32_t event);
int  event_raise_vcpu(struct hv_partition *p, uint32_t vcpu, uint32_t event);
int  event_any_pending(const struct hv_vcpu *v);
int  event_upcall_outstanding(const struct hv_vcpu *v);   /* its block's upcall_pending */
void event_deliver_raised(struct hv_vcpu *v);
/* The one check before every guest entry. */
void event_before_entry(struct hv_vcpu *v);

/* kick.c: other threads get a vCPU's attention. */
void vcpu_kick(struct hv_vcpu *v);
int  event_consume_kick(void);
int  kick_signal(void);
void kick_thread_init(void);
void kick_set_current(struct hv_vcpu *v);
struct hv_vcpu *vcpu_current(void);
void vcpu_thread_setup(struct hv_vcpu *v);
void vcpu_thread_teardown(struct hv_vcpu *v);
void kick_thread_release(struct hv_vcpu *v);

/* timer.c: the vCPU's timer. */
int  event_timer_arm(struct hv_vcpu *v, uint64_t deadline);
void timer_check(struct hv_vcpu *v);
void timer_insn_stop_update(struct hv_vcpu *v);
uint64_t timer_others_earliest(const struct hv_vcpu *v);    /* deterministic SMP */     /* deterministic: h.insn_stop */
void timer_host_create(struct hv_vcpu *v);
void timer_host_delete(struct hv_vcpu *v);
struct timespec timer_deadline_to_host(const struct hv_partition *p, uint64_t deadline);

/* wait.c: may a vCPU in block/hlt go on?  0, or 1 and the deadline. */
int  vcpu_wait_check(struct hv_vcpu *v, uint64_t *deadline);
void vcpu_down_clock_skip(struct hv_vcpu *v);     /* deterministic SMP: wait.c */
/* wait.c: sleep until an event is pending or a pause is requested: 0 or -HV_EAGAIN. */
int  event_wait(struct hv_vcpu *v);
void vcpu_wake(struct hv_vcpu *v);

#endif
