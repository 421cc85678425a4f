/*
 * idt.c - deliver an interrupt or exception through the guest's IDT, in
 * software, the way the CPU does in 64-bit mode (Intel SDM vol. 3, 6.14).
 *
 * T:540 KVM delivers vectors in hardware.  An engine that cannot (Unicorn:
 * it reports CPU exceptions to a hook and has no interrupt controller)
 * leaves delivery to this file, so both engines show the guest the same
 * frame: gate lookup, stack switch (TSS RSP0 on a privilege change, or an
 * IST stack), SS, RSP, RFLAGS, CS, RIP and an error code where the vector
 * has one, IF cleared for an interrupt gate.  Every access goes through the
 * page walker as a supervisor access, like the CPU's own implicit accesses.
 */
#include <string.h>
#include "core.h"

#define EFER_LMA  (1ull << 10)
#define RFLAGS_TF (1ull << 8)
#define RFLAGS_IF (1ull << 9)
#define RFLAGS_NT (1ull << 14)
#define RFLAGS_RF (1ull << 16)
#define RFLAGS_VM (1ull << 17)
#define GATE_INTERRUPT 0xe
#define GATE_TRAP      0xf
#define INSN_HLT 0xf4

/* Exceptions that push an error code (SDM vol. 3, table 6-1).  Unicorn does
 * not report the code itself, so hv pushes 0 (documented in docs/engines.md). */
static int has_error_code(uint8_t vector)
{
    return vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 ||
           vector == 21 || vector == 29 || vector == 30;
}

static int deliver_one(struct hv_vcpu *v, uint8_t vector, int exception)
{
    const struct engine_ops *e = v->partition->engine;
    struct hv_sregs s;
    if (e->get_sregs(v->engine_vcpu, &s) || !(s.efer & EFER_LMA))
        return -1;                      /* only 64-bit mode is delivered */
    if ((uint32_t)vector * 16 + 15 > s.idt_limit)
        return -1;
    uint8_t gate[16];
    if (copy_guest_system(v, s.idt_base + vector * 16u, gate, sizeof(gate), 0))
        return -1;
    uint8_t type = gate[5] & 0xf;
    if (!(gate[5] & 0x80) || (type != GATE_INTERRUPT && type != GATE_TRAP))
        return -1;
    uint64_t handler = (uint64_t)gate[0] | (uint64_t)gate[1] << 8 | (uint64_t)gate[6] << 16 |
                       (uint64_t)gate[7] << 24 | (uint64_t)gate[8] << 32 |
                       (uint64_t)gate[9] << 40 | (uint64_t)gate[10] << 48 |
                       (uint64_t)gate[11] << 56;
    uint16_t selector = (uint16_t)(gate[2] | gate[3] << 8);
    unsigned ist = gate[4] & 7, old_cpl = s.cs & 3, new_cpl = selector & 3;

    struct hv_regs *r = e->regs(v->engine_vcpu);
    uint64_t rsp = r->rsp, rip = r->rip;
    if (ist || new_cpl < old_cpl) {     /* a stack from the TSS */
        uint64_t at = s.tr_base + (ist ? 36 + 8 * (ist - 1) : 4);
        if (copy_guest_system(v, at, &rsp, sizeof(rsp), 0))
            return -1;
    }
    /* An interrupt that arrives while the guest sits on a hlt wakes it: the
     * handler returns after the hlt, as on hardware. */
    uint8_t insn;
    if (!exception && copy_guest_system(v, rip, &insn, 1, 0) == 0 && insn == INSN_HLT)
        rip++;

    uint64_t frame[6];
    unsigned n = 0;
    if (exception && has_error_code(vector))
        frame[n++] = 0;
    frame[n++] = rip;
    frame[n++] = s.cs;
    frame[n++] = r->rflags;
    frame[n++] = r->rsp;
    frame[n++] = s.ss;
    rsp = (rsp & ~0xfull) - n * 8;      /* 64-bit mode aligns the frame to 16 */
    if (copy_guest_system(v, rsp, frame, n * 8, 1))
        return -1;

    uint16_t new_ss = new_cpl < old_cpl ? (uint16_t)new_cpl : s.ss;  /* NULL SS + RPL */
    if (e->load_segments(v->engine_vcpu, selector, new_ss))
        return -1;
    r = e->regs(v->engine_vcpu);        /* reloaded after the segment load */
    r->rsp = rsp;
    r->rip = handler;
    r->rflags &= ~(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM |
                   (type == GATE_INTERRUPT ? RFLAGS_IF : 0));
    e->regs_dirty(v->engine_vcpu);
    return 0;
}

int idt_deliver(struct hv_vcpu *v, uint8_t vector, int exception)
{
    if (deliver_one(v, vector, exception) == 0)
        return 0;
    /* A fault while delivering is a double fault; failing that, the CPU
     * would shut down (triple fault). */
    if (exception && vector != 8 && deliver_one(v, 8, 1) == 0)
        return 0;
    return -1;
}
