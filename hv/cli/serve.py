"""`hv serve`: a long-lived parent partition driven through its REST API
(hv/api.py, docs/api.md)."""
import os
import signal
import sys
import threading

from hv.cli.common import error


def add_api_socket_option(parser):
    parser.add_argument("--api-socket", metavar="PATH",
                        help="the API's Unix socket (default: $HV_API_SOCKET, else "
                             "api.socket in $XDG_RUNTIME_DIR/hv or /tmp/hv-UID/hv)")


def add_parsers(sub):
    serve = sub.add_parser("serve", help="run partitions on request, through a REST API on a Unix socket")
    add_api_socket_option(serve)
    serve.add_argument("-v", "--verbose", action="store_true", help="log every request on stderr")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args):
    """Serve until SIGINT or SIGTERM; then stop every partition, remove the
    socket and exit 0."""
    from hv.api import APIServer
    from hv.client import default_socket
    from hv.unix_socket import runtime_dir
    from hv.manager import Manager, ManagerError

    path = args.api_socket or default_socket()
    if not args.api_socket and os.path.dirname(path) == runtime_dir():
        os.makedirs(runtime_dir(), mode=0o700, exist_ok=True)
    manager = Manager(console_stream=sys.stdout.buffer)
    try:
        server = APIServer(path, manager, verbose=args.verbose)
    except ManagerError as e:
        return error(str(e))
    except OSError as e:
        return error(f"cannot listen on {path}: {e.strerror}")
    # SIGINT and SIGTERM ask serve_forever() to return (from another
    # thread: shutdown() waits for it), rather than raising an exception at
    # whatever the main thread was doing, which socketserver might catch.
    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()
    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"hv serve: listening on {path}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
        manager.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    print("hv serve: stopped", file=sys.stderr)
    return 0
