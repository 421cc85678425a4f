/* console.c - bytes out: hv's console hypercall, or the serial port. */
#include "console.h"
#include "hv.h"
#include "hypercall.h"
#include "x86.h"

/*
 * T:350 Under hv a whole buffer is one HV_HC_CONSOLE_WRITE (one exit).
 * Elsewhere (stock QEMU) the bytes go to COM1's data register; QEMU's 16550
 * needs no set-up to print, and REP OUTSB is a single exit on KVM.
 */
void console_write(const char *s, size_t len)
{
    if (!hv_hypercalls_ready()) {
        outsb(SERIAL_COM1, s, len);
        return;
    }
    while (len > 0) {
        size_t n = len < HV_CONSOLE_WRITE_MAX ? len : HV_CONSOLE_WRITE_MAX;

        hv_hypercall2(HV_HC_CONSOLE_WRITE, (uintptr_t)s, n);
        s += n;
        len -= n;
    }
}
