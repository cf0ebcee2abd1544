"""``status.json``: the group's state as its pump, the file's one writer, records it.

Built from the machine's state (``supervise``), the target, and the monitors' counts; a
write that fails is reported in the pump's log, never fatal (a removed instance directory
is put back by ``dirwatch``, which writes it again).
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

from . import rolelog
from ._linux import process_start_time
from .state import Status, write_json

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from .monitoring import Host
    from .process import Child
    from .spec import Spec
    from .supervise import State

FILE = "status.json"


class StatusFile:
    def __init__(self, spec: Spec, started_wall: float, daemon_pid: int | None) -> None:
        self.spec = spec
        self.path = Path(spec.directory) / FILE
        self.directory = str(Path(spec.directory))
        self.started_wall = started_wall
        self.daemon_pid = daemon_pid
        self._start_times: dict[int, int | None] = {}

    def record(self, machine: State, target: Child | None, host: Host | None,
               backoff_until: float | None) -> Status:
        """The group's state; ``backoff_until``: when the next spawn is due, in a backoff
        (``time.monotonic()``)."""
        m = machine
        pids = {"pump": os.getpid()}
        if self.daemon_pid:
            pids["daemon"] = self.daemon_pid
        if target is not None and m.pid is not None:
            pids["target"] = target.pid
        next_at = None
        if backoff_until is not None:
            next_at = time.time() + (backoff_until - time.monotonic())
        status = Status(
            name=self.spec.name, state=m.phase, strategy=self.spec.strategy.value, pids=pids,
            start_times={role: self._start_time(pid) for role, pid in pids.items()},
            restarts=m.restarts, spawned=m.spawned, last_exit=m.last_exit,
            next_restart_at=next_at, reason=m.reason, started_at=self.started_wall,
            target_started_at=target.started_wall if target else None,
            output=self.spec.log_path, directory=self.directory,
            listen=list(self.spec.listen))
        if host is not None:
            status.monitors = host.status()
            status.dropped = sum(m["dropped"] for m in status.monitors.values())
        return status

    def write(self, data: dict[str, Any]) -> None:
        try:
            write_json(self.path, data)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                rolelog.report("status", f"immortal: pump: cannot write status: {exc}\n")

    def forget(self, pid: int) -> None:
        """A dead target's pid: it may come back as another process."""
        self._start_times.pop(pid, None)

    def _start_time(self, pid: int) -> int | None:
        """A process's kernel start time, read from /proc once per pid (not per write)."""
        known = self._start_times.get(pid)
        if known is None:
            known = self._start_times[pid] = process_start_time(pid)
            if len(self._start_times) > 8:  # only the daemon, the pump and targets matter
                self._start_times = {pid: known}
        return known
