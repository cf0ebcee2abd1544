"""The daemon's side of the control socket: what it answers itself (``status``, and the
refusals it can tell from the last status the pump wrote), a stop (which the machine
decides while no pump runs), a scale or an apply (``daemonscale``); anything else is passed
on to the pump.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from . import supervise
from .checks import check_workers
from .errors import NotRunning
from .kept import KeptTargets
from .roles import Command
from .state import read_json, running_targets


class Answering:
    """Mixed into the daemon, whose state it reads and changes (declared here)."""

    directory: Path
    targets: KeptTargets
    pump: Any  #: the running pump (``forking.ForkedPump``), or None
    pump_sock: socket.socket | None
    machine: supervise.State
    stop_request: Command | None
    stop_by_signal: bool

    def _step(self, event: supervise.Event, policy: supervise.PumpPolicy) -> None:
        raise NotImplementedError  # the daemon's

    def _policy(self, alive: bool) -> supervise.PumpPolicy:
        raise NotImplementedError  # the daemon's

    def _scale(self, workers: int, program: str = "") -> dict[str, Any]:
        raise NotImplementedError  # daemonscale's (before this class in the daemon's bases)

    def _apply(self, file: str) -> dict[str, Any]:
        raise NotImplementedError  # daemonscale's

    def _command(self, request: dict[str, Any]) -> dict[str, Any]:
        """A control request: answered here (status) or passed on to the pump."""
        cmd = request["cmd"]
        if cmd == "status":
            return {"status": read_json(self.directory / "status.json"),
                    "daemon": os.getpid(), "pump": self.pump.pid if self.pump else None}
        if cmd == "signal":
            # The pump's answer does not come back through us: refuse here, from the last
            # status the pump wrote, what it would refuse (no target during a backoff wait).
            known = read_json(self.directory / "status.json") or {}
            if not running_targets(known, request.get("instance"), request.get("program")):
                raise NotRunning(f"no target is running (state {known.get('state')})")
        if cmd in ("restart", "scale", "apply") and \
                ((read_json(self.directory / "status.json") or {}).get("roll") or {}).get(
                    "state") == "rolling":
            raise NotRunning("a rolling restart is in progress; wait for it to end")
        if cmd == "stop":
            self._stop(request, by_signal=False)
            return {}  # a pump that cannot take it is ending already; the group with it
        if cmd == "scale":
            return self._scale(check_workers(request["workers"]), request.get("program", ""))
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
        started. The machine decides which."""
        self.stop_request = Command(request)
        self.stop_by_signal = by_signal
        alive = False
        if self.pump is None and not supervise.ending(self.machine):
            alive = self.targets.left(pump_running=False)
        self._step(supervise.Stop(None), self._policy(alive))
