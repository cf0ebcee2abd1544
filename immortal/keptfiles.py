"""The group's files the daemon keeps for the group's life and hands to every pump.

Each instance's two pipes (both ends) and relay journal: instance 0's as ``Fds.out``,
``err`` and ``journal``, instance K's as ``Fds.more[K-1]``; and the group's own: the
message channel (both ends), the sd_notify socket (``ready="notify"``) and the listen
sockets (at fds 3, 4, ...). Those a predecessor handed over are taken as they are (made
not inheritable: a pump is given them by number); the others are made here.
"""

from __future__ import annotations

import os

from . import notify
from . import listen as listening
from .readiness import NOTIFY
from .relay import make_channel, make_journal, make_pipe
from .roles import Fds

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

    from .spec import Spec

#: one instance's files as ``Fds.more`` lists them: out read, out write, err read, err
#: write, journal
Files = tuple[int, int, int, int, int]


class KeptFiles:
    def __init__(self, fds: Fds, spec: Spec) -> None:
        self.out, self.err = (fds.out, fds.err) if fds.out and fds.err \
            else (make_pipe(), make_pipe())
        self.journal = fds.journal if fds.journal is not None else make_journal()
        self.more: list[Files] = [*(fds.more or ())]
        self.more.extend(self.make(spec.workers - 1 - len(self.more)))
        self.channel: tuple[int, ...] | None = fds.channel or (
            make_channel() if spec.channel else None)
        # The sd_notify socket: a datagram sent while no pump runs waits in it for the next.
        self.notify = fds.notify
        if self.notify is None and spec.ready == NOTIFY:
            self.notify = notify.make(spec.directory)
        # Held for the group's life, handed to every pump, never accepted on.
        self.listen = fds.listen
        # The foreground's console (``--console``): every pump echoes the output there.
        self.console = fds.console
        for fd in (*self.out, *self.err, self.journal, *(self.channel or ()),
                   *([] if self.notify is None else [self.notify]), *(self.console or ())):
            os.set_inheritable(fd, False)

    @property
    def count(self) -> int:
        """The instances whose files are kept."""
        return 1 + len(self.more)

    def fds(self, **others: Any) -> Fds:
        """What a pump is handed: these files, with ``others`` (the lock, its lifeline...)."""
        return Fds(out=self.out, err=self.err, journal=self.journal, channel=self.channel,
                   notify=self.notify, listen=self.listen, more=tuple(self.more) or None,
                   console=self.console, **others)

    def watched(self) -> tuple[list[int], list[int]]:
        """Every instance's pipes' read ends, and journals (what the stall watch reads)."""
        return ([self.out[0], self.err[0], *(fd for files in self.more for fd in files[0:3:2])],
                [self.journal, *(files[4] for files in self.more)])

    def held(self) -> list[int]:
        """What a pipe holder holds (``holder``), in its order: per instance its journal
        and its pipes' read ends, then the channel's end; instance 0's journal first, so
        that a start adopting the target finds it at the holder's fd 3."""
        held = [self.journal, self.out[0], self.err[0]]
        for files in self.more:
            held.extend((files[4], files[0], files[2]))
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

    def drop(self, workers: int) -> list[Files]:
        """The instances from ``workers`` on retired: their files, no longer kept (to be
        closed once nothing watches them: ``close``)."""
        gone = self.more[workers - 1:]
        del self.more[workers - 1:]
        return gone

    @staticmethod
    def close(gone: list[Files]) -> None:
        for fd in (fd for files in gone for fd in files):
            os.close(fd)

    def end(self, spec: Spec) -> None:
        """The group ended: the notify socket's path and the unix listen sockets' files go
        (the latter once nobody listens on them)."""
        if self.notify is not None:
            notify.remove(spec.directory)
        if self.listen:
            listening.close(self.listen)
            listening.release(spec.listen)
