"""The ``console`` monitor: prefixed, coloured lines for development.

Each stdout line goes to the pump's ``sys.stdout`` and each stderr line to its
``sys.stderr``, prefixed with the group's name, the target's pid and the stream::

    [worker 1234 stdout] listening on :8080
    [worker 1234 stderr] warning: no cache

Events go to ``sys.stderr``: ``[worker] spawn pid 1234``, ``[worker] exit pid 1234: killed by
SIGTERM``. The line's bytes are written as they are (whatever their encoding); a target
adopted after a pump restart is announced as ``[worker] adopt pid 1234``.

The pump's stdout and stderr are your terminal with ``strategy="development"`` only; a
detached pump's stderr is ``pump.log`` and its stdout ``/dev/null``. With this monitor the
pump does not echo the raw output there as well (``terminal = True``), so each line shows
once, prefixed.

Across pump kills it reads back what it wrote where its stream is a file (``delivered``):
a detached pump's stderr, ``pump.log``, or a file both streams go to. A line it had
written when its pump was killed, before the journal recorded it, is found there and not
written again. A terminal, a pipe or ``/dev/null`` cannot be read back: such a line is
written again there (at least once).

Option ``color``: ``"auto"`` (default: ANSI colour on a stream that is a terminal, unless
the ``NO_COLOR`` environment variable is set and not empty), ``"always"`` or ``"never"``.
"""

from __future__ import annotations

import json
import os
import re
import select
import stat
import sys
from collections.abc import Mapping

import immortal
from immortal.statewords import last_text

from . import PerInstance, readback
from .file import refuse_unknown

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any, TextIO

OPTIONS = ("color",)
COLORS = ("auto", "always", "never")

# SGR sequences for the prefix only; the target's own text is never altered.
PREFIX = {"stdout": b"\x1b[36m", "stderr": b"\x1b[31m", "event": b"\x1b[1;35m"}
RESET = b"\x1b[0m"
#: what a record's prefix may hold around its text when coloured (``PREFIX``, ``RESET``)
_SGR = rb"(?:\x1b\[[0-9;]*m)?"


def _colored(stream: TextIO | None, mode: str) -> bool:
    if mode != "auto":
        return mode == "always"
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False


class ConsoleMonitor(immortal.Monitor):
    terminal = True  # in development the pump leaves the terminal to us: no raw echo
    """Writes each line, prefixed, to the pump's stdout or stderr; events to stderr."""

    _pid = PerInstance()  # each instance's target, in a group of several
    _color: dict[str, bool]
    _dropped = 0  # writes that failed (terminal gone, closed pipe): nowhere to report them

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> Mapping[str, Any]:
        refuse_unknown("console", options, OPTIONS)
        color = options.get("color", "auto")
        if color not in COLORS:
            raise immortal.MonitorOptionsError(
                f"the console monitor's 'color' must be one of {', '.join(COLORS)} "
                f"(got {color!r})")
        return dict(options)

    def setup(self, why: str, message: str | None) -> None:
        mode = self.options.get("color", "auto")
        self._color = {"stdout": _colored(sys.stdout, mode),
                       "stderr": _colored(sys.stderr, mode)}
        self._name = self.name.encode("utf-8", "replace")
        self._event(why)
        if message:
            for line in message.rstrip("\n").splitlines():
                self._event(f"  {line}")

    def _write(self, stream: str, prefix: bytes, kind: str, text: bytes) -> None:
        target = sys.stdout if stream == "stdout" else sys.stderr
        if target is None:
            return
        if self._color[stream]:
            prefix = PREFIX[kind] + prefix + RESET
        data = prefix + b" " + text + b"\n"
        try:
            buffer = getattr(target, "buffer", None)
            if buffer is not None:
                target.flush()  # text written to it before stays before
                _write_all(buffer, data)
                buffer.flush()
            else:
                target.write(data.decode("utf-8", "replace"))
                target.flush()
        except (OSError, ValueError):
            self._dropped += 1

    def _who(self) -> bytes:
        """The group's name, and in a group of several the instance: ``web:2``."""
        if self.instance is None:
            return self._name
        return b"%s:%d" % (self._name, self.instance)

    def _line(self, stream: str, line: bytes) -> None:
        pid = b"?" if self._pid is None else b"%d" % self._pid
        self._write(stream, b"[%s %s %s]" % (self._who(), pid, stream.encode()), stream, line)

    def _event(self, text: str) -> None:
        self._write("stderr", b"[%s]" % self._who(), "event",
                    text.encode("utf-8", "replace"))

    def spawn(self, pid: int) -> None:
        self._pid = pid
        self._event(f"spawn pid {pid}")

    def adopt(self, pid: int) -> None:
        self._pid = pid
        self._event(f"adopt pid {pid}")

    def respawn(self, pid: int, why: str = "exit") -> None:
        self._pid = pid
        self._event(f"respawn pid {pid}" + ("" if why == "exit" else f" ({why})"))

    def exit(self, status: immortal.ExitStatus) -> None:
        self._event(f"exit pid {status.pid}: {last_text(status)}")

    def position(self) -> int | None:
        """The pump's stderr, where it is a file: its inode and size (``readback``)."""
        try:
            info = os.fstat(2)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return readback.position_of(info.st_ino, info.st_size)

    def delivered(self, stream: str, lines: list[bytes], offset: int,
                  position: int | None) -> int | None:
        """How many of ``lines`` the dead pump's stderr file holds past ``position``, for a
        stream written to that file (stderr; stdout too when both go to one file). That
        file is this pump's stderr, or was renamed ``.1`` at this pump's start (the daemon
        keeps the dead pump's log beside the new one). Other writers share it (the pump's
        own messages), so records that are not this monitor's are passed over."""
        fd = 1 if stream == "stdout" else 2
        try:
            mine, errors = os.fstat(fd), os.fstat(2)
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None  # a closed stream, or no /proc to name its file: cannot tell
        if not stat.S_ISREG(mine.st_mode) or \
                (mine.st_dev, mine.st_ino) != (errors.st_dev, errors.st_ino):
            return None
        files = readback.since(path, position, 1)
        if files is None:
            return None
        self._name = self.name.encode("utf-8", "replace")  # before setup: not set yet
        who = self._who()
        record = re.compile(_SGR + rb"\[" + re.escape(who) + rb" (?:\d+|\?) "
                            + stream.encode() + rb"\]" + _SGR + rb" (.*)", re.DOTALL)
        limit = sum(map(len, lines)) + len(lines) * (len(who) + 64) + 65536
        count = 0
        for name, start in files:
            for text in (readback.read(name, start, limit) or b"").split(b"\n")[:-1]:
                found = record.fullmatch(text)
                if found is not None and count < len(lines) \
                        and found.group(1) == lines[count]:
                    count += 1
        return count

    def stdout(self, line: bytes) -> None:
        self._line("stdout", line)

    def stderr(self, line: bytes) -> None:
        self._line("stderr", line)

    def dropped(self, count: int) -> None:
        self._event(f"dropped {count} lines (backpressure)")

    def message(self, message: Any) -> None:
        self._event("message " + json.dumps(message, ensure_ascii=False, default=str))

    def reopen(self) -> None:
        self._event("reopen (nothing to reopen)")

    def shutdown(self, reason: str) -> None:
        self._event(f"shutdown: {reason}")


def _write_all(buffer: Any, data: bytes) -> None:
    """All of ``data`` to ``buffer``. Under ``PYTHONUNBUFFERED`` (``-u``) the binary layer
    of stdout is the file itself, whose ``write`` may take part of a long line only (a
    signal, a SIGCHLD say, during a write to a full pipe); a terminal or pipe another
    program made non-blocking takes none at times."""
    view = memoryview(data)
    while view:
        try:
            written = buffer.write(view)
        except BlockingIOError as exc:  # a buffered layer: what it took is counted
            written = exc.characters_written
            select.select([], [buffer.fileno()], [])
        if written is None:  # a non-blocking file that took nothing
            select.select([], [buffer.fileno()], [])
            written = 0
        view = view[written:]
