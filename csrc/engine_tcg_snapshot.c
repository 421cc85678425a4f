/*
 * engine_tcg_snapshot.c - the whole CPU state of a TCG vCPU, for snapshots.
 *
 * T:909 Unicorn's register API reaches almost everything: general and
 * control registers, GDTR/IDTR, LDTR and TR with their caches, the FS/GS
 * bases, MSRs (UC_X86_REG_MSR), x87 and SSE.  Two things it does not:
 *
 *  - The hidden part of CS, SS, DS, ES, FS and GS.  Reading gives the
 *    selector only, and writing one loads it through the guest's GDT, as
 *    a MOV to a segment register would -- which fails for a selector the
 *    guest never reloaded after replacing the GDT it came from (FS and GS
 *    still hold hv's boot GDT selectors in most guests here).  So the
 *    caches are read and written in a saved CPU context, at an offset
 *    found once per process the way engine_tcg_state.c finds its fields:
 *    the word that becomes 0x12345678 when a scratch CPU loads DS from a
 *    descriptor with that base.  The mode bits QEMU derives from CS and
 *    SS when it loads them (16/32/64-bit code, the CPL) are set from the
 *    saved caches in its hflags (engine_tcg_state.c).
 *  - EFER.LMA and the CPL, which QEMU derives.  set_state walks the CPU
 *    from wherever it is to legacy protected mode without paging (as
 *    set_pvh_entry does), then sets EFER, CR4, CR3 and CR0 in the order
 *    a kernel does, so CR0.PG with EFER.LME turns long mode on.
 */
#include <errno.h>
#include <string.h>
#include "engine_tcg.h"

#define MSR_EFER  0xc0000080
#define EFER_LMA  (1ull << 10)
#define CR0_PE    1ull
#define CR0_ET    (1ull << 4)
#define CR0_PG    (1ull << 31)

static uint64_t msr_read(uc_engine *uc, uint32_t index)
{
    uc_x86_msr msr = { .rid = index };
    uc_reg_read(uc, UC_X86_REG_MSR, &msr);
    return msr.value;
}

static int msr_write(uc_engine *uc, uint32_t index, uint64_t value)
{
    uc_x86_msr msr = { .rid = index, .value = value };
    return uc_reg_write(uc, UC_X86_REG_MSR, &msr) == UC_ERR_OK ? 0 : -EINVAL;
}

/* QEMU's SegmentCache: selector u32, base u64, limit u32, flags u32 (the
 * descriptor's high word: type at bit 8), in the order ES CS SS DS FS GS,
 * which is hv's order too. */
#define SEGCACHE_SIZE     24
#define SEGCACHE_SELECTOR 0
#define SEGCACHE_BASE     8
#define SEGCACHE_LIMIT    16
#define SEGCACHE_FLAGS    20
#define PROBE_BASE        0x12345678u
static long segs_offset = -1;

static int probe_base_changed(uint32_t was, uint32_t now)
{
    return was == 0 && now == PROBE_BASE;
}

static void find_segs_offset(void)
{
    static const uint64_t gdt[] = { 0, 0x12cf93345678ffffull };    /* data, base PROBE_BASE */
    static const uint8_t load_ds[] = {
        0xb8, 0x08, 0x00, 0x00, 0x00,       /* mov $0x8, %eax */
        0x8e, 0xd8,                         /* mov %eax, %ds */
        0xcc,                               /* int3: the hook stops the run */
    };
    long base = find_context_word(load_ds, sizeof(load_ds), gdt, sizeof(gdt), 0,
                                  probe_base_changed);
    if (base >= 0)
        segs_offset = base - SEGCACHE_BASE - HV_SEG_DS * SEGCACHE_SIZE;
}

/* A scratch CPU run while another vCPU of the process is mid-run broke
 * that vCPU (a guest paused for a snapshot never woke again), so the
 * search runs with the engine's other searches, in tcg_state_init. */
void tcg_find_segment_caches(void)
{
    find_segs_offset();
}

static int segs_ready(void)
{
    return segs_offset >= 0;
}

static uint32_t attrib_from_flags(uint32_t flags)
{
    uint32_t a = (flags >> 8) & 0xf0ff;
    return a & (1 << 7) ? a : a | HV_SEG_UNUSABLE;
}

static uint32_t flags_from_attrib(uint32_t attrib, uint32_t limit)
{
    return (attrib & 0xf0ff) << 8 | (limit & 0xf0000);
}

/* What QEMU derives from the caches when it loads CS and SS
 * (cpu_x86_load_seg_cache): the CPL, 16/32/64-bit code and stack, and
 * whether DS/ES/SS bases must be added (never in 64-bit mode). */
#define TCG_HF_ADDSEG (1u << 6)    /* DS/ES/SS bases are added (not in 64-bit mode) */
#define SEG_L     (1u << 13)
#define SEG_DB    (1u << 14)

#define MODE_FLAGS (TCG_HF_CPL | TCG_HF_CS32 | TCG_HF_SS32 | TCG_HF_ADDSEG | TCG_HF_CS64)

static uint32_t mode_flags(const struct hv_cpu_state *s)
{
    const struct hv_segment *cs = &s->seg[HV_SEG_CS], *ss = &s->seg[HV_SEG_SS];
    uint32_t f = (uint32_t)(ss->attrib >> 5 & 3);       /* CPL = SS.DPL */
    if ((s->efer & EFER_LMA) && (cs->attrib & SEG_L))
        return f | TCG_HF_CS32 | TCG_HF_SS32 | TCG_HF_CS64;
    f |= cs->attrib & SEG_DB ? TCG_HF_CS32 : 0;
    f |= ss->attrib & SEG_DB ? TCG_HF_SS32 : 0;
    if (!(s->cr0 & CR0_PE) || !(f & TCG_HF_CS32) ||
        (s->seg[HV_SEG_DS].base | s->seg[HV_SEG_ES].base | s->seg[HV_SEG_SS].base))
        f |= TCG_HF_ADDSEG;
    return f;
}

static void segments_get(struct tcg_vcpu *c, struct hv_cpu_state *s)
{
    uc_context *ctx = c->scratch;
    uc_context_save(c->uc, ctx);
    for (int i = HV_SEG_ES; i <= HV_SEG_GS; i++) {
        const uint8_t *at = (const uint8_t *)ctx + segs_offset + i * SEGCACHE_SIZE;
        uint32_t flags;
        memcpy(&s->seg[i].selector, at + SEGCACHE_SELECTOR, 4);
        memcpy(&s->seg[i].base, at + SEGCACHE_BASE, 8);
        memcpy(&s->seg[i].limit, at + SEGCACHE_LIMIT, 4);
        memcpy(&flags, at + SEGCACHE_FLAGS, 4);
        s->seg[i].attrib = attrib_from_flags(flags);
    }
    /* A null SS in 64-bit mode (after an interrupt to ring 0) is usable,
     * with DPL = RPL: the CPL, which KVM reads from SS.DPL. */
    struct hv_segment *ss = &s->seg[HV_SEG_SS];
    if ((ss->attrib & HV_SEG_UNUSABLE) && (ss->selector & ~3u) == 0)
        ss->attrib = 3 | 1 << 4 | (ss->selector & 3u) << 5 | 1 << 7 | 1 << 14 | 1 << 15;
}

static void segments_put(struct tcg_vcpu *c, const struct hv_cpu_state *s)
{
    uc_context *ctx = c->scratch;
    uc_context_save(c->uc, ctx);
    for (int i = HV_SEG_ES; i <= HV_SEG_GS; i++) {
        uint8_t *at = (uint8_t *)ctx + segs_offset + i * SEGCACHE_SIZE;
        uint32_t flags = s->seg[i].attrib & HV_SEG_UNUSABLE ? 0
                         : flags_from_attrib(s->seg[i].attrib, s->seg[i].limit);
        memcpy(at + SEGCACHE_SELECTOR, &s->seg[i].selector, 4);
        memcpy(at + SEGCACHE_BASE, &s->seg[i].base, 8);
        memcpy(at + SEGCACHE_LIMIT, &s->seg[i].limit, 4);
        memcpy(at + SEGCACHE_FLAGS, &flags, 4);
    }
    uc_context_restore(c->uc, ctx);
}

/* The flat segments of the PVH entry (32-bit code) and of vcpu_up (long
 * mode, 64-bit code; engine_tcg.c's set_pvh_entry and set_long_entry):
 * writing a selector through Unicorn's API sets the selector alone, so
 * the caches are filled here, as the CPU would have filled them from hv's
 * boot GDT -- a snapshot taken before the guest reloads its segments must
 * find real caches, not zeros (an SMP vCPU saved in its first
 * instructions after vcpu_up was restored with an unusable CS). */
int tcg_load_flat_segments(struct tcg_vcpu *c, uint16_t code, uint16_t data, int long_mode)
{
    if (!segs_ready())
        return -ENOTSUP;
    struct hv_cpu_state s = { .cr0 = CR0_PE | CR0_ET | (long_mode ? CR0_PG : 0),
                              .efer = long_mode ? EFER_LMA : 0 };
    for (int i = HV_SEG_ES; i <= HV_SEG_GS; i++)
        s.seg[i] = (struct hv_segment){ .limit = 0xffffffff, .selector = data,
                                        .attrib = 0x3 | 1 << 4 | 1 << 7 | SEG_DB | 1 << 15 };
    s.seg[HV_SEG_CS].selector = code;
    s.seg[HV_SEG_CS].attrib = 0xb | 1 << 4 | 1 << 7 | (long_mode ? SEG_L : SEG_DB) | 1 << 15;
    segments_put(c, &s);
    tcg_patch_cpu_state(c, 0, MODE_FLAGS, mode_flags(&s));
    return 0;
}

/* A segment cache as the CPU fills it from a GDT descriptor (SDM vol. 3,
 * 3.4.5); a null SS (a 64-bit interrupt to an inner ring) is usable with
 * DPL = RPL, as in engine_kvm.c. */
static struct hv_segment cache_from_descriptor(uint16_t selector, uint64_t d, int is_ss)
{
    if ((selector & ~3u) == 0)
        return (struct hv_segment){ .selector = selector, .limit = is_ss ? 0xffffffff : 0,
                                    .attrib = is_ss ? (3 | 1 << 4 | (selector & 3u) << 5 | 1 << 7 |
                                                       SEG_DB | 1 << 15)
                                                    : HV_SEG_UNUSABLE };
    struct hv_segment h = {
        .selector = selector,
        .base = (d >> 16 & 0xffffff) | (d >> 56 & 0xff) << 24,
        .limit = (uint32_t)((d & 0xffff) | (d >> 32 & 0xf0000)),
        .attrib = ((uint32_t)(d >> 40) & 0xf0ff) | 1,   /* loading sets "accessed" */
    };
    if (h.attrib & (1 << 15))
        h.limit = h.limit << 12 | 0xfff;
    return h;
}

/* Software interrupt delivery (engine_tcg.c's load_segments): the caches
 * of CS and SS from their descriptors, which Unicorn's selector writes
 * leave as they were. */
void tcg_load_segment_caches(struct tcg_vcpu *c, uint16_t cs, uint64_t cs_desc, uint16_t ss,
                             uint64_t ss_desc)
{
    if (!segs_ready())
        return;
    struct hv_cpu_state s;
    segments_get(c, &s);
    s.seg[HV_SEG_CS] = cache_from_descriptor(cs, cs_desc, 0);
    s.seg[HV_SEG_SS] = cache_from_descriptor(ss, ss_desc, 1);
    segments_put(c, &s);
}

/* LDTR and TR: Unicorn hands out the cache (QEMU keeps the descriptor's
 * high word in flags: type at bit 8). */
static struct hv_segment segment_from_mmr(const uc_x86_mmr *m)
{
    return (struct hv_segment){ .base = m->base, .limit = m->limit, .selector = m->selector,
                                .attrib = attrib_from_flags(m->flags) };
}

static uc_x86_mmr segment_to_mmr(const struct hv_segment *h)
{
    return (uc_x86_mmr){ .selector = (uint16_t)h->selector, .base = h->base, .limit = h->limit,
                         .flags = flags_from_attrib(h->attrib, h->limit) };
}

/* FXSAVE's abridged tag (1 = valid) from the full x87 tag word (3 = empty). */
static uint32_t tag_abridge(uint64_t full)
{
    uint32_t ftw = 0;
    for (int i = 0; i < 8; i++)
        if ((full >> (2 * i) & 3) != 3)
            ftw |= 1u << i;
    return ftw;
}

static uint64_t tag_expand(uint32_t ftw)
{
    uint64_t full = 0;
    for (int i = 0; i < 8; i++)
        if (!(ftw & (1u << i)))
            full |= 3ull << (2 * i);
    return full;
}

static void fpu_get(uc_engine *uc, struct hv_fpu *f)
{
    f->fcw = (uint32_t)tcg_read_reg(uc, UC_X86_REG_FPCW) & 0xffff;
    f->fsw = (uint32_t)tcg_read_reg(uc, UC_X86_REG_FPSW) & 0xffff;
    f->ftw = tag_abridge(tcg_read_reg(uc, UC_X86_REG_FPTAG) & 0xffff);
    f->fop = (uint32_t)tcg_read_reg(uc, UC_X86_REG_FOP) & 0x7ff;
    f->fip = tcg_read_reg(uc, UC_X86_REG_FIP);
    f->fdp = tcg_read_reg(uc, UC_X86_REG_FDP);
    f->mxcsr = (uint32_t)tcg_read_reg(uc, UC_X86_REG_MXCSR);
    for (int i = 0; i < 8; i++)
        uc_reg_read(uc, UC_X86_REG_ST0 + i, f->st[i]);      /* 80 bits: mantissa, exponent */
    for (int i = 0; i < 16; i++)
        uc_reg_read(uc, UC_X86_REG_XMM0 + i, f->xmm[i]);
}

static void fpu_set(uc_engine *uc, const struct hv_fpu *f)
{
    uint64_t fcw = f->fcw, fsw = f->fsw, tag = tag_expand(f->ftw), fop = f->fop;
    uint64_t mxcsr = f->mxcsr ? f->mxcsr : 0x1f80;
    uc_reg_write(uc, UC_X86_REG_FPCW, &fcw);
    uc_reg_write(uc, UC_X86_REG_FPSW, &fsw);    /* TOP first: ST(i) is relative to it */
    uc_reg_write(uc, UC_X86_REG_FPTAG, &tag);
    uc_reg_write(uc, UC_X86_REG_FOP, &fop);
    uc_reg_write(uc, UC_X86_REG_FIP, &f->fip);
    uc_reg_write(uc, UC_X86_REG_FDP, &f->fdp);
    uc_reg_write(uc, UC_X86_REG_MXCSR, &mxcsr);
    for (int i = 0; i < 8; i++)
        uc_reg_write(uc, UC_X86_REG_ST0 + i, f->st[i]);
    for (int i = 0; i < 16; i++)
        uc_reg_write(uc, UC_X86_REG_XMM0 + i, f->xmm[i]);
}

int tcg_get_state(void *vp, struct hv_cpu_state *s)
{
    struct tcg_vcpu *c = vp;
    uc_engine *uc = c->uc;
    /* Work the engine owes the guest before its next instruction (port
     * writes queued in a block, a SYSCALL transition) is not CPU state:
     * the caller runs the vCPU on and asks again. */
    if (c->nqueued || c->syscall_pending)
        return -EBUSY;
    if (!segs_ready())
        return -ENOTSUP;            /* another Unicorn build: see the top of the file */
    memset(s, 0, sizeof(*s));
    c->regs_valid = 0;
    s->regs = *engine_tcg_ops.regs(vp);
    uc_x86_mmr gdtr = {0}, idtr = {0}, ldtr = {0}, tr = {0};
    uc_reg_read(uc, UC_X86_REG_GDTR, &gdtr);
    uc_reg_read(uc, UC_X86_REG_IDTR, &idtr);
    uc_reg_read(uc, UC_X86_REG_LDTR, &ldtr);
    uc_reg_read(uc, UC_X86_REG_TR, &tr);
    s->gdt_base = gdtr.base; s->gdt_limit = gdtr.limit;
    s->idt_base = idtr.base; s->idt_limit = idtr.limit;
    s->cr0 = tcg_read_reg(uc, UC_X86_REG_CR0);
    s->cr2 = tcg_read_reg(uc, UC_X86_REG_CR2);
    s->cr3 = tcg_read_reg(uc, UC_X86_REG_CR3);
    s->cr4 = tcg_read_reg(uc, UC_X86_REG_CR4);
    s->cr8 = tcg_read_reg(uc, UC_X86_REG_CR8);
    s->efer = msr_read(uc, MSR_EFER);
    segments_get(c, s);
    s->seg[HV_SEG_LDTR] = segment_from_mmr(&ldtr);
    s->seg[HV_SEG_TR] = segment_from_mmr(&tr);
    for (unsigned i = 0; i < snapshot_nmsrs; i++) {
        s->msr_index[i] = snapshot_msrs[i];
        s->msr_value[i] = msr_read(uc, snapshot_msrs[i]);
    }
    s->nmsrs = snapshot_nmsrs;
    fpu_get(uc, &s->fpu);
    s->injected_vector = -1;        /* the core delivers in software: nothing is in flight */
    uint32_t hflags = 0;
    s->interrupt_shadow = tcg_hflags(c, &hflags) == 0 && (hflags & TCG_HF_INHIBIT_IRQ);
    return 0;
}

int tcg_set_state(void *vp, const struct hv_cpu_state *s)
{
    struct tcg_vcpu *c = vp;
    uc_engine *uc = c->uc;
    if (s->injected_vector >= 0)
        return -EINVAL;             /* snapshot.c delivers it before calling us */
    if (!segs_ready())
        return -ENOTSUP;
    uc_x86_mmr gdtr = { .base = s->gdt_base, .limit = s->gdt_limit };
    uc_x86_mmr idtr = { .base = s->idt_base, .limit = s->idt_limit };
    uc_reg_write(uc, UC_X86_REG_GDTR, &gdtr);
    uc_reg_write(uc, UC_X86_REG_IDTR, &idtr);
    /* To legacy protected mode, paging off: PG 1 -> 0 with LME clear
     * clears LMA (QEMU changes LMA only on a CR0.PG edge). */
    uint64_t legacy_pg = CR0_PG | CR0_ET | CR0_PE, legacy = CR0_ET | CR0_PE, zero = 0;
    if (msr_write(uc, MSR_EFER, 0) ||
        uc_reg_write(uc, UC_X86_REG_CR0, &legacy_pg) || uc_reg_write(uc, UC_X86_REG_CR0, &legacy) ||
        uc_reg_write(uc, UC_X86_REG_CR4, &zero))
        return -EINVAL;
    /* Then as a kernel enters long mode: EFER.LME, CR4.PAE, CR3, CR0.PG. */
    if (msr_write(uc, MSR_EFER, s->efer & ~EFER_LMA) ||
        uc_reg_write(uc, UC_X86_REG_CR4, &s->cr4) || uc_reg_write(uc, UC_X86_REG_CR3, &s->cr3) ||
        uc_reg_write(uc, UC_X86_REG_CR0, &s->cr0) || uc_reg_write(uc, UC_X86_REG_CR2, &s->cr2) ||
        uc_reg_write(uc, UC_X86_REG_CR8, &s->cr8))
        return -EINVAL;
    if ((msr_read(uc, MSR_EFER) & EFER_LMA) != (s->efer & EFER_LMA))
        return -EINVAL;             /* the saved mode is not one this path reaches */
    tcg_patch_cpu_state(c, 1, 0, 0);
    segments_put(c, s);
    tcg_patch_cpu_state(c, 0, MODE_FLAGS | TCG_HF_INHIBIT_IRQ,
                        mode_flags(s) | (s->interrupt_shadow ? TCG_HF_INHIBIT_IRQ : 0));
    uc_x86_mmr ldtr = segment_to_mmr(&s->seg[HV_SEG_LDTR]);
    uc_x86_mmr tr = segment_to_mmr(&s->seg[HV_SEG_TR]);
    uc_reg_write(uc, UC_X86_REG_LDTR, &ldtr);
    uc_reg_write(uc, UC_X86_REG_TR, &tr);
    for (uint32_t i = 0; i < s->nmsrs; i++)
        if (msr_write(uc, s->msr_index[i], s->msr_value[i]))
            return -EINVAL;
    fpu_set(uc, &s->fpu);
    /* Last, so RFLAGS and RIP are exactly the saved ones. */
    c->regs_valid = 0;
    *engine_tcg_ops.regs(vp) = s->regs;
    engine_tcg_ops.regs_dirty(vp);
    c->regs_valid = 0;
    return 0;
}
