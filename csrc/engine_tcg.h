/* engine_tcg.h - the TCG engine's pieces shared between its files:
 * engine_tcg.c (registers, the run loop, stops), engine_tcg_io.c (port I/O
 * and the virtio window), engine_tcg_exceptions.c (faults and interrupts
 * Unicorn reports) and engine_tcg_state.c (QEMU state the API misses). */
#ifndef HV_ENGINE_TCG_H
#define HV_ENGINE_TCG_H

#include <signal.h>
#include <unicorn/unicorn.h>
#include "engine.h"

#define TCG_NREGS 18                /* struct hv_regs, in order */

/* Why the emulator must stop at the next block boundary. */
enum tcg_stop {
    STOP_NONE = 0,
    STOP_RETURN,        /* the core filled an exit record for the parent */
    STOP_LOOP,          /* the core must look at pending work (block, events) */
    STOP_EXCEPTION,     /* a CPU exception for software delivery */
    STOP_UNMAPPED,      /* access outside RAM */
    STOP_DEBUG,         /* a debugger's step, breakpoint or watchpoint (engine_tcg_debug.c) */
};

/* A CPU exception as the core will deliver it. */
struct tcg_exception {
    uint32_t vector;
    uint32_t error_code;
    int      software;      /* INT n / INT3 / INTO: RIP is past it, no error code */
    uint8_t  insn_len;      /* of the software interrupt instruction */
};

struct tcg_vm;

struct tcg_vcpu {
    uc_engine *uc;
    uc_context *scratch;        /* engine_tcg_state.c's saved-context window, made once */
    uc_context *pristine;       /* the CPU as uc_open made it (64-bit, paging off): SMP starts */
    struct tcg_vm *vm;
    int ran;                    /* has run guest code */
    int code_stale;             /* another vCPU ran since its translations were dropped */
    int code_flush;             /* a CPUID saw code_stale: drop them before the next block */
    const struct engine_host *host; /* the core, for the hooks (engine.h) */
    struct hv_vcpu *owner;          /* opaque: handed back to host */
    struct hv_regs regs;        /* the view the core reads and writes */
    struct hv_regs synced;      /* what Unicorn holds, for write-back of changes */
    int regs_valid;
    enum tcg_stop stop;
    struct tcg_exception exception;
    uint64_t bad_address;
    volatile sig_atomic_t kicked;
    int window;                 /* an interrupt may wait for IF: the block hook looks */
    int syscall_pending;        /* a SYSCALL ran: do the transition */
    /* Port writes made after a stop was requested, in the same translation
     * block, handed to the run loop in order before the guest runs again.
     * It grows as needed: any legal instruction sequence fits. */
    struct engine_exit *queued;
    unsigned nqueued, queue_head, queue_cap;
    /* tcg_read_regs: the set the core last read (a hypercall's number and
     * arguments) as Unicorn ids, with CS after them: an OUT to the
     * hypercall port reads them all in one batch (tcg_prefetch_hypercall)
     * and the core's read that follows is answered from batch_vals. */
    const uint8_t *batch_index;
    unsigned batch_n;
    int batch_fresh;                /* batch_vals hold the registers as they are now */
    int batch_ids[TCG_NREGS + 1];
    void *batch_ptrs[TCG_NREGS + 1];
    uint64_t batch_vals[TCG_NREGS + 1];
    uint64_t *icount;               /* deterministic mode */
    const uint64_t *icount_deadline;
    /* engine_tcg_checks.c: the MOV-to-CR and SYSRET sites hooked so far,
     * and one found in a new block, to hook between runs. */
    uint64_t *checked;
    unsigned checked_n, checked_cap;
    uint64_t check_pending, check_block, check_block_end;
    struct tcg_debug *debug;        /* engine_tcg_debug.c, while a debugger is attached */
    /* The IOAPIC and local APIC windows (engine_tcg_io.c). */
    struct tcg_window { struct tcg_vcpu *c; uint64_t base; } windows[2];
};

/* engine_tcg.c */
uint64_t tcg_read_reg(uc_engine *uc, int id);
/* Stop at the next block boundary, before any instruction of it runs. */
void tcg_request_stop(struct tcg_vcpu *c, enum tcg_stop why);

/* Inside an OUT to the hypercall port: read the registers the core will
 * ask for and CS in one batch; returns CS, or -1 if the set is not known
 * yet (the first hypercall). */
int64_t tcg_prefetch_hypercall(struct tcg_vcpu *c);

/* engine_tcg_io.c */
int tcg_io_hooks_add(struct tcg_vcpu *c, uint64_t ram_size);
/* The next queued port write, if any (1), for the run loop. */
int tcg_io_dequeue(struct tcg_vcpu *c, struct engine_exit *exit);

/* engine_tcg_exceptions.c */
int tcg_exception_hooks_add(struct tcg_vcpu *c);
/* Raise `vector` with `error_code` at the instruction now executing. */
void tcg_raise_fault(struct tcg_vcpu *c, uint32_t vector, uint32_t error_code);
/* Between runs: the SYSCALL transition (1 if it raised #UD into *exit). */
int tcg_syscall(struct tcg_vcpu *c, struct engine_exit *exit);

/* engine_tcg_checks.c: #GP(0) for MOV to CR0/3/4/8 with reserved bits and
 * SYSRETQ to a non-canonical RCX, which QEMU 5.0 lets through. */
int  tcg_checks_add(struct tcg_vcpu *c);
/* Between runs: hook a site a new block ended with (0, or -1 out of memory). */
int  tcg_checks_apply(struct tcg_vcpu *c);
void tcg_checks_free(struct tcg_vcpu *c);

/* engine_tcg_debug.c */
int tcg_set_debug(void *vcpu, uint32_t flags, const uint64_t *addr, const uint32_t *kind);
/* The exit for a STOP_DEBUG. */
void tcg_debug_exit(struct tcg_vcpu *c, struct engine_exit *exit);
void tcg_debug_free(struct tcg_vcpu *c);

/* engine_tcg_snapshot.c: the whole CPU state (engine_ops get_state/set_state). */
int tcg_get_state(void *vcpu, struct hv_cpu_state *s);
int tcg_set_state(void *vcpu, const struct hv_cpu_state *s);
/* Fill the segment caches as hv's boot GDT would (set_pvh_entry; long_mode:
 * set_long_entry's 64-bit code). */
int tcg_load_flat_segments(struct tcg_vcpu *c, uint16_t code, uint16_t data, int long_mode);
/* Find the segment caches in a saved context (tcg_state_init: scratch
 * CPUs run only there, before any vCPU does). */
void tcg_find_segment_caches(void);
/* Fill the CS and SS caches from their descriptors (software delivery). */
void tcg_load_segment_caches(struct tcg_vcpu *c, uint16_t cs, uint64_t cs_desc, uint16_t ss,
                             uint64_t ss_desc);

/* engine_tcg_state.c: run `code` at 0x1000 on a scratch CPU (a GDT at
 * 0x3000 if given) and return the offset of the one 32-bit word of the
 * saved context that changed as `changed` says (-1: none or several).
 * Never from inside another CPU's hook. */
long find_context_word(const uint8_t *code, size_t code_len, const uint64_t *gdt,
                       size_t gdt_len, int at_fault, int (*changed)(uint32_t was, uint32_t now));
/* engine_tcg_state.c: find the offsets below (once per process, before
 * any CPU runs: vcpu_create). */
void tcg_state_init(void);
/* Bits of QEMU's env->hflags (target/i386/cpu.h of the pinned Unicorn):
 * the CPL, the one-instruction interrupt shadow after STI or MOV SS, and
 * the code and stack sizes the translator decodes with. */
#define TCG_HF_CPL          3u
#define TCG_HF_INHIBIT_IRQ  (1u << 3)
#define TCG_HF_CS32         (1u << 4)
#define TCG_HF_SS32         (1u << 5)
#define TCG_HF_CS64         (1u << 15)

/* engine_tcg_state.c: forget QEMU's pending exception (forget_exception)
 * and/or set the hflags bits in `mask` to `bits`.  The caller's register
 * cache is stale afterwards. */
void tcg_patch_cpu_state(struct tcg_vcpu *c, int forget_exception, uint32_t mask, uint32_t bits);
/* QEMU's hflags into *out: 0, or -1 if their offset was not found. */
int tcg_hflags(struct tcg_vcpu *c, uint32_t *out);
/* Unicorn's own CPU model: a CPUID leaf, and MAXPHYADDR (found once by
 * running CPUID on a scratch CPU in tcg_state_init). */
void tcg_model_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4]);
unsigned tcg_model_phys_bits(void);
/* From inside an interrupt hook: the error code QEMU computed for the
 * exception and whether it is a software interrupt (INT n). */
void tcg_exception_details(struct tcg_vcpu *c, uint32_t *error_code, int *software);

#endif
