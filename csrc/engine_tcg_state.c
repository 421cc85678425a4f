/*
 * engine_tcg_state.c - QEMU CPU state that Unicorn's API does not reach.
 *
 * T:485 Four fields of QEMU's CPUX86State matter to hv and have no API:
 * old_exception (a stale value turns every later fault into a double fault),
 * the CPL bits of hflags (checked when CS/SS are loaded), and the error code
 * and "software interrupt" flag of the exception being raised (Unicorn's
 * interrupt hook gets only the vector).  Their offsets
 * in a saved CPU context are found once per process by running a scratch
 * CPU and diffing two contexts; then a context save, patch and restore
 * sets them.  If a field is not found (another Unicorn build), hv carries
 * on without the fix, as docs/engines.md describes.  Unicorn is pinned.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unicorn/unicorn.h>
#include "engine_tcg.h"

/* QEMU remembers the last CPU exception (env->old_exception) to turn a
 * second fault into a double fault, and forgets it only when it delivers an
 * exception through the IDT itself -- which Unicorn never does.  Left alone,
 * every exception after the first contributory or page fault would arrive
 * as #DF.  The field is not in Unicorn's API, so find it once in the saved
 * CPU context: the one 32-bit word that goes from -1 to 0 when a divide
 * error (vector 0) is raised, and write -1 back before each entry. */
static long old_exception_offset = -2;      /* -2: not searched, -1: not found */
static long hflags_offset = -2;
static long error_code_offset = -1, is_int_offset = -1;

/* The scratch CPU's fault: saved right there, where QEMU's exception
 * fields are still set (it clears them once the hook returns). */
static void on_calibration_fault(uc_engine *uc, uint32_t intno, void *user)
{
    (void)intno;
    if (user)
        uc_context_save(uc, user);
    uc_emu_stop(uc);
}

/* Run `code` at 0x1000 on a scratch CPU (a GDT at 0x3000 if given, stack at
 * 0x2000) until it faults, and return the offset of the one 32-bit word of
 * the saved context that changed as `changed(was, now)` says; -1 if none
 * or several did. */
long find_context_word(const uint8_t *code, size_t code_len,
                              const uint64_t *gdt, size_t gdt_len, int at_fault,
                              int (*changed)(uint32_t was, uint32_t now))
{
    uc_engine *uc;
    uc_context *before = NULL, *after = NULL;
    uc_hook h;
    long found = -1;
    if (uc_open(UC_ARCH_X86, UC_MODE_64, &uc) != UC_ERR_OK)
        return -1;
    uc_x86_mmr gdtr = { .base = 0x3000, .limit = (uint32_t)gdt_len - 1 };
    uint64_t rsp = 0x2000;
    if (uc_mem_map(uc, 0, 0x10000, UC_PROT_ALL) == UC_ERR_OK &&
        uc_mem_write(uc, 0x1000, code, code_len) == UC_ERR_OK &&
        (!gdt || (uc_mem_write(uc, 0x3000, gdt, gdt_len) == UC_ERR_OK &&
                  uc_reg_write(uc, UC_X86_REG_GDTR, &gdtr) == UC_ERR_OK)) &&
        uc_reg_write(uc, UC_X86_REG_RSP, &rsp) == UC_ERR_OK &&
        uc_context_alloc(uc, &before) == UC_ERR_OK && uc_context_alloc(uc, &after) == UC_ERR_OK &&
        uc_hook_add(uc, &h, UC_HOOK_INTR, (void *)on_calibration_fault,
                    at_fault ? after : NULL, 1, 0) == UC_ERR_OK) {
        uc_context_save(uc, before);
        uc_emu_start(uc, 0x1000, 0x1000 + code_len + 0x1000, 0, 0);
        if (!at_fault)
            uc_context_save(uc, after);
        size_t size = uc_context_size(uc);
        int candidates = 0;
        for (size_t at = 0; at + 4 <= size; at += 4) {
            uint32_t was, now;
            memcpy(&was, (uint8_t *)before + at, 4);
            memcpy(&now, (uint8_t *)after + at, 4);
            if (changed(was, now)) {
                found = (long)at;
                candidates++;
            }
        }
        if (candidates != 1)
            found = -1;
    }
    if (before)
        uc_context_free(before);
    if (after)
        uc_context_free(after);
    uc_close(uc);
    return found;
}

/* old_exception: -1 before, 0 after a divide error (vector 0). */
static int old_exception_changed(uint32_t was, uint32_t now)
{
    return was == 0xffffffffu && now == 0;
}

static void find_old_exception_offset(void)
{
    static const uint8_t divide_by_zero[] = { 0x31, 0xc0, 0xf7, 0xf0 };  /* xor eax,eax; div eax */
    old_exception_offset = find_context_word(divide_by_zero, sizeof(divide_by_zero),
                                             NULL, 0, 0, old_exception_changed);
}

/* Likewise the privilege level: QEMU keeps the CPL in env->hflags and
 * changes it only through its own far transfers and interrupt delivery.
 * Loading CS and SS through Unicorn's API is checked against the *current*
 * CPL, so delivering an interrupt from ring 3 to ring 0 in software needs
 * the CPL set first.  hflags is the word whose low two bits go from 0 to 3
 * (and nothing else) when a scratch CPU irets to ring 3. */
static int hflags_changed(uint32_t was, uint32_t now)
{
    return was != 0 && (was & 3) == 0 && now == (was | 3);
}

static void find_hflags_offset(void)
{
    static const uint64_t gdt[] = {
        0, 0x00af9b000000ffffull, 0x00cf93000000ffffull,    /* null, kernel code64, data */
        0x00cff3000000ffffull, 0x00affb000000ffffull,       /* user data 0x18, code64 0x20 */
    };
    static const uint8_t to_ring3[0x101] = {
        0x6a, 0x1b,                         /* push $0x1b (SS) */
        0x68, 0x00, 0x0f, 0x00, 0x00,       /* push $0xf00 (RSP) */
        0x6a, 0x02,                         /* push $2 (RFLAGS) */
        0x6a, 0x23,                         /* push $0x23 (CS) */
        0x68, 0x00, 0x11, 0x00, 0x00,       /* push $0x1100 (RIP) */
        0x48, 0xcf,                         /* iretq */
        [0x100] = 0xf4,                     /* at 0x1100: hlt at CPL 3 -> #GP stops the run */
    };
    hflags_offset = find_context_word(to_ring3, sizeof(to_ring3), gdt, sizeof(gdt), 0,
                                      hflags_changed);
}

/* Patch QEMU state the API does not reach: forget a pending exception
 * and/or set hflags bits (mask 0: leave them). */
void tcg_patch_cpu_state(struct tcg_vcpu *c, int forget_exception, uint32_t mask, uint32_t bits)
{
    int exception = forget_exception && old_exception_offset >= 0;
    int flags = mask && hflags_offset >= 0;
    if (!exception && !flags)
        return;                     /* not found: see docs/engines.md */
    uc_context *ctx = c->scratch;
    uc_context_save(c->uc, ctx);
    if (exception) {
        const int32_t none = -1;
        memcpy((uint8_t *)ctx + old_exception_offset, &none, 4);
    }
    if (flags) {
        uint32_t hflags;
        memcpy(&hflags, (uint8_t *)ctx + hflags_offset, 4);
        hflags = (hflags & ~mask) | (bits & mask);
        memcpy((uint8_t *)ctx + hflags_offset, &hflags, 4);
    }
    uc_context_restore(c->uc, ctx);
}

int tcg_hflags(struct tcg_vcpu *c, uint32_t *out)
{
    *out = 0;
    if (hflags_offset < 0)
        return -1;
    uc_context_save(c->uc, c->scratch);
    memcpy(out, (uint8_t *)c->scratch + hflags_offset, 4);
    return 0;
}

/* The error code: the word that goes from 0 to 0x1230 when loading DS with
 * selector 0x1230 (from memory, so no register holds it), past the empty
 * GDT's limit, raises #GP(0x1230).  The
 * software-interrupt flag: the word that goes from 0 to 1 at `int $0x40`. */
static int error_code_changed(uint32_t was, uint32_t now)
{
    return was == 0 && now == 0x1230;
}

static int is_int_changed(uint32_t was, uint32_t now)
{
    return was == 0 && now == 1;
}

static void find_exception_offsets(void)
{
    static const uint8_t bad_selector[0x102] = {
        0x8e, 0x1c, 0x25, 0x00, 0x11, 0x00, 0x00,       /* mov 0x1100, %ds */
        [0x100] = 0x30, 0x12,                           /* at 0x1100: selector 0x1230 */
    };
    static const uint8_t int_0x40[] = { 0xcd, 0x40 };
    error_code_offset = find_context_word(bad_selector, sizeof(bad_selector), NULL, 0, 1,
                                          error_code_changed);
    is_int_offset = find_context_word(int_0x40, sizeof(int_0x40), NULL, 0, 1, is_int_changed);
}

void tcg_exception_details(struct tcg_vcpu *c, uint32_t *error_code, int *software)
{
    *error_code = 0;
    *software = 0;
    uc_context *ctx = c->scratch;
    if (error_code_offset < 0 && is_int_offset < 0)
        return;                     /* not found: error code 0 (docs/engines.md) */
    uc_context_save(c->uc, ctx);
    int32_t word;
    if (error_code_offset >= 0) {
        memcpy(&word, (uint8_t *)ctx + error_code_offset, 4);
        *error_code = (uint32_t)word;
    }
    if (is_int_offset >= 0) {
        memcpy(&word, (uint8_t *)ctx + is_int_offset, 4);
        *software = word != 0;
    }
}

/* Unicorn's CPU model: the CPUID leaves engine_tcg_checks.c needs, read
 * by running CPUID on a scratch CPU (a live vCPU cannot be asked). */
static struct { uint32_t leaf, subleaf, r[4]; } model_leaves[] = {
    { 1, 0, {0} }, { 7, 0, {0} }, { 0x80000008, 0, {0} },
};

static void run_model_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4])
{
    static const uint8_t code[] = { 0x0f, 0xa2, 0xf4 };     /* cpuid; hlt */
    static const int ids[4] = { UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX };
    uc_engine *uc;
    memset(r, 0, 4 * sizeof(r[0]));
    if (uc_open(UC_ARCH_X86, UC_MODE_64, &uc) != UC_ERR_OK)
        return;
    uint64_t rax = leaf, rcx = subleaf;
    if (uc_mem_map(uc, 0, 0x2000, UC_PROT_ALL) == UC_ERR_OK &&
        uc_mem_write(uc, 0x1000, code, sizeof(code)) == UC_ERR_OK &&
        uc_reg_write(uc, UC_X86_REG_RAX, &rax) == UC_ERR_OK &&
        uc_reg_write(uc, UC_X86_REG_RCX, &rcx) == UC_ERR_OK &&
        uc_emu_start(uc, 0x1000, 0x1000 + sizeof(code), 0, 0) == UC_ERR_OK)
        for (int i = 0; i < 4; i++) {
            uint32_t v = 0;
            uc_reg_read(uc, ids[i], &v);
            r[i] = v;
        }
    uc_close(uc);
}

void tcg_model_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4])
{
    for (size_t i = 0; i < sizeof(model_leaves) / sizeof(model_leaves[0]); i++)
        if (model_leaves[i].leaf == leaf && model_leaves[i].subleaf == subleaf) {
            memcpy(r, model_leaves[i].r, sizeof(model_leaves[i].r));
            return;
        }
    memset(r, 0, 4 * sizeof(r[0]));
}

unsigned tcg_model_phys_bits(void)
{
    uint32_t r[4];
    tcg_model_cpuid(0x80000008, 0, r);
    return (r[0] & 0xff) ? (r[0] & 0xff) : 36;     /* 36: the SDM's default */
}

static void find_all_offsets(void)
{
    find_old_exception_offset();
    find_hflags_offset();
    find_exception_offsets();
    tcg_find_segment_caches();      /* engine_tcg_snapshot.c */
    for (size_t i = 0; i < sizeof(model_leaves) / sizeof(model_leaves[0]); i++)
        run_model_cpuid(model_leaves[i].leaf, model_leaves[i].subleaf, model_leaves[i].r);
}

/* The offsets are found with scratch CPUs, which must not run inside
 * another CPU's hook: vcpu_create calls this first. */
void tcg_state_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, find_all_offsets);
}
