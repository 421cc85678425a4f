/*
 * hypercall.c - the dispatch table and the hypercalls finished in C.
 *
 * T:500 A hypercall arrives as a number and five raw argument words (vcpu.c
 * read them from the registers in one place).  The table below maps the
 * number to a handler; each handler names its arguments first thing and
 * validates them completely before changing anything, so an error leaves
 * no trace.  A handler either returns the result (>= 0 or -HV_E*), or fills
 * the exit record and returns HC_TO_PARENT: the parent partition in Python
 * finishes the call (console output, shutdown).
 */
#include <sched.h>
#include <stddef.h>
#include <string.h>
#include "channels.h"

typedef int64_t (*hc_fn)(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit);

static int64_t hc_version(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    (void)v; (void)arg; (void)exit;
    return ((int64_t)HV_ABI_VERSION_MAJOR << 16) | HV_ABI_VERSION_MINOR;
}

static int64_t hc_features(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t index = arg[0];
    (void)v; (void)exit;
    if (index != 0)
        return -HV_EINVAL;
    return HV_FEATURE_EVENTS | HV_FEATURE_TIMER | HV_FEATURE_MULTICALL | HV_FEATURE_CLOCK |
           HV_FEATURE_CHANNELS | HV_FEATURE_SMP;
}

/* The bytes are copied here, once; the parent writes exactly these bytes
 * even if the guest changes its buffer meanwhile. */
static int64_t hc_console_write(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t buf = arg[0], len = arg[1];
    if (len > HV_CONSOLE_WRITE_MAX)
        return -HV_EINVAL;
    if (hv_copy_from_guest(v, exit->data, buf, len))
        return -HV_EFAULT;
    if (len == 0)
        return 0;
    exit->data_len = (uint32_t)len;
    return HC_TO_PARENT;
}

static int64_t hc_yield(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    (void)arg; (void)exit;
    if (v->h.sched)
        v->h.yielded = 1;   /* the run loop gives the worker to the next vCPU */
    else
        sched_yield();      /* one host thread per vCPU: the host schedules */
    return 0;
}

static int64_t hc_block(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    (void)arg; (void)exit;
    if (!v->partition->g.event_page_gpa)
        return -HV_EPERM;   /* no event could ever be delivered: it would sleep forever */
    v->g.wait = WAIT_EVENT;   /* vcpu.c sleeps before re-entering the guest */
    return 0;
}

static int64_t hc_shutdown(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t reason = arg[0], code = arg[1];
    (void)v;
    if (reason != HV_SHUTDOWN_POWEROFF && reason != HV_SHUTDOWN_CRASH)
        return -HV_EINVAL;
    if (code > 255)
        return -HV_EINVAL;
    exit->kind = HV_EXIT_SHUTDOWN;
    exit->nr = HV_HC_SHUTDOWN;
    memcpy(exit->args, arg, sizeof(exit->args));
    exit->reason = reason;
    exit->code = code;
    return HC_TO_PARENT;
}

static int64_t hc_clock_read(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    (void)arg; (void)exit;
    return (int64_t)partition_clock_ns(v->partition);
}

static int64_t hc_set_timer(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t deadline = arg[0];
    (void)exit;
    return event_timer_arm(v, deadline);
}

static int64_t hc_event_register(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t page = arg[0], vector = arg[1];
    struct hv_partition *p = v->partition;
    (void)exit;
    if (page % HV_PAGE_SIZE || vector < HV_VECTOR_MIN || vector > 255)
        return -HV_EINVAL;
    if (!partition_frame_is_guest(p, page, HV_PAGE_SIZE))
        return -HV_EFAULT;
    p->g.event_vector = (uint32_t)vector;
    __atomic_store_n(&p->g.event_page_gpa, page, __ATOMIC_RELEASE);
    return 0;
}

static int64_t hc_event_raise(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t event = arg[0];
    (void)exit;
    if (event >= HV_EVENTS_MAX)
        return -HV_EINVAL;
    return event_raise(v->partition, (uint32_t)event);
}

static int64_t hc_multicall(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    uint64_t calls = arg[0], count = arg[1];
    if (count > HV_MULTICALL_MAX)
        return -HV_E2BIG;
    /* The whole array must be readable and writable before any entry runs. */
    uint64_t bytes = count * sizeof(struct hv_multicall_entry);
    if (guest_range_ok(v, calls, bytes, WALK_WRITE) || guest_range_ok(v, calls, bytes, 0))
        return -HV_EFAULT;
    v->g.mc = (struct multicall_state){ .active = 1, .gva = calls, .count = count, .index = 0 };
    return multicall_continue(v, exit);
}

static int64_t hc_partition_id(struct hv_vcpu *v, const uint64_t arg[5], struct hv_exit *exit)
{
    (void)arg; (void)exit;
    return v->partition->id;
}

/* T:510 The table.  Designated initializers: a number with no entry is
 * simply NULL and gets -HV_ENOSYS.  Append-only, like the numbers.  The
 * argument names (as in abi.h's doc blocks) are for traces. */
static const struct {
    hc_fn fn;
    const char *name;
    const char *args;
} hypercalls[HV_HC_COUNT] = {
    [HV_HC_VERSION]        = { hc_version,        "version",        "" },
    [HV_HC_FEATURES]       = { hc_features,       "features",       "index" },
    [HV_HC_CONSOLE_WRITE]  = { hc_console_write,  "console_write",  "buf,len" },
    [HV_HC_YIELD]          = { hc_yield,          "yield",          "" },
    [HV_HC_BLOCK]          = { hc_block,          "block",          "" },
    [HV_HC_SHUTDOWN]       = { hc_shutdown,       "shutdown",       "reason,code" },
    [HV_HC_CLOCK_READ]     = { hc_clock_read,     "clock_read",     "" },
    [HV_HC_SET_TIMER]      = { hc_set_timer,      "set_timer",      "deadline" },
    [HV_HC_EVENT_REGISTER] = { hc_event_register, "event_register", "page,vector" },
    [HV_HC_EVENT_RAISE]    = { hc_event_raise,    "event_raise",    "event" },
    [HV_HC_MULTICALL]      = { hc_multicall,      "multicall",      "calls,count" },
    [HV_HC_PARTITION_ID]   = { hc_partition_id,   "partition_id",   "" },
    /* Event channels (evtchn.c) and grants (grant.c). */
    [HV_HC_EVTCHN_ALLOC_UNBOUND]    = { hc_evtchn_alloc_unbound,    "evtchn_alloc_unbound",    "peer" },
    [HV_HC_EVTCHN_BIND_INTERDOMAIN] = { hc_evtchn_bind_interdomain, "evtchn_bind_interdomain", "peer,remote_port" },
    [HV_HC_EVTCHN_SEND]             = { hc_evtchn_send,             "evtchn_send",             "port" },
    [HV_HC_EVTCHN_CLOSE]            = { hc_evtchn_close,            "evtchn_close",            "port" },
    [HV_HC_EVTCHN_BIND_VCPU]        = { hc_evtchn_bind_vcpu,        "evtchn_bind_vcpu",        "port,vcpu" },
    [HV_HC_EVTCHN_STATUS]           = { hc_evtchn_status,           "evtchn_status",           "port,out" },
    [HV_HC_GRANT_TABLE_REGISTER]    = { hc_grant_table_register,    "grant_table_register",    "table,count" },
    [HV_HC_GRANT_COPY]              = { hc_grant_copy,              "grant_copy",              "segs,count" },
    [HV_HC_GRANT_END]               = { hc_grant_end,               "grant_end",               "ref" },
    /* SMP (smp.c). */
    [HV_HC_VCPU_UP]         = { hc_vcpu_up,         "vcpu_up",         "vcpu,context" },
    [HV_HC_VCPU_DOWN]       = { hc_vcpu_down,       "vcpu_down",       "vcpu" },
    [HV_HC_VCPU_ID]         = { hc_vcpu_id,         "vcpu_id",         "" },
    [HV_HC_VCPU_COUNT]      = { hc_vcpu_count,      "vcpu_count",      "" },
    [HV_HC_VCPU_SEND_EVENT] = { hc_vcpu_send_event, "vcpu_send_event", "vcpu,event" },
    [HV_HC_TLB_FLUSH]       = { hc_tlb_flush,       "tlb_flush",       "mask,va" },
    [HV_HC_EVENT_BIND_VCPU] = { hc_event_bind_vcpu, "event_bind_vcpu", "event,vcpu" },
};

int64_t hypercall_dispatch(struct hv_vcpu *v, uint64_t nr, const uint64_t args[5],
                           struct hv_exit *exit)
{
    if (nr >= HV_HC_COUNT || !hypercalls[nr].fn)
        return -HV_ENOSYS;
    if (v->partition->route[nr] == HV_ROUTE_PARENT) {
        /* The parent asked to serve this number itself (tracing, benches). */
        exit->kind = HV_EXIT_HYPERCALL;
        exit->nr = nr;
        memcpy(exit->args, args, sizeof(exit->args));
        return HC_TO_PARENT;
    }
    int64_t r = hypercalls[nr].fn(v, args, exit);
    /* A nested dispatch (a multicall entry) has filled the record already. */
    if (r == HC_TO_PARENT && exit->kind == 0) {
        exit->kind = HV_EXIT_HYPERCALL;
        exit->nr = nr;
        memcpy(exit->args, args, sizeof(exit->args));
    }
    return r;
}

/* T:520 Multicall: entries run one by one; each is read from guest memory
 * once, into a local copy.  An entry the parent must finish suspends the
 * batch; hv_vcpu_complete() stores its result and the batch resumes here
 * before the guest runs again. */
int64_t multicall_continue(struct hv_vcpu *v, struct hv_exit *exit)
{
    struct multicall_state *mc = &v->g.mc;
    while (mc->index < mc->count) {
        struct hv_multicall_entry entry;
        uint64_t at = mc->gva + mc->index * sizeof(entry);
        if (hv_copy_from_guest(v, &entry, at, sizeof(entry))) {
            *mc = (struct multicall_state){0};
            return -HV_EFAULT;
        }
        int64_t r;
        if (entry.op == HV_HC_MULTICALL || entry.op == HV_HC_BLOCK)
            r = -HV_EOPNOTSUPP;         /* bounded work per trap, no sleeping mid-batch */
        else
            r = hypercall_dispatch(v, entry.op, entry.args, exit);
        if (r == HC_TO_PARENT) {
            TRACE(v, HV_TRACE_TO_PARENT, entry.op, entry.args, 0);
            return HC_TO_PARENT;        /* resumed by hv_vcpu_complete() */
        }
        TRACE(v, HV_TRACE_HYPERCALL, entry.op, entry.args, r);
        multicall_store_result(v, r);
        if (!mc->active)
            return -HV_EFAULT;
    }
    *mc = (struct multicall_state){0};
    return 0;
}

void multicall_store_result(struct hv_vcpu *v, int64_t result)
{
    struct multicall_state *mc = &v->g.mc;
    uint64_t at = mc->gva + mc->index * sizeof(struct hv_multicall_entry)
                  + offsetof(struct hv_multicall_entry, result);
    if (hv_copy_to_guest(v, at, &result, sizeof(result)))
        *mc = (struct multicall_state){0};   /* the array was unmapped meanwhile */
    else
        mc->index++;
}

/* T:440 The hypercall page: one stub per number, 32 bytes apart.
 *   b8 NN NN NN NN    mov  $nr, %eax
 *   e6 EA             out  %al, $HV_PORT_HYPERCALL
 *   c3                ret
 * and int3 padding, so a jump into the middle of a stub traps. */
void hypercall_page_place(struct hv_vcpu *v, uint64_t pfn)
{
    struct hv_partition *p = v->partition;
    uint64_t gpa = pfn * HV_PAGE_SIZE;
    if (pfn >= p->nframes || !partition_frame_is_guest(p, gpa, HV_PAGE_SIZE))
        return;             /* not its RAM: ignored, the guest sees no stubs (abi.h) */
    uint8_t *page = p->ram + gpa;
    memset(page, 0xcc, HV_PAGE_SIZE);
    for (uint32_t nr = 0; nr < HV_HYPERCALL_MAX; nr++) {
        uint8_t *stub = page + nr * HV_HYPERCALL_STUB_SIZE;
        stub[0] = 0xb8;
        memcpy(stub + 1, &nr, 4);
        stub[5] = 0xe6;
        stub[6] = HV_PORT_HYPERCALL;
        stub[7] = 0xc3;
    }
    ram_written(p, gpa, HV_PAGE_SIZE);
    p->g.hypercall_page_gpa = gpa;
    TRACE(v, HV_TRACE_PAGE, 0, ((uint64_t[5]){ gpa }), 0);
}

const char *hv_hypercall_info(uint64_t nr, const char **args)
{
    if (nr >= HV_HC_COUNT || !hypercalls[nr].fn)
        return NULL;
    if (args)
        *args = hypercalls[nr].args;
    return hypercalls[nr].name;
}
