"""The restart state machine: ``step(policy, state, event, now, rand) -> (state, actions)``.

Pure and total: no I/O, no clock, no randomness of its own; every (phase, event) cell has an
answer, even when the answer is "nothing to do". The pump feeds it what happened and carries
out the actions it returns, in order. ``now`` is ``time.monotonic()`` seconds; ``rand`` is a
number in [0, 1) used for jitter (the pump passes ``random.random()``, tests a constant).

Phases::

    spawning ──Spawned──► running ──Exited──► (restart now) spawning
        │                    │                 (quick death) backoff ──Tick──► spawning
        │                    │                 (gave up)     fatal
        │                    │                 (final code)  stopped
        │                    ├──Restart──► restarting ──Exited──► spawning
        │                    └──Stop─────► stopping ──Tick──► (KILL) ──Exited──► stopped
        └──SpawnFailed──► backoff (counted as a quick death)

``stopped`` and ``fatal`` are final: every event there is ignored, so a stop during a backoff
wait is never followed by a spawn.
"""

from __future__ import annotations

import signal
from typing import Union

from .events import ExitStatus
from .records import Record, replace  # pump.py calls supervise.replace too
from .spec import RestartPolicy

SPAWNING = "spawning"
RUNNING = "running"
BACKOFF = "backoff"
RESTARTING = "restarting"
STOPPING = "stopping"
STOPPED = "stopped"
FATAL = "fatal"
PHASES = (SPAWNING, RUNNING, BACKOFF, RESTARTING, STOPPING, STOPPED, FATAL)
FINAL = (STOPPED, FATAL)

# The least delay before restarting a target that died quickly (ran less than min_uptime),
# even with backoff switched off (backoff_initial=0): without it a target that exits at
# once is respawned as fast as the pump can fork, keeping the pump busy and flooding the
# monitor with events. s6 keeps a floor of its own between respawns for the same reason.
# A stable run is restarted at once, whatever this says.
QUICK_FLOOR = 0.1


# The state, events and actions are small immutable records (see immortal/records.py): not
# dataclasses, whose methods are generated and exec'd for each class (for this module, on the
# path of every group start).
class State(Record):
    phase: str = SPAWNING
    pid: int | None = None
    started_at: float | None = None  #: when the current target was spawned
    attempts: int = 0  #: quick deaths in a row
    restarts: int = 0  #: respawns so far
    spawned: int = 0  #: targets spawned so far
    recent: tuple[float, ...] = ()  #: times of the latest restarts, for max_restarts
    deadline: float | None = None  #: when a Tick is wanted
    grace: float = 0.0  #: grace period of the stop or restart in progress
    last_exit: ExitStatus | None = None
    delay: float | None = None  #: the delay chosen after the last exit
    reason: str | None = None  #: why the group ended (final phases)
    why: str = "start"  #: why the next (or current) target is spawned


# Inputs
class Spawned(Record):
    pid: int


class SpawnFailed(Record):
    error: str


class Exited(Record):
    status: ExitStatus


class Tick(Record):
    pass


class Stop(Record):
    grace: float
    reason: str = "stop"


class Restart(Record):
    grace: float


Event = Union[Spawned, SpawnFailed, Exited, Tick, Stop, Restart]


# Actions
class Spawn(Record):
    why: str  #: "start", "exit" or "manual"


class Kill(Record):
    signal: int  #: sent to the target's process group


class Wake(Record):
    at: float | None  #: deliver a Tick at this time; None cancels


class Finish(Record):
    phase: str
    reason: str


Action = Union[Spawn, Kill, Wake, Finish]
Result = tuple[State, tuple[Action, ...]]


def initial() -> Result:
    """The machine for a new group: spawn the first target."""
    return State(), (Spawn("start"),)


def adopt(pid: int, started_at: float, template: State | None = None) -> State:
    """The machine for a target that is already running (taken over from another pump)."""
    base = template or State()
    return replace(base, phase=RUNNING, pid=pid, started_at=started_at, deadline=None)


def record(state: State, status: ExitStatus) -> ExitStatus:
    """``status`` completed with what the machine (already stepped) decided to do next."""
    reason: str | None
    if state.phase == SPAWNING:
        decision, reason = "restart", state.why
    elif state.phase == BACKOFF:
        decision, reason = "backoff", f"restart in {state.delay or 0:.3g} s"
    elif state.phase == FATAL:
        decision, reason = "give up", state.reason
    else:
        decision, reason = "stop", state.reason
    return replace(status, attempt=state.attempts, decision=decision, reason=reason,
                   delay=state.delay if state.phase == BACKOFF else (
                       0.0 if state.phase == SPAWNING else None))


def backoff_delay(policy: RestartPolicy, attempts: int, rand: float) -> float:
    """Delay before restart number ``attempts`` of a crash loop (attempts ≥ 1)."""
    if policy.backoff_initial <= 0:
        return 0.0
    exponent = min(attempts - 1, 64)  # beyond this the cap has long been reached
    base = min(policy.backoff_max, policy.backoff_initial * policy.backoff_factor ** exponent)
    spread = 1.0 + policy.jitter * (2.0 * rand - 1.0)
    return min(policy.backoff_max, base * spread)


def step(policy: RestartPolicy, state: State, event: Event, now: float, rand: float) -> Result:
    phase = state.phase
    if phase in FINAL:
        return state, ()
    if isinstance(event, Stop):
        return _stop(state, event, now)
    if isinstance(event, Restart):
        return _restart(state, event, now)
    if isinstance(event, Spawned):
        return _spawned(state, event, now)
    if isinstance(event, SpawnFailed):
        if phase != SPAWNING:
            return state, ()  # stale: only a spawn under way can fail
        status = ExitStatus(error=event.error, uptime=0.0)
        return _died(policy, replace(state, pid=None, started_at=now), status, now, rand,
                     quick=True)
    if isinstance(event, Exited):
        return _exited(policy, state, event.status, now, rand)
    if isinstance(event, Tick):
        return _tick(policy, state, now)
    raise TypeError(f"not an event: {event!r}")


def _stop(state: State, event: Stop, now: float) -> Result:
    if state.phase in (RUNNING, RESTARTING) and state.pid is not None:
        deadline = state.deadline if state.phase == RESTARTING else now + event.grace
        deadline = min(deadline or now + event.grace, now + event.grace)
        stopping = replace(state, phase=STOPPING, deadline=deadline, grace=event.grace,
                           reason=event.reason)
        actions: tuple[Action, ...] = (Wake(deadline),)
        if state.phase == RUNNING:
            actions = (Kill(signal.SIGTERM), Wake(deadline))
        return stopping, actions
    if state.phase == STOPPING:
        if event.grace == 0 and (state.deadline is None or state.deadline > now):
            return replace(state, deadline=None), (Kill(signal.SIGKILL), Wake(None))
        return state, ()
    # spawning (no pid yet) or backoff: nothing runs, so the stop is immediate.
    final = replace(state, phase=STOPPED, deadline=None, reason=event.reason)
    return final, (Wake(None), Finish(STOPPED, event.reason))


def _restart(state: State, event: Restart, now: float) -> Result:
    if state.phase == RUNNING:
        deadline = now + event.grace
        return (replace(state, phase=RESTARTING, deadline=deadline, grace=event.grace,
                        why="manual"),
                (Kill(signal.SIGTERM), Wake(deadline)))
    if state.phase == BACKOFF:
        return (replace(state, phase=SPAWNING, deadline=None, attempts=0, why="manual"),
                (Wake(None), Spawn("manual")))
    return state, ()  # already spawning, restarting or stopping


def _spawned(state: State, event: Spawned, now: float) -> Result:
    running = replace(state, pid=event.pid, started_at=now, spawned=state.spawned + 1)
    if state.phase == SPAWNING:
        return replace(running, phase=RUNNING), ()
    if state.phase == STOPPING:  # a stop came while the spawn was under way
        return running, (Kill(signal.SIGTERM),)
    return running, ()


def _exited(policy: RestartPolicy, state: State, status: ExitStatus, now: float,
            rand: float) -> Result:
    if state.phase == STOPPING:
        final = replace(state, phase=STOPPED, pid=None, deadline=None, last_exit=status)
        return final, (Wake(None), Finish(STOPPED, state.reason or "stop"))
    if state.phase == RESTARTING:
        return _respawn(policy, replace(state, pid=None, last_exit=status, attempts=0,
                                        delay=0.0), "manual", now)
    if state.phase == RUNNING:
        return _died(policy, state, status, now, rand)
    return replace(state, last_exit=status), ()  # spawning or backoff: nothing of ours ran


def _died(policy: RestartPolicy, state: State, status: ExitStatus, now: float,
          rand: float, quick: bool = False) -> Result:
    uptime = now - state.started_at if state.started_at is not None else 0.0
    stable = uptime >= policy.min_uptime and not quick
    attempts = 0 if stable else state.attempts + 1  # quick deaths in a row
    dead = replace(state, pid=None, last_exit=status, attempts=attempts)
    if status.code is not None and status.code in policy.final_exit_codes:
        reason = f"exit code {status.code} means do not restart"
        return (replace(dead, phase=STOPPED, deadline=None, reason=reason),
                (Wake(None), Finish(STOPPED, reason)))
    recent = tuple(t for t in state.recent if now - t < policy.window)
    if policy.max_restarts is not None and len(recent) >= policy.max_restarts:
        reason = (f"gave up after {len(recent)} restarts within {policy.window:g} s "
                  f"(max_restarts={policy.max_restarts}); last: {status}")
        return (replace(dead, phase=FATAL, deadline=None, reason=reason, recent=recent),
                (Wake(None), Finish(FATAL, reason)))
    if stable:
        return _respawn(policy, replace(dead, delay=0.0, recent=recent), "exit", now)
    delay = max(QUICK_FLOOR, backoff_delay(policy, attempts, rand))
    dead = replace(dead, delay=delay, recent=recent)
    deadline = now + delay
    return replace(dead, phase=BACKOFF, deadline=deadline, why="exit"), (Wake(deadline),)


def _respawn(policy: RestartPolicy, state: State, why: str, now: float) -> Result:
    # Bounded: only the latest max_restarts times can ever decide a give-up.
    recent = (*state.recent, now)[-(policy.max_restarts or 1):]
    return (replace(state, phase=SPAWNING, deadline=None, restarts=state.restarts + 1,
                    recent=recent, why=why),
            (Wake(None), Spawn(why)))


def _tick(policy: RestartPolicy, state: State, now: float) -> Result:
    if state.deadline is None or now < state.deadline:
        return state, ()  # early or stale wake-up
    if state.phase == BACKOFF:
        return _respawn(policy, state, state.why, now)
    if state.phase in (STOPPING, RESTARTING):
        # The grace period is over: escalate once, then wait for the death.
        return replace(state, deadline=None), (Kill(signal.SIGKILL), Wake(None))
    return replace(state, deadline=None), (Wake(None),)
