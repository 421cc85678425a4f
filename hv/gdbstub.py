"""`hv run --gdb PORT` (or unix:PATH): a GDB remote serial protocol stub in
the parent partition, so `gdb kernel.elf -ex 'target remote :PORT'` debugs a
guest on either engine: registers (an x86-64 target description with the
control registers), memory through the guest's page tables, software and
hardware breakpoints, watchpoints, single steps, continue and Ctrl-C.

T:725 Two threads meet here.  The stub's own thread talks to GDB.  The
vCPU's thread, when the guest stops (a breakpoint, a step, a watchpoint,
a pause GDB asked for), is held in stopped(): it runs what the stub asks
of the vCPU -- read registers, copy memory, insert a breakpoint -- one
request at a time, on the thread that owns the vCPU (KVM's rule), and
returns into the run loop when GDB says continue or step.

    part = Partition("guests/build/hello.elf", engine="tcg")
    stub = GdbStub(part, "1234", wait=True)      # stop at the first instruction
    part.run()                                   # gdb: target remote :1234

Protocol: the GDB manual's "Remote Protocol" appendix (packets, stop
replies, qXfer:features target descriptions).  One vCPU is thread 1.
"""
import os
import queue
import select
import socket
import threading

from hv.abi import ffi, lib

PACKET_SIZE = 0x4000
SIGINT, SIGTRAP, SIGSEGV = 2, 5, 11
INT3 = b"\xcc"

# The 'g' packet's layout, in target.xml's order: (name, bytes, bits, type, source).
# Sources: "r" struct hv_regs, "s" struct hv_sregs, None (not modelled: reads 0).
GENERAL = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + [f"r{i}" for i in range(8, 16)]
REGISTERS = (
    [(n, 8, "int64" if n not in ("rbp", "rsp") else "data_ptr", "r") for n in GENERAL]
    + [("rip", 8, "code_ptr", "r"), ("eflags", 4, "int32", "r")]
    + [(n, 4, "int32", "s" if n in ("cs", "ss") else None) for n in ("cs", "ss", "ds", "es", "fs", "gs")]
    + [(f"st{i}", 10, "i387_ext", None) for i in range(8)]
    + [(n, 4, "int", None) for n in ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")]
    + [(f"xmm{i}", 16, "uint128", None) for i in range(16)]
    + [("mxcsr", 4, "int", None)]
    + [(n, 8, "int64", "s") for n in ("cr0", "cr2", "cr3", "cr4", "efer")]
)
FEATURES = (("org.gnu.gdb.i386.core", 0, 40), ("org.gnu.gdb.i386.sse", 40, 57),
            ("org.hv.x86.sys", 57, len(REGISTERS)))
SOURCE_NAME = {"eflags": "rflags"}


def target_xml():
    """The target description GDB reads with qXfer:features:read."""
    parts = ['<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">',
             "<target><architecture>i386:x86-64</architecture>"]
    for name, lo, hi in FEATURES:
        parts.append(f'<feature name="{name}">')
        for reg, size, kind, _ in REGISTERS[lo:hi]:
            group = ' group="float"' if reg.startswith("st") else (
                ' group="vector"' if reg.startswith("xmm") else "")
            parts.append(f'<reg name="{reg}" bitsize="{size * 8}" type="{kind}"{group}/>')
        parts.append("</feature>")
    parts.append("</target>")
    return "".join(parts)


def checksum(data):
    return sum(data) & 0xff


def frame(payload):
    """$payload#cs, with the protocol's escapes ($ # } * as } x^0x20)."""
    out = bytearray()
    for b in payload:
        if b in b"$#}*":
            out += bytes([0x7d, b ^ 0x20])
        else:
            out.append(b)
    return b"$" + bytes(out) + b"#%02x" % checksum(out)


def parse_listen(where):
    """'1234', 'host:1234' (port 0: any free one) or 'unix:PATH' -> (family, address)."""
    if where.startswith("unix:"):
        return socket.AF_UNIX, where[5:]
    host, _, port = where.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"bad --gdb address {where!r} (want PORT, HOST:PORT or unix:PATH)")
    return socket.AF_INET, (host or "127.0.0.1", int(port))


class _Resume:
    def __init__(self, step):
        self.step = step


class GdbStub:
    """A GDB server for one partition (its vCPU 0).  The listening socket is
    opened here (a bad address fails before the guest boots); GDB may
    attach at any time, and wait=True holds the guest at its first
    instruction until it does and says continue."""

    def __init__(self, partition, where, wait=False):
        family, address = parse_listen(where)
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        elif os.path.exists(address):
            os.unlink(address)
        self.listener.bind(address)
        self.listener.listen(1)
        self.address = self.listener.getsockname()
        self.part = partition
        self.wait = wait
        self._vcpu = None
        self._requests = queue.Queue()      # stub -> vCPU thread: callables, _Resume
        self._replies = queue.Queue()
        self._stops = queue.Queue()         # vCPU thread -> stub: stop replies
        self._pause_wanted = threading.Event()
        self._stale_pause = False
        self._gone = threading.Event()      # GDB has disconnected
        self.breakpoints = {}               # address -> the byte the INT3 replaced
        self.slots = [None] * lib.HV_DEBUG_SLOTS    # (address, kind word, Z type)
        self.last_stop = "S05"
        # A software KVM (kvm_pvm) takes the debug registers but never fires
        # them: there, watchpoints are the stub's own -- it single-steps the
        # guest and compares the watched bytes after each instruction.
        from hv.partition import _kvm_is_software
        self.soft_watch = partition.engine == "kvm" and _kvm_is_software() is not None
        self.watches = {}                   # soft watchpoints: address -> (length, Z type, bytes)
        self._user_step = False
        self.conn = None
        self.ack = True
        partition.debugger = self
        self.thread = threading.Thread(target=self._serve, name="gdbstub", daemon=True)
        self.thread.start()

    def finish(self, timeout=5):
        """After the guest ended: let an attached GDB hear it (W/X), then close."""
        self.thread.join(timeout if self.conn is not None else 0)
        if self.conn is None:
            self.listener.close()

    # -- on the vCPU's thread ----------------------------------------------------
    def vcpu_ready(self, vcpu):
        """The vCPU exists, at its first instruction."""
        self._vcpu = vcpu
        if self.wait:
            self._hold(f"T{SIGTRAP:02x}thread:1;")
        elif self._pause_wanted.is_set():      # GDB attached before the vCPU existed
            self._hold(f"T{SIGINT:02x}thread:1;")

    def claim_pause(self):
        """Was this pause GDB's?  True: it is a stop (attach, Ctrl-C) or a
        late one for a stop that came another way (then paused() ignores
        it); False: someone else's (Partition.pause)."""
        return self._pause_wanted.is_set() or self._stale_pause

    def paused(self):
        if self._pause_wanted.is_set():
            self._hold(f"T{SIGINT:02x}thread:1;")
        self._stale_pause = False           # a request that lost the race: run on

    def stopped(self, exit_):
        """A HV_EXIT_DEBUG exit: tell GDB why, then serve it until it resumes."""
        reason, where = exit_.reason, exit_.code
        if reason == lib.HV_DEBUG_STOP_STEP and self.watches:
            hit = self._soft_watch_hit()
            if hit is not None:
                word = {2: "watch", 4: "awatch"}[self.watches[hit][1]]
                self._hold(f"T{SIGTRAP:02x}{word}:{hit:x};thread:1;")
                return
            r = ffi.new("struct hv_regs *")
            lib.hv_vcpu_get_regs(self._vcpu, r)
            if r.rip in self.breakpoints:
                self._hold(f"T{SIGTRAP:02x}swbreak:;thread:1;")
            elif self._user_step:
                self._hold(f"T{SIGTRAP:02x}thread:1;")
            return                          # nothing to report: the step goes on
        if reason == lib.HV_DEBUG_STOP_WATCH:
            kind = next((z for slot in self.slots if slot and slot[0] == where
                         for z in [slot[2]]), 2)
            word = {2: "watch", 3: "rwatch", 4: "awatch"}[kind]
            self._hold(f"T{SIGTRAP:02x}{word}:{where:x};thread:1;")
        elif reason == lib.HV_DEBUG_STOP_BREAKPOINT:
            self._hold(f"T{SIGTRAP:02x}swbreak:;thread:1;")
        elif reason == lib.HV_DEBUG_STOP_HW_BREAK:
            self._hold(f"T{SIGTRAP:02x}hwbreak:;thread:1;")
        else:
            self._hold(f"T{SIGTRAP:02x}thread:1;")

    def _hold(self, stop_reply):
        if self._gone.is_set():             # a stop after GDB left (a stale INT3, a pause)
            self._let_go()
            return
        if self._pause_wanted.is_set():     # GDB wanted a stop: this is it
            self._pause_wanted.clear()
            self._stale_pause = True        # the core may still return PAUSED once
        self._stops.put(stop_reply)
        while True:
            try:
                request = self._requests.get(timeout=0.1)
            except queue.Empty:
                # GDB went away, or the partition is being destroyed (hv's
                # own Ctrl-C): let the guest go rather than hold it for ever.
                if self._gone.is_set() or self.part._stop:
                    self._let_go()
                    return
                continue
            if isinstance(request, _Resume):
                self._apply_debug(request.step)
                return
            try:
                self._replies.put(request())
            except Exception as e:              # noqa: BLE001 - the stub replies E..
                self._replies.put(e)

    def _let_go(self):
        """On the vCPU's thread, with no debugger left: the guest's own code
        back in place, nothing to stop it."""
        for address in list(self.breakpoints):
            self._remove_breakpoint(address)
        self.slots = [None] * lib.HV_DEBUG_SLOTS
        self.watches.clear()
        self._apply_debug(False)

    def _soft_watch_hit(self):
        for address, (length, kind, before) in self.watches.items():
            now = self._read_memory(address, length)
            if now != before:
                self.watches[address] = (length, kind, now)
                return address
        return None

    def _apply_debug(self, step):
        self._user_step = step
        step = step or bool(self.watches)
        flags = (lib.HV_DEBUG_SW_BP if self.breakpoints else 0) | (lib.HV_DEBUG_STEP if step else 0)
        addr = ffi.new("uint64_t[]", [s[0] if s else 0 for s in self.slots])
        kind = ffi.new("uint32_t[]", [s[1] if s else 0 for s in self.slots])
        err = lib.hv_vcpu_set_debug(self._vcpu, flags, addr, kind)
        if err:
            raise OSError(-err, f"cannot set debug state: {os.strerror(-err)}")

    # -- vCPU access, from the stub's thread (run on the vCPU's) -----------------
    def _on_vcpu(self, fn):
        self._requests.put(fn)
        result = self._replies.get()
        if isinstance(result, Exception):
            raise result
        return result

    def _read_registers(self):
        r, s = ffi.new("struct hv_regs *"), ffi.new("struct hv_sregs *")
        lib.hv_vcpu_get_regs(self._vcpu, r)
        lib.hv_vcpu_get_sregs(self._vcpu, s)
        out = bytearray()
        for name, size, _, source in REGISTERS:
            value = getattr({"r": r, "s": s}[source], SOURCE_NAME.get(name, name)) if source else 0
            out += (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        return bytes(out)

    def _write_register(self, index, value):
        name, size, _, source = REGISTERS[index]
        if source == "r":
            r = ffi.new("struct hv_regs *")
            lib.hv_vcpu_get_regs(self._vcpu, r)
            setattr(r, SOURCE_NAME.get(name, name), value)
            lib.hv_vcpu_set_regs(self._vcpu, r)
        elif source == "s" and name.startswith("cr") or name == "efer":
            s = ffi.new("struct hv_sregs *")
            lib.hv_vcpu_get_sregs(self._vcpu, s)
            setattr(s, name, value)
            lib.hv_vcpu_set_sregs(self._vcpu, s)
        # The rest (segments, FPU, SSE) are not hv's to change: ignored.

    def _read_memory(self, address, length):
        buf = ffi.new("uint8_t[]", length)
        if lib.hv_copy_from_guest(self._vcpu, buf, address, length):
            raise OSError(14, "unreadable")
        data = bytearray(ffi.buffer(buf, length))
        for at, byte in self.breakpoints.items():       # GDB sees the code, not our INT3s
            if address <= at < address + length:
                data[at - address] = byte[0]
        return bytes(data)

    def _write_memory(self, address, data):
        data = bytearray(data)
        for at in self.breakpoints:                     # keep our INT3 in place
            if address <= at < address + len(data):
                self.breakpoints[at] = bytes([data[at - address]])
                data[at - address] = INT3[0]
        if lib.hv_copy_to_guest(self._vcpu, address, bytes(data), len(data)):
            raise OSError(14, "unwritable")

    def _insert_breakpoint(self, address):
        if address in self.breakpoints:
            return
        orig = ffi.new("uint8_t[1]")
        if lib.hv_copy_from_guest(self._vcpu, orig, address, 1) or \
                lib.hv_copy_to_guest(self._vcpu, address, INT3, 1):
            raise OSError(14, "cannot patch")
        self.breakpoints[address] = bytes(orig)

    def _remove_breakpoint(self, address):
        byte = self.breakpoints.pop(address, None)
        if byte is not None:
            lib.hv_copy_to_guest(self._vcpu, address, byte, 1)

    # -- the stub's thread ----------------------------------------------------------
    def _serve(self):
        try:
            self.conn, _ = self.listener.accept()
        except OSError:
            return
        if self.listener.family == socket.AF_INET:
            self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.listener.close()
        self._buf = b""
        try:
            # GDB expects a stopped target: stop it (unless it already waits);
            # its '?' asks why it stopped.
            if not self._wait_for_stop(interrupt=not self.wait, report=False):
                return
            while True:
                packet = self._read_packet()
                if packet is None:
                    break
                if packet == b"\x03":
                    continue                         # already stopped
                reply = self._dispatch(packet.decode("latin-1"))
                if reply is _NOREPLY:
                    continue
                if reply is None:                    # resumed: the next stop is the reply
                    if not self._wait_for_stop():
                        return
                    continue
                self._send(reply)
                if packet in (b"k", b"D"):
                    break
        except (OSError, ConnectionError):
            pass
        finally:
            self._gone.set()                # a held vCPU lets itself go (_hold)
            self.conn.close()

    def _wait_for_stop(self, interrupt=False, report=True):
        """Until the vCPU stops (send its stop reply, True) or the guest ends
        (send W/X, False).  A Ctrl-C from GDB (0x03) pauses the guest."""
        if interrupt:
            self._interrupt()
        while True:
            try:
                self.last_stop = self._stops.get(timeout=0.02)
                if report:
                    self._send(self.last_stop)
                return True
            except queue.Empty:
                pass
            state = self.part.state
            if state in ("shutdown", "crashed", "destroyed") and self._stops.empty():
                code = self.part.exit_code or 0
                self._send(f"W{code & 0xff:02x}" if state == "shutdown" else f"X{SIGSEGV:02x}")
                return False
            if select.select([self.conn], [], [], 0)[0]:
                data = self.conn.recv(4096)
                if not data:
                    return False
                if b"\x03" in data:
                    self._interrupt()
                self._buf += data.replace(b"\x03", b"")
            elif self._pause_wanted.is_set() and self._vcpu is not None:
                lib.hv_vcpu_request_pause(self._vcpu)   # again: a kick can land before entry

    def _interrupt(self):
        self._pause_wanted.set()
        if self._vcpu is not None:
            lib.hv_vcpu_request_pause(self._vcpu)

    def _read_packet(self):
        """The next packet's payload (acknowledged), b'\\x03' for a break, None at EOF."""
        while True:
            self._buf = self._buf.lstrip(b"+-")     # acknowledgements of our replies
            start = self._buf.find(b"$")
            if self._buf[:1] == b"\x03":
                self._buf = self._buf[1:]
                return b"\x03"
            end = self._buf.find(b"#", start) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self._buf) >= end + 3:
                payload, self._buf = self._buf[start + 1:end], self._buf[end + 3:]
                if self.ack:
                    self.conn.sendall(b"+")
                return payload
            data = self.conn.recv(4096)
            if not data:
                return None
            self._buf += data

    def _send(self, reply):
        self.conn.sendall(frame(reply.encode("latin-1") if isinstance(reply, str) else reply))
        if self.ack:
            ack = self.conn.recv(1)
            if ack != b"+":
                self._buf += ack

    # -- packets --------------------------------------------------------------------
    def _dispatch(self, p):
        """The reply to one packet, or None if the guest was resumed."""
        try:
            if p.startswith("qSupported"):
                return (f"PacketSize={PACKET_SIZE:x};qXfer:features:read+;swbreak+;hwbreak+;"
                        "QStartNoAckMode+;vContSupported+")
            if p == "QStartNoAckMode":
                self._send("OK")                    # still acknowledged, then no more
                self.ack = False
                return _NOREPLY
            if p.startswith("qXfer:features:read:target.xml:"):
                offset, length = (int(x, 16) for x in p.rsplit(":", 1)[1].split(","))
                xml = target_xml()
                chunk = xml[offset:offset + length]
                return ("l" if offset + length >= len(xml) else "m") + chunk
            if p == "?":
                return self.last_stop
            if p in ("qAttached",):
                return "1"
            if p == "qC":
                return "QC1"
            if p == "qfThreadInfo":
                return "m1"
            if p == "qsThreadInfo":
                return "l"
            if p.startswith("H") or p.startswith("T"):
                return "OK"
            if p == "vCont?":
                return "vCont;c;C;s;S"
            if p == "g":
                return self._on_vcpu(self._read_registers).hex()
            if p.startswith("G"):
                data = bytes.fromhex(p[1:])
                at = 0
                for i, (_name, size, _, _src) in enumerate(REGISTERS[:18]):
                    value = int.from_bytes(data[at:at + size], "little")
                    self._on_vcpu(lambda i=i, v=value: self._write_register(i, v))
                    at += size
                return "OK"
            if p.startswith("p"):
                index = int(p[1:], 16)
                if index >= len(REGISTERS):
                    return "E45"
                regs = self._on_vcpu(self._read_registers)
                at = sum(size for _, size, _, _ in REGISTERS[:index])
                return regs[at:at + REGISTERS[index][1]].hex()
            if p.startswith("P"):
                index, value = p[1:].split("=")
                index = int(index, 16)
                if index >= len(REGISTERS):
                    return "E45"
                self._on_vcpu(lambda: self._write_register(
                    index, int.from_bytes(bytes.fromhex(value), "little")))
                return "OK"
            if p.startswith("m"):
                address, length = (int(x, 16) for x in p[1:].split(","))
                return self._on_vcpu(lambda: self._read_memory(address, min(length, PACKET_SIZE // 2))).hex()
            if p.startswith("M"):
                where, data = p[1:].split(":")
                address, _length = (int(x, 16) for x in where.split(","))
                self._on_vcpu(lambda: self._write_memory(address, bytes.fromhex(data)))
                return "OK"
            if p.startswith("Z") or p.startswith("z"):
                return self._breakpoint(p)
            if p in ("c", "s") or p.startswith(("c", "s", "C", "S")) and len(p) > 1 and ";" not in p:
                return self._resume(p[0] in "sS")
            if p.startswith("vCont;"):
                action = p[6:].split(";")[0].split(":")[0]
                return self._resume(action[0] in "sS")
            if p in ("k", "D"):
                self._detach(kill=p == "k")
                return "OK"
            return ""                               # not supported
        except (OSError, ValueError, IndexError):
            return "E14"

    def _resume(self, step):
        self._requests.put(_Resume(step))
        return None

    def _breakpoint(self, p):
        insert = p[0] == "Z"
        kind, address, length = p[1:].split(",")[:3]
        kind, address, length = int(kind), int(address, 16), int(length.split(";")[0], 16)
        if kind == 0:
            self._on_vcpu(lambda: (self._insert_breakpoint if insert else self._remove_breakpoint)(address))
            return "OK"
        if kind == 3 or kind == 1 and self.soft_watch:
            return ""                               # not offered: GDB says so, or falls back
        if self.soft_watch:
            if insert:
                self.watches[address] = (length, kind,
                                         self._on_vcpu(lambda: self._read_memory(address, length)))
            else:
                self.watches.pop(address, None)
            return "OK"
        hw = {1: lib.HV_DEBUG_HW_EXEC, 2: lib.HV_DEBUG_HW_WRITE, 4: lib.HV_DEBUG_HW_ACCESS}[kind]
        word = hw | (min(length, 8) << 8 if kind != 1 else 1 << 8)
        if insert:
            if None not in self.slots:
                return "E28"                        # no slot left: GDB falls back
            self.slots[self.slots.index(None)] = (address, word, kind)
        else:
            self.slots = [None if s and s[0] == address and s[2] == kind else s for s in self.slots]
        return "OK"

    def _detach(self, kill):
        for address in list(self.breakpoints):
            self._on_vcpu(lambda a=address: self._remove_breakpoint(a))
        self.slots = [None] * lib.HV_DEBUG_SLOTS
        self.watches.clear()
        self._requests.put(_Resume(False))
        if kill:
            threading.Thread(target=self.part.destroy, daemon=True).start()


_NOREPLY = object()
