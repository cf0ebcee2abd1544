"""The instances of a group's programs, as its pump holds them (``workers``, ``programs``).

A group runs ``workers`` instances of each of its programs under one daemon and one pump.
The pump keeps one :class:`Run` per program (its view of the spec, its monitors, its
spawner, its instances) and one :class:`Instance` per instance: its own pipes and journal
(``Streams``), its own target, its own restart machine (``supervise``: the machine is pure,
so each instance simply has its own state, its own restart record and backoff) and its own
readiness (``readywatch.ReadyWatch``). A group of one is instance 0 of its one program
(named ""), stored and shown as groups always were.

An instance is keyed by ``(program, k)`` (``roles.Key``): ``program`` is "" for a group's
one program, ``k`` counts from 0 in each program. What the group shows of them together
(``group_phase``) is here too.
"""

from __future__ import annotations

from .machine import FINAL, State, group_phase  # noqa: F401  (group_phase: kept here)

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from .filewatch import FileWatch
    from .memwatch import MemoryWatch
    from .monitoring import Host
    from .process import Child
    from .readywatch import ReadyWatch
    from .spawner import Spawner
    from .spec import Spec
    from .streams import Streams


class Run:
    """One program of the group as the pump runs it."""

    def __init__(self, spec: Spec, spawner: Spawner) -> None:
        self.name = spec.program  #: "" for a group's one program
        self.spec = spec  #: its view (``Spec.view``): its own fields, the group's name
        self.spawner = spawner
        self.host: Host | None = None  #: its monitors, once loaded
        self.instances: list[Instance] = []  #: by number
        self.retiring: int | None = None  #: a scale down: the instances from this on retire
        self.files: FileWatch | None = None  #: its ``watch=`` (``pumpops``), once watched
        self.memory: MemoryWatch | None = None  #: its ``memory_limit=``

    def shown(self, inst: Instance) -> int | None:
        """The number monitors and exit statuses are given for ``inst`` (``shown``)."""
        return shown(inst.k, len(self.instances))

    def __repr__(self) -> str:
        return f"<Run {self.name!r} {len(self.instances)} instance(s)>"


class Instance:
    """One instance of a program: its streams, its target, its machine, its readiness."""

    def __init__(self, k: int, streams: Streams, ready: ReadyWatch, run: Run) -> None:
        self.run = run  #: its program
        self.program = run.name  #: its program's name ("": a group's one program)
        self.k = k  #: its number among the program's instances, from 0
        self.streams = streams
        self.ready = ready  #: its current target's readiness
        self.target: Child | None = None
        self.machine = State()
        self.deadline: float | None = None  #: when its machine wants a Tick
        self.watched = -1  #: its target's pidfd, registered in the loop's selector

    @property
    def key(self) -> tuple[str, int]:
        return self.program, self.k

    @property
    def slot(self) -> int | str:
        """Its name in a rolling restart and in the words about it: ``k``, or
        ``PROGRAM:k`` in a group of several programs."""
        return label(self.program, self.k)

    @property
    def final(self) -> bool:
        """Its machine has ended: nothing of it runs or will be spawned again."""
        return self.machine.phase in FINAL

    def __repr__(self) -> str:
        return f"<Instance {self.slot} {self.machine.phase} target {self.target!r}>"


def label(program: str, k: int) -> int | str:
    """Instance ``k`` of ``program`` in words: ``k`` for a group's one program, else
    ``PROGRAM:k``."""
    return f"{program}:{k}" if program else k


def shown(k: int, count: int) -> int | None:
    """The instance number monitors and exit statuses are given: ``k`` in a program of
    several instances, None in one of one (whose lines and events read as they always
    did)."""
    return k if count > 1 else None
