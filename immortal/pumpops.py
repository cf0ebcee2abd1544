"""The operator's watches, carried out by the pump for each program (``workers.Run``: its
own ``watch=`` and ``memory_limit=``): a restart when watched files change (``filewatch``),
and when a target's memory stays over its limit (``memwatch``).

Both run in the pump, whatever the strategy (``development`` too, where watching files is
most wanted): it is the pump that restarts targets, and a watch there adds no message
between the roles. The files are watched from before the pump's first spawn, so a change
once a target started is never missed. A pump that dies loses what it was watching; its
successor watches again from its start (a change in between is not seen).

- Files: a change ends in the restart of the program whose files they are, as
  ``restart`` asks for it (``PumpControl.command``: rolling where the program rolls, all
  its instances at once otherwise), with the reason ``watch``. One already under way (a
  roll) puts the restart off by ``watch_delay``; a program that is stopping is not
  restarted.
- Memory: each target over the limit for the window gets its own graceful restart, fed
  to its machine with the reason ``memory`` (the restart record, the ``exit`` event,
  ``status``). Not during a rolling restart: the roll replaces the targets anyway.
"""

from __future__ import annotations

import os
import re
import time

from . import memwatch, monitor, monitorfind, rolelog, supervise
from .errors import MONITOR_ERRORS, ImmortalError
from .filewatch import FileWatch
from .memwatch import MemoryWatch

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from selectors import BaseSelector
    from typing import Any

    from .loop import Loop
    from .spec import Spec
    from .workers import Instance, Run

WATCH = "watch"  #: the restart record's reason after a change of a watched file


def written(spec: Spec) -> list[str]:
    """The files the group's monitors write (``Monitor.output_path``: a ``file`` or
    ``jsonl`` monitor's ``output``), each with its rotations (``app.log.1``,
    ``app.log-20261203.gz``), as ``ignore`` globs: a log kept in a watched directory would
    otherwise restart its program a watch delay after each line it logs."""
    found = []
    for view in spec.each():
        for name, options in view.monitors:
            try:
                path = monitor.output_path(monitorfind.find(name), options,
                                           view.program_dir)
            except MONITOR_ERRORS:
                continue  # its program failed to load it, and says so
            if path:
                # Escaped: a '[', '*' or '?' in the path is itself.
                found.append(re.sub(r"([*?\[])", r"[\1]", os.path.abspath(path)) + "*")
    return found


class Operations:
    """What the pump (``pump.Pump``) does for each program's ``watch=`` and
    ``memory_limit=``; the rest it provides."""

    spec: Spec
    runs: dict[str, Run]

    @property
    def instances(self) -> list[Instance]:  # the pump's: every program's
        raise NotImplementedError

    loop: Loop
    selector: BaseSelector
    roll_running: bool
    command: Callable[[dict[str, Any]], dict[str, Any]]  #: ``pumpcontrol.PumpControl``

    def watch_operations(self) -> None:
        """Each program's watches (``watch_run``), and the loop's deadlines for them all
        (none set: no fd, no deadline)."""
        for run in self.runs.values():
            self.watch_run(run)
        self.loop.at(self._files_deadline, self._files_due)
        self.loop.at(self._memory_deadline, self._memory_due)

    def watch_run(self, run: Run) -> None:
        """The watches ``run``'s spec asks for, in place of those it had (a program an
        apply added or changed)."""
        self.unwatch_run(run)
        spec = run.spec
        if spec.watch:
            files = FileWatch(spec.watch, (*spec.ignore, *written(self.spec)),
                              spec.watch_delay)
            if files.start():
                run.files = files
                self.loop.watch(files.fd, files.on_ready)
            else:
                files.close()
        if spec.memory_limit is not None:
            run.memory = MemoryWatch(spec.memory_limit, spec.memory_window)

    def unwatch_run(self, run: Run) -> None:
        """``run`` watches nothing any more (changed, or removed from the group)."""
        if run.files is not None:
            if run.files.fd in self.selector.get_map():
                self.selector.unregister(run.files.fd)
            run.files.close()
        run.files = run.memory = None

    def release_operations(self) -> None:
        """The group ends: the watches removed, their files kept (``FileWatch.release``)."""
        for run in self.runs.values():
            if run.files is not None:
                run.files.release()

    def close_operations(self) -> None:
        """The watches' files closed (the loop, closed or closing, is not told)."""
        for run in self.runs.values():
            if run.files is not None:
                run.files.close()

    # ----------------------------------------------------------------- files
    def _files_deadline(self) -> float | None:
        due = [at for at in (run.files.deadline() for run in self.runs.values()
                             if run.files is not None) if at is not None]
        return min(due) if due else None

    def _files_due(self) -> None:
        for run in list(self.runs.values()):
            files = run.files
            if files is None or not files.take():
                continue
            if all(supervise.ending(inst.machine) for inst in run.instances):
                continue
            whose = f" of program {run.name!r}" if run.name else ""
            try:
                self.command({"cmd": "restart", "why": WATCH, "program": run.name or None})
            except ImmortalError as exc:
                if self.roll_running:  # one restart at a time: this one comes after
                    files.due = time.monotonic() + files.delay
                else:
                    rolelog.report("watch", f"immortal: pump: restart on change{whose}: "
                                   f"{exc}\n")
                continue
            rolelog.report("watch", f"immortal: pump: a watched file{whose} changed; "
                           "restarting\n")

    # ----------------------------------------------------------------- memory
    @staticmethod
    def _running(run: Run) -> list[Instance]:
        return [inst for inst in run.instances
                if inst.target is not None and inst.machine.phase == supervise.RUNNING]

    def _memory_deadline(self) -> float | None:
        now = time.monotonic()
        due = [at for at in (run.memory.deadline(bool(self._running(run)), now)
                             for run in self.runs.values() if run.memory is not None)
               if at is not None]
        return min(due) if due else None

    def _memory_due(self) -> None:
        now = time.monotonic()
        for run in list(self.runs.values()):
            memory = run.memory
            if memory is None or memory.next_at is None or memory.next_at > now:
                continue
            children = run.spec.memory_children
            found = {} if self.roll_running else {
                inst.k: memwatch.measure(inst.target.pid, children)
                for inst in self._running(run) if inst.target is not None}
            for k in memory.readings(now, found):
                inst = run.instances[k]
                size = (found.get(k) or 0) >> 20
                whom = f"instance {inst.slot}" if len(self.instances) > 1 else "the target"
                rolelog.report("memory", f"immortal: pump: {whom} used {size} MiB for "
                               f"{memory.window:g} s, over the limit of "
                               f"{memory.limit >> 20} MiB; restarting it\n")
                self._feed(inst, supervise.Restart(run.spec.stop_timeout, memwatch.REASON))

    # What the pump provides.
    def _feed(self, inst: Instance, event: supervise.Event, write: bool = True) -> None:
        raise NotImplementedError
