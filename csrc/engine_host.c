/*
 * engine_host.c - the core's side of the engine host interface (engine.h).
 *
 * Engines reach the core only through this table.  Each entry is a thin
 * door onto the part of the core that owns the job: the run loop's exit
 * handling and pending-work predicate (vcpu.c), guest memory (pagewalk.c),
 * the PC platform (platform.c), the virtio register file (virtio_mmio.c)
 * and the instruction trace (trace.c).
 */
#include "core.h"

static int host_interrupt_waiting(const struct hv_vcpu *v)
{
    return __atomic_load_n(&v->g.inject_pending, __ATOMIC_RELAXED) ||
           __atomic_load_n(&v->lapic_pending, __ATOMIC_RELAXED);
}

static int host_read_guest(struct hv_vcpu *v, uint64_t gva, void *buf, uint64_t len)
{
    return copy_guest_system(v, gva, buf, len, 0);
}

static int host_port_read(struct hv_vcpu *v, uint16_t port, uint8_t size, uint32_t *value)
{
    return platform_port(v, port, size, 0, value, NULL);
}

/* The same devices, in the same order, as vcpu_handle_exit's MMIO case. */
static int host_mmio(struct hv_vcpu *v, uint64_t gpa, uint32_t size, int write, uint64_t *value)
{
    if (virtio_mmio_access(v->partition, gpa, size, write, value) == 0)
        return 0;
    return platform_mmio(v, gpa, size, write, value);
}

static int host_cpuid(struct hv_vcpu *v, uint32_t leaf, uint32_t subleaf, uint32_t r[4])
{
    return platform_cpuid(v->partition, leaf, subleaf, r);
}

const struct engine_host engine_core_host = {
    .handle_exit = vcpu_handle_exit,
    .hypercall = vcpu_handle_hypercall,
    .needs_loop = vcpu_needs_loop,
    .interrupt_waiting = host_interrupt_waiting,
    .read_guest = host_read_guest,
    .port_read = host_port_read,
    .mmio = host_mmio,
    .cpuid = host_cpuid,
    .trace_insn = trace_insn,
};
