/*
 * vchan.h - a byte stream between two partitions over grant copy and an
 * event channel, with libxenvchan's shape: a server that owns the rings
 * and a client that reaches them, non-blocking read/write that move what
 * fits, and a wait for the peer's next notification.
 *
 * The server's memory holds a control page and two rings of
 * VCHAN_RING_PAGES pages each (server-to-client, client-to-server), granted
 * to the client at refs gref (control, read-write), gref+1.. (the
 * server-to-client ring, read-only) and gref+1+VCHAN_RING_PAGES.. (the
 * client-to-server ring, read-write).  The server reads and writes its
 * rings directly; the client moves bytes with grant copy (no mapping), in
 * one batch per read or write.  Each side writes only its own index and
 * checks the other's before using it: a peer that writes nonsense gets
 * -HV_EINVAL, never a read outside the ring.
 *
 * Events: the server allocates an unbound port for the client and
 * publishes it in the control page; the client binds it.  The port is
 * masked (no upcall): vchan_wait() blocks on its pending bit.  Call
 * hv_events_init() first.
 */
#ifndef GUEST_VCHAN_H
#define GUEST_VCHAN_H

#include <stdbool.h>
#include <stdint.h>
#include "hv/abi.h"

#define VCHAN_RING_PAGES 4
#define VCHAN_RING_SIZE  (VCHAN_RING_PAGES * HV_PAGE_SIZE)
#define VCHAN_REFS       (1 + 2 * VCHAN_RING_PAGES)
#define VCHAN_MAGIC      0x6e616863      /* "chan" */

/* The control page's head (the server's memory; the client copies it). */
struct vchan_ctrl {
    uint32_t magic;             /* VCHAN_MAGIC once the rest is valid */
    uint32_t port;              /* the server's port, unbound for the client */
    uint32_t ring_pages;
    uint32_t pad;
    uint32_t s2c_prod, s2c_cons;    /* server writes prod, client cons */
    uint32_t c2s_prod, c2s_cons;    /* client writes prod, server cons */
};

struct vchan {
    bool     server;
    uint32_t peer, gref, port;
    /* server: its rings */
    struct vchan_ctrl *ctrl;
    uint8_t *tx, *rx;
    /* client: its own indices (it is their only writer) */
    uint32_t tx_prod, rx_cons;
    struct hv_grant_copy_seg segs[2 * VCHAN_RING_PAGES + 4];
};

/* Server: grant the rings to `peer` from ref `gref` of its grant table. */
long vchan_server_init(struct vchan *c, uint32_t peer, uint32_t gref);
/* Server: wait until the client has bound the port (0 or -HV_E*). */
long vchan_server_wait_connected(struct vchan *c);
/* Client: find the server's rings at (peer, gref), bind its port; retries
 * while the server is still setting up, up to about timeout_ns. */
long vchan_client_init(struct vchan *c, uint32_t peer, uint32_t gref, uint64_t timeout_ns);

/* Move up to len bytes; returns how many (0: nothing fits / nothing there)
 * or -HV_E* (the peer broke the protocol, or a hypercall failed). */
long vchan_write(struct vchan *c, const void *buf, uint32_t len);
long vchan_read(struct vchan *c, void *buf, uint32_t len);
/* Sleep until the peer notifies (or at once if it already has):
 * 0, or -HV_ENOTCONN once the peer has closed or gone away. */
long vchan_wait(struct vchan *c);
/* All len bytes, waiting as needed: 0 or -HV_E*. */
long vchan_send_all(struct vchan *c, const void *buf, uint32_t len);
long vchan_recv_all(struct vchan *c, void *buf, uint32_t len);
void vchan_close(struct vchan *c);

#endif
