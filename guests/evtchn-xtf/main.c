/*
 * evtchn-xtf - event channel and grant errors a partition alone can reach,
 * in the spirit of XTF's advisory tests: the port one past the maximum,
 * sends and closes on ports never allocated and on hv's reserved ones,
 * peers the parent never permitted, a grant table at bad addresses (then
 * used), and every error negative and one abi.h documents.
 */
#include "channels.h"
#include "events.h"
#include "kernel.h"
#include "test.h"

static struct hv_grant_entry table[16] __attribute__((aligned(HV_PAGE_SIZE)));
static struct hv_grant_copy_seg segs[2];
static struct hv_evtchn_status st;
static uint8_t buf[64];

int main(void)
{
    GUEST_ASSERT(hv_hypercall1(HV_HC_FEATURES, 0) & HV_FEATURE_CHANNELS);

    /* The port one past the maximum, and far beyond. */
    GUEST_ASSERT_EQ(evtchn_send(HV_EVTCHN_PORTS), -HV_EINVAL);
    GUEST_ASSERT_EQ(evtchn_close(HV_EVTCHN_PORTS), -HV_EINVAL);
    GUEST_ASSERT_EQ(evtchn_status(HV_EVTCHN_PORTS, &st), -HV_EINVAL);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_EVTCHN_BIND_VCPU, HV_EVTCHN_PORTS, 0), -HV_EINVAL);
    GUEST_ASSERT_EQ(evtchn_send(1ull << 63), -HV_EINVAL);
    /* The last port exists and is free. */
    GUEST_ASSERT_EQ(evtchn_status(HV_EVTCHN_PORTS - 1, &st), 0);
    GUEST_ASSERT_EQ(st.state, HV_EVTCHN_FREE);

    /* Never allocated, and hv's own (the timer's, a device's). */
    GUEST_ASSERT_EQ(evtchn_send(HV_EVTCHN_FIRST), -HV_EINVAL);
    GUEST_ASSERT_EQ(evtchn_close(HV_EVTCHN_FIRST + 7), -HV_EINVAL);
    GUEST_ASSERT_EQ(evtchn_send(HV_EVENT_TIMER), -HV_EINVAL);
    GUEST_ASSERT_EQ(evtchn_close(HV_VIRTIO_EVENT_BASE), -HV_EINVAL);
    GUEST_ASSERT_EQ(evtchn_status(HV_EVENT_TIMER, &st), 0);
    GUEST_ASSERT_EQ(st.state, HV_EVTCHN_RESERVED);
    GUEST_ASSERT_EQ(evtchn_status(HV_EVTCHN_FIRST, (void *)0x0000800000000000ull), -HV_EFAULT);

    /* Peers the parent never permitted (or that do not exist).  (Naming
     * itself is -HV_EINVAL: tests/test_channels_model.py; the arguments
     * here stay the same in every partition, so both engines trace alike.) */
    GUEST_ASSERT_EQ(evtchn_alloc_unbound(0), -HV_EPERM);
    GUEST_ASSERT_EQ(evtchn_alloc_unbound(0xfffffff0u), -HV_EPERM);
    GUEST_ASSERT_EQ(evtchn_bind_interdomain(0xfffffff1u, HV_EVTCHN_FIRST), -HV_EPERM);

    /* A grant table at bad addresses, then used. */
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_GRANT_TABLE_REGISTER, HV_VIRTIO_MMIO_BASE, 4), -HV_EFAULT);
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_GRANT_TABLE_REGISTER, 0, 4), -HV_EFAULT);   /* hv's page */
    GUEST_ASSERT_EQ(hv_hypercall2(HV_HC_GRANT_TABLE_REGISTER, (uintptr_t)table + 4, 4), -HV_EINVAL);
    GUEST_ASSERT_EQ(grant_table_register(table, HV_GRANT_REFS_MAX + 1), -HV_E2BIG);
    GUEST_ASSERT_EQ(grant_end(0), -HV_ENOENT);          /* none of those was taken */
    GUEST_ASSERT_EQ(grant_table_register(table, 16), 0);
    GUEST_ASSERT_EQ(grant_end(16), -HV_EINVAL);
    grant_entry_set(&table[3], 7, buf, 0);
    table[3].flags |= HV_GTF_READING;                  /* as if a copy were running */
    GUEST_ASSERT_EQ(grant_end(3), -HV_EBUSY);
    table[3].flags &= (uint16_t)~HV_GTF_READING;
    GUEST_ASSERT_EQ(grant_end(3), 0);
    GUEST_ASSERT_EQ(table[3].flags, 0);
    GUEST_ASSERT_EQ(grant_table_register(table, 0), 0);
    GUEST_ASSERT_EQ(grant_end(3), -HV_ENOENT);

    /* Copies from nobody, from itself, with bad segments: per-segment status.
     * (The id goes to memory only: registers hv traces stay alike in every
     * partition, so both engines trace alike.) */
    segs[0] = (struct hv_grant_copy_seg){ .buf = (uintptr_t)buf, .len = 8 };
    segs[0].granter = (uint32_t)hv_partition_id();
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    segs[1] = (struct hv_grant_copy_seg){ .buf = (uintptr_t)buf, .granter = 0xfffffff1u,
                                          .offset = 4090, .len = 8 };
    GUEST_ASSERT_EQ(grant_copy(segs, 2), 0);
    GUEST_ASSERT_EQ(segs[0].status, -HV_EPERM);
    GUEST_ASSERT_EQ(segs[1].status, -HV_EINVAL);
    GUEST_ASSERT_EQ(grant_copy(segs, HV_GRANT_COPY_MAX + 1), -HV_E2BIG);
    GUEST_ASSERT_EQ(grant_copy((void *)0x0000800000000000ull, 1), -HV_EFAULT);
    test_success();
}
