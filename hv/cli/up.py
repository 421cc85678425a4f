"""`hv up FILE.toml`: the partitions a config file describes, in this
process (a Manager of its own), or handed to a running `hv serve`."""
import sys

from hv.cli.common import EXIT_CRASHED, error, interrupted


def add_parsers(sub):
    up = sub.add_parser("up", help="start the partitions a TOML file describes, in one process")
    up.add_argument("config", help="TOML file with [[partition]] tables (see hv/config.py)")
    up.add_argument("-v", "--verbose", action="store_true")
    up.add_argument("--api-socket", metavar="PATH|default",
                    help="create and start them in the `hv serve` listening on PATH "
                         "('default': $HV_API_SOCKET or the runtime directory's api.socket) "
                         "and return; without it, they run here until all have ended")
    up.set_defaults(func=cmd_up)


def cmd_up(args):
    """Start every partition of a config file; wait for all; the exit
    status is the first non-zero one (125 for a crash)."""
    from hv.config import ConfigError, load
    from hv.manager import CRASHED, Manager, ManagerError

    try:
        # the whole file is checked before anything is made
        specs, channels, workers = load(args.config, with_channels=True, with_workers=True)
    except ConfigError as e:
        return error(str(e))
    if args.api_socket is not None:
        if workers is not None:
            return error(f"{args.config}: workers = {workers} is the running hv serve's "
                         "(without --api-socket it applies here)")
        return register(args, specs, channels)
    from hv.scheduler import default_scheduler
    try:
        default_scheduler(workers)      # the partitions below run on its workers
    except ValueError as e:
        return error(f"{args.config}: {e}")
    manager = Manager(console_stream=sys.stdout.buffer)
    status = 0
    try:
        try:
            for spec in specs:
                manager.create(spec)
            for ch in channels:         # each channel a partition serves takes 16 grant refs
                manager.connect(ch["a"], ch["b"])
            for spec in specs:          # and protected from now on, if it says so
                manager.start(spec["name"])
        except ManagerError as e:
            return error(f"{args.config}: {e}")
        for spec in specs:
            name = spec["name"]
            state = manager.wait(name)
            about = manager.describe(name)
            if args.verbose:
                print(f"hv: {name}: {state}", file=sys.stderr)
            if state == CRASHED:
                print(f"hv: {name}: {about['crash_report']}", file=sys.stderr)
                status = status or EXIT_CRASHED
            elif about["exit_code"]:
                status = status or about["exit_code"]
    except KeyboardInterrupt as e:      # SIGINT, and SIGTERM (common.Terminated)
        status = interrupted(e)
    finally:
        manager.close()
    return status


def register(args, specs, channels):
    """Create all of them in the server, connect the channels, then start
    all; if one is refused, the ones already created are deleted: all or
    nothing."""
    from hv.client import APIError, Client

    made = []
    with Client(None if args.api_socket == "default" else args.api_socket) as client:
        try:
            for spec in specs:
                client.create(spec["name"], spec)
                made.append(spec["name"])
            for ch in channels:
                client.connect(ch["a"], ch["b"])
            for name in made:
                about = client.action(name, "start")
                print(f"{name}: {about['state']}")
        except APIError as e:
            for name in made:
                try:
                    client.delete(name)
                except APIError:
                    pass
            return error(f"{args.config}: {e}" if e.status else str(e))
    return 0
