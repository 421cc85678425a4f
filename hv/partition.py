"""A partition as the parent partition sees it: lifecycle and the slow path.

T:600 Partition is the Python face of one guest.  Construction loads and
validates the kernel *before* anything is created (a bad image starts
nothing), then creates the C partition, copies the image into guest RAM and
reserves hv's boot area.  The vCPU runs in run(): a loop around the C run
call, which returns only for exits the parent must see.  EXIT_HANDLERS maps
each exit kind to a method, and PARENT_HYPERCALLS maps the hypercalls the
parent serves (console output) to theirs.
"""
import os
import queue
import threading
import time

from hv.abi import ffi, lib
from hv.console import Console
from hv.latch import Latch
from hv.loader import CmdlineTooLong, LoadError, load_pvh, with_cmdline
from hv.log import log

# Engines that run guests (the core's "none" engine runs nothing; tests use it).
ENGINES = {"kvm": lib.HV_ENGINE_KVM, "tcg": lib.HV_ENGINE_TCG}

# virtio device ids (virtio 1.2, section 5) as metrics and configs name them.
DEVICE_TYPES = {1: "net", 2: "blk", 3: "console", 4: "rng"}

# What the scheduler counts per vCPU (struct hv_sched_info), as metrics() names it.
SCHED_COUNTERS = ("run_ns", "dispatches", "blocks", "parent_waits", "migrations")
WAIT_SLICE = 0.2                # seconds: see Partition.wait()

# Partition states, in lifecycle order.
CREATED, RUNNING, PAUSED, SHUTDOWN, CRASHED, DESTROYED = (
    "created", "running", "paused", "shutdown", "crashed", "destroyed")

CRASH_CAUSES = {
    lib.HV_CRASH_TRIPLE_FAULT: "triple fault",
    lib.HV_CRASH_HALTED: "halted with interrupts disabled (hang)",
    lib.HV_CRASH_ENGINE: "the engine could not continue",
}


class HostError(Exception):
    """The host cannot run partitions (engine missing, no permission, ...)."""


class StateError(Exception):
    """An operation that the partition's current state does not allow."""


def parse_size(text):
    """'64M' -> 67108864.  Suffixes K, M, G (powers of 1024); plain bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = str(text).strip().upper().removesuffix("B") or "?"
    scale = units.get(s[-1], 1)
    digits = s[:-1] if s[-1] in units else s
    if not digits.isdigit():
        raise ValueError(f"memory size {text!r} is not a number with an optional K/M/G suffix")
    return int(digits) * scale


def engine_status(engine):
    """(usable, reason) for an engine name."""
    if engine not in ENGINES:
        return False, f"unknown engine {engine!r} (choose from auto, {', '.join(sorted(ENGINES))})"
    why = ffi.new("char[256]")
    err = lib.hv_engine_probe(ENGINES[engine], why, 256)
    return err == 0, ffi.string(why).decode()


def _kvm_is_software():
    """Why /dev/kvm is not hardware-accelerated, or None if it is.

    kvm_pvm (the PVM software backend) serves /dev/kvm without VMX/SVM: ring-0
    guest code is emulated at ~1-2 M instructions/s, far below TCG's ~1 G."""
    if os.path.exists("/sys/module/kvm_pvm"):
        return "/dev/kvm is kvm_pvm, a software KVM (ring-0 guest code is emulated)"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split()
                    if "vmx" not in flags and "svm" not in flags:
                        return "the CPU has no VMX/SVM: /dev/kvm cannot be hardware-accelerated"
                    break
    except OSError:
        pass
    return None


def choose_engine(engine="auto"):
    """(engine name, reason).  'auto' picks KVM when it is hardware-accelerated,
    TCG otherwise; an explicit name is taken as given."""
    if engine != "auto":
        return engine, "chosen explicitly"
    software = _kvm_is_software()       # cheap: no /dev/kvm ioctls
    if software:
        return "tcg", software
    ok, why = engine_status("kvm")
    if not ok:
        return "tcg", f"KVM unavailable: {why}"
    return "kvm", "hardware-accelerated KVM"


class Partition:
    """One guest: kernel image, memory, smp vCPUs (1 by default), a console.

    Lifecycle: created -> running <-> paused -> shutdown | crashed -> destroyed.
    run() runs the vCPU on the calling thread; start() on a thread of its own.
    pause(), resume() and destroy() may be called from any other thread and
    return once the partition is in the new state.
    """

    def __init__(self, kernel, mem="64M", cmdline="", engine="auto", console=None,
                 deterministic=False, trace=None, devices=(), name=None, initrd=None,
                 scheduler=None, weight=0, cap=0, smp=1, restore_from=None):
        mem_size = parse_size(mem) if isinstance(mem, str) else int(mem)
        host_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if mem_size > host_ram:
            raise ValueError(f"memory size {mem_size} is larger than the host's RAM ({host_ram})")
        # Devices take slots in order and are listed on the command line the
        # way QEMU's microvm lists its own.
        self.devices = list(devices)
        if len(self.devices) > lib.HV_VIRTIO_MMIO_SLOTS:
            raise ValueError(f"at most {lib.HV_VIRTIO_MMIO_SLOTS} devices per partition")
        user_cmdline = cmdline
        if self.devices:
            from hv.devices.virtio import VirtioDevice
            entries = [VirtioDevice.cmdline_entry(slot) for slot in range(len(self.devices))]
            cmdline = " ".join(filter(None, [cmdline] + entries))
        self.cmdline = cmdline
        # T:610 Validate first: LoadError leaves nothing behind.  A
        # partition restored from a snapshot (hv/snapshot.py) has no image:
        # its RAM is the snapshot's memory file.
        self._restore = restore_from
        try:
            self.image = None if restore_from else load_pvh(
                kernel, mem_size, cmdline, initrd=initrd, virtio_slots=len(self.devices))
        except CmdlineTooLong as e:
            if not self.devices:
                raise
            added = len(cmdline.encode()) - len(user_cmdline.encode())
            raise LoadError(
                f"cmdline is {e.length} bytes with the {len(self.devices)} device entries hv "
                f"adds ({added} bytes); the boot page has room for {e.room}: "
                f"the command line given may have at most {max(e.room - added, 0)} bytes") from None
        if deterministic and engine == "auto":
            engine = "tcg"          # only TCG counts instructions
        engine, self.engine_reason = choose_engine(engine)
        usable, why = engine_status(engine)
        if not usable:
            raise HostError(f"{engine} engine unavailable: {why}")

        self.engine = engine
        self.deterministic = bool(deterministic)
        self.console = console or Console()
        self.state = CREATED
        self.exit_code = None          # guest's shutdown code
        self.rebooted = False          # it stopped by asking for a reset (ACPI)
        self.crash_report = None       # text, when state == CRASHED
        self.last_counters = {}        # the vCPU's counters when it stopped
        self.console_failed = False    # a console write failed: output was lost
        self.tracer = trace            # hv.trace.Tracer or None
        self.debugger = None           # hv.gdbstub.GdbStub, set before the guest starts
        self._parent_handlers = {}     # hypercall nr -> fn(args) for routed calls
        self._vcpu = None              # vCPU 0 (the boot vCPU)
        self._vcpus = []               # every vCPU, by id, once created
        self._first_vcpus = []         # those that start running: vCPU 0, or a restore's up ones
        self._thread = None
        self._run_thread = None
        self._finished = False
        self._stop = False
        self._resume = threading.Event()
        # _cond guards state, _vcpu, _finished.  The hot path (every exit
        # served in Python) takes its lock directly: a Condition's `with`
        # is Python code, four times the cost of its lock's.
        self._cond_lock = threading.RLock()
        self._cond = threading.Condition(self._cond_lock)
        self._ended = Latch()           # opened when finished or destroyed: wait()
        # T:628 SMP: smp vCPUs, vCPU 0 boots, the guest brings the others up.
        # They run on the scheduler's workers (KVM's in parallel, a TCG
        # partition's interleaved on one worker at a time).
        self.smp = int(smp)
        if not 1 <= self.smp <= lib.HV_VCPUS_MAX:
            raise ValueError(f"smp is 1..{lib.HV_VCPUS_MAX} vCPUs, not {smp}")
        # scheduler: None or True (the default) = the process's shared
        # hv.scheduler.Scheduler (deterministic partitions: its one-worker
        # deterministic twin); a Scheduler; or False: a host thread of its
        # own runs the vCPU (run()'s caller), for hv's internal uses.
        if self.smp > 1 and scheduler is False:
            raise ValueError("an SMP partition runs on the scheduler")
        if scheduler is None or scheduler is True:
            from hv.scheduler import default_scheduler, deterministic_scheduler
            scheduler = deterministic_scheduler() if deterministic else default_scheduler()
        elif scheduler is False:
            scheduler = None
        if scheduler is not None and scheduler.deterministic != bool(deterministic):
            raise ValueError("a deterministic partition needs a deterministic scheduler "
                             "(hv.scheduler.deterministic_scheduler), and only it may use one")
        self._scheduler = scheduler
        self.weight, self.cap = int(weight), int(cap)
        if not 0 <= self.weight <= 65535 or not 0 <= self.cap <= 100:
            raise ValueError("weight is 1..65535 (0: the default 256), cap a percent 0..100")
        if deterministic and self.cap:
            # A cap is a share of host CPU time; a deterministic worker's
            # clock is guest instructions, which do not pass while it idles.
            raise ValueError("a deterministic partition cannot have a cap")
        self._ending = False           # _end() has begun
        self._debug_exits = None       # on the scheduler under GDB: its exits' queue

        if restore_from is None:
            out = ffi.new("struct hv_partition **")
            err = lib.hv_partition_create(ENGINES[engine], mem_size, out)
            self._p = out[0]
        else:
            from hv.snapshot import create_core
            err, self._p = create_core(restore_from, ENGINES[engine])
        if err:
            raise HostError(f"cannot create partition: {os.strerror(-err)}")
        self.id = lib.hv_partition_id(self._p)
        lib.hv_partition_set_vcpus(self._p, self.smp)
        self.name = name or f"p{self.id}"
        self.mem_size = mem_size
        # Guest RAM outlives the partition while Python still holds a view of
        # it: the mapping is freed when the last reference goes.
        hold = lib.hv_partition_hold_ram(self._p)
        self._ram = ffi.gc(lib.hv_partition_ram(self._p),
                           lambda ram, hold=hold: lib.hv_ram_release(hold))
        if deterministic and lib.hv_partition_set_deterministic(self._p):
            self.destroy()
            raise HostError(f"--deterministic needs the tcg engine, not {engine}")
        if trace is not None:
            trace.attach(self, lambda: self._p)
        try:
            if restore_from is None:
                self._write_image()
            else:
                from hv.snapshot import apply_partition
                apply_partition(self, restore_from)
        except Exception:
            self.destroy()
            raise
        self._device_host = None
        try:
            for slot, device in enumerate(self.devices):
                device.attach(self, slot)
            if restore_from is not None and self.devices:
                from hv.snapshot_devices import apply_devices
                apply_devices(self, restore_from)
        except ValueError:
            self.destroy()
            raise

    # -- construction ---------------------------------------------------
    def _write_image(self):
        ram = self.memory()
        for seg in self.image.firmware + self.image.segments + self.image.modules + (self.image.acpi,):
            ram[seg.gpa:seg.gpa + len(seg.data)] = seg.data
            # The rest up to memsz is already zero: fresh anonymous memory.
        for gpa, length in self.image.reserved:
            lib.hv_partition_reserve(self._p, gpa, length)
        blob = self.image.boot_blob
        ram[self.image.boot_gpa:self.image.boot_gpa + len(blob)] = blob

    def append_cmdline(self, words):
        """Add words to the guest's command line before it starts (hv up
        hands channel ends over this way, once both partitions have ids)."""
        with self._cond:
            if self.state != CREATED:
                raise StateError(f"partition {self.id} has started: its command line is fixed")
            cmdline = " ".join(filter(None, [self.cmdline, words]))
            self.image = with_cmdline(self.image, self.mem_size, cmdline)
            self.cmdline = cmdline
            blob = self.image.boot_blob
            self.memory()[self.image.boot_gpa:self.image.boot_gpa + len(blob)] = blob

    def core(self):
        """The C partition (struct hv_partition *), for hv's own modules that
        speak to the core about the partition as a whole: snapshots and
        migration, channels between partitions.  StateError once destroyed.
        Devices go through transport(slot), the tracer through the handle
        it is given."""
        if self._p is None:
            raise StateError(f"partition {self.id} is destroyed")
        return self._p

    def foreign_ranges(self):
        """[(start, end)] of this partition's RAM that hv owns (its boot area)."""
        from hv.devices.guestmem import foreign_ranges
        return foreign_ranges(self.core())

    def transport(self, slot):
        """Device slot `slot`'s door into this partition (hv/devices/transport.py):
        what a virtio backend calls instead of reaching in here."""
        from hv.devices.transport import Transport
        return Transport(self.core(), slot, lambda: self._device_host, self.id)

    def memory(self):
        """Guest RAM as a writable memoryview (zero-copy).  Stays valid, if
        detached from the guest, after destroy()."""
        self.core()
        return memoryview(ffi.buffer(self._ram, self.mem_size))

    def written_map(self):
        """The written map devices mark after writing guest RAM (a byte per
        4 KiB frame, csrc/dirty.c), as a memoryview that holds RAM alive."""
        hold = lib.hv_partition_hold_ram(self.core())
        written = ffi.gc(lib.hv_partition_written_map(self._p),
                         lambda _, hold=hold: lib.hv_ram_release(hold))
        return memoryview(ffi.buffer(written, self.mem_size // 4096))

    def serve(self, nr, handler):
        """Serve hypercall nr in Python: handler(args) -> result (routes it to the parent)."""
        if lib.hv_partition_set_route(self.core(), nr, lib.HV_ROUTE_PARENT):
            raise ValueError(f"no hypercall number {nr}")
        self._parent_handlers[nr] = handler

    # -- lifecycle -----------------------------------------------------
    def _set_state(self, state):
        with self._cond:
            self.state = state
            self._cond.notify_all()

    def run(self):
        """Run the guest until it stops; returns the state.  Without a
        scheduler the vCPU runs on this thread; with one, on its workers,
        and this thread only waits."""
        self._begin()
        if self._scheduler is not None:
            return self.wait()
        try:
            self._vcpu_loop()
        except Exception as e:          # a fault in the parent stops this guest only
            self._crash(f"parent partition error: {type(e).__name__}: {e}")
        finally:
            self._end()
        return self.state

    def start(self):
        """Run the guest in the background: on a thread of its own, or
        (with a scheduler) on the scheduler's workers, adding no thread."""
        if self._scheduler is not None:
            self._begin()
            return
        if self.state != CREATED:
            raise StateError(f"cannot start partition {self.id}: it is {self.state}")
        self._thread = threading.Thread(target=self.run, name=f"partition-{self.id}", daemon=True)
        self._thread.start()

    def _begin(self):
        with self._cond:
            if self.state != CREATED:
                raise StateError(f"cannot run partition {self.id}: it is {self.state}")
            self.state = RUNNING
            if self._scheduler is None:
                self._run_thread = threading.get_ident()
        if self.devices:
            from hv.devices.virtio import DeviceHost
            self._device_host = DeviceHost(self, self.devices)
            self._device_host.start()
        if self._scheduler is None:
            return
        # T:627 Scheduled: the vCPU is handed to the workers and started;
        # its exits arrive at _serve_exit() on the scheduler's threads.
        try:
            vcpu = self._create_vcpu()
            for v in self._vcpus:
                self._scheduler.attach(self, v, self.weight, self.cap)
            if self.debugger is not None:
                self._debug_exits = queue.Queue()
                threading.Thread(target=self._debug_exit_thread, args=(vcpu,),
                                 name=f"partition-{self.id}-gdb", daemon=True).start()
            else:
                for v in self._first_vcpus:     # the others start when the guest says
                    lib.hv_sched_start(v)
        except Exception as e:
            self._crash(f"parent partition error: {type(e).__name__}: {e}")
            self._end()

    def _debug_exit_thread(self, vcpu):
        """Under GDB, on the scheduler: the stub holds the vCPU at its entry
        and at every stop on this thread (as it would the vCPU's own), while
        the vCPU runs on the workers in between."""
        self.debugger.vcpu_ready(vcpu)      # hv/gdbstub.py: may hold it at the entry
        for v in self._first_vcpus:
            lib.hv_sched_start(v)
        while (held := self._debug_exits.get()) is not None:
            self._scheduler.serve(held)

    def _end(self):
        """Take the vCPU down and close what the run opened; once."""
        with self._cond:
            if self._ending:
                self._cond.wait_for(lambda: self._finished)
                return
            self._ending = True
        if self._scheduler is not None and self._vcpu is not None:
            self.last_counters = self.counters()
            lib.hv_partition_pause(self._p)         # every vCPU off its worker, at once
            for v in self._vcpus:
                self._scheduler.detach(v)           # off every worker and server
            if self._debug_exits is not None:
                self._debug_exits.put(None)         # its exit thread ends
        # The trace is complete before wait() returns: a caller that
        # exits right after must not lose its last records.
        if self.tracer is not None:
            self.tracer.finish()
        with self._cond:
            if self._vcpu is not None:      # destroyed on the thread that ran it
                if self._scheduler is None:
                    self.last_counters = self.counters()
                for v in self._vcpus:
                    lib.hv_vcpu_destroy(v)
                self._vcpu = None
                self._vcpus = []
        if self._device_host is not None:
            self._device_host.stop()
            self._device_host = None
        self._drain_uart()
        self.console.flush()
        # Finished only now: wait() returning means the trace and the
        # console hold everything (the caller may exit at once).
        with self._cond:
            self._finished = True
            self._ended.open()
            self._cond.notify_all()

    def wait(self, timeout=None):
        """Wait until the guest stops (shutdown, crash); returns the state.

        The wait is cut in short slices: the kernel may deliver a signal
        meant for the main thread (Ctrl-C, SIGTERM) to any thread, and only
        a main thread that wakes up runs Python's handler.  It waits on a
        Latch, not the condition: an interrupt inside Condition.wait can
        leave its lock released under a `with` (hv/latch.py)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ended.is_open():
            left = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
            if left <= 0:
                break
            self._ended.wait(left)
        return self.state

    @property
    def finished(self):
        """The run has ended (its trace and console complete), whatever the state."""
        return self._finished

    def request_stop(self):
        """End the run at the vCPU's next return to the parent, leaving the
        state as it is (e.g. the trace's reader went away).  Any thread."""
        self._stop = True
        self._resume.set()
        with self._cond:
            if self._vcpu is not None and threading.get_ident() != self._run_thread:
                lib.hv_vcpu_request_pause(self._vcpu)

    def _kick_until(self, done, timeout):
        """Ask the vCPU to stop running guest code until done() holds.  The
        request is repeated: a kick can land just before the engine enters."""
        with self._cond:
            ok = self._cond.wait_for(lambda: done() or self._vcpu is not None or self._finished,
                                     timeout)
            while ok and not done() and not self._finished:
                if self._vcpu is not None:      # None: run() is finishing up
                    lib.hv_vcpu_request_pause(self._vcpu)
                self._cond.wait(0.01)
            return done()

    def pause(self, timeout=10):
        """Stop every vCPU, then the devices: each answers what it took and
        takes nothing more until resume() (a paused partition is quiescent:
        a snapshot of it is whole)."""
        self._pause_vcpus(timeout)
        if self.state == PAUSED:
            for device in self.devices:
                device.freeze()

    def _pause_vcpus(self, timeout):
        with self._cond:
            if self.state != RUNNING:
                raise StateError(f"cannot pause partition {self.id}: it is {self.state}")
            self._resume.clear()
            if self._scheduler is not None:
                # Paused is a scheduler state: the vCPU leaves its worker.
                if not self._cond.wait_for(lambda: self._vcpu is not None or self._finished,
                                           timeout):
                    raise StateError(f"partition {self.id} did not pause within {timeout} s")
                if self._finished or self.state != RUNNING:
                    return
                lib.hv_partition_pause(self._p)         # returns once no vCPU runs
                self.state = PAUSED
                self._cond.notify_all()
                return
        if not self._kick_until(lambda: self.state != RUNNING, timeout):
            raise StateError(f"partition {self.id} did not pause within {timeout} s")

    def resume(self):
        with self._cond:
            if self.state != PAUSED:
                raise StateError(f"cannot resume partition {self.id}: it is {self.state}")
            for device in self.devices:
                device.thaw()
            if self._scheduler is not None:
                self.state = RUNNING
                lib.hv_partition_resume(self._p)
                self._cond.notify_all()
                return
            self._resume.set()
            self._cond.wait_for(lambda: self.state != PAUSED)

    def destroy(self):
        """Stop the guest if it runs and free everything.  Idempotent."""
        with self._cond:
            if self.state == DESTROYED:
                return
            running = self.state in (RUNNING, PAUSED) and not self._finished
            if running and threading.get_ident() == self._run_thread:
                raise StateError(f"partition {self.id} cannot be destroyed from its own vCPU thread")
            self._stop = True
            self._resume.set()
        if running and self._scheduler is not None:
            self._end()                 # takes the vCPU off the scheduler
        elif running:
            self._kick_until(lambda: self._finished, None)
        with self._cond:
            for device in self.devices:
                device.close()
            lib.hv_partition_destroy(self._p)
            self._p = None
            self.state = DESTROYED
            self._ended.open()
            self._cond.notify_all()

    # -- partitions as files (hv/snapshot.py, docs/lifecycle.md) ---------
    def snapshot(self, directory, resume=True, copy_disks=False):
        """Save the running or paused partition into directory; it goes on
        running afterwards unless resume is False (then it stays paused).
        copy_disks: its writable disks too, put back when it is restored."""
        from hv.snapshot import save
        return save(self, directory, resume=resume, copy_disks=copy_disks)

    @classmethod
    def restore(cls, directory, engine=None, **kwargs):
        """A partition (created, not started) from a snapshot directory, on
        the engine that saved it or on `engine`."""
        from hv.snapshot import restore
        return restore(directory, engine=engine, **kwargs)

    def migrate(self, address, downtime=0.3, progress=None, tracking="auto"):
        """Move the running partition to an `hv receive` at address
        (unix:PATH or tcp:127.0.0.1:PORT); destroyed here once it runs
        there.  On failure it runs on here and MigrationError says why.
        tracking: how written pages are found (hv.migrate.DirtyLog)."""
        from hv.migrate import send
        report = send(self, address, downtime=downtime, progress=progress, tracking=tracking)
        self.destroy()
        return report

    def snapshot_vcpus(self):
        """The vCPUs a snapshot saves, in id order (paused)."""
        with self._cond:
            return list(self._vcpus)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    # -- the slow path -------------------------------------------------
    def _serve_exit(self, vcpu):
        """One exit record of a scheduled vCPU (a server thread): handle it,
        then put the vCPU back on a runqueue unless the guest stopped."""
        exit_ = lib.hv_vcpu_exit_record(vcpu)
        if self.tracer is not None:
            self.tracer.drain()
        try:
            EXIT_HANDLERS[exit_.kind](self, exit_)
        except Exception as e:          # a fault in the parent stops this guest only
            self._crash(f"parent partition error: {type(e).__name__}: {e}")
        with self._cond_lock:
            go_on = self.state in (RUNNING, PAUSED) and not self._stop
            if go_on:
                lib.hv_sched_continue(vcpu)
        if not go_on:
            self._scheduler.reap(self)      # _end() on another thread: it waits for this one

    @property
    def scheduled(self):
        """Its vCPU runs on a scheduler's workers (every partition but those
        hv itself asks to run on a thread of their own)."""
        return self._scheduler is not None

    def set_share(self, weight=None, cap=None):
        """Change the scheduler weight and cap of a scheduled partition, live."""
        if self._scheduler is None:
            raise StateError(f"partition {self.id} is not on a scheduler")
        weight = self.weight if weight is None else int(weight)
        cap = self.cap if cap is None else int(cap)
        if self.deterministic and cap:
            raise ValueError("a deterministic partition cannot have a cap")
        with self._cond:
            if self._vcpu is None or lib.hv_sched_set_share(self._vcpu, weight or 256, cap):
                raise ValueError("weight is 1..65535, cap a percent 0..100, on a running partition")
            self.weight, self.cap = weight, cap

    def _create_vcpu(self):
        # T:620 The vCPU is created on the thread that runs it (KVM's rule;
        # on a scheduler, a worker's first run pays the move once).  An SMP
        # partition's vCPUs are all made now; only vCPU 0 gets an entry.
        vcpus = []
        for i in range(self.smp):
            out = ffi.new("struct hv_vcpu **")
            err = lib.hv_vcpu_create(self._p, i, out)
            if err:
                for v in vcpus:
                    lib.hv_vcpu_destroy(v)
                raise HostError(f"cannot create vCPU {i}: {os.strerror(-err)}")
            vcpus.append(out[0])
        with self._cond:
            self._vcpus = vcpus
            self._vcpu = vcpu = vcpus[0]
            self._cond.notify_all()
        if self._restore is not None:
            from hv.snapshot import apply_vcpus
            self._first_vcpus = apply_vcpus(self, vcpus, self._restore)
            self._restore = None        # its structs are no longer needed
            return vcpu
        self._first_vcpus = [vcpu]
        err = lib.hv_vcpu_set_pvh_entry(vcpu, self.image.entry, self.image.start_info_gpa)
        if err:
            raise HostError(f"cannot set the PVH entry state: {os.strerror(-err)}")
        return vcpu

    def _vcpu_loop(self):
        vcpu = self._create_vcpu()
        if self.debugger is not None:
            self.debugger.vcpu_ready(vcpu)      # hv/gdbstub.py: may hold it at the entry
        exit_ = ffi.new("struct hv_exit *")
        handlers = EXIT_HANDLERS
        tracer = self.tracer
        while self.state in (RUNNING, PAUSED) and not self._stop:
            err = lib.hv_vcpu_run(vcpu, exit_)       # GIL released inside
            if tracer is not None:
                tracer.drain()
            if err:
                self._crash(f"run failed: {os.strerror(-err)}")
                break
            handlers[exit_.kind](self, exit_)

    def _on_hypercall(self, exit_):
        served = self._parent_handlers.get(exit_.nr)
        if served is not None:
            result = served(tuple(exit_.args))
        else:
            result = PARENT_HYPERCALLS.get(exit_.nr, Partition._hc_not_served)(self, exit_)
        lib.hv_vcpu_complete(self._vcpus[exit_.vcpu], result)

    def _hc_not_served(self, exit_):
        return -lib.HV_ENOSYS

    def _hc_console_write(self, exit_):
        # The core validated the pointer and copied the bytes once.
        data = bytes(ffi.buffer(exit_.data, exit_.data_len))
        if self.tracer is not None:
            self.tracer.console(data)
        try:
            self.console.write(data)
        except OSError as e:
            # The guest loses its console, nothing else; it hears why.
            if not self.console_failed:
                self.console_failed = True
                log.warning("partition %s: console output failed: %s", self.id, e.strerror)
            return -lib.HV_EIO
        return exit_.data_len

    def _on_uart(self, exit_):
        # A line of the PC platform's UART (csrc/uart16550.c), copied once.
        self._hc_console_write(exit_)

    def _drain_uart(self):
        buf = ffi.new("uint8_t[4096]")
        while self._p is not None and (n := lib.hv_uart_drain(self._p, buf, 4096)):
            try:
                self.console.write(bytes(ffi.buffer(buf, n)))
            except OSError:
                break

    def _on_shutdown(self, exit_):
        self.exit_code = exit_.code
        self.rebooted = exit_.reason == lib.HV_SHUTDOWN_REBOOT
        if exit_.reason == lib.HV_SHUTDOWN_CRASH:
            self._crash(f"the guest reported a crash (code {exit_.code})")
        else:
            self._set_state(SHUTDOWN)

    def _on_crash(self, exit_):
        cause = CRASH_CAUSES.get(exit_.code, f"cause {exit_.code}")
        where = f"vCPU {exit_.vcpu}: " if self.smp > 1 else ""
        self._crash(f"{where}{cause} (engine exit {exit_.reason})", exit_.vcpu)

    def _on_io(self, exit_):
        # No device lives on port I/O yet: an empty bus (reads all ones).
        lib.hv_vcpu_complete(self._vcpus[exit_.vcpu], (1 << (8 * exit_.io_size)) - 1)

    def _on_paused(self, exit_):
        if self._stop:
            return
        if self.debugger is not None and self.debugger.claim_pause():
            self.debugger.paused()              # GDB asked (attach, Ctrl-C): a debug stop
            return
        if self._scheduler is not None:
            return                              # pause is a scheduler state there
        self._set_state(PAUSED)
        self._resume.wait()
        if not self._stop:
            self._set_state(RUNNING)

    def _on_debug(self, exit_):
        if self.debugger is None:
            self._crash("a debug stop with no debugger attached")
        else:
            self.debugger.stopped(exit_)

    def _on_signal(self, exit_):
        pass    # a host signal (Ctrl-C): Python runs its handler on return

    def _on_trace(self, exit_):
        pass    # the loop drains the trace after every return

    def _on_error(self, exit_):
        self._crash(f"host error: {os.strerror(exit_.code)}")

    def _crash(self, cause, vcpu=0):
        self.crash_report = f"partition {self.id} crashed: {cause}\n" + self.register_dump(vcpu)
        self._set_state(CRASHED)

    # -- inspection ----------------------------------------------------
    def register_dump(self, vcpu=0):
        """vCPU `vcpu`'s registers, as text ("" if it does not exist)."""
        if vcpu >= len(self._vcpus):
            return ""
        v = self._vcpus[vcpu]
        r = ffi.new("struct hv_regs *")
        s = ffi.new("struct hv_sregs *")
        lib.hv_vcpu_get_regs(v, r)
        lib.hv_vcpu_get_sregs(v, s)
        names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
                 "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags"]
        cells = [f"{n:>6}={getattr(r, n):016x}" for n in names]
        cells += [f"{n:>6}={getattr(s, n):016x}" for n in ("cr0", "cr2", "cr3", "cr4", "efer")]
        cells += [f"{'cs':>6}={s.cs:04x}", f"{'ss':>6}={s.ss:04x}"]
        return "\n".join("  ".join(cells[i:i + 4]) for i in range(0, len(cells), 4))

    def uart_input(self, data: bytes) -> int:
        """Console input for the guest's UART (ttyS0): returns how many
        bytes fitted in its receive buffer (the rest: later).  Any thread."""
        with self._cond:
            if self._p is None or self._finished:
                return 0
            return lib.hv_uart_input(self._p, data, len(data))

    def counters(self):
        """{'exits', 'fast_hypercalls', 'parent_hypercalls'} (and the
        scheduler's, when scheduled), summed over the vCPUs while they exist."""
        if self._vcpu is None:
            return {}
        out = {}
        for v in self._vcpus:
            for k, n in self.vcpu_counters(v).items():
                out[k] = out.get(k, 0) + n
        return out

    @staticmethod
    def vcpu_counters(v):
        vals = ffi.new("uint64_t[3]")
        lib.hv_vcpu_counters(v, vals, vals + 1, vals + 2)
        out = {"exits": vals[0], "fast_hypercalls": vals[1], "parent_hypercalls": vals[2]}
        info = ffi.new("struct hv_sched_info *")
        if lib.hv_sched_vcpu_info(v, info) == 0:
            out.update(run_ns=info.runtime_ns, dispatches=info.dispatches,
                       blocks=info.blocks, parent_waits=info.parent_waits,
                       migrations=info.migrations)
        return out

    def metrics(self):
        """A JSON-ready snapshot of what the partition has done so far: the
        one source for `hv run --json`, metrics lines and the management
        API.  Safe from any thread, in any state (counters are the live
        vCPU's while it runs, its last values after it stopped).

        Devices count the payload they move: bytes_from_guest (disk writes,
        frames sent, console output) and bytes_to_guest (disk reads, frames
        received, console input)."""
        with self._cond:
            vcpu = self.counters() if self._vcpu is not None else dict(self.last_counters)
            state, exit_code = self.state, self.exit_code
        return {
            "id": self.id,
            "name": self.name,
            "state": state,
            "engine": self.engine,
            "mem_bytes": self.mem_size,
            "exit_code": exit_code,
            "exits": vcpu.get("exits", 0),
            "hypercalls_fast": vcpu.get("fast_hypercalls", 0),
            "hypercalls_slow": vcpu.get("parent_hypercalls", 0),
            # On the scheduler: the vCPU's time on workers and how it got there.
            "scheduler": {k: vcpu.get(k, 0) for k in SCHED_COUNTERS}
                         if self._scheduler is not None else None,
            "devices": [{"slot": slot, "name": d.name, "type": DEVICE_TYPES.get(d.DEVICE_ID, str(d.DEVICE_ID)),
                         "requests": d.requests, "errors": d.errors,
                         "bytes_from_guest": getattr(d, "bytes_from_guest", 0),
                         "bytes_to_guest": getattr(d, "bytes_to_guest", 0)}
                        for slot, d in enumerate(self.devices)],
        }



# T:630 The parent's tables.  One entry per exit kind the core can return,
# and one per hypercall the parent (not the core) serves.
EXIT_HANDLERS = {
    lib.HV_EXIT_HYPERCALL: Partition._on_hypercall,
    lib.HV_EXIT_SHUTDOWN: Partition._on_shutdown,
    lib.HV_EXIT_CRASH: Partition._on_crash,
    lib.HV_EXIT_IO: Partition._on_io,
    lib.HV_EXIT_PAUSED: Partition._on_paused,
    lib.HV_EXIT_ERROR: Partition._on_error,
    lib.HV_EXIT_SIGNAL: Partition._on_signal,
    lib.HV_EXIT_TRACE: Partition._on_trace,
    lib.HV_EXIT_UART: Partition._on_uart,
    lib.HV_EXIT_DEBUG: Partition._on_debug,
}

PARENT_HYPERCALLS = {
    lib.HV_HC_CONSOLE_WRITE: Partition._hc_console_write,
}
