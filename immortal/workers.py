"""The instances of a group's program, as its pump holds them (``workers``).

A group runs ``workers`` instances of its program under one daemon and one pump. The pump
keeps one :class:`Instance` for each: its own pipes and journal (``Streams``), its own
target, its own restart machine (``supervise``: the machine is pure, so each instance
simply has its own state, its own restart record and backoff) and its own readiness
(``readywatch.ReadyWatch``). A group of one is instance
0 alone, stored and shown as groups always were.

An instance is keyed by ``(program, k)``: ``program`` is 0 while a group runs one program
(a group of several programs would number them), ``k`` counts from 0. What the group shows
of them together (``group_phase``) is here too.
"""

from __future__ import annotations

from collections.abc import Iterable

from .machine import BACKOFF, FATAL, FINAL, RESTARTING, RUNNING, SPAWNING, STOPPED, STOPPING
from .machine import Phase, State

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from .process import Child
    from .readywatch import ReadyWatch
    from .streams import Streams


class Instance:
    """One instance of the program: its streams, its target, its machine, its readiness."""

    def __init__(self, k: int, streams: Streams, ready: ReadyWatch, program: int = 0) -> None:
        self.program = program  #: which program of the group (0: a group runs one)
        self.k = k  #: its number among the program's instances, from 0
        self.streams = streams
        self.ready = ready  #: its current target's readiness
        self.target: Child | None = None
        self.machine = State()
        self.deadline: float | None = None  #: when its machine wants a Tick
        self.watched = -1  #: its target's pidfd, registered in the loop's selector

    @property
    def key(self) -> tuple[int, int]:
        return self.program, self.k

    @property
    def final(self) -> bool:
        """Its machine has ended: nothing of it runs or will be spawned again."""
        return self.machine.phase in FINAL

    def __repr__(self) -> str:
        return f"<Instance {self.k} {self.machine.phase} target {self.target!r}>"


def shown(k: int, count: int) -> int | None:
    """The instance number monitors and exit statuses are given: ``k`` in a group of
    several, None in a group of one (whose lines and events read as they always did)."""
    return k if count > 1 else None


def group_phase(phases: Iterable[Phase]) -> Phase:
    """The group's phase, from its instances': one instance's own; for several, the
    phase they share, else stopping while any stops, running while any runs, then the
    first of spawning, restarting, backoff; once all have ended, fatal if any gave up."""
    every = list(phases)
    if len(set(every)) == 1:
        return every[0]
    if all(phase in FINAL for phase in every):
        return FATAL if FATAL in every else STOPPED
    for phase in (STOPPING, RUNNING, SPAWNING, RESTARTING, BACKOFF):
        if phase in every:
            return phase
    return every[0]
