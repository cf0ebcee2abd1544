"""A target of the group as the daemon knows it, and keeps it between pumps: one per
instance of each of the group's programs (``workers``).

Each pump names its target to the daemon before anything can fail (``spawning``, then its
pid and start). When a pump dies, the target is re-parented to the daemon (a subreaper),
which reaps it for the next pump, or keeps its exit for that pump when none runs. An
adopted target that is not the daemon's child (its daemon died after adopting it, so it
went to init) is watched through a pidfd: that tells when it ends, not how.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

from . import _linux, orphans
from .events import ExitStatus
from .roles import Adopt, Exited, Key, Message, Spawning, Target


class KeptTarget:
    def __init__(self, adopt: Adopt | None, instance: int = 0, program: str = "") -> None:
        self.instance = instance
        self.program = program
        self.pid: int | None = adopt.pid if adopt else None
        self.started: float | None = adopt.started_wall if adopt else None  #: wall clock
        self.exit: ExitStatus | None = None  #: reaped while no pump could be told
        self.spawning: int | None = None  #: a pump is spawning one: since (boot ticks)
        self.stranger = -1  #: the pidfd on an adopted target that is not our child

    def alive(self) -> bool:
        return self.pid is not None and self.exit is None

    def heard(self, message: Message | None) -> None:
        """What a pump said of its target (other messages, and those about another
        instance's, are not about it)."""
        if not isinstance(message, (Spawning, Target, Exited)) \
                or message.instance != self.instance or message.program != self.program:
            return
        if isinstance(message, Spawning):
            self.spawning = message.since
        elif isinstance(message, Target):
            self.pid = message.pid
            self.started = message.started_wall
            self.exit = None
            self.spawning = None
        elif isinstance(message, Exited):
            if message.pid is not None and message.pid == self.pid:
                self.pid = self.started = None

    def left(self, pump_running: bool, others: frozenset[int] = frozenset()) -> bool:
        """After a pump's death: whether a target is left for the next pump to adopt.

        A known target not re-parented to us is gone already. One the pump was spawning
        but did not name (it died inside the spawn) is looked for among our children,
        leaving out ``others`` (the other instances' targets)."""
        if (self.pid is not None and self.exit is None and self.stranger < 0
                and _linux.parent_pid(self.pid) != os.getpid()):
            self.pid = self.started = None
        if self.pid is None and self.spawning is not None and not pump_running:
            found = orphans.find_spawned(self.spawning, others)
            if found is not None:
                sys.stderr.write(f"immortal: daemon: the dead pump's new target {found[0]} "
                                 "is adopted\n")
                self.pid, self.started = found
            self.spawning = None
        return self.alive()

    def adopt(self) -> Adopt | None:
        """What the next pump is to adopt: the target, with its exit if it died meanwhile."""
        if self.pid is None:
            return None
        return Adopt(self.pid, self.started, self.exit, instance=self.instance,
                     program=self.program)

    @property
    def key(self) -> Key:
        return self.program, self.instance

    def handed_over(self) -> None:
        """The next pump was started: a dead target's exit is its to report now."""
        if self.exit is not None:
            self.pid = self.exit = None

    def reaped(self, status: ExitStatus) -> ExitStatus:
        """The target's exit, with its uptime (the daemon knows its wall-clock start)."""
        if self.started is None:
            return status
        return ExitStatus(code=status.code, signal=status.signal,
                          core_dumped=status.core_dumped, pid=status.pid,
                          uptime=max(0.0, time.time() - self.started))

    def watch_stranger(self) -> ExitStatus | None:
        """Open ``stranger`` if the target is not our child; an exit (unknown status) if it
        cannot be watched, so that it counts as ended."""
        pid = self.pid
        if pid is None or self.exit is not None or _linux.parent_pid(pid) == os.getpid():
            return None
        try:
            self.stranger = _linux.pidfd_open(pid)
        except OSError:
            self.stranger = -1
        return ExitStatus(pid=pid) if self.stranger < 0 else None

    def stranger_ended(self) -> ExitStatus | None:
        """The stranger's pidfd said it ended: the fd closed, and its exit."""
        os.close(self.stranger)
        self.stranger = -1
        return ExitStatus(pid=self.pid) if self.pid is not None else None


class KeptTargets:
    """The targets of every instance of the group's programs (``workers``), one
    :class:`KeptTarget` each."""

    def __init__(self, adopts: dict[Key, Adopt], keys: list[Key]) -> None:
        self.each = [KeptTarget(adopts.get(key), key[1], key[0]) for key in keys]
        self.holder: int | None = None  #: the pipe holder's pid: a child never a target

    def __iter__(self) -> Iterator[KeptTarget]:
        return iter(self.each)

    def __len__(self) -> int:
        return len(self.each)

    def alive(self) -> bool:
        """Whether a target of the group lives (as far as the pumps said)."""
        return any(target.alive() for target in self.each)

    def heard(self, message: Message | None) -> None:
        for target in self.each:
            target.heard(message)

    def left(self, pump_running: bool) -> bool:
        """After a pump's death: whether a target is left for the next pump to adopt
        (``KeptTarget.left``, for each instance, none taken for another's)."""
        left = False
        for target in self.each:
            others = frozenset([*(t.pid for t in self.each
                                  if t is not target and t.pid is not None),
                                *([self.holder] if self.holder else [])])
            left = target.left(pump_running, others) or left
        return left

    def adopts(self) -> dict[Key, Adopt]:
        """What the next pump is to adopt, by instance."""
        return {target.key: adopt for target in self.each
                if (adopt := target.adopt()) is not None}

    def handed_over(self) -> None:
        for target in self.each:
            target.handed_over()

    def by_pid(self, pid: int) -> KeptTarget | None:
        return next((target for target in self.each if target.pid == pid), None)

    def add(self, key: Key) -> None:
        """One more instance (a scale up), with no target yet."""
        self.each.append(KeptTarget(None, key[1], key[0]))

    def drop(self, program: str, workers: int) -> None:
        """The instances of ``program`` from ``workers`` on have retired (a scale down)."""
        self.each = [target for target in self.each
                     if target.program != program or target.instance < workers]

    def count(self, program: str) -> int:
        """How many instances of ``program`` are kept."""
        return sum(1 for target in self.each if target.program == program)

    def by_stranger(self, fd: int) -> KeptTarget | None:
        return next((target for target in self.each if target.stranger == fd), None)
