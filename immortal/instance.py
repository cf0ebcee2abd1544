"""The instance directory of a group: where it is, its lock file, its JSON files.

``<home>/<name>/`` (``home()``: ``$IMMORTAL_HOME`` or one fixed default per user) holds
``lock`` (an ``flock`` held for the group's life), ``spec.json``, ``status.json`` (written
atomically), ``scale.json`` (``scalerecord``), the role logs and the default output.
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

from ._linux import flock_held
from .errors import InvalidSpec, StateDirError
from .safety import check_opened, check_path

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

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
        if not same_file or names_file(path, fd):
            return fd
        os.close(fd)


def names_file(path: Path, fd: int) -> bool:
    """Whether ``path`` names the file open on ``fd`` (not removed, not replaced)."""
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


SCALES = "scale.json"  #: the last scale of each program (``scalerecord``, its writer)
#: The programs an apply's caller has yet to roll (``Group.apply``), in the group's
#: directory: a caller killed before it rolled them leaves them to the next apply; a new
#: start, which runs each program as its spec says, leaves none.
UNROLLED = "apply.unrolled.json"


def read_scales(directory: Path,
                started_at: float | None = None) -> dict[str, dict[str, Any]]:
    """The last scale asked of each program, by program (``scalerecord``); with
    ``started_at``, only those asked of the group that started then (not of an earlier
    run of its name)."""
    try:
        data = read_json(directory / SCALES) or {}
    except OSError:
        return {}
    return {str(program): entry for program, entry in data.items()
            if isinstance(entry, dict) and isinstance(entry.get("id"), int)
            and (started_at is None or entry.get("group_started_at") == started_at)}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` atomically: a reader sees the old file or the new one, never half.

    OSError if it cannot (a full disk): the old file stays, and no temporary file is left
    to take the space."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            # compact: written at every event; dumps, not dump: json.dump encodes in
            # Python, piece by piece, json.dumps with the C encoder in one go
            handle.write(json.dumps(data, separators=(",", ":")))
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
