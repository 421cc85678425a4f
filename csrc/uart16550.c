/*
 * uart16550.c - COM1, a 16550A UART at HV_UART_PORT, IRQ HV_UART_IRQ.
 *
 * T:547 The register file lives in the core, so a guest's polling loop
 * (read LSR, write THR, per byte) never leaves C on either engine.  Output
 * collects in a buffer that goes to the parent partition in one exit per
 * line (or per full buffer, or when the guest halts).  Transmission is
 * instant: THR is always empty again after a write, which is what the
 * transmit-empty interrupt reports.  Received bytes come from the parent
 * (hv_uart_input: what is typed on hv's console) into a receive buffer that
 * RBR reads, with LSR's data-ready bit and the received-data interrupt,
 * which takes priority over THR-empty.  Registers as in the PC16550D data sheet; Linux's 8250
 * driver probes the scratch register, IER, the FIFO bits of IIR and the
 * modem-control loopback, so each behaves as the part does.
 */
#include "core.h"

/* Register numbers (offset from the base port). */
enum { RBR_THR = 0, IER = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

#define LCR_DLAB     0x80
#define IER_ERBFI    0x01       /* interrupt when received data is available */
#define IER_ETBEI    0x02       /* interrupt when THR is empty */
#define IIR_NONE     0x01
#define IIR_THRE     0x02
#define IIR_RDA      0x04       /* received data available */
#define IIR_FIFO     0xc0       /* FIFOs enabled: a 16550A, not a 16550 */
#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define LSR_DR       0x01
#define LSR_THRE     0x20
#define LSR_TEMT     0x40
#define MCR_LOOP     0x10
#define MSR_CONNECTED 0xb0      /* DCD, DSR, CTS: a terminal is attached */

static void update_irq(struct hv_partition *p, struct uart16550 *u)
{
    uint8_t level = ((u->ier & IER_ERBFI) && u->rx_len) || ((u->ier & IER_ETBEI) && u->thre_pending);
    if (level != u->line) {
        u->line = level;
        ioapic_set_line(p, HV_UART_IRQ, level);
    }
}

/* In loopback the modem outputs come back as inputs: DTR->DSR, RTS->CTS,
 * OUT1->RI, OUT2->DCD. */
static uint8_t modem_status(const struct uart16550 *u)
{
    if (!(u->mcr & MCR_LOOP))
        return MSR_CONNECTED;
    uint8_t m = u->mcr;
    return (uint8_t)(((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4));
}

static void rx_push(struct uart16550 *u, uint8_t byte)
{
    u->rx[(u->rx_head + u->rx_len) % UART_RX_MAX] = byte;
    u->rx_len++;
}

static uint8_t rx_pop(struct uart16550 *u)
{
    if (!u->rx_len)
        return 0;
    uint8_t byte = u->rx[u->rx_head];
    u->rx_head = (u->rx_head + 1) % UART_RX_MAX;
    u->rx_len--;
    return byte;
}

static uint8_t uart_read(struct uart16550 *u, uint16_t reg)
{
    int dlab = u->lcr & LCR_DLAB;
    switch (reg) {
    case RBR_THR: return dlab ? u->dll : rx_pop(u);
    case IER:     return dlab ? u->dlm : u->ier;
    case IIR_FCR: {
        uint8_t fifo = (u->fcr & FCR_ENABLE) ? IIR_FIFO : 0;
        /* Received data first (data sheet table 4); it clears by reading
         * RBR until empty, not by reading IIR. */
        if ((u->ier & IER_ERBFI) && u->rx_len)
            return IIR_RDA | fifo;
        if ((u->ier & IER_ETBEI) && u->thre_pending) {
            u->thre_pending = 0;        /* reading IIR clears the THRE interrupt */
            return IIR_THRE | fifo;
        }
        return IIR_NONE | fifo;
    }
    case LCR:     return u->lcr;
    case MCR:     return u->mcr;
    case LSR:     return LSR_THRE | LSR_TEMT | (u->rx_len ? LSR_DR : 0);
    case MSR:     return modem_status(u);
    default:      return u->scr;
    }
}

/* Returns 1 when the buffered output should go to the parent. */
static int uart_write(struct hv_partition *p, struct uart16550 *u, uint16_t reg, uint8_t value)
{
    int dlab = u->lcr & LCR_DLAB, flush = 0;
    switch (reg) {
    case RBR_THR:
        if (dlab) {
            u->dll = value;
            break;
        }
        if (!(u->mcr & MCR_LOOP)) {
            u->tx[u->tx_len++] = value;
            flush = value == '\n' || u->tx_len == UART_TX_MAX;
        } else if (u->rx_len < UART_RX_MAX) {
            rx_push(u, value);          /* loopback: the transmitter feeds the receiver */
        }
        /* Sent at once: THR is empty again, a new THRE interrupt (edge). */
        u->thre_pending = 1;
        if (u->line) {
            u->line = 0;
            ioapic_set_line(p, HV_UART_IRQ, 0);
        }
        break;
    case IER:
        if (dlab) {
            u->dlm = value;
            break;
        }
        if ((value & IER_ETBEI) && !(u->ier & IER_ETBEI))
            u->thre_pending = 1;        /* enabling it with THR empty raises it */
        u->ier = value & 0x0f;
        break;
    case IIR_FCR:
        if (value & FCR_CLEAR_RX)
            u->rx_head = u->rx_len = 0;
        u->fcr = value & 0xc9;                    /* clear bits (1, 2) self-clear */
        break;
    case LCR:     u->lcr = value; break;
    case MCR:     u->mcr = value & 0x1f; break;
    case SCR:     u->scr = value; break;
    default:      break;                          /* LSR, MSR: read-only */
    }
    update_irq(p, u);
    return flush;
}

int uart_access(struct hv_partition *p, uint16_t reg, int write, uint8_t *value)
{
    struct uart16550 *u = &p->platform->uart;
    if (!write) {
        *value = uart_read(u, reg);
        update_irq(p, u);
        return 0;
    }
    return uart_write(p, u, reg, *value);
}

uint32_t uart_receive(struct hv_partition *p, const uint8_t *data, uint32_t len)
{
    struct uart16550 *u = &p->platform->uart;
    uint32_t n = 0;
    while (n < len && u->rx_len < UART_RX_MAX)
        rx_push(u, data[n++]);
    update_irq(p, u);
    return n;
}
