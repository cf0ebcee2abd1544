"""The ``jsonl`` monitor: one JSON object per line, for programs to read.

Options: ``output`` (default: ``output.jsonl`` in the group's instance directory), and
``max_bytes`` and ``backups`` for rotation, exactly as the ``file`` monitor's. It writes as
the ``file`` monitor does: a full disk or a removed directory drops (and counts) records
instead of failing, and a file rotated away is reopened.

Output lines::

    {"stream": "stdout", "line": "text", "offset": 4096, "pid": 123, "generation": 1,
     "mono": 5123.25, "time": "2026-11-27T22:19:34.123456+00:00"}

``line`` is the line decoded as UTF-8 with ``errors="replace"`` (invalid bytes become
U+FFFD), without its newline; a NUL or a ``\\r`` arrives escaped by JSON. ``pid`` is the
target that wrote it (null when unknown, see below); ``generation`` counts the targets this
monitor instance saw spawned (``spawn`` and ``respawn`` events). ``mono`` is
``time.monotonic()`` in the pump, for intervals; ``time`` the wall clock in ISO 8601, UTC.
In a group running several instances of its program (``workers``), the records of lines and
of an instance's events carry ``"instance": K``; each instance's ``pid``, ``generation``
and ``offset`` count on their own.
``offset`` is where the line starts in the group's stream, counted across pumps and targets;
after a pump or daemon restart this monitor reads the tail of its file and skips a line at
an offset it already wrote since the group's last start (a dying pump's last line, handed
over again): exactly once.

Events carry ``event`` instead of ``stream``, the same ``pid``/``generation``/``mono``/``time``,
and their own fields::

    {"event": "setup", "why": "pump start", "message": null, ...}
    {"event": "spawn", "pid": 123, ...}
    {"event": "respawn", "pid": 124, "why": "exit", ...}      # or "manual" (a restart)
    {"event": "exit", "pid": 123, "status": {... ExitStatus.to_json() ...}, ...}
    {"event": "dropped", "count": 12, ...}      # backpressure "drop" skipped lines
    {"event": "message", "message": <JSON value the target sent>, ...}   # channel=True
    {"event": "reopen", ...}
    {"event": "shutdown", "reason": "stop", ...}
    {"event": "resumed", "dropped": 3, ...}     # writing works again after write failures

After a ``"pump restart"`` or ``"daemon restart"`` setup, the new pump adopts the running
target: an ``adopt`` event gives its pid; this instance does not know how many targets came
before (``generation`` starts again from 0).
"""

from __future__ import annotations

import json
import os
import time
from bisect import bisect_right
from itertools import accumulate, repeat
from operator import add
from collections.abc import Mapping
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]

import immortal

from . import PerInstance
from .file import FileMonitor

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


def _now() -> dict[str, Any]:
    return {"mono": time.monotonic(),
            "time": datetime.now(timezone.utc).isoformat(timespec="microseconds")}


def _json(data: Mapping[str, Any]) -> bytes:
    # ensure_ascii: the file is plain ASCII whatever the target wrote (lone surrogates too).
    return json.dumps(data, ensure_ascii=True, separators=(", ", ": "),
                      default=str).encode("ascii") + b"\n"


_text = encode_basestring_ascii  # a str as JSON, as ``_json`` writes it
_LINE = "\0line\0"  # stand-ins in a record made once per block
_OFFSET = -918273645546372819


def _key(stream: str, instance: object) -> str:
    """Where the last offset of ``stream`` is kept: per instance in a group of several."""
    return stream if instance is None else f"{stream}:{instance}"


class JsonlMonitor(FileMonitor):
    """Writes each output line and event as a JSON object on a line of its own."""

    MONITOR = "jsonl"
    DEFAULT_OUTPUT = "output.jsonl"

    _pid = PerInstance()  # each instance's target, in a group of several
    _generation = PerInstance(0)

    _kept: dict[str, int] | None = None  # the last offset written, per stream (``_key``)
    _tail: dict[str, int] | None = None  # the same, read from the file by delivered()

    def setup(self, why: str, message: str | None) -> None:
        self._kept = {"stdout": -1, "stderr": -1}
        if why != "pump start":
            self._kept.update(self._tail or self._kept_offsets())
        super().setup(why, message)

    def _kept_offsets(self) -> dict[str, int]:
        """The last offsets already in the file (its tail), to skip a line handed over
        again by a pump that died just after giving it to us."""
        kept: dict[str, int] = {}
        try:
            path = self.output_path(self.options, self.directory)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # never a symlink
            with os.fdopen(fd, "rb") as handle:
                handle.seek(0, 2)
                handle.seek(max(0, handle.tell() - 256 * 1024))
                tail = handle.read().splitlines()[1:]
        except OSError:
            return kept
        for raw in tail:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if record.get("event") == "setup" and record.get("why") == "pump start":
                # Offsets start again at 0 with each start of the group: only this run's
                # lines (those after its start) can be handed over again.
                kept.clear()
                continue
            stream, offset = record.get("stream"), record.get("offset")
            if stream in ("stdout", "stderr") and isinstance(offset, int):
                key = _key(stream, record.get("instance"))
                kept[key] = max(kept.get(key, -1), offset)
        return kept

    def position(self) -> int | None:
        return None  # its records carry their offsets: delivered() reads those

    def delivered(self, stream: str, lines: list[bytes], offset: int,
                  position: int | None) -> int | None:
        """How many of ``lines`` the file holds: those at or before the last offset of
        ``stream`` in its tail."""
        self._tail = self._kept_offsets()  # setup, next, needs it too: read once
        kept = self._tail.get(_key(stream, self.instance), -1)
        count = 0
        for line in lines:
            if offset > kept:
                break
            count += 1
            offset += len(line) + 1
        return count

    def block(self, stream: str, data: bytes, offset: int) -> None:
        """A block of lines: one timestamp, one record made for the block, each line's text
        encoded into it and one write, with no Python-level step per line.

        The block is decoded whole: a newline ends an invalid UTF-8 sequence as the end of
        a line decoded alone does, so each line's text is the same."""
        lengths = list(map(len, data.split(b"\n")))
        del lengths[-1]
        texts = data.decode("utf-8", "replace").split("\n")
        del texts[-1]
        starts = list(accumulate(map(add, lengths, repeat(1)), initial=offset))
        key = _key(stream, self.instance)
        kept = -1 if self._kept is None else self._kept.get(key, -1)
        skip = bisect_right(starts, kept, 0, len(texts))  # written before a pump died
        if skip == len(texts):
            return
        record = "".join(map(self._template(stream).__mod__,
                             zip(map(_text, texts[skip:]), starts[skip:]))).encode("ascii")
        if 0 < self._max_bytes < self._size + len(record):
            immortal.Monitor.block(self, stream, data, offset)  # rotation: record by record
            return
        if self._kept is not None:
            self._kept[key] = starts[-2]
        self._write(record)

    def _template(self, stream: str) -> str:
        """The record of a line of ``stream`` now, as ``_format_line`` makes it, with
        ``%s`` for the line's JSON text and ``%d`` for its offset."""
        record = {"stream": stream, "line": _LINE, "offset": _OFFSET, "pid": self._pid,
                  "generation": self._generation}
        if self.instance is not None:
            record["instance"] = self.instance
        text = _json({**record, **_now()}).decode("ascii").replace("%", "%%")
        return text.replace(_text(_LINE), "%s", 1).replace(str(_OFFSET), "%d", 1)

    def stdout(self, line: bytes, offset: int = 0) -> None:
        if self._fresh("stdout", offset):
            super().stdout(line, offset)

    def stderr(self, line: bytes, offset: int = 0) -> None:
        if self._fresh("stderr", offset):
            super().stderr(line, offset)

    def _fresh(self, stream: str, offset: int) -> bool:
        if self._kept is None:
            return True
        key = _key(stream, self.instance)  # each instance's offsets count on their own
        if offset <= self._kept.get(key, -1):
            return False  # already written, by us before the pump that gave it died
        self._kept[key] = offset
        return True

    def _format_line(self, stream: str, line: bytes, offset: int) -> bytes:
        record = {"stream": stream, "line": line.decode("utf-8", "replace"),
                  "offset": offset, "pid": self._pid, "generation": self._generation}
        if self.instance is not None:
            record["instance"] = self.instance
        return _json({**record, **_now()})

    def _format_event(self, event: str, text: str, **fields: Any) -> bytes:
        status = fields.pop("status", None)
        if status is not None:
            fields["status"] = status.to_json()
            if status.pid is not None:
                fields["pid"] = status.pid
        fields.setdefault("pid", self._pid)
        if self.instance is not None:
            fields["instance"] = self.instance
        return _json({"event": event, **fields, "generation": self._generation, **_now()})

    def spawn(self, pid: int) -> None:
        self._pid = pid
        self._generation += 1
        super().spawn(pid)

    def adopt(self, pid: int) -> None:
        self._pid = pid  # the generation count of a dead pump is not known here
        super().adopt(pid)

    def respawn(self, pid: int, why: str = "exit") -> None:
        self._pid = pid
        self._generation += 1
        super().respawn(pid, why)

    def exit(self, status: immortal.ExitStatus) -> None:
        super().exit(status)
        if status.pid is not None and status.pid == self._pid:
            self._pid = None  # lines after this come from no target (none runs)
