"""The default monitor: appends every output line and event, timestamped, to a file.

Options: ``output`` — the file to append to (default: ``output.log`` in the group's instance
directory). Each line reads ``2026-11-27T22:19:34.123Z stdout | text``; events read
``... event  | spawn pid 123``.
"""

from __future__ import annotations

import difflib
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import immortal

OPTIONS = ("output",)


def _stamp() -> bytes:
    now = time.time()
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + f".{int(now % 1 * 1000):03d}Z").encode()


ERROR_EVERY = 10.0  # seconds between two reports of the same write failure
CHECK_EVERY = 1.0  # seconds between two checks, on output lines, that the path is our file


class FileMonitor(immortal.Monitor):
    """Appends output and events with timestamps to ``options["output"]``.

    A full disk or a removed directory never crashes it: lines are dropped and counted, the
    failure is reported on the pump's stderr at most every 10 s, and writing resumes (with a
    line saying how many were dropped) as soon as the file can be written again. If the file
    is removed or rotated away, it is reopened at its path at the next event, or at the next
line a second or more after the last check.
    """

    _file: BinaryIO | None = None
    _path: str = ""
    _dropped = 0
    _reported = -ERROR_EVERY
    _checked = 0.0

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> Mapping[str, Any]:
        for key in options:
            if key not in OPTIONS:
                close = difflib.get_close_matches(str(key), OPTIONS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise immortal.MonitorOptionsError(
                    f"the file monitor has no option {key!r}{hint}; its options: "
                    + ", ".join(OPTIONS))
        output = options.get("output")
        if output is None:
            return {}
        if not isinstance(output, (str, os.PathLike)) or not os.fspath(output):
            raise immortal.MonitorOptionsError(
                f"the file monitor's 'output' must be a path (got {output!r})")
        path = Path(os.path.abspath(os.fspath(output)))
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
        return {"output": str(path)}

    @classmethod
    def output_path(cls, options: Mapping[str, Any], directory: Path) -> str:
        return str(options.get("output") or Path(directory) / "output.log")

    def _write(self, kind: bytes, text: bytes, check: bool = False) -> None:
        now = time.monotonic()
        # Events are rare: check at each. Lines: at most once a second (a stat() per line
        # would double the cost of relaying).
        if check or self._file is None or now - self._checked >= CHECK_EVERY:
            self._checked = now
            self._reopen_if_needed()
        if self._file is None:
            self._dropped += 1
            return
        try:
            self._file.write(b"%s %s | %s\n" % (_stamp(), kind, text))
        except OSError as exc:
            self._dropped += 1
            self._fail(exc)

    def _reopen_if_needed(self) -> None:
        if self._file is not None:
            try:
                same = os.path.samestat(os.stat(self._path), os.fstat(self._file.fileno()))
            except OSError:
                same = False
            if same:
                return
            self._file.close()
            self._file = None
        try:
            self._file = open(self._path, "ab", buffering=0)
        except OSError as exc:
            self._fail(exc)
            return
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            self._write(b"event ", b"output resumed; %d lines dropped while it failed" % dropped)

    def _fail(self, exc: OSError) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        now = time.monotonic()
        if now - self._reported >= ERROR_EVERY:
            self._reported = now
            sys.stderr.write(f"immortal: file monitor: cannot write {self._path}: {exc}; "
                             "dropping lines until it can\n")
            sys.stderr.flush()

    def _event(self, text: str) -> None:
        self._write(b"event ", text.encode(), check=True)

    def setup(self, why: str, message: str | None) -> None:
        self._path = self.output_path(self.options, self.directory)
        # Unbuffered, append-only: every line is in the file when the hook returns.
        self._file = open(self._path, "ab", buffering=0)
        self._checked = time.monotonic()
        self._event(why)
        if message:
            for line in message.rstrip("\n").splitlines():
                self._event(f"  {line}")

    def spawn(self, pid: int) -> None:
        self._event(f"spawn pid {pid}")

    def respawn(self, pid: int) -> None:
        self._event(f"respawn pid {pid}")

    def exit(self, status: immortal.ExitStatus) -> None:
        self._event(f"exit pid {status.pid}: {status}")

    def stdout(self, line: bytes) -> None:
        self._write(b"stdout", line)

    def stderr(self, line: bytes) -> None:
        self._write(b"stderr", line)

    def reopen(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._reopen_if_needed()
        self._event("reopened")

    def shutdown(self, reason: str) -> None:
        self._event(f"shutdown: {reason}")
        if self._file is not None:
            self._file.close()
            self._file = None
