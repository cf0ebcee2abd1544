"""The pump's lifelines: what its daemon says on their socket (a hello, a command, a
scale's instances to grow or retire, a reload, a target it reaped for the pump), its death
(``pumptakeover``), and the end of the caller's pipe in ``development`` (the group stops
with its caller)."""

from __future__ import annotations

import os
import socket
from selectors import BaseSelector

from . import rolelog
from .errors import ImmortalError
from .events import ExitStatus
from .link import DaemonLink
from .roles import Command, Grow, Hello, Reaped, Reload, Retire, Rewrite
from .workers import Instance, Run

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Lifelines:
    """What the pump (``pump.Pump``) does with its lifelines; the rest it provides (no
    stubs here: this part comes before ``PumpStart`` in the pump's bases)."""

    link: DaemonLink
    selector: BaseSelector
    runs: dict[str, Run]
    instances: list[Instance]
    _daemon_died: Callable[[], None]
    _write_status: Callable[[], None]
    command: Callable[[dict[str, Any]], dict[str, Any]]
    grow: Callable[[str, int, tuple[int, ...]], None]
    retire: Callable[[Run, int], None]
    reload: Callable[..., None]
    _target_died: Callable[[Instance, ExitStatus], None]
    _stop_all: Callable[..., None]

    def _on_daemon(self, sock: socket.socket) -> None:
        gone, message = self.link.receive()
        if gone:
            self._daemon_died()
            return
        # Hello: the daemon we were started for is up (hand_over); Rewrite: it put the
        # instance directory back.
        if isinstance(message, (Hello, Rewrite)):
            self._write_status()
        elif isinstance(message, Command):
            try:
                self.command(message.request)
            except ImmortalError as exc:
                rolelog.report("command", f"immortal: pump: {message.request['cmd']}: "
                                          f"{exc}\n")
        elif isinstance(message, Grow):
            self.grow(message.program, message.instance, message.fds)
        elif isinstance(message, Retire):
            run = self.runs.get(message.program)
            if run is not None:
                self.retire(run, message.workers)
        elif isinstance(message, Reload):
            self.reload()
        elif isinstance(message, Reaped) and message.pid:
            for inst in self.instances:
                target = inst.target
                if target is not None and not target.own and message.pid == target.pid:
                    target.dead(message.status)
                    self._target_died(inst, message.status)
                    break

    def _on_parent(self, fd: int) -> None:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            return
        if not data:
            self.selector.unregister(fd)
            self._stop_all("caller exited")
