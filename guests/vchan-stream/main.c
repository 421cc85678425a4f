/*
 * vchan-stream - two partitions stream bytes over a vchan (lib/vchan.h).
 *
 *   channel=NAME,PEER_ID,SIDE,GREF   given by `hv up` for a [[channel]]:
 *                                    side a is the server, b the client
 *   bytes=N    the server sends N pseudo-random bytes (default 1 MiB);
 *              the client checks every byte against the same generator,
 *              sends back its FNV-1a checksum, the server compares
 *   echo=M     then M round trips of size= bytes (default 64): the
 *              server sends, the client echoes, the server checks
 *   check=0    for benchmarks: the server makes one block of the stream
 *              before the clock starts and sends it over and over, the
 *              client looks at no byte and answers with the count it got
 *              (so the figure is the channel's, not ring-0 byte loops:
 *              net-bench, its baseline, builds its frames once too)
 *
 * One info line per phase, then the result line:
 *   vchan: 1048576 bytes in 12345678 ns, checksum 0123456789abcdef ok
 *   vchan: 100 round trips of 64 bytes, 1234 ns each, p50 1200 ns
 * ERROR if no channel is named or the peer never appears.
 */
#include "channels.h"
#include "events.h"
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "vchan.h"
#include "virtio_cmdline.h"
#include "x86.h"

#define MAX_MSG 4096

static struct vchan chan;
static uint8_t block[16384], msg[MAX_MSG], back[MAX_MSG];

static void no_op(unsigned event) { (void)event; }

/* The stream both sides agree on: xorshift64 from a fixed seed. */
static uint64_t state = 0x9e3779b97f4a7c15ull;
static uint8_t next_byte(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (uint8_t)(state >> 24);
}

static uint64_t fnv(uint64_t h, const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void check(long r, const char *what)
{
    if (r < 0)
        test_failure("vchan: %s: %ld", what, r);
}


static bool checked = true;         /* check=0: see the top */

#define MAX_SAMPLES 4096
static uint64_t rtt[MAX_SAMPLES];

static void sort(uint64_t *x, unsigned n)
{
    for (unsigned i = 1; i < n; i++)
        for (unsigned j = i; j && x[j - 1] > x[j]; j--) {
            uint64_t t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
}

static void serve(uint64_t bytes, uint64_t echoes, uint32_t size)
{
    check(vchan_server_wait_connected(&chan), "wait for the client");
    if (!checked)
        for (uint32_t i = 0; i < sizeof(block); i++)
            block[i] = next_byte();
    uint64_t t0 = hv_clock_read(), h = checked ? 0xcbf29ce484222325ull : bytes;
    for (uint64_t sent = 0; sent < bytes;) {
        uint32_t n = bytes - sent < sizeof(block) ? (uint32_t)(bytes - sent) : sizeof(block);
        for (uint32_t i = 0; checked && i < n; i++)
            block[i] = next_byte();
        if (checked)
            h = fnv(h, block, n);
        check(vchan_send_all(&chan, block, n), "send");
        sent += n;
    }
    uint64_t theirs;
    check(vchan_recv_all(&chan, &theirs, sizeof(theirs)), "receive the checksum");
    uint64_t ns = hv_clock_read() - t0;
    if (theirs != h)
        test_failure("vchan: client's checksum %016lx, sent %016lx", theirs, h);
    printf("vchan: %lu bytes in %lu ns, %s %016lx ok\n", bytes, ns,
           checked ? "checksum" : "count", h);
    /* Each round trip timed with rdtsc (a clock hypercall would be an exit
     * on KVM), converted with the TSC rate against the clock over all. */
    for (uint32_t i = 0; !checked && i < size; i++)
        msg[i] = (uint8_t)i;            /* check=0: made once, as net-bench does */
    t0 = hv_clock_read();
    uint64_t tsc0 = rdtsc();
    for (uint64_t k = 0; k < echoes; k++) {
        for (uint32_t i = 0; checked && i < size; i++)
            msg[i] = (uint8_t)(k + i);
        uint64_t sent = rdtsc();
        check(vchan_send_all(&chan, msg, size), "echo send");
        check(vchan_recv_all(&chan, back, size), "echo receive");
        if (k < MAX_SAMPLES)
            rtt[k] = rdtsc() - sent;
        for (uint32_t i = 0; checked && i < size; i++)
            if (back[i] != msg[i])
                test_failure("vchan: echo %lu byte %u is %02x, sent %02x", k, i, back[i], msg[i]);
    }
    if (echoes) {
        uint64_t ns = hv_clock_read() - t0, tsc = rdtsc() - tsc0;
        unsigned n = echoes < MAX_SAMPLES ? (unsigned)echoes : MAX_SAMPLES;
        sort(rtt, n);
        printf("vchan: %lu round trips of %u bytes, %lu ns each, p50 %lu ns\n", echoes, size,
               ns / echoes, tsc ? rtt[n / 2] * ns / tsc : 0);
    }
    /* Wait for the client's goodbye (its close), so it finishes reading first. */
    while (vchan_wait(&chan) == 0)
        ;
    vchan_close(&chan);
}

static void client(uint64_t bytes, uint64_t echoes, uint32_t size)
{
    uint64_t h = checked ? 0xcbf29ce484222325ull : 0;
    for (uint64_t got = 0; got < bytes;) {
        uint32_t n = bytes - got < sizeof(block) ? (uint32_t)(bytes - got) : sizeof(block);
        check(vchan_recv_all(&chan, block, n), "receive");
        if (!checked) {
            h += n;
            got += n;
            continue;
        }
        for (uint32_t i = 0; i < n; i++) {
            uint8_t want = next_byte();
            if (block[i] != want)
                test_failure("vchan: byte %lu is %02x, expected %02x", got + i, block[i], want);
        }
        h = fnv(h, block, n);
        got += n;
    }
    check(vchan_send_all(&chan, &h, sizeof(h)), "send the checksum");
    printf("vchan: %lu bytes received, checksum %016lx\n", bytes, h);
    for (uint64_t k = 0; k < echoes; k++) {
        check(vchan_recv_all(&chan, back, size), "echo receive");
        check(vchan_send_all(&chan, back, size), "echo send");
    }
    vchan_close(&chan);
}

int main(void)
{
    uint32_t peer, gref;
    bool side_b;
    if (!cmdline_channel(&peer, &side_b, &gref))
        test_error("vchan: no channel=NAME,PEER,SIDE,GREF on the command line");
    bool server = !side_b;                  /* side a serves the rings */
    uint64_t bytes = cmdline_uint("bytes", 1 << 20), echoes = cmdline_uint("echo", 0);
    uint32_t size = (uint32_t)cmdline_uint("size", 64);
    checked = cmdline_uint("check", 1) != 0;
    if (size == 0 || size > MAX_MSG)
        test_error("vchan: size=%u is not 1..%u", size, MAX_MSG);
    check(hv_events_init(0xf0, no_op), "events");
    sti();
    printf("vchan: partition %ld, %s of peer %u\n", hv_partition_id(), server ? "server" : "client",
           peer);
    if (server) {
        check(vchan_server_init(&chan, peer, gref), "server init");
        serve(bytes, echoes, size);
    } else {
        check(vchan_client_init(&chan, peer, gref, 30ull * 1000 * 1000 * 1000), "connect");
        client(bytes, echoes, size);
    }
    test_success();
}
