"""Monitors named as 'package.module:Attr' in the tests (importable from tests/)."""

import json
import sys
import os

import immortal
from immortal import hookimpl


class Noisy(immortal.Monitor):
    """Raises in every output hook; writes events to options['path']."""

    def _record(self, **data):
        with open(self.options["path"], "a") as handle:
            handle.write(json.dumps(data) + "\n")

    def setup(self, why, message):
        self._record(hook="setup", why=why)

    def stdout(self, line):
        raise RuntimeError(f"noisy monitor refuses {line!r}")

    def exit(self, status):
        self._record(hook="exit", text=str(status))

    def respawn(self, pid):
        self._record(hook="respawn", pid=pid)


class Quitter(Noisy):
    """Calls sys.exit in its output hooks and in ``exit``: its error, not the pump's end."""

    def stdout(self, line):
        sys.exit(f"quitter quits at {line!r}")

    def exit(self, status):
        super().exit(status)
        sys.exit(0)


class Crasher(immortal.Monitor):
    """Ends its pump (``os._exit``, as a crash in C code would) on each line that says
    'poison'; writes the other lines to options['path']."""

    def stdout(self, line):
        if b"poison" in line:
            os._exit(3)
        with open(self.options["path"], "ab") as handle:
            handle.write(line + b"\n")


class InstanceCheck(immortal.Monitor):
    """check() written without @classmethod."""

    def check(self, options):
        return options


class BlockCrasher(immortal.Monitor):
    """As ``Crasher``, for a monitor that takes whole blocks of lines."""

    def block(self, stream, data, offset):
        if b"poison" in data:
            os._exit(3)
        with open(self.options["path"], "ab") as handle:
            handle.write(data)


class QuittingCheck(immortal.Monitor):
    """Its check() calls sys.exit: a refusal in the caller, not the caller's end."""

    @classmethod
    def check(cls, options):
        sys.exit(5)


class Typo(immortal.Monitor):
    def stdotu(self, line):
        pass


class FailingSetup(immortal.Monitor):
    def setup(self, why, message):
        raise OSError("cannot open the log sink")


# A plain pluggy plugin: a module's worth of marked functions, as a namespace class.
class PluggyStyle:
    path = None

    @staticmethod
    @hookimpl
    def monitor_check(options):
        return {"path": os.path.abspath(options["path"])}


class BadHook:
    @staticmethod
    def monitor_stdout(line, extra):
        pass


class Slow(immortal.Monitor):
    """Works on every line (far slower than a target can write); counts what it saw."""

    seen = 0
    dropped_total = 0

    def stdout(self, line):
        import hashlib

        digest = line
        for _ in range(int(self.options.get("rounds", 30))):
            digest = hashlib.sha256(digest).digest()
        self.seen += 1

    def dropped(self, count):
        self.dropped_total += count

    def shutdown(self, reason):
        with open(self.options["path"], "w") as handle:
            json.dump({"seen": self.seen, "dropped": self.dropped_total}, handle)


class Echo(immortal.Monitor):
    """Answers every channel message; records them."""

    def message(self, message):
        with open(self.options["path"], "a") as handle:
            handle.write(json.dumps(message) + "\n")
        self.send({"echo": message})


class Raiser(immortal.Monitor):
    """Raises in every hook but the first setup (which would fail the start, by design)."""

    def setup(self, why, message):
        if why != "pump start":
            raise RuntimeError("setup")

    def _raise(self, *args, **kwargs):
        raise RuntimeError("raiser")

    spawn = respawn = exit = stdout = stderr = adopt = dropped = message = _raise
    reopen = shutdown = _raise
