/* traps.c - fill the IDT and report unexpected exceptions. */
#include "traps.h"
#include "hv.h"
#include "printf.h"
#include "probe.h"
#include "result.h"
#include "x86.h"

/* A 64-bit IDT gate is two quadwords (SDM Vol. 3A 6.14.1). */
struct idt_gate {
    uint64_t low;   /* offset 15:0, selector, IST, type, offset 31:16 */
    uint64_t high;  /* offset 63:32; zero here: the kernel lives below 4 GiB */
};

static struct idt_gate idt[IDT_ENTRIES] __attribute__((aligned(16)));

static const struct desc_ptr idt_ptr = {
    .limit = sizeof(idt) - 1,
    .base = (uint64_t)idt,
};

extern const char trap_stubs[];

static uint64_t gate_low(uint64_t entry)
{
    return (entry & 0xffff) | ((uint64_t)GDT_CODE64 << 16) |
           ((uint64_t)IDT_GATE_INTR << 40) | ((entry >> 16 & 0xffff) << 48);
}

/*
 * T:335 The IDT cannot be built by the assembler (a gate splits the handler
 * address into pieces), so it is filled here, as cheaply as possible: the
 * stubs are TRAP_STUB_SIZE apart inside one 64 KiB window (entry.S), so
 * gate N is gate 0 plus N * TRAP_STUB_SIZE, and the high halves stay zero
 * from .bss.  Unrolled, that is two instructions per vector.
 */
void traps_init(void)
{
    uint64_t gate = gate_low((uint64_t)trap_stubs);

#pragma GCC unroll 32
    for (int v = 0; v < EXCEPTION_COUNT; v++)
        idt[v].low = gate + (uint64_t)v * TRAP_STUB_SIZE;
    lidt(&idt_ptr);
}

/* A secondary CPU (smp.c) shares the boot CPU's IDT. */
void traps_load(void)
{
    lidt(&idt_ptr);
}

void idt_set_gate(unsigned vector, void (*entry)(void))
{
    idt[vector].low = gate_low((uint64_t)entry);
}

void idt_set_dpl(unsigned vector, unsigned dpl)
{
    idt[vector].low = (idt[vector].low & ~(3ull << 45)) | (uint64_t)(dpl & 3) << 45;
}

/* Every exception comes here (entry.S); only a probe may resume it. */
void trap_entry(struct trap_frame *f)
{
    if (!probe_catch(f))
        trap_fatal(f);
}

/*
 * An exception here means the kernel (or hv, in a test) is broken: say where,
 * then stop as a crash so the parent can tell it from a clean failure.
 */
void trap_fatal(const struct trap_frame *f)
{
    printf("EXCEPTION vector=0x%lx error=0x%lx rip=0x%lx\n", f->vector, f->error, f->rip);
    printf("FAILURE: unexpected exception\n");
    hv_shutdown(HV_SHUTDOWN_CRASH, GUEST_RESULT_FAILURE);
}
