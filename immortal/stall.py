"""Telling a pump that no longer drains the target's output: frozen, or stuck in a monitor.

The daemon holds both ends of the target's pipes and the journal, whose ledger the pump
updates as it works (``ledger.Ledger``: a read counter, each monitor's marks, and "a call
into monitor #i runs since t"). ``Watch`` arms a one-shot epoll on the pipes' read ends:
it fires once output is waiting, and the daemon then compares the ledger after ``AFTER``
seconds. A ledger that did not change while output still waits in a pipe means the pump has
stalled: ``stalled.json`` in the instance directory says since when and, if a monitor call
has not returned, which monitor and since when (``state.read_status`` shows it). While
output flows the daemon wakes once per period; once a period passes with nothing waiting
and nothing done, the epoll is armed again and the daemon sleeps until the next output:
no wake-up at all while the target is quiet.

A stalled pump is reported, not replaced. It is stopped on purpose (SIGSTOP, a debugger),
or it waits in a monitor's call: a new pump would call the same monitor with the same
lines, most likely to wait again, and killing the pump would throw away that monitor's
state. Whoever reads the status can kill the pump; the daemon then starts a new one. (While
the daemon waits to start a dead pump's successor, nobody drains the output either, and
the status may say so; the new pump starts the watch afresh.)

Without a daemon (``unattached``, ``development``) nothing watches the pump: a stall shows
only as a target blocked in its writes and a status that does not change.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ._linux import pipe_backlog
from .ledger import Ledger
from .state import write_json

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

AFTER = 3.0  #: seconds without progress, output waiting, before a pump counts as stalled
FILE = "stalled.json"
_ONESHOT = select.EPOLLIN | select.EPOLLONESHOT


class Watch:
    """The daemon's watch on its pump. Register ``fileno()`` for reading; call ``ready()``
    when it is readable and ``tick()`` once ``deadline`` has passed."""

    def __init__(self, fds: Sequence[int], ledger: Ledger | Sequence[Ledger],
                 monitors: Sequence[str],
                 directory: Path, after: float = AFTER,
                 clock: Callable[[], float] = time.monotonic,
                 busy: Sequence[tuple[Ledger, Sequence[str]]] | None = None) -> None:
        self._fds = tuple(fds)
        # One journal per instance of a group of several (``workers``); the first holds
        # the monitors' "busy since" words (each program's first, in a group of several
        # programs: ``busy``, its ledger and its monitors).
        self._ledgers = (ledger,) if isinstance(ledger, Ledger) else tuple(ledger)
        self._busy = list(busy) if busy is not None else [(self._ledgers[0], tuple(monitors))]
        self._path = directory / FILE
        self._after = after
        self._clock = clock
        self._epoll = select.epoll()
        for fd in self._fds:
            self._epoll.register(fd, _ONESHOT)
        self.deadline: float | None = None  #: when to ``tick()``; None while idle
        self._seen = b""  # the ledger at the start of the period
        self._seen_at = 0.0
        self.stalled: dict[str, Any] | None = None
        self._looked: tuple[bytes, bool] | None = None  # drains(): the ledger, output waiting
        self._clear_file()

    def fileno(self) -> int:
        return self._epoll.fileno()

    def pipes(self, fds: Sequence[int], ledgers: Sequence[Ledger],
              busy: Sequence[tuple[Ledger, Sequence[str]]] | None = None) -> None:
        """Watch these pipes and ledgers from now on (a group scaled up or down), before
        any of the old ones is closed."""
        for fd in self._fds:
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass
        self._fds = tuple(fds)
        self._ledgers = tuple(ledgers)
        self._looked = None
        names = self._busy[0][1]
        self._busy = list(busy) if busy is not None else [(self._ledgers[0], names)]
        for fd in self._fds:
            self._epoll.register(fd, _ONESHOT)

    def drains(self) -> bool:
        """Whether the pump may be vouched for at this look (a watchdog's ping): not if
        output waited at the last look and waits now, the ledger unchanged in between. A
        period of the pings, not ``after``: the service manager hears of a frozen pump
        before the status does."""
        snapshot = self._snapshot()
        waiting = any(pipe_backlog(fd) for fd in self._fds)
        stuck = waiting and self._looked == (snapshot, True)
        self._looked = (snapshot, waiting)
        return self.stalled is None and not stuck

    def ready(self) -> None:
        """Output waits in a pipe (the one-shot fired): look again in ``after`` seconds."""
        self._epoll.poll(0)  # consume the event; the fd stays disarmed until re-armed
        if self.deadline is None:
            self._start(self._clock())

    def restart(self) -> None:
        """A new pump: whatever the old one did, watch afresh."""
        self._unstall()
        self._looked = None
        self.deadline = None
        self._arm()

    def tick(self) -> None:
        """At the deadline: progress, a stall, or idle (sleep until the next output)."""
        now = self._clock()
        if self.deadline is None or now < self.deadline:
            return
        snapshot = self._snapshot()
        waiting = any(pipe_backlog(fd) for fd in self._fds)
        if snapshot != self._seen:
            self._unstall()
            self._start(now, snapshot)  # output flows: check again, no re-arming
        elif waiting:
            self._stall()
            self.deadline = now + self._after  # to see it end
        else:
            self._unstall()
            self.deadline = None
            self._arm()

    def _start(self, now: float, snapshot: bytes | None = None) -> None:
        self._seen = self._snapshot() if snapshot is None else snapshot
        self._seen_at = now
        self.deadline = now + self._after

    def _snapshot(self) -> bytes:
        return b"".join(ledger.snapshot() for ledger in self._ledgers)

    def _arm(self) -> None:
        for fd in self._fds:
            try:
                self._epoll.modify(fd, _ONESHOT)
            except OSError:
                pass  # a pipe closed under us: the group is ending

    def _stall(self) -> None:
        if self.stalled is not None:
            return
        wall = time.time()
        self.stalled = {"since": wall - (self._clock() - self._seen_at), "monitor": None,
                        "monitor_since": None}
        now_ns = time.monotonic_ns()
        for ledger, monitors in self._busy:
            for slot, name in enumerate(monitors):
                busy = ledger.busy(slot)
                if busy:
                    self.stalled.update(monitor=name,
                                        monitor_since=wall - (now_ns - busy) / 1e9)
                    break
            if self.stalled["monitor"] is not None:
                break
        try:
            write_json(self._path, self.stalled)
        except OSError:
            pass  # status shows no stall; nothing else depends on it

    def _unstall(self) -> None:
        if self.stalled is not None:
            self.stalled = None
            self._clear_file()

    def _clear_file(self) -> None:
        try:
            os.unlink(self._path)
        except OSError:
            pass

    def abandon(self) -> None:
        """Close the epoll and nothing else (``stalled.json`` is another daemon's now)."""
        self._epoll.close()

    def close(self) -> None:
        self._unstall()
        self._epoll.close()
