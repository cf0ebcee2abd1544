"""Values that cross process boundaries: exit statuses and the reasons a pump was set up.

Everything here is plain data with a JSON form, because it travels between the pump, the
daemon and the caller through pipes and files.
"""

from __future__ import annotations

import os
import signal

from .records import Record, asdict

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

#: The ``why`` values a monitor's ``setup`` receives.
PUMP_START = "pump start"
PUMP_RESTART = "pump restart"
DAEMON_RESTART = "daemon restart"
#: why a development group stopped when the reader of its output went away (``... | head``)
READER_GONE = "the reader of its output went away"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class ExitStatus(Record):
    """How a target ended: an exit code, a signal, or a failure to start.

    ``str()`` reads "exited with status 1", "killed by SIGKILL" or "failed to start: ...".
    An immutable record (see immortal/records.py): an assignment raises ``AttributeError``.
    """

    code: int | None = None
    signal: int | None = None
    core_dumped: bool = False
    error: str | None = None
    pid: int | None = None
    uptime: float | None = None
    #: The restart record: what the pump decided after this exit ("restart", "backoff",
    #: "stop", "give up"), why, the delay before the next spawn and the number of quick
    #: deaths in a row (0 after a stable run).
    decision: str | None = None
    reason: str | None = None
    delay: float | None = None
    attempt: int | None = None
    #: Which instance of the group's program it was, in a group of several (``workers``);
    #: None in a group of one.
    instance: int | None = None

    @classmethod
    def from_waitid(cls, result: os.waitid_result, uptime: float | None = None) -> ExitStatus:
        if result.si_code == os.CLD_EXITED:
            return cls(code=result.si_status, pid=result.si_pid, uptime=uptime)
        return cls(
            signal=result.si_status,
            core_dumped=result.si_code == os.CLD_DUMPED,
            pid=result.si_pid,
            uptime=uptime,
        )

    @classmethod
    def from_wait_status(cls, pid: int, status: int, uptime: float | None = None) -> ExitStatus:
        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status), core_dumped=os.WCOREDUMP(status),
                       pid=pid, uptime=uptime)
        return cls(code=os.waitstatus_to_exitcode(status), pid=pid, uptime=uptime)

    @property
    def signal_name(self) -> str | None:
        return None if self.signal is None else signal_name(self.signal)

    def __str__(self) -> str:
        if self.error is not None:
            return f"failed to start: {self.error}"
        if self.signal is not None:
            core = " (core dumped)" if self.core_dumped else ""
            return f"killed by {self.signal_name}{core}"
        if self.code is None:
            # Seen through a pidfd only: the process was not our child, its status is lost.
            return "ended (exit status unknown)"
        return f"exited with status {self.code}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.instance is None:
            del data["instance"]  # a group of one's, as it always read
        data["text"] = str(self)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExitStatus:
        fields = {k: data.get(k) for k in ("code", "signal", "error", "pid", "uptime",
                                           "decision", "reason", "delay", "attempt",
                                           "instance")}
        return cls(core_dumped=bool(data.get("core_dumped")), **fields)
