"""The sd_notify socket: where a target says it is ready (``READY=1``) and what it is doing
(``STATUS=...``), as a ``Type=notify`` service tells systemd.

Only a group started with ``ready="notify"`` has one: a unix datagram socket bound at
``notify.sock`` in the instance directory (0600, in the 0700 directory), whose path the
target finds in ``NOTIFY_SOCKET``. The group's root makes it (the daemon, which keeps it
across pumps, so that a datagram sent while no pump runs waits for the next; a pump with no
daemon makes its own), and the pump reads it. A path, never the abstract namespace: the
directory's permissions guard it. Each datagram carries its sender's pid (``SO_PASSCRED``),
so that the pump takes the word of its targets, or of their descendants, only: each
datagram counts for the instance whose target sent it (``speaks_for``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from pathlib import Path

from . import _linux

NAME = "notify.sock"
ENV = "NOTIFY_SOCKET"
#: what a service manager (systemd) sets for the process it started, immortal itself when
#: it runs in the foreground: never passed on to a target (``sdnotify``)
MANAGER_ENV = (ENV, "WATCHDOG_USEC", "WATCHDOG_PID")
MAX_DATAGRAM = 4096  # as systemd reads them
BATCH = 64  # datagrams taken at a time, so that output is not starved by a chatty target


def path(directory: str | Path) -> str:
    """Where a group's notify socket is bound (the value of the target's NOTIFY_SOCKET)."""
    return str(Path(directory) / NAME)


def make(directory: str | Path) -> int:
    """Bind the group's notify socket, non-blocking and close-on-exec; its fd."""
    where = path(directory)
    try:
        os.unlink(where)  # left by a dead predecessor; we hold the group lock
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        _linux.pass_credentials(sock)
        old = os.umask(0o177)
        try:
            sock.bind(where)  # born 0600: there is no window to chmod
        finally:
            os.umask(old)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock.detach()


def remove(directory: str | Path) -> None:
    """The group ended: its socket's path goes."""
    try:
        os.unlink(path(directory))
    except FileNotFoundError:
        pass


def fields(data: bytes) -> dict[str, str]:
    """The assignments of one datagram (``KEY=VALUE`` lines, as ``sd_notify(3)`` sends
    them); a line without ``=`` is left out."""
    found = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            found[key] = value
    return found


def receive(sock: socket.socket) -> list[tuple[int | None, dict[str, str]]]:
    """The datagrams waiting (a bounded batch): each one's sender pid (None where the
    kernel does not tell) and assignments."""
    found = []
    for _ in range(BATCH):
        try:
            data, pid = _linux.receive_from(sock, MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        found.append((pid, fields(data)))
    return found


def speaks_for(sender: int | None, targets: Collection[int]) -> int | None:
    """Which of the running ``targets`` (pids) a datagram of ``sender`` speaks for: the one
    it is, or the one it descends from (a helper such as ``systemd-notify``); None if none.
    Without credentials (``sender`` None) only a lone target is known."""
    if sender is None:
        return next(iter(targets)) if len(targets) == 1 else None
    pid, seen = sender, 0
    while pid > 1 and seen < 64:  # 64 generations: a loop in a racing /proc ends here
        if pid in targets:
            return pid
        parent = _linux.parent_pid(pid)
        if parent is None:
            return None
        pid, seen = parent, seen + 1
    return pid if pid in targets else None
