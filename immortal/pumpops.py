"""The operator's watches, carried out by the pump: a restart when watched files change
(``filewatch``), and when a target's memory stays over its limit (``memwatch``).

Both run in the pump, whatever the strategy (``development`` too, where watching files is
most wanted): it is the pump that restarts targets, and a watch there adds no message
between the roles. The files are watched from before the pump's first spawn, so a change
once a target started is never missed. A pump that dies loses what it was watching; its
successor watches again from its start (a change in between is not seen).

- Files: a change ends in the restart a SIGHUP to the group's root asks for
  (``PumpControl.command``: rolling where the group rolls, the whole program otherwise),
  with the reason ``watch``. One already under way (a roll) puts the restart off by
  ``watch_delay``; a group that is stopping is not restarted.
- Memory: each target over the limit for the window gets its own graceful restart, fed
  to its machine with the reason ``memory`` (the restart record, the ``exit`` event,
  ``status``). Not during a rolling restart: the roll replaces the targets anyway.
"""

from __future__ import annotations

import time

from . import memwatch, rolelog, supervise
from .errors import ImmortalError
from .filewatch import FileWatch
from .memwatch import MemoryWatch

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .loop import Loop
    from .spec import Spec
    from .workers import Instance

WATCH = "watch"  #: the restart record's reason after a change of a watched file


class Operations:
    """What the pump (``pump.Pump``) does for ``watch=`` and ``memory_limit=``; the rest
    it provides."""

    spec: Spec
    instances: list[Instance]
    loop: Loop
    roll_running: bool
    command: Callable[[dict[str, Any]], dict[str, Any]]  #: ``pumpcontrol.PumpControl``
    files: FileWatch | None = None
    memory: MemoryWatch | None = None

    def watch_operations(self) -> None:
        """Put the watches the spec asks for in the loop (none: no fd, no deadline)."""
        spec = self.spec
        if spec.watch:
            files = FileWatch(spec.watch, spec.ignore, spec.watch_delay)
            if files.start():
                self.files = files
                self.loop.watch(files.fd, files.on_ready)
                self.loop.at(files.deadline, self._files_changed)
        if spec.memory_limit is not None:
            self.memory = MemoryWatch(spec.memory_limit, spec.memory_window)
            self.loop.at(self._memory_deadline, self._memory_due)

    def close_operations(self) -> None:
        if self.files is not None:
            self.files.close()

    # ----------------------------------------------------------------- files
    def _files_changed(self) -> None:
        files = self.files
        if files is None or not files.take():
            return
        if all(supervise.ending(inst.machine) for inst in self.instances):
            return
        try:
            self.command({"cmd": "restart", "why": WATCH})
        except ImmortalError as exc:
            if self.roll_running:  # one restart at a time: this one comes after
                files.due = time.monotonic() + files.delay
            else:
                rolelog.report("watch", f"immortal: pump: restart on change: {exc}\n")
            return
        rolelog.report("watch", "immortal: pump: a watched file changed; restarting\n")

    # ----------------------------------------------------------------- memory
    def _running(self) -> list[Instance]:
        return [inst for inst in self.instances
                if inst.target is not None and inst.machine.phase == supervise.RUNNING]

    def _memory_deadline(self) -> float | None:
        assert self.memory is not None
        return self.memory.deadline(bool(self._running()), time.monotonic())

    def _memory_due(self) -> None:
        memory = self.memory
        assert memory is not None
        children = self.spec.memory_children
        found = {} if self.roll_running else {
            inst.k: memwatch.measure(inst.target.pid, children)
            for inst in self._running() if inst.target is not None}
        for k in memory.readings(time.monotonic(), found):
            inst = self.instances[k]
            size = (found.get(k) or 0) >> 20
            whom = f"instance {k}" if len(self.instances) > 1 else "the target"
            rolelog.report("memory", f"immortal: pump: {whom} used {size} MiB for "
                           f"{memory.window:g} s, over the limit of {memory.limit >> 20} "
                           "MiB; restarting it\n")
            self._feed(inst, supervise.Restart(self.spec.stop_timeout, memwatch.REASON))

    # What the pump provides.
    def _feed(self, inst: Instance, event: supervise.Event, write: bool = True) -> None:
        raise NotImplementedError
