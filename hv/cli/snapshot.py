"""`hv snapshot NAME DIR`, `hv protect NAME [DIR --every T]` and `hv migrate
NAME ADDRESS` (a partition of a running hv serve, through the management
API); `hv restore DIR` and
`hv receive ADDRESS` (run it in this process, like hv run, on either
engine): partitions as files and on the move (docs/lifecycle.md).

Exit statuses: hv restore as hv run (the guest's code, or EXIT_*); a
snapshot that cannot be restored (truncated, corrupted, another version,
a memory file too small) is one `hv: error:` line and 2, nothing started.
hv snapshot, hv protect, hv migrate: 0 done, 2 refused (the partition runs on), 1 no
server.  hv receive: as hv restore; a stream that breaks is one line, 2.
"""
import os
import sys

from hv.cli.common import EXIT_CRASHED, EXIT_USAGE, error, interrupted
from hv.cli.serve import add_api_socket_option


def add_parsers(sub):
    snap = sub.add_parser("snapshot", help="save a partition of a running hv serve into DIR")
    snap.add_argument("name", help="the partition's name")
    snap.add_argument("directory", help="where to write it (created if missing)")
    snap.add_argument("--stop", action="store_true",
                      help="leave the partition paused afterwards instead of resuming it")
    snap.add_argument("--copy-disks", action="store_true",
                      help="copy its writable disks into DIR too; restoring puts them back "
                           "as they were")
    add_api_socket_option(snap)
    snap.set_defaults(func=cmd_snapshot)

    restore = sub.add_parser("restore", help="resume a saved partition here, on either engine")
    restore.add_argument("directory", help="a directory `hv snapshot` wrote, or a protected "
                                           "partition's (its newest snapshot)")
    restore.add_argument("--engine", choices=("kvm", "tcg"),
                         help="the engine to resume on (default: the one that saved it)")
    restore.set_defaults(func=cmd_restore)

    mig = sub.add_parser("migrate", help="move a partition of a running hv serve live "
                                         "to an `hv receive`")
    mig.add_argument("name", help="the partition's name")
    mig.add_argument("address", help="unix:PATH or tcp:127.0.0.1:PORT")
    mig.add_argument("--downtime-ms", type=int, default=300,
                     help="pause budget for the last copy (default 300)")
    add_api_socket_option(mig)
    mig.set_defaults(func=cmd_migrate)

    guard = sub.add_parser("protect", help="save a partition of a running hv serve "
                                           "periodically (scheduled protection)")
    guard.add_argument("name", help="the partition's name")
    guard.add_argument("directory", nargs="?",
                       help="where its snap-N directories go (created if missing); "
                            "without it (and --off), show its protection")
    guard.add_argument("--every", help='how often: "30s", "500ms", "5m" (required with a directory)')
    guard.add_argument("--keep", type=int, default=3, help="the newest snapshots kept (default 3)")
    guard.add_argument("--copy-disks", action="store_true",
                       help="each snapshot holds its writable disks too (restorable after "
                            "the guest wrote them)")
    guard.add_argument("--off", action="store_true",
                       help="stop saving it (the snapshots taken stay)")
    add_api_socket_option(guard)
    guard.set_defaults(func=cmd_protect)

    rx = sub.add_parser("receive", help="take one migrating partition and run it here")
    rx.add_argument("address", help="unix:PATH or tcp:127.0.0.1:PORT to listen on")
    rx.add_argument("--engine", choices=("kvm", "tcg"),
                    help="the engine to run it on (default: the source's)")
    rx.set_defaults(func=cmd_receive)


def cmd_snapshot(args):
    from hv.cli.control import _client_call
    from urllib.parse import quote

    def save(client):
        body = {"directory": os.path.abspath(args.directory), "resume": not args.stop,
                "copy_disks": args.copy_disks}
        about = client.call("PUT", f"/partitions/{quote(args.name, safe='')}/snapshot", body)
        print(f"{args.name}: saved to {about['directory']} "
              f"({about['bytes'] >> 20} MiB, paused {about['seconds'] * 1000:.1f} ms)")
        return 0
    return _client_call(args, save)


def cmd_migrate(args):
    from hv.cli.control import _client_call
    from urllib.parse import quote

    def move(client):
        body = {"address": args.address, "downtime_ms": args.downtime_ms}
        about = client.call("PUT", f"/partitions/{quote(args.name, safe='')}/migrate", body)
        print(f"{args.name}: runs at {args.address} ({about['rounds']} rounds, downtime "
              f"{about['downtime'] * 1000:.1f} ms, total {about['total'] * 1000:.0f} ms)")
        return 0
    return _client_call(args, move)


def cmd_protect(args):
    from hv.cli.control import _client_call
    from urllib.parse import quote
    path = f"/partitions/{quote(args.name, safe='')}/protection"
    if args.off and args.directory:
        return error("hv protect: --off or a directory, not both")
    if args.directory and not args.every:
        return error("hv protect: --every is required with a directory")

    def act(client):
        if args.off:
            client.call("DELETE", path)
            print(f"{args.name}: not protected")
            return 0
        if args.directory:
            body = {"every": args.every, "keep": args.keep,
                    "directory": os.path.abspath(args.directory),
                    "copy_disks": args.copy_disks}
            about = client.call("PUT", path, body)
        else:
            about = client.call("GET", path)
        if about["every"] is None:
            print(f"{args.name}: not protected")
        else:
            print(f"{args.name}: every {about['every']}, keep {about['keep']}, "
                  + ("with its disks, " if about.get("copy_disks") else "")
                  + f"into {about['directory']}: {about['saved']} saved"
                  + (f", last error: {about['last_error']}" if about["last_error"] else ""))
        for snap in about["snapshots"]:
            print(f"  {snap['directory']}")
        return 0
    return _client_call(args, act)


def cmd_restore(args):
    from hv.partition import HostError
    from hv.protect import snapshots
    from hv.snapshot import STATE_FILE, SnapshotError, load, restore_state
    directory = args.directory
    found = snapshots(directory)
    if not os.path.exists(os.path.join(directory, STATE_FILE)) and found:
        # A protected partition's directory (hv up's protect): the newest.
        directory = found[-1]
        print(f"hv: restore: {directory}, the newest of {len(found)} snapshots in "
              f"{args.directory}", file=sys.stderr)
    try:
        state = load(directory)
    except SnapshotError as e:
        return error(str(e))
    try:
        part = restore_state(state, args.engine)
    except (SnapshotError, HostError, ValueError) as e:
        return error(str(e))
    finally:
        state.close()
    return run_restored(part)


def cmd_receive(args):
    from hv.migrate import MigrationError, accepted, listen, receive
    from hv.partition import HostError
    try:
        srv = listen(args.address)
    except (MigrationError, ValueError, OSError) as e:
        return error(str(e))
    try:
        print(f"hv: receive: listening on {args.address}", file=sys.stderr, flush=True)
        part, conn = receive(srv, args.engine)
    except (MigrationError, HostError) as e:
        return error(str(e))
    except KeyboardInterrupt as e:
        return interrupted(e)
    finally:
        srv.close()
        if args.address.startswith("unix:"):
            try:
                os.unlink(args.address[5:])
            except OSError:
                pass
    return run_restored(part, lambda: accepted(conn))


def run_restored(part, started=None):
    """Run a restored or received partition to its end: hv run's statuses."""
    from hv.partition import CRASHED
    try:
        part.start()
        if started is not None:
            started()
        end = part.wait()
        if end == CRASHED:
            print(part.crash_report, file=sys.stderr)
            return EXIT_CRASHED
        return part.exit_code if part.exit_code is not None else EXIT_USAGE
    except KeyboardInterrupt as e:
        return interrupted(e)
    finally:
        part.destroy()
