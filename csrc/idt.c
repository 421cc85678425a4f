/*
 * idt.c - deliver an interrupt or exception through the guest's IDT, in
 * software, the way the CPU does in 64-bit mode (Intel SDM vol. 3, 6.12-6.14).
 *
 * T:540 KVM delivers vectors in hardware.  An engine that cannot (Unicorn:
 * it reports CPU exceptions to a hook and has no interrupt controller)
 * leaves delivery to this file, and so does KVM for the software interrupts
 * this machine's KVM gives up on; so every engine shows the guest the same
 * frame: gate lookup, stack switch (TSS RSP0 on a privilege change, or an
 * IST stack), SS, RSP, RFLAGS, CS, RIP and an error code where the vector
 * has one, IF cleared for an interrupt gate.  The checks a CPU makes on the
 * way raise the fault it would: a vector past the IDT limit or a bad gate
 * type is #GP(vector*8+2+EXT), a gate not present #NP, INT n through a gate
 * whose DPL is below the CPL #GP.  A fault while delivering an exception
 * becomes a double fault where the SDM's table 6-5 says so.  Every access
 * goes through the page walker as a supervisor access, like the CPU's own.
 */
#include <string.h>
#include "core.h"
#include "x86_insn.h"

#define EFER_LMA  (1ull << 10)
#define RFLAGS_TF (1ull << 8)
#define RFLAGS_IF (1ull << 9)
#define RFLAGS_NT (1ull << 14)
#define RFLAGS_RF (1ull << 16)
#define RFLAGS_VM (1ull << 17)
#define GATE_INTERRUPT 0xe
#define GATE_TRAP      0xf
#define VECTOR_DF 8
#define VECTOR_NP 11
#define VECTOR_GP 13
#define VECTOR_PF 14

/* Exceptions that push an error code (SDM vol. 3, table 6-1). */
static int has_error_code(uint8_t vector)
{
    return vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 ||
           vector == 21 || vector == 29 || vector == 30;
}

/* SDM vol. 3, table 6-4: divide error, #TS, #NP, #SS, #GP. */
static int contributory(uint8_t vector)
{
    return vector == 0 || (vector >= 10 && vector <= 13);
}

/* A fault found while delivering: the CPU raises it instead. */
struct nested_fault {
    uint8_t  vector;
    uint32_t error_code;
};

/* 0 delivered; 1 a fault the CPU would raise instead (*nested); -1 none
 * can be raised (no long mode, guest memory unreadable). */
static int deliver_one(struct hv_vcpu *v, uint8_t vector, enum idt_source source,
                       uint32_t error_code, struct nested_fault *nested)
{
    const struct engine_ops *e = v->partition->engine;
    struct hv_sregs s;
    if (e->get_sregs(v->engine_vcpu, &s) || !(s.efer & EFER_LMA))
        return -1;                      /* only 64-bit mode is delivered */
    /* The error code of a fault about this IDT entry (SDM vol. 3, 6.13). */
    uint32_t idt_error = vector * 8u + 2 + (source != IDT_SOFTWARE);
    *nested = (struct nested_fault){ VECTOR_GP, idt_error };
    if ((uint32_t)vector * 16 + 15 > s.idt_limit)
        return 1;
    uint8_t gate[16];
    if (copy_guest_system(v, s.idt_base + vector * 16u, gate, sizeof(gate), 0))
        return -1;
    uint8_t type = gate[5] & 0xf;
    unsigned dpl = (gate[5] >> 5) & 3, old_cpl = s.cs & 3;
    if (type != GATE_INTERRUPT && type != GATE_TRAP)
        return 1;
    if (source == IDT_SOFTWARE && old_cpl > dpl)
        return 1;
    if (!(gate[5] & 0x80)) {
        nested->vector = VECTOR_NP;
        return 1;
    }
    uint64_t handler = (uint64_t)gate[0] | (uint64_t)gate[1] << 8 | (uint64_t)gate[6] << 16 |
                       (uint64_t)gate[7] << 24 | (uint64_t)gate[8] << 32 |
                       (uint64_t)gate[9] << 40 | (uint64_t)gate[10] << 48 |
                       (uint64_t)gate[11] << 56;
    uint16_t selector = (uint16_t)(gate[2] | gate[3] << 8);
    unsigned ist = gate[4] & 7, new_cpl = selector & 3;
    uint64_t cs_desc = 0;
    if (copy_guest_system(v, s.gdt_base + (selector & ~7u), &cs_desc, 8, 0))
        return -1;

    struct hv_regs *r = e->regs(v->engine_vcpu);
    uint64_t rsp = r->rsp, rip = r->rip;
    if (ist || new_cpl < old_cpl) {     /* a stack from the TSS */
        uint64_t at = s.tr_base + (ist ? 36 + 8 * (ist - 1) : 4 + 8 * new_cpl);
        if (copy_guest_system(v, at, &rsp, sizeof(rsp), 0))
            return -1;
    }
    /* An interrupt that arrives while the guest sits on a hlt wakes it: the
     * handler returns after the hlt, as on hardware. */
    uint8_t insn;
    if (source == IDT_EXTERNAL && copy_guest_system(v, rip, &insn, 1, 0) == 0 &&
        insn == INSN_HLT)
        rip++;

    uint64_t frame[6];
    unsigned n = 0;
    if (source == IDT_EXCEPTION && has_error_code(vector))
        frame[n++] = error_code;
    frame[n++] = rip;
    frame[n++] = s.cs;
    frame[n++] = r->rflags;
    frame[n++] = r->rsp;
    frame[n++] = s.ss;
    rsp = (rsp & ~0xfull) - n * 8;      /* 64-bit mode aligns the frame to 16 */
    if (copy_guest_system(v, rsp, frame, n * 8, 1))
        return -1;

    uint16_t new_ss = new_cpl < old_cpl ? (uint16_t)new_cpl : s.ss;  /* NULL SS + RPL */
    uint64_t ss_desc = 0;
    if ((new_ss & ~3u) && copy_guest_system(v, s.gdt_base + (new_ss & ~7u), &ss_desc, 8, 0))
        return -1;
    if (e->load_segments(v->engine_vcpu, selector, cs_desc, new_ss, ss_desc))
        return -1;
    r = e->regs(v->engine_vcpu);        /* reloaded after the segment load */
    r->rsp = rsp;
    r->rip = handler;
    r->rflags &= ~(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM |
                   (type == GATE_INTERRUPT ? RFLAGS_IF : 0));
    e->regs_dirty(v->engine_vcpu);
    return 0;
}

/* SDM vol. 3, table 6-5: which second fault turns into a double fault. */
static int double_fault(uint8_t first, enum idt_source source, uint8_t second)
{
    if (source != IDT_EXCEPTION)
        return 0;
    return (contributory(first) && contributory(second)) ||
           (first == VECTOR_PF && (contributory(second) || second == VECTOR_PF));
}

int idt_deliver(struct hv_vcpu *v, uint8_t vector, enum idt_source source,
                uint32_t error_code, uint8_t insn_len)
{
    for (int tries = 0; tries < 3; tries++) {
        struct nested_fault nested;
        int r = deliver_one(v, vector, source, error_code, &nested);
        if (r == 0)
            return 0;
        if (source == IDT_EXTERNAL)
            return -1;                  /* an upcall waits until the IDT is usable */
        if (vector == VECTOR_DF)
            return -1;                  /* a fault delivering #DF: shutdown */
        if (source == IDT_SOFTWARE && insn_len) {
            /* The fault belongs to the INT instruction: RIP back onto it. */
            const struct engine_ops *e = v->partition->engine;
            e->regs(v->engine_vcpu)->rip -= insn_len;
            e->regs_dirty(v->engine_vcpu);
        }
        if (r < 0 || double_fault(vector, source, nested.vector)) {
            vector = VECTOR_DF;
            error_code = 0;
        } else {
            vector = nested.vector;
            error_code = nested.error_code;
        }
        source = IDT_EXCEPTION;
        insn_len = 0;
    }
    return -1;
}
