"""Put a group's instance directory back when it is removed (or moved away) while it runs.

A group whose directory vanished would be invisible (``list``, ``status``, ``stop`` find
nothing) and its name free for a second group. The root role (the daemon, or the pump when
it has no daemon) watches the directory and its parent with inotify (see ``Keeper``); the
watch's fd sits in the role's selector like any other, so an idle group still wakes up for
nothing. When the directory goes, the role makes it again (0700, with its parents), takes
the group lock on a fresh lock file, and puts back its socket, ``spec.json`` and
``status.json`` (``restored``).

inotify is reached through ctypes (the standard library has no binding), in the C library
``_linux.inotify`` gives. Off Linux, or where inotify is refused (no libc symbol, too many
instances or watches), ``keep`` watches nothing and a removed directory stays removed until
the next start of the name.
"""

from __future__ import annotations

import os
import selectors
import sys

from . import _linux
from ._linux import (IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF, IN_MOVED_FROM, IN_MOVED_TO,
                     IN_ONLYDIR, inotify_events)
from .errors import ImmortalError
from .state import ensure_dir, try_lock

# typing's, without importing typing: a client that follows a roll imports this module
# (group.Changes), and commands import what they use alone (see immortal/__init__.py)
TYPE_CHECKING = False

if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable
    from pathlib import Path

IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC


class Keeper:
    """Watches one instance directory and puts it back when it goes.

    Two watches: the directory itself (moved away: ``IN_MOVE_SELF``), and its parent, for
    the directory's removal (``IN_DELETE`` of its name, reported at once) or the parent's
    own move. A removed directory's ``IN_DELETE_SELF`` alone would come late: not before
    the last open file inside it (the role logs, the lock) is closed.
    """

    def __init__(self, libc: ctypes.CDLL, fd: int, directory: Path, lock_fd: int | None,
                 restored: Callable[[], None]) -> None:
        self.libc = libc
        self.fd = fd
        self.directory = directory
        self.name = os.fsencode(directory.name)
        self.lock_fd = lock_fd
        self.restored = restored
        self.wds: dict[int, str] = {}  # watch descriptor: "self" or "parent"

    def close(self) -> None:
        os.close(self.fd)

    def watch(self) -> bool:
        for wd in self.wds:
            self.libc.inotify_rm_watch(self.fd, wd)  # a moved directory would keep it
        self.wds = {}
        for kind, path, mask in (
                ("self", self.directory, IN_MOVE_SELF | IN_DELETE_SELF),
                ("parent", self.directory.parent,
                 IN_DELETE | IN_MOVED_FROM | IN_MOVE_SELF | IN_DELETE_SELF)):
            wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), mask | IN_ONLYDIR)
            if wd < 0:
                return False
            self.wds[wd] = kind
        return True

    def on_event(self, fd: object) -> None:
        """The selector's callback: read the events; put the directory back if it went."""
        gone = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            for wd, mask, name in inotify_events(data):
                kind = self.wds.get(wd)
                if kind == "self" or (kind == "parent" and (
                        mask & (IN_MOVE_SELF | IN_DELETE_SELF) or name == self.name)):
                    gone = True
        if gone:
            self.restore()

    def restore(self) -> None:
        try:
            ensure_dir(self.directory)
            if self.lock_fd is not None:
                lock = try_lock(self.directory / "lock", same_file=True)
                if lock is None:
                    return  # ours still (a spurious event), or a new start took the name
                os.dup2(lock, self.lock_fd, inheritable=False)
                os.close(lock)
            self.watch()
        except (OSError, ImmortalError) as exc:
            sys.stderr.write(f"immortal: cannot put back {self.directory}: {exc}\n")
            return
        sys.stderr.write(f"immortal: {self.directory} was removed; put back\n")
        self.restored()


def _open() -> tuple[ctypes.CDLL, int] | None:
    """The C library and a new inotify fd (non-blocking, close-on-exec), or None where
    inotify is not available."""
    libc = _linux.inotify()
    if libc is None:
        return None
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    return None if fd < 0 else (libc, fd)


def keep(directory: Path, selector: selectors.BaseSelector, lock_fd: int | None,
         restored: Callable[[], None]) -> Keeper | None:
    """Watch ``directory`` from ``selector``; when it goes, make it again, lock it on
    ``lock_fd`` and call ``restored``. None where inotify is not available."""
    opened = _open()
    if opened is None:
        return None
    libc, fd = opened
    keeper = Keeper(libc, fd, directory, lock_fd, restored)
    if not keeper.watch():
        os.close(fd)
        return None
    selector.register(fd, selectors.EVENT_READ, keeper.on_event)
    return keeper


def watch_names(directory: Path, mask: int = IN_MOVED_TO | IN_DELETE) -> int | None:
    """An inotify fd (non-blocking, close-on-exec) on the entries of ``directory``: with
    the default ``mask``, a file replaced there (``os.replace``, as every JSON file of
    ours is written) or removed. None where inotify is not available."""
    opened = _open()
    if opened is None:
        return None
    libc, fd = opened
    if libc.inotify_add_watch(fd, os.fsencode(directory), mask | IN_ONLYDIR) < 0:
        os.close(fd)
        return None
    return fd


def names(fd: int) -> set[bytes]:
    """The names the events waiting on ``fd`` (``watch_names``) are about."""
    found: set[bytes] = set()
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return found
        if not data:
            return found
        found.update(name.rstrip(b"\0") for _, _, name in inotify_events(data))
