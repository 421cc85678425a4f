/*
 * result.h - how a guest kernel's run ended: its exit (shutdown) code.
 *
 * T:380 XTF's runner convention, shared with the host side (which reads these
 * #defines from this file): every test kernel prints exactly one result line,
 * last, and shuts down with the matching code:
 *
 *   SUCCESS        0   the test passed (also a plain kernel's clean exit)
 *   SKIP: why      3   the test cannot run here (e.g. not under hv)
 *   ERROR: why     4   the test or its environment is broken
 *   FAILURE: why   5   the hypervisor did something wrong
 *
 * All four use reason HV_SHUTDOWN_POWEROFF.  An unexpected CPU exception
 * prints "EXCEPTION vector=0x.. error=0x.. rip=0x.." and "FAILURE: ..." and
 * shuts down with reason HV_SHUTDOWN_CRASH, code GUEST_RESULT_FAILURE.
 * Under stock QEMU the code goes to isa-debug-exit instead, and QEMU exits
 * with status (code << 1) | 1: 1, 7, 9, 11.
 */
#ifndef GUEST_RESULT_H
#define GUEST_RESULT_H

#define GUEST_RESULT_SUCCESS 0
#define GUEST_RESULT_SKIP    3
#define GUEST_RESULT_ERROR   4
#define GUEST_RESULT_FAILURE 5

#endif
