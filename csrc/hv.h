/*
 * hv.h - the C core's public surface: what the Python binding (hv/_build_core.py)
 * exposes, nothing else.  Plain C, no Python.h.
 *
 * Ownership: Python creates a partition, fills its memory, creates its vCPU
 * on the thread that will run it, and calls hv_vcpu_run() in a loop.  The run
 * call finishes fast hypercalls itself and returns an exit record for the
 * rest; the parent handles it and calls hv_vcpu_complete() before running
 * again.  cffi releases the GIL for every call, so guests run without it.
 *
 * This header is parsed by cffi's cdef: keep it free of #include in the
 * declarations below the marker, attributes, and expression macros.
 */
#ifndef HV_CORE_H
#define HV_CORE_H

#include <stdint.h>
#include <stddef.h>
#include "hv/abi.h"
#include "hv/layout.h"
#include "hv/virtio_mmio.h"

/* ==== cffi-begin (everything below up to cffi-end is fed to cffi's cdef) ==== */

/* Engines behind csrc/engine.h. */
#define HV_ENGINE_KVM 0
#define HV_ENGINE_TCG 1
#define HV_ENGINE_NONE 2   /* runs nothing: lets tests drive the dispatcher without a host engine */

/* Exit records: why hv_vcpu_run() returned to the parent. */
#define HV_EXIT_HYPERCALL  1   /* a hypercall the parent serves; complete it */
#define HV_EXIT_SHUTDOWN   2   /* guest called shutdown: reason, code */
#define HV_EXIT_CRASH      3   /* triple fault, engine failure, hang with IF=0 */
#define HV_EXIT_IO         4   /* port I/O to a port the core does not own */
#define HV_EXIT_PAUSED     5   /* hv_vcpu_request_pause() was honoured */
#define HV_EXIT_ERROR      6   /* host-side failure (errno in code) */
#define HV_EXIT_SIGNAL     7   /* a host signal (e.g. Ctrl-C) for the parent to handle */
#define HV_EXIT_TRACE      8   /* the trace ring is half full: drain it, run again */
#define HV_EXIT_UART       9   /* a line of UART output in data[0..data_len) (platform.h) */
#define HV_EXIT_DEBUG     10   /* a debug stop (hv_vcpu_set_debug): reason HV_DEBUG_STOP_*, code = address */

/* Crash causes (struct hv_exit.code when kind == HV_EXIT_CRASH). */
#define HV_CRASH_TRIPLE_FAULT   1
#define HV_CRASH_HALTED         2   /* hlt with interrupts off and nothing to wake it */
#define HV_CRASH_ENGINE         3   /* the engine reported an exit it cannot continue */

/* Where a hypercall is served. */
#define HV_ROUTE_CORE    0
#define HV_ROUTE_PARENT  1

struct hv_exit {
    uint32_t kind;             /* HV_EXIT_* */
    uint32_t vcpu;
    uint64_t code;             /* shutdown code, crash cause, errno */
    uint64_t reason;           /* shutdown reason; engine exit number on crash */
    uint64_t nr;               /* hypercall number (HV_EXIT_HYPERCALL) */
    uint64_t args[5];          /* hypercall arguments, named by the dispatcher */
    uint64_t io_port;          /* HV_EXIT_IO */
    uint64_t io_value;
    uint32_t io_size;
    uint32_t io_write;
    uint32_t data_len;         /* bytes in data[], copied once from the guest */
    uint8_t  data[4096];       /* HV_CONSOLE_WRITE_MAX */
};

/* A register file the same for every engine (and save/restore). */
struct hv_regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;
};

struct hv_sregs {
    uint64_t cr0, cr2, cr3, cr4, efer;
    uint64_t idt_base, gdt_base, tr_base;
    uint16_t idt_limit, gdt_limit;
    uint16_t cs, ss;
};

/* Trace records (hv_partition_trace_*): what happened, in order. */
#define HV_TRACE_HYPERCALL   1   /* finished in the core: nr, args, result */
#define HV_TRACE_TO_PARENT   2   /* handed to the parent: nr, args */
#define HV_TRACE_COMPLETE    3   /* the parent finished it: result */
#define HV_TRACE_INJECT      4   /* a vector was delivered: nr = vector */
#define HV_TRACE_EXIT        5   /* an engine exit the core handled: nr = kind, args[0] = detail */
#define HV_TRACE_PAGE        6   /* the hypercall page was placed: args[0] = gpa */
#define HV_TRACE_INSN        7   /* an instruction executed (TCG): nr = rip, args[0..1] = bytes, result = length */

struct hv_trace_record {
    uint64_t seq;              /* per partition, from 0; gaps = dropped records */
    uint64_t time_ns;          /* partition clock (virtual when deterministic) */
    uint32_t vcpu;
    uint32_t kind;             /* HV_TRACE_* */
    uint64_t nr;
    uint64_t args[5];
    int64_t  result;
};

/* Engine exit kinds as traced (HV_TRACE_EXIT's nr). */
#define HV_TRACE_EXIT_HLT        1
#define HV_TRACE_EXIT_EXCEPTION  2
#define HV_TRACE_EXIT_PORT       3
#define HV_TRACE_EXIT_MMIO       4

/* Virtio-mmio transports: the register file lives in the core (both
 * engines reach it without Python); the parent's backends process queues. */
#define HV_VIRTIO_QUEUES_MAX 8
#define HV_VIRTIO_CONFIG_MAX 256

struct hv_virtio_queue {
    uint32_t num_max;          /* set by the parent */
    uint32_t num, ready;       /* set by the driver */
    uint64_t desc, avail, used;
};

struct hv_virtio_state {
    uint32_t device_id, vendor_id;
    uint64_t device_features;  /* offered (parent) */
    uint64_t driver_features;  /* accepted (driver) */
    uint32_t status, interrupt_status, config_generation, queue_sel;
    uint32_t nqueues, event;
    uint32_t resets;           /* driver resets so far: the parent may see several at once */
    uint32_t reset_pending;    /* a reset waits for the backend to release the old rings */
    uint32_t features_sel, driver_features_sel;
    struct hv_virtio_queue queue[HV_VIRTIO_QUEUES_MAX];
    uint32_t config_len;
    uint8_t  config[HV_VIRTIO_CONFIG_MAX];
};

struct hv_partition;
struct hv_vcpu;

/* -- Host ------------------------------------------------------------------- */
/* Name and comma-separated argument names of a hypercall; NULL if unknown. */
const char *hv_hypercall_info(uint64_t nr, const char **args);
/* 0 if the engine can run here; else -errno and a reason in why[]. */
int  hv_engine_probe(int engine, char *why, size_t why_len);

/* -- Partitions ------------------------------------------------------------ */
int  hv_partition_create(int engine, uint64_t mem_size, struct hv_partition **out);
void hv_partition_destroy(struct hv_partition *p);
uint32_t hv_partition_id(const struct hv_partition *p);
/* Find a live partition by id and hold a reference (NULL: no such id, or
 * being destroyed); the memory stays valid until hv_partition_put(). */
struct hv_partition *hv_partition_get(uint32_t id);
void hv_partition_put(struct hv_partition *p);
/* Partitions created and not yet destroyed in this process. */
uint32_t hv_partition_count(void);
uint64_t hv_partition_mem_size(const struct hv_partition *p);
/* Pointer to guest RAM (mem_size bytes): the parent's zero-copy view. */
uint8_t *hv_partition_ram(struct hv_partition *p);
/* The parent holds RAM too: it is unmapped when both the partition (at its
 * last reference, after destroy) and the parent (hv_ram_release, once no
 * view of it is left) have let go. */
struct hv_ram_hold;
struct hv_ram_hold *hv_partition_hold_ram(struct hv_partition *p);
void hv_ram_release(struct hv_ram_hold *hold);
/* Mark [gpa, gpa+len) as hv's own (boot info): not RAM the guest owns.
 * Before any device is added. */
int  hv_partition_reserve(struct hv_partition *p, uint64_t gpa, uint64_t len);
/* Frame owner: partition id, 0 for hv, -1 outside RAM. */
int64_t hv_partition_frame_owner(const struct hv_partition *p, uint64_t gpa);
/* RAM the partition does not own, as [start, end) gpa pairs in out[2*i],
 * out[2*i+1]: the number of ranges, or -E2BIG if there are more than max.
 * Fixed once a device is added (hv_partition_reserve then says -EBUSY),
 * so a device's copy stays true. */
int  hv_partition_foreign_ranges(const struct hv_partition *p, uint64_t *out, uint32_t max);
/* Send a hypercall to the parent instead of the core (tracing, benchmarks). */
int  hv_partition_set_route(struct hv_partition *p, uint64_t nr, int route);
/* Start recording trace records into a ring of `capacity` records. */
int  hv_partition_trace_enable(struct hv_partition *p, uint32_t capacity);
/* Move up to max records out of the ring; returns how many. */
uint32_t hv_partition_trace_read(struct hv_partition *p, struct hv_trace_record *out, uint32_t max);
/* SMP: the partition has n vCPUs (1..HV_VCPUS_MAX; before any is created).
 * Create each (hv_vcpu_create with its id); vCPU 0 boots, the others are
 * down until the guest's vcpu_up (hv_vcpu_is_up tells). */
int  hv_partition_set_vcpus(struct hv_partition *p, uint32_t n);
uint32_t hv_partition_vcpus(const struct hv_partition *p);
/* Deterministic execution (TCG only; before the vCPU is created): the
 * partition clock counts guest instructions (1 ns each) and the timer fires
 * at an exact instruction. */
int  hv_partition_set_deterministic(struct hv_partition *p);
/* Trace every instruction executed in [start, end] (TCG only; tracing on;
 * before the vCPU is created). */
int  hv_partition_trace_instructions(struct hv_partition *p, uint64_t start, uint64_t end);

/* -- Channels between partitions (docs/channels.md) ------------------------- */
/* Let a and b name each other in event channels and grants (both ways):
 * 0, -EINVAL (a == b), -ENOSPC (one already talks to 16 peers), -ESRCH
 * (one is being destroyed). */
int  hv_channel_permit(struct hv_partition *a, struct hv_partition *b);

/* -- Virtio-mmio devices ------------------------------------------------------ */
/* Put a device in a slot.  Driver kicks (QueueNotify writes) to queue q are
 * signalled by writing 1 to queue_fds[q] (an eventfd; on KVM also wired as
 * an ioeventfd, so a kick costs no exit to user space); status changes by
 * the driver (features, DRIVER_OK, reset) are signalled on control_fd. */
int  hv_virtio_add(struct hv_partition *p, uint32_t slot, uint32_t device_id,
                   uint64_t features, uint32_t nqueues, uint32_t queue_max,
                   const uint8_t *config, uint32_t config_len,
                   const int *queue_fds, int control_fd);
/* A consistent copy of the device's registers. */
int  hv_virtio_state(struct hv_partition *p, uint32_t slot, struct hv_virtio_state *out);
/* Device side: set interrupt bits (1 = used buffer, 2 = config change) and
 * raise the device's event. */
int  hv_virtio_interrupt(struct hv_partition *p, uint32_t slot, uint32_t bits);
/* Replace config space (bumps the generation; a config-change interrupt). */
int  hv_virtio_set_config(struct hv_partition *p, uint32_t slot, const uint8_t *config, uint32_t len);
/* Mark the device broken (DEVICE_NEEDS_RESET) after a bad request. */
int  hv_virtio_needs_reset(struct hv_partition *p, uint32_t slot);
/* Snapshot restore: put a saved device's guest-visible registers (status,
 * features, selectors, queues, interrupt status, config generation) on the
 * device just added in `slot` (same id, queues and offer), before any vCPU
 * exists; -EINVAL, and nothing changed, if they do not fit it. */
int  hv_virtio_restore(struct hv_partition *p, uint32_t slot, const struct hv_virtio_state *in);
/* The backend is about to read the rings of reset generation `resets` (as
 * read in the state): 0, or -ESTALE if the driver reset the device since.
 * While claimed, a driver's reset stays in progress (Status reads its old
 * value) until hv_virtio_rings_release(): the backend has dropped its view. */
int  hv_virtio_rings_claim(struct hv_partition *p, uint32_t slot, uint32_t resets);
int  hv_virtio_rings_release(struct hv_partition *p, uint32_t slot);
/* The driver's reset count alone (cheaper than hv_virtio_state). */
uint32_t hv_virtio_resets(struct hv_partition *p, uint32_t slot);
/* Spin until the guest's 16-bit word at gpa (a ring's avail.idx) differs
 * from `seen` (HV_VIRTIO_POLL_POSTED), for at most timeout_ns, capped at
 * 1 ms (HV_VIRTIO_POLL_TIMEOUT), or until wake_fd (-1: none) is readable
 * (HV_VIRTIO_POLL_WOKEN); -EINVAL if gpa is not an aligned word of RAM.
 * *waited_ns: the watch's length; *stolen_ns: how much of it the thread
 * was not running (the CPU went to other threads). */
#define HV_VIRTIO_POLL_TIMEOUT 0
#define HV_VIRTIO_POLL_POSTED 1
#define HV_VIRTIO_POLL_WOKEN 2
int  hv_virtio_poll(struct hv_partition *p, uint64_t gpa, uint32_t seen, uint64_t timeout_ns,
                    int wake_fd, uint64_t *waited_ns, uint64_t *stolen_ns);

/* -- virtio-net frames between two guests, in C (csrc/net_frames.c) -------- */
#define HV_NET_HDR_SIZE 12          /* struct virtio_net_hdr, VERSION_1 (5.1.6) */
#define HV_NET_FRAME_MIN 14         /* an Ethernet header */
#define HV_NET_FRAME_MAX 1518       /* 1514 + a VLAN tag, no FCS */
/* A backend's view of one split ring, and its positions, in and out. */
struct hv_vring {
    uint64_t desc, avail, used;     /* guest-physical; checked when the view was built */
    uint32_t size;                  /* a power of 2 */
    uint16_t last_avail, used_idx, seen_avail;
    uint8_t  indirect;              /* VIRTIO_F_INDIRECT_DESC negotiated */
};
/* Move frames addressed dst_mac from src_mac off src's transmit ring into
 * dst's receive ring, at most max_frames; stop, consuming nothing, at the
 * first chain not plainly such a frame or without a buffer that fits it.
 * The number moved (*bytes: their frame bytes), or -errno. */
int  hv_net_forward(struct hv_partition *src, struct hv_vring *tx, struct hv_partition *dst,
                    struct hv_vring *rx, const uint8_t *dst_mac, const uint8_t *src_mac,
                    uint32_t max_frames, uint64_t *bytes);

/* -- The PC platform (csrc/platform.h) -------------------------------------- */
/* Take up to max bytes of UART output not yet handed over in an exit
 * (what is left when the partition stops). */
uint32_t hv_uart_drain(struct hv_partition *p, uint8_t *buf, uint32_t max);
/* Give the guest len bytes of console input (its ttyS0 reads them from
 * the UART's receive buffer, with an interrupt if enabled).  Returns how
 * many fitted: the rest is for a later call, once the guest has read. */
uint32_t hv_uart_input(struct hv_partition *p, const uint8_t *data, uint32_t len);

/* -- vCPUs: create and run on one thread ------------------------------------ */
int  hv_vcpu_create(struct hv_partition *p, uint32_t id, struct hv_vcpu **out);
int  hv_vcpu_is_up(const struct hv_vcpu *v);
void hv_vcpu_destroy(struct hv_vcpu *v);
/* Put the vCPU at a PVH entry point: 32-bit flat protected mode, EBX = info. */
int  hv_vcpu_set_pvh_entry(struct hv_vcpu *v, uint32_t entry, uint32_t start_info);
int  hv_vcpu_run(struct hv_vcpu *v, struct hv_exit *exit);
/* Finish a HV_EXIT_HYPERCALL: result goes to RAX (or the multicall entry). */
int  hv_vcpu_complete(struct hv_vcpu *v, int64_t result);
int  hv_vcpu_get_regs(struct hv_vcpu *v, struct hv_regs *regs);
int  hv_vcpu_get_sregs(struct hv_vcpu *v, struct hv_sregs *sregs);
int  hv_vcpu_set_sregs(struct hv_vcpu *v, const struct hv_sregs *sregs);
/* Ask a running vCPU to return HV_EXIT_PAUSED soon.  Any thread. */
void hv_vcpu_request_pause(struct hv_vcpu *v);
/* Counters: exits seen, hypercalls finished in C, hypercalls sent to parent. */
void hv_vcpu_counters(struct hv_vcpu *v, uint64_t *exits, uint64_t *fast, uint64_t *slow);

/* -- Snapshot and migration (csrc/snapshot.c, docs/lifecycle.md) ---------- */
/* A segment register with its hidden part, as the CPU caches it.  attrib
 * is the access-rights word: type bits 0-3, S 4, DPL 5-6, P 7, AVL 12,
 * L 13, D/B 14, G 15, unusable 16 (SDM vol. 3, 24.4.1). */
#define HV_SEG_ES 0
#define HV_SEG_CS 1
#define HV_SEG_SS 2
#define HV_SEG_DS 3
#define HV_SEG_FS 4
#define HV_SEG_GS 5
#define HV_SEG_LDTR 6
#define HV_SEG_TR 7
#define HV_SEG_COUNT 8
#define HV_SEG_UNUSABLE 0x10000
struct hv_segment {
    uint64_t base;
    uint32_t limit;
    uint32_t selector;
    uint32_t attrib;
    uint32_t pad;
};

/* The MSRs guests use, saved by index (an unknown index refuses a restore). */
#define HV_CPU_MSRS_MAX 16
/* x87/SSE state as FXSAVE lays it out (SDM vol. 1, 10.5.1): ftw abridged. */
struct hv_fpu {
    uint32_t fcw, fsw, ftw, fop;
    uint64_t fip, fdp;
    uint32_t mxcsr, mxcsr_mask;
    uint8_t  st[8][16];
    uint8_t  xmm[16][16];
};

/* Everything of a CPU that the guest can see: the engines' get_state and
 * set_state (engine_kvm_snapshot.c, engine_tcg_snapshot.c) move it. */
struct hv_cpu_state {
    struct hv_regs regs;
    struct hv_segment seg[8];
    uint64_t gdt_base, idt_base;
    uint32_t gdt_limit, idt_limit;
    uint64_t cr0, cr2, cr3, cr4, cr8, efer, xcr0;
    uint32_t nmsrs, pad;
    uint32_t msr_index[16];
    uint64_t msr_value[16];
    struct hv_fpu fpu;
    uint32_t interrupt_shadow;     /* STI/MOV SS shadow in effect */
    int32_t  injected_vector;      /* taken by the engine, not yet delivered; -1 none */
};

/* The core's part of a vCPU: what it waits on, a suspended multicall, its
 * timer, an upcall owed, the deterministic clock. */
struct hv_vcpu_pending {
    uint32_t wait, mc_active;
    uint64_t mc_gva, mc_count, mc_index;
    uint64_t timer_deadline;       /* partition clock ns, 0 = disarmed */
    uint32_t inject_pending;
    uint32_t up;                   /* running its code (vCPU 0 from boot) */
};

/* The partition's guest-visible hv state beside RAM. */
struct hv_partition_snapshot {
    uint64_t clock_ns;             /* the partition clock now */
    uint64_t instructions;         /* deterministic mode: the clock itself */
    uint64_t hypercall_page_gpa, event_page_gpa;
    uint32_t event_vector, deterministic;
    uint8_t  event_vcpu[512];      /* HV_EVENTS_MAX: the vCPU each event goes to */
};

/* Between runs (paused): 0, -EBUSY if the engine is in the middle of an
 * instruction's work or the parent owes the vCPU an answer (try again
 * after the parent answers or a short run), -ENOTSUP.  A down vCPU (or
 * one going down) gives pend->up 0 and no CPU state; set_state takes it
 * so: down, no CPU state, nothing pending. */
int  hv_vcpu_get_state(struct hv_vcpu *v, struct hv_cpu_state *cpu, struct hv_vcpu_pending *pend);
/* Before the vCPU's first run, instead of the PVH entry: -EINVAL for a
 * state this engine cannot take (named in why). */
int  hv_vcpu_set_state(struct hv_vcpu *v, const struct hv_cpu_state *cpu,
                       const struct hv_vcpu_pending *pend);
void hv_partition_get_snapshot(struct hv_partition *p, struct hv_partition_snapshot *out);
/* Before any vCPU exists: the clock goes on from clock_ns. */
int  hv_partition_set_snapshot(struct hv_partition *p, const struct hv_partition_snapshot *in);
/* The PC platform's guest-visible state (csrc/platform_snapshot.c): the
 * UART's registers and both of its buffers (receive: oldest byte first),
 * the IOAPIC's registers and pin levels, the RTC's index and CMOS bytes.
 * Array sizes as platform.h and abi.h define them (checked there). */
struct hv_platform_snapshot {
    uint8_t  uart_ier, uart_lcr, uart_mcr, uart_scr, uart_dll, uart_dlm, uart_fcr;
    uint8_t  uart_thre_pending, uart_line;
    uint32_t uart_tx_len, uart_rx_len;
    uint8_t  uart_tx[4096], uart_rx[4096];  /* UART_TX_MAX, UART_RX_MAX */
    uint32_t ioapic_select, ioapic_id, ioapic_lines, ioapic_remote_irr;
    uint64_t ioapic_redir[24];             /* HV_IOAPIC_PINS */
    uint8_t  rtc_index;
    uint8_t  rtc_ram[128];
};
/* A vCPU's local APIC (csrc/lapic.c): registers, the timer on the
 * partition clock (start and next expiry in partition ns, 0 = stopped),
 * and the IRR, TMR and ISR bitmaps. */
struct hv_lapic_snapshot {
    uint32_t id, tpr, ldr, dfr, svr, esr, icr_low, icr_high;
    uint32_t lvt[6];
    uint32_t timer_initial, timer_divide;
    uint64_t timer_start, timer_deadline;
    uint32_t irr[8], tmr[8], isr[8];
};
void hv_platform_get_snapshot(struct hv_partition *p, struct hv_platform_snapshot *out);
/* Before any vCPU runs; -EINVAL for a state no guest could have made. */
int  hv_platform_set_snapshot(struct hv_partition *p, const struct hv_platform_snapshot *in);
/* Paused, or before the first run: 0, or -EINVAL (set) as above. */
int  hv_lapic_get_snapshot(struct hv_vcpu *v, struct hv_lapic_snapshot *out);
int  hv_lapic_set_snapshot(struct hv_vcpu *v, const struct hv_lapic_snapshot *in);
/* -- Dirty tracking for live migration (csrc/dirty.c) ---------------------- */
#define HV_DIRTY_AUTO           0   /* the best of the three below that works here */
#define HV_DIRTY_ENGINE_LOG     1   /* the engine's log of guest writes (KVM's memslot log) */
#define HV_DIRTY_WRITE_PROTECT  2   /* the kernel's write protection of RAM (userfaultfd) */
#define HV_DIRTY_COMPARE        3   /* RAM compared with a copy each round (the fallback) */
/* Start tracking: the method used (> 0), or -errno.  why (may be NULL)
 * says why a better method was not used, or why none could start.
 * -EBUSY: tracking already. */
int  hv_dirty_start(struct hv_partition *p, int method, char *why, size_t why_len);
/* The frames to send now, into out (room for mem_size / 4096): the first
 * call after start every non-zero frame, later ones every frame written
 * since the call before, by the guest, the core or a device.  Read their
 * bytes after this returns.  -errno if the log failed. */
int64_t hv_dirty_collect(struct hv_partition *p, uint64_t *out);
void hv_dirty_stop(struct hv_partition *p);
int  hv_dirty_method(const struct hv_partition *p);    /* 0: not tracking */
/* The written map a device sets after writing guest RAM: a byte per 4 KiB
 * frame, set to 1 (a plain store) after the write; it lives as long as
 * RAM does (a hold keeps both).  hv_ram_written does the same for a range. */
uint8_t *hv_partition_written_map(struct hv_partition *p);
void hv_ram_written(struct hv_partition *p, uint64_t gpa, uint64_t len);
/* Like hv_partition_create, over a file mapped copy-on-write (MAP_PRIVATE):
 * pages are read from it only when touched.  The file must hold mem_size
 * bytes (-ENOSPC otherwise). */
int  hv_partition_create_from_file(int engine, uint64_t mem_size, int fd, struct hv_partition **out);

/* -- Debugging (the GDB stub, hv/gdbstub.py; csrc/debug.c) ------------------ */
#define HV_DEBUG_SW_BP           1   /* flags: INT3 stops the vCPU instead of reaching the guest */
#define HV_DEBUG_STEP            2   /* flags: stop after one instruction */
#define HV_DEBUG_SLOTS           4   /* hardware breakpoints and watchpoints */
#define HV_DEBUG_HW_EXEC         1   /* slot kind (low byte); its length 1, 2, 4, 8 in bits 8..15 */
#define HV_DEBUG_HW_WRITE        2
#define HV_DEBUG_HW_ACCESS       3
#define HV_DEBUG_STOP_BREAKPOINT 1   /* an INT3: RIP is at it, code = RIP */
#define HV_DEBUG_STOP_STEP       2
#define HV_DEBUG_STOP_HW_BREAK   3   /* code = the slot's address */
#define HV_DEBUG_STOP_WATCH      4   /* code = the slot's address */
/* Replace the general registers (between runs). */
int  hv_vcpu_set_regs(struct hv_vcpu *v, const struct hv_regs *regs);
/* What stops the vCPU with HV_EXIT_DEBUG from its next run on: flags, and
 * HV_DEBUG_SLOTS addresses with their kinds (0 = unused).  -ENOTSUP if the
 * engine cannot (or not that many). */
int  hv_vcpu_set_debug(struct hv_vcpu *v, uint32_t flags, const uint64_t *addr, const uint32_t *kind);

/* -- Guest memory through the vCPU's page tables ---------------------------- */
int  hv_copy_from_guest(struct hv_vcpu *v, void *dst, uint64_t gva, uint64_t len);
int  hv_copy_to_guest(struct hv_vcpu *v, uint64_t gva, const void *src, uint64_t len);

/* -- The scheduler (csrc/sched.c) ------------------------------------------ */
/* vCPU states as the scheduler sees them (docs/scheduler.md). */
#define HV_SCHED_DOWN      0   /* not started, or taken out */
#define HV_SCHED_RUNNABLE  1   /* waiting for a worker */
#define HV_SCHED_RUNNING   2   /* a worker runs it */
#define HV_SCHED_BLOCKED   3   /* block/hlt: until an event or its timer */
#define HV_SCHED_PARENT    4   /* its exit record waits for the parent */
#define HV_SCHED_PAUSED    5   /* held by the parent */
/* Why a worker stopped a vCPU. */
#define HV_SCHED_STOP_PREEMPT 0
#define HV_SCHED_STOP_YIELD   1
#define HV_SCHED_STOP_BLOCK   2
#define HV_SCHED_STOP_PARENT  3
#define HV_SCHED_STOP_DOWN    4   /* vcpu_down: DOWN, and startable again */
/* Scheduling constants (ns; weight is relative, default 256). */
#define HV_SCHED_WEIGHT_DEFAULT    256
#define HV_SCHED_SLICE_MIN_NS      500000
#define HV_SCHED_SLICE_MAX_NS      10000000
#define HV_SCHED_RATELIMIT_NS      1000000
#define HV_SCHED_CREDIT_INIT       10000000
#define HV_SCHED_CAP_PERIOD_NS     10000000
#define HV_SCHED_MIGRATE_RESIST_NS 500000
#define HV_SCHED_WORKERS_MAX       64
#define HV_SCHED_YIELD_BIAS_NS     1000000

/* A scheduler: N worker threads (0 = one per host CPU) that run every
 * vCPU attached to it.  The parent serves exits from a queue instead of
 * calling hv_vcpu_run() on a thread per vCPU. */
struct hv_sched;
int  hv_sched_create(int nworkers, struct hv_sched **out);
/* One worker for deterministic partitions: slices are counted in guest
 * instructions (one ns of virtual time each), no host timer ends them and
 * no wake-up preempts, so the order vCPUs run in depends only on what the
 * guests do.  Only deterministic partitions may be attached to it. */
int  hv_sched_create_deterministic(struct hv_sched **out);
/* Stops the workers; every vCPU must be detached (hv_vcpu_destroy does). */
void hv_sched_destroy(struct hv_sched *s);
int  hv_sched_workers(const struct hv_sched *s);
/* Hand a vCPU (set up, not running) to the scheduler: weight (0 = 256)
 * and cap (percent of one host CPU, 0 = none).  It starts DOWN. */
int  hv_sched_attach(struct hv_sched *s, struct hv_vcpu *v, uint32_t weight, uint32_t cap);
int  hv_sched_start(struct hv_vcpu *v);
/* Block (up to timeout_ms) until some vCPU's exit record waits for the
 * parent; NULL on timeout.  Read it with hv_vcpu_exit_record(), finish it
 * (hv_vcpu_complete() if it is a call), then hv_sched_continue(). */
struct hv_vcpu *hv_sched_next_exit(struct hv_sched *s, int timeout_ms);
struct hv_exit *hv_vcpu_exit_record(struct hv_vcpu *v);
int  hv_sched_continue(struct hv_vcpu *v);
/* Pause returns once the vCPU runs nowhere; it runs again after resume. */
int  hv_sched_pause(struct hv_vcpu *v);
int  hv_sched_resume(struct hv_vcpu *v);
/* Take a vCPU out (hv_vcpu_destroy does it too). */
void hv_sched_detach(struct hv_vcpu *v);
int  hv_sched_set_share(struct hv_vcpu *v, uint32_t weight, uint32_t cap);
/* Every vCPU of a scheduled partition at once (SMP): pause returns once
 * none runs, and one the guest brings up meanwhile starts paused. */
int  hv_partition_pause(struct hv_partition *p);
int  hv_partition_resume(struct hv_partition *p);

struct hv_sched_info {
    uint32_t state;            /* HV_SCHED_* */
    int32_t  home;             /* the worker whose runqueue it joins */
    int32_t  worker;           /* running on, or -1 */
    int64_t  credit;
    uint64_t runtime_ns, dispatches, migrations, blocks, parent_waits;
};
int  hv_sched_vcpu_info(struct hv_vcpu *v, struct hv_sched_info *out);

/* -- Test entries (drive the core without a running guest) ------------------- */
/* Walk page tables rooted at cr3 in the partition's RAM.  access: bit0 write,
 * bit1 user, bit2 fetch.  paging_flags: bit0 NXE enabled, bit1 WP set.
 * Returns 0 and *gpa, or -HV_EFAULT. */
int  hv_test_walk(struct hv_partition *p, uint64_t cr3, uint64_t gva,
                  uint32_t access, uint32_t paging_flags, uint64_t *gpa);
/* Run the dispatcher on a synthetic vCPU state (no engine run): regs in,
 * regs/exit out.  Returns 1 if the call finished in the core, 0 if it went to
 * the parent (exit filled). */
int  hv_test_dispatch(struct hv_vcpu *v, struct hv_regs *regs, struct hv_exit *exit);
/* A guest access to the device window, as the engines make it (tests). */
int  hv_test_mmio(struct hv_partition *p, uint64_t addr, uint32_t size, int write, uint64_t *value);
/* The PC platform's doors (platform.h), as the engines use them: a port
 * access (-1 not a platform port, 0 done, 1 exit filled), an access
 * outside RAM (-1 nobody's, 0 done), a CPUID leaf (1 answered, r[4]). */
int  hv_test_platform_port(struct hv_vcpu *v, uint16_t port, uint8_t size, int write,
                           uint32_t *value, struct hv_exit *exit);
int  hv_test_platform_mmio(struct hv_vcpu *v, uint64_t addr, uint32_t size, int write,
                           uint64_t *value);
int  hv_test_cpuid(struct hv_partition *p, uint32_t leaf, uint32_t subleaf, uint32_t *r);
/* Digest of the partition's guest-visible hv state (event, timer, hypercall
 * page), for "no state change on error" checks. */
uint64_t hv_test_state_digest(struct hv_vcpu *v);

/* The scheduler's policy alone: entities 0..n-1 without vCPUs, explicit
 * times, one caller (tests/test_sched_model.py).  Worker numbers or -1. */
struct hv_sched_test;
struct hv_sched_test *hv_test_sched_create(int nworkers);
void hv_test_sched_destroy(struct hv_sched_test *t);
int  hv_test_sched_add(struct hv_sched_test *t, uint32_t group, uint32_t weight,
                       uint32_t cap, int migrate_cheap);
int  hv_test_sched_start(struct hv_sched_test *t, int id, uint64_t now);
int  hv_test_sched_pick(struct hv_sched_test *t, int worker, uint64_t now, uint64_t *slice);
void hv_test_sched_stop(struct hv_sched_test *t, int id, int why, uint64_t wake_at, uint64_t now);
int  hv_test_sched_wake(struct hv_sched_test *t, int id, uint64_t now);
int  hv_test_sched_parent_done(struct hv_sched_test *t, int id, uint64_t now);
int  hv_test_sched_pause(struct hv_sched_test *t, int id);
int  hv_test_sched_resume(struct hv_sched_test *t, int id, uint64_t now);
int  hv_test_sched_take_down(struct hv_sched_test *t, int id);
uint64_t hv_test_sched_expire(struct hv_sched_test *t, uint64_t now);
int  hv_test_sched_info(struct hv_sched_test *t, int id, struct hv_sched_info *out);
int  hv_test_sched_check(struct hv_sched_test *t);

/* Coverage builds: write the counters now (before a forked child's _exit);
 * a no-op in every other build (coverage.c). */
void hv_coverage_flush(void);

/* ==== cffi-end ==== */

#endif /* HV_CORE_H */
