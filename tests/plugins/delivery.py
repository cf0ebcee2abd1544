"""Monitors for the delivery tests: each writes every line it gets to ``options["path"]``,
one line per line, as the README's ``stdout(self, line)`` style does; named as
``plugins.delivery:Class``. ``Lines`` can check its own file (``position``/``delivered``),
so it is repeated nothing across pump kills; ``Plain`` cannot, and runs in a process of its
own (immortal/monitorprocess.py) whose calls a pump's death does not cut: repeated nothing
either, but for the kills of that process itself (at least once)."""

import os
import signal
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

    def position(self):
        return os.fstat(self._fd).st_size  # appends only: where the next line goes

    def delivered(self, stream, lines, offset, position):
        """How many of ``lines`` the file holds past ``position`` (the call in doubt wrote
        there, and nothing since: this runs before setup)."""
        with open(self.options["path"], "rb") as file:
            file.seek(position or 0)
            written = file.read().split(b"\n")[:-1]
        count = 0
        for line, there in zip(lines, written):
            if line != there:
                break
            count += 1
        return count


class Plain(Lines):
    """``Lines`` without a way to check its file: in a process of its own."""

    position = immortal.Monitor.position
    delivered = immortal.Monitor.delivered


class Hang(immortal.Monitor):
    """Hangs in the first line it gets, until the file ``options["release"]`` exists
    (having made the file ``options["hanging"]``, if given; with ``options["alarm"]``,
    SIGALRM handled and ignored first)."""

    def stdout(self, line):
        if self.options.get("alarm"):
            signal.signal(signal.SIGALRM, lambda number, frame: None)
        if self.options.get("hanging"):
            open(self.options["hanging"], "a").close()
        while not os.path.exists(self.options["release"]):
            time.sleep(0.01)


class HangAt(immortal.Monitor):
    """Hangs in its ``options["at"]``-th line, until the file ``options["release"]``
    exists: after the start, in the middle of the output."""

    seen = 0

    def stdout(self, line):
        self.seen += 1
        if self.seen == int(self.options["at"]):
            deadline = time.monotonic() + 120  # past any test's own wait
            while not os.path.exists(self.options["release"]) \
                    and time.monotonic() < deadline:
                time.sleep(0.01)


class Second(Lines):
    """The same, under another name: a group names each monitor once."""
