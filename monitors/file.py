"""The default monitor: appends every output line and event, timestamped, to a file.

Options: ``output`` — the file to append to (default: ``output.log`` in the group's instance
directory). Each line reads ``2026-11-27T22:19:34.123Z stdout | text``; events read
``... event  | spawn pid 123``.
"""

from __future__ import annotations

import difflib
import os
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


class FileMonitor(immortal.Monitor):
    """Appends output and events with timestamps to ``options["output"]``."""

    _file: BinaryIO | None = None

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

    def _write(self, kind: bytes, text: bytes) -> None:
        if self._file is None:
            return
        self._file.write(b"%s %s | %s\n" % (_stamp(), kind, text))

    def _event(self, text: str) -> None:
        self._write(b"event ", text.encode())

    def setup(self, why: str, message: str | None) -> None:
        path = self.output_path(self.options, self.directory)
        # Unbuffered, append-only: every line is on disk when the hook returns.
        self._file = open(path, "ab", buffering=0)
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

    def shutdown(self, reason: str) -> None:
        self._event(f"shutdown: {reason}")
        if self._file is not None:
            self._file.close()
            self._file = None
