"""`hv trace --plot FILE.png`: a picture of what the partition did.

One row per vCPU and kind of record -- each hypercall by name, each kind of
engine exit, injections -- along the partition clock, so a student sees the
boot, the loops and the waits at a glance; a bar chart beside it counts
each kind.  A hypercall the parent served is drawn as a bar as long as it
took; the rest are ticks.

matplotlib is an optional dependency (pip install matplotlib): without it
`hv trace --plot` says so in one line and runs nothing.
"""
from collections import Counter, defaultdict

from hv.abi import hypercall_name, lib
from hv.trace import EXIT_NAMES

MISSING = "hv trace --plot needs matplotlib (pip install matplotlib)"


def matplotlib_missing():
    """None if matplotlib can be imported, else the one line to tell the user."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return MISSING
    return None


UNKNOWN = "unknown numbers"


def _name(nr):
    return hypercall_name(nr) if nr < lib.HV_HC_COUNT else UNKNOWN


def timeline(records):
    """{(vcpu, order, row name): ([tick times], [(start, length) bars])} and
    the count of each row, from Tracer records (times in ns).  order sorts
    rows: hypercalls by number, then the parent's, injections, exits."""
    rows = defaultdict(lambda: ([], []))
    pending = {}
    for kind, vcpu, nr, args, _result, t in records:
        if kind == lib.HV_TRACE_HYPERCALL:
            rows[(vcpu, (0, min(nr, lib.HV_HC_COUNT)), _name(nr))][0].append(t)
        elif kind == lib.HV_TRACE_TO_PARENT:
            pending[vcpu] = (nr, t)
        elif kind == lib.HV_TRACE_COMPLETE:
            nr0, t0 = pending.pop(vcpu, (nr, t))
            rows[(vcpu, (1, nr0), _name(nr0) + " [parent]")][1].append((t0, max(t - t0, 0)))
        elif kind == lib.HV_TRACE_INJECT:
            rows[(vcpu, (2, 0), "inject")][0].append(t)
        elif kind == lib.HV_TRACE_EXIT:
            rows[(vcpu, (3, nr), "exit " + EXIT_NAMES.get(nr, str(nr)))][0].append(t)
    for vcpu, (nr, t) in pending.items():               # the shutdown that ended it
        rows[(vcpu, (1, nr), _name(nr) + " [parent]")][1].append((t, 0))
    counts = Counter({key: len(ticks) + len(bars) for key, (ticks, bars) in rows.items()})
    return dict(rows), counts


DENSE = 2000          # a row with more ticks than this is drawn as occupied bins
BINS = 1000


def _occupied(ticks, first, last):
    """(start, length) of each of BINS equal slices of [first, last] that
    holds a tick: a row of many thousand ticks as a few hundred bars."""
    width = max((last - first) / BINS, 1)
    bins = sorted({int((t - first) // width) for t in ticks})
    return [(first + b * width, width) for b in bins]


def plot(records, path, title="hv trace", deterministic=False):
    """Write the picture to path (PNG, or any format matplotlib knows by suffix)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, counts = timeline(records)
    times = [r[5] for r in records] or [0]
    first, last = min(times), max(times)
    keys = sorted(rows)
    scale, unit = (1e3, "thousand instructions") if deterministic else (1e6, "ms")
    height = max(2.5, 0.38 * len(keys) + 1.4)
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(12, height), sharey=True,
                                   gridspec_kw={"width_ratios": [4, 1]})
    colours = plt.get_cmap("tab10")
    for y, key in enumerate(keys):
        ticks, spans = rows[key]
        colour = colours(y % 10)
        if len(ticks) > DENSE:
            spans = spans + _occupied(ticks, first, last)    # drawn as bars: fast, and reads the same
        elif ticks:
            ax.scatter([t / scale for t in ticks], [y] * len(ticks), marker="|", s=140,
                       color=colour, linewidths=1.2)
        if spans:
            ax.broken_barh([(s / scale, max(d / scale, 1e-9)) for s, d in spans], (y - 0.3, 0.6),
                           color=colour)
            ax.scatter([s / scale for s, _ in spans], [y] * len(spans), marker="|", s=140,
                       color=colour, linewidths=1.2)
        bars.barh(y, counts[key], color=colour)
        bars.text(counts[key], y, f" {counts[key]}", va="center", fontsize=9)
    labels = [f"vcpu{v}  {name}" for v, _order, name in keys]
    ax.set_yticks(range(len(keys)), labels)
    ax.set_ylim(len(keys) - 0.5, -0.5)
    ax.set_xlabel(f"partition clock ({unit})")
    ax.set_title(title, loc="left")
    ax.grid(axis="x", alpha=0.3)
    bars.set_xlabel("count")
    bars.set_xscale("log" if counts and max(counts.values()) > 50 * min(counts.values()) else "linear")
    bars.margins(x=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Counter({name: n for (_v, _o, name), n in counts.items()})
