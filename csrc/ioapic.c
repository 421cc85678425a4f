/*
 * ioapic.c - the I/O APIC at HV_IOAPIC_BASE: device lines to vectors.
 *
 * T:549 Each of the 24 input pins has a redirection entry (82093AA data
 * sheet, 3.2.4): vector, trigger mode, polarity, mask and destination.  An
 * edge-triggered pin delivers on a rising line; a level-triggered one
 * delivers while its line is high, once per EOI (remote IRR).  There is one
 * CPU per partition for now, so every entry's destination is vCPU 0's local
 * APIC.  Registers are reached through IOREGSEL (offset 0) and IOWIN (0x10).
 */
#include "core.h"

#define REDIR_VECTOR      0xffull
#define REDIR_DELIVERY    (7ull << 8)     /* 0 fixed, 1 lowest priority */
#define REDIR_STATUS      (1ull << 12)    /* read-only */
#define REDIR_REMOTE_IRR  (1ull << 14)    /* read-only */
#define REDIR_LEVEL       (1ull << 15)
#define REDIR_MASKED      (1ull << 16)
#define REDIR_READ_ONLY   (REDIR_STATUS | REDIR_REMOTE_IRR)

#define IOAPIC_VERSION    0x11

void ioapic_reset(struct ioapic *io)
{
    for (unsigned pin = 0; pin < HV_IOAPIC_PINS; pin++)
        io->redir[pin] = REDIR_MASKED;
}

static void deliver(struct hv_partition *p, unsigned pin)
{
    struct ioapic *io = &p->platform->ioapic;
    uint64_t entry = io->redir[pin];
    uint8_t vector = (uint8_t)(entry & REDIR_VECTOR);
    int level = !!(entry & REDIR_LEVEL);
    /* Fixed and lowest-priority delivery reach the one CPU; NMI, INIT and
     * ExtINT have nothing to go to.  Vectors below 16 are illegal. */
    if ((entry & REDIR_MASKED) || (entry & REDIR_DELIVERY) > (1ull << 8) || vector < 16)
        return;
    if (level) {
        if (io->remote_irr & (1u << pin))
            return;                     /* wait for the EOI */
        io->remote_irr |= 1u << pin;
    }
    pthread_mutex_lock(&p->vcpu_lock);
    if (p->vcpu)
        lapic_accept(p->vcpu, vector, level);
    pthread_mutex_unlock(&p->vcpu_lock);
}

void ioapic_set_line(struct hv_partition *p, unsigned pin, int level)
{
    struct ioapic *io = &p->platform->ioapic;
    if (pin >= HV_IOAPIC_PINS)
        return;
    uint32_t bit = 1u << pin, was = io->lines & bit;
    io->lines = level ? io->lines | bit : io->lines & ~bit;
    /* Active-low polarity (bit 13) would invert the line; hv's sources
     * are all active-high, as ISA IRQs are. */
    if (level && (!was || (io->redir[pin] & REDIR_LEVEL)))
        deliver(p, pin);
}

/* The local APIC's EOI of a level-triggered vector: the pins that
 * delivered it may deliver again. */
void ioapic_eoi(struct hv_partition *p, uint8_t vector)
{
    pthread_mutex_lock(&p->platform->lock);
    struct ioapic *io = &p->platform->ioapic;
    for (unsigned pin = 0; pin < HV_IOAPIC_PINS; pin++) {
        if (!(io->remote_irr & (1u << pin)) || (io->redir[pin] & REDIR_VECTOR) != vector)
            continue;
        io->remote_irr &= ~(1u << pin);
        if (io->lines & (1u << pin))
            deliver(p, pin);
    }
    pthread_mutex_unlock(&p->platform->lock);
}

static uint32_t read_register(const struct ioapic *io, uint32_t index)
{
    if (index == 0)
        return io->id << 24;
    if (index == 1)
        return IOAPIC_VERSION | ((HV_IOAPIC_PINS - 1) << 16);
    if (index == 2)
        return io->id << 24;            /* arbitration id */
    if (index >= 0x10 && index < 0x10 + 2 * HV_IOAPIC_PINS) {
        unsigned pin = (index - 0x10) / 2;
        uint64_t entry = io->redir[pin];
        if (io->remote_irr & (1u << pin))
            entry |= REDIR_REMOTE_IRR;
        return (uint32_t)(index & 1 ? entry >> 32 : entry);
    }
    return 0;
}

static void write_register(struct hv_partition *p, uint32_t index, uint32_t value)
{
    struct ioapic *io = &p->platform->ioapic;
    if (index == 0) {
        io->id = (value >> 24) & 0xf;
        return;
    }
    if (index < 0x10 || index >= 0x10 + 2 * HV_IOAPIC_PINS)
        return;
    unsigned pin = (index - 0x10) / 2;
    uint64_t entry = io->redir[pin];
    if (index & 1)
        entry = (entry & 0xffffffffull) | ((uint64_t)value << 32);
    else
        entry = (entry & ~0xffffffffull) | (value & ~REDIR_READ_ONLY);
    io->redir[pin] = entry;
    if (!(entry & REDIR_LEVEL))
        io->remote_irr &= ~(1u << pin);
    /* Unmasking a level pin whose line is high delivers it now. */
    if ((entry & REDIR_LEVEL) && (io->lines & (1u << pin)))
        deliver(p, pin);
}

int ioapic_entry_writable(uint64_t entry)
{
    return !(entry & REDIR_READ_ONLY);      /* reads compute those bits */
}

int ioapic_access(struct hv_partition *p, uint64_t offset, int write, uint32_t *value)
{
    struct ioapic *io = &p->platform->ioapic;
    if (offset == 0x00) {               /* IOREGSEL */
        if (write)
            io->select = *value & 0xff;
        else
            *value = io->select;
    } else if (offset == 0x10) {        /* IOWIN */
        if (write)
            write_register(p, io->select, *value);
        else
            *value = read_register(io, io->select);
    } else if (!write) {
        *value = 0;
    }
    return 0;
}
