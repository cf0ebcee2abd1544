"""The group's files the daemon keeps for the group's life and hands to every pump.

Each instance's two pipes (both ends) and relay journal, by instance (``roles.Key``: a
group's one program's instance 0 travels as ``Fds.out``, ``err`` and ``journal``, its next
ones as ``Fds.more``, a group of several programs' as ``Fds.named``); and the group's own:
the message channel (both ends), the sd_notify socket (``ready="notify"``, one for all the
programs) and the listen sockets (every program's, at fds 3, 4, ...). An instance that was
rolled has spare pipes too (``spare``), made by the pump and sent here. Those a predecessor
handed over are taken as they are (made not inheritable: a pump is given them by number);
the others are made here.
"""

from __future__ import annotations

import os

from . import notify
from . import listen as listening
from .readiness import NOTIFY
from .relay import make_channel, make_journal, make_pipe
from .roles import Fds, Files, Key
from .rolefds import Pipes

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from .spec import Spec


def wanted(spec: Spec) -> list[Key]:
    """The instances ``spec`` runs, in order: each program's, numbered from 0."""
    return [(view.program, k) for view in spec.each() for k in range(view.workers)]


class KeptFiles:
    def __init__(self, fds: Fds, spec: Spec) -> None:
        #: every instance's files, by instance
        self.each: dict[Key, Files] = dict(fds.instances())
        #: the spare pipes of the instances that have some (``spare``), by instance
        self.spare: dict[Key, Pipes] = fds.spares()
        if ("", 0) not in self.each and fds.out and fds.err:  # an orphan's, reopened
            self.each[("", 0)] = (*fds.out, *fds.err, make_journal())
        missing = [key for key in wanted(spec) if key not in self.each]
        self.each.update(zip(missing, self.make(len(missing))))
        self.channel: tuple[int, ...] | None = fds.channel or (
            make_channel() if spec.channel and not spec.several else None)
        # The sd_notify socket: a datagram sent while no pump runs waits in it for the next.
        self.notify = fds.notify
        if self.notify is None and any(view.ready == NOTIFY for view in spec.each()):
            self.notify = notify.make(spec.directory)
        # Held for the group's life, handed to every pump, never accepted on.
        self.listen = fds.listen
        # The foreground's console (``--console``): every pump echoes the output there.
        self.console = fds.console
        for fd in (*(fd for files in self.each.values() for fd in files),
                   *(fd for pipes in self.spare.values() for fd in pipes),
                   *(self.channel or ()), *([] if self.notify is None else [self.notify]),
                   *(self.console or ())):
            os.set_inheritable(fd, False)

    def keys(self) -> list[Key]:
        """The instances whose files are kept."""
        return sorted(self.each)

    def fds(self, **others: Any) -> Fds:
        """What a pump is handed: these files, with ``others`` (the lock, its lifeline...)."""
        return Fds(channel=self.channel, notify=self.notify, listen=self.listen,
                   console=self.console, **others).with_instances(self.each).with_spares(
            self.spare)

    def keep_spare(self, key: Key, pipes: list[int]) -> None:
        """The pump made spare pipes for ``key`` (``roles.Spare``): kept from now on."""
        if key not in self.each or len(pipes) != 4:
            KeptFiles.close([tuple(pipes)])
            return
        for fd in pipes:
            os.set_inheritable(fd, False)
        old = self.spare.get(key)
        self.spare[key] = (pipes[0], pipes[1], pipes[2], pipes[3])
        if old is not None:  # a dead pump's, which its successor was not handed yet
            KeptFiles.close([old])

    def swap(self, key: Key) -> None:
        """A replacement took the slot of ``key`` (``Target(swap=True)``): its spare pipes
        are its pipes, and its pipes the spare ones."""
        pipes = self.spare.get(key)
        files = self.each.get(key)
        if pipes is None or files is None:
            return
        self.spare[key] = files[0:4]
        self.each[key] = (*pipes, files[4])

    def watched(self) -> tuple[list[int], list[int]]:
        """Every instance's pipes' read ends, and journals (what the stall watch reads),
        each program's instance 0 first among its own."""
        files = [self.each[key] for key in self.keys()]
        return ([fd for each in files for fd in each[0:3:2]], [each[4] for each in files])

    def held(self) -> list[int]:
        """What a pipe holder holds (``holder``), in its order: per instance (of every
        program, by key) its journal and its pipes' read ends, then the channel's end; a
        group of one program's instance 0's journal first, so that a start adopting the
        target finds it at the holder's fd 3."""
        held = [fd for files in (self.each[key] for key in self.keys())
                for fd in (files[4], files[0], files[2])]
        return [*held, *(self.channel[:1] if self.channel else ())]

    @staticmethod
    def make(count: int) -> list[Files]:
        """The files of ``count`` new instances, not inheritable (none if one fails)."""
        made: list[Files] = []
        try:
            for _ in range(count):
                made.append((*make_pipe(), *make_pipe(), make_journal()))
        except OSError:
            KeptFiles.close(made)
            raise
        for fd in (fd for files in made for fd in files):
            os.set_inheritable(fd, False)
        return made

    def drop(self, program: str, workers: int) -> list[tuple[int, ...]]:
        """The instances of ``program`` from ``workers`` on retired: their files (and
        spare pipes), no longer kept (to be closed once nothing watches them: ``close``)."""
        gone = [key for key in self.each if key[0] == program and key[1] >= workers]
        spares = [self.spare.pop(key) for key in sorted(gone) if key in self.spare]
        return [*(self.each.pop(key) for key in sorted(gone)), *spares]

    @staticmethod
    def close(gone: Sequence[tuple[int, ...]]) -> None:
        for fd in (fd for files in gone for fd in files):
            os.close(fd)

    def end(self, spec: Spec) -> None:
        """The group ended: the notify socket's path and the unix listen sockets' files go
        (the latter once nobody listens on them)."""
        if self.notify is not None:
            notify.remove(spec.directory)
        if self.listen:
            listening.close(self.listen)
            listening.release(spec.listening)
