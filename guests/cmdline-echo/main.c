/*
 * cmdline-echo - print the command line the loader handed over, then exit 0.
 *
 * The line is bracketed so the host can tell an empty command line from a
 * missing one and see leading/trailing blanks:
 *     cmdline: [console=hvc0 foo=bar]
 * Same output under hv (--cmdline) and under stock QEMU (-append).
 */
#include "kernel.h"
#include "printf.h"
#include "result.h"
#include "start_info.h"

int main(void)
{
    printf("cmdline: [%s]\n", start_info_cmdline());
    return GUEST_RESULT_SUCCESS;
}
