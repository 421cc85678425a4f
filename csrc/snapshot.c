/*
 * snapshot.c - the core's side of snapshot, restore and migration.
 *
 * T:906 A partition becomes a file in two parts: its RAM, written raw, and
 * a stream of records (hv/snapshot_format.py) that Python writes from what
 * these calls return.  The core hands out exactly the guest-visible state
 * that core.h separates from host plumbing: struct partition_guest_state,
 * struct vcpu_guest_state, and the CPU through the engine's get_state (KVM
 * and TCG each in a file of their own).  Restore is the same in reverse,
 * on a fresh partition whose RAM is the memory file mapped copy-on-write,
 * before the vCPU first runs.  Nothing here knows the file format.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include "core.h"

_Static_assert(HV_CPU_MSRS_MAX == 16, "hv.h spells the MSR array length for cffi");
_Static_assert(sizeof(((struct hv_partition_snapshot *)0)->event_vcpu) == HV_EVENTS_MAX,
               "hv.h spells HV_EVENTS_MAX for cffi");

/* The MSRs 64-bit guests program (SDM vol. 4, table 2-2): SYSCALL's
 * targets and mask, SWAPGS's base, SYSENTER's, the TSC and the PAT. */
const uint32_t snapshot_msrs[] = {
    0xc0000081,     /* STAR */
    0xc0000082,     /* LSTAR */
    0xc0000083,     /* CSTAR */
    0xc0000084,     /* FMASK */
    0xc0000102,     /* KERNEL_GS_BASE */
    0x174,          /* SYSENTER_CS */
    0x175,          /* SYSENTER_ESP */
    0x176,          /* SYSENTER_EIP */
    0x277,          /* PAT */
    0x10,           /* TSC: last, so it is written after everything that may touch it */
};
const unsigned snapshot_nmsrs = sizeof(snapshot_msrs) / sizeof(snapshot_msrs[0]);
_Static_assert(sizeof(snapshot_msrs) / sizeof(snapshot_msrs[0]) <= HV_CPU_MSRS_MAX,
               "room for every saved MSR");

int hv_partition_create_from_file(int engine, uint64_t mem_size, int fd,
                                  struct hv_partition **out)
{
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return -EBADF;
    if ((uint64_t)st.st_size < mem_size)
        return -ENOSPC;         /* the state names more RAM than the file holds */
    return partition_create(engine, mem_size, fd, out);
}

void hv_partition_get_snapshot(struct hv_partition *p, struct hv_partition_snapshot *out)
{
    *out = (struct hv_partition_snapshot){
        .clock_ns = partition_clock_ns(p),
        .instructions = p->g.instructions,
        .hypercall_page_gpa = p->g.hypercall_page_gpa,
        .event_page_gpa = p->g.event_page_gpa,
        .event_vector = p->g.event_vector,
        .deterministic = (uint32_t)p->deterministic,
    };
    memcpy(out->event_vcpu, p->g.event_vcpu, sizeof(out->event_vcpu));
}

/* T:907 The partition clock goes on where it stopped: its epoch moves so
 * that "now" reads clock_ns.  A guest sees time stand still while it was
 * a file, never run backwards.  (Deterministic partitions count
 * instructions: that count is restored as it was.) */
int hv_partition_set_snapshot(struct hv_partition *p, const struct hv_partition_snapshot *in)
{
    if (p->vcpu)
        return -EBUSY;
    if (in->hypercall_page_gpa >= p->mem_size || in->event_page_gpa >= p->mem_size ||
        in->event_page_gpa % HV_PAGE_SIZE || in->hypercall_page_gpa % HV_PAGE_SIZE ||
        in->event_vector > 255)
        return -EINVAL;
    for (unsigned i = 0; i < HV_EVENTS_MAX; i++)
        if (in->event_vcpu[i] >= p->nvcpus)
            return -EINVAL;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns = (int64_t)now.tv_sec * 1000000000ll + now.tv_nsec - (int64_t)in->clock_ns;
    p->epoch.tv_sec = (time_t)(ns / 1000000000ll);
    p->epoch.tv_nsec = (long)(ns % 1000000000ll);
    if (p->epoch.tv_nsec < 0) {
        p->epoch.tv_nsec += 1000000000l;
        p->epoch.tv_sec--;
    }
    p->g.hypercall_page_gpa = in->hypercall_page_gpa;
    p->g.event_page_gpa = in->event_page_gpa;
    p->g.event_vector = in->event_vector;
    p->g.instructions = in->instructions;
    memcpy(p->g.event_vcpu, in->event_vcpu, sizeof(p->g.event_vcpu));
    return 0;
}

int hv_vcpu_get_state(struct hv_vcpu *v, struct hv_cpu_state *cpu, struct hv_vcpu_pending *pend)
{
    const struct engine_ops *e = v->partition->engine;
    if (!e->get_state)
        return -ENOTSUP;
    /* A call half-answered by the parent cannot be written down: the
     * parent's side of it is not in the record.  The caller runs the
     * vCPU a little and asks again. */
    if (v->g.wait == WAIT_PARENT_HYPERCALL || v->g.wait == WAIT_PARENT_IO_IN ||
        v->g.wait == WAIT_PARENT_IO_OUT)
        return -EBUSY;
    /* Events queued for the vCPU's thread (TCG, event.c T:533) go into the
     * event page now, a down vCPU's too: the vCPU is stopped, and the page
     * is saved after this. */
    event_deliver_raised(v);
    /* T:918 SMP.  A down vCPU, or one asked to go down (vcpu_down: it runs
     * no further instruction), is saved as down and without CPU state: the
     * next vcpu_up gives it the whole context it starts from.  A TLB flush
     * owed to a vCPU is not saved: a restored vCPU starts with an empty
     * TLB.  An IPI is its pending bit in the event block (RAM) and
     * inject_pending here; both are saved, so none is lost. */
    if (!__atomic_load_n(&v->g.up, __ATOMIC_ACQUIRE) ||
        __atomic_load_n(&v->g.down_requested, __ATOMIC_SEQ_CST)) {
        memset(cpu, 0, sizeof(*cpu));
        cpu->injected_vector = -1;
        *pend = (struct hv_vcpu_pending){ .up = 0 };
        return 0;
    }
    int err = e->get_state(v->engine_vcpu, cpu);
    if (err)
        return err;
    *pend = (struct hv_vcpu_pending){
        .wait = (uint32_t)v->g.wait,
        .mc_active = (uint32_t)v->g.mc.active,
        .mc_gva = v->g.mc.gva, .mc_count = v->g.mc.count, .mc_index = v->g.mc.index,
        .timer_deadline = v->g.timer_deadline,
        .up = (uint32_t)v->g.up,
        .inject_pending = (uint32_t)__atomic_load_n(&v->g.inject_pending, __ATOMIC_SEQ_CST),
    };
    return 0;
}

int hv_vcpu_set_state(struct hv_vcpu *v, const struct hv_cpu_state *cpu,
                      const struct hv_vcpu_pending *pend)
{
    const struct engine_ops *e = v->partition->engine;
    if (!e->set_state)
        return -ENOTSUP;
    if ((pend->wait != WAIT_NONE && pend->wait != WAIT_EVENT) || pend->mc_active > 1 ||
        cpu->nmsrs > HV_CPU_MSRS_MAX || pend->up > 1)
        return -EINVAL;
    if (!pend->up) {
        /* Down: parked until a vcpu_up, which sets its whole context. */
        if (pend->wait != WAIT_NONE || pend->mc_active || pend->timer_deadline ||
            pend->inject_pending)
            return -EINVAL;
        v->g = (struct vcpu_guest_state){ .up = 0 };
        return 0;
    }
    /* An interrupt KVM had taken but not delivered: KVM queues it again;
     * an engine without hardware delivery gets it through the IDT now,
     * which is where the CPU would have put it. */
    struct hv_cpu_state s = *cpu;
    int deliver = !e->inject && s.injected_vector >= 0;
    if (deliver)
        s.injected_vector = -1;
    int err = e->set_state(v->engine_vcpu, &s);
    if (err)
        return err;
    if (deliver && idt_deliver(v, (uint8_t)cpu->injected_vector, IDT_EXTERNAL, 0, 0))
        return -EINVAL;
    v->g.wait = (enum vcpu_wait)pend->wait;
    v->g.mc = (struct multicall_state){ .active = (int)pend->mc_active, .gva = pend->mc_gva,
                                        .count = pend->mc_count, .index = pend->mc_index };
    v->g.up = (int)pend->up;
    __atomic_store_n(&v->g.inject_pending, (int)pend->inject_pending, __ATOMIC_SEQ_CST);
    /* Through the arm path, so the host timer (or the scheduler's) is aimed. */
    event_timer_arm(v, pend->timer_deadline);
    return 0;
}
