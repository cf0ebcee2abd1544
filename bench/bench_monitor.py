"""The benchmark's trivial Python monitor: it sees every line and counts them.

Named ``bench_monitor:Counter`` with ``bench/`` on ``PYTHONPATH``. When it sees the relay
target's last line (ending in ``END-OF-RELAY``) it writes how many stdout lines it has seen
to ``options["done"]``, which the bench waits for.
"""

from __future__ import annotations

import os

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
