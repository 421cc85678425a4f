"""A virtual Ethernet switch in the parent partition.

T:690 Ports are guests' NICs (and, later, a TAP uplink).  The switch learns
which MAC lives behind which port from each frame's source address, sends a
frame to the one port that owns its destination, and floods broadcasts,
multicasts and unknown destinations to every other port.  A frame never
goes back out of the port it came in on.  The table is bounded, so a guest
forging source addresses cannot grow it without limit.
"""
import threading

MAC_TABLE_MAX = 4096
ETH_MIN, ETH_MAX = 14, 1514 + 4          # header .. max frame (with a VLAN tag)


class Switch:
    def __init__(self, name="switch0"):
        self.name = name
        self.ports = []
        self.macs = {}                   # mac bytes -> port
        self.forwarded = self.flooded = self.dropped = 0
        self._lock = threading.Lock()

    def connect(self, port):
        """port has deliver(frame: bytes); returns nothing."""
        with self._lock:
            self.ports.append(port)

    def disconnect(self, port):
        with self._lock:
            self.ports = [p for p in self.ports if p is not port]
            self.macs = {m: p for m, p in self.macs.items() if p is not port}

    def send(self, source, frame):
        """A frame from port `source`: forward it (from the sender's thread)."""
        if not ETH_MIN <= len(frame) <= ETH_MAX:
            self.dropped += 1
            return
        dst, src = frame[0:6], frame[6:12]
        with self._lock:
            if not src[0] & 1:           # a unicast source: learn it
                if src in self.macs or len(self.macs) < MAC_TABLE_MAX:
                    self.macs[src] = source
            target = None if dst[0] & 1 else self.macs.get(dst)
            if target is source:
                self.dropped += 1        # it would go back where it came from
                return
            targets = [target] if target is not None else [p for p in self.ports if p is not source]
            if target is None:
                self.flooded += 1
            else:
                self.forwarded += 1
        for port in targets:
            port.deliver(frame)
