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

from . import rolelog
from ._linux import process_start_time
from .machine import BACKOFF
from .state import InstanceStatus, Status, read_json, write_json
from .workers import group_phase

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from .events import ExitStatus
    from .machine import State
    from .spec import Spec
    from .workers import Instance, Run

FILE = "status.json"
#: a failed write is tried again after this many seconds, doubled at each failure up to
#: ``RETRY_MAX``: a few writes a minute while the disk is full, none once it has room
RETRY_FIRST = 1.0
RETRY_MAX = 30.0


def _backoff_until(m: State) -> float | None:
    """When the next spawn is due, in a backoff (wall clock)."""
    if m.phase != BACKOFF or m.deadline is None:
        return None
    return time.time() + (m.deadline - time.monotonic())


def _labelled(runs: Sequence[Run], key: str) -> str | None:
    """A program's ``comment`` or ``user``; in a group of several programs, each one's
    that has it, named (``web: www-data, worker: jobs``)."""
    found = [(run.name, getattr(run.spec, key)) for run in runs
             if getattr(run.spec, key) is not None]
    if not found:
        return None
    if len(found) == 1 and not found[0][0]:
        return str(found[0][1])
    return ", ".join(f"{name}: {value}" for name, value in found)


class StatusFile:
    def __init__(self, spec: Spec, started_wall: float, daemon_pid: int | None) -> None:
        self.spec = spec
        self.path = Path(spec.directory) / FILE
        self.directory = str(Path(spec.directory))
        self.started_wall = started_wall
        self.daemon_pid = daemon_pid
        #: the last exit of any instance (a group of several; a group of one's is its
        #: machine's)
        self.last_exit: ExitStatus | None = None
        self._start_times: dict[int, int | None] = {}
        #: when a failed write is to be tried again (monotonic); None while none failed
        self.retry_at: float | None = None
        self._retry_after = RETRY_FIRST

    def record(self, runs: Sequence[Run]) -> Status:
        """The group's state: a group of one's from its one machine and target, as it
        always read; a group of several's from all, with each instance's own under
        ``instances`` (ready: every instance is), and in a group of several programs each
        program's under ``programs``."""
        instances = [inst for run in runs for inst in run.instances]
        several = bool(self.spec.programs)
        if len(instances) == 1 and not several:
            status = self._one(instances[0])
        else:
            status = self._several(instances)
        status.listen = list(self.spec.listening)
        status.comment, status.user = _labelled(runs, "comment"), _labelled(runs, "user")
        status.monitors, status.dropped = _counts(runs)
        if several:
            status.output = None  # each program's is its own (spec.json)
        return status

    def _pids(self) -> dict[str, int]:
        pids = {"pump": os.getpid()}
        if self.daemon_pid:
            pids["daemon"] = self.daemon_pid
        return pids

    def _one(self, inst: Instance) -> Status:
        m, target = inst.machine, inst.target
        pids = self._pids()
        if target is not None and m.pid is not None:
            pids["target"] = target.pid
        return Status(
            name=self.spec.name, state=m.phase, strategy=self.spec.strategy.value, pids=pids,
            start_times={role: self._start_time(pid) for role, pid in pids.items()},
            restarts=m.restarts, spawned=m.spawned, last_exit=m.last_exit,
            next_restart_at=_backoff_until(m), reason=m.reason, started_at=self.started_wall,
            target_started_at=target.started_wall if target else None,
            output=self.spec.log_path, directory=self.directory,
            ready=inst.ready.ready and target is not None, notify_status=inst.ready.notice)

    def _several(self, instances: Sequence[Instance]) -> Status:
        pids = self._pids()
        each = []
        for inst in instances:
            m, target = inst.machine, inst.target
            pid = target.pid if target is not None and m.pid is not None else None
            each.append(InstanceStatus(
                instance=inst.k, program=inst.program or None, state=m.phase, pid=pid,
                start_time=self._start_time(pid) if pid else None,
                started_at=target.started_wall if pid and target else None,
                restarts=m.restarts, spawned=m.spawned, last_exit=m.last_exit,
                next_restart_at=_backoff_until(m), reason=m.reason,
                ready=inst.ready.ready and pid is not None, notify_status=inst.ready.notice))
        phase = group_phase(inst.machine.phase for inst in instances)
        reasons = [inst.machine.reason for inst in instances if inst.machine.reason]
        return Status(
            name=self.spec.name, state=phase, strategy=self.spec.strategy.value, pids=pids,
            start_times={role: self._start_time(pid) for role, pid in pids.items()},
            restarts=sum(e.restarts for e in each), spawned=sum(e.spawned for e in each),
            last_exit=self.last_exit, reason=reasons[-1] if reasons else None,
            started_at=self.started_wall, output=self.spec.log_path,
            directory=self.directory, instances=each,
            ready=all(e.ready or e.finished for e in each))

    def write(self, data: dict[str, Any]) -> None:
        """Write ``data``; a failed write (a full disk, a directory made read-only) is
        written again at ``retry_at`` by the pump's loop, later each time, until one
        succeeds: ``status`` and ``stop`` would otherwise read pids dead for good
        (supervisors replaced meanwhile) once the disk has room again."""
        try:
            write_json(self.path, data)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                rolelog.report("status", f"immortal: pump: cannot write status: {exc}\n")
                self.retry_at = time.monotonic() + self._retry_after
                self._retry_after = min(2 * self._retry_after, RETRY_MAX)
            return
        self.retry_at = None
        self._retry_after = RETRY_FIRST

    def write_counts(self, runs: Sequence[Run]) -> None:
        """The monitors' counts alone, into the status the file holds (a drain: the group
        it ends has no supervisor left, and its state stays the dead pump's)."""
        data = read_json(self.path)
        if data is not None:
            data["monitors"], data["dropped"] = _counts(runs)
            self.write(data)

    def forget(self, pid: int) -> None:
        """A dead target's pid: it may come back as another process."""
        self._start_times.pop(pid, None)

    def _start_time(self, pid: int) -> int | None:
        """A process's kernel start time, read from /proc once per pid (not per write)."""
        known = self._start_times.get(pid)
        if known is None:
            known = self._start_times[pid] = process_start_time(pid)
            if len(self._start_times) > 8 + 2 * sum(v.workers for v in self.spec.each()):
                # only the daemon, the pump and the targets matter
                self._start_times = {pid: known}
        return known


def _counts(runs: Sequence[Run]) -> tuple[dict[str, dict[str, Any]], int]:
    """Per monitor (``program/monitor`` in a group of several programs), its counts; and
    the lines dropped, all monitors together."""
    found: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run.host is not None:
            for name, counts in run.host.status().items():
                found[f"{run.name}/{name}" if run.name else name] = counts
    return found, sum(counts["dropped"] for counts in found.values())
