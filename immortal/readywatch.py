"""The pump's side of readiness: each instance's current ``Readiness`` fed with what the
pump sees of its target (its output, its notify datagrams, its death, the clock, a probe of
its port).

The pump holds one ``ReadyWatch`` per instance (``workers``; a group of one has one), which
makes a ``Readiness`` at each spawn of that instance and tells ``changed`` when the target's
state moves (ready, or failed): during a start the pump then answers the caller once every
instance is ready, or gives the start up; afterwards it records the state in
``status.json``. A new ``STATUS=`` text with no move of the state is told to ``noticed``,
which records it too: ``status`` shows the text before and after the target is ready, and
the status is rewritten only when a datagram comes. The notify socket is the group's:
``route`` reads it and hands each datagram to the watch of the target that sent it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping

from . import notify, rolelog
from .events import ExitStatus
from .readiness import PORT, Mode, Readiness

PROBE_TIMEOUT = 0.25  # a connect to 127.0.0.1 answers at once, unless the backlog is full


def connects(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:``port`` succeeds now (closed at once)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


class ReadyWatch:
    """One instance's readiness: ``changed(readiness)`` is called once each time its
    current target's state moves, ``noticed(readiness)`` (if given) each time its
    ``STATUS=`` text changes while the state stays."""

    def __init__(self, mode: Mode, timeout: float, changed: Callable[[Readiness], None],
                 clock: Callable[[], float] = time.monotonic,
                 probe: Callable[[int], bool] = connects,
                 noticed: Callable[[Readiness], None] | None = None) -> None:
        self.mode = mode
        self.timeout = timeout
        self.changed = changed
        self.noticed = noticed
        self.clock = clock
        self.probe = probe
        self.current: Readiness | None = None
        self._seen: str | None = None
        self._seen_notice: str | None = None

    @property
    def ready(self) -> bool:
        return self.current is not None and self.current.ready

    @property
    def notice(self) -> str | None:
        """The current target's last ``STATUS=`` text."""
        return self.current.notice if self.current is not None else None

    def spawned(self, started_at: float, known_ready: bool = False,
                notice: str | None = None) -> None:
        """A new target (spawned, or adopted: ``known_ready`` if it was ready before)."""
        current = Readiness(self.mode, self.timeout)
        current.spawned(started_at)
        if known_ready:
            current.known_ready()
        current.notice = notice
        self.current = current
        self._seen = current.state
        self._seen_notice = notice

    def lines(self, stream: str, block: bytes) -> None:
        """A block of whole lines of the target's ``stream``, while its readiness is open."""
        current = self.current
        if current is None or not current.waiting:
            return
        for line in block.decode("utf-8", "replace").splitlines():
            current.line(stream, line)
            if not current.waiting:
                break
        self.check()

    def notified(self, fields: Mapping[str, str]) -> None:
        """A notify datagram of the current target (or of a descendant of it)."""
        if self.current is not None:
            self.current.notified(fields)
            self.check()

    def exited(self, status: ExitStatus, final: bool = False) -> None:
        if self.current is not None:
            self.current.exited(status, final)
            self.check()

    def deadline(self) -> float | None:
        return self.current.deadline() if self.current is not None else None

    def due(self) -> None:
        """The loop's call at ``deadline``: a probe if one is due, then the clock."""
        current = self.current
        if current is None:
            return
        now = self.clock()
        if current.wants_probe(now) and self.mode.kind == PORT and self.mode.port:
            current.probed(self.probe(self.mode.port), now)
        current.tick(self.clock())
        self.check()

    def check(self) -> None:
        """Tell ``changed`` if the current target's state moved since last told, else
        ``noticed`` if its text did (a move is recorded with the text it came with)."""
        current = self.current
        if current is None:
            return
        notice_moved = current.notice != self._seen_notice
        self._seen_notice = current.notice
        if current.state != self._seen:
            self._seen = current.state
            self.changed(current)
        elif notice_moved and self.noticed is not None:
            self.noticed(current)


def route(sock: socket.socket, watches: Mapping[int, ReadyWatch]) -> None:
    """The notify socket is readable: each datagram goes to the watch of the running
    target (``watches``, by target pid) that sent it, or one of whose descendants did; one
    from any other process is ignored, and logged."""
    for sender, fields in notify.receive(sock):
        pid = notify.speaks_for(sender, watches)
        if pid is None:
            rolelog.report("notify", f"immortal: pump: a notify message from process "
                           f"{sender}, not a target ({' '.join(map(str, watches)) or 'none'})"
                           " or one of its descendants, was ignored\n")
            continue
        watches[pid].notified(fields)
