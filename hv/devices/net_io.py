"""The virtio-net frame path (virtio 1.2, 5.1.6): every transmitted frame off
a ring in one pass, every waiting frame into receive buffers in one pass.

T:686 Transmit: each chain is a 12-byte virtio_net_hdr and a frame, all
device-readable.  The chain is copied once (pop(): the guest cannot change a
frame after the switch looked at its addresses, XSA-155); the frame is a
view of that copy past the header, not a second copy.  Receive: the header
and the frame are written into the guest's buffers one after the other,
not joined first.  One pass serves a whole batch, and the caller interrupts
the guest once for it.

Compiled by Cython as hv.devices._net_io_compiled (hv/devices/datapath.py);
the same file is the pure-Python path.
"""
try:
    import cython
except ImportError:                 # the pure path where Cython is not installed
    from hv.devices import cython_shim as cython

import struct

NET_HDR = struct.Struct("<BBHHHHH")      # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers
NET_HDR_SIZE = 12
# What hv writes before each received frame: no offloads, one buffer (5.1.6.4).
RX_HEADER = NET_HDR.pack(0, 0, 0, 0, 0, 0, 1)


def transmit(queue, frames=None):
    """Pop and complete every chain on the transmit queue: the frames, in
    order, appended to `frames` if given -- so that when pop() raises for a
    broken chain, the frames taken before it are still the caller's to send."""
    if frames is None:
        frames = []
    while (chain := queue.pop()) is not None:
        queue.push(chain, 0)
        frames.append(memoryview(chain.readable)[NET_HDR_SIZE:])
    return frames


@cython.locals(delivered=cython.longlong, dropped=cython.longlong, n=cython.Py_ssize_t)
def receive(queue, backlog):
    """Fill receive buffers from `backlog` (a deque of frames) while both
    last: (frames delivered, frames dropped, frame bytes delivered).  A
    buffer too small for its frame drops that frame and is given back empty."""
    delivered = dropped = 0
    nbytes: cython.longlong = 0
    while backlog and (chain := queue.pop()) is not None:
        frame = backlog.popleft()
        n = len(frame)
        if chain.writable_len < NET_HDR_SIZE + n:
            dropped += 1
            queue.push(chain, 0)
            continue
        queue.write(chain, RX_HEADER)
        queue.write(chain, frame, NET_HDR_SIZE)
        queue.push(chain, NET_HDR_SIZE + n)
        delivered += 1
        nbytes += n
    return delivered, dropped, nbytes
