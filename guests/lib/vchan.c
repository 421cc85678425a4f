/* vchan.c - the byte stream of vchan.h. */
#include "vchan.h"
#include "channels.h"
#include "events.h"
#include "hv.h"

/* Ring copies: REP MOVSQ for the 8-byte words, then MOVSB for the rest.
 * Ring-0 string instructions cost per iteration here (KVM emulates them,
 * TCG runs a helper loop), so words instead of bytes: measured 10-20x the
 * stream on KVM, about 2x on TCG, against memcpy's REP MOVSB. */
static void ring_copy(void *d, const void *s, unsigned long n)
{
    unsigned long words = n / 8, rest = n % 8;
    asm volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(words) : : "memory");
    asm volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(rest) : : "memory");
}

/* The server's shared pages: the control page, then the two rings. */
static struct {
    struct vchan_ctrl ctrl;
    uint8_t ctrl_rest[HV_PAGE_SIZE - sizeof(struct vchan_ctrl)];
    uint8_t s2c[VCHAN_RING_SIZE];
    uint8_t c2s[VCHAN_RING_SIZE];
} shared __attribute__((aligned(HV_PAGE_SIZE)));

#define TABLE_REFS 64
static struct hv_grant_entry table[TABLE_REFS] __attribute__((aligned(8)));

#define CTRL_S2C_PROD 16
#define CTRL_S2C_CONS 20
#define CTRL_C2S_PROD 24
#define CTRL_C2S_CONS 28

static void mask_port(uint32_t port)
{
    struct hv_event_page *ep = hv_event_page();
    __atomic_fetch_or(&ep->masked[port / 64], 1ull << (port % 64), __ATOMIC_SEQ_CST);
}

long vchan_server_init(struct vchan *c, uint32_t peer, uint32_t gref)
{
    if (gref + VCHAN_REFS > TABLE_REFS)
        return -HV_EINVAL;
    long port = evtchn_alloc_unbound(peer);
    if (port < 0)
        return port;
    *c = (struct vchan){ .server = true, .peer = peer, .gref = gref, .port = (uint32_t)port,
                         .ctrl = &shared.ctrl, .tx = shared.s2c, .rx = shared.c2s };
    mask_port(c->port);
    shared.ctrl = (struct vchan_ctrl){ .port = c->port, .ring_pages = VCHAN_RING_PAGES };
    __atomic_store_n(&shared.ctrl.magic, VCHAN_MAGIC, __ATOMIC_RELEASE);
    grant_entry_set(&table[gref], peer, &shared.ctrl, 0);
    for (uint32_t i = 0; i < VCHAN_RING_PAGES; i++) {
        grant_entry_set(&table[gref + 1 + i], peer, shared.s2c + i * HV_PAGE_SIZE, 1);
        grant_entry_set(&table[gref + 1 + VCHAN_RING_PAGES + i], peer,
                        shared.c2s + i * HV_PAGE_SIZE, 0);
    }
    return grant_table_register(table, TABLE_REFS);
}

long vchan_server_wait_connected(struct vchan *c)
{
    for (;;) {
        struct hv_evtchn_status st;
        long r = evtchn_status(c->port, &st);
        if (r < 0)
            return r;
        if (st.state == HV_EVTCHN_INTERDOMAIN)
            return 0;
        hv_block();
        __atomic_fetch_and(&hv_event_page()->pending[c->port / 64], ~(1ull << (c->port % 64)),
                           __ATOMIC_SEQ_CST);
    }
}

static void seg(struct hv_grant_copy_seg *s, void *buf, uint32_t peer, uint32_t ref,
                uint32_t offset, uint32_t len, uint16_t flags)
{
    *s = (struct hv_grant_copy_seg){ .buf = (uintptr_t)buf, .granter = peer, .ref = ref,
                                     .offset = (uint16_t)offset, .len = (uint16_t)len,
                                     .flags = flags, .status = 1 };
}

/* Run n segments; 0, or the first failure. */
static long copy_batch(struct vchan *c, unsigned n)
{
    long r = grant_copy(c->segs, n);
    if (r < 0)
        return r;
    for (unsigned i = 0; i < n; i++)
        if (c->segs[i].status)
            return c->segs[i].status;
    return 0;
}

long vchan_client_init(struct vchan *c, uint32_t peer, uint32_t gref, uint64_t timeout_ns)
{
    *c = (struct vchan){ .server = false, .peer = peer, .gref = gref };
    struct vchan_ctrl ctrl;
    uint64_t give_up = hv_clock_read() + timeout_ns;
    for (;;) {
        seg(&c->segs[0], &ctrl, peer, gref, 0, sizeof(ctrl), 0);
        long r = copy_batch(c, 1);
        if (r == 0 && ctrl.magic == VCHAN_MAGIC)
            break;
        /* Not granted yet (no table, no entry, not our peer yet): wait for it. */
        if (r && r != -HV_ENOENT && r != -HV_EPERM && r != -HV_EINVAL)
            return r;
        if (hv_clock_read() > give_up)
            return r ? r : -HV_EAGAIN;
        hv_hypercall0(HV_HC_YIELD);
    }
    if (ctrl.ring_pages != VCHAN_RING_PAGES)
        return -HV_EINVAL;
    c->tx_prod = ctrl.c2s_prod;
    c->rx_cons = ctrl.s2c_cons;
    long port = evtchn_bind_interdomain(peer, ctrl.port);
    if (port < 0)
        return port;
    c->port = (uint32_t)port;
    mask_port(c->port);
    return evtchn_send(c->port);        /* "connected": the server waits for it */
}

/* The indices the peer writes, checked: a used count beyond the ring is a
 * broken (or hostile) peer. */
static long ring_used(uint32_t prod, uint32_t cons)
{
    uint32_t used = prod - cons;
    return used > VCHAN_RING_SIZE ? -HV_EINVAL : (long)used;
}

/* T:860 A message leaves the server: bytes go into its own ring (plain
 * stores), then the producer index, then a notification. */
static long server_write(struct vchan *c, const uint8_t *buf, uint32_t len)
{
    uint32_t prod = c->ctrl->s2c_prod;
    long used = ring_used(prod, __atomic_load_n(&c->ctrl->s2c_cons, __ATOMIC_ACQUIRE));
    if (used < 0)
        return used;
    uint32_t n = VCHAN_RING_SIZE - (uint32_t)used;
    n = n < len ? n : len;
    for (uint32_t done = 0; done < n;) {
        uint32_t at = (prod + done) % VCHAN_RING_SIZE, chunk = VCHAN_RING_SIZE - at;
        chunk = chunk < n - done ? chunk : n - done;
        ring_copy(c->tx + at, buf + done, chunk);
        done += chunk;
    }
    __atomic_store_n(&c->ctrl->s2c_prod, prod + n, __ATOMIC_RELEASE);
    return n;
}

static long server_read(struct vchan *c, uint8_t *buf, uint32_t len)
{
    uint32_t cons = c->ctrl->c2s_cons;
    long used = ring_used(__atomic_load_n(&c->ctrl->c2s_prod, __ATOMIC_ACQUIRE), cons);
    if (used < 0)
        return used;
    uint32_t n = (uint32_t)used < len ? (uint32_t)used : len;
    for (uint32_t done = 0; done < n;) {
        uint32_t at = (cons + done) % VCHAN_RING_SIZE, chunk = VCHAN_RING_SIZE - at;
        chunk = chunk < n - done ? chunk : n - done;
        ring_copy(buf + done, c->rx + at, chunk);
        done += chunk;
    }
    __atomic_store_n(&c->ctrl->c2s_cons, cons + n, __ATOMIC_RELEASE);
    return n;
}

/* Segments for n bytes of a ring from index pos: one per page touched.
 * `first_ref` is the ring's first page's grant ref. */
static unsigned ring_segs(struct vchan *c, unsigned k, uint8_t *buf, uint32_t first_ref,
                          uint32_t pos, uint32_t n, uint16_t flags)
{
    for (uint32_t done = 0; done < n;) {
        uint32_t at = (pos + done) % VCHAN_RING_SIZE, off = at % HV_PAGE_SIZE;
        uint32_t chunk = HV_PAGE_SIZE - off < n - done ? HV_PAGE_SIZE - off : n - done;
        seg(&c->segs[k++], buf + done, c->peer, first_ref + at / HV_PAGE_SIZE, off, chunk, flags);
        done += chunk;
    }
    return k;
}

/* T:865 A message reaches the client: one copy of the control page for
 * the producer index, then one batch: the bytes out of the read-only ring
 * pages and the new consumer index into the control page.  hv checks each
 * grant and copies (grant.c); the client never maps the server's memory. */
static long client_read(struct vchan *c, uint8_t *buf, uint32_t len)
{
    struct vchan_ctrl ctrl;
    seg(&c->segs[0], &ctrl, c->peer, c->gref, 0, sizeof(ctrl), 0);
    long r = copy_batch(c, 1);
    if (r)
        return r;
    long used = ring_used(ctrl.s2c_prod, c->rx_cons);
    if (used <= 0)
        return used;
    uint32_t n = (uint32_t)used < len ? (uint32_t)used : len;
    uint32_t cons = c->rx_cons + n;
    unsigned k = ring_segs(c, 0, buf, c->gref + 1, c->rx_cons, n, 0);
    seg(&c->segs[k++], &cons, c->peer, c->gref, CTRL_S2C_CONS, 4, HV_GRANT_COPY_TO_PEER);
    if ((r = copy_batch(c, k)))
        return r;
    c->rx_cons = cons;
    return n;
}

static long client_write(struct vchan *c, const uint8_t *buf, uint32_t len)
{
    struct vchan_ctrl ctrl;
    seg(&c->segs[0], &ctrl, c->peer, c->gref, 0, sizeof(ctrl), 0);
    long r = copy_batch(c, 1);
    if (r)
        return r;
    long used = ring_used(c->tx_prod, ctrl.c2s_cons);
    if (used < 0)
        return used;
    uint32_t n = VCHAN_RING_SIZE - (uint32_t)used;
    n = n < len ? n : len;
    if (!n)
        return 0;
    uint32_t prod = c->tx_prod + n;
    unsigned k = ring_segs(c, 0, (uint8_t *)buf, c->gref + 1 + VCHAN_RING_PAGES, c->tx_prod, n,
                           HV_GRANT_COPY_TO_PEER);
    seg(&c->segs[k++], &prod, c->peer, c->gref, CTRL_C2S_PROD, 4, HV_GRANT_COPY_TO_PEER);
    if ((r = copy_batch(c, k)))
        return r;
    c->tx_prod = prod;
    return n;
}

long vchan_write(struct vchan *c, const void *buf, uint32_t len)
{
    long n = c->server ? server_write(c, buf, len) : client_write(c, buf, len);
    if (n > 0) {
        long r = evtchn_send(c->port);  /* T:870 the peer's event bit: see evtchn.c */
        if (r < 0)
            return r;
    }
    return n;
}

long vchan_read(struct vchan *c, void *buf, uint32_t len)
{
    long n = c->server ? server_read(c, buf, len) : client_read(c, buf, len);
    if (n > 0) {
        /* Room in the ring: the writer may go on.  A writer that closed
         * needs no word, and the bytes are read all the same. */
        long r = evtchn_send(c->port);
        if (r < 0 && r != -HV_ENOTCONN)
            return r;
    }
    return n;
}

/* T:875 Waiting: block returns at once if the port's bit is already
 * pending (the notification came between the caller's look at the ring
 * and here), so none is lost; the bit is cleared after waking, before the
 * caller looks again. */
static long connected(struct vchan *c)
{
    struct hv_evtchn_status st;
    long r = evtchn_status(c->port, &st);
    if (r < 0)
        return r;
    return st.state == HV_EVTCHN_INTERDOMAIN ? 0 : -HV_ENOTCONN;
}

long vchan_wait(struct vchan *c)
{
    /* A peer that is gone sends nothing more: do not sleep for it.  (If it
     * closes after this look, its close raises the port's event.)  This
     * look is needed even so: an earlier wait may have taken the close's
     * event, answered -HV_ENOTCONN, and its caller read on and waited again
     * (vchan_recv_all does, for the last bytes). */
    long r = connected(c);
    if (r)
        return r;
    hv_block();
    __atomic_fetch_and(&hv_event_page()->pending[c->port / 64], ~(1ull << (c->port % 64)),
                       __ATOMIC_SEQ_CST);
    return connected(c);
}

long vchan_send_all(struct vchan *c, const void *buf, uint32_t len)
{
    const uint8_t *p = buf;
    while (len) {
        long n = vchan_write(c, p, len);
        if (n < 0)
            return n;
        if (n == 0) {
            long r = vchan_wait(c);
            if (r < 0)
                return r;
            continue;
        }
        p += n;
        len -= (uint32_t)n;
    }
    return 0;
}

long vchan_recv_all(struct vchan *c, void *buf, uint32_t len)
{
    uint8_t *p = buf;
    while (len) {
        long n = vchan_read(c, p, len);
        if (n < 0)
            return n;
        if (n == 0) {
            long r = vchan_wait(c);
            if (r == 0)
                continue;
            /* A peer that wrote its last bytes and closed: take them first. */
            n = vchan_read(c, p, len);
            if (n <= 0)
                return n < 0 ? n : r;
        }
        p += n;
        len -= (uint32_t)n;
    }
    return 0;
}

void vchan_close(struct vchan *c)
{
    evtchn_close(c->port);
    if (c->server)
        for (uint32_t i = 0; i < VCHAN_REFS; i++)
            grant_end(c->gref + i);
}
