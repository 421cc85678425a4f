/*
 * engine_none.c - an engine that runs nothing.
 *
 * It keeps registers and control registers in memory so tests can drive the
 * dispatcher and the page walker (hv_test_dispatch) on any machine, with or
 * without /dev/kvm.  run() refuses.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "engine.h"

struct none_vcpu {
    struct hv_regs regs;
    struct hv_sregs sregs;
};

static int none_probe(char *why, size_t len)
{
    if (why && len)
        why[0] = '\0';
    return 0;
}

static int none_vm_create(void **vm) { *vm = (void *)1; return 0; }
static int none_map_ram(void *vm, uint64_t gpa, void *host, uint64_t size)
{ (void)vm; (void)gpa; (void)host; (void)size; return 0; }
static void none_vm_destroy(void *vm) { (void)vm; }

static int none_vcpu_create(void *vm, uint32_t id, const struct engine_host *host,
                            struct hv_vcpu *owner, void **out)
{
    (void)vm; (void)id; (void)host; (void)owner;
    struct none_vcpu *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    *out = c;
    return 0;
}

static void none_vcpu_destroy(void *vcpu) { free(vcpu); }
static struct hv_regs *none_regs(void *vcpu) { return &((struct none_vcpu *)vcpu)->regs; }
static void none_regs_dirty(void *vcpu) { (void)vcpu; }

static int none_get_sregs(void *vcpu, struct hv_sregs *s)
{ *s = ((struct none_vcpu *)vcpu)->sregs; return 0; }
static int none_set_sregs(void *vcpu, const struct hv_sregs *s)
{ ((struct none_vcpu *)vcpu)->sregs = *s; return 0; }

static int none_set_pvh_entry(void *vcpu, uint32_t entry, uint32_t info,
                              uint32_t gdt, uint16_t gdt_limit)
{
    struct none_vcpu *c = vcpu;
    memset(c, 0, sizeof(*c));
    c->regs.rip = entry;
    c->regs.rbx = info;
    c->regs.rflags = 2;
    c->sregs.cr0 = 0x11;
    c->sregs.gdt_base = gdt;
    c->sregs.gdt_limit = gdt_limit;
    return 0;
}

static int none_set_long_entry(void *vcpu, const struct hv_vcpu_context *ctx,
                               uint32_t gdt, uint16_t gdt_limit)
{
    struct none_vcpu *c = vcpu;
    memset(&c->regs, 0, sizeof(c->regs));
    c->regs.rip = ctx->rip;
    c->regs.rsp = ctx->rsp;
    c->regs.rdi = ctx->arg;
    c->regs.rflags = 2;
    c->sregs = (struct hv_sregs){ .cr0 = 0x80010031, .cr3 = ctx->cr3, .cr4 = 0x20, .efer = 0xd00,
                                  .gdt_base = gdt, .gdt_limit = gdt_limit,
                                  .cs = HV_VCPU_UP_CS, .ss = HV_VCPU_UP_DS };
    return 0;
}
static void none_flush_tlb(void *vcpu) { (void)vcpu; }
static void none_complete_in(void *vcpu, uint64_t value) { (void)vcpu; (void)value; }
static int none_run(void *vcpu, struct engine_exit *exit)
{ (void)vcpu; (void)exit; return -ENOSYS; }
static int none_interruptible(void *vcpu)
{ return !!(((struct none_vcpu *)vcpu)->regs.rflags & (1u << 9)); }
static int none_inject(void *vcpu, uint8_t vector) { (void)vcpu; (void)vector; return 0; }
static void none_request_window(void *vcpu, int on) { (void)vcpu; (void)on; }
static void none_kick(void *vcpu) { (void)vcpu; }
static int none_load_segments(void *vcpu, uint16_t cs, uint64_t cs_desc, uint16_t ss,
                              uint64_t ss_desc)
{
    struct none_vcpu *c = vcpu;
    (void)cs_desc; (void)ss_desc;
    c->sregs.cs = cs;
    c->sregs.ss = ss;
    return 0;
}

const struct engine_ops engine_none_ops = {
    .name = "none",
    .probe = none_probe,
    .vm_create = none_vm_create,
    .map_ram = none_map_ram,
    .vm_destroy = none_vm_destroy,
    .add_ioeventfd = NULL,
    .vcpu_create = none_vcpu_create,
    .vcpu_destroy = none_vcpu_destroy,
    .regs = none_regs,
    .regs_dirty = none_regs_dirty,
    .read_regs = NULL,              /* the view is already in memory */
    .write_reg = NULL,
    .get_sregs = none_get_sregs,
    .set_sregs = none_set_sregs,
    .set_pvh_entry = none_set_pvh_entry,
    .set_long_entry = none_set_long_entry,
    .flush_tlb = none_flush_tlb,
    .complete_in = none_complete_in,
    .run = none_run,
    .interruptible = none_interruptible,
    .inject = none_inject,
    .load_segments = none_load_segments,
    .request_window = none_request_window,
    .count_instructions = NULL,
    .trace_code = NULL,
    .kick_from_signal = none_kick,
};
