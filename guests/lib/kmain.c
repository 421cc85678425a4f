/* kmain.c - the spine: set the machine up, run the kernel, power off. */
#include "hv.h"
#include "kernel.h"
#include "start_info.h"
#include "traps.h"

void kmain(const struct hv_pvh_start_info *si);

/*
 * T:315 Called by start.S in long mode with IF=0.  Each step is a few
 * instructions; the only exit on the way is placing the hypercall page.
 */
void kmain(const struct hv_pvh_start_info *si)
{
    start_info_init(si);    /* remember the loader's hand-over */
    hv_init();              /* hv or not; the hypercall page; the console */
    traps_init();           /* exceptions report themselves from here on */
    hv_shutdown(HV_SHUTDOWN_POWEROFF, main());
}
