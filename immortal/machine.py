"""What the restart machine (``supervise``) speaks: its phases and state, the events it
takes, the actions it answers with, and the daemon's policy for its pump.

The state, events and actions are small immutable records (see immortal/records.py): not
dataclasses, whose methods are generated and exec'd for each class, on the path of every
group start.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from .events import ExitStatus
from .phases import combined
from .records import Record


class Phase(str, Enum):
    """A phase of the machine. A ``str``: ``status.json`` and ``Status.state`` hold these
    very strings, and compare equal to them."""

    SPAWNING = "spawning"
    RUNNING = "running"
    BACKOFF = "backoff"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FATAL = "fatal"

    # "running", as the plain string reads, on every Python (3.11 changed Enum's own).
    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)


SPAWNING, RUNNING, BACKOFF, RESTARTING, STOPPING, STOPPED, FATAL = Phase
PHASES = tuple(Phase)
FINAL = (STOPPED, FATAL)


class State(Record):
    phase: Phase = SPAWNING
    pid: int | None = None
    started_at: float | None = None  #: when the current target was spawned
    attempts: int = 0  #: quick deaths in a row
    restarts: int = 0  #: respawns so far
    spawned: int = 0  #: targets spawned so far
    recent: tuple[float, ...] = ()  #: times of the latest restarts, for max_restarts
    stop_spawns: int = 0  #: spawns made to carry out a stop (``PumpPolicy``)
    deadline: float | None = None  #: when a Tick is wanted
    grace: float = 0.0  #: grace period of the stop or restart in progress
    last_exit: ExitStatus | None = None
    delay: float | None = None  #: the delay chosen after the last exit
    reason: str | None = None  #: why the group ended (final phases)
    why: str = "start"  #: why the next (or current) target is spawned


class PumpPolicy(Record):
    """The daemon's policy for its pump: the fields of ``RestartPolicy`` that the machine
    reads, and some of its own (with a ``RestartPolicy`` the machine acts as these
    defaults say). The daemon passes one or another as a target lives or not.

    - ``floor`` stands for ``QUICK_FLOOR``.
    - ``killed_at_once``: a death by SIGKILL (from outside: a pump never sends itself one)
      is replaced at once, however quick: while a target lives, it never waits with one
      supervisor (were the daemon to die in the wait, it would be left to nobody).
    - ``restart=False``: a death, or a failed spawn, ends the group (the pump said it
      finished, or the group never started).
    - ``stop_spawns``: how many may be spawned to carry out a stop when none runs (a stop
      between pumps, or a pump that died during the stop, while a target lives: the next
      pump stops it with its grace). The stop is passed on as ``Kill(SIGTERM)`` once one
      runs; with ``Stop(grace=None)`` there is no deadline of the machine's own.
    """

    min_uptime: float = 1.0
    backoff_initial: float = 0.05
    backoff_factor: float = 2.0
    backoff_max: float = 5.0
    jitter: float = 0.0
    max_restarts: int | None = None
    window: float = 60.0
    final_exit_codes: frozenset[int] = frozenset()
    floor: float = 0.0
    killed_at_once: bool = False
    restart: bool = True
    stop_spawns: int = 0


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
    grace: float | None  #: None: told once spawned, the process stops by itself
    reason: str = "stop"
    kill: bool = False  #: KILL at once rather than TERM first (``Group.kill``)


class Restart(Record):
    grace: float
    why: str = "manual"  #: the restart record's reason: "manual", "watch", "memory"


Event = Spawned | SpawnFailed | Exited | Tick | Stop | Restart
EVENTS = (Spawned, SpawnFailed, Exited, Tick, Stop, Restart)  #: the columns of the table


# Actions
class Spawn(Record):
    why: str  #: "start", "exit", "manual" (or a restart's own why), or "stop"


class Hook(Record):
    """Tell the monitors of the new target: ``name`` is "spawn" for the group's first,
    "respawn" (with ``why``) for any other."""

    name: str
    why: str


class Kill(Record):
    signal: int  #: sent to the target's process group


class Wake(Record):
    at: float | None  #: deliver a Tick at this time; None cancels


class Finish(Record):
    phase: Phase
    reason: str


Action = Spawn | Hook | Kill | Wake | Finish


def group_phase(phases: Iterable[str]) -> Phase:
    """The group's phase, from its instances' (``phases.combined``)."""
    return Phase(combined(phases))


def final_reason(code: int) -> str:
    """Why a machine stopped on its own: its target exited with ``code``, one of its
    policy's ``final_exit_codes`` (a job that is done: ``finished``)."""
    return f"exit code {code} means do not restart"


def finished(phase: str, reason: str | None, code: int | None) -> bool:
    """Whether a machine (or an instance's status) in ``phase``, stopped for ``reason``
    after an exit with ``code``, stopped on its own: its target finished its job (a final
    exit code), not stopped by a stop. While its group runs it is done, not failing: ready
    and settled, and run again by a restart."""
    return phase == STOPPED and code is not None and reason == final_reason(code)
