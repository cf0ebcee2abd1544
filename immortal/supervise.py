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

import dataclasses
import signal
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Union

from .events import ExitStatus
from .spec import RestartPolicy

if TYPE_CHECKING:
    from typing import dataclass_transform  # typing has it from Python 3.11 on
else:
    def dataclass_transform(**_options: Any):  # only type checkers read it
        return lambda cls: cls

SPAWNING = "spawning"
RUNNING = "running"
BACKOFF = "backoff"
RESTARTING = "restarting"
STOPPING = "stopping"
STOPPED = "stopped"
FATAL = "fatal"
PHASES = (SPAWNING, RUNNING, BACKOFF, RESTARTING, STOPPING, STOPPED, FATAL)
FINAL = (STOPPED, FATAL)


# The state, events and actions are small immutable records. Not dataclasses: creating a
# dataclass generates and execs its methods (≈ 0.35 ms a class, ≈ 4 ms for this module, on
# the path of every group start). Here the fields are read from the class annotations, and
# one set of methods, written once below (no code is generated), serves all the records.
class _RecordType(type):
    """Makes ``name: type = default`` lines into ``__slots__``, ``_fields`` and ``_defaults``."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]):
        if not bases:  # _Record itself
            return super().__new__(mcs, name, bases, namespace)
        own = tuple(namespace.get("__annotations__", ()))
        fields = getattr(bases[0], "_fields", ()) + own  # a subclass adds to its base's
        defaults = {**getattr(bases[0], "_defaults", {}),
                    **{f: namespace.pop(f) for f in own if f in namespace}}
        for before, after in zip(fields, fields[1:]):
            if before in defaults and after not in defaults:
                raise TypeError(f"non-default argument {after!r} follows default argument")
        # _key(record) is what equality and hash compare: all its field values.
        key = staticmethod(attrgetter(*fields) if fields else _no_fields)
        namespace.update(__slots__=own, _fields=fields, _defaults=defaults, _key=key,
                         __match_args__=fields)
        return super().__new__(mcs, name, bases, namespace)


def _no_fields(record: object) -> tuple[()]:
    """The ``_key`` of a record without fields (``attrgetter()`` needs at least one)."""
    return ()


@dataclass_transform(eq_default=True, frozen_default=True)
class _Record(metaclass=_RecordType):
    """An immutable record like a frozen dataclass: ``__init__`` takes the fields in order
    (positional or by name), equality and hash go by class and field values, and
    :func:`replace` makes a changed copy."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}
    _key = staticmethod(_no_fields)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        fields = cls._fields
        if len(args) > len(fields):
            raise TypeError(f"{cls.__qualname__}.__init__() takes {len(fields) + 1} positional "
                            f"arguments but {len(args) + 1} were given")
        setattr_ = object.__setattr__
        for name, value in zip(fields, args):
            setattr_(self, name, value)
        if len(args) == len(fields) and not kwargs:
            return
        defaults = cls._defaults
        missing = []
        for name in fields[len(args):]:
            if name in kwargs:
                setattr_(self, name, kwargs.pop(name))
            elif name in defaults:
                setattr_(self, name, defaults[name])
            else:
                missing.append(name)
        for name in kwargs:
            how = "got multiple values for" if name in fields else "got an unexpected keyword"
            raise TypeError(f"{cls.__qualname__}.__init__() {how} argument {name!r}")
        if missing:
            names = " and ".join(map(repr, missing))
            plural = "s" if len(missing) > 1 else ""
            raise TypeError(f"{cls.__qualname__}.__init__() missing {len(missing)} required "
                            f"positional argument{plural}: {names}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            key = self._key
            return key(self) == key(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.__class__, self._key(self)))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{self.__class__.__qualname__}({fields})"

    def __setattr__(self, name: str, value: object) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # For pickle and copy, which would otherwise set the slots through __setattr__.
        return self.__class__, tuple([getattr(self, name) for name in self._fields])


def replace(obj: Any, /, **changes: Any) -> Any:
    """A copy of ``obj`` with some fields changed, as :func:`dataclasses.replace` makes it.

    For the records here and for dataclasses such as :class:`ExitStatus`. An unknown field
    is a :class:`TypeError`.
    """
    if not isinstance(obj, _Record):
        return dataclasses.replace(obj, **changes)
    cls = obj.__class__
    new = object.__new__(cls)
    setattr_ = object.__setattr__
    for name in cls._fields:
        setattr_(new, name, changes.pop(name) if name in changes else getattr(obj, name))
    if changes:
        raise TypeError(f"{cls.__qualname__}.__init__() got an unexpected keyword argument "
                        f"{next(iter(changes))!r}")
    return new


class State(_Record):
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
class Spawned(_Record):
    pid: int


class SpawnFailed(_Record):
    error: str


class Exited(_Record):
    status: ExitStatus


class Tick(_Record):
    pass


class Stop(_Record):
    grace: float
    reason: str = "stop"


class Restart(_Record):
    grace: float


Event = Union[Spawned, SpawnFailed, Exited, Tick, Stop, Restart]


# Actions
class Spawn(_Record):
    why: str  #: "start", "exit" or "manual"


class Kill(_Record):
    signal: int  #: sent to the target's process group


class Wake(_Record):
    at: float | None  #: deliver a Tick at this time; None cancels


class Finish(_Record):
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
    delay = backoff_delay(policy, attempts, rand)
    dead = replace(dead, delay=delay, recent=recent)
    if delay <= 0:
        return _respawn(policy, dead, "exit", now)
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
