"""The daemon's side of a scale (``Group.scale``, ``immortal scale``): the files of new
instances made and kept, sent to the pump; those of retired instances let go once the pump
says they ended. A pump started meanwhile finds the same in the spec and the files it is
handed."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from . import rolelog, supervise
from .errors import NotRunning
from .kept import KeptTargets
from .keptfiles import KeptFiles
from .records import replace
from .relay import Ledger
from .roles import Grow, Message, Retire
from .spec import Spec
from .stall import Watch
from .state import write_json


class Scaling:
    """Mixed into the daemon, whose state it reads and changes (declared here)."""

    spec: Spec
    directory: Path
    files: KeptFiles
    targets: KeptTargets
    pump: object | None  #: the running pump (``forking.ForkedPump``), or None
    pump_sock: socket.socket | None
    machine: supervise.State
    stall: Watch

    def _watched(self) -> tuple[list[int], list[Ledger]]:
        raise NotImplementedError  # the daemon's: the pipes and ledgers the stall watch reads

    def _tell_pump(self, message: Message) -> None:
        raise NotImplementedError  # the daemon's

    def _hold(self) -> None:
        raise NotImplementedError  # the daemon's: a pipe holder for every read end

    def _scale(self, workers: int) -> dict[str, Any]:
        """Run ``workers`` instances: the files of the new ones made and kept here, each
        sent to the pump (``Grow``), which spawns it; or the highest told to retire
        (``Retire``), whose files go once the pump says they ended (``Retired``). A pump
        started meanwhile finds the same in the spec and the files it is handed."""
        if len(self.targets) > self.spec.workers:
            raise NotRunning("instances are still retiring after the last scale; try again "
                             "in a moment")
        if self.pump is None or self.pump_sock is None or supervise.ending(self.machine):
            raise NotRunning("no pump is running right now (one is being restarted, or the "
                             "group ends); try again in a moment")
        before = self.spec.workers
        if workers == before:
            return {}
        made = self.files.make(workers - before)
        self.spec = replace(self.spec, workers=workers)
        self._write_spec()
        if workers < before:
            self._tell_pump(Retire(workers))
            return {}
        self.files.more.extend(made)
        for _ in made:
            self.targets.add()
        self.stall.pipes(*self._watched())
        self._hold()
        for k in range(before, workers):
            try:
                socket.send_fds(self.pump_sock, [Grow(k).to_bytes()],
                                list(self.files.more[k - 1]))
            except OSError:
                pass  # the pump is dying: the next one is handed them all
        return {}

    def _retired(self, workers: int) -> None:
        """The pump's instances from ``workers`` on have ended: their files go."""
        if workers != self.spec.workers or workers >= len(self.targets):
            return  # not the scale in force
        gone = self.files.drop(workers)
        self.targets.drop(workers)
        self.stall.pipes(*self._watched())
        KeptFiles.close(gone)

    def _write_spec(self) -> None:
        try:
            write_json(self.directory / "spec.json", self.spec.to_json())
        except OSError as exc:  # the group runs on as asked; readers see the old count
            rolelog.report("spec", f"immortal: daemon: cannot write spec.json: {exc}\n")
