/*
 * engine_tcg.c - QEMU's TCG through Unicorn's C API.
 *
 * T:480 The software engine.  Unicorn translates guest code to host code
 * (~1 G simple instructions/s here, against ~1-2 M for ring-0 code on this
 * machine's software KVM).  Guest RAM is the core's own mmap, handed over
 * with uc_mem_map_ptr (zero-copy).  Two differences from KVM shape this file:
 *
 *  - Port I/O arrives as a hook *inside* the emulator (engine_tcg_io.c).
 *    The hook hands the exit to the core on the spot (host->handle_exit,
 *    engine.h), so a fast hypercall is finished without leaving
 *    uc_emu_start(); only exits for the parent stop it.
 *  - Stops happen only at block boundaries.  uc_emu_stop() called in the
 *    middle of a block (from a signal handler, an I/O or MMIO hook) takes
 *    effect at the next memory access's exit check, and Unicorn 2.1.4 then
 *    resumes at the start of *that* instruction -- after its store already
 *    happened, so it runs twice.  So nothing calls uc_emu_stop() there: a
 *    kick or a hook sets a flag, and a block hook, which runs before the
 *    first instruction of every block, stops the emulator.
 *  - Unicorn has no interrupt controller and reports CPU exceptions to a
 *    hook instead of the guest IDT: inject is NULL, and the core delivers
 *    both through the guest's IDT itself (idt.c).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicorn/unicorn.h>
#include "engine_tcg.h"
#include "x86_insn.h"

/* Register ids in struct hv_regs order. */
static const int reg_ids[] = {
    UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RDX,
    UC_X86_REG_RSI, UC_X86_REG_RDI, UC_X86_REG_RSP, UC_X86_REG_RBP,
    UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
    UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15,
    UC_X86_REG_RIP, UC_X86_REG_RFLAGS,
};
#define NREGS (sizeof(reg_ids) / sizeof(reg_ids[0]))
_Static_assert(NREGS == TCG_NREGS, "one id per hv_regs field");
_Static_assert(NREGS * 8 == sizeof(struct hv_regs), "one id per hv_regs field");

#define MSR_EFER  0xc0000080
#define EFER_LMA  (1ull << 10)
/* uc_emu_start()'s `until`: never reached.  Unicorn walks the guest's page
 * tables for the address just below it, and a walk that faults writes CR2:
 * with UINT64_MAX the guest's CR2 read 0xffff_ffff_ffff_fffe after every
 * return.  A non-canonical address fails the walk with #GP instead, which
 * leaves CR2 alone, and no instruction can ever be fetched there. */
#define RUN_FOREVER 0x8000000000000000ull
#define RFLAGS_IF (1ull << 9)
/* The translated-code buffer of one vCPU.  Unicorn reserves 1 GiB of RWX
 * address space by default, per instance; 64 MiB holds a stock Linux
 * boot's translations (boot time within noise of the default, measured)
 * and when it fills QEMU starts over with an empty cache, which costs
 * only retranslation.  Set before anything makes Unicorn initialise. */
#define TCG_CODE_BUFFER (64u << 20)

/* T:486 The vCPUs of one TCG partition never run at once (the scheduler
 * runs them as a group, interleaved), because Unicorn has no parallel mode.
 * Each has its own Unicorn instance, and translations are per instance: a
 * store by one vCPU to code another has translated does not reach the
 * other's translation cache.  The SDM's rule for cross-modifying code
 * (Vol. 3A 10.1.3) is that the executing CPU runs a serializing
 * instruction after the other has written and before it runs the new
 * code; so a vCPU entered after another vCPU of its partition ran is
 * marked code_stale (last_run), and its next CPUID -- the serializing
 * instruction the hooks see -- drops its translations before the next
 * block.  Dropping them at every switch instead costs ~300 us a switch
 * (retranslation) on this machine. */
struct tcg_vm {
    void *ram;
    uint64_t size;
    struct tcg_vcpu *last_run;  /* the vCPU that entered the emulator last */
};

static int tcg_probe(char *why, size_t len)
{
    if (why && len)
        why[0] = '\0';
    return 0;           /* Unicorn is linked in: always usable */
}

static int tcg_vm_create(void **out)
{
    struct tcg_vm *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return -ENOMEM;
    *out = vm;
    return 0;
}

/* Unicorn binds memory to its single CPU instance: keep it for vcpu_create. */
static int tcg_map_ram(void *vmp, uint64_t gpa, void *host, uint64_t size)
{
    struct tcg_vm *vm = vmp;
    if (gpa != 0 || vm->ram)
        return -EINVAL;
    vm->ram = host;
    vm->size = size;
    return 0;
}

static void tcg_vm_destroy(void *vmp) { free(vmp); }

/* ---- The register view ----------------------------------------------------- */

static struct hv_regs *tcg_regs(void *vp)
{
    struct tcg_vcpu *c = vp;
    if (!c->regs_valid) {
        void *ptrs[NREGS];
        uint64_t *fields = (uint64_t *)&c->regs;
        for (size_t i = 0; i < NREGS; i++)
            ptrs[i] = &fields[i];
        uc_reg_read_batch(c->uc, reg_ids, ptrs, NREGS);
        c->synced = c->regs;
        c->regs_valid = 1;
    }
    return &c->regs;
}

/* Write back only what changed: each uc_reg_write costs, and most exits
 * change RAX alone. */
static void tcg_regs_dirty(void *vp)
{
    struct tcg_vcpu *c = vp;
    const uint64_t *now = (const uint64_t *)&c->regs, *was = (const uint64_t *)&c->synced;
    for (size_t i = 0; i < NREGS; i++)
        if (now[i] != was[i])
            uc_reg_write(c->uc, reg_ids[i], &now[i]);
    c->synced = c->regs;
}

/* A hypercall needs six registers, not eighteen: read just those.  The core
 * asks for the same set every time, so its Unicorn ids are worked out once,
 * with CS after them for the OUT hook's privilege check: each register
 * costs ~40 instructions inside Unicorn, a separate read of CS as much
 * again around it. */
int64_t tcg_prefetch_hypercall(struct tcg_vcpu *c)
{
    if (!c->batch_index)
        return -1;
    uc_reg_read_batch(c->uc, c->batch_ids, c->batch_ptrs, (int)c->batch_n + 1);
    c->batch_fresh = 1;
    return (int64_t)c->batch_vals[c->batch_n];
}

static void tcg_read_regs(void *vp, const uint8_t *index, unsigned n, uint64_t *out)
{
    struct tcg_vcpu *c = vp;
    if (c->batch_fresh) {           /* the OUT hook read them just now */
        c->batch_fresh = 0;
        if (index == c->batch_index && n == c->batch_n) {
            memcpy(out, c->batch_vals, n * sizeof(*out));
            return;
        }
    }
    if (c->regs_valid) {
        const uint64_t *view = (const uint64_t *)&c->regs;
        for (unsigned i = 0; i < n; i++)
            out[i] = view[index[i]];
        return;
    }
    if (index != c->batch_index || n != c->batch_n) {
        if (n > NREGS)
            n = NREGS;
        for (unsigned i = 0; i < n; i++) {
            c->batch_ids[i] = reg_ids[index[i]];
            c->batch_ptrs[i] = &c->batch_vals[i];
        }
        c->batch_ids[n] = UC_X86_REG_CS;
        c->batch_ptrs[n] = &c->batch_vals[n];
        c->batch_index = index;
        c->batch_n = n;
    }
    uc_reg_read_batch(c->uc, c->batch_ids, c->batch_ptrs, (int)n);
    memcpy(out, c->batch_vals, n * sizeof(*out));
}

static void tcg_write_reg(void *vp, uint8_t index, uint64_t value)
{
    struct tcg_vcpu *c = vp;
    c->batch_fresh = 0;
    uc_reg_write(c->uc, reg_ids[index], &value);
    if (c->regs_valid)
        ((uint64_t *)&c->regs)[index] = ((uint64_t *)&c->synced)[index] = value;
}

uint64_t tcg_read_reg(uc_engine *uc, int id)
{
    uint64_t value = 0;
    uc_reg_read(uc, id, &value);
    return value;
}

static uint64_t read_msr(uc_engine *uc, uint32_t index)
{
    uc_x86_msr msr = { .rid = index };
    uc_reg_read(uc, UC_X86_REG_MSR, &msr);
    return msr.value;
}

static int tcg_get_sregs(void *vp, struct hv_sregs *s)
{
    uc_engine *uc = ((struct tcg_vcpu *)vp)->uc;
    uc_x86_mmr idtr = {0}, gdtr = {0}, tr = {0};
    uc_reg_read(uc, UC_X86_REG_IDTR, &idtr);
    uc_reg_read(uc, UC_X86_REG_GDTR, &gdtr);
    uc_reg_read(uc, UC_X86_REG_TR, &tr);
    s->cr0 = tcg_read_reg(uc, UC_X86_REG_CR0);
    s->cr2 = tcg_read_reg(uc, UC_X86_REG_CR2);
    s->cr3 = tcg_read_reg(uc, UC_X86_REG_CR3);
    s->cr4 = tcg_read_reg(uc, UC_X86_REG_CR4);
    s->efer = read_msr(uc, MSR_EFER);
    s->idt_base = idtr.base; s->idt_limit = (uint16_t)idtr.limit;
    s->gdt_base = gdtr.base; s->gdt_limit = (uint16_t)gdtr.limit;
    s->tr_base = tr.base;
    s->cs = (uint16_t)tcg_read_reg(uc, UC_X86_REG_CS);
    s->ss = (uint16_t)tcg_read_reg(uc, UC_X86_REG_SS);
    return 0;
}

static int tcg_set_sregs(void *vp, const struct hv_sregs *s)
{
    struct tcg_vcpu *c = vp;
    uc_x86_mmr idtr = { .base = s->idt_base, .limit = s->idt_limit };
    uc_x86_mmr gdtr = { .base = s->gdt_base, .limit = s->gdt_limit };
    uc_x86_msr efer = { .rid = MSR_EFER, .value = s->efer };
    uc_reg_write(c->uc, UC_X86_REG_IDTR, &idtr);
    uc_reg_write(c->uc, UC_X86_REG_GDTR, &gdtr);
    uc_reg_write(c->uc, UC_X86_REG_MSR, &efer);
    uc_reg_write(c->uc, UC_X86_REG_CR4, &s->cr4);
    uc_reg_write(c->uc, UC_X86_REG_CR3, &s->cr3);
    uc_reg_write(c->uc, UC_X86_REG_CR0, &s->cr0);
    uc_reg_write(c->uc, UC_X86_REG_CR2, &s->cr2);
    c->regs_valid = 0;
    return 0;
}

/* Loading CS and SS for a software-delivered interrupt.  A 64-bit Unicorn
 * writes only the selectors: the descriptor caches and the hflags the
 * translator decodes with stay as they were, so a handler entered from
 * compatibility mode (a 32-bit process) ran its 64-bit code as 32-bit
 * code.  So hv sets QEMU's CPL and code/stack sizes from the descriptors
 * itself, as the CPU's own load would (SDM vol. 3, 5.2.1). */
#define DESC_DB (1ull << 54)
#define DESC_L  (1ull << 53)
static int tcg_load_segments(void *vp, uint16_t cs, uint64_t cs_desc, uint16_t ss,
                             uint64_t ss_desc)
{
    struct tcg_vcpu *c = vp;
    uint64_t cs64 = cs, ss64 = ss;
    uint32_t bits = cs & TCG_HF_CPL;
    if ((cs_desc & DESC_L) && (read_msr(c->uc, MSR_EFER) & EFER_LMA))
        bits |= TCG_HF_CS64 | TCG_HF_CS32 | TCG_HF_SS32;
    else
        bits |= (cs_desc & DESC_DB ? TCG_HF_CS32 : 0) | (ss_desc & DESC_DB ? TCG_HF_SS32 : 0);
    tcg_patch_cpu_state(c, 0, TCG_HF_CPL | TCG_HF_CS64 | TCG_HF_CS32 | TCG_HF_SS32, bits);
    c->regs_valid = 0;
    if (uc_reg_write(c->uc, UC_X86_REG_CS, &cs64) || uc_reg_write(c->uc, UC_X86_REG_SS, &ss64))
        return -EFAULT;
    tcg_load_segment_caches(c, cs, cs_desc, ss, ss_desc);   /* what a snapshot reads */
    return 0;
}

static int tcg_set_pvh_entry(void *vp, uint32_t entry, uint32_t info,
                             uint32_t gdt, uint16_t gdt_limit)
{
    struct tcg_vcpu *c = vp;
    /* Unicorn starts a 64-bit engine in long mode without paging.  EFER.LMA
     * is read-only and QEMU clears it only when CR0.PG goes from 1 to 0, so
     * pass through PG=1 (legacy paging: LME is already 0) on the way to
     * 32-bit protected mode with paging off.  Then load the flat segments
     * from hv's boot GDT (engine_kvm.c sets the same state directly). */
    struct hv_sregs s = { .cr0 = 0x80000011, .gdt_base = gdt, .gdt_limit = gdt_limit };
    tcg_set_sregs(vp, &s);
    s.cr0 = 0x11;
    tcg_set_sregs(vp, &s);
    const int data[] = { UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GS };
    uint64_t data_sel = 0x18;
    /* hv's boot GDT holds flat 32-bit segments: code at 0x10, data at 0x18. */
    if (tcg_load_segments(vp, 0x10, 0x00cf9b000000ffffull, 0x18, 0x00cf93000000ffffull))
        return -EINVAL;
    for (size_t i = 0; i < sizeof(data) / sizeof(data[0]); i++)
        if (uc_reg_write(c->uc, data[i], &data_sel))
            return -EINVAL;
    tcg_load_flat_segments(c, 0x10, 0x18, 0);   /* the caches too (snapshots read them) */
    struct hv_regs *r = tcg_regs(vp);
    memset(r, 0, sizeof(*r));
    r->rip = entry;
    r->rbx = info;
    r->rflags = 0x2;
    tcg_regs_dirty(vp);
    return 0;
}

/* T:484 A secondary vCPU's start (abi.h, "SMP").  Back to the CPU as
 * uc_open made it -- long mode with paging off -- so CS and SS load from
 * the boot GDT by physical address, with the L bit taking effect; then
 * paging on (PG with LME set keeps LMA).  Nothing translated or cached
 * before survives. */
static int tcg_set_long_entry(void *vp, const struct hv_vcpu_context *ctx,
                              uint32_t gdt, uint16_t gdt_limit)
{
    struct tcg_vcpu *c = vp;
    if (uc_context_restore(c->uc, c->pristine) != UC_ERR_OK)
        return -EIO;
    c->regs_valid = 0;
    uc_x86_mmr gdtr = { .base = gdt, .limit = gdt_limit };
    uc_reg_write(c->uc, UC_X86_REG_GDTR, &gdtr);
    uint64_t cs = HV_VCPU_UP_CS, ds = HV_VCPU_UP_DS;
    const int data[] = { UC_X86_REG_SS, UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GS };
    if (uc_reg_write(c->uc, UC_X86_REG_CS, &cs))
        return -EINVAL;
    for (size_t i = 0; i < sizeof(data) / sizeof(data[0]); i++)
        if (uc_reg_write(c->uc, data[i], &ds))
            return -EINVAL;
    struct hv_sregs s = { .cr0 = 0x80010031, .cr3 = ctx->cr3, .cr4 = 0x20, .efer = 0xd00,
                          .gdt_base = gdt, .gdt_limit = gdt_limit };
    tcg_set_sregs(vp, &s);
    tcg_load_flat_segments(c, HV_VCPU_UP_CS, HV_VCPU_UP_DS, 1);   /* caches: snapshots read them */
    struct hv_regs *r = tcg_regs(vp);
    memset(r, 0, sizeof(*r));
    r->rip = ctx->rip;
    r->rsp = ctx->rsp;
    r->rdi = ctx->arg;
    r->rflags = 0x2;
    tcg_regs_dirty(vp);
    uc_ctl_flush_tlb(c->uc);
    uc_ctl_flush_tb(c->uc);
    c->syscall_pending = 0;
    c->nqueued = c->queue_head = 0;
    return 0;
}

static void tcg_flush_tlb(void *vp)
{
    uc_ctl_flush_tlb(((struct tcg_vcpu *)vp)->uc);
}

/* ---- Hooks: called from inside uc_emu_start() ------------------------------ */

/* Stop before the next block runs anything (see the top of the file). */
void tcg_request_stop(struct tcg_vcpu *c, enum tcg_stop why)
{
    if (c->stop == STOP_NONE)
        c->stop = why;
}

/* STI and MOV/POP SS hold interrupts off until the next instruction has
 * run (SDM vol. 3, 6.8.3).  QEMU marks that in hflags and translates that
 * instruction as a block of its own, so the shadow is over at the block
 * start after it.  Read only when an interrupt waits: a context save. */
static int tcg_in_shadow(struct tcg_vcpu *c)
{
    uint32_t hflags;
    return tcg_hflags(c, &hflags) == 0 && (hflags & TCG_HF_INHIBIT_IRQ);
}

/* T:481 Before the first instruction of every translation block: the one
 * place the emulator stops for a kick, a hook's request, or an upcall that
 * became deliverable because the guest set IF (STI, POPF and IRET end their
 * block, so the next block start sees the new IF -- after STI's shadow).
 * It runs for every block, three per null hypercall, so the usual case is
 * one test of three flags and no call: an interrupt is looked for only
 * while `window` says one may wait (tcg_run, tcg_request_window), and
 * anything that makes one wait later either kicks (another thread) or
 * runs in a hook that asks needs_loop (engine_tcg_io.c). */
static void tcg_on_block(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    struct tcg_vcpu *c = user;
    (void)address; (void)size;
    if (__builtin_expect(!(c->stop | c->kicked | c->window), 1))
        return;
    if (c->stop != STOP_NONE || c->kicked) {
        uc_emu_stop(uc);
        return;
    }
    if (!c->host->interrupt_waiting(c->owner)) {
        c->window = 0;              /* delivered meanwhile: nothing to watch for */
        return;
    }
    if ((tcg_read_reg(uc, UC_X86_REG_RFLAGS) & RFLAGS_IF) && !tcg_in_shadow(c)) {
        c->stop = STOP_LOOP;
        uc_emu_stop(uc);
    }
}

static int tcg_on_cpuid(uc_engine *uc, void *user)
{
    uint64_t leaf = tcg_read_reg(uc, UC_X86_REG_RAX) & 0xffffffffu;
    struct tcg_vcpu *c = user;
    uint32_t r[4];
    if (c->code_stale) {            /* serializing: see T:486 */
        c->code_flush = 1;
        tcg_request_stop(c, STOP_LOOP);
    }
    if (leaf >= 0x40000000 && leaf <= 0x4fffffff)
        engine_hv_cpuid((uint32_t)leaf, &r[0], &r[1], &r[2], &r[3]);
    else if (!c->host->cpuid(c->owner, (uint32_t)leaf,
                             (uint32_t)tcg_read_reg(uc, UC_X86_REG_RCX), r))
        return 0;                   /* Unicorn's own CPU model answers (platform.c: the rest) */
    const int ids[4] = { UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RDX };
    for (int i = 0; i < 4; i++) {
        uint64_t v = r[i];
        uc_reg_write(uc, ids[i], &v);
    }
    return 1;                       /* skip the instruction: we answered */
}

static bool tcg_on_unmapped(uc_engine *uc, uc_mem_type type, uint64_t address,
                            int size, int64_t value, void *user)
{
    struct tcg_vcpu *c = user;
    (void)uc; (void)type; (void)size; (void)value;
    c->stop = STOP_UNMAPPED;
    c->bad_address = address;
    return false;                   /* stop: no MMIO devices exist yet */
}

/* Deterministic mode: every instruction counts one nanosecond of virtual
 * time; the timer stops the guest at an exact instruction. */
/* Deterministic mode: RDTSC reads the instruction clock, not the host's
 * TSC (Unicorn 2.1.4 cannot hook RDTSC; this hook sees every instruction
 * anyway).  A 2-byte instruction 0F 31 is answered here and skipped:
 * writing RIP from a code hook resumes there without leaving
 * uc_emu_start().  With CR4.TSD in ring 3 QEMU's own #GP stays. */
#define CR4_TSD (1ull << 2)
static int emulate_rdtsc(struct tcg_vcpu *c, uint64_t address)
{
    uint8_t insn[2];
    if (uc_vmem_read(c->uc, address, UC_PROT_EXEC, insn, 2) != UC_ERR_OK ||
        insn[0] != 0x0f || insn[1] != 0x31)
        return 0;
    if ((tcg_read_reg(c->uc, UC_X86_REG_CR4) & CR4_TSD) &&
        (tcg_read_reg(c->uc, UC_X86_REG_CS) & 3))
        return 0;
    uint64_t tsc = *c->icount, rax = tsc & 0xffffffffu, rdx = tsc >> 32, next = address + 2;
    uc_reg_write(c->uc, UC_X86_REG_RAX, &rax);
    uc_reg_write(c->uc, UC_X86_REG_RDX, &rdx);
    uc_reg_write(c->uc, UC_X86_REG_RIP, &next);
    c->regs_valid = 0;
    return 1;
}

static void tcg_on_instruction(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    struct tcg_vcpu *c = user;
    /* A stop a hook requested: here, before this instruction runs (a stop
     * from a code hook is exact), so it is counted when the guest runs
     * again. */
    if (c->stop != STOP_NONE || c->kicked) {
        uc_emu_stop(uc);
        return;
    }
    uint64_t deadline = *c->icount_deadline;
    if (deadline && *c->icount >= deadline) {
        c->stop = STOP_LOOP;
        uc_emu_stop(uc);
        return;
    }
    if (size == 2)
        emulate_rdtsc(c, address);
    ++*c->icount;
}

/* hv trace --insn: record each instruction in the range (a student's view
 * of what the guest did). */
static void tcg_on_traced_instruction(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    struct tcg_vcpu *c = user;
    (void)uc;
    c->host->trace_insn(c->owner, address, size);
}

static int tcg_trace_code(void *vp, uint64_t start, uint64_t end)
{
    struct tcg_vcpu *c = vp;
    uc_hook h;
    return uc_hook_add(c->uc, &h, UC_HOOK_CODE, (void *)tcg_on_traced_instruction, c, start, end)
           ? -EIO : 0;
}

static int tcg_count_instructions(void *vp, uint64_t *counter, const uint64_t *deadline)
{
    struct tcg_vcpu *c = vp;
    uc_hook h;
    c->icount = counter;
    c->icount_deadline = deadline;
    return uc_hook_add(c->uc, &h, UC_HOOK_CODE, (void *)tcg_on_instruction, c, 1, 0) ? -EIO : 0;
}


static void tcg_vcpu_destroy(void *vp)
{
    struct tcg_vcpu *c = vp;
    if (c->vm && c->vm->last_run == c)
        c->vm->last_run = NULL;
    if (c->pristine)
        uc_context_free(c->pristine);
    if (c->scratch)
        uc_context_free(c->scratch);
    if (c->uc)
        uc_close(c->uc);
    tcg_debug_free(c);
    tcg_checks_free(c);
    free(c->queued);
    free(c);
}

static int tcg_vcpu_create(void *vmp, uint32_t id, const struct engine_host *host,
                           struct hv_vcpu *owner, void **out)
{
    struct tcg_vm *vm = vmp;
    (void)id;
    struct tcg_vcpu *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->host = host;
    c->owner = owner;
    c->vm = vm;
    tcg_state_init();
    uc_hook h;
    if (uc_open(UC_ARCH_X86, UC_MODE_64, &c->uc) != UC_ERR_OK ||
        uc_ctl_set_tcg_buffer_size(c->uc, TCG_CODE_BUFFER) != UC_ERR_OK ||
        uc_context_alloc(c->uc, &c->scratch) != UC_ERR_OK ||
        uc_context_alloc(c->uc, &c->pristine) != UC_ERR_OK ||
        uc_context_save(c->uc, c->pristine) != UC_ERR_OK)
        goto fail;
    if (uc_mem_map_ptr(c->uc, 0, vm->size, UC_PROT_ALL, vm->ram) != UC_ERR_OK ||
        tcg_io_hooks_add(c, vm->size) || tcg_exception_hooks_add(c) || tcg_checks_add(c) ||
        uc_hook_add(c->uc, &h, UC_HOOK_BLOCK, (void *)tcg_on_block, c, 1, 0) ||
        uc_hook_add(c->uc, &h, UC_HOOK_INSN, (void *)tcg_on_cpuid, c, 1, 0, UC_X86_INS_CPUID) ||
        uc_hook_add(c->uc, &h, UC_HOOK_MEM_UNMAPPED, (void *)tcg_on_unmapped, c, 1, 0))
        goto fail;
    *out = c;
    return 0;
fail:
    tcg_vcpu_destroy(c);
    return -EIO;
}

static void tcg_complete_in(void *vp, uint64_t value) { (void)vp; (void)value; }

static int tcg_run(void *vp, struct engine_exit *exit)
{
    struct tcg_vcpu *c = vp;
    if (tcg_io_dequeue(c, exit))    /* writes left over from the last block */
        return 0;
    if (c->syscall_pending && tcg_syscall(c, exit))
        return 0;
    if (c->kicked) {                /* a kick that came before entry */
        c->kicked = 0;
        exit->kind = ENGINE_EXIT_INTERRUPTED;
        return 0;
    }
    /* Faults QEMU took without delivering them (ours are delivered by the
     * core) must not turn the next one into a double fault. */
    tcg_patch_cpu_state(c, 1, 0, 0);
    c->regs_valid = 0;
    if (c->vm->last_run != c) {
        if (c->ran && c->vm->last_run)
            c->code_stale = 1;          /* another vCPU ran: its stores may have changed code */
        c->vm->last_run = c;
    }
    if (c->code_flush) {                /* a CPUID asked for it (tcg_on_cpuid) */
        uc_ctl_flush_tb(c->uc);
        c->code_flush = c->code_stale = 0;
    }
    c->ran = 1;
    if (c->host->interrupt_waiting(c->owner))
        c->window = 1;              /* whatever the core asked: see tcg_on_block */
    uint64_t rip = tcg_regs(vp)->rip;
    c->stop = STOP_NONE;
    c->regs_valid = 0;
    uc_err err = uc_emu_start(c->uc, rip, RUN_FOREVER, 0, 0);
    c->regs_valid = 0;
    if (c->check_pending && tcg_checks_apply(c)) {
        exit->kind = ENGINE_EXIT_FAIL;      /* out of host memory */
        return 0;
    }
    if (c->syscall_pending && c->stop == STOP_LOOP) {
        c->stop = STOP_NONE;
        if (tcg_syscall(c, exit))
            return 0;
        exit->kind = ENGINE_EXIT_WINDOW;    /* look again, then run the kernel */
        return 0;
    }
    switch (c->stop) {
    case STOP_RETURN:
        exit->kind = ENGINE_EXIT_RETURN;
        return 0;
    case STOP_LOOP:
        exit->kind = ENGINE_EXIT_WINDOW;    /* nothing to do but look again */
        return 0;
    case STOP_EXCEPTION:
        exit->kind = ENGINE_EXIT_EXCEPTION;
        exit->value = c->exception.vector;
        exit->error_code = c->exception.error_code;
        exit->software = (uint8_t)c->exception.software;
        exit->insn_len = c->exception.insn_len;
        return 0;
    case STOP_DEBUG:
        tcg_debug_exit(c, exit);
        return 0;
    case STOP_UNMAPPED:
        exit->kind = ENGINE_EXIT_FAIL;
        exit->addr = c->bad_address;
        exit->detail = err;
        return 0;
    case STOP_NONE:
        break;
    }
    if (c->kicked) {
        c->kicked = 0;
        exit->kind = ENGINE_EXIT_INTERRUPTED;
        return 0;
    }
    if (err == UC_ERR_INSN_INVALID) {     /* what the CPU reports as #UD */
        exit->kind = ENGINE_EXIT_EXCEPTION;
        exit->value = 6;
        return 0;
    }
    if (err != UC_ERR_OK) {
        exit->kind = ENGINE_EXIT_FAIL;
        exit->detail = err;
        return 0;
    }
    /* Unicorn returns without a reason after executing hlt. */
    uint8_t insn = 0;
    uint64_t now = tcg_regs(vp)->rip;
    if (c->host->read_guest(c->owner, now - 1, &insn, 1) == 0 && insn == INSN_HLT) {
        exit->kind = ENGINE_EXIT_HLT;
        return 0;
    }
    exit->kind = ENGINE_EXIT_FAIL;
    return 0;
}

static int tcg_interruptible(void *vp)
{
    return (tcg_regs(vp)->rflags & RFLAGS_IF) && !tcg_in_shadow(vp);
}

/* The block hook watches IF while this is set (and tcg_run sets it too
 * whenever an interrupt waits at entry). */
static void tcg_request_window(void *vp, int on)
{
    ((struct tcg_vcpu *)vp)->window = on;
}

/* Only a flag: the block hook stops at the next block boundary.  (Calling
 * uc_emu_stop() here could run the interrupted instruction twice.) */
static void tcg_kick_from_signal(void *vp)
{
    struct tcg_vcpu *c = vp;
    c->kicked = 1;
}

const struct engine_ops engine_tcg_ops = {
    .name = "tcg",
    .guest_rmw_not_host_atomic = 1,     /* Unicorn never runs QEMU's parallel mode */
    .probe = tcg_probe,
    .vm_create = tcg_vm_create,
    .map_ram = tcg_map_ram,
    .vm_destroy = tcg_vm_destroy,
    .add_ioeventfd = NULL,          /* the MMIO callback signals the eventfd */
    .vcpu_create = tcg_vcpu_create,
    .vcpu_destroy = tcg_vcpu_destroy,
    .regs = tcg_regs,
    .regs_dirty = tcg_regs_dirty,
    .read_regs = tcg_read_regs,
    .write_reg = tcg_write_reg,
    .get_sregs = tcg_get_sregs,
    .set_sregs = tcg_set_sregs,
    .set_pvh_entry = tcg_set_pvh_entry,
    .set_long_entry = tcg_set_long_entry,
    .flush_tlb = tcg_flush_tlb,
    .complete_in = tcg_complete_in,
    .run = tcg_run,
    .interruptible = tcg_interruptible,
    .inject = NULL,                 /* the core delivers through the IDT */
    .load_segments = tcg_load_segments,
    .request_window = tcg_request_window,
    .count_instructions = tcg_count_instructions,
    .trace_code = tcg_trace_code,
    .kick_from_signal = tcg_kick_from_signal,
    .set_debug = tcg_set_debug,
    .get_state = tcg_get_state,     /* engine_tcg_snapshot.c */
    .set_state = tcg_set_state,
};
