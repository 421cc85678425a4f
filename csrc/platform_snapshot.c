/*
 * platform_snapshot.c - the PC platform's state in and out of a snapshot.
 *
 * T:919 A guest that drives the PC platform (Linux: its console on the
 * UART, its interrupts through the IOAPIC, the RTC) is stopped in the middle
 * of a conversation with it: interrupts enabled in IER, a THR-empty
 * interrupt owed, bytes typed but not read, pins routed and levels raised.
 * A restore that forgot them would resume a guest whose console never
 * interrupts again.  These calls hand that state to the snapshot (Python
 * lays out the record, hv/snapshot_format.py) and take it back, checked:
 * a state file is input like any other, and a value no guest could have
 * written is refused, never stored.  The local APICs are per vCPU and
 * private to lapic.c (hv_lapic_get_snapshot there).
 */
#include <errno.h>
#include <string.h>
#include "core.h"

_Static_assert(sizeof(((struct hv_platform_snapshot *)0)->uart_tx) == UART_TX_MAX,
               "hv.h spells UART_TX_MAX for cffi");
_Static_assert(sizeof(((struct hv_platform_snapshot *)0)->uart_rx) == UART_RX_MAX,
               "hv.h spells UART_RX_MAX for cffi");
_Static_assert(sizeof(((struct hv_platform_snapshot *)0)->ioapic_redir) ==
               sizeof(((struct ioapic *)0)->redir), "hv.h spells HV_IOAPIC_PINS for cffi");
_Static_assert(sizeof(((struct hv_platform_snapshot *)0)->rtc_ram) ==
               sizeof(((struct rtc_cmos *)0)->ram), "hv.h spells the CMOS size for cffi");

#define PINS_MASK ((1u << HV_IOAPIC_PINS) - 1)

void hv_platform_get_snapshot(struct hv_partition *p, struct hv_platform_snapshot *out)
{
    struct platform *pl = p->platform;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&pl->lock);
    const struct uart16550 *u = &pl->uart;
    out->uart_ier = u->ier;
    out->uart_lcr = u->lcr;
    out->uart_mcr = u->mcr;
    out->uart_scr = u->scr;
    out->uart_dll = u->dll;
    out->uart_dlm = u->dlm;
    out->uart_fcr = u->fcr;
    out->uart_thre_pending = u->thre_pending;
    out->uart_line = u->line;
    out->uart_tx_len = u->tx_len;
    memcpy(out->uart_tx, u->tx, u->tx_len);
    out->uart_rx_len = u->rx_len;
    for (uint32_t i = 0; i < u->rx_len; i++)         /* oldest first */
        out->uart_rx[i] = u->rx[(u->rx_head + i) % UART_RX_MAX];
    const struct ioapic *io = &pl->ioapic;
    out->ioapic_select = io->select;
    out->ioapic_id = io->id;
    out->ioapic_lines = io->lines;
    out->ioapic_remote_irr = io->remote_irr;
    memcpy(out->ioapic_redir, io->redir, sizeof(io->redir));
    pthread_mutex_unlock(&pl->lock);
    out->rtc_index = pl->rtc.index;
    memcpy(out->rtc_ram, pl->rtc.ram, sizeof(pl->rtc.ram));
}

int hv_platform_set_snapshot(struct hv_partition *p, const struct hv_platform_snapshot *in)
{
    if (p->vcpu)
        return -EBUSY;              /* before any vCPU exists, as the partition's own state */
    /* What the registers' write paths (uart16550.c, ioapic.c, rtc_cmos.c)
     * can leave there, and buffers within their bounds. */
    if (in->uart_tx_len > UART_TX_MAX || in->uart_rx_len > UART_RX_MAX ||
        in->uart_thre_pending > 1 || in->uart_line > 1 || in->ioapic_select > 0xff ||
        (in->ioapic_lines & ~PINS_MASK) || (in->ioapic_remote_irr & ~PINS_MASK) ||
        in->ioapic_id > 0xf || in->rtc_index > 0x7f)
        return -EINVAL;
    for (unsigned pin = 0; pin < HV_IOAPIC_PINS; pin++)
        if (!ioapic_entry_writable(in->ioapic_redir[pin]))
            return -EINVAL;
    struct platform *pl = p->platform;
    pthread_mutex_lock(&pl->lock);
    struct uart16550 *u = &pl->uart;
    u->ier = in->uart_ier;
    u->lcr = in->uart_lcr;
    u->mcr = in->uart_mcr;
    u->scr = in->uart_scr;
    u->dll = in->uart_dll;
    u->dlm = in->uart_dlm;
    u->fcr = in->uart_fcr;
    u->thre_pending = in->uart_thre_pending;
    u->line = in->uart_line;
    u->tx_len = in->uart_tx_len;
    memcpy(u->tx, in->uart_tx, in->uart_tx_len);
    u->rx_head = 0;
    u->rx_len = in->uart_rx_len;
    memcpy(u->rx, in->uart_rx, in->uart_rx_len);
    struct ioapic *io = &pl->ioapic;
    io->select = in->ioapic_select;
    io->id = in->ioapic_id;
    io->lines = in->ioapic_lines;
    io->remote_irr = in->ioapic_remote_irr;
    memcpy(io->redir, in->ioapic_redir, sizeof(io->redir));
    pthread_mutex_unlock(&pl->lock);
    pl->rtc.index = in->rtc_index;
    memcpy(pl->rtc.ram, in->rtc_ram, sizeof(pl->rtc.ram));
    return 0;
}
