"""The daemon's hold on the targets while pumps come and go: it reaps them (a child
subreaper: a dead pump's targets are re-parented to it) and tells the pump of each end, or
keeps it for the next pump; it watches through pidfds the adopted targets that are not its
children; and it keeps a pipe holder (``holder``) holding every read end.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
from pathlib import Path

from . import holder, rolelog, supervise
from .events import ExitStatus
from .kept import KeptTarget, KeptTargets
from .keptfiles import KeptFiles
from .loop import Loop
from .roles import Reaped

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


class Holding:
    """Mixed into the daemon, whose state it reads and changes (declared here)."""

    directory: Path
    files: KeptFiles
    targets: KeptTargets
    pump: Any  #: the running pump (``forking.ForkedPump``), or None
    pump_sock: socket.socket | None
    machine: supervise.State
    loop: Loop
    selector: selectors.BaseSelector

    def _pump_died(self, status: ExitStatus) -> None:
        raise NotImplementedError  # the daemon's

    def _reap(self) -> None:
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            status = ExitStatus.from_wait_status(pid, raw)
            if self.pump is not None and pid == self.pump.pid:
                self._pump_died(status)
                continue
            if pid == self.targets.holder:
                self.targets.holder = None
                # Killed: replaced. Ended by itself (it could not start): not again.
                if status.signal is not None and not supervise.ending(self.machine):
                    self._hold()
                continue
            target = self.targets.by_pid(pid)
            if target is not None:
                self._target_reaped(target, status)
            # else: an orphaned grandchild, reaped so that no zombie stays

    def _hold(self) -> None:
        """A pipe holder for every read end (``holder``), in place of the one before."""
        if not holder.enabled():
            return
        old = self.targets.holder
        try:
            self.targets.holder = holder.start(str(self.directory), self.files.held())
        except OSError as exc:  # a process limit: the supervisors hold the pipes as before
            rolelog.report("fork", f"immortal: daemon: cannot start a pipe holder ({exc})\n")
            return
        if old is not None:
            os.kill(old, signal.SIGKILL)  # our child, not reaped yet: its pid is its own

    def _watch_stranger(self) -> None:
        """Watch the adopted targets that are not our children
        (``KeptTarget.watch_stranger``)."""
        for target in self.targets:
            ended = target.watch_stranger()
            if ended is not None:
                self._target_reaped(target, ended)
            elif target.stranger >= 0:
                self.loop.watch(target.stranger, self._on_stranger)

    def _on_stranger(self, fd: int) -> None:
        target = self.targets.by_stranger(fd)
        if target is not None:
            self.selector.unregister(fd)
            ended = target.stranger_ended()
            if ended is not None:
                self._target_reaped(target, ended)

    def _target_reaped(self, target: KeptTarget, status: ExitStatus) -> None:
        """An adopted target died: tell its pump, or keep it for the next pump."""
        status = target.reaped(status)
        pid = target.pid
        if self.pump is not None and self.pump_sock is not None and pid is not None:
            try:
                self.pump_sock.send(Reaped(pid, status).to_bytes())
                target.pid = None
                return
            except OSError:
                pass
        target.exit = status
