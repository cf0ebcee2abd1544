"""The roles' own log: what the daemon and the pump write on their stderr, kept bounded.

A detached role's stderr is its log in the instance directory (``daemon.log``,
``pump.log``); in ``development`` the pump's is the caller's. Every write of a role goes
through here, and:

- never kills the role: a write that fails (a full disk, a file-size limit, a closed pipe)
  is dropped and counted in ``lost``, and the role goes on;
- is rate-limited per kind of message: at most ``BURST`` of one kind per ``PERIOD``; the
  others are counted, and the next one let through (or the role's exit) says how many
  were suppressed, so that no input of the target's can make a role write without end;
- is capped in size: a log file that would pass ``CAP`` bytes is renamed to ``NAME.1``
  (replacing the previous one) and reopened, so a role's log takes at most twice ``CAP``.

:func:`install` also puts a stream writing through here in ``sys.stderr``, so that a
monitor's traceback, a ``print(file=sys.stderr)`` and Python's own messages are bounded and
never fatal too. No timer: a summary waits for the next message of its kind, or the exit.
"""

from __future__ import annotations

import atexit
import io
import os
import sys
import time

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable

CAP = 1024 * 1024  #: bytes a role's log may reach before it is rotated
PERIOD = 10.0  #: seconds of one rate-limit window
BURST = 5  #: messages of one kind written per window


class _Kind:
    """The rate-limit window of one kind of message."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.written = 0
        self.suppressed = 0


class RoleLog:
    """Writes to ``fd`` (a role's stderr); ``path`` names the file behind it, or is None
    when it is not ours to rotate (a terminal, a pipe)."""

    def __init__(self, path: str | None, fd: int = 2, cap: int = CAP, period: float = PERIOD,
                 burst: int = BURST, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.fd = fd
        self.cap = cap
        self.period = period
        self.burst = burst
        self.clock = clock
        self.lost = 0  #: writes dropped because they failed
        self._kinds: dict[str, _Kind] = {}
        self.size = 0
        if path is not None:
            try:
                self.size = os.fstat(fd).st_size
            except OSError:
                self.path = None

    def report(self, kind: str, text: str) -> None:
        """Write one message of ``kind`` (a line, or lines), unless too many came lately."""
        now = self.clock()
        window = self._kinds.get(kind)
        if window is None or now - window.start >= self.period:
            if window is not None and window.suppressed:
                text = _summary(window.suppressed) + text
            window = self._kinds[kind] = _Kind(now)
        if window.written >= self.burst:
            window.suppressed += 1
            return
        window.written += 1
        self.write(text)

    def flush_summaries(self) -> None:
        """Say how many messages were suppressed (at the role's exit)."""
        for window in self._kinds.values():
            if window.suppressed:
                self.write(_summary(window.suppressed))
                window.suppressed = 0

    def write(self, text: str | bytes) -> None:
        """Append ``text`` to the log, rotating it past ``cap``; never raises."""
        data = text.encode("utf-8", "replace") if isinstance(text, str) else text
        if self.path is not None and self.size and self.size + len(data) > self.cap:
            self._rotate()
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except InterruptedError:
                continue
            except OSError:  # ENOSPC, EFBIG, EPIPE, EIO...: drop it, never die of it
                self.lost += 1
                return
            self.size += written
            view = view[written:]

    def _rotate(self) -> None:
        assert self.path is not None
        try:
            os.replace(self.path, self.path + ".1")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
        except OSError:
            # Renamed away or its directory gone: empty the file we have instead.
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
        else:
            os.dup2(fd, self.fd)  # fd 2 too: a crash's last words go to the new file
            os.close(fd)
        self.size = 0


def _summary(count: int) -> str:
    return f"immortal: ({count} similar messages suppressed)\n"


class _Stream(io.TextIOBase):
    """``sys.stderr`` of a role: text written through the role's log."""

    def __init__(self, log: RoleLog) -> None:
        self._log = log

    def write(self, text: str) -> int:
        self._log.write(text)
        return len(text)

    @property
    def buffer(self) -> _Binary:
        """For the writers of bytes (the console monitor)."""
        return _Binary(self._log)

    def fileno(self) -> int:
        return self._log.fd

    def isatty(self) -> bool:
        try:
            return os.isatty(self._log.fd)
        except OSError:
            return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class _Binary:
    """``sys.stderr.buffer`` of a role."""

    def __init__(self, log: RoleLog) -> None:
        self._log = log

    def write(self, data: bytes) -> int:
        self._log.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


_log = RoleLog(None)


def install(path: str | None) -> RoleLog:
    """Make the role's stderr (fd 2) its bounded log; ``path``: the file behind fd 2 if it
    is the role's own log, else None."""
    global _log
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    _log = RoleLog(path)
    sys.stderr = _Stream(_log)
    atexit.register(_log.flush_summaries)
    return _log


def reinstall() -> None:
    """In a process forked from a role (a monitor's own, from the pump): a log of its own
    on the same stderr, its size read again and its rate limits and exit summary its own,
    rather than the role's state copied at the fork."""
    install(_log.path)


def open_for(path: str | os.PathLike[str]) -> int:
    """A new role's log, ``path``, opened for appending (its stderr to be); else, in a
    directory that can no longer be written, a copy of this role's own stderr: a role
    never dies of its log."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        return os.dup(2)


def report(kind: str, text: str) -> None:
    """One message of ``kind`` on the role's log (rate-limited, never fatal)."""
    _log.report(kind, text)


TAIL = 16 * 1024  #: what ``tail`` reads at most: the end of a dead role's log


def tail(path: str | None) -> str | None:
    """The last ``TAIL`` bytes of a role's log, as text (a dead pump's, for the next pump's
    monitors); None if there is no such file or nothing in it."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - TAIL))
            data = handle.read()
    except OSError:
        return None
    return data.decode("utf-8", "replace") or None
