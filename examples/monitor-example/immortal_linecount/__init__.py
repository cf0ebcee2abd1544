"""``linecount``: counts what a group's targets print, and writes a JSON summary at shutdown.

Options: ``summary``, the file to write (default: ``summary.json`` in the group's instance
directory). The summary reads::

    {"group": "worker", "stdout": {"lines": 120, "bytes": 5230},
     "stderr": {"lines": 3, "bytes": 98}, "spawned": 2, "exits": ["killed by SIGTERM"],
     "setups": ["pump start"], "reason": "stop"}

Counts are this pump's: after a pump restart (``setups`` says so) they start again from 0.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import immortal


class LineCount(immortal.Monitor):
    @classmethod
    def check(cls, options):
        """Runs in the caller: refuse bad options before anything starts."""
        unknown = set(options) - {"summary"}
        if unknown:
            raise ValueError(f"linecount has no option {sorted(unknown)[0]!r}; "
                             "its only option is 'summary'")
        summary = options.get("summary")
        if summary is None:
            return {}
        if not isinstance(summary, str) or not summary:
            raise ValueError(f"linecount's 'summary' must be a file path (got {summary!r})")
        # The pump runs in '/', so make the path absolute here, in the caller's directory.
        path = os.path.abspath(summary)
        if not os.path.isdir(os.path.dirname(path)):
            raise ValueError(f"linecount's summary {path!r}: no such directory")
        return {"summary": path}

    @classmethod
    def output_path(cls, options, directory):
        return None  # no output file for 'immortal logs' to show

    # Everything below runs in the pump.
    def setup(self, why, message):
        self.counts = {"stdout": {"lines": 0, "bytes": 0}, "stderr": {"lines": 0, "bytes": 0}}
        self.spawned = 0
        self.exits = []
        self.setups = [why]

    def spawn(self, pid):
        self.spawned += 1

    def respawn(self, pid):
        self.spawned += 1

    def exit(self, status):
        self.exits.append(str(status))

    def stdout(self, line):
        self._count("stdout", line)

    def stderr(self, line):
        self._count("stderr", line)

    def _count(self, stream, line):
        self.counts[stream]["lines"] += 1
        self.counts[stream]["bytes"] += len(line)

    def shutdown(self, reason):
        path = Path(self.options.get("summary") or self.directory / "summary.json")
        summary = {"group": self.name, **self.counts, "spawned": self.spawned,
                   "exits": self.exits, "setups": self.setups, "reason": reason}
        # Written whole or not at all: a temporary file in the same directory, renamed.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as handle:
            json.dump(summary, handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path)
