"""The daemon's side of a scale (``Group.scale``, ``immortal scale``) and of an apply
(``Group.apply``): the files of new instances made and kept, sent to the pump; those of
retired instances let go once the pump says they ended. A pump started meanwhile finds the
same in the spec and the files it is handed.

An apply writes the group's new programs to ``spec.json`` (a program removed stays there,
with no instance, until its last one has ended), tells the pump to read it (``Reload``),
then scales each program whose count changed: an added one from 0, a removed one to 0. The
rolling restarts of the programs whose definition changed are the caller's to ask, one by
one (``programs.Applied``).
"""

from __future__ import annotations

import socket
from pathlib import Path

from . import _linux, rolelog, supervise
from .errors import InvalidSpec, NotRunning
from .kept import KeptTargets
from .keptfiles import KeptFiles
from .records import replace
from .ledger import Ledger
from .roles import Grow, Message, Reload, Retire
from .scalerecord import noted, superseded
from .spec import Spec, read_applied
from .stall import Watch
from .state import write_json

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


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

    def _watched(self) -> tuple[list[int], list[Ledger], list[tuple[Ledger, list[str]]]]:
        raise NotImplementedError  # the daemon's: the pipes and ledgers the stall watch reads

    def _tell_pump(self, message: Message) -> None:
        raise NotImplementedError  # the daemon's

    def _hold(self) -> None:
        raise NotImplementedError  # the daemon's: a pipe holder for every read end

    def _not_retiring(self) -> None:
        """NotRunning while instances of the last scale are still retiring."""
        for view in self.spec.each():
            if self.targets.count(view.program) > view.workers:
                raise NotRunning("instances are still retiring after the last scale; try "
                                 "again in a moment")

    def _ready_for_change(self) -> None:
        """A scale or an apply needs a running pump, and no instance still retiring."""
        self._not_retiring()
        if self.pump is None or self.pump_sock is None or supervise.ending(self.machine):
            raise NotRunning("no pump is running right now (one is being restarted, or the "
                             "group ends); try again in a moment")

    def _scale(self, workers: int, program: str = "",
               caller: int | None = None) -> dict[str, Any]:
        """Run ``workers`` instances of ``program``: the files of the new ones made and kept
        here, each sent to the pump (``Grow``), which spawns it; or the highest told to
        retire (``Retire``), whose files go once the pump says they ended (``Retired``).
        A pump started meanwhile finds the same in the spec and the files it is handed.
        The answer: the scale's id (``scalerecord.noted``; ``caller``: who asked it)."""
        try:
            before = self.spec.view(program).workers
        except KeyError:
            raise NotRunning(f"group {self.spec.name!r} has no program {program!r}") from None
        self._ready_for_change()
        answer = noted(self.directory, program, workers, before, caller)
        if workers == before:
            return answer
        made = self.files.make(workers - before)
        self.spec = self.spec.replaced(program, workers=workers)
        self._write_spec()
        self._resize(program, before, workers, made)
        return answer

    def _resize(self, program: str, before: int, workers: int, made: list[Any]) -> None:
        """The pump told of a new count of ``program``'s instances (the spec says it)."""
        if workers < before:
            self._tell_pump(Retire(workers, program))
            return
        for k, files in zip(range(before, workers), made):
            self.files.each[(program, k)] = files
            self.targets.add((program, k))
        self.stall.pipes(*self._watched())
        self._hold()
        assert self.pump_sock is not None
        for k in range(before, workers):
            try:
                socket.send_fds(self.pump_sock, [Grow(k, program).to_bytes()],
                                list(self.files.each[(program, k)]))
            except OSError:
                pass  # the pump is dying: the next one is handed them all

    def _apply(self, file: str) -> dict[str, Any]:
        """The group's programs become those of ``file`` (their JSON, checked by the
        caller, in the instance directory): added ones started, removed ones retired,
        changed ones taken by the pump for their next spawns."""
        if not self.spec.several:
            raise InvalidSpec(f"group {self.spec.name!r} runs one program (start()); apply "
                              "changes a group of several programs (start_group())")
        self._ready_for_change()
        new = read_applied(self.directory, file)
        names = {p.name for p in new}
        old = {p.name: p for p in self.spec.programs}
        kept = [*new, *(p for p in self.spec.programs if p.name not in names)]
        counts = {p.name: (old[p.name].workers if p.name in old else 0,
                           p.workers if p.name in names else 0) for p in kept}
        made = {name: self.files.make(max(0, after - before))
                for name, (before, after) in counts.items()}
        self.spec = Spec.of_programs(
            self.spec.name, self.spec.strategy, self.spec.directory,
            tuple(p if p.name in names else replace(p, workers=0) for p in kept),
            self.spec.start_timeout, self.spec.sys_path)
        _linux.set_title(self.spec.title("daemon"))  # ps shows the programs' comments as they are
        self._write_spec()
        self._tell_pump(Reload())
        superseded(self.directory, [name for name, (before, after) in counts.items()
                                    if before != after])
        for name, (before, after) in counts.items():
            if before != after:
                self._resize(name, before, after, made[name])
        return {}

    def _retired(self, workers: int, program: str = "") -> None:
        """The pump's instances of ``program`` from ``workers`` on have ended: their files
        go; a removed program (0) leaves the spec."""
        try:
            view = self.spec.view(program)
        except KeyError:
            return
        if workers != view.workers or workers >= self.targets.count(program):
            return  # not the scale in force
        gone = self.files.drop(program, workers)
        self.targets.drop(program, workers)
        self.stall.pipes(*self._watched())
        KeptFiles.close(gone)
        if workers == 0 and self.spec.several:
            left = tuple(p for p in self.spec.programs if p.name != program)
            if left:
                self.spec = Spec.of_programs(self.spec.name, self.spec.strategy,
                                             self.spec.directory, left,
                                             self.spec.start_timeout, self.spec.sys_path)
                _linux.set_title(self.spec.title("daemon"))  # without the removed one's comment
                self._write_spec()

    def _write_spec(self) -> None:
        try:
            write_json(self.directory / "spec.json", self.spec.to_json())
        except OSError as exc:  # the group runs on as asked; readers see the old count
            rolelog.report("spec", f"immortal: daemon: cannot write spec.json: {exc}\n")
