/* hv.c - find hv, place the hypercall page, shut down. */
#include "hv.h"
#include "hypercall.h"
#include "x86.h"

/* hv writes the stubs here; page aligned because hv is told a frame number. */
uint8_t hypercall_page[HV_PAGE_SIZE] __attribute__((aligned(HV_PAGE_SIZE)));

static bool detected;
static bool ready;

/*
 * T:325 Is this hv?  CPUID leaf HV_CPUID_BASE returns "hvhypervisor" in
 * EBX:ECX:EDX.  Anything else (stock QEMU answers "KVMKVMKVM" or nothing)
 * means no hypercalls: the console and shutdown fall back to the serial
 * port and isa-debug-exit.
 */
void hv_init(void)
{
    uint32_t r[4];

    cpuid(HV_CPUID_BASE, r);
    detected = r[1] == HV_CPUID_SIG_EBX && r[2] == HV_CPUID_SIG_ECX &&
               r[3] == HV_CPUID_SIG_EDX;
    if (!detected)
        return;

    /*
     * T:330 Place the hypercall page: one 32-bit OUT of its frame number.
     * The guest is identity mapped, so the address is the guest-physical
     * one.  hv fills the page during that exit; a frame it refuses leaves
     * the page as it was (zero, .bss), so a non-zero first byte of stub 0
     * tells us the stubs are there.
     */
    outl(HV_PORT_HYPERCALL_PAGE, (uint32_t)((uintptr_t)hypercall_page >> 12));
    ready = hypercall_page[0] != 0;
}

bool hv_detected(void) { return detected; }
bool hv_hypercalls_ready(void) { return ready; }

/*
 * T:395 The end of every run: HV_HC_SHUTDOWN returns only if hv refuses the
 * arguments; then, as after isa-debug-exit, stop here for good.
 */
void hv_shutdown(unsigned reason, unsigned code)
{
    if (ready)
        hv_hypercall2(HV_HC_SHUTDOWN, reason, code);   /* returns only on error */
    else
        outl(QEMU_DEBUG_EXIT, code);
    for (;;) {
        cli();
        hlt();
    }
}
