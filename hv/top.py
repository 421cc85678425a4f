"""`hv top`: a live view of a running `hv serve`, from GET /metrics.

Every screen is the difference of two samples of the API's metrics: CPU
share (the vCPU thread's CPU time over wall time), exits, hypercalls and
device requests per second, device bytes per second both ways.  render()
is a pure function of the two samples, so it is tested without a clock.
`hv top --json` prints the samples themselves as JSON lines instead.
"""
import json
import time

CLEAR = "\x1b[H\x1b[2J"         # cursor home, clear screen (ECMA-48)
COLUMNS = ("NAME", "STATE", "CPU%", "EXITS/s", "HCALLS/s", "DEVREQ/s", "OUT KiB/s", "IN KiB/s",
           "UPTIME")


def rates(prev, cur):
    """Per-partition rows {name: {...}} from two /metrics samples."""
    before = {p["name"]: p for p in prev["partitions"]}
    seconds = max(cur["time"] - prev["time"], 1e-9)
    rows = []
    for p in cur["partitions"]:
        old = before.get(p["name"])

        def per_second(value, old=old):
            return None if old is None else max(value(p) - value(old), 0) / seconds

        def device_total(key):
            return lambda m: sum(d[key] for d in m["devices"])

        rows.append({
            "name": p["name"], "state": p["state"], "uptime": p["uptime_seconds"],
            "cpu": per_second(lambda m: m["cpu_seconds"]),
            "exits": per_second(lambda m: m["exits"]),
            "hypercalls": per_second(lambda m: m["hypercalls_fast"] + m["hypercalls_slow"]),
            "requests": per_second(device_total("requests")),
            "out": per_second(device_total("bytes_from_guest")),
            "in": per_second(device_total("bytes_to_guest")),
        })
    return rows


def _number(value, scale=1.0, digits=0):
    return "-" if value is None else f"{value * scale:.{digits}f}"


def render(prev, cur, clock=None):
    """The screen (text) for two samples."""
    rows = rates(prev, cur)
    running = sum(r["state"] == "running" for r in rows)
    stamp = time.strftime("%H:%M:%S", time.localtime(cur["time"] if clock is None else clock))
    table = [COLUMNS] + [(
        r["name"], r["state"], _number(r["cpu"], 100, 1), _number(r["exits"]),
        _number(r["hypercalls"]), _number(r["requests"]), _number(r["out"], 1 / 1024, 1),
        _number(r["in"], 1 / 1024, 1), f"{r['uptime']:.0f}s") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = [f"hv top - {stamp} - {len(rows)} partitions, {running} running"]
    for i, row in enumerate(table):
        cells = [c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("-" * len(lines[-1]))
    return "\n".join(lines) + "\n"


def run_top(client, out, interval=1.0, iterations=None, json_lines=False):
    """Show screens until interrupted (or `iterations` of them); a screen
    clears the last one when `out` is a terminal.  json_lines: instead, each
    sample as JSON lines, one per partition (its metrics and the sample's
    time), for a collector to take rates from."""
    clear = CLEAR if out.isatty() and not json_lines else ""
    prev = None if json_lines else client.metrics()
    shown = 0
    while iterations is None or shown < iterations:
        if prev is not None or shown:
            time.sleep(interval)
        cur = client.metrics()
        if json_lines:
            out.write("".join(json.dumps({"time": cur["time"], **p}) + "\n"
                              for p in cur["partitions"]))
        else:
            out.write(clear + render(prev, cur))
        out.flush()
        prev = cur
        shown += 1
    return 0
