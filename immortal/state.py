"""The instance directory of a group: where it is, its lock, its files, and its ``Status``.

``<home>/<name>/`` (``home()``: ``$IMMORTAL_HOME`` or one fixed default per user) holds
``lock`` (an ``flock`` held for the group's life), ``spec.json``, ``status.json`` (written
atomically), the role logs and the default output.
The directory is created 0700 and refused if it is a symlink, not ours, or writable by
others.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from pathlib import Path

from ._linux import flock_held, is_alive
from .errors import AlreadyRunning, InvalidSpec, StateDirError
from .records import MutableRecord, field
from .safety import check_opened, check_path

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from .events import ExitStatus

SOCKET_NAME = "control.sock"
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


ROOT_HOME = "/var/lib/immortal"


def home() -> Path:
    """The directory that holds one instance directory per group.

    One fixed place per user, whatever the caller's environment: ``$IMMORTAL_HOME``;
    else, for root, ``/var/lib/immortal``; else ``$XDG_STATE_HOME/immortal``; else
    ``~/.local/state/immortal``, ``~`` from the password database. Not
    ``$XDG_RUNTIME_DIR``: cron, sudo and services run without it (a group started from a
    login shell would be invisible to them, and started twice), and it is removed at
    logout while the group runs on.
    """
    return default_home(os.environ, os.getuid())


def default_home(environ: Mapping[str, str], uid: int) -> Path:
    env = environ.get("IMMORTAL_HOME")
    if env:
        return Path(env).absolute()
    if uid == 0:
        # sudo may keep the caller's $HOME or $XDG_STATE_HOME; a service may have none.
        return Path(ROOT_HOME)
    state = environ.get("XDG_STATE_HOME")
    if state and os.path.isabs(state):  # the XDG spec ignores a relative path
        return Path(state) / "immortal"
    return _user_home(uid) / ".local" / "state" / "immortal"


def _user_home(uid: int) -> Path:
    """The home directory of ``uid``: not ``$HOME``, which 'su' without '-' keeps."""
    import pwd

    try:
        return Path(pwd.getpwuid(uid).pw_dir)
    except (KeyError, OSError):
        return Path.home()


def instance_dir(name: str) -> Path:
    return home() / name


def check_socket_path(directory: Path) -> None:
    path = os.fsencode(directory / SOCKET_NAME)
    if len(path) > UNIX_PATH_MAX:
        raise InvalidSpec(
            f"the instance directory {str(directory)!r} is too deep: its control socket path "
            f"would be {len(path)} bytes, over the {UNIX_PATH_MAX}-byte limit of unix sockets; "
            "set IMMORTAL_HOME to a shorter path"
        )


def _check_safe(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise StateDirError(f"refusing {str(path)!r}: it is a symlink; remove it")
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"refusing {str(path)!r}: it is not a directory")
    if info.st_uid != os.getuid():
        raise StateDirError(f"refusing {str(path)!r}: owned by uid {info.st_uid}, not us "
                            f"(uid {os.getuid()})")
    if info.st_mode & 0o022:
        raise StateDirError(f"refusing {str(path)!r}: writable by group or others (mode "
                            f"{stat.filemode(info.st_mode)}); run 'chmod go-w {path}'")


def check_dir(directory: Path) -> None:
    """Refuse an existing home or instance directory that is not safe to use, or one that
    another user could swap: every directory on the way must be root's or ours."""
    check_path(directory)
    _check_safe(directory.parent)
    _check_safe(directory)


def ensure_dir(directory: Path) -> list[Path]:
    """Create the instance directory (0700) and its missing parents; return those created."""
    check_dir(directory)
    created = []
    for path in reversed([directory, *directory.parents]):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        created.append(path)
    check_dir(directory)
    return created


class Lock(MutableRecord):
    """An exclusive ``flock`` on the instance directory's lock file.

    The lock belongs to the open file description, so every process that inherits ``fd``
    shares it, and it is released only when the last of them is gone.
    """

    fd: int

    @classmethod
    def take(cls, directory: Path) -> Lock:
        fd = try_lock(directory / "lock", same_file=True)
        if fd is None:
            name = directory.name
            status = read_status(directory)
            pids = status.pids if status else {}
            shown = ", ".join(f"{role} {pid}" for role, pid in pids.items()) or "unknown pids"
            raise AlreadyRunning(
                f"group {name!r} is already running ({shown}); stop it first with "
                f"'immortal stop {name}' or choose another name", pids)
        return cls(fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def try_lock(path: Path, same_file: bool = False) -> int | None:
    """A new open file description of ``path`` with an exclusive flock, or None if held.

    With ``same_file``, the lock counts only if ``path`` still names the file locked: a
    lock file replaced after it was opened (its directory removed and put back) is opened
    again, so that two holders never lock two different files of one name.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            check_opened(fd, path)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        if not same_file or _names(path, fd):
            return fd
        os.close(fd)


def _names(path: Path, fd: int) -> bool:
    try:
        return os.path.samestat(os.stat(path, follow_symlinks=False), os.fstat(fd))
    except FileNotFoundError:
        return False


def lock_held(path: Path) -> bool:
    """Whether a process holds the flock on ``path``, found without taking it: a probe
    that took it, however briefly, could make a concurrent ``start()`` fail.

    Where the kernel's list of locks cannot be read (see ``_linux.flock_held``), the lock
    is probed after all.
    """
    try:
        info = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = flock_held(info)
    if held is None:
        fd = try_lock(path)
        if fd is not None:
            os.close(fd)
        return fd is None
    return held


def wait_lock(path: Path, timeout: float) -> int | None:
    """``try_lock`` until it succeeds or ``timeout`` passes (a rare path: after a kill)."""
    deadline = time.monotonic() + timeout
    while True:
        fd = try_lock(path)
        if fd is not None or time.monotonic() >= deadline:
            return fd
        time.sleep(0.01)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` atomically: a reader sees the old file or the new one, never half.

    OSError if it cannot (a full disk): the old file stays, and no temporary file is left
    to take the space."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, separators=(",", ":"))  # compact: written at every event
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The object in ``path``, None if there is none; ``StateDirError`` if the file could
    have been written by another user (its pids, or modules, are never believed then)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as handle:
        check_opened(fd, path)
        try:
            data = json.load(handle)
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


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
    start_times: dict[str, int] = field(default_factory=dict)
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
        )

    def to_json(self, *, stored: bool = False) -> dict[str, Any]:
        """The record as JSON. ``stored``: as ``status.json`` holds it (the pump writes it
        from this record), without what readers find out for themselves (``running``,
        from the roles' liveness; ``stalled``, from ``stalled.json``)."""
        data = {
            "name": self.name, "state": self.state, "running": self.running,
            "pids": self.pids, "restarts": self.restarts, "spawned": self.spawned,
            "last_exit": self.last_exit.to_json() if self.last_exit else None,
            "next_restart_at": self.next_restart_at, "reason": self.reason,
            "strategy": self.strategy, "started_at": self.started_at,
            "target_started_at": self.target_started_at, "output": self.output,
            "directory": self.directory, "start_times": self.start_times,
            "dropped": self.dropped, "monitors": self.monitors, "stalled": self.stalled,
        }
        if stored:
            del data["running"], data["stalled"]
        return data

    @property
    def stale(self) -> bool:
        """No supervisor runs, but the group did not end by a stop or by giving up: its
        processes were killed. Its target may live on (see ``orphans``); the state stays
        as it was until a stop or a new start of the name deals with it."""
        return not self.running and self.state not in FINAL_STATES

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
        from .render import summary  # the words live with the other renderings

        return summary(self)


GONE = "its supervisors were killed without a stop"
STALE = "stale state removed: its processes were killed without a stop"
KILLED = "killed (SIGKILL, no grace period)"
FINAL_STATES = ("stopped", "fatal")


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
        data.update(state="stopped", reason=reason, pids={}, start_times={},
                    next_restart_at=None)
        try:
            write_json(directory / "status.json", data)
        except OSError:  # a full disk: say it all the same, and rewrite it next time
            return Status.from_json(directory.name, data)
    finally:
        os.close(lock)
    return read_status(directory)


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
    return status
