/*
 * isolation-canary - one partition of three that fill their RAM with their
 * own canary, then reach for other memory through every hypercall that
 * reads or copies memory (tests/test_isolation_canary.py runs them).
 *
 *   canary=XXXXXXXX   8 bytes the parent chose at random for this partition
 *   ids=A,B,C         every partition of the run (this one among them)
 *   permitted=A,...   the ones the parent let this one talk to
 *
 * 1. Fill: every byte of RAM the memory map gives this guest, but for its
 *    image [1 MiB, 2 MiB), becomes the canary (rep stosq).
 * 2. Grant: for each other partition, a slot of 8 entries (the slot of
 *    the partition with the smaller id first): a public page read-only
 *    (its content a function of this partition's id, never the canary), a
 *    canary frame with a type that is not permit-access, hv's page 0, the
 *    boot page, the frame one past RAM, frame 0xffffffff, a canary frame
 *    marked in use, and a drop page read-write.  Every entry is written
 *    before the table is registered.
 * 3. Scan: every ref of every slot of every other partition's table (and
 *    of ids that name no partition, and of itself), both directions, into
 *    and out of a buffer that holds this partition's own canary; console
 *    writes, status outputs and copy buffers at hv's pages, past RAM, in
 *    the MMIO window, above 4 GiB; the same through multicall; event
 *    channel binds and allocations towards every id; virtio-console and
 *    virtio-rng buffers at those addresses and a ring in hv's boot page
 *    (devices.c).
 *
 * Every probe must end with the one result abi.h documents for it, and
 * the buffer must afterwards hold exactly the canary (a failed call) or
 * public bytes (the legitimate reads of a public or drop page).  The parent then
 * searches every partition's RAM and console for the others' canaries.
 * One line per phase, then SUCCESS, or FAILURE naming the first probe
 * that went wrong.
 */
#include "canary.h"
#include "channels.h"
#include "kernel.h"
#include "printf.h"
#include "start_info.h"
#include "test.h"
#include "virtio_cmdline.h"

#define PARTS           3
#define SLOT            8                       /* grant entries per other partition */
#define REFS            (SLOT * (PARTS - 1))
#define IMAGE_START     0x100000ull             /* linker.ld */
#define IMAGE_END       0x200000ull             /* the image stays below (checked) */
#define ABOVE_4G        (1ull << 32)            /* start.S maps only the first 4 GiB */
#define RETRIES         200000                  /* yields while a peer sets up its table */
#define GUARD           64                      /* bytes checked after what a copy may write */

enum { REF_PUBLIC, REF_BAD_TYPE, REF_PAGE0, REF_BOOT, REF_PAST_RAM, REF_FRAME_MAX, REF_MARKED,
       REF_DROP };

static struct hv_grant_entry table[REFS] __attribute__((aligned(HV_PAGE_SIZE)));
static uint8_t public_page[HV_PAGE_SIZE] __attribute__((aligned(HV_PAGE_SIZE)));
static uint8_t drop_page[HV_PAGE_SIZE] __attribute__((aligned(HV_PAGE_SIZE)));
static uint8_t buf[HV_PAGE_SIZE] __attribute__((aligned(HV_PAGE_SIZE)));
static uint8_t canary_page[HV_PAGE_SIZE] __attribute__((aligned(HV_PAGE_SIZE)));
static uint8_t expect[HV_PAGE_SIZE];
static struct hv_grant_copy_seg seg[2];
static struct hv_multicall_entry calls[8];
static struct hv_evtchn_status status_out;

static uint64_t canary, ram_end, boot_page, reserved_end, self_id, probes;
static uint32_t ids[PARTS];
static bool permitted[PARTS];

/* The canary frames granted under a wrong type or a mark: in the filled
 * area, so what a wrong copy would read is the canary. */
#define CANARY_FRAME    ((IMAGE_END >> 12) + 1)

static uint8_t public_byte(uint32_t owner, unsigned i) { return (uint8_t)(i * 7 + owner * 13 + 1); }

static void fill(uint64_t start, uint64_t end)
{
    void *d = (void *)start;
    uint64_t n = (end - start) / 8;
    asm volatile("rep stosq" : "+D"(d), "+c"(n) : "a"(canary) : "memory");
}

/* How much of buf a probe fills and checks: what it asks for and a guard
 * after (string instructions in ring 0 cost microseconds per iteration
 * on KVM here, so a probe does not check the whole page unless it reads
 * the whole page). */
static unsigned checked = sizeof(buf);

static void refill_buf(void) { fill((uintptr_t)buf, (uintptr_t)buf + checked); }

/* Bytes from `from` to the end of buf are still the canary. */
/* Equal bytes: one REPE CMPSB (ring-0 code is slow on KVM here: one
 * string instruction instead of a loop of thousands). */
static bool same(const void *a, const void *b, uint64_t n)
{
    bool differ;
    asm volatile("repe cmpsb" : "=@ccnz"(differ), "+S"(a), "+D"(b), "+c"(n) : : "memory");
    return !differ;
}

/* Bytes from `from` to the end of buf are still the canary (canary_page
 * holds it, page-aligned like buf). */
static bool buf_is_canary_from(unsigned from)
{
    return from >= checked || same(buf + from, canary_page + from, checked - from);
}

static bool buf_is_canary(void) { return buf_is_canary_from(0); }

/* buf starts with len bytes of a public page from offset, then canary:
 * owner's, or (owner 0: a drop page, where every partition writes its
 * own) any partition's, byte by byte. */
static bool buf_is_public_of(uint32_t owner, unsigned offset, unsigned len)
{
    if (owner) {
        for (unsigned i = 0; i < sizeof(expect); i++)
            expect[i] = public_byte(owner, i);
        return same(buf, expect + offset, len) && buf_is_canary_from(len);
    }
    for (unsigned i = 0; i < len; i++) {
        bool ok = owner && buf[i] == public_byte(owner, offset + i);
        for (unsigned p = 0; !owner && p < PARTS; p++)
            ok |= buf[i] == public_byte(ids[p], offset + i);
        if (!ok)
            return false;
    }
    return buf_is_canary_from(len);
}

/* ---- command line ------------------------------------------------------- */
static unsigned parse_list(const char *key, uint32_t *out, unsigned max)
{
    size_t len, used;
    const char *v = cmdline_value(key, 0, &len);
    unsigned n = 0;
    uint64_t x;
    while (v && len && n < max && cmdline_parse_uint(v, len, &x, &used)) {
        out[n++] = (uint32_t)x;
        v += used, len -= used;
        if (len && *v == ',')
            v++, len--;
    }
    return n;
}

static void parse(void)
{
    size_t len;
    const char *v = cmdline_value("canary", 0, &len);
    if (!v || len != 8)
        test_error("canary=8 bytes is required");
    __builtin_memcpy(&canary, v, 8);
    if (parse_list("ids", ids, PARTS) != PARTS)
        test_error("ids=A,B,C is required");
    uint32_t allowed[PARTS];
    unsigned n = parse_list("permitted", allowed, PARTS);
    for (unsigned i = 0; i < PARTS; i++)
        for (unsigned j = 0; j < n; j++)
            permitted[i] |= ids[i] == allowed[j];
}

/* The slot partition `peer` has in partition `owner`'s table: owner's
 * others in id order. */
static unsigned slot_of(uint32_t owner, uint32_t peer)
{
    unsigned slot = 0;
    for (unsigned i = 0; i < PARTS; i++)
        slot += ids[i] != owner && ids[i] < peer;
    return slot;
}

static bool is_permitted(uint64_t id)
{
    for (unsigned i = 0; i < PARTS; i++)
        if (ids[i] == id)
            return permitted[i];
    return false;
}

/* ---- 1 and 2: fill, grant ----------------------------------------------- */
static void grant_all(void)
{
    for (unsigned i = 0; i < sizeof(public_page); i++)
        drop_page[i] = public_page[i] = public_byte((uint32_t)self_id, i);
    for (unsigned i = 0; i < PARTS; i++) {
        if (ids[i] == self_id)
            continue;
        struct hv_grant_entry *e = &table[SLOT * slot_of((uint32_t)self_id, ids[i])];
        uint16_t peer = (uint16_t)ids[i], rw = HV_GTF_PERMIT_ACCESS;
        e[REF_PUBLIC] = (struct hv_grant_entry){ rw | HV_GTF_READONLY, peer,
                                                 (uint32_t)((uintptr_t)public_page >> 12) };
        e[REF_BAD_TYPE] = (struct hv_grant_entry){ 2, peer, CANARY_FRAME };
        e[REF_PAGE0] = (struct hv_grant_entry){ rw, peer, 0 };
        e[REF_BOOT] = (struct hv_grant_entry){ rw, peer, (uint32_t)(boot_page >> 12) };
        e[REF_PAST_RAM] = (struct hv_grant_entry){ rw, peer, (uint32_t)(ram_end >> 12) };
        e[REF_FRAME_MAX] = (struct hv_grant_entry){ rw, peer, 0xffffffffu };
        e[REF_MARKED] = (struct hv_grant_entry){ rw | HV_GTF_READING, peer, CANARY_FRAME };
        e[REF_DROP] = (struct hv_grant_entry){ rw, peer, (uint32_t)((uintptr_t)drop_page >> 12) };
    }
    __atomic_thread_fence(__ATOMIC_RELEASE);
    long r = grant_table_register(table, REFS);
    if (r)
        test_error("grant_table_register: %ld", r);
}

/* ---- 3: probes ------------------------------------------------------------ */
static void fail(const char *what, uint64_t a, uint64_t b, long got, long want)
{
    test_failure("%s (0x%lx, 0x%lx): %ld, want %ld", what, a, b, got, want);
}

/* One grant-copy segment, with the status hv must give it; then the
 * buffer must hold the canary, or the granter's public bytes after the
 * one legitimate read. */
static void copy_probe(uint64_t granter, uint32_t ref, unsigned offset, unsigned len,
                       uint16_t flags, uint64_t at, long want)
{
    checked = len + GUARD < sizeof(buf) ? (len + GUARD + 7) & ~7u : sizeof(buf);
    refill_buf();
    seg[0] = (struct hv_grant_copy_seg){ .buf = at, .granter = (uint32_t)granter, .ref = ref,
                                         .offset = (uint16_t)offset, .len = (uint16_t)len,
                                         .flags = flags, .status = 1 };
    long r = grant_copy(seg, 1);
    probes++;
    if (r != 0)
        fail("grant_copy's own result", granter, ref, r, 0);
    if (seg[0].status != want)
        fail(flags & HV_GRANT_COPY_TO_PEER ? "grant_copy to peer" : "grant_copy from peer",
             granter, ((uint64_t)ref << 32) | (uint32_t)at, seg[0].status, want);
    bool read_in = want == 0 && !(flags & HV_GRANT_COPY_TO_PEER) && at == (uintptr_t)buf;
    uint32_t owner = ref % SLOT == REF_DROP ? 0 : (uint32_t)granter;
    if (read_in ? !buf_is_public_of(owner, offset, len) : !buf_is_canary())
        fail("grant_copy left bytes it should not have", granter, ref, 0, 0);
}

/* What hv must answer for a read or write of ref in granter's table. */
static long expected(uint64_t granter, uint32_t ref, bool to_peer)
{
    if (granter == self_id || !is_permitted(granter))
        return -HV_EPERM;
    if (ref >= REFS)
        return -HV_EINVAL;
    if (ref / SLOT != slot_of((uint32_t)granter, (uint32_t)self_id))
        return -HV_EPERM;              /* granted to the other partition */
    switch (ref % SLOT) {
    case REF_PUBLIC:
        return to_peer ? -HV_EPERM : 0;
    case REF_MARKED:
        return -HV_EAGAIN;
    case REF_DROP:
        return 0;
    default:
        return -HV_EPERM;
    }
}

/* Wait until a permitted peer's table is up (its public page copies). */
static void wait_for(uint32_t peer)
{
    uint32_t ref = SLOT * slot_of(peer, (uint32_t)self_id) + REF_PUBLIC;
    for (unsigned i = 0; i < RETRIES; i++) {
        seg[0] = (struct hv_grant_copy_seg){ .buf = (uintptr_t)buf, .granter = peer, .ref = ref,
                                             .len = 8 };
        if (grant_copy(seg, 1) == 0 && seg[0].status == 0)
            return;
        if (seg[0].status != -HV_ENOENT)
            fail("waiting for a peer's table", peer, ref, seg[0].status, -HV_ENOENT);
        hv_hypercall0(HV_HC_YIELD);
    }
    test_error("partition %u never registered its grant table", peer);
}

static uint64_t bad_addr[8];
#define BAD_ADDRS (sizeof(bad_addr) / sizeof(bad_addr[0]))

static void set_bad_addrs(void)
{
    uint64_t a[BAD_ADDRS] = {
        0,                          /* hv's page 0 (the boot GDT) */
        boot_page,                  /* hv's boot page: start_info, command line */
        reserved_end - 8,           /* the last bytes hv keeps, and the first of RAM */
        ram_end - 8,                /* the last 8 bytes of RAM and 8 past them */
        ram_end,                    /* past RAM, still mapped by start.S */
        HV_VIRTIO_MMIO_BASE,        /* the devices' registers */
        ABOVE_4G,                   /* not mapped */
        0xffff800000000000ull,      /* not mapped, upper half */
    };
    __builtin_memcpy(bad_addr, a, sizeof(a));
}

static void scan_grants(void)
{
    uint64_t targets[PARTS + 4] = { 0, 0x7ffffff0u, 0xffffffffu, 1ull << 32 };
    for (unsigned i = 0; i < PARTS; i++)
        targets[4 + i] = ids[i];
    for (unsigned t = 0; t < PARTS + 4; t++) {
        uint64_t g = targets[t];
        uint32_t refs[] = { REFS, REFS + 1, HV_GRANT_REFS_MAX, 0xffffffffu };
        for (uint32_t ref = 0; ref < REFS + 4; ref++) {
            uint32_t r = ref < REFS ? ref : refs[ref - REFS];
            long rd = expected(g, r, false), wr = expected(g, r, true);
            /* A whole page where a grant could exist; elsewhere a little. */
            bool whole = is_permitted(g) && r < REFS;
            copy_probe(g, r, 0, whole ? HV_PAGE_SIZE : 64, 0, (uintptr_t)buf, rd);
            copy_probe(g, r, 4095, 1, 0, (uintptr_t)buf, rd);
            /* Writes only from the public page: never the canary into a peer. */
            copy_probe(g, r, 100, 200, HV_GRANT_COPY_TO_PEER, (uintptr_t)public_page + 100, wr);
            /* Malformed segments fail before anything is looked up. */
            copy_probe(g, r, 4095, 2, 0, (uintptr_t)buf, -HV_EINVAL);
            copy_probe(g, r, 0, 8, 2, (uintptr_t)buf, -HV_EINVAL);
        }
    }
    /* The caller's side of a copy at addresses that are not its RAM. */
    for (unsigned i = 0; i < PARTS; i++) {
        if (ids[i] == self_id || !permitted[i])
            continue;
        uint32_t base = SLOT * slot_of(ids[i], (uint32_t)self_id);
        for (unsigned b = 0; b < BAD_ADDRS; b++) {
            copy_probe(ids[i], base + REF_PUBLIC, 0, 16, 0, bad_addr[b], -HV_EFAULT);
            copy_probe(ids[i], base + REF_DROP, 0, 16, 0, bad_addr[b], -HV_EFAULT);
            copy_probe(ids[i], base + REF_DROP, 0, 16, HV_GRANT_COPY_TO_PEER, bad_addr[b],
                       -HV_EFAULT);
        }
    }
    /* The segment array itself at those addresses. */
    for (unsigned b = 0; b < BAD_ADDRS; b++) {
        long r = grant_copy((struct hv_grant_copy_seg *)bad_addr[b], 1);
        if (r != -HV_EFAULT)
            fail("grant_copy with the array at", bad_addr[b], 0, r, -HV_EFAULT);
        probes++;
    }
}

static void scan_console_and_events(void)
{
    for (unsigned b = 0; b < BAD_ADDRS; b++) {
        uint64_t lens[] = { 16, HV_PAGE_SIZE };     /* each crosses out of RAM */
        for (unsigned l = 0; l < 2; l++) {
            long r = hv_hypercall2(HV_HC_CONSOLE_WRITE, bad_addr[b], lens[l]);
            if (r != -HV_EFAULT)
                fail("console_write at", bad_addr[b], lens[l], r, -HV_EFAULT);
        }
        long r = evtchn_status(HV_EVTCHN_FIRST, (struct hv_evtchn_status *)bad_addr[b]);
        if (r != -HV_EFAULT)
            fail("evtchn_status out at", bad_addr[b], 0, r, -HV_EFAULT);
        r = hv_hypercall2(HV_HC_MULTICALL, bad_addr[b], 1);
        if (r != -HV_EFAULT)
            fail("multicall with the array at", bad_addr[b], 0, r, -HV_EFAULT);
        probes += 4;
    }
    long r = hv_hypercall2(HV_HC_CONSOLE_WRITE, (uintptr_t)buf, HV_CONSOLE_WRITE_MAX + 1);
    if (r != -HV_EINVAL)
        fail("console_write of", (uintptr_t)buf, HV_CONSOLE_WRITE_MAX + 1, r, -HV_EINVAL);
    /* Ports towards every id: nothing is offered to this partition. */
    uint32_t ports[] = { 0, HV_EVTCHN_FIRST, HV_EVTCHN_FIRST + 1, HV_EVTCHN_PORTS - 1,
                         HV_EVTCHN_PORTS, 0xffffffffu };
    for (unsigned i = 0; i < PARTS; i++) {
        for (unsigned p = 0; p < sizeof(ports) / sizeof(ports[0]); p++) {
            long want = ids[i] == self_id ? -HV_EINVAL
                      : !permitted[i] ? -HV_EPERM : -HV_EINVAL;
            r = evtchn_bind_interdomain(ids[i], ports[p]);
            if (r != want)
                fail("evtchn_bind_interdomain", ids[i], ports[p], r, want);
            probes++;
        }
        if (ids[i] != self_id && !permitted[i] && (r = evtchn_alloc_unbound(ids[i])) != -HV_EPERM)
            fail("evtchn_alloc_unbound to a stranger", ids[i], 0, r, -HV_EPERM);
    }
    for (uint64_t port = 0; port < HV_EVTCHN_PORTS + 2; port++) {
        status_out = (struct hv_evtchn_status){ 0 };
        r = evtchn_status(port, &status_out);
        long want = port < HV_EVTCHN_PORTS ? 0 : -HV_EINVAL;
        uint32_t state = port < HV_EVTCHN_FIRST ? HV_EVTCHN_RESERVED : HV_EVTCHN_FREE;
        if (r != want || (!r && (status_out.state != state || status_out.peer ||
                                 status_out.remote_port)))
            fail("evtchn_status", port, status_out.state, r, want);
        probes++;
    }
}

/* The same probes, several to one trap. */
static void scan_multicall(void)
{
    uint32_t peer = 0;
    for (unsigned i = 0; i < PARTS; i++)
        if (ids[i] != self_id && permitted[i])
            peer = ids[i];
    uint32_t base = SLOT * slot_of(peer, (uint32_t)self_id);
    checked = sizeof(buf);
    refill_buf();
    seg[0] = (struct hv_grant_copy_seg){ .buf = (uintptr_t)buf, .granter = peer,
                                         .ref = base + REF_BAD_TYPE, .len = HV_PAGE_SIZE };
    seg[1] = (struct hv_grant_copy_seg){ .buf = (uintptr_t)buf, .granter = peer,
                                         .ref = base + REF_PAGE0, .len = HV_PAGE_SIZE };
    struct hv_multicall_entry c[] = {
        { HV_HC_GRANT_COPY, { (uintptr_t)seg, 2 }, 1 },
        { HV_HC_GRANT_COPY, { bad_addr[1], 1 }, 1 },
        { HV_HC_CONSOLE_WRITE, { bad_addr[0], 64 }, 1 },
        { HV_HC_CONSOLE_WRITE, { bad_addr[3], 16 }, 1 },
        { HV_HC_EVTCHN_STATUS, { HV_EVTCHN_FIRST, bad_addr[2] }, 1 },
        { HV_HC_GRANT_TABLE_REGISTER, { bad_addr[1], 4 }, 1 },
        { HV_HC_MULTICALL, { (uintptr_t)calls, 1 }, 1 },
    };
    long want[] = { 0, -HV_EFAULT, -HV_EFAULT, -HV_EFAULT, -HV_EFAULT, -HV_EFAULT, -HV_EOPNOTSUPP };
    unsigned n = sizeof(c) / sizeof(c[0]);
    __builtin_memcpy(calls, c, sizeof(c));
    long r = hv_hypercall2(HV_HC_MULTICALL, (uintptr_t)calls, n);
    if (r)
        fail("multicall", (uintptr_t)calls, n, r, 0);
    for (unsigned i = 0; i < n; i++)
        if (calls[i].result != want[i])
            fail("multicall entry", i, calls[i].op, calls[i].result, want[i]);
    if (seg[0].status != -HV_EPERM || seg[1].status != -HV_EPERM)
        fail("multicall's grant copy", seg[0].status, seg[1].status, 0, -HV_EPERM);
    if (!buf_is_canary())
        fail("multicall's grant copy left bytes", peer, base, 0, 0);
    probes += n;
}

/* RAM from the memory map: filled, but for the image; the end of the
 * reserved range at 0 (hv's pages) for the probes. */
static uint64_t fill_ram(void)
{
    unsigned n;
    const struct hv_pvh_memmap_entry *m = start_info_memmap(&n);
    uint64_t filled = 0;
    for (unsigned i = 0; i < n; i++) {
        uint64_t start = m[i].addr, end = m[i].addr + m[i].size;
        if (m[i].type != HV_E820_RAM) {
            if (start == 0)
                reserved_end = end;
            continue;
        }
        if (start < IMAGE_START)
            fill(start, end < IMAGE_START ? end : IMAGE_START);
        if (end > IMAGE_END)
            fill(start > IMAGE_END ? start : IMAGE_END, end);
        filled += end - start;
    }
    return filled - (IMAGE_END - IMAGE_START);
}

int main(void)
{
    parse();
    self_id = (uint64_t)hv_partition_id();
    ram_end = start_info_ram_end();
    boot_page = (uintptr_t)start_info() & ~(uint64_t)(HV_PAGE_SIZE - 1);
    if ((uintptr_t)&buf[sizeof(buf)] > IMAGE_END || ram_end < IMAGE_END + 2 * HV_PAGE_SIZE)
        test_error("the image must end below 2 MiB and RAM above it");
    uint64_t filled = fill_ram();
    fill((uintptr_t)canary_page, (uintptr_t)canary_page + sizeof(canary_page));
    if (!reserved_end || boot_page >= reserved_end)
        test_error("the memory map has no reserved range at 0 holding the boot page");
    printf("canary: %lu KiB filled\n", filled >> 10);
    set_bad_addrs();
    grant_all();
    for (unsigned i = 0; i < PARTS; i++)
        if (ids[i] != self_id && permitted[i])
            wait_for(ids[i]);
    scan_grants();
    scan_console_and_events();
    scan_multicall();
    scan_devices(bad_addr, BAD_ADDRS, boot_page, &probes);
    printf("canary: %lu probes, every one refused as documented or given only what was granted\n",
           probes);
    test_success();
}
