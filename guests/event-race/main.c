/*
 * event-race - the guest takes its event bits with locked instructions
 * while the parent raises events from another host thread.
 *
 * The guest masks every event (no upcalls), says `race_ready`, and spins on one word of its
 * event page, taking the bit of its virtio-rng device's event with a
 * `lock and` (as events_dispatch and every polling guest do), with no exit
 * in the loop.  The test raises the device's event, waits until `race_seen`
 * (read through this ELF's symbol) counts it, and raises again.  An event
 * hv sets while the guest is between the load and the store of its
 * `lock and` must not be lost: on TCG, whose locked instructions are not
 * atomic against host threads, hv never writes the page from another
 * thread while the guest runs (csrc/event.c, T:533).  A lost event leaves
 * the guest spinning: the test sees `seen` stop and fails.
 *
 *   raises=N   events to see before SUCCESS (default 1000)
 */
#include "events.h"
#include "kernel.h"
#include "printf.h"
#include "test.h"
#include "virtio.h"
#include "virtio_cmdline.h"

volatile uint64_t race_ready, race_seen;   /* the test reads them: keep the names */

static void no_op(unsigned event) { (void)event; }

int main(void)
{
    struct virtio_dev dev;
    uint64_t raises = cmdline_uint("raises", 1000);

    if (virtio_find(VIRTIO_ID_RNG, 0, &dev) < 0)
        test_skip("no virtio-rng device");
    if (dev.irq >= HV_EVENTS_MAX)
        test_error("the rng device has no hv event");
    GUEST_ASSERT_EQ(hv_events_init(0xf0, no_op), 0);
    struct hv_event_page *page = hv_event_page();
    for (unsigned w = 0; w < HV_EVENT_WORDS; w++)
        page->masked[w] = ~0ull;
    uint64_t *word = &page->pending[dev.irq / 64], bit = 1ull << (dev.irq % 64);
    race_ready = 1;

    while (race_seen < raises)
        if (__atomic_fetch_and(word, ~bit, __ATOMIC_SEQ_CST) & bit)
            race_seen = race_seen + 1;
    printf("event-race: %lu events, none lost\n", race_seen);
    test_success();
}
