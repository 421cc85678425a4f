/* engine_tcg.h - the TCG engine's internal pieces shared between its files. */
#ifndef HV_ENGINE_TCG_H
#define HV_ENGINE_TCG_H

#include <unicorn/unicorn.h>

/* engine_tcg_state.c: forget QEMU's pending exception (forget_exception)
 * and/or set the CPL (cpl >= 0).  The caller's register cache is stale
 * afterwards. */
void tcg_patch_cpu_state(uc_engine *uc, int forget_exception, int cpl);

#endif
