"""`hv console NAME|PATH`: this terminal on a virtio-console's socket."""
import os
import sys

from hv.cli.common import error


def add_parsers(sub):
    con = sub.add_parser("console", help="attach to a virtio-console's Unix socket")
    con.add_argument("socket", metavar="NAME|PATH",
                     help="a console name (--vconsole unix:NAME, `socket = \"NAME\"`) or a socket path")
    con.set_defaults(func=cmd_console)


def cmd_console(args):
    """Relay a virtio-console socket to this terminal until it closes."""
    import selectors
    import socket

    from hv.devices.vconsole import console_socket_path

    path = console_socket_path(args.socket)
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
    except OSError as e:
        return error(f"cannot attach to console {args.socket} ({path}): {e.strerror}")
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ)
    stdin_open = True
    try:
        sel.register(sys.stdin, selectors.EVENT_READ)
    except (ValueError, PermissionError, OSError):
        stdin_open = False
    while True:
        for key, _ in sel.select():
            if key.fileobj is conn:
                data = conn.recv(4096)
                if not data:
                    return 0
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            elif stdin_open:
                data = os.read(sys.stdin.fileno(), 4096)
                if not data:
                    sel.unregister(sys.stdin)
                    stdin_open = False
                else:
                    conn.sendall(data)
