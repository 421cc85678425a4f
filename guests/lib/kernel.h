/* kernel.h - what each kernel directory provides to the library. */
#ifndef GUEST_KERNEL_H
#define GUEST_KERNEL_H

/*
 * The kernel's own code, called by kmain() once the machine is set up
 * (long mode, IDT, console).  Its return value is the shutdown code
 * (result.h); test kernels end through test.h instead and do not return.
 */
int main(void);

#endif
