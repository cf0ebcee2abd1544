"""A line-by-line test monitor: overrides ``stdout(self, line)`` and ``stderr(self, line)``
only (no offset, no ``lines``/``block``), and appends each line to ``options["path"]`` as
``stdout <line>`` or ``stderr <line>``. Named as ``plugins.lines:LineByLine``.

It keeps no state across pumps and skips nothing: it stores exactly what it was handed, so a
line handed over twice shows twice. ``plugins.lines:Checked`` is the same with the one
method (and its ``position``) that makes it exactly once: ``delivered`` reads its own file
back (docs/monitors.md, "Two ways to get even that exactly once").
"""

import os
import sys
import threading
import time

import immortal


class LineByLine(immortal.Monitor):
    _fd = None

    @classmethod
    def check(cls, options):
        if "path" not in options:
            raise ValueError("LineByLine needs option 'path'")
        return {**options, "path": os.path.abspath(options["path"])}

    def setup(self, why, message):
        # One write(2) per line on an O_APPEND fd: a pump killed between two lines leaves
        # whole lines only.
        self._fd = os.open(self.options["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _write(self, stream, line):
        if self._fd is None:
            self.setup("late", None)
        os.write(self._fd, stream + b" " + line + b"\n")

    def stdout(self, line):
        self._write(b"stdout", line)

    def stderr(self, line):
        self._write(b"stderr", line)

    def shutdown(self, reason):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Checked(LineByLine):
    """``LineByLine`` that can tell what its file holds of the call a dead pump was in."""

    def position(self):
        return os.fstat(self._fd).st_size if self._fd is not None else None

    def delivered(self, stream, lines, offset, position):
        """How many of ``lines`` its file holds past ``position``: before setup, only the
        call in doubt can have written there."""
        if position is None:
            return None
        prefix = stream.encode() + b" "
        with open(self.options["path"], "rb") as file:
            file.seek(position)
            written = file.read().split(b"\n")[:-1]
        count = 0
        for line, there in zip(lines, written):
            if there != prefix + line:
                break
            count += 1
        return count


class KillsItsPump(LineByLine):
    """``LineByLine`` that SIGKILLs its pump just after it wrote the line
    ``options["at"]``, once (the file ``options["once"]`` made then): the instant after a
    monitor's write and before the journal's record of it, which no monitor without
    ``delivered`` could tell."""

    def stdout(self, line):
        super().stdout(line)
        if line == self.options["at"].encode() and not os.path.exists(self.options["once"]):
            open(self.options["once"], "w").close()
            os.kill(getattr(self, "pump", 0) or os.getpid(), 9)  # the pump (this process, in it)


class SendsFromAThread(LineByLine):
    """``LineByLine`` whose thread of its own sends the target ``options["count"]``
    messages ``{"n": i}`` as it goes, while lines come in: ``send`` outside any call."""

    def setup(self, why, message):
        super().setup(why, message)
        threading.Thread(target=self._send_all, daemon=True).start()

    def _send_all(self):
        for n in range(int(self.options["count"])):
            deadline = time.monotonic() + 60
            while True:
                try:
                    self.send({"n": n})
                    break
                except immortal.ChannelError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)  # the channel full: the target reads it in a moment


class Noisy(LineByLine):
    """``LineByLine`` that also writes ``options["size"]`` bytes to its stderr (the
    pump's log) for each line."""

    def stdout(self, line):
        super().stdout(line)
        sys.stderr.write("noisy " + "x" * int(self.options["size"]) + "\n")
