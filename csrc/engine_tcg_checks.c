/*
 * engine_tcg_checks.c - the checks QEMU 5.0 (in Unicorn 2.1.4) leaves out
 * of privileged instructions, made by hv at no cost on the hot path.
 *
 * T:488 QEMU accepts a MOV to CR0, CR3, CR4 or CR8 with reserved bits set
 * (a CPU raises #GP(0)), and SYSRETQ to a non-canonical RCX goes to ring 3
 * and faults there (Intel, whose CPU model Unicorn presents, raises #GP(0)
 * in ring 0 before anything changes).  Unicorn has no hook for either
 * instruction, and a code hook on every instruction would cost the guest
 * most of its speed.  Both instructions end their translation block in
 * QEMU, so they are always a block's *last* instruction, and a block is
 * translated before it first runs:
 *
 *  1. UC_HOOK_EDGE_GENERATED runs after each new block is translated and
 *     before it runs.  The block's last bytes are looked at: `0F 22 /r`
 *     (MOV to CRn) or `0F 07` (SYSRET), perhaps after a REX prefix.  If so
 *     the emulator is stopped at that block's start, before any of it runs.
 *  2. Between runs, a code hook is added on exactly that instruction's
 *     address (and on the prefix's, as the byte before could be either) and
 *     the block is dropped from Unicorn's cache, so it is translated again
 *     with the hook.  A hook on an address that is not an instruction's
 *     start never fires.
 *  3. The hook decodes the instruction at RIP, computes what the CPU would
 *     check (SDM vol. 2B, MOV to/from control registers; SYSRET) and raises
 *     #GP(0) at the instruction, or lets QEMU run it.
 *
 * Steady-state cost: nothing for blocks without these instructions, one
 * callback per executed MOV to CR or SYSRET.  The very first block a vCPU
 * translates is not looked at (Unicorn reports an edge only once a block
 * has run): hv's boot entry, whose checks would pass anyway.
 */
#include <stdlib.h>
#include <string.h>
#include "engine_tcg.h"

#define VECTOR_GP 13
#define MSR_EFER  0xc0000080
#define EFER_LMA  (1ull << 10)
#define CR0_PE    (1ull << 0)
#define CR0_NW    (1ull << 29)
#define CR0_CD    (1ull << 30)
#define CR0_PG    (1ull << 31)
#define CR4_PAE   (1ull << 5)
#define CR4_PCIDE (1ull << 17)

static const int gpr_ids[16] = {
    UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_RBX,
    UC_X86_REG_RSP, UC_X86_REG_RBP, UC_X86_REG_RSI, UC_X86_REG_RDI,
    UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
    UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15,
};

static int is_rex(uint8_t b) { return (b & 0xf0) == 0x40; }

/* ---- 1. A new block: does it end with one of ours? ------------------------ */

static void on_new_block(uc_engine *uc, uc_tb *cur, uc_tb *prev, void *user)
{
    struct tcg_vcpu *c = user;
    (void)uc; (void)prev;
    uint64_t end = cur->pc + cur->size;
    uint8_t tail[3] = {0};
    unsigned n = cur->size < 3 ? cur->size : 3;    /* the block's own bytes only */
    if (n < 2 || c->host->read_guest(c->owner, end - n, tail + 3 - n, n))
        return;
    uint64_t at;
    if (n == 3 && tail[0] == 0x0f && tail[1] == 0x22)
        at = end - 3;                               /* MOV to CRn (any ModRM: mod is ignored) */
    else if (tail[1] == 0x0f && tail[2] == 0x07)
        at = end - 2;                               /* SYSRET */
    else
        return;
    for (unsigned i = 0; i < c->checked_n; i++)
        if (c->checked[i] == at)
            return;                 /* hooked already: a retranslation */
    c->check_pending = at;
    c->check_block = cur->pc;
    c->check_block_end = end;
    tcg_request_stop(c, STOP_LOOP);
    uc_emu_stop(uc);                /* at the block's start: nothing of it has run */
}

/* ---- 3. The instruction, about to run ------------------------------------- */

static uint64_t msr(uc_engine *uc, uint32_t index)
{
    uc_x86_msr m = { .rid = index };
    uc_reg_read(uc, UC_X86_REG_MSR, &m);
    return m.value;
}

/* MAXPHYADDR as the guest's CPUID reports it (leaf 0x80000008). */
static unsigned phys_bits(struct tcg_vcpu *c)
{
    uint32_t r[4];
    if (c->host->cpuid(c->owner, 0x80000008, 0, r) && (r[0] & 0xff))
        return r[0] & 0xff;
    return tcg_model_phys_bits();
}

/* CR4 bits this CPU has, from the guest's CPUID (SDM vol. 3A, 2.5). */
static uint64_t cr4_known(struct tcg_vcpu *c)
{
    uint32_t l1[4], l7[4];
    if (!c->host->cpuid(c->owner, 1, 0, l1))
        tcg_model_cpuid(1, 0, l1);
    if (!c->host->cpuid(c->owner, 7, 0, l7))
        tcg_model_cpuid(7, 0, l7);
    uint64_t known = 0x7ff;         /* VME..OSXMMEXCPT: every 64-bit CPU */
    const struct { unsigned bit; uint32_t reg, mask; } by_cpuid[] = {
        { 11, l7[2], 1u << 2 },     /* UMIP */
        { 12, l7[2], 1u << 16 },    /* LA57 */
        { 13, l1[2], 1u << 5 },     /* VMXE */
        { 14, l1[2], 1u << 6 },     /* SMXE */
        { 16, l7[1], 1u << 0 },     /* FSGSBASE */
        { 17, l1[2], 1u << 17 },    /* PCIDE */
        { 18, l1[2], 1u << 26 },    /* OSXSAVE */
        { 20, l7[1], 1u << 7 },     /* SMEP */
        { 21, l7[1], 1u << 20 },    /* SMAP */
        { 22, l7[2], 1u << 3 },     /* PKE */
    };
    for (size_t i = 0; i < sizeof(by_cpuid) / sizeof(by_cpuid[0]); i++)
        if (by_cpuid[i].reg & by_cpuid[i].mask)
            known |= 1ull << by_cpuid[i].bit;
    return known;
}

/* 1 if MOV to control register `cr` of `value` raises #GP(0) here. */
static int cr_write_faults(struct tcg_vcpu *c, unsigned cr, uint64_t value)
{
    uc_engine *uc = c->uc;
    int long_mode = !!(msr(uc, MSR_EFER) & EFER_LMA);
    switch (cr) {
    case 0:
        return (value >> 32) != 0 ||
               ((value & CR0_PG) && !(value & CR0_PE)) ||
               ((value & CR0_NW) && !(value & CR0_CD)) ||
               (long_mode && !(value & CR0_PG));       /* leaving long mode this way */
    case 3: {
        uint64_t cr4 = tcg_read_reg(uc, UC_X86_REG_CR4);
        if (cr4 & CR4_PCIDE)
            value &= ~(1ull << 63);                     /* "no flush", not stored */
        return long_mode && (value >> phys_bits(c)) != 0;
    }
    case 4:
        return (value & ~cr4_known(c)) != 0 ||
               (long_mode && !(value & CR4_PAE)) ||
               ((value & CR4_PCIDE) && !(tcg_read_reg(uc, UC_X86_REG_CR4) & CR4_PCIDE) &&
                (!long_mode || (tcg_read_reg(uc, UC_X86_REG_CR3) & 0xfff)));
    case 8:
        return (value >> 4) != 0;
    default:
        return 0;                   /* CR1, CR5-7, CR9-15: QEMU's own #UD */
    }
}

static int canonical(uint64_t va)
{
    return (uint64_t)((int64_t)(va << 16) >> 16) == va;
}

static void on_checked_instruction(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    struct tcg_vcpu *c = user;
    uint8_t insn[4] = {0};
    if (size > sizeof(insn) || c->host->read_guest(c->owner, address, insn, size))
        return;
    if ((tcg_read_reg(uc, UC_X86_REG_CS) & 3) != 0)
        return;                     /* not CPL 0: QEMU raises #GP(0) itself */
    unsigned rex = is_rex(insn[0]) ? insn[0] : 0, op = rex ? 1 : 0;
    if (insn[op] != 0x0f)
        return;
    if (insn[op + 1] == 0x22 && size == op + 3u) {
        uint8_t modrm = insn[op + 2];
        unsigned cr = ((modrm >> 3) & 7) | (rex & 4 ? 8 : 0);
        unsigned src = (modrm & 7) | (rex & 1 ? 8 : 0);
        if (cr_write_faults(c, cr, tcg_read_reg(uc, gpr_ids[src])))
            tcg_raise_fault(c, VECTOR_GP, 0);
    } else if (insn[op + 1] == 0x07 && size == op + 2u) {
        /* SYSRETQ (REX.W) returns to RCX; SYSRETL to ECX, always canonical. */
        if ((rex & 8) && (msr(uc, MSR_EFER) & EFER_LMA) &&
            !canonical(tcg_read_reg(uc, UC_X86_REG_RCX)))
            tcg_raise_fault(c, VECTOR_GP, 0);
    }
}

/* ---- 2. Between runs: hook the instruction, drop the stale block ---------- */

int tcg_checks_apply(struct tcg_vcpu *c)
{
    uint64_t at = c->check_pending;
    if (!at)
        return 0;
    c->check_pending = 0;
    if (c->checked_n == c->checked_cap) {
        unsigned cap = c->checked_cap ? 2 * c->checked_cap : 16;
        uint64_t *grown = realloc(c->checked, cap * sizeof(*grown));
        if (!grown)
            return -1;
        c->checked = grown;
        c->checked_cap = cap;
    }
    c->checked[c->checked_n++] = at;
    uint8_t before = 0;
    int prefixed = c->host->read_guest(c->owner, at - 1, &before, 1) == 0 && is_rex(before) &&
                   at - 1 >= c->check_block;
    uc_hook h;
    if (uc_hook_add(c->uc, &h, UC_HOOK_CODE, (void *)on_checked_instruction, c, at, at) ||
        (prefixed && uc_hook_add(c->uc, &h, UC_HOOK_CODE, (void *)on_checked_instruction, c,
                                 at - 1, at - 1)))
        return -1;
    uc_ctl_remove_cache(c->uc, c->check_block, c->check_block_end);
    return 0;
}

int tcg_checks_add(struct tcg_vcpu *c)
{
    uc_hook h;
    return uc_hook_add(c->uc, &h, UC_HOOK_EDGE_GENERATED, (void *)on_new_block, c, 1, 0) ? -1 : 0;
}

void tcg_checks_free(struct tcg_vcpu *c)
{
    free(c->checked);
    c->checked = NULL;
}
