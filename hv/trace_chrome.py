"""`hv trace --format chrome`: the trace as Chrome trace-event JSON, which
Perfetto (ui.perfetto.dev) and chrome://tracing open.

T:655 The same records the text trace decodes (hv/trace.py), laid out for a
timeline viewer: the partition is a process, each vCPU a thread (a track);
a hypercall is a slice -- as long as the parent took when the parent served
it, a zero-length mark when the core finished it at once -- and so is every
engine exit and injected vector.  What caused an injection (an event_raise,
the timer being armed, a device kick: a QueueNotify write) is joined to it
by a flow arrow.

Timestamps are the partition clock in microseconds, as the format wants;
on a deterministic partition that clock counts instructions (1 ns each).
"""
import json

from hv.abi import error_name, hypercall_args, hypercall_name, lib
from hv.trace import EXIT_NAMES

QUEUE_NOTIFY = 0x50                      # virtio-mmio register (virtio 1.x, 4.2.2)
CAUSES = (lib.HV_HC_EVENT_RAISE, lib.HV_HC_SET_TIMER)


def _us(ns):
    return ns / 1000


def _is_kick(args):
    """An MMIO write to a virtio-mmio slot's QueueNotify register."""
    where, _value, _size, write = args[:4]
    base = lib.HV_VIRTIO_MMIO_BASE
    end = base + lib.HV_VIRTIO_MMIO_SLOTS * lib.HV_VIRTIO_MMIO_SLOT
    return bool(write) and base <= where < end and (where - base) % lib.HV_VIRTIO_MMIO_SLOT == QUEUE_NOTIFY


def _call_args(nr, args, result=None):
    out = {name: f"{value:#x}" for name, value in zip(hypercall_args(nr), args)}
    if result is not None:
        out["result"] = error_name(result)
    return out


def chrome_events(records, pid=1, process_name="partition"):
    """The trace-event list for one partition's records ((kind, vcpu, nr,
    args, result, time_ns) tuples, as hv.trace.Tracer keeps them)."""
    events = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
               "args": {"name": process_name}}]
    vcpus = set()
    pending = {}                # vcpu -> (nr, args, t) handed to the parent
    causes = []                 # flow starts waiting for the next injection
    flow_id = 0

    def slice_(vcpu, name, cat, t, dur=0, args=None):
        vcpus.add(vcpu)
        event = {"name": name, "cat": cat, "ph": "X", "pid": pid, "tid": vcpu,
                 "ts": _us(t), "dur": _us(dur)}
        if args:
            event["args"] = args
        events.append(event)

    def cause(vcpu, name, t):
        nonlocal flow_id
        flow_id += 1
        causes.append(flow_id)
        events.append({"name": name, "cat": "flow", "ph": "s", "id": flow_id, "pid": pid,
                       "tid": vcpu, "ts": _us(t)})

    for kind, vcpu, nr, args, result, t in records:
        if kind == lib.HV_TRACE_HYPERCALL:
            slice_(vcpu, hypercall_name(nr), "hypercall", t, args=_call_args(nr, args, result))
            if nr in CAUSES and result == 0 and (nr != lib.HV_HC_SET_TIMER or args[0]):
                cause(vcpu, hypercall_name(nr), t)
        elif kind == lib.HV_TRACE_TO_PARENT:
            pending[vcpu] = (nr, args, t)
        elif kind == lib.HV_TRACE_COMPLETE:
            nr0, args0, t0 = pending.pop(vcpu, (nr, (0,) * 5, t))
            slice_(vcpu, hypercall_name(nr0), "parent", t0, t - t0,
                   _call_args(nr0, args0, result))
        elif kind == lib.HV_TRACE_INJECT:
            slice_(vcpu, f"inject {nr:#x}", "inject", t)
            for fid in causes:
                events.append({"name": "event", "cat": "flow", "ph": "f", "bp": "e", "id": fid,
                               "pid": pid, "tid": vcpu, "ts": _us(t)})
            causes.clear()
        elif kind == lib.HV_TRACE_EXIT:
            name = EXIT_NAMES.get(nr, f"exit {nr}")
            detail = {"rip": f"{args[0]:#x}"} if nr == lib.HV_TRACE_EXIT_HLT else {
                "vector": args[0], "rip": f"{args[1]:#x}"} if nr == lib.HV_TRACE_EXIT_EXCEPTION else {
                "address": f"{args[0]:#x}", "value": f"{args[1]:#x}", "size": args[2],
                "write": bool(args[3])}
            slice_(vcpu, f"exit {name}", "exit", t, args=detail)
            if nr == lib.HV_TRACE_EXIT_MMIO and _is_kick(args):
                cause(vcpu, "device kick", t)
        elif kind == lib.HV_TRACE_PAGE:
            slice_(vcpu, "hypercall page", "boot", t, args={"gpa": f"{args[0]:#x}"})
        elif kind == lib.HV_TRACE_INSN:
            slice_(vcpu, f"{nr:#x}", "insn", t)
    # Still with the parent at the end (the shutdown that stopped it).
    for vcpu, (nr, args, t) in sorted(pending.items()):
        slice_(vcpu, hypercall_name(nr), "parent", t, args=_call_args(nr, args))
    events[1:1] = [{"name": "thread_name", "ph": "M", "pid": pid, "tid": v,
                    "args": {"name": f"vcpu{v}"}} for v in sorted(vcpus)]
    return events


def chrome_trace(records, pid=1, process_name="partition", deterministic=False):
    """The whole JSON object (trace-event "JSON object format")."""
    return {"traceEvents": chrome_events(records, pid, process_name),
            "displayTimeUnit": "ns",
            "otherData": {"clock": "instructions (1 ns each)" if deterministic
                          else "partition clock"}}


def write_chrome(tracer, out, process_name="partition"):
    """Write a finished Tracer's records to the text stream out."""
    part = tracer._partition
    json.dump(chrome_trace(tracer.records, pid=part.id if part else 1, process_name=process_name,
                           deterministic=getattr(tracer, "deterministic", False)), out)
    out.write("\n")
