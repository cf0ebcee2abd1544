"""The default monitor: appends every output line and event, timestamped, to a file.

Options:

``output``
    the file to append to (default: ``output.log`` in the group's instance directory).
``max_bytes``
    rotate when a write would make the file larger than this many bytes; 0 (the default)
    never rotates. A record is never split: one larger than ``max_bytes`` goes alone into a
    fresh file.
``backups``
    how many rotated files to keep (default 5, at most 1000): ``output`` is renamed
    ``output.1``, the old ``output.1`` becomes ``output.2``, and so on up to
    ``output.<backups>``; the oldest is dropped. With 0, the full file is simply removed
    and a new one started.

Integers may also be given as decimal strings (``immortal run -o max_bytes=1048576``).

Each line reads ``2026-11-27T22:19:34.123Z stdout | text``; events read
``... event  | spawn pid 123``. In a group running several instances of its program
(``workers``), the lines and events of instance 2 read ``... stdout:2 | text`` and
``... event:2  | spawn pid 123``.

Each line is written once across pump kills: before each write the pump records the file's
size (and inode); a pump killed around a write leaves its successor to read what lies in
that file past that size (renamed ``output.N`` if the call rotated it, then the files it
started), and hand over again only the lines that are not there (``delivered``). A call
whose rotation removed that file (``backups`` 0), or that found the file rotated away from
outside, cannot be checked so: its lines are handed over again (at least once).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import immortal
from immortal.safety import check_path, open_append
from immortal.statewords import last_text

from . import readback

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any, BinaryIO

OPTIONS = ("output", "max_bytes", "backups")
DEFAULT_BACKUPS = 5
MAX_BACKUPS = 1000  #: more rotated files than anyone keeps by count
STAMP = 24  # the width of a stamp: 2026-11-27T22:19:34.123Z


_second: list[Any] = [None, b""]  # the last second stamped, and its text


def _stamp() -> bytes:
    now = time.time()
    second = int(now)
    if second != _second[0]:  # strftime once a second, not at every block
        _second[:] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
    return b"%s.%03dZ" % (_second[1], int(now % 1 * 1000))


ERROR_EVERY = 10.0  # seconds between two reports of the same write failure
CHECK_EVERY = 1.0  # seconds between two checks, on output lines, that the path is our file


def refuse_unknown(monitor: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse an option the monitor does not have, suggesting the closest one."""
    known = tuple(known)
    for key in options:
        if key not in known:
            import difflib  # only for the message: not loaded in every pump

            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise immortal.MonitorOptionsError(
                f"the {monitor} monitor has no option {key!r}{hint}; its options: "
                + ", ".join(known))


def count_option(monitor: str, options: Mapping[str, Any], key: str) -> int | None:
    """A non-negative integer option (a decimal string is accepted, as the CLI gives);
    None when absent or None (the default applies)."""
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise immortal.MonitorOptionsError(
            f"the {monitor} monitor's {key!r} must be a non-negative integer (got "
            f"{type(value).__name__}: {value!r})")
    if value < 0:
        raise immortal.MonitorOptionsError(
            f"the {monitor} monitor's {key!r} must be a non-negative integer (got {value})")
    return value


def output_option(monitor: str, output: object) -> str:
    """The absolute path of a writable file ``output`` names, or MonitorOptionsError."""
    if not isinstance(output, (str, os.PathLike)) or not os.fspath(output):
        raise immortal.MonitorOptionsError(
            f"the {monitor} monitor's 'output' must be a path (got {output!r})")
    path = Path(os.path.abspath(os.fspath(output)))
    if path.is_symlink():
        raise immortal.MonitorOptionsError(
            f"output {str(path)!r} is a symlink; give the file it points to (outputs are "
            "opened without following symlinks, which another user could plant)")
    try:
        check_path(path, immortal.MonitorOptionsError)
    except immortal.MonitorOptionsError as exc:
        raise immortal.MonitorOptionsError(
            f"the {monitor} monitor's output: {exc}; write it in a directory of root's or "
            "yours that nobody else may write") from None
    if path.is_dir():
        raise immortal.MonitorOptionsError(f"output {str(path)!r} is a directory; "
                                           "give a file path")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise immortal.MonitorOptionsError(f"output {str(path)!r} is not writable")
    elif not path.parent.is_dir():
        raise immortal.MonitorOptionsError(
            f"output {str(path)!r}: directory {str(path.parent)!r} does not exist")
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        raise immortal.MonitorOptionsError(
            f"output {str(path)!r}: directory {str(path.parent)!r} is not writable")
    return str(path)


class FileMonitor(immortal.Monitor):
    """Appends output and events with timestamps to ``options["output"]``.

    A full disk or a removed directory never crashes it: lines are dropped and counted, the
    failure is reported on the pump's stderr at most every 10 s, and writing resumes (with a
    line saying how many were dropped) as soon as the file can be written again. If the file
    is removed or rotated away, it is reopened at its path at the next event, or at the next
    line a second or more after the last check. With ``max_bytes`` it rotates the file itself.

    Subclasses (the ``jsonl`` monitor) change the record format through ``_format_line``,
    ``_format_event`` and ``_resumed``, and keep the writing, reopening and rotation.
    """

    MONITOR = "file"  # as named in messages
    DEFAULT_OUTPUT = "output.log"

    _file: BinaryIO | None = None
    _path: str = ""
    _size = 0
    _inode = 0
    _max_bytes = 0
    _backups = DEFAULT_BACKUPS
    _dropped = 0
    _reported = -ERROR_EVERY
    _checked = 0.0

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> Mapping[str, Any]:
        refuse_unknown(cls.MONITOR, options, OPTIONS)
        checked: dict[str, Any] = {}
        for key in ("max_bytes", "backups"):
            value = count_option(cls.MONITOR, options, key)
            if value is not None:
                checked[key] = value
        if checked.get("backups", 0) > MAX_BACKUPS:
            # Each rotation looks at every name up to output.<backups>: a huge count
            # holds the pump in one call for seconds.
            raise immortal.MonitorOptionsError(
                f"the {cls.MONITOR} monitor's 'backups' must be at most {MAX_BACKUPS} "
                f"(got {checked['backups']})")
        output = options.get("output")
        if output is not None:
            checked["output"] = output_option(cls.MONITOR, output)
        return checked

    @classmethod
    def output_path(cls, options: Mapping[str, Any], directory: Path) -> str:
        return str(options.get("output") or Path(directory) / cls.DEFAULT_OUTPUT)

    # ----------------------------------------------------------------- writing
    def _open(self) -> None:
        """Open the output for appending; raises OSError."""
        # Unbuffered, append-only: every line is in the file when the hook returns. Checked
        # and opened again at each reopen: a rotation is when another user could plant a
        # symlink or swap a directory on the way.
        handle = os.fdopen(open_append(self._path), "ab", buffering=0)
        try:
            stat = os.fstat(handle.fileno())
        except OSError:
            handle.close()
            raise
        self._size, self._inode = stat.st_size, stat.st_ino
        self._file = handle

    def _write(self, record: bytes | memoryview, check: bool = False) -> None:
        """Append one whole record (ending with a newline), or drop and count it."""
        self._write_parts((record,), len(record), check)

    def _write_parts(self, parts: Sequence[bytes | memoryview], size: int,
                     check: bool = False, lines: int = 1) -> None:
        """Append the record that ``parts`` (``size`` bytes in all, ``lines`` lines) make,
        with one system call (``writev``), or drop and count its lines. A record that
        failed half-way is cut off again: the next one starts on a line of its own."""
        now = time.monotonic()
        # Events are rare: check at each. Lines: at most once a second (a stat() per line
        # would double the cost of relaying).
        if check or self._file is None or now - self._checked >= CHECK_EVERY:
            self._checked = now
            self._reopen_if_needed()
        if self._file is None:
            self._dropped += lines
            return
        if 0 < self._max_bytes < self._size + size and self._size > 0:
            self._rotate()
            if self._file is None:
                self._dropped += lines
                return
        before = self._size
        try:
            written = os.writev(self._file.fileno(), parts)
            self._size += written
            if written < size:  # a short write (a full disk, a size limit): the rest
                self._write_rest(parts, written)
        except OSError as exc:
            self._dropped += lines
            if self._size > before:
                self._cut(before)
            self._fail(exc)

    def _cut(self, size: int) -> None:
        """Take back the part of a record that was written before the write failed."""
        assert self._file is not None
        try:
            os.ftruncate(self._file.fileno(), size)
            self._size = size
        except OSError:
            pass  # the next record's line may then follow the part on the same line

    def _write_rest(self, parts: Sequence[bytes | memoryview], written: int) -> None:
        """After a short write of ``written`` bytes: the rest of ``parts``, or OSError."""
        assert self._file is not None
        view = memoryview(b"".join(parts))[written:]
        while view:
            written = self._file.write(view)
            if not written:
                raise OSError("short write")
            self._size += written
            view = view[written:]

    def _rotate(self) -> None:
        """output → output.1 → ... → output.<backups> (the oldest dropped); a new output."""
        assert self._file is not None
        self._file.close()
        self._file = None
        path = self._path
        try:
            if self._backups == 0:
                os.unlink(path)
            else:
                for n in range(self._backups - 1, 0, -1):
                    older = f"{path}.{n}"
                    if os.path.lexists(older):
                        os.replace(older, f"{path}.{n + 1}")
                os.replace(path, f"{path}.1")
        except FileNotFoundError:
            pass  # the output itself was removed meanwhile: a new one starts all the same
        except OSError as exc:
            self._fail(exc)
            return
        try:
            self._open()
        except OSError as exc:
            self._fail(exc)

    def _reopen_if_needed(self) -> None:
        if self._file is not None:
            try:
                ours = os.fstat(self._file.fileno())
                same = os.path.samestat(os.stat(self._path), ours)
            except OSError:
                same = False
            if same:
                self._size = ours.st_size  # another writer may append to the file too
                return
            self._file.close()
            self._file = None
        try:
            self._open()
        except OSError as exc:
            self._fail(exc)
            return
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            self._write(self._resumed(dropped))
            if self._file is None:
                # A full disk opens a file all the same: the note failed, and the count
                # goes on from where it was (the note itself is no line of the target's).
                self._dropped = dropped

    def _fail(self, exc: OSError) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        now = time.monotonic()
        if now - self._reported >= ERROR_EVERY:
            self._reported = now
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                exc = OSError("refusing it: it is a symlink, which another user may have "
                              "planted; remove it")
            sys.stderr.write(f"immortal: {self.MONITOR} monitor: cannot write {self._path}: "
                             f"{exc}; dropping lines until it can\n")
            sys.stderr.flush()

    # ----------------------------------------------------------------- the format
    def _tag(self, kind: str) -> bytes:
        """``stdout``, ``event `` (padded to the streams' width) or, for instance 2 of a
        group of several, ``stdout:2``, ``event:2 ``."""
        pad = " " * (6 - len(kind))
        if self.instance is not None:
            kind = f"{kind}:{self.instance}"
        return (kind + pad).encode()

    def _format_line(self, stream: str, line: bytes, offset: int) -> bytes:
        return b"%s %s | %s\n" % (_stamp(), self._tag(stream), line)

    def _format_event(self, event: str, text: str, **fields: Any) -> bytes:
        """One event record; ``text`` is the human form, ``fields`` the structured one."""
        texts = [text]
        if event == "setup" and fields.get("message"):
            # The dead pump's stderr tail: one indented event line each, in one record.
            texts += [f"  {line}" for line in fields["message"].rstrip("\n").splitlines()]
        stamp = _stamp()
        tag = self._tag("event")
        return b"".join(b"%s %s | %s\n" % (stamp, tag, t.encode("utf-8", "replace"))
                        for t in texts)

    def _resumed(self, dropped: int) -> bytes:
        return self._format_event("resumed", f"output resumed; {dropped} lines dropped while "
                                  "it failed", dropped=dropped)

    def _event(self, event: str, text: str, check: bool = True, **fields: Any) -> None:
        self._write(self._format_event(event, text, **fields), check=check)

    # ----------------------------------------------------------------- hooks
    def setup(self, why: str, message: str | None) -> None:
        self._path = self.output_path(self.options, self.directory)
        self._max_bytes = int(self.options.get("max_bytes") or 0)
        backups = self.options.get("backups")
        self._backups = DEFAULT_BACKUPS if backups is None else int(backups)
        self._open()  # a failure here fails the start: the output cannot be written at all
        self._checked = time.monotonic()
        self._event("setup", why, why=why, message=message)

    def spawn(self, pid: int) -> None:
        self._event("spawn", f"spawn pid {pid}", pid=pid)

    def adopt(self, pid: int) -> None:
        self._event("adopt", f"adopt pid {pid}", pid=pid)

    def respawn(self, pid: int, why: str = "exit") -> None:
        self._event("respawn", f"respawn pid {pid}", pid=pid, why=why)

    def exit(self, status: immortal.ExitStatus) -> None:
        self._event("exit", f"exit pid {status.pid}: {last_text(status)}", status=status)

    def block(self, stream: str, data: bytes, offset: int) -> None:
        if type(self)._format_line is not FileMonitor._format_line:
            super().block(stream, data, offset)  # a subclass formats line by line
            return
        # A whole block: one timestamp, one replace at C speed, one write. The prefix goes
        # after every newline, so the record is the prefix, then all but the last one.
        # Written as two parts, not joined into a third copy of the block.
        prefix = b"%s %s | " % (_stamp(), self._tag(stream))
        body = data.replace(b"\n", b"\n" + prefix)
        size = len(body)
        if 0 < self._max_bytes < self._size + size:
            super().block(stream, data, offset)  # rotation decides record by record
            return
        self._write_parts((prefix, memoryview(body)[:size - len(prefix)]), size,
                          lines=data.count(b"\n"))

    def position(self) -> int | None:
        if self._file is None:
            return None
        return readback.position_of(self._inode, self._size)

    def delivered(self, stream: str, lines: list[bytes], offset: int,
                  position: int | None) -> int | None:
        """How many of ``lines`` the file holds past ``position`` (and the files a rotation
        in that call started): only the call in doubt wrote there (this runs before setup
        writes), so a record of ``stream`` with the line's text, whatever its stamp, is
        that line's. A ``resumed`` event that call wrote first is passed over."""
        if type(self)._format_line is not FileMonitor._format_line:
            return None  # a subclass's format: its own to check
        backups = self.options.get("backups")
        files = readback.since(self.output_path(self.options, self.directory), position,
                               DEFAULT_BACKUPS if backups is None else int(backups))
        if files is None:
            return None
        tag = b" %s | " % self._tag(stream)
        limit = sum(map(len, lines)) + len(lines) * (STAMP + len(tag) + 1) + 4096
        count = 0
        for path, start in files:
            data = readback.read(path, start, limit)
            for record in (data or b"").split(b"\n")[:-1]:  # whole records only
                body = record[STAMP:]
                if count < len(lines) and body == tag + lines[count]:
                    count += 1
                elif count or not body.startswith(b" %s | " % self._tag("event")):
                    return count
        return count

    def stdout(self, line: bytes, offset: int = 0) -> None:
        self._write(self._format_line("stdout", line, offset))

    def stderr(self, line: bytes, offset: int = 0) -> None:
        self._write(self._format_line("stderr", line, offset))

    def dropped(self, count: int) -> None:
        self._event("dropped", f"dropped {count} lines (backpressure)", count=count)

    def message(self, message: Any) -> None:
        # As frequent as lines, perhaps: checked as lines are, not at each.
        text = json.dumps(message, ensure_ascii=False, default=str)
        self._event("message", f"message {text}", check=False, message=message)

    def reopen(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._reopen_if_needed()
        self._event("reopen", "reopened")

    def shutdown(self, reason: str) -> None:
        self._event("shutdown", f"shutdown: {reason}", reason=reason)
        if self._file is not None:
            self._file.close()
            self._file = None
