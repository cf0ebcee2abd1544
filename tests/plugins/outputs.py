"""Monitors that take the output through one hook each (block, lines, stdout), recording what
they get as JSON lines in ``options["path"]``: named as ``plugins.outputs:Class``."""

import json

import immortal


class _Recording(immortal.Monitor):
    def _record(self, **data):
        with open(self.options["path"], "a") as handle:
            handle.write(json.dumps(data) + "\n")

    def shutdown(self, reason):
        self._record(hook="shutdown")


class LinesOnly(_Recording):
    """Overrides ``lines`` only: gets lists of lines, never a block."""

    def lines(self, stream, lines, offset):
        self._record(hook="lines", stream=stream, offset=offset,
                     lines=[line.decode("latin-1") for line in lines])


class BlockOnly(_Recording):
    """Overrides ``block`` only: gets the bytes as they lie in the journal."""

    def block(self, stream, data, offset):
        self._record(hook="block", stream=stream, offset=offset, data=data.decode("latin-1"))


class Unclosed(immortal.Monitor):
    """Writes each stdout line to ``options["path"]`` through a buffered file it never closes
    (no ``shutdown``; a text file, or with ``options["binary"]`` a binary one), and
    registers an exit function that makes ``options["mark"]``: what a pump's end must still
    flush and run, as an interpreter's exit would."""

    def setup(self, why, message):
        import atexit

        self._binary = bool(self.options.get("binary"))
        self._file = open(self.options["path"], "ab" if self._binary else "a",
                          buffering=1 << 20)
        atexit.register(open, self.options["mark"], "a")

    def stdout(self, line):
        self._file.write(line + b"\n" if self._binary else line.decode() + "\n")
