"""Monitors for the delivery tests: each writes every line it gets to ``options["path"]``,
one line per line, as the README's ``stdout(self, line)`` style does; named as
``plugins.delivery:Class``."""

import os
import time

import immortal


class Lines(immortal.Monitor):
    """Takes lines one by one and appends each to its file at once (``delay`` seconds of
    work per line first)."""

    def setup(self, why, message):
        self._fd = os.open(self.options["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                           0o600)
        self._delay = float(self.options.get("delay", 0))

    def stdout(self, line):
        if self._delay:
            time.sleep(self._delay)
        os.write(self._fd, line + b"\n")

    def dropped(self, count):
        os.write(self._fd, b"dropped %d\n" % count)


class Hang(immortal.Monitor):
    """Hangs in the first line it gets, until the file ``options["release"]`` exists."""

    def stdout(self, line):
        while not os.path.exists(self.options["release"]):
            time.sleep(0.01)


class Second(Lines):
    """The same, under another name: a group names each monitor once."""
