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
        line = json.dumps({"hook": hook, "pump": self.pump, **data}) + "\n"
        with open(self.options["path"], "a") as handle:
            handle.write(line)

    def setup(self, why, message):
        if self.options.get("fail_setup"):
            raise RuntimeError("setup failed on purpose")
        # The offset contract: the last offset kept per stream; a line at or before it is
        # one that a dying pump handed over again.
        self._last = {"stdout": -1, "stderr": -1}
        if why != "pump start":
            self._last.update(self._kept_offsets())
        self._record("setup", why=why, message=message)

    def _kept_offsets(self):
        last = {}
        try:
            with open(self.options["path"], "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 256 * 1024))
                tail = handle.read().splitlines()[1:]
        except OSError:
            return last
        for raw in tail:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if event.get("hook") in ("stdout", "stderr") and "offset" in event:
                last[event["hook"]] = max(last.get(event["hook"], -1), event["offset"])
        return last

    def _line(self, stream, line, offset):
        if offset <= self._last[stream]:
            self._record("repeat", stream=stream, offset=offset)
            return False
        self._last[stream] = offset
        return True

    def spawn(self, pid):
        self._record("spawn", pid=pid)

    def adopt(self, pid):
        self._record("adopt", pid=pid)

    def respawn(self, pid, why):
        self._record("respawn", pid=pid, why=why)

    def exit(self, status):
        self._record("exit", code=status.code, signal=status.signal, text=str(status),
                     pid=status.pid, record=status.to_json())

    def stdout(self, line, offset):
        if line == b"crash-pump" and self.options.get("crash_on_line"):
            os._exit(70)
        if self._line("stdout", line, offset):
            self._record("stdout", line=line.decode("utf-8", "replace"), offset=offset)

    def stderr(self, line, offset):
        if self._line("stderr", line, offset):
            self._record("stderr", line=line.decode("utf-8", "replace"), offset=offset)

    def shutdown(self, reason):
        self._record("shutdown", reason=reason)
