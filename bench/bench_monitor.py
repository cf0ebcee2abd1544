"""The benchmark's trivial Python monitors.

``bench_monitor:Counter`` (with ``bench/`` on ``PYTHONPATH``) sees every line and counts
them. When it sees the relay target's last line (ending in ``END-OF-RELAY``) it writes how
many stdout lines it has seen to ``options["done"]``, which the bench waits for.
``bench_monitor:Timeline`` notes when targets are spawned and say they serve.
"""

from __future__ import annotations

import os
import time

import immortal

MARKER = b"END-OF-RELAY"


class Counter(immortal.Monitor):
    """Counts stdout lines one call each (it does not override the batch hook ``lines``)."""

    seen = 0

    def stdout(self, line: bytes) -> None:
        self.seen += 1
        if line.endswith(MARKER):
            path = self.options["done"]
            with open(path + ".tmp", "w") as handle:
                handle.write(str(self.seen))
            os.replace(path + ".tmp", path)
            self.seen = 0


class Timeline(immortal.Monitor):
    """Writes when the pump spawned each target and saw it say it serves, one line each
    (``monotonic_ns spawn|serving instance pid``) to ``options["path"]``: the rolling
    row's readiness of each replacement, in the roll itself, seen by the pump."""

    def respawn(self, pid: int, why: str = "exit") -> None:
        self._note("spawn", pid)

    def stdout(self, line: bytes) -> None:
        if line.startswith(b"serving "):
            self._note("serving", int(line.split()[1]))

    def _note(self, what: str, pid: int) -> None:
        with open(self.options["path"], "a") as handle:
            handle.write(f"{time.monotonic_ns()} {what} {self.instance} {pid}\n")
