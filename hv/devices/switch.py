"""A virtual Ethernet switch in the parent partition.

T:690 Ports are guests' NICs (and, later, a TAP uplink).  The switch learns
which MAC lives behind which port from each frame's source address, sends a
frame to the one port that owns its destination, and floods broadcasts,
multicasts and unknown destinations to every other port.  A frame never
goes back out of the port it came in on.  The table is bounded, so a guest
forging source addresses cannot grow it without limit.
"""
import threading

from hv.abi import lib

MAC_TABLE_MAX = 4096
# A header .. the longest frame (1514 + a VLAN tag): the core's bounds too.
ETH_MIN, ETH_MAX = lib.HV_NET_FRAME_MIN, lib.HV_NET_FRAME_MAX


class Switch:
    def __init__(self, name="switch0"):
        self.name = name
        self.ports = []
        self.macs = {}                   # mac bytes -> port
        self.forwarded = self.flooded = self.dropped = 0
        self.forwarded_by_nics = 0      # of `forwarded`: moved by the sending NIC itself
        self._flows = {}                 # port -> (dst, src, target) of its last unicast frame
        self._lock = threading.Lock()

    def connect(self, port):
        """port has deliver(frames: a list of bytes-like frames); returns nothing."""
        with self._lock:
            self.ports.append(port)

    def disconnect(self, port):
        with self._lock:
            self.ports = [p for p in self.ports if p is not port]
            self.macs = {m: p for m, p in self.macs.items() if p is not port}
            self._flows = {}

    def flow(self, source):
        """(dst, src, target) of the last unicast frame from port `source`,
        while forwarding another like it is still all the switch would do
        (src learned behind `source`, dst behind `target`), else None.  Its
        NIC then moves such frames itself (T:687) and counts them with
        forwarded_by_port()."""
        with self._lock:
            flow = self._flows.get(source)
            if flow is None:
                return None
            dst, src, target = flow
            if self.macs.get(src) is not source or self.macs.get(dst) is not target:
                del self._flows[source]
                return None
            return flow

    def forwarded_by_port(self, n):
        """n frames of a flow() were forwarded by the sending NIC itself."""
        with self._lock:
            self.forwarded += n
            self.forwarded_by_nics += n

    def send(self, source, frame):
        """A frame from port `source`: forward it (from the sender's thread)."""
        self.send_batch(source, [frame])

    def send_batch(self, source, frames):
        """Frames from port `source`, in order: forward each (from the
        sender's thread), handing each port its frames in one deliver()
        call, so a receiver fills its ring and interrupts its guest once."""
        if len(frames) == 1:             # a ping, an ack: no per-port lists to build
            with self._lock:
                ports = self._route(source, frames[0])
            for port in ports:
                port.deliver(frames)
            return
        out = {}                         # port -> its frames, in order
        with self._lock:
            for frame in frames:
                for port in self._route(source, frame):
                    out.setdefault(port, []).append(frame)
        for port, batch in out.items():
            port.deliver(batch)

    def _route(self, source, frame):
        """The ports `frame` goes to (learning its source on the way); under the lock."""
        if not ETH_MIN <= len(frame) <= ETH_MAX:
            self.dropped += 1
            return ()
        dst, src = bytes(frame[0:6]), bytes(frame[6:12])
        if not src[0] & 1:               # a unicast source: learn it
            if src in self.macs or len(self.macs) < MAC_TABLE_MAX:
                self.macs[src] = source
        target = None if dst[0] & 1 else self.macs.get(dst)
        if target is source:
            self.dropped += 1            # it would go back where it came from
            return ()
        if target is None:
            self.flooded += 1
            return [p for p in self.ports if p is not source]
        self.forwarded += 1
        self._flows[source] = (dst, src, target)
        return (target,)
