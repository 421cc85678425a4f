/*
 * evtchn.c - event channels: ports that connect two partitions' event bits.
 *
 * T:820 A port is one of the partition's event numbers (port P raises event
 * bit P, hv/abi.h "Event channels").  Each partition has a table of them,
 * under one lock.  A channel is a pair of ports, one in each partition, each
 * naming the other's (peer id, port); the rules that keep the pair honest:
 *
 *   - a partition may name a peer only if the parent permitted the pair
 *     (hv_channel_permit); the guest cannot widen that;
 *   - peers are found only by id through the partition table, with a
 *     reference held while in use (partition_get/put), never by a pointer
 *     kept in the port;
 *   - binding and closing change both ends, so they hold both tables'
 *     locks, always taken in partition-id order (no deadlock when two
 *     partitions close towards each other at once);
 *   - sending reads only the local end, under the local lock: since the
 *     other end can only change with both locks held, the pair it reads
 *     is the pair that exists while the event is raised;
 *   - destroy closes every port before the id leaves the table
 *     (evtchn_teardown), so a live port never names a partition that
 *     cannot be found, and the pair stays symmetric.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include "channels.h"

#define EVTCHN_PEERS_MAX 16        /* partitions one partition may talk to */

struct evtchn_port {
    uint8_t  state;                /* HV_EVTCHN_* */
    uint32_t peer;                 /* unbound: who may bind; interdomain: the other end */
    uint32_t remote_port;          /* interdomain: the other end's port */
    uint32_t vcpu;                 /* delivery target, as the partition's event routing has it */
};

struct evtchn_table {
    pthread_mutex_t lock;          /* everything below */
    int      closed;               /* teardown began: no new ports */
    uint32_t npermitted;
    uint32_t permitted[EVTCHN_PEERS_MAX];
    struct evtchn_port port[HV_EVTCHN_PORTS];
};

int evtchn_create(struct hv_partition *p)
{
    struct evtchn_table *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    pthread_mutex_init(&t->lock, NULL);
    for (uint32_t i = 0; i < HV_EVTCHN_FIRST; i++)
        t->port[i].state = HV_EVTCHN_RESERVED;   /* the timer's and the devices' events */
    p->evtchn = t;
    return 0;
}

void evtchn_free(struct hv_partition *p)
{
    if (!p->evtchn)
        return;
    pthread_mutex_destroy(&p->evtchn->lock);
    free(p->evtchn);
    p->evtchn = NULL;
}

/* Both tables, in id order; b may be a itself or NULL (only a's). */
static void lock_pair(struct hv_partition *a, struct hv_partition *b)
{
    if (!b || b == a) {
        pthread_mutex_lock(&a->evtchn->lock);
    } else if (a->id < b->id) {
        pthread_mutex_lock(&a->evtchn->lock);
        pthread_mutex_lock(&b->evtchn->lock);
    } else {
        pthread_mutex_lock(&b->evtchn->lock);
        pthread_mutex_lock(&a->evtchn->lock);
    }
}

static void unlock_pair(struct hv_partition *a, struct hv_partition *b)
{
    pthread_mutex_unlock(&a->evtchn->lock);
    if (b && b != a)
        pthread_mutex_unlock(&b->evtchn->lock);
}

static int permitted_locked(const struct evtchn_table *t, uint32_t peer)
{
    for (uint32_t i = 0; i < t->npermitted; i++)
        if (t->permitted[i] == peer)
            return 1;
    return 0;
}

int evtchn_permitted(struct hv_partition *p, uint32_t peer)
{
    pthread_mutex_lock(&p->evtchn->lock);
    int ok = permitted_locked(p->evtchn, peer);
    pthread_mutex_unlock(&p->evtchn->lock);
    return ok;
}

/* T:800 The parent decides who may talk: `hv up` calls this for every
 * [[channel]] before any guest runs.  Symmetric; permitting twice is fine. */
int hv_channel_permit(struct hv_partition *a, struct hv_partition *b)
{
    if (!a || !b || a == b)
        return -EINVAL;
    lock_pair(a, b);
    int err = 0;
    struct evtchn_table *ta = a->evtchn, *tb = b->evtchn;
    int need_a = !permitted_locked(ta, b->id), need_b = !permitted_locked(tb, a->id);
    if ((need_a && ta->npermitted == EVTCHN_PEERS_MAX) ||
        (need_b && tb->npermitted == EVTCHN_PEERS_MAX))
        err = -ENOSPC;
    else if (ta->closed || tb->closed)
        err = -ESRCH;
    else {
        if (need_a)
            ta->permitted[ta->npermitted++] = b->id;
        if (need_b)
            tb->permitted[tb->npermitted++] = a->id;
    }
    unlock_pair(a, b);
    return err;
}

/* Port `port` of p delivers to vCPU `vcpu` from now on: the port table
 * says so for status, and the partition's event routing (event_vcpu, which
 * event_raise reads when a peer sends) does the delivering.  Under p's
 * table lock; a new or freed port goes back to vCPU 0. */
static void route_port(struct hv_partition *p, uint32_t port, uint32_t vcpu)
{
    p->evtchn->port[port].vcpu = vcpu;
    __atomic_store_n(&p->g.event_vcpu[port], (uint8_t)vcpu, __ATOMIC_RELEASE);
}

/* A free port of the table, or -HV_ENOSPC.  Under its lock. */
static int64_t free_port_locked(const struct evtchn_table *t)
{
    for (uint32_t i = HV_EVTCHN_FIRST; i < HV_EVTCHN_PORTS; i++)
        if (t->port[i].state == HV_EVTCHN_FREE)
            return i;
    return -HV_ENOSPC;
}

/* A port number a guest may name for a channel operation: allocated and not reserved. */
static int channel_port(const struct evtchn_table *t, uint64_t port)
{
    if (port >= HV_EVTCHN_PORTS)
        return 0;
    uint8_t s = t->port[port].state;
    return s == HV_EVTCHN_UNBOUND || s == HV_EVTCHN_INTERDOMAIN;
}

int64_t hc_evtchn_alloc_unbound(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t peer = arg[0];
    struct hv_partition *p = v->partition;
    struct evtchn_table *t = p->evtchn;
    (void)exit;
    if (peer == p->id)
        return -HV_EINVAL;
    pthread_mutex_lock(&t->lock);
    int64_t port;
    if (!permitted_locked(t, (uint32_t)peer) || peer > UINT32_MAX)
        port = -HV_EPERM;
    else if (t->closed)
        port = -HV_ENOSPC;             /* going away: the table takes no more */
    else if ((port = free_port_locked(t)) >= 0) {
        t->port[port] = (struct evtchn_port){ .state = HV_EVTCHN_UNBOUND, .peer = (uint32_t)peer };
        route_port(p, (uint32_t)port, 0);
    }
    pthread_mutex_unlock(&t->lock);
    return port;
}

/* T:810 Binding: both tables locked in id order, then the remote port must
 * still be unbound and offered to exactly the caller. */
int64_t hc_evtchn_bind_interdomain(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t peer_id = arg[0], remote_port = arg[1];
    struct hv_partition *p = v->partition;
    (void)exit;
    if (peer_id == p->id)
        return -HV_EINVAL;
    if (peer_id > UINT32_MAX || !evtchn_permitted(p, (uint32_t)peer_id))
        return -HV_EPERM;
    if (remote_port >= HV_EVTCHN_PORTS)
        return -HV_EINVAL;
    struct hv_partition *peer = partition_get((uint32_t)peer_id);
    if (!peer)
        return -HV_ENOENT;
    lock_pair(p, peer);
    struct evtchn_port *rp = &peer->evtchn->port[remote_port];
    int64_t local;
    if (peer->evtchn->closed)
        local = -HV_ENOENT;
    else if (rp->state != HV_EVTCHN_UNBOUND || rp->peer != p->id)
        local = -HV_EINVAL;
    else if (p->evtchn->closed)
        local = -HV_ENOSPC;
    else if ((local = free_port_locked(p->evtchn)) >= 0) {
        p->evtchn->port[local] = (struct evtchn_port){
            .state = HV_EVTCHN_INTERDOMAIN, .peer = peer->id, .remote_port = (uint32_t)remote_port };
        route_port(p, (uint32_t)local, 0);
        rp->state = HV_EVTCHN_INTERDOMAIN;
        rp->remote_port = (uint32_t)local;
    }
    unlock_pair(p, peer);
    partition_put(peer);
    return local;
}

/* T:830 Send: the local end only.  Under the local lock the pairing cannot
 * change (changing it takes both locks), so the event lands on the port
 * that is connected to this one, and on no other. */
int64_t hc_evtchn_send(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t port = arg[0];
    struct hv_partition *p = v->partition;
    struct evtchn_table *t = p->evtchn;
    (void)exit;
    pthread_mutex_lock(&t->lock);
    int64_t r = 0;
    struct hv_partition *peer = NULL;
    if (!channel_port(t, port)) {
        r = -HV_EINVAL;
    } else if (t->port[port].state != HV_EVTCHN_INTERDOMAIN) {
        r = -HV_ENOTCONN;
    } else if (!(peer = partition_get(t->port[port].peer))) {
        r = -HV_ENOTCONN;              /* the peer's destroy is closing this pair right now */
    } else {
        /* A peer without an event page yet misses the notification; ring
         * protocols look at their rings before they wait, so none is lost. */
        event_raise(peer, t->port[port].remote_port);
    }
    pthread_mutex_unlock(&t->lock);
    if (peer)
        partition_put(peer);
    return r;
}

/* Close one port of p: 0, or -HV_EINVAL if it is not a channel port.  The
 * peer's end (if it still points back here) goes back to unbound, offered
 * to p again, as in Xen: p may bind to it anew. */
static int64_t close_port(struct hv_partition *p, uint32_t port)
{
    struct evtchn_table *t = p->evtchn;
    for (;;) {
        pthread_mutex_lock(&t->lock);
        if (!channel_port(t, port)) {
            pthread_mutex_unlock(&t->lock);
            return -HV_EINVAL;
        }
        struct evtchn_port seen = t->port[port];
        if (seen.state == HV_EVTCHN_UNBOUND) {
            t->port[port] = (struct evtchn_port){0};
            route_port(p, port, 0);
            pthread_mutex_unlock(&t->lock);
            return 0;
        }
        pthread_mutex_unlock(&t->lock);
        /* Interdomain: take both locks, then look again (it may have
         * changed while no lock was held). */
        struct hv_partition *peer = partition_get(seen.peer);
        lock_pair(p, peer);
        struct evtchn_port now = t->port[port];
        int same = now.state == HV_EVTCHN_INTERDOMAIN && now.peer == seen.peer &&
                   now.remote_port == seen.remote_port;
        if (same) {
            t->port[port] = (struct evtchn_port){0};
            route_port(p, port, 0);
            if (peer) {
                struct evtchn_port *rp = &peer->evtchn->port[now.remote_port];
                if (rp->state == HV_EVTCHN_INTERDOMAIN && rp->peer == p->id &&
                    rp->remote_port == port) {
                    rp->state = HV_EVTCHN_UNBOUND;
                    rp->remote_port = 0;
                    /* Wake whoever waits on the other end: it finds the
                     * port unbound (its sends say -HV_ENOTCONN). */
                    event_raise(peer, now.remote_port);
                }
            }
        }
        unlock_pair(p, peer);
        if (peer)
            partition_put(peer);
        if (same)
            return 0;
    }
}

int64_t hc_evtchn_close(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t port = arg[0];
    (void)exit;
    if (port >= HV_EVTCHN_PORTS)
        return -HV_EINVAL;
    return close_port(v->partition, (uint32_t)port);
}

/* See route_port: a port's events go to the vCPU it is bound to
 * (Xen's EVTCHNOP_bind_vcpu), e.g. the one that runs its driver. */
int64_t hc_evtchn_bind_vcpu(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t port = arg[0], vcpu = arg[1];
    struct hv_partition *p = v->partition;
    struct evtchn_table *t = p->evtchn;
    (void)exit;
    pthread_mutex_lock(&t->lock);
    int64_t r = 0;
    if (!channel_port(t, port) || vcpu >= p->nvcpus)
        r = -HV_EINVAL;
    else
        route_port(p, (uint32_t)port, (uint32_t)vcpu);
    pthread_mutex_unlock(&t->lock);
    return r;
}

int64_t hc_evtchn_status(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t port = arg[0], out = arg[1];
    struct evtchn_table *t = v->partition->evtchn;
    (void)exit;
    if (port >= HV_EVTCHN_PORTS)
        return -HV_EINVAL;
    pthread_mutex_lock(&t->lock);
    struct evtchn_port s = t->port[port];
    pthread_mutex_unlock(&t->lock);
    struct hv_evtchn_status st = { .state = s.state, .peer = s.peer,
                                   .remote_port = s.remote_port, .vcpu = s.vcpu };
    if (hv_copy_to_guest(v, out, &st, sizeof(st)))
        return -HV_EFAULT;
    return 0;
}

/* T:850 Teardown, at destroy and before the id leaves the partition table:
 * no new ports from here on, then every port closed, which sends each
 * peer's end back to unbound (its sends then fail with -HV_ENOTCONN). */
void evtchn_teardown(struct hv_partition *p)
{
    struct evtchn_table *t = p->evtchn;
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->closed = 1;
    pthread_mutex_unlock(&t->lock);
    for (uint32_t port = HV_EVTCHN_FIRST; port < HV_EVTCHN_PORTS; port++)
        close_port(p, port);
}
