"""The client commands of a running `hv serve`: hv ps, create, start, pause,
resume, stop, share, delete, describe, top.

Exit statuses: 0 done; 2 the server refused the request (bad input, no
such partition, the partition's state forbids it: its fault_message is the
one line on stderr); 1 no server answers at the socket (or it failed).
"""
import json
import os
import sys
from urllib.parse import quote

from hv.cli.common import EXIT_INTERRUPTED, EXIT_USAGE
from hv.cli.serve import add_api_socket_option

EXIT_NO_SERVER = 1
ACTIONS = {"start": "boot a created partition", "pause": "pause a running partition",
           "resume": "resume a paused partition",
           "stop": "stop a partition (its record stays until delete)"}


def add_parsers(sub):
    ps = sub.add_parser("ps", help="list the partitions of a running hv serve")
    add_api_socket_option(ps)
    ps.add_argument("--json", action="store_true", help="the API's JSON, one document")
    ps.set_defaults(func=cmd_ps)

    from hv.cli.run import add_run_options
    create = sub.add_parser("create", help="create a partition in a running hv serve "
                                           "(the options of hv run)")
    create.add_argument("name", help="the partition's name")
    add_run_options(create)
    add_api_socket_option(create)
    add_share_options(create, "and so put it on the scheduler")
    create.add_argument("--start", action="store_true", help="and start it")
    create.set_defaults(func=cmd_create)

    for action, what in ACTIONS.items():
        cmd = sub.add_parser(action, help=what)
        cmd.add_argument("name", help="the partition's name")
        add_api_socket_option(cmd)
        cmd.set_defaults(func=cmd_action, action=action)

    share = sub.add_parser("share", help="change a scheduled partition's weight and cap, live")
    share.add_argument("name")
    add_share_options(share, "")
    add_api_socket_option(share)
    share.set_defaults(func=cmd_share)

    delete = sub.add_parser("delete", help="stop a partition if it runs and forget it")
    delete.add_argument("name")
    add_api_socket_option(delete)
    delete.set_defaults(func=cmd_delete)

    describe = sub.add_parser("describe", help="one partition: state, exit code, crash report, counters")
    describe.add_argument("name")
    add_api_socket_option(describe)
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(func=cmd_describe)

    top = sub.add_parser("top", help="a live view of a running hv serve's partitions")
    add_api_socket_option(top)
    top.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                     help="between screens (default 1)")
    top.add_argument("--iterations", type=int, metavar="N", help="show N screens, then exit")
    top.add_argument("--once", action="store_const", dest="iterations", const=1,
                     help="one screen (rates over one interval), then exit")
    top.add_argument("--json", action="store_true",
                     help="each sample as JSON lines, one per partition (its metrics), no screen")
    top.set_defaults(func=cmd_top)


def add_share_options(parser, why):
    parser.add_argument("--weight", type=int, metavar="N",
                        help=f"scheduler weight 1..65535 (default 256) {why}".rstrip())
    parser.add_argument("--cap", type=int, metavar="PERCENT",
                        help=f"at most this percent of a CPU, 0 = none {why}".rstrip())


def _client_call(args, fn):
    """Run fn(client); map the API's refusals to one line and an exit status."""
    from hv.client import APIError, Client
    try:
        with Client(args.api_socket) as client:
            return fn(client)
    except APIError as e:
        print(f"hv: error: {e}", file=sys.stderr)
        return EXIT_USAGE if 400 <= e.status < 500 else EXIT_NO_SERVER


def _show(args, fetch, as_text):
    """Ask the server (fetch(client)), then print its answer: JSON with
    --json, else as_text(answer)."""
    def show(client):
        answer = fetch(client)
        print(json.dumps(answer, indent=2) if args.json else as_text(answer),
              end="\n" if args.json else "")
        return 0
    return _client_call(args, show)


def cmd_ps(args):
    return _show(args, lambda client: client.list(), ps_table)


def ps_table(parts):
    rows = [("NAME", "STATE", "ENGINE", "MEM", "EXIT", "UPTIME", "CONSOLES")]
    for p in parts:
        m = p["metrics"]
        rows.append((p["name"], p["state"], p["engine"], p["mem"],
                     "-" if p["exit_code"] is None else str(p["exit_code"]),
                     f"{m['uptime_seconds']:.1f}s", ",".join(p["consoles"]) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in rows)


def cmd_create(args):
    from hv.cli.run import device_specs
    from hv.config import ConfigError, check_partition
    from hv.cli.common import error

    spec = {"name": args.name, "kernel": args.kernel, "mem": args.mem, "cmdline": args.cmdline,
            "engine": args.engine, "deterministic": args.deterministic}
    if args.initrd:
        spec["initrd"] = args.initrd
    spec.update({k: v for k, v in (("weight", args.weight), ("cap", args.cap)) if v is not None})
    try:
        spec["devices"] = device_specs(args)
        # Paths are the caller's: made absolute here, since the server's
        # working directory is not ours.
        check_partition(spec, base=os.getcwd())
    except (ConfigError, ValueError) as e:
        return error(str(e))

    def create(client):
        about = client.create(args.name, spec)
        if args.start:
            about = client.action(args.name, "start")
        print(f"{about['name']}: {about['state']}")
        return 0
    return _client_call(args, create)


def cmd_action(args):
    def act(client):
        about = client.action(args.name, args.action)
        print(f"{about['name']}: {about['state']}")
        return 0
    return _client_call(args, act)


def cmd_share(args):
    share = {k: v for k, v in (("weight", args.weight), ("cap", args.cap)) if v is not None}

    def set_share(client):
        about = client.call("PUT", f"/partitions/{quote(args.name, safe='')}/share", share)
        print(f"{about['name']}: weight {about['weight'] or 256}, cap {about['cap'] or 0}%")
        return 0
    return _client_call(args, set_share)


def cmd_delete(args):
    return _client_call(args, lambda client: client.delete(args.name) or 0)


def cmd_describe(args):
    return _show(args, lambda client: client.describe(args.name), describe_text)


def describe_text(about):
    m = about["metrics"]
    lines = [f"{key}: {about[key]}" for key in
             ("name", "state", "kernel", "mem", "cmdline", "engine", "exit_code")]
    if about["scheduled"]:
        lines.append(f"scheduler: weight {about['weight'] or 256}, cap {about['cap'] or 0}%")
    lines += [f"consoles: {', '.join(about['consoles']) or '-'}",
              f"exits: {m['exits']}  hypercalls: {m['hypercalls_fast']} fast, "
              f"{m['hypercalls_slow']} slow  cpu: {m['cpu_seconds']:.2f}s  "
              f"uptime: {m['uptime_seconds']:.1f}s"]
    lines += [f"device {d['slot']}: {d['type']}  {d['requests']} requests, {d['errors']} errors, "
              f"{d['bytes_from_guest']} bytes out, {d['bytes_to_guest']} bytes in"
              for d in m["devices"]]
    if about["crash_report"]:
        lines.append(about["crash_report"])
    return "".join(line + "\n" for line in lines)


def cmd_top(args):
    from hv.top import run_top
    try:
        return _client_call(args, lambda client: run_top(client, sys.stdout, args.interval,
                                                         args.iterations, args.json))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
