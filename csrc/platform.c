/*
 * platform.c - the doors into the PC platform (platform.h): port I/O,
 * accesses outside RAM, CPUID; and ACPI's power registers.
 *
 * T:550 hv_vcpu_run's exit handling asks platform_port() and
 * platform_mmio() before anything goes to the parent, and the TCG engine
 * asks them from inside its hooks, so the UART, both APICs and the power
 * registers behave the same on every engine and never cost a trip to
 * Python (except for a line of UART output, or the final power-off).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>
#include "core.h"

int platform_create(struct hv_partition *p)
{
    p->platform = calloc(1, sizeof(*p->platform));
    if (!p->platform)
        return -1;
    pthread_mutex_init(&p->platform->lock, NULL);
    ioapic_reset(&p->platform->ioapic);
    rtc_reset(&p->platform->rtc);
    return 0;
}

void platform_free(struct hv_partition *p)
{
    if (!p->platform)
        return;
    pthread_mutex_destroy(&p->platform->lock);
    free(p->platform);
    p->platform = NULL;
}

int platform_uart_flush(struct hv_partition *p, struct hv_exit *exit)
{
    struct uart16550 *u = &p->platform->uart;
    pthread_mutex_lock(&p->platform->lock);
    uint32_t n = u->tx_len;
    _Static_assert(sizeof(exit->data) >= UART_TX_MAX, "a full buffer fits one exit");
    memcpy(exit->data, u->tx, n);
    u->tx_len = 0;
    pthread_mutex_unlock(&p->platform->lock);
    if (!n)
        return 0;
    exit->kind = HV_EXIT_UART;
    exit->data_len = n;
    return 1;
}

uint32_t hv_uart_input(struct hv_partition *p, const uint8_t *data, uint32_t len)
{
    pthread_mutex_lock(&p->platform->lock);
    uint32_t n = uart_receive(p, data, len);
    pthread_mutex_unlock(&p->platform->lock);
    return n;
}

uint32_t hv_uart_drain(struct hv_partition *p, uint8_t *buf, uint32_t max)
{
    struct uart16550 *u = &p->platform->uart;
    pthread_mutex_lock(&p->platform->lock);
    uint32_t n = u->tx_len < max ? u->tx_len : max;
    memcpy(buf, u->tx, n);
    memmove(u->tx, u->tx + n, u->tx_len - n);
    u->tx_len -= n;
    pthread_mutex_unlock(&p->platform->lock);
    return n;
}

static int power(struct hv_exit *exit, uint64_t reason)
{
    exit->kind = HV_EXIT_SHUTDOWN;
    exit->reason = reason;
    exit->code = 0;
    return 1;
}

int platform_port(struct hv_vcpu *v, uint16_t port, uint8_t size, int write,
                  uint32_t *value, struct hv_exit *exit)
{
    struct hv_partition *p = v->partition;
    (void)size;
    if (port >= HV_UART_PORT && port < HV_UART_PORT + 8) {
        /* Byte registers: a wider access reaches the first one only. */
        uint8_t byte = (uint8_t)*value;
        pthread_mutex_lock(&p->platform->lock);
        int flush = uart_access(p, port - HV_UART_PORT, write, &byte);
        pthread_mutex_unlock(&p->platform->lock);
        if (!write)
            *value = byte;
        return flush ? platform_uart_flush(p, exit) : 0;
    }
    if (port == HV_RTC_PORT || port == HV_RTC_PORT + 1) {
        uint8_t byte = (uint8_t)*value;
        rtc_access(&p->platform->rtc, port - HV_RTC_PORT, write, &byte);
        if (!write)
            *value = byte;
        return 0;
    }
    switch (port) {
    case HV_ACPI_SLEEP_CONTROL_PORT:
        /* ACPI 6.4, 4.8.3.7: SLP_EN with SLP_TYP of \_S5 is soft off. */
        if (write && (*value & HV_ACPI_SLP_EN) && ((*value >> 2) & 7) == HV_ACPI_S5)
            return power(exit, HV_SHUTDOWN_POWEROFF);
        if (!write)
            *value = 0;
        return 0;
    case HV_ACPI_SLEEP_STATUS_PORT:
        if (!write)
            *value = 0;
        return 0;
    case HV_ACPI_RESET_PORT:
        if (write && (uint8_t)*value == HV_ACPI_RESET_VALUE)
            return power(exit, HV_SHUTDOWN_REBOOT);
        if (!write)
            *value = 0;
        return 0;
    /* The other ways a PC resets (Linux tries them after ACPI's): the
     * keyboard controller's reset pulse and the reset control register.
     * Only those writes are the platform's; the rest of these ports is
     * the empty bus it was. */
    case HV_KBC_PORT:
        if (write && (uint8_t)*value == HV_KBC_RESET)
            return power(exit, HV_SHUTDOWN_REBOOT);
        return -1;
    case HV_RESET_CONTROL_PORT:
        if (write && size == 1 && (*value & 0x04))
            return power(exit, HV_SHUTDOWN_REBOOT);
        return -1;
    default:
        return -1;
    }
}

int platform_mmio(struct hv_vcpu *v, uint64_t addr, uint32_t size, int write, uint64_t *value)
{
    struct hv_partition *p = v->partition;
    uint32_t word = (uint32_t)*value;
    int done = -1;
    if (addr >= HV_LAPIC_BASE && addr < HV_LAPIC_BASE + HV_PAGE_SIZE) {
        done = size == 4 ? lapic_access(v, addr - HV_LAPIC_BASE, write, &word) : 0;
    } else if (addr >= HV_IOAPIC_BASE && addr < HV_IOAPIC_BASE + HV_PAGE_SIZE) {
        pthread_mutex_lock(&p->platform->lock);
        done = size == 4 ? ioapic_access(p, addr - HV_IOAPIC_BASE, write, &word) : 0;
        pthread_mutex_unlock(&p->platform->lock);
    }
    if (done == 0 && !write)
        *value = size == 4 ? word : 0;
    return done;
}

/* ---- Test entries: the same doors, no guest running ----------------------- */

int hv_test_platform_port(struct hv_vcpu *v, uint16_t port, uint8_t size, int write,
                          uint32_t *value, struct hv_exit *exit)
{
    exit->kind = 0;
    exit->data_len = 0;
    return platform_port(v, port, size, write, value, exit);
}

int hv_test_platform_mmio(struct hv_vcpu *v, uint64_t addr, uint32_t size, int write,
                          uint64_t *value)
{
    return platform_mmio(v, addr, size, write, value);
}

int hv_test_cpuid(struct hv_partition *p, uint32_t leaf, uint32_t subleaf, uint32_t *r)
{
    return platform_cpuid(p, leaf, subleaf, r);
}

/* T:551 The TSC frequency.  Both engines run the guest on the host's TSC
 * (Unicorn's RDTSC reads it), so the guest is told the host's rate:
 * measured once against CLOCK_MONOTONIC_RAW over 10 ms, when a guest
 * first asks. */
static uint64_t tsc_hz;

static void measure_tsc(void)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC_RAW, &t0);
    uint64_t c0 = __rdtsc(), ns;
    do {
        clock_gettime(CLOCK_MONOTONIC_RAW, &t1);
        ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ull + (uint64_t)(t1.tv_nsec - t0.tv_nsec);
    } while (ns < 10000000);
    uint64_t c1 = __rdtsc();
    tsc_hz = (uint64_t)((unsigned __int128)(c1 - c0) * 1000000000u / ns);
}

uint64_t platform_host_tsc_hz(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, measure_tsc);
    return tsc_hz;
}

uint64_t platform_tsc_hz(const struct hv_partition *p)
{
    if (p->deterministic)
        return 1000000000;          /* one instruction per nanosecond (engine_tcg.c) */
    return platform_host_tsc_hz();
}

void engine_clock_cpuid(uint32_t leaf, uint32_t r[4])
{
    if (!platform_clock_cpuid(platform_host_tsc_hz(), leaf, r))
        r[0] = r[1] = r[2] = r[3] = 0;
}

int platform_clock_cpuid(uint64_t hz, uint32_t leaf, uint32_t r[4])
{
    if (leaf == HV_CPUID_TSC_LEAF) {
        r[0] = 1;                       /* TSC = crystal * EBX / EAX */
        r[1] = 2;
        r[2] = (uint32_t)(hz / 2);      /* crystal Hz: the APIC timer's bus clock */
        r[3] = 0;
        return 1;
    }
    if (leaf == HV_CPUID_FREQ_LEAF) {
        r[0] = (uint32_t)(hz / 1000000);    /* base MHz */
        r[1] = r[0];                        /* maximum MHz */
        r[2] = (uint32_t)(hz / 2000000);    /* bus MHz */
        r[3] = 0;
        return 1;
    }
    return 0;
}

/* The leaves hv answers for a kernel that wants to know its clocks without
 * calibrating them against a PIT it does not have (Linux:
 * native_calibrate_tsc).  The crystal is half the TSC: Linux multiplies
 * crystal kHz by EBX (and by 1000 for the APIC timer) in 32 bits, and
 * both products stay below 2^32 for any TSC below 8.5 GHz. */
int platform_cpuid(const struct hv_partition *p, uint32_t leaf, uint32_t subleaf, uint32_t r[4])
{
    switch (leaf) {
    case 0:
        /* Highest basic leaf 0x16, with the engine's vendor: this is asked
         * only by the TCG engine, whose CPU model is GenuineIntel. */
        r[0] = HV_CPUID_FREQ_LEAF;
        r[1] = 0x756e6547; r[2] = 0x6c65746e; r[3] = 0x49656e69;   /* "GenuineIntel" */
        return 1;
    case HV_CPUID_TSC_LEAF:
    case HV_CPUID_FREQ_LEAF:
        return platform_clock_cpuid(platform_tsc_hz(p), leaf, r);
    case 7:
        /* Structured features, subleaf 0: the CPU model's (Unicorn 2.1.4's
         * Haswell: EBX 0x389, tests/test_linux_platform.py checks) plus
         * TSC_ADJUST, whose MSR QEMU implements.  With an invariant TSC
         * (below) this tells Linux the TSC needs no watchdog: it is the
         * host's, and a vCPU the host runs late must not make the kernel
         * distrust it against its own (late) timer ticks. */
        if (subleaf != 0)
            return 0;
        r[0] = 0; r[1] = 0x389 | (1u << 1); r[2] = 0; r[3] = 0;
        return 1;
    case 0x80000007:
        r[0] = r[1] = r[2] = 0;
        r[3] = 1u << 8;                 /* invariant TSC: constant rate, runs in every state */
        return 1;
    default:
        /* 0xe..0x14 lie between the model's last leaf and ours: empty. */
        if (leaf > 0xd && leaf < HV_CPUID_TSC_LEAF) {
            r[0] = r[1] = r[2] = r[3] = 0;
            return 1;
        }
        return 0;
    }
}
