"""Reference model: the scheduler's vCPU state machine (csrc/sched.c).

It says which states a transition leads to and which vCPUs a worker may
pick; it does not say *which* one the credit order picks (the C version
chooses, the model checks the choice was allowed).  States and numbers are
those of csrc/hv.h.
"""
from dataclasses import dataclass

DOWN, RUNNABLE, RUNNING, BLOCKED, PARENT, PAUSED = range(6)
STATE_NAMES = ["down", "runnable", "running", "blocked", "parent", "paused"]
PREEMPT, YIELD, BLOCK, TO_PARENT = range(4)
CAP_PERIOD_NS = 10_000_000
MIGRATE_RESIST_NS = 500_000


@dataclass
class Entity:
    group: int
    weight: int
    cap: int                  # percent; 0 = none
    cheap: bool               # moving workers costs nothing (TCG)
    home: int
    state: int = DOWN
    worker: int = -1
    wake_pending: bool = False
    pause_pending: bool = False
    down_pending: bool = False
    paused_blocked: bool = False
    wake_at: int = 0
    runnable_since: int = 0
    period_start: int = 0
    budget_used: int = 0
    run_start: int = 0


class Scheduler:
    def __init__(self, nworkers):
        self.nworkers = nworkers
        self.entities = []
        self.current = [None] * nworkers          # worker -> entity id

    # -- placement ----------------------------------------------------------
    def load(self, w):
        return sum(1 for e in self.entities if e.home == w and e.state is not None)

    def allowed_homes(self, group):
        """Where a new entity may be placed: with its group, else least loaded."""
        homes = {e.home for e in self.entities if group and e.group == group}
        if homes:
            return homes
        loads = [self.load(w) for w in range(self.nworkers)]
        return {w for w in range(self.nworkers) if loads[w] == min(loads)}

    def add(self, group, weight, cap, cheap, home):
        assert home in self.allowed_homes(group), "not placed on the least-loaded worker"
        self.entities.append(Entity(group, weight, cap, cheap, home))
        return len(self.entities) - 1

    # -- transitions ---------------------------------------------------------
    def _runnable(self, e, now):
        if e.pause_pending:
            e.pause_pending, e.paused_blocked, e.state = False, False, PAUSED
            return
        e.state, e.runnable_since = RUNNABLE, now

    def start(self, i, now):
        e = self.entities[i]
        if e.state == DOWN and not e.down_pending:
            e.period_start = now
            self._runnable(e, now)

    @staticmethod
    def _refilled(e, now):
        """(period start, budget used) once the periods up to now refilled
        the budget; an overrun is paid from later periods."""
        periods = (now - e.period_start) // CAP_PERIOD_NS
        if not periods:
            return e.period_start, e.budget_used
        refill = periods * (CAP_PERIOD_NS * e.cap // 100)
        return e.period_start + periods * CAP_PERIOD_NS, max(0, e.budget_used - refill)

    def eligible(self, i, now):
        e = self.entities[i]
        if e.state != RUNNABLE:
            return False
        if e.cap:
            used = self._refilled(e, now)[1]
            if used >= CAP_PERIOD_NS * e.cap // 100:
                return False
        return not any(c is not None and c != i and self.entities[c].group == e.group
                       for c in self.current if e.group)

    def may_pick(self, w, now):
        """The entities worker w may be given, and whether it must get one."""
        own = {i for i, e in enumerate(self.entities) if e.home == w and self.eligible(i, now)}
        if own:
            return own, True
        other = {i for i, e in enumerate(self.entities)
                 if self.eligible(i, now)
                 and (e.cheap or now - e.runnable_since >= MIGRATE_RESIST_NS)}
        return other, False     # stealing is allowed, not promised

    def pick(self, w, i, now):
        allowed, must = self.may_pick(w, now)
        if i is None:
            assert not must, f"worker {w} idle while {sorted(allowed)} are runnable on it"
            return
        assert i in allowed, (f"worker {w} was given {i} ({STATE_NAMES[self.entities[i].state]}),"
                              f" allowed {sorted(allowed)}")
        assert self.current[w] is None
        e = self.entities[i]
        if e.cap:
            e.period_start, e.budget_used = self._refilled(e, now)
        e.state, e.worker, e.home, e.run_start = RUNNING, w, w, now
        for o in self.entities:
            if e.group and o.group == e.group:
                o.home = w          # a TCG partition's vCPUs share one runqueue
        self.current[w] = i

    def stop(self, i, why, wake_at, now):
        e = self.entities[i]
        assert e.state == RUNNING
        if e.cap:
            e.budget_used += now - e.run_start
        self.current[e.worker] = None
        e.worker = -1
        if e.down_pending:
            e.state = DOWN
            return
        if why == TO_PARENT:
            e.state = PARENT
            return
        if why == BLOCK and not e.wake_pending:
            e.state, e.wake_at = BLOCKED, wake_at
        else:
            e.state = RUNNABLE
        e.wake_pending = False
        if e.pause_pending:
            e.pause_pending = False
            e.paused_blocked = e.state == BLOCKED
            e.state = PAUSED
            return
        if e.state == RUNNABLE:
            e.runnable_since = now

    def wake(self, i, now):
        e = self.entities[i]
        if e.state == BLOCKED:
            e.wake_at, e.wake_pending = 0, False
            self._runnable(e, now)
        elif e.state == PAUSED:
            e.paused_blocked = False
        elif e.state in (RUNNING, RUNNABLE, PARENT):
            e.wake_pending = True

    def parent_done(self, i, now):
        e = self.entities[i]
        if e.state != PARENT:
            return
        if e.down_pending:
            e.state = DOWN
        else:
            self._runnable(e, now)

    def pause(self, i):
        e = self.entities[i]
        if e.state == RUNNABLE:
            e.state, e.paused_blocked = PAUSED, False
        elif e.state == BLOCKED:
            e.state, e.paused_blocked = PAUSED, True
        elif e.state in (RUNNING, PARENT):
            e.pause_pending = True
            return 0
        return 1

    def resume(self, i, now):
        e = self.entities[i]
        e.pause_pending = False
        if e.state != PAUSED:
            return
        # Its deadline passed while paused: it wakes (no expiry would come).
        if e.paused_blocked and not e.wake_pending and not (e.wake_at and e.wake_at <= now):
            e.state = BLOCKED
            return
        e.paused_blocked = e.wake_pending = False
        e.state, e.runnable_since = RUNNABLE, now

    def take_down(self, i):
        e = self.entities[i]
        e.down_pending = True
        if e.state == RUNNING:
            return 0
        e.state = DOWN
        return 1

    def expire(self, now):
        for i, e in enumerate(self.entities):
            if e.state == BLOCKED and e.wake_at and e.wake_at <= now:
                self.wake(i, now)
