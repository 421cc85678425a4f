/*
 * engine.h - the small interface every execution engine provides.
 *
 * T:400 Engines.  The core (partitions, memory, page walks, hypercalls,
 * events, the run loop) never names KVM or Unicorn.  An engine only creates a
 * VM, maps guest RAM (zero-copy: the engine runs on the core's own mmap),
 * creates a vCPU, runs it until something needs attention, and gives a
 * register view and event injection.  engine.c holds the table of engines.
 */
#ifndef HV_ENGINE_H
#define HV_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include "hv.h"

/* Why engine->run() returned. */
enum engine_exit_kind {
    ENGINE_EXIT_IO = 1,       /* port I/O: port, size, write, value */
    ENGINE_EXIT_MMIO,         /* access to guest-physical space that is not RAM */
    ENGINE_EXIT_HLT,          /* hlt executed */
    ENGINE_EXIT_SHUTDOWN,     /* triple fault */
    ENGINE_EXIT_INTERRUPTED,  /* a signal arrived (a kick, the timer, or the host's) */
    ENGINE_EXIT_WINDOW,       /* the guest can take an interrupt now */
    ENGINE_EXIT_EXCEPTION,    /* a CPU exception (vector in value) for software delivery */
    ENGINE_EXIT_RETURN,       /* handled inside the engine; the exit record is ready */
    ENGINE_EXIT_FAIL,         /* the engine cannot continue; detail says why */
    ENGINE_EXIT_EMULATE,      /* the engine could not run the instruction at RIP; the
                                 core may (software interrupts on KVM), else FAIL */
    ENGINE_EXIT_DEBUG,        /* a debug stop: value = HV_DEBUG_STOP_*, addr = address */
};

struct engine_exit {
    enum engine_exit_kind kind;
    uint16_t port;
    uint8_t  size;            /* 1, 2, 4 (port I/O) or 1..8 (MMIO) */
    uint8_t  write;
    uint64_t value;           /* written value (writes) */
    uint64_t addr;            /* MMIO guest-physical address */
    uint64_t detail;          /* engine-specific exit number, for crash reports */
    /* EXCEPTION: what the CPU would push and whether INT n raised it. */
    uint32_t error_code;
    uint8_t  software;        /* INT n / INT3 / INTO: RIP is past the instruction */
    uint8_t  insn_len;        /* ... of that many bytes */
};

/* T:401 The host interface: everything an engine may ask of the core, set
 * when a vCPU is created (vcpu_create's `host`, with the core's vCPU as an
 * opaque handle).  An engine that handles exits inside the emulator (TCG's
 * instruction hooks) calls back through this table and never reaches into
 * the core's structures, so the core can change how it runs vCPUs (the
 * scheduler) without touching an engine. */
struct engine_host {
    /* Handle one exit now, as the run loop would after run() returned it:
     * 0 = go on, 1 = the exit record is filled for the parent (run() then
     * returns ENGINE_EXIT_RETURN). */
    int  (*handle_exit)(struct hv_vcpu *v, const struct engine_exit *ex);
    /* The same for an OUT to HV_PORT_HYPERCALL (the I/O privilege check
     * already passed), without an exit record: the fast hypercall path. */
    int  (*hypercall)(struct hv_vcpu *v);
    /* Must the run loop look at the vCPU before it re-enters the guest (a
     * wait, a multicall to resume, a pause, an upcall, a trace drain, a
     * timer, a yield)?  The same predicate the run loop itself uses. */
    int  (*needs_loop)(const struct hv_vcpu *v);
    /* Is an interrupt (an upcall or a local APIC vector) waiting for the
     * guest to set IF?  Cheap: TCG asks before every translation block. */
    int  (*interrupt_waiting)(const struct hv_vcpu *v);
    /* Read guest-virtual memory as the CPU's own implicit accesses do
     * (supervisor, whatever the CPL): 0, or nonzero if it is not mapped. */
    int  (*read_guest)(struct hv_vcpu *v, uint64_t gva, void *buf, uint64_t len);
    /* A port read the PC platform answers (UART, ACPI): 0 and *value, or
     * < 0 if no device is there. */
    int  (*port_read)(struct hv_vcpu *v, uint16_t port, uint8_t size, uint32_t *value);
    /* An access outside RAM the core answers without an exit (the virtio
     * window, IOAPIC, local APIC): 0, or < 0 if nothing is there. */
    int  (*mmio)(struct hv_vcpu *v, uint64_t gpa, uint32_t size, int write, uint64_t *value);
    /* CPUID leaves the core's platform answers: 1 and r[], or 0 to leave
     * the leaf to the engine's own CPU model.  (hv's leaves: engine_hv_cpuid.) */
    int  (*cpuid)(struct hv_vcpu *v, uint32_t leaf, uint32_t subleaf, uint32_t r[4]);
    /* hv trace --insn: the guest is about to run the instruction at rip. */
    void (*trace_insn)(struct hv_vcpu *v, uint64_t rip, uint32_t size);
};

/* engine_host.c: the core's side of the table. */
extern const struct engine_host engine_core_host;

struct engine_ops {
    const char *name;
    /* 1 if the guest's locked instructions are atomic only against this
     * engine's own vCPUs, not against host threads (TCG without QEMU's
     * parallel mode: a `lock or` is a load and a store).  The core then
     * never writes a word of guest memory the guest updates with such
     * instructions (the event page) from another thread while the guest
     * runs: it queues the update for the vCPU's own thread (event.c). */
    int guest_rmw_not_host_atomic;
    /* 0 if usable here; else -errno and a human reason. */
    int  (*probe)(char *why, size_t why_len);
    int  (*vm_create)(void **vm);
    int  (*map_ram)(void *vm, uint64_t gpa, void *host, uint64_t size);
    void (*vm_destroy)(void *vm);
    /* Optional (live migration, dirty.c; NULL: the core uses write
     * protection): log the guest's writes to RAM, on = 1 from now with
     * every page clean, on = 0 no more; why says what is missing.  While
     * on, sync ORs the pages written since the last sync into bitmap (bit
     * n = page n from gpa 0) and logs them afresh.  From any thread. */
    int  (*dirty_log)(void *vm, int on, char *why, size_t why_len);
    int  (*dirty_log_sync)(void *vm, uint64_t *bitmap);
    /* Optional: a 4-byte write of `match` to `addr` signals `fd` without
     * leaving the kernel (KVM ioeventfd).  NULL: the core signals it. */
    int  (*add_ioeventfd)(void *vm, uint64_t addr, uint32_t len, uint64_t match, int fd);
    /* Called on the thread that will run the vCPU (KVM wants one thread).
     * `owner` is opaque to the engine: it only hands it back to `host`. */
    int  (*vcpu_create)(void *vm, uint32_t id, const struct engine_host *host,
                        struct hv_vcpu *owner, void **vcpu);
    void (*vcpu_destroy)(void *vcpu);
    /* Live register view, valid between runs; call regs_dirty() after writing. */
    struct hv_regs *(*regs)(void *vcpu);
    void (*regs_dirty)(void *vcpu);
    /* Optional, for engines whose full view is costly (TCG): read a few
     * registers by their index in struct hv_regs, write one.  NULL: the
     * core uses the view. */
    void (*read_regs)(void *vcpu, const uint8_t *index, unsigned n, uint64_t *out);
    void (*write_reg)(void *vcpu, uint8_t index, uint64_t value);
    int  (*get_sregs)(void *vcpu, struct hv_sregs *s);
    int  (*set_sregs)(void *vcpu, const struct hv_sregs *s);
    /* 32-bit flat protected mode at entry, paging off, EBX = info (PVH);
     * the GDT at gdt (selectors 0x10 code, 0x18 data) is already in RAM. */
    int  (*set_pvh_entry)(void *vcpu, uint32_t entry, uint32_t info,
                          uint32_t gdt, uint16_t gdt_limit);
    /* SMP (smp.c), between runs, from any thread while the vCPU runs
     * nowhere: start in 64-bit mode at ctx as abi.h's "SMP" says, with
     * CS = HV_VCPU_UP_CS and data segments HV_VCPU_UP_DS from the boot GDT
     * at gdt (already in RAM). */
    int  (*set_long_entry)(void *vcpu, const struct hv_vcpu_context *ctx,
                           uint32_t gdt, uint16_t gdt_limit);
    /* Forget every cached guest translation before the next guest
     * instruction: on the vCPU's own run thread, between runs or from a
     * hook inside run(). */
    void (*flush_tlb)(void *vcpu);
    /* The value an IN instruction reads, set before the next run. */
    void (*complete_in)(void *vcpu, uint64_t value);
    int  (*run)(void *vcpu, struct engine_exit *exit);
    /* Event injection: can a vector be taken now (IF=1, no shadow)? */
    int  (*interruptible)(void *vcpu);
    /* NULL: the core delivers through the guest IDT itself (idt.c). */
    int  (*inject)(void *vcpu, uint8_t vector);
    /* Software delivery only: load CS and SS (their GDT descriptors, read
     * by the core, for engines that fill segment caches themselves). */
    int  (*load_segments)(void *vcpu, uint16_t cs, uint64_t cs_desc, uint16_t ss, uint64_t ss_desc);
    /* Ask run() to return once the guest can take an interrupt. */
    void (*request_window)(void *vcpu, int on);
    /* Deterministic mode (NULL if unsupported): count every guest
     * instruction into *counter and stop when it reaches *deadline (0 = none). */
    int  (*count_instructions)(void *vcpu, uint64_t *counter, const uint64_t *deadline);
    /* Optional: call host->trace_insn(owner, rip, size) before each
     * instruction in [start, end] (TCG: a code hook on that range). */
    int  (*trace_code)(void *vcpu, uint64_t start, uint64_t end);
    /* Async-signal-safe: make the current or next run() return promptly. */
    void (*kick_from_signal)(void *vcpu);
    /* Optional (debug.c): single-step and HV_DEBUG_SLOTS hardware
     * breakpoints/watchpoints (kind[i] as in hv.h), reported as
     * ENGINE_EXIT_DEBUG; with HV_DEBUG_SW_BP an INT3 must reach the core
     * (as EXCEPTION, EMULATE or DEBUG). */
    int  (*set_debug)(void *vcpu, uint32_t flags, const uint64_t *addr, const uint32_t *kind);
    /* Snapshot and migration (NULL: the engine cannot): the whole CPU state
     * the guest can see, between runs; set_state before the first run. */
    int  (*get_state)(void *vcpu, struct hv_cpu_state *s);
    int  (*set_state)(void *vcpu, const struct hv_cpu_state *s);
};

/* snapshot.c: the MSRs get_state saves (EFER and the FS/GS bases travel
 * with the control and segment registers), in the order they are saved. */
extern const uint32_t snapshot_msrs[];
extern const unsigned snapshot_nmsrs;

extern const struct engine_ops engine_kvm_ops;
extern const struct engine_ops engine_tcg_ops;
extern const struct engine_ops engine_none_ops;

/* engine.c: the table, indexed by HV_ENGINE_*; NULL for an unknown number. */
const struct engine_ops *engine_lookup(int engine);

/* The CPUID leaves hv advertises (shared by every engine that answers CPUID). */
void engine_hv_cpuid(uint32_t leaf, uint32_t *eax, uint32_t *ebx,
                     uint32_t *ecx, uint32_t *edx);

/* platform.c: CPUID 0x15/0x16 for the host's TSC rate, for an engine that
 * builds a CPUID table once (KVM); TCG asks platform_cpuid per CPUID. */
void engine_clock_cpuid(uint32_t leaf, uint32_t r[4]);

#endif /* HV_ENGINE_H */
