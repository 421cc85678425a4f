/*
 * asm-defs.c - hands values from hv/abi.h to the assembly files.
 *
 * abi.h is C (it includes stdint.h and declares structs), so start.S cannot
 * include it.  Instead the Makefile compiles this file to assembly and turns
 * each "->NAME value" marker into "#define NAME value" in
 * build/include/asm-defs.h, the way Linux builds asm-offsets.h.  The values
 * therefore come from the compiler, never retyped.  Nothing here is linked.
 */
#include "hv/abi.h"

#define DEFINE(name, value) \
    asm volatile("\n.ascii \"->" #name " %c0\"" : : "i"(value))

void asm_defs(void);

void asm_defs(void)
{
    DEFINE(ASM_PVH_NOTE_ENTRY, HV_PVH_NOTE_ENTRY);
    DEFINE(ASM_PORT_HYPERCALL, HV_PORT_HYPERCALL);
    DEFINE(ASM_HC_VERSION, HV_HC_VERSION);
}
