/* probe.c - record the exception a probed function raised (probe.h). */
#include "probe.h"
#include "x86.h"

extern uint64_t probe_saved_rsp;
extern volatile uint8_t probe_armed;
extern const char probe_user_done[], probe_resume[];
int probe_enter(probe_fn fn, uint64_t user_rsp, uint64_t rflags);

static struct probe *current;
static uint8_t user_stack[4096] __attribute__((aligned(16)));

int probe_catch(struct trap_frame *f)
{
    if (!probe_armed)
        return 0;
    probe_armed = 0;
    struct probe *p = current;
    if (f->vector == X86_UD && f->rip == (uint64_t)probe_user_done) {
        p->vector = PROBE_NO_FAULT;
    } else {
        p->vector = f->vector;
        p->error = f->error;
        p->rip = f->rip;
        p->cs = f->cs;
        asm volatile("mov %%cr2, %0" : "=r"(p->cr2));
    }
    /* Back to probe_resume, ring 0, on the stack probe_enter saved. */
    f->rip = (uint64_t)probe_resume;
    f->cs = GDT_CODE64;
    f->rflags = 0x2;
    f->rsp = probe_saved_rsp;
    f->ss = GDT_DATA;
    return 1;
}

static void run(probe_fn fn, uint64_t user_rsp, uint64_t rflags, struct probe *out)
{
    *out = (struct probe){ .vector = PROBE_NO_FAULT };
    current = out;
    probe_enter(fn, user_rsp, rflags);
    current = 0;
}

void probe_ring0(probe_fn fn, struct probe *out)
{
    run(fn, 0, 0, out);
}

void probe_ring3(probe_fn fn, uint64_t rflags, struct probe *out)
{
    run(fn, (uint64_t)(user_stack + sizeof(user_stack)), rflags | 0x2, out);
}
