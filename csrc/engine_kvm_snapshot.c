/*
 * engine_kvm_snapshot.c - the whole CPU state of a KVM vCPU, for snapshots.
 *
 * T:908 The run loop needs only the registers in the sync page; a snapshot
 * needs everything the guest could notice: segment caches, control
 * registers, the MSRs in snapshot_msrs, x87/SSE, XCR0, an interrupt KVM
 * has taken but not delivered, the STI shadow (KVM_GET_FPU, _MSRS, _XCRS,
 * _VCPU_EVENTS; Documentation/virt/kvm/api.rst).  Restore writes it with
 * the ioctls at once, so a state KVM refuses fails the restore, not the
 * first run, and then refreshes the sync page from KVM.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include "engine_kvm.h"

/* Where each of hv's segments sits in struct kvm_sregs. */
static struct kvm_segment *segment_slot(struct kvm_sregs *k, int seg)
{
    switch (seg) {
    case HV_SEG_ES: return &k->es;
    case HV_SEG_CS: return &k->cs;
    case HV_SEG_SS: return &k->ss;
    case HV_SEG_DS: return &k->ds;
    case HV_SEG_FS: return &k->fs;
    case HV_SEG_GS: return &k->gs;
    case HV_SEG_LDTR: return &k->ldt;
    default: return &k->tr;
    }
}

static struct hv_segment segment_to_hv(const struct kvm_segment *k)
{
    return (struct hv_segment){
        .base = k->base, .limit = k->limit, .selector = k->selector,
        .attrib = (uint32_t)k->type | (uint32_t)k->s << 4 | (uint32_t)k->dpl << 5 |
                  (uint32_t)k->present << 7 | (uint32_t)k->avl << 12 | (uint32_t)k->l << 13 |
                  (uint32_t)k->db << 14 | (uint32_t)k->g << 15 |
                  (k->unusable ? HV_SEG_UNUSABLE : 0),
    };
}

static struct kvm_segment segment_from_hv(const struct hv_segment *h)
{
    uint32_t a = h->attrib;
    return (struct kvm_segment){
        .base = h->base, .limit = h->limit, .selector = (uint16_t)h->selector,
        .type = a & 0xf, .s = a >> 4 & 1, .dpl = a >> 5 & 3, .present = a >> 7 & 1,
        .avl = a >> 12 & 1, .l = a >> 13 & 1, .db = a >> 14 & 1, .g = a >> 15 & 1,
        .unusable = !!(a & HV_SEG_UNUSABLE),
    };
}

static struct kvm_msrs *msr_list(void)
{
    struct kvm_msrs *m = calloc(1, sizeof(*m) + snapshot_nmsrs * sizeof(m->entries[0]));
    if (!m)
        return NULL;
    m->nmsrs = snapshot_nmsrs;
    for (unsigned i = 0; i < snapshot_nmsrs; i++)
        m->entries[i].index = snapshot_msrs[i];
    return m;
}

int kvm_get_state(void *vp, struct hv_cpu_state *s)
{
    struct kvm_vcpu_state *c = vp;
    /* The sync page is the truth between runs, including writes the core
     * made since the last run and KVM has not seen yet. */
    struct kvm_sregs *k = &c->run->s.regs.sregs;
    memset(s, 0, sizeof(*s));
    memcpy(&s->regs, &c->run->s.regs.regs, sizeof(s->regs));
    for (int i = 0; i < HV_SEG_COUNT; i++)
        s->seg[i] = segment_to_hv(segment_slot(k, i));
    s->gdt_base = k->gdt.base; s->gdt_limit = k->gdt.limit;
    s->idt_base = k->idt.base; s->idt_limit = k->idt.limit;
    s->cr0 = k->cr0; s->cr2 = k->cr2; s->cr3 = k->cr3; s->cr4 = k->cr4; s->cr8 = k->cr8;
    s->efer = k->efer;

    struct kvm_fpu fpu;
    if (ioctl(c->fd, KVM_GET_FPU, &fpu) < 0)
        return -errno;
    s->fpu.fcw = fpu.fcw; s->fpu.fsw = fpu.fsw; s->fpu.ftw = fpu.ftwx;
    s->fpu.fop = fpu.last_opcode; s->fpu.fip = fpu.last_ip; s->fpu.fdp = fpu.last_dp;
    s->fpu.mxcsr = fpu.mxcsr;
    memcpy(s->fpu.st, fpu.fpr, sizeof(s->fpu.st));
    memcpy(s->fpu.xmm, fpu.xmm, sizeof(s->fpu.xmm));

    struct kvm_msrs *m = msr_list();
    if (!m)
        return -ENOMEM;
    int n = ioctl(c->fd, KVM_GET_MSRS, m);     /* how many it read, in order */
    for (int i = 0; i < n; i++) {
        s->msr_index[i] = m->entries[i].index;
        s->msr_value[i] = m->entries[i].data;
    }
    s->nmsrs = n > 0 ? (uint32_t)n : 0;
    free(m);

    struct kvm_xcrs xcrs;
    if (ioctl(c->fd, KVM_GET_XCRS, &xcrs) == 0)
        for (uint32_t i = 0; i < xcrs.nr_xcrs; i++)
            if (xcrs.xcrs[i].xcr == 0)
                s->xcr0 = xcrs.xcrs[i].value;

    struct kvm_vcpu_events ev;
    if (ioctl(c->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
        return -errno;
    s->interrupt_shadow = ev.interrupt.shadow;
    s->injected_vector = ev.interrupt.injected ? ev.interrupt.nr : -1;
    return 0;
}

int kvm_set_state(void *vp, const struct hv_cpu_state *s)
{
    struct kvm_vcpu_state *c = vp;
    struct kvm_sregs k;
    if (ioctl(c->fd, KVM_GET_SREGS, &k) < 0)   /* apic_base and the rest as KVM has them */
        return -errno;
    for (int i = 0; i < HV_SEG_COUNT; i++)
        *segment_slot(&k, i) = segment_from_hv(&s->seg[i]);
    k.gdt.base = s->gdt_base; k.gdt.limit = (uint16_t)s->gdt_limit;
    k.idt.base = s->idt_base; k.idt.limit = (uint16_t)s->idt_limit;
    k.cr0 = s->cr0; k.cr2 = s->cr2; k.cr3 = s->cr3; k.cr4 = s->cr4; k.cr8 = s->cr8;
    k.efer = s->efer;
    memset(k.interrupt_bitmap, 0, sizeof(k.interrupt_bitmap));   /* events carry it */
    struct kvm_regs r;
    memcpy(&r, &s->regs, sizeof(r));
    if (ioctl(c->fd, KVM_SET_SREGS, &k) < 0 || ioctl(c->fd, KVM_SET_REGS, &r) < 0)
        return -errno;

    struct kvm_fpu fpu;
    memset(&fpu, 0, sizeof(fpu));
    fpu.fcw = (uint16_t)s->fpu.fcw; fpu.fsw = (uint16_t)s->fpu.fsw;
    fpu.ftwx = (uint8_t)s->fpu.ftw; fpu.last_opcode = (uint16_t)s->fpu.fop;
    fpu.last_ip = s->fpu.fip; fpu.last_dp = s->fpu.fdp;
    fpu.mxcsr = s->fpu.mxcsr ? s->fpu.mxcsr : 0x1f80;   /* 0: a state without SSE */
    memcpy(fpu.fpr, s->fpu.st, sizeof(fpu.fpr));
    memcpy(fpu.xmm, s->fpu.xmm, sizeof(fpu.xmm));
    if (ioctl(c->fd, KVM_SET_FPU, &fpu) < 0)
        return -errno;

    if (s->xcr0 & 1) {                  /* bit 0 (x87) is always set when XCR0 is known */
        struct kvm_xcrs xcrs;
        memset(&xcrs, 0, sizeof(xcrs));
        xcrs.nr_xcrs = 1;
        xcrs.xcrs[0].value = s->xcr0;
        if (ioctl(c->fd, KVM_SET_XCRS, &xcrs) < 0)
            return -errno;
    }

    if (s->nmsrs > HV_CPU_MSRS_MAX)
        return -EINVAL;
    struct kvm_msrs *m = calloc(1, sizeof(*m) + s->nmsrs * sizeof(m->entries[0]));
    if (!m)
        return -ENOMEM;
    m->nmsrs = s->nmsrs;
    for (uint32_t i = 0; i < s->nmsrs; i++) {
        m->entries[i].index = s->msr_index[i];
        m->entries[i].data = s->msr_value[i];
    }
    int n = s->nmsrs ? ioctl(c->fd, KVM_SET_MSRS, m) : 0;
    free(m);
    if (n != (int)s->nmsrs)
        return n < 0 ? -errno : -EINVAL;     /* an MSR this KVM refuses */

    struct kvm_vcpu_events ev;
    if (ioctl(c->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
        return -errno;
    ev.interrupt.shadow = (uint8_t)s->interrupt_shadow;
    ev.interrupt.injected = s->injected_vector >= 0;
    ev.interrupt.nr = s->injected_vector >= 0 ? (uint8_t)s->injected_vector : 0;
    ev.interrupt.soft = 0;
    ev.flags = KVM_VCPUEVENT_VALID_SHADOW;
    if (ioctl(c->fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
        return -errno;

    /* The sync page mirrors what KVM now holds; nothing of it is dirty. */
    if (ioctl(c->fd, KVM_GET_REGS, &c->run->s.regs.regs) < 0 ||
        ioctl(c->fd, KVM_GET_SREGS, &c->run->s.regs.sregs) < 0)
        return -errno;
    c->run->kvm_dirty_regs = 0;
    c->run->if_flag = 0;            /* no exit has said yet: an upcall waits for a window */
    c->run->ready_for_interrupt_injection = 0;
    return 0;
}
