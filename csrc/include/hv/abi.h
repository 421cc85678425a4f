/*
 * hv/abi.h - the one contract between a guest and hv.
 *
 * Everything a guest, the C core and the Python parent partition agree on is
 * here, once: how the guest finds hv, how it traps, hypercall numbers, error
 * codes and the structs that live in shared memory.  The guest library, the
 * core and Python (through cffi, which asks the compiler) all read this file;
 * docs/abi.md is generated from it by tools/gen_abi_doc.
 *
 * Rules for editing:
 *   - hypercall numbers are append-only; a retired number stays reserved;
 *   - every HV_HC_* has a doc block in the format below (a test checks it);
 *   - freestanding: stdint.h only, plain #defines with literal values (cffi
 *     parses this file's names, so no expression macros for exported values).
 *
 * T:100 The ABI.  A guest learns about hv from CPUID, tells hv where to write
 * the hypercall page with one port write, then calls page + 32 * number.
 */
#ifndef HV_ABI_H
#define HV_ABI_H

#include <stdint.h>

/* ---- Version ----------------------------------------------------------- */
#define HV_ABI_VERSION_MAJOR 1
#define HV_ABI_VERSION_MINOR 3

/* ---- Discovery: CPUID leaves ---------------------------------------------
 * 0x40000000: EAX = highest hv leaf, EBX:ECX:EDX = "hvhypervisor".
 * 0x40000001: EAX = (major << 16) | minor.
 * 0x40000002: EAX = hypercall pages (1), EBX = hypercall trap port,
 *             ECX = hypercall-page placement port, EDX = feature bits.
 * CPUID.1:ECX bit 31 ("hypervisor present") is set as well.
 * A guest that does not find the signature is not running under hv (for
 * example under stock QEMU) and falls back to the serial port and
 * isa-debug-exit (see guests/lib).
 */
#define HV_CPUID_BASE        0x40000000
#define HV_CPUID_VERSION     0x40000001
#define HV_CPUID_TRANSPORT   0x40000002
#define HV_CPUID_MAX_LEAF    0x40000002
#define HV_CPUID_SIG_EBX     0x79687668 /* "hvhy" */
#define HV_CPUID_SIG_ECX     0x76726570 /* "perv" */
#define HV_CPUID_SIG_EDX     0x726f7369 /* "isor" */

/* ---- Transport -------------------------------------------------------------
 * Placement: the guest writes the page frame number (guest-physical address
 * >> 12) of a page of its own RAM as a 32-bit OUT to HV_PORT_HYPERCALL_PAGE.
 * hv fills that page with HV_HYPERCALL_MAX stubs of HV_HYPERCALL_STUB_SIZE
 * bytes each; unused bytes are int3.  A bad frame is ignored (the page stays
 * as it was) and the guest sees no stubs; the guest library checks.
 *
 * Calling convention (the stub for number N loads RAX = N itself):
 *   call page + 32 * N     arguments in RDI, RSI, RDX, R10, R8
 *                          result in RAX (>= 0 success, < 0 a -HV_E* error)
 *                          all other registers preserved.
 * The stub traps with an 8-bit OUT to HV_PORT_HYPERCALL because KVM keeps
 * VMCALL for its own in-kernel hypercalls; port I/O reaches user space on
 * every engine.  The page hides the trap from the guest, so it can change.
 */
#define HV_PORT_HYPERCALL       0xea
#define HV_PORT_HYPERCALL_PAGE  0xeb
#define HV_HYPERCALL_STUB_SIZE  32
#define HV_HYPERCALL_MAX        64      /* stubs in the page: 64 * 32 = 4096 */
#define HV_PAGE_SIZE            4096

/* ---- Errors: negative errno values, as Linux numbers them ------------------ */
#define HV_EPERM       1   /* operation not permitted in this state */
#define HV_ENOENT      2   /* no such object */
#define HV_EIO         5   /* the backend failed (e.g. the console's output) */
#define HV_E2BIG       7   /* count too large */
#define HV_EAGAIN     11   /* try again */
#define HV_ENOMEM     12   /* out of memory */
#define HV_EFAULT     14   /* a guest pointer could not be read or written */
#define HV_EBUSY      16   /* already in use */
#define HV_EEXIST     17   /* already exists */
#define HV_EINVAL     22   /* bad argument */
#define HV_ENOSPC     28   /* no free slot (port table full) */
#define HV_ENOSYS     38   /* unknown hypercall number */
#define HV_EOPNOTSUPP 95   /* not supported here (e.g. inside a multicall) */
#define HV_ENOTCONN  107   /* the port has no connected peer (never bound, or the peer closed) */

/* ---- Feature bits (CPUID 0x40000002 EDX and HV_HC_FEATURES word 0) ------- */
#define HV_FEATURE_EVENTS      0x1   /* event page + vector delivery */
#define HV_FEATURE_TIMER       0x2   /* one-shot timer */
#define HV_FEATURE_MULTICALL   0x4   /* batched hypercalls */
#define HV_FEATURE_CLOCK       0x8   /* HV_HC_CLOCK_READ */
#define HV_FEATURE_CHANNELS    0x10  /* partition_id, event channels, grant copy (docs/channels.md) */
#define HV_FEATURE_SMP         0x20  /* several vCPUs: vcpu_up/down, per-vCPU events, IPIs, TLB flush */

/* ---- Hypercalls --------------------------------------------------------------
 * Doc block format (parsed by tools/gen_abi_doc):
 *   HC name: one-line purpose.
 *     args:    name: meaning; ...
 *     returns: on success
 *     errors:  -HV_EXXX when; ...
 */

/* HC version: Report the ABI version hv implements.
 *   args:    none
 *   returns: (HV_ABI_VERSION_MAJOR << 16) | HV_ABI_VERSION_MINOR
 *   errors:  none
 */
#define HV_HC_VERSION          0

/* HC features: Report a word of feature bits.
 *   args:    index: which 64-bit word (only 0 exists)
 *   returns: the HV_FEATURE_* bits of that word
 *   errors:  -HV_EINVAL index is not 0
 */
#define HV_HC_FEATURES         1

/* HC console_write: Write bytes to the partition's console.
 *   args:    buf: guest virtual address of the bytes; len: byte count
 *   returns: len (all bytes are written, or none)
 *   errors:  -HV_EINVAL len > HV_CONSOLE_WRITE_MAX; -HV_EFAULT buf..buf+len not readable; -HV_EIO the console's output failed
 */
#define HV_HC_CONSOLE_WRITE    2

/* HC yield: Give the host CPU to other runnable vCPUs, then continue.
 *   args:    none
 *   returns: 0
 *   errors:  none
 */
#define HV_HC_YIELD            3

/* HC block: Sleep until an event is pending (returns at once if one is).
 *   args:    none
 *   returns: 0
 *   errors:  -HV_EPERM no event page registered (no event, the timer's included, could wake it)
 */
#define HV_HC_BLOCK            4

/* HC shutdown: Stop the partition.
 *   args:    reason: HV_SHUTDOWN_*; code: exit status 0..255 reported to the parent
 *   returns: does not return on success
 *   errors:  -HV_EINVAL unknown reason or code > 255
 */
#define HV_HC_SHUTDOWN         5

/* HC clock_read: Read the partition clock.
 *   args:    none
 *   returns: nanoseconds since the partition was created (monotonic)
 *   errors:  none
 */
#define HV_HC_CLOCK_READ       6

/* HC set_timer: Arm (or cancel) the one-shot timer; it raises HV_EVENT_TIMER.
 *   args:    deadline: partition-clock nanoseconds, 0 cancels
 *   returns: 0
 *   errors:  none (a deadline in the past fires at once)
 */
#define HV_HC_SET_TIMER        7

/* HC event_register: Register the event page and the vector events arrive on.
 *   args:    page: guest-physical address of a page of RAM (page aligned); vector: 32..255
 *   returns: 0
 *   errors:  -HV_EINVAL page unaligned or vector out of range; -HV_EFAULT page not RAM owned by the partition
 */
#define HV_HC_EVENT_REGISTER   8

/* HC event_raise: Mark one of the partition's own events pending (self-notification, tests).
 *   args:    event: event number < HV_EVENTS_MAX
 *   returns: 0
 *   errors:  -HV_EINVAL event out of range; -HV_EPERM no event page registered
 */
#define HV_HC_EVENT_RAISE      9

/* HC multicall: Run an array of hypercalls with one trap.
 *   args:    calls: guest virtual address of struct hv_multicall_entry[count]; count: entries
 *   returns: 0; each entry's result field holds that call's own result
 *   errors:  -HV_E2BIG count > HV_MULTICALL_MAX; -HV_EFAULT the array is not readable and writable (checked before any entry runs)
 */
#define HV_HC_MULTICALL       10

/* HC partition_id: Report the calling partition's id (the id peers name it by).
 *   args:    none
 *   returns: the partition id (>= 1)
 *   errors:  none
 */
#define HV_HC_PARTITION_ID    11

/* HC evtchn_alloc_unbound: Allocate a port that one peer may bind to.
 *   args:    peer: partition id allowed to bind (the parent must have permitted the pair)
 *   returns: the new local port (HV_EVTCHN_FIRST..HV_EVTCHN_PORTS-1), state unbound
 *   errors:  -HV_EINVAL peer is the caller; -HV_EPERM the parent did not permit this pair; -HV_ENOSPC no free port
 */
#define HV_HC_EVTCHN_ALLOC_UNBOUND 12

/* HC evtchn_bind_interdomain: Connect a new local port to a peer's unbound port.
 *   args:    peer: partition id; remote_port: the peer's port, unbound for the caller
 *   returns: the new local port, state interdomain (the remote port becomes interdomain too)
 *   errors:  -HV_EINVAL peer is the caller, remote_port out of range or not unbound for the caller; -HV_EPERM the parent did not permit this pair; -HV_ENOENT no such peer (or it is being destroyed); -HV_ENOSPC no free port
 */
#define HV_HC_EVTCHN_BIND_INTERDOMAIN 13

/* HC evtchn_send: Raise the event of the remote end of a port.
 *   args:    port: a local interdomain port
 *   returns: 0 (the peer's event bit remote_port is pending)
 *   errors:  -HV_EINVAL port out of range, free or reserved; -HV_ENOTCONN port unbound (never bound, or the peer closed or was destroyed)
 */
#define HV_HC_EVTCHN_SEND     14

/* HC evtchn_close: Free a port; an interdomain peer's end goes back to unbound, its event raised.
 *   args:    port: a local unbound or interdomain port
 *   returns: 0
 *   errors:  -HV_EINVAL port out of range, free or reserved
 */
#define HV_HC_EVTCHN_CLOSE    15

/* HC evtchn_bind_vcpu: Choose the vCPU a port's events are delivered to.
 *   args:    port: a local unbound or interdomain port; vcpu: vCPU id < vcpu_count (a new or closed port goes back to 0)
 *   returns: 0
 *   errors:  -HV_EINVAL port out of range, free or reserved, or vcpu is not one of the partition's vCPUs
 */
#define HV_HC_EVTCHN_BIND_VCPU 16

/* HC evtchn_status: Describe a port.
 *   args:    port: any port number; out: guest virtual address of a struct hv_evtchn_status
 *   returns: 0 (out holds state, peer, remote port, vCPU)
 *   errors:  -HV_EINVAL port out of range; -HV_EFAULT out is not writable
 */
#define HV_HC_EVTCHN_STATUS   17

/* HC grant_table_register: Tell hv where the caller's grant table is (count 0 removes it).
 *   args:    table: guest-physical address, 8-byte aligned, of struct hv_grant_entry[count]; count: entries
 *   returns: 0
 *   errors:  -HV_E2BIG count > HV_GRANT_REFS_MAX; -HV_EINVAL table not 8-byte aligned; -HV_EFAULT the table is not RAM the caller owns
 */
#define HV_HC_GRANT_TABLE_REGISTER 18

/* HC grant_copy: Copy between the caller's memory and frames peers granted it, in a batch.
 *   args:    segs: guest virtual address of struct hv_grant_copy_seg[count]; count: segments
 *   returns: 0; each segment's status is 0 or a negative error (see "Grants")
 *   errors:  -HV_E2BIG count > HV_GRANT_COPY_MAX; -HV_EFAULT the array is not readable and writable (checked before any segment runs)
 */
#define HV_HC_GRANT_COPY      19

/* HC grant_end: End access through one of the caller's own grant entries.
 *   args:    ref: index in the caller's grant table
 *   returns: 0 (the entry is cleared: no peer can use it from now on)
 *   errors:  -HV_ENOENT no grant table registered; -HV_EINVAL ref >= the table's count; -HV_EFAULT the table is no longer the caller's RAM; -HV_EBUSY a peer's copy is using the entry right now (try again)
 */
#define HV_HC_GRANT_END       20

/* HC vcpu_up: Start a vCPU that is down, in 64-bit mode at the context given (see "SMP").
 *   args:    vcpu: vCPU id < vcpu_count; context: guest virtual address of a struct hv_vcpu_context
 *   returns: 0 (the vCPU runs from context.rip, concurrently with the caller)
 *   errors:  -HV_EINVAL vcpu >= vcpu_count, or context.cr3 not a page-aligned address in RAM; -HV_EBUSY the vCPU is up (or still going down); -HV_EFAULT context not readable
 */
#define HV_HC_VCPU_UP         21

/* HC vcpu_down: Take a vCPU down (the caller itself, or another).
 *   args:    vcpu: vCPU id
 *   returns: 0; the caller's own call does not return (until a vcpu_up restarts it at a new context); another vCPU stops before its next instruction
 *   errors:  -HV_EINVAL vcpu >= vcpu_count; -HV_EPERM the vCPU is down already; -HV_EBUSY it is the last vCPU up (use shutdown)
 */
#define HV_HC_VCPU_DOWN       22

/* HC vcpu_id: Report the calling vCPU's id.
 *   args:    none
 *   returns: the id, 0 for the boot vCPU
 *   errors:  none
 */
#define HV_HC_VCPU_ID         23

/* HC vcpu_count: Report how many vCPUs the partition has (up or down).
 *   args:    none
 *   returns: the count, 1..HV_VCPUS_MAX
 *   errors:  none
 */
#define HV_HC_VCPU_COUNT      24

/* HC vcpu_send_event: Raise an event on one vCPU (an IPI): its pending bit in that vCPU's block.
 *   args:    vcpu: vCPU id; event: event number < HV_EVENTS_MAX
 *   returns: 0 (delivered as an upcall on that vCPU unless masked there; a down vCPU sees it once up)
 *   errors:  -HV_EINVAL vcpu >= vcpu_count or event out of range; -HV_EPERM no event page registered
 */
#define HV_HC_VCPU_SEND_EVENT 25

/* HC tlb_flush: Flush the TLBs of a set of vCPUs, and return once every one has.
 *   args:    mask: bit i = vCPU i (bits of vCPUs that do not exist are ignored); va: HV_TLB_FLUSH_ALL, or one guest virtual address (hv may flush more)
 *   returns: 0; a running target has flushed, a target not running flushes before its next instruction
 *   errors:  -HV_EINVAL mask has a bit at or above HV_VCPUS_MAX
 */
#define HV_HC_TLB_FLUSH       26

/* HC event_bind_vcpu: Choose the vCPU one of the partition's events is delivered to (devices, raises).
 *   args:    event: event number < HV_EVENTS_MAX, not HV_EVENT_TIMER (each vCPU's timer raises on that vCPU); vcpu: vCPU id
 *   returns: 0 (from now on the event's pending bit is set in that vCPU's block)
 *   errors:  -HV_EINVAL event out of range or HV_EVENT_TIMER, or vcpu >= vcpu_count
 */
#define HV_HC_EVENT_BIND_VCPU 27

#define HV_HC_COUNT           28       /* numbers below this are defined */

/* ---- Limits ---------------------------------------------------------------- */
#define HV_CONSOLE_WRITE_MAX   4096
#define HV_MULTICALL_MAX       64
#define HV_EVENTS_MAX          512
#define HV_EVENT_WORDS         8        /* HV_EVENTS_MAX / 64 */
#define HV_VECTOR_MIN          32       /* vectors below are CPU exceptions */
#define HV_VCPUS_MAX           16       /* vCPUs per partition: one struct hv_vcpu_events each fits a page */

/* ---- Shutdown reasons ---------------------------------------------------- */
#define HV_SHUTDOWN_POWEROFF   0        /* clean stop; code is the exit status */
#define HV_SHUTDOWN_CRASH      1        /* the guest detected its own failure */
#define HV_SHUTDOWN_REBOOT     2        /* the guest asked for a reset (ACPI reset register); code 0 */

/* ---- Events ------------------------------------------------------------------
 * Events are bits.  hv sets a pending bit with an atomic OR; if the bit is not
 * masked and upcall_pending was 0, hv sets upcall_pending = 1 and injects the
 * registered vector as soon as the guest has interrupts enabled.  The guest's
 * handler clears upcall_pending first, then takes pending bits with atomic
 * exchanges, so nothing is lost between the two.
 *
 * Waiting: HV_HC_BLOCK looks only at the pending bits (not at IF), so a guest
 * checks for work with interrupts off, then blocks without a race.  A HLT
 * with IF=1 takes a pending upcall at once or sleeps until one arrives; HLT
 * with IF=0 can never be woken and stops the partition as crashed.
 */
#define HV_EVENT_TIMER         0        /* the one-shot timer fired */

struct hv_event_page {
    uint64_t pending[HV_EVENT_WORDS];   /* set by hv, cleared by the guest */
    uint64_t masked[HV_EVENT_WORDS];    /* set by the guest: no upcall for these */
    uint8_t  upcall_pending;            /* 1 while an upcall is outstanding */
    uint8_t  pad[7];
};

/* Since 1.3 the event page holds one block per vCPU: vCPU i's block is at
 * page + i * HV_VCPU_EVENTS_SIZE, and its first bytes are laid out as
 * struct hv_event_page, so vCPU 0's block is the page of 1.2.  Each vCPU
 * has its own pending and masked bits and upcall_pending: an event is
 * pending on the vCPU it is delivered to (HV_HC_EVENT_BIND_VCPU chooses,
 * default vCPU 0; HV_HC_VCPU_SEND_EVENT names one; a vCPU's timer raises
 * HV_EVENT_TIMER on itself), HV_HC_BLOCK on a vCPU waits for its own bits,
 * and the upcall is injected on that vCPU. */
#define HV_VCPU_EVENTS_SIZE    256

struct hv_vcpu_events {
    uint64_t pending[HV_EVENT_WORDS];   /* set by hv, cleared by the guest */
    uint64_t masked[HV_EVENT_WORDS];    /* set by the guest: no upcall for these */
    uint8_t  upcall_pending;            /* 1 while an upcall is outstanding on this vCPU */
    uint8_t  pad[127];                  /* to HV_VCPU_EVENTS_SIZE */
};

/* ---- Multicall -------------------------------------------------------------
 * Entries run in order.  A multicall or a block inside a multicall gets
 * -HV_EOPNOTSUPP in its result and the batch goes on.
 */
struct hv_multicall_entry {
    uint64_t op;            /* hypercall number */
    uint64_t args[5];       /* as the registers RDI, RSI, RDX, R10, R8 */
    int64_t  result;        /* written by hv */
};

/* ---- SMP ---------------------------------------------------------------------
 * A partition has HV_HC_VCPU_COUNT vCPUs (the parent chooses, up to
 * HV_VCPUS_MAX).  vCPU 0 boots through PVH; the others start down until a
 * vCPU brings them up with HV_HC_VCPU_UP, in 64-bit mode: CR0 = PG | WP |
 * NE | ET | PE, CR4 = PAE, EFER = LME | LMA | NXE, CR3 from the context,
 * CS = HV_VCPU_UP_CS (64-bit ring-0 code) and the data segments =
 * HV_VCPU_UP_DS (flat ring-0 data) from hv's boot GDT at HV_BOOT_GDT_GPA,
 * RFLAGS = 0x2 (interrupts off), RIP, RSP and RDI from the context, every
 * other general register 0.  The new vCPU loads its own GDT and IDT before
 * it takes an interrupt.  The vCPUs share the partition's memory, hypercall
 * page and event page; each has its own registers, timer, block of events
 * and local APIC.  An event raised on a down vCPU stays pending in its
 * block; if it set upcall_pending, the upcall is injected once the vCPU
 * is up and enables interrupts.  A crash of any vCPU stops the partition;
 * so does a shutdown from any vCPU.
 */
#define HV_VCPU_UP_CS          0x20     /* in hv's boot GDT: 64-bit ring-0 code */
#define HV_VCPU_UP_DS          0x18     /* in hv's boot GDT: flat ring-0 data */
#define HV_TLB_FLUSH_ALL       0xffffffffffffffff   /* tlb_flush va: every translation */

struct hv_vcpu_context {
    uint64_t rip;               /* where the vCPU starts */
    uint64_t rsp;               /* its stack */
    uint64_t cr3;               /* its page tables (page aligned, in RAM) */
    uint64_t arg;               /* goes to RDI: e.g. a per-CPU pointer */
};

/* ---- Devices: virtio-mmio (virtio 1.x, modern interface only) ------------
 * Devices sit in 512-byte slots from HV_VIRTIO_MMIO_BASE, where QEMU's
 * microvm machine puts its own, so one guest image finds its devices under
 * both.  hv also lists each device on the kernel command line in microvm's
 * format, `virtio_mmio.device=512@0xfeb00000:EVENT`, where the last number
 * is the hv event that signals the device's interrupt (under QEMU it is an
 * IOAPIC pin).  A slot whose DeviceID register reads 0 is empty.
 */
#define HV_VIRTIO_MMIO_BASE    0xfeb00000
#define HV_VIRTIO_MMIO_SLOT    0x200
#define HV_VIRTIO_MMIO_SLOTS   32
#define HV_VIRTIO_EVENT_BASE   32       /* device in slot s signals event 32 + s */

/* ---- PC platform: what a stock kernel (Linux) finds -------------------------
 * A kernel written for a PC without legacy timers finds, beside hv's own
 * ABI: a 16550A UART, a CMOS real-time clock (the host's UTC time), a local
 * APIC and an IOAPIC at their usual places, the
 * TSC frequency in CPUID leaves 0x15/0x16, and ACPI tables (start_info's
 * rsdp_paddr) describing them, the virtio-mmio devices (as LNRO0005) and a
 * hardware-reduced power interface: writing HV_ACPI_SLP_EN | (HV_ACPI_S5 <<
 * 2) to the sleep control port powers off (exit code 0), writing
 * HV_ACPI_RESET_VALUE to the reset port reboots (HV_SHUTDOWN_REBOOT).
 * See docs/linux.md.
 */
#define HV_UART_PORT           0x3f8    /* COM1: 8 registers */
#define HV_UART_IRQ            4        /* its IOAPIC pin (ISA IRQ 4) */
#define HV_RTC_PORT            0x70     /* MC146818 clock + CMOS: index, then data at 0x71 */
#define HV_LAPIC_BASE          0xfee00000
#define HV_IOAPIC_BASE         0xfec00000
#define HV_IOAPIC_PINS         24
#define HV_ACPI_SLEEP_CONTROL_PORT 0x600  /* FADT SLEEP_CONTROL_REG (8 bits) */
#define HV_ACPI_SLEEP_STATUS_PORT  0x601  /* FADT SLEEP_STATUS_REG (8 bits): WAK_STS */
#define HV_ACPI_RESET_PORT     0x602    /* FADT RESET_REG (8 bits) */
#define HV_ACPI_RESET_VALUE    0x1
#define HV_KBC_PORT            0x64     /* 8042 command port: 0xfe pulses reset (reboots) */
#define HV_KBC_RESET           0xfe
#define HV_RESET_CONTROL_PORT  0xcf9    /* PC reset control: bit 2 (0x04) resets (reboots) */
#define HV_RESET_VECTOR        0xffff0  /* real-mode f000:fff0: hv puts a stub writing the reset port */
#define HV_ACPI_SLP_EN         0x20     /* sleep control: SLP_EN, SLP_TYP in bits 2..4 */
#define HV_ACPI_S5             5        /* SLP_TYP of \_S5 (soft off) in hv's DSDT */
#define HV_ACPI_SCI_IRQ        9        /* FADT SCI_INT (nothing raises it) */
#define HV_VIRTIO_IRQ_BASE     16       /* virtio slot s < 8 interrupts on IOAPIC pin 16 + s */
#define HV_VIRTIO_IRQ_SLOTS    8
#define HV_CPUID_TSC_LEAF      0x15     /* EBX/EAX = TSC / crystal, ECX = crystal Hz */
#define HV_CPUID_FREQ_LEAF     0x16     /* EAX = base MHz */

/* ---- Boot: PVH (Xen's hvm_start_info, as QEMU supplies it) -------------------
 * The entry point named by the ELF note XEN_ELFNOTE_PHYS32_ENTRY (type 18,
 * owner "Xen") starts in 32-bit flat protected mode, paging off, interrupts
 * off, with EBX = guest-physical address of this struct.
 */
#define HV_PVH_START_MAGIC     0x336ec578
#define HV_PVH_NOTE_ENTRY      18
#define HV_E820_RAM            1
#define HV_E820_RESERVED       2
#define HV_E820_ACPI           3        /* ACPI tables (reclaimable once read) */

struct hv_pvh_start_info {
    uint32_t magic;             /* HV_PVH_START_MAGIC */
    uint32_t version;           /* 1: memmap fields are valid */
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;     /* NUL-terminated; 0 if none */
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;      /* struct hv_pvh_memmap_entry[memmap_entries] */
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct hv_pvh_memmap_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;              /* HV_E820_* */
    uint32_t reserved;
};

/* One boot module (Xen's hvm_modlist_entry): start_info.modlist_paddr points
 * at nr_modules of these.  hv passes at most one, the initial RAM disk
 * (`--initrd`), page-aligned in RAM below 4 GiB and above the kernel, as
 * QEMU does; Linux takes module 0 as its initrd. */
struct hv_pvh_modlist_entry {
    uint64_t paddr;             /* guest-physical address of the module */
    uint64_t size;              /* bytes */
    uint64_t cmdline_paddr;     /* NUL-terminated module command line; 0 if none */
    uint64_t reserved;
};

/* ---- Event channels ----------------------------------------------------------
 * A port is an event number (HV_HC_EVENT_REGISTER's page): raising port P of
 * a partition sets its pending bit P.  Each partition has HV_EVTCHN_PORTS
 * ports; those below HV_EVTCHN_FIRST are reserved for hv's own events (the
 * timer, virtio devices) and never change state.  A port is free, unbound
 * (allocated for one named peer, not yet connected), or interdomain
 * (connected to a remote port of that peer).  Closing one end puts the
 * other back to unbound; destroying a partition closes all its ports.  A
 * partition may name a peer only if the parent permitted the pair.
 */
#define HV_EVTCHN_PORTS        512      /* == HV_EVENTS_MAX: port P is event bit P */
#define HV_EVTCHN_FIRST        64       /* ports below are reserved (timer, virtio) */

#define HV_EVTCHN_FREE         0
#define HV_EVTCHN_RESERVED     1        /* hv's own event: not a channel */
#define HV_EVTCHN_UNBOUND      2        /* waiting for peer to bind */
#define HV_EVTCHN_INTERDOMAIN  3        /* connected to peer's remote_port */

struct hv_evtchn_status {
    uint32_t state;             /* HV_EVTCHN_* */
    uint32_t peer;              /* partition id (unbound, interdomain), else 0 */
    uint32_t remote_port;       /* interdomain: the peer's port, else 0 */
    uint32_t vcpu;              /* the vCPU its events go to */
};

/* ---- Grants --------------------------------------------------------------------
 * A partition shares a frame of its RAM by writing an entry in its grant
 * table (Xen's version-1 layout): flags, the peer it is for, the frame.
 * The peer then copies to or from that frame with HV_HC_GRANT_COPY, naming
 * (granter id, ref).  For every segment hv reads the entry once, checks
 * HV_GTF_PERMIT_ACCESS, the peer id, read-only against the direction and
 * that the granter owns the frame, marks the entry in use (HV_GTF_READING
 * or HV_GTF_WRITING) with a compare-and-swap of the whole entry, copies,
 * and clears the mark.  The granter ends access with HV_HC_GRANT_END,
 * which fails with -HV_EBUSY while a mark is set.  A segment's status:
 *   0, or -HV_EINVAL (offset + len > one page, flags unknown, ref beyond the
 *   table), -HV_EFAULT (the caller's buffer), -HV_ENOENT (no such granter or
 *   it has no table), -HV_EPERM (the entry does not grant this peer this
 *   access, or the pair is not permitted), -HV_EAGAIN (another copy has the
 *   entry marked right now).
 * Entries hold 16-bit peer ids: partitions with ids >= 65536 cannot be granted to.
 */
#define HV_GRANT_REFS_MAX      2048
#define HV_GRANT_COPY_MAX      64
#define HV_GTF_PERMIT_ACCESS   0x1      /* the entry grants access (type bits 0..1) */
#define HV_GTF_TYPE_MASK       0x3
#define HV_GTF_READONLY        0x4      /* the peer may only read the frame */
#define HV_GTF_READING         0x8      /* set by hv: a copy reads the frame now */
#define HV_GTF_WRITING         0x10     /* set by hv: a copy writes the frame now */
#define HV_GRANT_COPY_TO_PEER  0x1      /* segment flag: caller's buffer -> granted frame */

struct hv_grant_entry {
    uint16_t flags;             /* HV_GTF_* */
    uint16_t domid;             /* the peer the frame is granted to */
    uint32_t frame;             /* guest frame number (gpa >> 12) in the granter's RAM */
};

struct hv_grant_copy_seg {
    uint64_t buf;               /* caller's guest virtual address */
    uint32_t granter;           /* partition id that owns the grant */
    uint32_t ref;               /* index in the granter's table */
    uint16_t offset;            /* within the granted frame */
    uint16_t len;               /* offset + len <= HV_PAGE_SIZE */
    uint16_t flags;             /* HV_GRANT_COPY_TO_PEER or 0 (read the frame) */
    uint16_t pad;
    int32_t  status;            /* written by hv: 0 or -HV_E* */
    uint32_t pad2;
};

#endif /* HV_ABI_H */
