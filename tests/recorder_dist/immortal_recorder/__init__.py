"""A monitor that records every hook call as one JSON line in ``options["path"]``."""

import json
import os

import immortal


class Recorder(immortal.Monitor):
    @classmethod
    def check(cls, options):
        if "path" not in options:
            raise ValueError("recorder needs option 'path'")
        if options.get("refuse"):
            raise ValueError(f"recorder refuses: {options['refuse']}")
        return {**options, "path": os.path.abspath(options["path"])}

    def _record(self, hook, **data):
        line = json.dumps({"hook": hook, "pump": os.getpid(), **data}) + "\n"
        with open(self.options["path"], "a") as handle:
            handle.write(line)

    def setup(self, why, message):
        if self.options.get("fail_setup"):
            raise RuntimeError("setup failed on purpose")
        self._record("setup", why=why, message=message)

    def spawn(self, pid):
        self._record("spawn", pid=pid)

    def adopt(self, pid):
        self._record("adopt", pid=pid)

    def respawn(self, pid, why):
        self._record("respawn", pid=pid, why=why)

    def exit(self, status):
        self._record("exit", code=status.code, signal=status.signal, text=str(status),
                     pid=status.pid, record=status.to_json())

    def stdout(self, line):
        if line == b"crash-pump" and self.options.get("crash_on_line"):
            os._exit(70)
        self._record("stdout", line=line.decode("utf-8", "replace"))

    def stderr(self, line):
        self._record("stderr", line=line.decode("utf-8", "replace"))

    def shutdown(self, reason):
        self._record("shutdown", reason=reason)
