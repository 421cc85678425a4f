"""`hv console NAME|PATH`: this terminal on a virtio-console's socket.

On a terminal the relay is raw, as telnet's or QEMU's: every key, Ctrl-C
included, goes to the guest, and the escape key Ctrl-] detaches (the
terminal is restored however hv ends).  With stdin not a terminal (a pipe,
a file) bytes are relayed as they come and Ctrl-C ends hv quietly.
"""
import os
import sys
import time

from hv.cli.common import error, interrupted

ESCAPE = b"\x1d"                # Ctrl-], telnet's escape character


def add_parsers(sub):
    con = sub.add_parser("console", help="attach to a virtio-console's Unix socket "
                                         "(Ctrl-] detaches)")
    con.add_argument("socket", metavar="NAME|PATH",
                     help="a console name (--vconsole unix:NAME, `socket = \"NAME\"`) or a socket path")
    con.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                     help="wait up to SECONDS for the console to appear (e.g. right after "
                          "starting hv run in the background)")
    con.set_defaults(func=cmd_console)


def connect(path, wait):
    """A socket connected to path, retried for `wait` seconds while nothing listens there."""
    import socket
    deadline = time.monotonic() + wait
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            return conn
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
        except OSError:
            conn.close()
            raise


class RawTerminal:
    """stdin in raw mode while in use, if it is a terminal; restored on exit.
    Output processing stays on, so the guest's "\\n" still starts a line."""

    def __init__(self, fd):
        self.fd, self.saved = fd, None

    def __enter__(self):
        import termios
        import tty
        if os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd)
            attrs = termios.tcgetattr(self.fd)
            attrs[1] |= termios.OPOST | termios.ONLCR
            termios.tcsetattr(self.fd, termios.TCSADRAIN, attrs)
        return self

    def __exit__(self, *exc):
        import termios
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def cmd_console(args):
    """Relay a virtio-console socket to this terminal until it closes."""
    from hv.devices.vconsole import console_socket_path

    path = console_socket_path(args.socket, create=False)
    try:
        conn = connect(path, args.wait)
    except OSError as e:
        return error(f"cannot attach to console {args.socket} ({path}): {e.strerror}")
    stdin = sys.stdin.fileno() if sys.stdin is not None else -1
    try:
        with RawTerminal(stdin) as term:
            if term.saved is not None:
                print(f"hv: attached to console {args.socket} (Ctrl-] detaches)\r",
                      file=sys.stderr)
            status = relay(conn, stdin, raw=term.saved is not None)
    except KeyboardInterrupt as e:          # SIGINT (not raw) or SIGTERM
        return interrupted(e)
    finally:
        conn.close()
    if status == "detached":
        print(f"hv: detached from console {args.socket}", file=sys.stderr)
    return 0


def relay(conn, stdin, raw):
    """Copy both ways until the console closes ("closed") or the escape key
    is typed on a raw terminal ("detached")."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ)
    try:
        sel.register(stdin, selectors.EVENT_READ)
    except (ValueError, PermissionError, OSError):
        pass                                # /dev/null, a regular file, closed: output only
    out = sys.stdout.buffer
    while True:
        for key, _ in sel.select():
            if key.fileobj is conn:
                try:
                    data = conn.recv(4096)
                except ConnectionResetError:    # the console closed before taking us
                    data = b""
                if not data:
                    return "closed"
                out.write(data)
                out.flush()
                continue
            data = os.read(stdin, 4096)
            if not data:
                sel.unregister(stdin)       # end of input: keep showing output
            elif raw and ESCAPE in data:
                conn.sendall(data[:data.index(ESCAPE)])
                return "detached"
            else:
                conn.sendall(data)
