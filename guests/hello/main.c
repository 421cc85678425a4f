/* hello - the smallest kernel: one line, then a clean power-off. */
#include "console.h"
#include "kernel.h"
#include "result.h"

/*
 * T:385 The smallest kernel.  One console write of a constant: no formatting loop, one exit under hv.
 * The same line on hv and on stock QEMU, so either run can be compared.
 */
int main(void)
{
    static const char hello[] = "Hello from an hv guest!\n";

    console_write(hello, sizeof(hello) - 1);
    return GUEST_RESULT_SUCCESS;
}
