"""Claiming a path for a listening Unix socket without harming what is there.

The API socket and the named consoles both listen on paths a user chose.
What a killed hv leaves behind (a socket of this user's that nobody listens
on) may be removed; anything else at the path -- a regular file, a
directory, another user's socket, a live listener -- is refused with one
line, never deleted.
"""
import os
import socket
import stat


def runtime_dir():
    """hv's directory for sockets: $XDG_RUNTIME_DIR/hv, or /tmp/hv-UID/hv.
    The API socket and the named consoles live here, side by side."""
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/hv-{os.getuid()}"
    return os.path.join(base, "hv")


def claim_socket_path(path, what, busy, error):
    """Make `path` free for a new listening socket, or raise error(message).
    what names the socket ("console socket"); busy says who listens."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise error(f"{what} {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise error(f"{what} {path}: something else is there (not a socket); "
                    "refusing to replace it")
    if st.st_uid != os.getuid():
        raise error(f"{what} {path}: a socket of another user is there")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)                 # stale: its listener is gone
        return
    except OSError as e:
        raise error(f"{what} {path}: {e.strerror}") from None
    finally:
        probe.close()
    raise error(f"{what} {path} {busy}")


def socket_identity(path):
    """Which file a socket we just bound is: (device, inode)."""
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def remove_if_ours(path, identity):
    """Remove the socket at `path` if it is still the one we bound (another
    hv may have claimed the path since)."""
    try:
        if socket_identity(path) == identity:
            os.unlink(path)
    except OSError:
        pass                            # already gone
