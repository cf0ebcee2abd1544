"""A running group scaled up or down (``Group.scale``, ``immortal scale``), or changed to
a new set of programs (``Group.apply``): the pump's side.

Up: each new instance gets its pipes and journal (made and kept by the daemon, which sends
them over the lifeline, ``Grow``; made here by a pump without a daemon) and its first
target, spawned as a group's first is (the monitors get ``spawn`` for it), with its own
readiness: the pump answers at once, and ``Group.scale`` waits in the caller until
``status.json`` shows every instance running and ready. Down: the highest instances of the
program retire, each stopped as a stop does it (TERM, its program's grace, KILL); once all
have ended they are dropped, their files closed, and the daemon told (``Retired``), which
closes its own copies. A pump started while instances retire (its predecessor died) finds
more instances than the spec's ``workers`` and retires the rest.

An apply (``Reload``): the pump reads ``spec.json`` again. A program it does not run yet
joins (its monitors loaded once its first instance comes, which gets ``setup`` then); one
whose definition changed takes the new one for its next spawns (the caller then rolls it);
one with no instance left to run (``workers`` 0: removed) retires them all, and goes once
they have ended, its monitors told ``shutdown``. A program whose monitors changed has its
old ones told ``shutdown`` and its new ones set up, on the same journals.
"""

from __future__ import annotations

import os
import time

from . import _linux, process, supervise
from .ledger import Ledger
from .errors import NotRunning
from .loop import draw
from .records import replace
from .roles import Fds, Retired
from .scalerecord import noted, superseded
from .spec import Spec, Strategy, read_applied
from .state import read_json, write_json
from .workers import Instance, Run

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from selectors import BaseSelector
    from typing import Any

    from .link import DaemonLink
    from .loop import Loop
    from .spare import Spares

RETIRED = "retired"  #: the reason a retired instance's machine ends with
REMOVED = "removed from the group"  #: the reason a removed program's monitors are given
MONITORS_CHANGED = "its monitors were changed"  #: the reason replaced monitors are given


def _monitored(view: Spec) -> tuple[Any, ...]:
    """What a program's monitors are made of: a change replaces them."""
    return view.monitors, view.backpressure


def _operated(view: Spec) -> tuple[Any, ...]:
    """What a program's watches are made of (``pumpops``): a change makes them again."""
    return (view.watch, view.ignore, view.watch_delay, view.memory_limit,
            view.memory_window)


class Scaling:
    """What the pump (``pump.Pump``) does to scale; the rest it provides."""

    spec: Spec
    directory: Path
    runs: dict[str, Run]

    @property
    def instances(self) -> list[Instance]:  # the pump's: every program's
        raise NotImplementedError

    link: DaemonLink
    loop: Loop
    selector: BaseSelector
    daemon_pid: int | None
    spares: Spares

    def scale(self, workers: int, program: str = "",
              caller: int | None = None) -> dict[str, Any]:
        """A pump without a daemon: run ``workers`` instances of ``program``, the new
        ones' files made here. The answer: the scale's id (``scalerecord.noted``)."""
        run = self._run_of(program)
        if any(each.retiring is not None for each in self.runs.values()):
            raise NotRunning("instances are still retiring after the last scale; try "
                             "again in a moment")
        before = len(run.instances)
        answer = noted(self.directory, program, workers, before, caller)
        self.spec = self.spec.replaced(program, workers=workers)
        run.spec = replace(run.spec, workers=workers)
        write_json(self.directory / "spec.json", self.spec.to_json())
        if workers < before:
            self.retire(run, workers)
        for k in range(before, workers):
            self.grow(program, k, ())
        return answer

    def _run_of(self, program: str) -> Run:
        run = self.runs.get(program)
        if run is None:
            raise NotRunning(f"group {self.spec.name!r} has no program {program!r}")
        return run

    def grow(self, program: str, k: int, fds: tuple[int, ...]) -> None:
        """Instance ``k`` of ``program`` joins, on the files ``fds`` (out read, out write,
        err read, err write, journal; none: made here), and its first target is spawned."""
        run = self.runs.get(program)
        if run is None or k != len(run.instances) or (run.host is None and k != 0):
            for fd in fds:  # not the next one (a scale this pump was started with)
                os.close(fd)
            return
        given = Fds(out=(fds[0], fds[1]), err=(fds[2], fds[3]), journal=fds[4]) if fds \
            else Fds()
        inst = self.add_instance(run, k, given)
        run.spec = replace(run.spec, workers=max(run.spec.workers, k + 1))
        if run.host is None:  # a program added by an apply: its monitors, now
            self.start_host(run)
        else:
            run.host.add_ledger(Ledger(inst.streams.journal), inst.streams.journal_fd)
            if run.host.terminal and self.spec.strategy == Strategy.DEVELOPMENT:
                inst.streams.no_echo()  # (the foreground's console echo stays)
        self._watch_streams(inst)
        try:
            inst.target = self._spawn(inst)
        except OSError as exc:
            self._feed(inst, supervise.SpawnFailed(process.exec_error(
                run.spec.command(), exc, run.spec.user)))
            return
        self._watch_target(inst)
        inst.machine, actions = supervise.step(run.spec.policy, inst.machine,
                                               supervise.Spawned(inst.target.pid),
                                               time.monotonic(), draw())
        self._act(inst, actions)
        self._write_status()

    def retire(self, run: Run, workers: int) -> None:
        """The instances of ``run`` from ``workers`` on stop, all at once; they are
        dropped once all have ended."""
        run.retiring = workers
        run.spec = replace(run.spec, workers=workers)
        for inst in run.instances[workers:]:
            self._feed(inst, supervise.Stop(run.spec.stop_timeout, RETIRED), write=False)
        self.retired(run)
        self._write_status()

    def retired(self, run: Run) -> None:
        """If every retiring instance of ``run`` has ended: drop them, close their files,
        tell the daemon; a program removed goes with its last instance."""
        workers = run.retiring
        if workers is None or not all(inst.final for inst in run.instances[workers:]):
            return
        for inst in run.instances[workers:]:
            self._unwatch_target(inst)
            for fd in (inst.streams.out_r, inst.streams.err_r):
                if fd in self.selector.get_map():
                    self.selector.unregister(fd)
            self.spares.remove(inst.streams)
            inst.streams.drain()
        gone = run.instances[workers:]
        del run.instances[workers:]
        if run.host is not None:
            run.host.drop_ledgers(workers)
        if workers == 0:  # removed: its monitors and watches end with it
            self.shut_down(run, REMOVED)
            self.unwatch_run(run)
            del self.runs[run.name]
        for inst in gone:
            inst.streams.close()  # (the group's notify socket is not theirs to close)
        run.retiring = None
        self.link.tell(Retired(workers, run.name))
        left = tuple(p for p in self.spec.programs if p.name != run.name)
        if workers == 0 and left:
            self.spec = Spec.of_programs(self.spec.name, self.spec.strategy,
                                         self.spec.directory, left, self.spec.start_timeout,
                                         self.spec.sys_path)
            _linux.set_title(self.spec.title("pump"))  # without the removed one's comment
            if self.daemon_pid is None:  # the group's root: spec.json is ours to write
                write_json(self.directory / "spec.json", self.spec.to_json())

    def reload(self, spec: Spec | None = None) -> None:
        """The group's programs changed (``spec.json``, written by the daemon; or
        ``spec``): new ones join, changed ones take their new definition for their next
        spawns, removed ones retire."""
        if spec is None:
            data = read_json(self.directory / "spec.json")
            if not data:
                return
            spec = Spec.from_json(data)
        self.spec = spec
        _linux.set_title(spec.title("pump"))  # ps shows the programs' comments as they are
        for view in spec.each():
            run = self.runs.get(view.program)
            if run is None:
                self.watch_run(self.add_run(view))
                continue
            changed = _monitored(view) != _monitored(run.spec)
            operations = _operated(view) != _operated(run.spec)
            run.spec = view
            run.spawner.spec = view
            if changed and run.host is not None:
                self.replace_host(run, MONITORS_CHANGED)
            if operations:
                self.watch_run(run)
            if view.workers == 0 and run.instances and run.retiring is None:
                self.retire(run, 0)
        self._write_status()

    def apply(self, file: str) -> dict[str, Any]:
        """A pump without a daemon: the group's programs become those of ``file`` (their
        JSON, in the instance directory), the files of the new instances made here."""
        if not self.spec.several:
            raise NotRunning(f"group {self.spec.name!r} runs one program; apply changes a "
                             "group of several programs")
        if any(run.retiring is not None for run in self.runs.values()):
            raise NotRunning("instances are still retiring; try again in a moment")
        new = read_applied(self.directory, file)
        names = {p.name for p in new}
        gone = tuple(replace(p, workers=0) for p in self.spec.programs if p.name not in names)
        spec = Spec.of_programs(self.spec.name, self.spec.strategy, self.spec.directory,
                                (*new, *gone), self.spec.start_timeout, self.spec.sys_path)
        write_json(self.directory / "spec.json", spec.to_json())
        had = {view.program: view.workers for view in self.spec.each()}
        superseded(self.directory, [view.program for view in spec.each()
                                    if had.get(view.program, 0) != view.workers])
        self.reload(spec)
        for view in spec.each():
            run = self.runs[view.program]
            if view.workers < len(run.instances) and run.retiring is None:
                self.retire(run, view.workers)
            for k in range(len(run.instances), view.workers):
                self.grow(view.program, k, ())
        return {}

    # What the pump provides (pump.Pump, pumpstart.PumpStart, pumpops.Operations).
    streams: Any
    watch_run: Callable[[Run], None]
    unwatch_run: Callable[[Run], None]

    def add_run(self, view: Spec) -> Run:
        raise NotImplementedError

    def add_instance(self, run: Run, k: int, files: Fds) -> Instance:
        raise NotImplementedError

    def start_host(self, run: Run) -> None:
        raise NotImplementedError

    def replace_host(self, run: Run, reason: str) -> None:
        raise NotImplementedError

    def shut_down(self, run: Run, reason: str) -> None:
        raise NotImplementedError

    def _watch_streams(self, inst: Instance) -> None:
        raise NotImplementedError

    def _spawn(self, inst: Instance) -> process.Child:
        raise NotImplementedError

    def _feed(self, inst: Instance, event: supervise.Event, write: bool = True) -> None:
        raise NotImplementedError

    def _watch_target(self, inst: Instance) -> None:
        raise NotImplementedError

    def _unwatch_target(self, inst: Instance) -> None:
        raise NotImplementedError

    def _act(self, inst: Instance, actions: tuple[supervise.Action, ...]) -> None:
        raise NotImplementedError

    def _write_status(self) -> None:
        raise NotImplementedError
