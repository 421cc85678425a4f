/*
 * engine_tcg_exceptions.c - CPU exceptions, software interrupts and
 * SYSCALL on the TCG engine.
 *
 * T:487 Unicorn hands every exception and `int n` to an interrupt hook with
 * the vector only; the core delivers it through the guest's IDT (idt.c).
 * What a CPU would also tell the handler is recovered here:
 *
 *  - the error code and whether it is a software interrupt (INT n, INT3,
 *    INTO: no error code, RIP already past it, the gate's DPL is checked)
 *    come from QEMU's own exception state (engine_tcg_state.c);
 *  - CR2 is QEMU's own (set on the #PF); engine_tcg.c's choice of `until`
 *    keeps Unicorn from overwriting it when uc_emu_start() returns;
 *  - SYSCALL: Unicorn leaves the transition to a hook; the engine stops
 *    after the instruction (it ends its block) and performs it between
 *    runs (SDM vol. 2B, SYSCALL).  SYSRET is QEMU's own.
 */
#include <errno.h>
#include "engine_tcg.h"
#include "x86_insn.h"

#define MSR_EFER   0xc0000080
#define MSR_STAR   0xc0000081
#define MSR_LSTAR  0xc0000082
#define MSR_FMASK  0xc0000084
#define EFER_SCE   (1ull << 0)
#define EFER_LMA   (1ull << 10)
#define RFLAGS_RF  (1ull << 16)
#define VECTOR_UD  6
#define VECTOR_BP  3
#define VECTOR_OF  4

static uint64_t read_msr(uc_engine *uc, uint32_t index)
{
    uc_x86_msr msr = { .rid = index };
    uc_reg_read(uc, UC_X86_REG_MSR, &msr);
    return msr.value;
}

/* The length of the INT3 / INTO / INT n that ends just before `rip`. */
static uint8_t software_int_length(struct tcg_vcpu *c, uint32_t vector, uint64_t rip)
{
    uint8_t last = 0;
    if ((vector == VECTOR_BP || vector == VECTOR_OF) &&
        c->host->read_guest(c->owner, rip - 1, &last, 1) == 0 &&
        last == (vector == VECTOR_BP ? INSN_INT3 : INSN_INTO))
        return 1;
    return 2;                       /* int imm8 */
}

static void tcg_on_interrupt(uc_engine *uc, uint32_t intno, void *user)
{
    struct tcg_vcpu *c = user;
    struct tcg_exception *e = &c->exception;
    tcg_exception_details(c, &e->error_code, &e->software);
    e->vector = intno;
    e->insn_len = 0;
    if (e->software) {
        e->error_code = 0;
        e->insn_len = software_int_length(c, intno, tcg_read_reg(uc, UC_X86_REG_RIP));
    }
    c->stop = STOP_EXCEPTION;
    uc_emu_stop(uc);                /* between blocks: QEMU left the TB already */
}

void tcg_raise_fault(struct tcg_vcpu *c, uint32_t vector, uint32_t error_code)
{
    /* Inside an instruction hook RIP is the instruction's own address
     * (Unicorn syncs it before the hook).  Writing it back makes QEMU stop
     * at its next exit check without recomputing RIP, and the fault is
     * reported there. */
    uint64_t rip = tcg_read_reg(c->uc, UC_X86_REG_RIP);
    c->exception = (struct tcg_exception){ .vector = vector, .error_code = error_code };
    c->stop = STOP_EXCEPTION;
    uc_reg_write(c->uc, UC_X86_REG_RIP, &rip);
    uc_emu_stop(c->uc);
    c->regs_valid = 0;
}

/* SYSCALL ends its translation block, so the stop comes right after it,
 * with RIP past the instruction: tcg_syscall() then does the transition. */
static void tcg_on_syscall(uc_engine *uc, void *user)
{
    struct tcg_vcpu *c = user;
    (void)uc;
    c->syscall_pending = 1;
    tcg_request_stop(c, STOP_LOOP);
}

/* SDM vol. 2B, SYSCALL, 64-bit mode: RCX = next RIP, R11 = RFLAGS,
 * RFLAGS &= ~FMASK, CS = STAR[47:32], SS = that + 8, CPL 0, RIP = LSTAR.
 * #UD if EFER.SCE is 0 or the CPU is not in 64-bit mode: Intel, whose CPU
 * model Unicorn presents, has no SYSCALL in compatibility mode (AMD goes
 * to CSTAR there; QEMU did that, and hv went to LSTAR). */
int tcg_syscall(struct tcg_vcpu *c, struct engine_exit *exit)
{
    uc_engine *uc = c->uc;
    c->syscall_pending = 0;
    uint64_t efer = read_msr(uc, MSR_EFER), next = tcg_read_reg(uc, UC_X86_REG_RIP);
    uint32_t hflags;
    int compat = tcg_hflags(c, &hflags) == 0 && !(hflags & TCG_HF_CS64);
    if (!(efer & EFER_SCE) || !(efer & EFER_LMA) || compat) {
        uint64_t at = next - 2;     /* the fault is at the instruction */
        uc_reg_write(uc, UC_X86_REG_RIP, &at);
        c->regs_valid = 0;
        exit->kind = ENGINE_EXIT_EXCEPTION;
        exit->value = VECTOR_UD;
        return 1;
    }
    uint64_t star = read_msr(uc, MSR_STAR), lstar = read_msr(uc, MSR_LSTAR);
    uint64_t fmask = read_msr(uc, MSR_FMASK);
    uint64_t rflags = tcg_read_reg(uc, UC_X86_REG_RFLAGS) & ~RFLAGS_RF;
    uint64_t new_rflags = rflags & ~fmask;
    uint64_t cs = (star >> 32) & 0xfffc, ss = cs + 8;
    tcg_patch_cpu_state(c, 0, TCG_HF_CPL | TCG_HF_CS64 | TCG_HF_CS32 | TCG_HF_SS32,
                        TCG_HF_CS64 | TCG_HF_CS32 | TCG_HF_SS32);   /* CPL 0, 64-bit */
    uc_reg_write(uc, UC_X86_REG_RCX, &next);
    uc_reg_write(uc, UC_X86_REG_R11, &rflags);
    uc_reg_write(uc, UC_X86_REG_CS, &cs);
    uc_reg_write(uc, UC_X86_REG_SS, &ss);
    /* SYSCALL's fixed caches (SDM vol. 2B): flat 64-bit code, flat data. */
    tcg_load_segment_caches(c, (uint16_t)cs, 0x00af9b000000ffffull, (uint16_t)ss,
                            0x00cf93000000ffffull);
    uc_reg_write(uc, UC_X86_REG_RFLAGS, &new_rflags);
    uc_reg_write(uc, UC_X86_REG_RIP, &lstar);
    c->regs_valid = 0;
    return 0;
}

int tcg_exception_hooks_add(struct tcg_vcpu *c)
{
    uc_hook h;
    if (uc_hook_add(c->uc, &h, UC_HOOK_INTR, (void *)tcg_on_interrupt, c, 1, 0) ||
        uc_hook_add(c->uc, &h, UC_HOOK_INSN, (void *)tcg_on_syscall, c, 1, 0, UC_X86_INS_SYSCALL))
        return -EIO;
    return 0;
}
