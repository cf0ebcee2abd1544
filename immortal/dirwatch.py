"""Put a group's instance directory back when it is removed (or moved away) while it runs.

A group whose directory vanished would be invisible (``list``, ``status``, ``stop`` find
nothing) and its name free for a second group. The root role (the daemon, or the pump when
it has no daemon) watches the directory and its parent with inotify (see ``Keeper``); the
watch's fd sits in the role's selector like any other, so an idle group still wakes up for
nothing. When the directory goes, the role makes it again (0700, with its parents), takes
the group lock on a fresh lock file, and puts back its socket, ``spec.json`` and
``status.json`` (``restored``). The same for those files alone, removed from a directory
that stays (a clean-up of old files; an ``rm -rf`` that lost a race with the group's own
writes and left the directory): without them ``stop NAME`` finds nothing to stop. Those
are put back a moment after the last removal (``SETTLE``), once any ``rm -rf`` in progress
has removed the directory too, which it could not do if they were back already: a one-shot
deadline after an event, never a poll. Only a removal is watched: a file renamed away is
not put back (every status write is a rename into the directory, and would wake the role).

inotify is reached through ctypes (the standard library has no binding), in the C library
``_linux.inotify`` gives. Off Linux, or where inotify is refused (no libc symbol, too many
instances or watches), ``keep`` watches nothing and a removed directory stays removed until
the next start of the name.
"""

from __future__ import annotations

import os
import sys
import time

from . import _linux
from ._linux import (IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF, IN_MOVED_FROM, IN_MOVED_TO,
                     IN_ONLYDIR, IN_Q_OVERFLOW, inotify_events, release_watches)
from .errors import ImmortalError
from .state import SOCKET_NAME, ensure_dir, names_file, try_lock

# typing's, without importing typing: a client that follows a roll imports this module
# (group.Changes), and commands import what they use alone (see immortal/__init__.py)
TYPE_CHECKING = False

if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable
    from pathlib import Path

    from .loop import Loop

IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
LOCK = "lock"
#: the files of a running group that are put back when removed
KEPT = (LOCK, SOCKET_NAME, "spec.json", "status.json")
_KEPT_NAMES = frozenset(os.fsencode(name) for name in KEPT)
#: how long files removed from the directory wait to be put back, from the last removal:
#: an ``rm -rf`` of the directory goes on to remove it meanwhile, and is not made to fail
SETTLE = 0.2


class Keeper:
    """Watches one instance directory and puts it back when it goes, or the files of
    ``KEPT`` when they go.

    Two watches: the directory itself (moved away: ``IN_MOVE_SELF``; a file of it removed
    or moved away: ``IN_DELETE``, ``IN_MOVED_FROM``), and its parent, for the directory's
    removal (``IN_DELETE`` of its name, reported at once) or the parent's own move. A
    removed directory's ``IN_DELETE_SELF`` alone would come late: not before the last
    open file inside it (the role logs, the lock) is closed. ``restored`` is called with
    the names of ``KEPT`` that were missing: the role puts back those that are its own to
    write (the socket, the JSON files).
    """

    def __init__(self, libc: ctypes.CDLL, fd: int, directory: Path, lock_fd: int | None,
                 restored: Callable[[set[str]], None]) -> None:
        self.libc = libc
        self.fd = fd
        self.directory = directory
        self.name = os.fsencode(directory.name)
        self.lock_fd = lock_fd
        self.restored = restored
        self.wds: dict[int, str] = {}  # watch descriptor: "self" or "parent"
        #: when files removed are put back (``settle``), None while none is
        self.due: float | None = None

    def close(self) -> None:
        os.close(self.fd)

    def release(self) -> None:
        """Watch nothing more, the fd kept: the group ends, its targets are gone.

        See ``_linux.release_watches``: the stop that waits for the role's end does not
        wait for the kernel to free these watches."""
        release_watches(self.libc, self.fd, self.wds)
        self.wds = {}

    def watch(self) -> bool:
        release_watches(self.libc, self.fd, self.wds)  # a moved directory would keep its watch
        self.wds = {}
        for kind, path, mask in (
                ("self", self.directory,
                 IN_MOVE_SELF | IN_DELETE_SELF | IN_DELETE | IN_MOVED_FROM),
                ("parent", self.directory.parent,
                 IN_DELETE | IN_MOVED_FROM | IN_MOVE_SELF | IN_DELETE_SELF)):
            wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), mask | IN_ONLYDIR)
            if wd < 0:
                return False
            self.wds[wd] = kind
        return True

    def on_event(self, fd: object) -> None:
        """The selector's callback: read the events; put the directory back if it went,
        else the files of ``KEPT`` that went."""
        gone = files = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            for wd, mask, name in inotify_events(data):
                kind = self.wds.get(wd)
                if mask & IN_Q_OVERFLOW:
                    files = True  # events were lost: look
                elif kind == "self" and mask & (IN_DELETE | IN_MOVED_FROM):
                    # removed, or moved away (our own writes rename other names into
                    # place); another file's: nothing
                    files = files or name in _KEPT_NAMES
                elif kind == "self" or (kind == "parent" and (
                        mask & (IN_MOVE_SELF | IN_DELETE_SELF) or name == self.name)):
                    gone = True
        if gone:
            self.due = None
            self.restore()
        elif files:
            self.due = time.monotonic() + SETTLE

    def settle(self) -> None:
        """The loop's deadline (``due``): put back the files removed, if the directory
        itself is still there (else its own event puts it all back)."""
        self.due = None
        if os.path.isdir(self.directory):
            self.put_back()

    def restore(self) -> None:
        """The directory went: make it again, with the lock, and the role's files."""
        try:
            ensure_dir(self.directory)
            if self.lock_fd is not None and names_file(self.directory / LOCK, self.lock_fd):
                return  # a spurious event: the directory and our lock file are there
            if not self._lock():
                return
            self.watch()
        except (OSError, ImmortalError) as exc:
            sys.stderr.write(f"immortal: cannot put back {self.directory}: {exc}\n")
            return
        sys.stderr.write(f"immortal: {self.directory} was removed; put back\n")
        self.restored(set(KEPT))

    def put_back(self) -> None:
        """Files of ``KEPT`` went from the directory: put back those still missing (the
        role's own writes, this one's included, raise events of their own)."""
        missing = {name for name in KEPT if not os.path.lexists(self.directory / name)}
        if not missing:
            return
        try:
            if LOCK in missing and not self._lock():
                return
        except (OSError, ImmortalError) as exc:
            sys.stderr.write(f"immortal: cannot put back the lock in {self.directory}: "
                             f"{exc}\n")
            return
        shown = ", ".join(name for name in KEPT if name in missing)
        sys.stderr.write(f"immortal: {shown} removed from {self.directory}; put back\n")
        self.restored(missing)

    def _lock(self) -> bool:
        """Lock a fresh lock file on the role's lock fd (ours is gone from the directory);
        False if a new start holds it."""
        if self.lock_fd is None:
            return True
        lock = try_lock(self.directory / LOCK, same_file=True)
        if lock is None:
            return False  # a new start took the name (it finds us by our titles)
        os.dup2(lock, self.lock_fd, inheritable=False)
        os.close(lock)
        return True


def _open() -> tuple[ctypes.CDLL, int] | None:
    """The C library and a new inotify fd (non-blocking, close-on-exec), or None where
    inotify is not available."""
    libc = _linux.inotify()
    if libc is None:
        return None
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    return None if fd < 0 else (libc, fd)


def keep(directory: Path, loop: Loop, lock_fd: int | None,
         restored: Callable[[set[str]], None]) -> Keeper | None:
    """Watch ``directory`` from ``loop``; when it goes, make it again, lock it on
    ``lock_fd`` and call ``restored``; the same for the files of ``KEPT``. None where
    inotify is not available."""
    opened = _open()
    if opened is None:
        return None
    libc, fd = opened
    keeper = Keeper(libc, fd, directory, lock_fd, restored)
    if not keeper.watch():
        os.close(fd)
        return None
    loop.watch(fd, keeper.on_event)
    loop.at(lambda: keeper.due, keeper.settle)
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
