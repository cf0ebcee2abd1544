"""The daemon's side of the control socket: what it answers itself (``status``, and the
refusals it can tell from the last status the pump wrote), a stop (which the machine
decides while no pump runs), a scale or an apply (``daemonscale``); anything else is passed
on to the pump.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from . import privileges, rolelog, rolling, supervise
from ._linux import process_start_time
from .checks import check_workers
from .errors import NotRunning
from .kept import KeptTargets
from .pumpcontrol import STARTING
from .roles import Command
from .spec import Spec
from .state import read_json, running_targets

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

#: seconds past a stop's grace period before the daemon kills what its pump did not end
STOP_MARGIN = 5.0
#: the group's end then, in status.json
OVERRULED = "stop: its pump did not end it in time (a monitor that does not return?); killed"


class Answering:
    """Mixed into the daemon, whose state it reads and changes (declared here)."""

    directory: Path
    targets: KeptTargets
    pump: Any  #: the running pump (``forking.ForkedPump``), or None
    pump_sock: socket.socket | None
    machine: supervise.State
    stop_request: Command | None
    stop_by_signal: bool
    spec: Spec
    started: bool  #: the first pump answered its start
    #: when a stop whose pump has not ended is overruled (``_stop_overdue``), or None
    stop_overdue_at: float | None = None
    #: the stop was overruled: the pump's death ends the group, no pump is started again
    #: (it would hand the same lines to the same monitor)
    overruled = False

    def _step(self, event: supervise.Event, policy: supervise.PumpPolicy) -> None:
        raise NotImplementedError  # the daemon's

    def _policy(self, alive: bool) -> supervise.PumpPolicy:
        raise NotImplementedError  # the daemon's

    def _scale(self, workers: int, program: str = "",
               caller: int | None = None) -> dict[str, Any]:
        raise NotImplementedError  # daemonscale's (before this class in the daemon's bases)

    def _apply(self, file: str) -> dict[str, Any]:
        raise NotImplementedError  # daemonscale's

    def _not_retiring(self) -> None:
        raise NotImplementedError  # daemonscale's

    def _rolls(self, request: dict[str, Any]) -> bool:
        """Whether the pump would carry out a restart request as a rolling restart
        (``PumpControl.rolls``), from the spec: during the first start nothing has changed
        its counts."""
        chosen = [view for view in self.spec.each()
                  if request.get("program") in (None, view.program)]
        return rolling.rolls(any(view.workers > 1 or view.listen for view in chosen),
                             bool(request.get("all_at_once")), bool(request.get("rolling")))

    def _command(self, request: dict[str, Any]) -> dict[str, Any]:
        """A control request: answered here (status) or passed on to the pump."""
        cmd = request["cmd"]
        if cmd == "status":
            pump = self.pump.pid if self.pump else None
            # Their start times as this pid namespace sees them: a reader in another one
            # (a container's group, its home shared) proves the pids by them, or finds
            # that they name other processes there.
            return {"status": read_json(self.directory / "status.json"),
                    "daemon": os.getpid(), "pump": pump, "started": self.started,
                    "start_times": {"daemon": process_start_time(os.getpid()),
                                    "pump": pump and process_start_time(pump)}}
        if cmd == "signal":
            # The pump's answer does not come back through us: refuse here, from the last
            # status the pump wrote, what it would refuse (no target during a backoff wait).
            known = read_json(self.directory / "status.json") or {}
            if not running_targets(known, request.get("instance"), request.get("program")):
                raise NotRunning(f"no target is running (state {known.get('state')})")
        if cmd in ("restart", "scale", "apply"):
            # As the pump last said: a client that waits for the start reads the same file.
            known = read_json(self.directory / "status.json") or {}
            if known.get("starting") and (cmd != "restart" or self._rolls(request)):
                raise NotRunning(STARTING)
            if (known.get("roll") or {}).get("state") == "rolling":
                raise NotRunning("a rolling restart is in progress; wait for it to end")
        if cmd == "restart":
            for view in self.spec.each():  # the pump would refuse it, and not be heard
                if request.get("program") in (None, view.program):
                    privileges.still_there(view.user, view.group)
        if cmd == "restart" and not request.get("all_at_once"):
            self._not_retiring()  # the pump would refuse to roll, and not be heard
        if cmd == "stop":
            self._stop(request, by_signal=False)
            return {}  # a pump that cannot take it is ending already; the group with it
        if cmd == "scale":
            return self._scale(check_workers(request["workers"]), request.get("program", ""),
                               request.get("caller"))
        if cmd == "apply":
            return self._apply(request["file"])
        try:
            if self.pump is None or self.pump_sock is None:
                raise OSError("no pump is running right now (one is being restarted)")
            self.pump_sock.send(Command(request).to_bytes())
        except OSError as exc:
            raise NotRunning(f"the pump cannot be reached ({exc}); try again in a moment") \
                from None
        return {}

    def _stop(self, request: dict[str, Any], by_signal: bool) -> None:
        """A stop: passed on to the pump; while none runs, with a target alive, the next
        pump (started at once) carries it out, as any stop; without one, nothing more is
        started. The machine decides which. A pump that has not ended by the grace period
        plus a margin (``_stop_overdue``) is overruled."""
        self.stop_request = Command(request)
        self.stop_by_signal = by_signal
        if self.stop_overdue_at is None:
            grace = request.get("timeout")
            if not isinstance(grace, (int, float)):
                grace = max(view.stop_timeout for view in self.spec.each())
            self.stop_overdue_at = time.monotonic() + grace + STOP_MARGIN
        alive = False
        if self.pump is None and not supervise.ending(self.machine):
            alive = self.targets.left(pump_running=False)
        self._step(supervise.Stop(None), self._policy(alive))

    def _stop_overdue(self) -> None:
        """The stop's grace and margin are over and the pump still runs: it cannot carry
        the stop out (a monitor call that never returns holds its loop). Its targets are
        killed here, then the pump: a stop by a signal (a service manager's, a foreground
        daemon's Ctrl-C) ends the group as a client's stop would."""
        self.stop_overdue_at = None
        if self.pump is None:
            return
        self.overruled = True
        rolelog.report("stop", "immortal: daemon: the pump did not end the stop in time "
                               "(a monitor that does not return?): its targets and the pump "
                               "are killed\n")
        for target in self.targets:
            if target.pid is not None:
                try:
                    os.killpg(target.pid, signal.SIGKILL)  # it leads its process group
                except (ProcessLookupError, PermissionError):
                    pass
        self.pump.send_signal(signal.SIGKILL)
