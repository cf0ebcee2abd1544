"""A group's ``Status``: the record its pump writes to ``status.json``, how a reader reads
it (running or not, proven by pid and start time), and the group's ``Lock``.

Where the files live and how they are written is ``instance.py``'s, the words of a status
(``str(status)``) ``statewords.py``'s; their names stay importable from here.
"""

from __future__ import annotations

import os

from ._linux import is_alive
from .errors import AlreadyRunning, ImmortalError
from .instance import (  # noqa: F401  (the instance directory's names, kept importable here)
    ROOT_HOME,
    SCALES,
    SOCKET_NAME,
    UNIX_PATH_MAX,
    UNROLLED,
    check_dir,
    check_socket_path,
    default_home,
    ensure_dir,
    home,
    instance_dir,
    lock_held,
    names_file,
    read_json,
    read_scales,
    try_lock,
    wait_lock,
    write_json,
)
from .records import MutableRecord, field
from .statewords import (  # noqa: F401  (the words of a Status, kept importable here)
    FINAL_STATES,
    GONE,
    KILLED,
    LEFT_ENDED,
    NEVER_RAN,
    ROLES,
    STALE,
    STARTING,
    delivery_lines,
    headline,
    instance_label,
    instance_ready,
    last_text,
    program_lines,
    ready_lines,
    scale_lines,
    stall_text,
    summary,
)

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

    from .events import ExitStatus


class Lock(MutableRecord):
    """An exclusive ``flock`` on the instance directory's lock file.

    The lock belongs to the open file description, so every process that inherits ``fd``
    shares it, and it is released only when the last of them is gone.
    """

    fd: int

    @classmethod
    def take(cls, directory: Path, created: bool = False) -> Lock:
        """The group's lock; AlreadyRunning if it runs. Its supervisors hold the lock; and
        where its lock file was removed while it ran (the lock then guards a file nobody
        else opens), a supervisor that ``status.json`` names and that still lives, with
        its title, is the proof that it runs; or, ``status.json`` removed too, a process
        wearing a supervisor's title for this directory, searched for when the lock file
        is missing from a directory this start did not create (``created``)."""
        missing = not created and not os.path.lexists(directory / "lock")
        fd = try_lock(directory / "lock", same_file=True)
        status = _supervised(directory)
        titled = _titled(directory) if status is None and (fd is None or missing) else {}
        if fd is None or status is not None or titled:
            if fd is not None:
                os.close(fd)
            name = directory.name
            pids = status.pids if status else titled
            if not pids:  # held by a command, not by supervisors: no pid of its to name
                raise AlreadyRunning(
                    f"group {name!r} is being started, stopped or forgotten by another "
                    f"command, which holds its lock; try again in a moment, or choose "
                    f"another name")
            shown = ", ".join(f"{role} {pid}" for role, pid in pids.items())
            raise AlreadyRunning(
                f"group {name!r} is already running ({shown}); stop it first with "
                f"'immortal stop {name}' or choose another name", pids)
        return cls(fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class InstanceStatus(MutableRecord):
    """One instance of a group of several (``workers``), as ``status.json`` lists it
    under ``instances``: ``NAME:K`` in ``list`` and ``status``."""

    instance: int
    state: str  #: the phase of its own restart machine
    pid: int | None = None  #: its target, while one runs
    start_time: int | None = None  #: the target's kernel start time
    started_at: float | None = None  #: wall clock time its target started
    restarts: int = 0
    spawned: int = 0
    last_exit: ExitStatus | None = None
    next_restart_at: float | None = None  #: wall clock time of its next spawn, in backoff
    reason: str | None = None  #: why it ended, in a final phase
    ready: bool = False  #: whether its current target is ready (readiness.py)
    notify_status: str | None = None  #: its target's last sd_notify ``STATUS=`` text
    program: str | None = None  #: its program, in a group of several programs

    @property
    def finished(self) -> bool:
        """Its target finished its job (a final exit code): done, not failing, while the
        group runs (``machine.finished``)."""
        from .machine import finished

        code = self.last_exit.code if self.last_exit is not None else None
        return finished(self.state, self.reason, code)

    def to_json(self) -> dict[str, Any]:
        return {**({"program": self.program} if self.program else {}),
                "instance": self.instance, "state": self.state, "pid": self.pid,
                "start_time": self.start_time, "started_at": self.started_at,
                "restarts": self.restarts, "spawned": self.spawned,
                "last_exit": self.last_exit.to_json() if self.last_exit else None,
                "next_restart_at": self.next_restart_at, "reason": self.reason,
                "ready": self.ready, "notify_status": self.notify_status}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InstanceStatus:
        last = data.get("last_exit")
        if last:
            from .events import ExitStatus
        return cls(instance=int(data.get("instance") or 0),
                   state=str(data.get("state", "unknown")),
                   program=data.get("program") or None,
                   pid=data.get("pid") or None, start_time=data.get("start_time"),
                   started_at=data.get("started_at"), restarts=int(data.get("restarts", 0)),
                   spawned=int(data.get("spawned", 0)),
                   last_exit=ExitStatus.from_json(last) if last else None,
                   next_restart_at=data.get("next_restart_at"), reason=data.get("reason"),
                   ready=bool(data.get("ready")), notify_status=data.get("notify_status"))


def running_targets(data: Mapping[str, Any], instance: int | None = None,
                    program: str | None = None) -> list[int]:
    """The target pids ``status.json``'s ``data`` records (of ``program``'s and
    ``instance`` alone, if given): ``pids["target"]`` in a group of one, each instance's in
    a group of several."""
    listed = data.get("instances") or []
    if not listed:
        pid = (data.get("pids") or {}).get("target")
        return [pid] if pid and instance in (None, 0) and not program else []
    return [entry["pid"] for entry in listed if isinstance(entry, dict) and entry.get("pid")
            and instance in (None, entry.get("instance"))
            and program in (None, entry.get("program"))]


class Status(MutableRecord):
    """A group's state as last written by its pump, and whether it is running now.

    A mutable record (see immortal/records.py), not a dataclass: importing ``dataclasses``
    would slow down ``immortal stop`` and ``status``.
    """

    name: str
    state: str  #: spawning, running, backoff, restarting, stopping, stopped, fatal
    running: bool = False
    pids: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    spawned: int = 0
    last_exit: ExitStatus | None = None
    next_restart_at: float | None = None  #: wall clock time of the next spawn, in backoff
    reason: str | None = None
    strategy: str | None = None
    started_at: float | None = None  #: wall clock time the group started
    target_started_at: float | None = None
    output: str | None = None
    directory: str | None = None
    start_times: dict[str, int | None] = field(default_factory=dict)  #: None: not known
    dropped: int = 0  #: lines skipped under backpressure "drop", all monitors together
    #: per monitor, by name: ``{"dropped": lines it lost to backpressure "drop"}``
    monitors: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the pump no longer drains the target's output (see stall.py): ``{"since": wall clock
    #: time, "monitor": the monitor whose call has not returned, or None, "monitor_since":
    #: when that call began}``; None while output flows
    stalled: dict[str, Any] | None = None
    #: processes carrying the group's token while no supervisor of it runs (filled by the
    #: callers that look for them: ``list``, ``status``; after a stop, those it ended)
    orphans: list[int] = field(default_factory=list)
    #: whether the current target is ready (see readiness.py); False while none runs. A
    #: group of several: every instance is (each one's own is in ``instances``)
    ready: bool = False
    #: the current target's last sd_notify ``STATUS=`` text (ready="notify"), if any
    notify_status: str | None = None
    #: the addresses the group listens on, as bound (a port 0 as the port it got)
    listen: list[str] = field(default_factory=list)
    #: a group of several instances of its program (``workers`` > 1): each one's state;
    #: empty for a group of one, whose target is ``pids["target"]``
    instances: list[InstanceStatus] = field(default_factory=list)
    #: the last rolling restart (see rollout.py): ``id``, ``state`` (rolling, done,
    #: failed), ``why``, ``instance`` and ``stderr`` of a failure, ``replaced``...; None
    #: before any
    roll: dict[str, Any] | None = None
    comment: str | None = None  #: the group's label (``comment=``)
    user: str | None = None  #: who its targets run as (``user=``), if not its supervisors
    #: a first start under way: its caller waits for every target to be ready (a stop
    #: then waits for that start, ``wait_start``)
    starting: bool = False
    #: the last scale asked of each program ("": the group's one) while the group runs, by
    #: program (``scalerecord``, from ``scale.json``): ``id``, ``workers`` (the count
    #: asked), ``had``, ``at``, ``caller`` (pid and start time)
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the programs an apply changed and has not rolled yet (``apply.unrolled.json``: its
    #: caller rolls them, or the next apply does): they run the definition before it
    unrolled: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> Status:
        last = data.get("last_exit")
        if last:  # imported only then: a group that never lost a target does without
            from .events import ExitStatus
        return cls(
            name=name,
            state=str(data.get("state", "unknown")),
            pids={k: int(v) for k, v in (data.get("pids") or {}).items() if v},
            restarts=int(data.get("restarts", 0)),
            spawned=int(data.get("spawned", 0)),
            last_exit=ExitStatus.from_json(last) if last else None,
            next_restart_at=data.get("next_restart_at"),
            reason=data.get("reason"),
            strategy=data.get("strategy"),
            started_at=data.get("started_at"),
            target_started_at=data.get("target_started_at"),
            output=data.get("output"),
            directory=data.get("directory"),
            start_times={k: int(v) for k, v in (data.get("start_times") or {}).items() if v},
            dropped=int(data.get("dropped") or 0),
            monitors={str(k): dict(v) for k, v in (data.get("monitors") or {}).items()},
            stalled=data.get("stalled") or None,
            ready=bool(data.get("ready")),
            notify_status=data.get("notify_status"),
            listen=[str(address) for address in data.get("listen") or ()],
            instances=[InstanceStatus.from_json(entry) for entry in data.get("instances") or ()
                       if isinstance(entry, dict)],
            roll=data.get("roll") if isinstance(data.get("roll"), dict) else None,
            comment=data.get("comment"),
            user=data.get("user"),
            starting=bool(data.get("starting")),
        )

    def to_json(self, *, stored: bool = False) -> dict[str, Any]:
        """The record as JSON. ``stored``: as ``status.json`` holds it (the pump writes it
        from this record), without what readers find out for themselves (``running``,
        from the roles' liveness; ``stalled``, from ``stalled.json``; ``scales``, from
        ``scale.json``)."""
        data = {
            "name": self.name, "state": self.state, "running": self.running,
            "pids": self.pids, "restarts": self.restarts, "spawned": self.spawned,
            "last_exit": self.last_exit.to_json() if self.last_exit else None,
            "next_restart_at": self.next_restart_at, "reason": self.reason,
            "strategy": self.strategy, "started_at": self.started_at,
            "target_started_at": self.target_started_at, "output": self.output,
            "directory": self.directory, "start_times": self.start_times,
            "dropped": self.dropped, "monitors": self.monitors, "stalled": self.stalled,
            "ready": self.ready, "notify_status": self.notify_status,
            "listen": self.listen,
        }
        if self.instances:
            data["instances"] = [entry.to_json() for entry in self.instances]
        if self.roll is not None:
            data["roll"] = self.roll
        for key in ("comment", "user"):  # only when set: a plain group's reads as it did
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.starting:
            data["starting"] = True
        if self.scales and not stored:
            data["scales"] = self.scales
        if self.unrolled and not stored:
            data["unrolled"] = self.unrolled
        if stored:
            del data["running"], data["stalled"]
        return data

    def programs(self) -> dict[str, list[InstanceStatus]]:
        """A group of several programs (``start_group``): each program's instances, by
        name, in order; empty for a group of one program."""
        found: dict[str, list[InstanceStatus]] = {}
        for entry in self.instances:
            if entry.program:
                found.setdefault(entry.program, []).append(entry)
        return found

    @property
    def stale(self) -> bool:
        """No supervisor runs, but the group did not end by a stop or by giving up: its
        processes were killed. Its target may live on (see ``orphans``); the state stays
        as it was until a stop or a new start of the name deals with it."""
        return not self.running and self.state not in (*FINAL_STATES, STARTING)

    def live_roles(self) -> list[str]:
        """The supervisor roles of this group that are alive now, daemon first."""
        return [role for role in ("daemon", "pump")
                if is_alive(self.pids.get(role), self.start_times.get(role))]

    @property
    def root(self) -> str:
        """The role to signal: the daemon if it lives (or if there is none alive), else the
        pump."""
        live = self.live_roles()
        if live:
            return live[0]
        return "daemon" if "daemon" in self.pids else "pump"

    def __str__(self) -> str:
        return summary(self)


def write_stopped(directory: Path, data: dict[str, Any], reason: str) -> bool:
    """Write ``data`` (status.json's, as read) as a group stopped with ``reason``, its
    processes gone; False if it cannot be written (a full disk: rewritten next time)."""
    data.update(state="stopped", reason=reason, pids={}, start_times={},
                next_restart_at=None)
    try:
        write_json(directory / "status.json", data)
    except OSError:
        return False
    return True


def clear_stale(directory: Path, reason: str = STALE) -> Status | None:
    """Record a group whose processes are all gone as stopped, with ``reason``.

    Only a stop or a kill calls this, once it has ended what was left (reads never write:
    the pids a read would erase are what a later start needs to find an orphan). Done
    under the group's lock, so that a group starting now is never touched.
    """
    status = read_status(directory)
    if status is None or status.running or status.state in FINAL_STATES:
        return status
    lock = try_lock(directory / "lock", same_file=True)
    if lock is None:
        return status  # a group is starting, or its roles are still exiting
    try:
        data = read_json(directory / "status.json")
        status = read_status(directory)
        if data is None or status is None or status.running or status.state in FINAL_STATES:
            return status
        if not write_stopped(directory, data, reason):
            return Status.from_json(directory.name, data)  # said all the same
    finally:
        os.close(lock)
    return read_status(directory)


def _titled(directory: Path) -> dict[str, int]:
    """The processes wearing the titles of ``directory``'s supervisors, by role."""
    from .orphans import supervisors  # a start's alone, and a rare one

    return supervisors(directory)


def _supervised(directory: Path) -> Status | None:
    """The status of the group in ``directory`` if a supervisor it names lives (pid,
    start time, and the role's title for this directory), else None."""
    from .orphans import wears_title  # a start's alone: `immortal status` does without it

    try:
        status = read_status(directory)
    except (OSError, ValueError, ImmortalError):
        return None
    if status is None:
        return None
    for role in status.live_roles():
        if wears_title(status.pids[role], role, directory):
            return status
    return None


def read_status(directory: Path) -> Status | None:
    data = read_json(directory / "status.json")
    if data is None:
        return None
    status = Status.from_json(directory.name, data)
    # Running while a supervisor of it lives (after a daemon death the pump takes over),
    # proven by pid and start time, not by probing the lock: a probe could make a
    # concurrent start() fail for a group that is not running.
    status.running = bool(status.live_roles())
    if status.running and status.stalled is None:
        # The daemon's word on a pump that no longer drains the output (stall.py).
        status.stalled = read_json(directory / "stalled.json")
    if status.running:
        status.scales = read_scales(directory, status.started_at)
        unrolled = read_json(directory / UNROLLED)
        if isinstance(unrolled, dict) and isinstance(unrolled.get("programs"), list):
            status.unrolled = [str(name) for name in unrolled["programs"]]
    return status


def read_unstarted(directory: Path) -> Status | None:
    """A group directory without ``status.json``: a start under way (its lock held), or one
    killed before its supervisors wrote anything (``spec.json`` alone): stopped, never run,
    and 'immortal start' starts it from that record. None for neither (what a failed start
    left: no group)."""
    if lock_held(directory / "lock"):
        return Status(directory.name, STARTING, directory=str(directory))
    if os.path.exists(directory / "spec.json"):
        return Status(directory.name, "stopped", reason=NEVER_RAN, directory=str(directory))
    return None
