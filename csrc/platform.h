/*
 * platform.h - the PC pieces a stock kernel expects (abi.h "PC platform"):
 * a 16550A UART, a local APIC per vCPU, an IOAPIC, ACPI's power registers
 * and the CPUID leaves that name the TSC frequency.  Internal to the core.
 *
 * T:546 Where they plug in.  Every engine reaches them through the same
 * three doors: port I/O (platform_port), guest-physical accesses outside RAM
 * (platform_mmio) and CPUID (platform_cpuid).  Interrupts from the UART go
 * through the IOAPIC into the local APIC, whose highest pending vector the
 * run loop's one injection point delivers (lapic_before_entry).
 */
#ifndef HV_PLATFORM_H
#define HV_PLATFORM_H

#include <pthread.h>
#include <stdint.h>

struct hv_partition;
struct hv_vcpu;
struct hv_exit;
struct lapic;

/* The UART's transmit buffer: bytes wait here until a newline, a full
 * buffer or a halt hands them to the parent in one exit. */
#define UART_TX_MAX 4096
/* Received bytes wait here for the guest: the part's 16-byte FIFO plus the
 * host side's buffering, so a pasted line is not cut short. */
#define UART_RX_MAX 4096

struct uart16550 {
    uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
    uint8_t thre_pending;       /* THR-empty interrupt condition (cleared by reading IIR) */
    uint8_t line;               /* the IRQ line's level, last told to the IOAPIC */
    uint32_t tx_len;
    uint8_t tx[UART_TX_MAX];
    uint32_t rx_head, rx_len;   /* a ring: rx[rx_head] is the next byte RBR reads */
    uint8_t rx[UART_RX_MAX];
};

struct ioapic {
    uint32_t select;            /* IOREGSEL */
    uint32_t id;
    uint32_t lines;             /* input levels, one bit per pin */
    uint32_t remote_irr;        /* level-triggered pins delivered, not yet EOIed */
    uint64_t redir[24];         /* redirection table (HV_IOAPIC_PINS entries) */
};

struct rtc_cmos {
    uint8_t index;              /* selected by a write to port 0x70 */
    uint8_t ram[128];           /* CMOS bytes; the clock registers are read live */
};

struct platform {
    pthread_mutex_t lock;       /* UART and IOAPIC state: vCPU and device threads */
    struct uart16550 uart;
    struct ioapic ioapic;
    struct rtc_cmos rtc;        /* the vCPU's thread only */
};

/* platform.c */
int  platform_create(struct hv_partition *p);
void platform_free(struct hv_partition *p);
/* A port access: -1 = not a platform port; 0 = done (*value holds a read's
 * result); 1 = *exit is filled for the parent (UART output, power off). */
int  platform_port(struct hv_vcpu *v, uint16_t port, uint8_t size, int write,
                   uint32_t *value, struct hv_exit *exit);
/* An access outside RAM: -1 = nobody's; 0 = done. */
int  platform_mmio(struct hv_vcpu *v, uint64_t addr, uint32_t size, int write, uint64_t *value);
/* 1 if the platform answers this CPUID leaf (r = eax, ebx, ecx, edx). */
int  platform_cpuid(const struct hv_partition *p, uint32_t leaf, uint32_t subleaf, uint32_t r[4]);
/* Hand buffered UART bytes to the parent in *exit; 1 if there were any. */
int  platform_uart_flush(struct hv_partition *p, struct hv_exit *exit);
/* The guest's TSC frequency in Hz: the host's (measured once per process),
 * or 1 GHz when deterministic (RDTSC reads the instruction clock). */
uint64_t platform_tsc_hz(const struct hv_partition *p);
uint64_t platform_host_tsc_hz(void);
/* CPUID 0x15 and 0x16 for a TSC of hz (1 if leaf is one of them): TCG's
 * CPUID hook and KVM's CPUID table (engine_clock_cpuid) take them from here. */
int  platform_clock_cpuid(uint64_t hz, uint32_t leaf, uint32_t r[4]);

/* uart16550.c (called with platform.lock held).  Returns 1 when the
 * transmit buffer should go to the parent now. */
int  uart_access(struct hv_partition *p, uint16_t reg, int write, uint8_t *value);
/* Bytes from the parent for the guest to read; returns how many fitted. */
uint32_t uart_receive(struct hv_partition *p, const uint8_t *data, uint32_t len);

/* rtc_cmos.c: port 0 = 0x70 (index), 1 = 0x71 (data). */
void rtc_reset(struct rtc_cmos *r);
void rtc_access(struct rtc_cmos *r, unsigned port, int write, uint8_t *value);

/* ioapic.c (platform.lock held for the first three) */
void ioapic_reset(struct ioapic *io);
void ioapic_set_line(struct hv_partition *p, unsigned pin, int level);
int  ioapic_access(struct hv_partition *p, uint64_t offset, int write, uint32_t *value);
void ioapic_eoi(struct hv_partition *p, uint8_t vector);
/* Could a guest's writes have left this redirection entry (no read-only bit set)? */
int  ioapic_entry_writable(uint64_t entry);

/* lapic.c: one per vCPU. */
struct lapic *lapic_create(struct hv_vcpu *v);
void lapic_free(struct lapic *a);
/* Make `vector` pending (any thread); level: the source wants an EOI. */
void lapic_accept(struct hv_vcpu *v, uint8_t vector, int level);
int  lapic_access(struct hv_vcpu *v, uint64_t offset, int write, uint32_t *value);
/* The run loop's injection point: fire an expired timer, deliver the
 * highest pending vector if the guest can take it.  1 if one was delivered. */
int  lapic_before_entry(struct hv_vcpu *v);
/* For sleeping in hlt: fire an expired timer (not under v->lock: it
 * kicks), then ask whether a vector is deliverable, and until when to sleep. */
void lapic_poll_timer(struct hv_vcpu *v);
int  lapic_has_interrupt(struct hv_vcpu *v);
uint64_t lapic_deadline(struct hv_vcpu *v);

#endif
