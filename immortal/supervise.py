"""The restart state machine: ``step(policy, state, event, now, rand) -> (state, actions)``.

Pure and total: no I/O, no clock, no randomness of its own; every (phase, event) cell of
``TABLE`` has an answer, even when the answer is "nothing to do". Its supervisor feeds it
what happened and carries out the actions it returns, in order. ``now`` is
``time.monotonic()`` seconds; ``rand`` is a number in [0, 1) used for jitter (the
supervisor passes ``random.random()``, tests a constant).

The same machine serves both supervisors: the pump supervises its target with the group's
``RestartPolicy``; the daemon supervises its pump with a ``PumpPolicy`` (see there).

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
from collections.abc import Callable

from .events import ExitStatus
from .machine import (
    BACKOFF, EVENTS, FATAL, FINAL, PHASES, RESTARTING, RUNNING, SPAWNING, STOPPED, STOPPING,
    Action, Event, Exited, Finish, Hook, Kill, Phase, PumpPolicy, Restart, Spawn, SpawnFailed,
    Spawned, State, Stop, Tick, Wake, final_reason, finished,
)
from .records import replace  # pump.py calls supervise.replace too
from .spec import RestartPolicy

__all__ = [  # the machine's words, from machine.py, where its callers look for them
    "BACKOFF", "EVENTS", "FATAL", "FINAL", "PHASES", "RESTARTING", "RUNNING", "SPAWNING",
    "STOPPED", "STOPPING", "Action", "Event", "Exited", "Finish", "Hook", "Kill", "Phase",
    "PumpPolicy", "Restart", "Spawn", "SpawnFailed", "Spawned", "State", "Stop", "Tick", "Wake",
    "QUICK_FLOOR", "TABLE", "adopt", "backoff_delay", "carried_over", "ending", "finished",
    "initial", "record", "refusal", "replace", "rerun", "rerunnable", "step",
]

# The least delay before restarting a target that died quickly (ran less than min_uptime),
# even with backoff switched off (backoff_initial=0): without it a target that exits at
# once is respawned as fast as the pump can fork, keeping the pump busy and flooding the
# monitor with events. s6 keeps a floor of its own between respawns for the same reason.
# A stable run is restarted at once, whatever this says.
QUICK_FLOOR = 0.1

Policy = RestartPolicy | PumpPolicy
Result = tuple[State, tuple[Action, ...]]
# (policy, state, event, now, rand): each cell takes its own column's event type.
Handler = Callable[..., Result]


def initial() -> Result:
    """The machine for a new group: spawn the first target."""
    return State(), (Spawn("start"),)


def carried_over(restarts: int, spawned: int, last_exit: ExitStatus | None) -> State:
    """The machine of a group's successor pump: its counters so far. A target it spawns is
    never the group's first (``Hook("respawn", "exit")``: the one before it died)."""
    return State(restarts=restarts, spawned=spawned, last_exit=last_exit, why="exit")


def adopt(pid: int, started_at: float, template: State | None = None) -> State:
    """The machine for a target that is already running (taken over from another pump)."""
    base = template or State()
    return replace(base, phase=RUNNING, pid=pid, started_at=started_at, deadline=None)


def rerunnable(state: State) -> bool:
    """Whether a restart runs the target again of a machine that has ended on its own:
    its target finished (a final exit code) or its restarts were given up (fatal)."""
    code = state.last_exit.code if state.last_exit is not None else None
    return state.phase == FATAL or finished(state.phase, state.reason, code)


def rerun(state: State, why: str) -> Result:
    """A machine that ended on its own (``rerunnable``) spawns again, on a restart while
    its group runs: its counters kept, its record of quick deaths cleared."""
    return (replace(state, phase=SPAWNING, deadline=None, reason=None, attempts=0, recent=(),
                    delay=None, restarts=state.restarts + 1, why=why),
            (Wake(None), Spawn(why)))


def ending(state: State) -> bool:
    """Whether the group is stopping or has ended: nothing will be spawned again."""
    return state.phase in FINAL or state.phase == STOPPING


def refusal(state: State, event: Event) -> str | None:
    """Why a request for ``event`` is refused in ``state`` (to be told to whoever asked),
    or None. ``step`` would ignore a refused event; this says so to the caller."""
    if isinstance(event, Restart) and ending(state):
        return "the group is stopping; it cannot restart"
    return None


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


def backoff_delay(policy: Policy, attempts: int, rand: float) -> float:
    """Delay before restart number ``attempts`` of a crash loop (attempts ≥ 1)."""
    if policy.backoff_initial <= 0:
        return 0.0
    exponent = min(attempts - 1, 64)  # beyond this the cap has long been reached
    base = min(policy.backoff_max, policy.backoff_initial * policy.backoff_factor ** exponent)
    spread = 1.0 + policy.jitter * (2.0 * rand - 1.0)
    return min(policy.backoff_max, base * spread)


def step(policy: Policy, state: State, event: Event, now: float, rand: float) -> Result:
    """The machine's answer to ``event`` in ``state``: the cell of ``TABLE``."""
    try:
        column = _COLUMN[type(event)]
    except KeyError:
        raise TypeError(f"not an event: {event!r}") from None
    return TABLE[state.phase][column](policy, state, event, now, rand)


# ----------------------------------------------------------------- the cells
# Each takes (policy, state, event, now, rand); the event is of its column's type.

def _nothing(policy: Policy, state: State, event: Event, now: float, rand: float) -> Result:
    return state, ()


def _first_target(policy: Policy, state: State, event: Spawned, now: float,
                  rand: float) -> Result:
    running = _count(state, event, now)
    return replace(running, phase=RUNNING), (_hook(running),)


def _spawned_while_stopping(policy: Policy, state: State, event: Spawned, now: float,
                            rand: float) -> Result:
    running = _count(state, event, now)  # a stop came while the spawn was under way
    return running, (_hook(running), Kill(signal.SIGTERM))


def _spawn_failed_stopping(policy: Policy, state: State, event: SpawnFailed, now: float,
                           rand: float) -> Result:
    if state.pid is not None:
        return state, ()  # not about the process that still runs: wait for its death
    # A spawn to carry out the stop failed: another, after the backoff.
    attempts = state.attempts + 1
    delay = max(_floor(policy), backoff_delay(policy, attempts, rand))
    deadline = now + delay
    return (replace(state, attempts=attempts, delay=delay, deadline=deadline,
                    last_exit=ExitStatus(error=event.error, uptime=0.0)),
            (Wake(deadline),))


def _stray_spawn(policy: Policy, state: State, event: Spawned, now: float,
                 rand: float) -> Result:
    return _count(state, event, now), ()  # none was asked for: counted, nothing more


def _spawn_failed(policy: Policy, state: State, event: SpawnFailed, now: float,
                  rand: float) -> Result:
    status = ExitStatus(error=event.error, uptime=0.0)
    return _died(policy, replace(state, pid=None, started_at=now), status, now, rand,
                 quick=True)


def _stray_exit(policy: Policy, state: State, event: Exited, now: float,
                rand: float) -> Result:
    return replace(state, last_exit=event.status), ()  # nothing of ours ran


def _exited(policy: Policy, state: State, event: Exited, now: float, rand: float) -> Result:
    return _died(policy, state, event.status, now, rand)


def _restarted(policy: Policy, state: State, event: Exited, now: float,
               rand: float) -> Result:
    return _respawn(policy, replace(state, pid=None, last_exit=event.status, attempts=0,
                                    delay=0.0), state.why, now)


def _stopped(policy: Policy, state: State, event: Exited, now: float, rand: float) -> Result:
    if _may_spawn_to_stop(policy, state):  # the next one carries out the stop
        return _spawn_to_stop(replace(state, pid=None, last_exit=event.status))
    final = replace(state, phase=STOPPED, pid=None, deadline=None, last_exit=event.status)
    return final, (Wake(None), Finish(STOPPED, state.reason or "stop"))


def _backoff_over(policy: Policy, state: State, event: Tick, now: float,
                  rand: float) -> Result:
    if not _due(state, now):
        return state, ()  # early or stale wake-up
    return _respawn(policy, state, state.why, now)


def _grace_over(policy: Policy, state: State, event: Tick, now: float,
                rand: float) -> Result:
    if not _due(state, now):
        return state, ()
    if state.pid is None:  # a spawn to carry out the stop failed: try again
        return replace(state, deadline=None), (Wake(None), Spawn("stop"))
    # The grace period is over: escalate once, then wait for the death.
    return replace(state, deadline=None), (Kill(signal.SIGKILL), Wake(None))


def _stale_tick(policy: Policy, state: State, event: Tick, now: float,
                rand: float) -> Result:
    if not _due(state, now):
        return state, ()
    return replace(state, deadline=None), (Wake(None),)


def _stop_waiting(policy: Policy, state: State, event: Stop, now: float,
                  rand: float) -> Result:
    if not _may_spawn_to_stop(policy, state):
        return _stop_now(policy, state, event, now, rand)
    stopping = replace(state, reason=event.reason)
    if state.phase == SPAWNING:  # the spawn under way carries out the stop
        return replace(stopping, phase=STOPPING, stop_spawns=state.stop_spawns + 1), ()
    return _spawn_to_stop(stopping)


def _stop_now(policy: Policy, state: State, event: Stop, now: float, rand: float) -> Result:
    # Nothing runs (spawning has no pid yet, backoff waits), so the stop is immediate.
    final = replace(state, phase=STOPPED, deadline=None, reason=event.reason)
    return final, (Wake(None), Finish(STOPPED, event.reason))


def _stop_running(policy: Policy, state: State, event: Stop, now: float,
                  rand: float) -> Result:
    if state.pid is None:
        return _stop_now(policy, state, event, now, rand)
    first = Kill(signal.SIGKILL if event.kill else signal.SIGTERM)
    if event.grace is None:
        return (replace(state, phase=STOPPING, deadline=None, reason=event.reason),
                (first, Wake(None)))
    deadline = now + event.grace
    return (replace(state, phase=STOPPING, deadline=deadline, grace=event.grace,
                    reason=event.reason),
            (first, Wake(deadline)))


def _stop_restarting(policy: Policy, state: State, event: Stop, now: float,
                     rand: float) -> Result:
    if state.pid is None:
        return _stop_now(policy, state, event, now, rand)
    # SIGTERM was sent already: the earlier of the two deadlines stands.
    grace = state.grace if event.grace is None else event.grace
    deadline = min(state.deadline or now + grace, now + grace)
    return (replace(state, phase=STOPPING, deadline=deadline, grace=grace,
                    reason=event.reason),
            (Wake(deadline),))


def _stop_again(policy: Policy, state: State, event: Stop, now: float,
                rand: float) -> Result:
    if event.grace is None:  # passed on again, to the one that carries it out
        return state, (Kill(signal.SIGTERM),) if state.pid is not None else ()
    if event.grace == 0 and (state.deadline is None or state.deadline > now):
        return replace(state, deadline=None), (Kill(signal.SIGKILL), Wake(None))
    return state, ()


def _restart_running(policy: Policy, state: State, event: Restart, now: float,
                     rand: float) -> Result:
    deadline = now + event.grace
    return (replace(state, phase=RESTARTING, deadline=deadline, grace=event.grace,
                    why=event.why),
            (Kill(signal.SIGTERM), Wake(deadline)))


def _restart_now(policy: Policy, state: State, event: Restart, now: float,
                 rand: float) -> Result:
    return (replace(state, phase=SPAWNING, deadline=None, attempts=0, why=event.why),
            (Wake(None), Spawn(event.why)))


# s6-supervise's actions[state][event]: every cell filled, even with a no-op. Columns in
# the order of EVENTS; tests/test_supervise.py checks that it is total.
TABLE: dict[Phase, tuple[Handler, ...]] = {
    #            Spawned                  SpawnFailed    Exited       Tick
    #            Stop                     Restart
    SPAWNING: (_first_target, _spawn_failed, _stray_exit, _stale_tick,
               _stop_waiting, _nothing),  # restart: a spawn is under way already
    RUNNING: (_stray_spawn, _nothing, _exited, _stale_tick,
              _stop_running, _restart_running),
    BACKOFF: (_stray_spawn, _nothing, _stray_exit, _backoff_over,
              _stop_waiting, _restart_now),
    RESTARTING: (_stray_spawn, _nothing, _restarted, _grace_over,
                 _stop_restarting, _nothing),
    STOPPING: (_spawned_while_stopping, _spawn_failed_stopping, _stopped, _grace_over,
               _stop_again, _nothing),
    STOPPED: (_nothing, _nothing, _nothing, _nothing, _nothing, _nothing),
    FATAL: (_nothing, _nothing, _nothing, _nothing, _nothing, _nothing),
}
_COLUMN = {event: column for column, event in enumerate(EVENTS)}


# ----------------------------------------------------------------- shared by the cells

def _due(state: State, now: float) -> bool:
    return state.deadline is not None and now >= state.deadline


def _count(state: State, event: Spawned, now: float) -> State:
    return replace(state, pid=event.pid, started_at=now, spawned=state.spawned + 1)


def _floor(policy: Policy) -> float:
    return policy.floor if isinstance(policy, PumpPolicy) else QUICK_FLOOR


def _may_spawn_to_stop(policy: Policy, state: State) -> bool:
    return isinstance(policy, PumpPolicy) and state.stop_spawns < policy.stop_spawns


def _spawn_to_stop(state: State) -> Result:
    """None runs to carry out the stop: spawn one (it is told the stop once spawned)."""
    return (replace(state, phase=STOPPING, deadline=None, stop_spawns=state.stop_spawns + 1),
            (Wake(None), Spawn("stop")))


def _hook(state: State) -> Hook:
    """The monitors' hook for the target just counted: the group's first, or another."""
    if state.spawned <= 1 and state.why == "start":
        return Hook("spawn", state.why)
    return Hook("respawn", state.why)


def _died(policy: Policy, state: State, status: ExitStatus, now: float,
          rand: float, quick: bool = False) -> Result:
    uptime = now - state.started_at if state.started_at is not None else 0.0
    stable = uptime >= policy.min_uptime and not quick
    attempts = 0 if stable else state.attempts + 1  # quick deaths in a row
    dead = replace(state, pid=None, last_exit=status, attempts=attempts)
    if isinstance(policy, PumpPolicy) and not policy.restart:
        reason = "not restarted: it had finished, or the group never started"
        return (replace(dead, phase=STOPPED, deadline=None, reason=reason),
                (Wake(None), Finish(STOPPED, reason)))
    if status.code is not None and status.code in policy.final_exit_codes:
        reason = final_reason(status.code)
        return (replace(dead, phase=STOPPED, deadline=None, reason=reason),
                (Wake(None), Finish(STOPPED, reason)))
    recent = tuple(t for t in state.recent if now - t < policy.window)
    if policy.max_restarts is not None and len(recent) >= policy.max_restarts:
        reason = (f"gave up after {len(recent)} restarts within {policy.window:g} s "
                  f"(max_restarts={policy.max_restarts}); last: {status}")
        return (replace(dead, phase=FATAL, deadline=None, reason=reason, recent=recent),
                (Wake(None), Finish(FATAL, reason)))
    if stable or (isinstance(policy, PumpPolicy) and policy.killed_at_once and not quick
                  and status.signal == signal.SIGKILL):
        return _respawn(policy, replace(dead, delay=0.0, recent=recent), "exit", now)
    delay = max(_floor(policy), backoff_delay(policy, attempts, rand))
    dead = replace(dead, delay=delay, recent=recent)
    deadline = now + delay
    return replace(dead, phase=BACKOFF, deadline=deadline, why="exit"), (Wake(deadline),)


def _respawn(policy: Policy, state: State, why: str, now: float) -> Result:
    # Bounded: only the latest max_restarts times can ever decide a give-up.
    recent = (*state.recent, now)[-(policy.max_restarts or 1):]
    return (replace(state, phase=SPAWNING, deadline=None, restarts=state.restarts + 1,
                    recent=recent, why=why),
            (Wake(None), Spawn(why)))
