"""The pump's answers to control requests (``commands.check_request`` checked them): a
status, a stop, a restart (a rolling one: ``rollout``) or a signal of every instance, of a
program's (``GROUP/PROGRAM``) or of one (``NAME:K``, ``GROUP/PROGRAM:K``), a reopen of the
monitors' files, a scale and an apply (as the group's root: a daemon does those with its
files).
"""

from __future__ import annotations

from . import privileges, rolling, supervise
from .checks import check_workers
from .errors import NotRunning
from .statewords import KILLED

#: Why a rolling restart, a scale or an apply is refused during the group's first start:
#: it would stop targets that are not ready yet, and so fail that start. (A plain
#: restart is taken: the start waits for its new targets, ``answer.StartAnswer``.)
STARTING = ("the group is still starting (not every target is ready yet); try again once "
            "its start has returned")

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .spec import Spec
    from .workers import Instance, Run


class PumpControl:
    """What the pump (``pump.Pump``) does with a control request; the rest it provides."""

    spec: Spec
    runs: dict[str, Run]

    @property
    def instances(self) -> list[Instance]:  # the pump's: every program's
        raise NotImplementedError

    scale: Callable[[int, str, int | None], dict[str, Any]]  #: ``scaling.Scaling``
    apply: Callable[[str], dict[str, Any]]  #: ``scaling.Scaling``
    _status_data: Callable[[], dict[str, Any]]
    _feed_all: Callable[..., None]  #: an event for every instance, or those chosen
    _stop_all: Callable[..., None]
    _rerun: Callable[[Instance, str], None]
    stopped_for: str | None  #: why the group stops, once it does (``pump.Pump._stop_all``)
    _phase: Callable[[], supervise.Phase]
    start_roll: Callable[[list[Instance], int, float | None], int]  #: ``rollout.Rollout``
    signal_replacements: Callable[[list[Instance], int], int]  #: ``rollout.Rollout``
    roll_running: bool
    pending: bool  #: a first start whose caller still waits (``answer.StartAnswer``)

    def rolls(self, request: dict[str, Any], chosen: list[Instance]) -> bool:
        """Whether a restart request is carried out as a rolling restart: asked
        (``rolling``), or for several instances of a program, or one that listens, unless
        ``all_at_once`` is asked."""
        return rolling.rolls(
            any(len(inst.run.instances) > 1 or inst.run.spec.listen for inst in chosen),
            bool(request.get("all_at_once")), bool(request.get("rolling")))

    def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out a control request; a restart or a signal goes to every instance, or
        to those ``request["program"]`` and ``request["instance"]`` name."""
        cmd = request["cmd"]
        grace = request.get("timeout")
        if cmd == "status":
            return {"status": self._status_data()}
        if cmd in ("scale", "apply") and self.pending:
            raise NotRunning(STARTING)
        if cmd == "stop":
            if request.get("kill"):  # Group.kill: no grace, for the targets or the monitors
                self._stop_all(KILLED, 0.0, kill=True)
            else:
                self._stop_all("stop", None if grace is None else float(grace))
        elif cmd == "restart":
            chosen = self._addressed(request)
            for run in {id(inst.run): inst.run for inst in chosen}.values():
                privileges.still_there(run.spec.user, run.spec.group)
            why = request.get("why", "manual")  # the operator's, or a watch's
            # Those that ended on their own (a job done, restarts given up) run again, with
            # the definition an apply gave them: nothing of theirs serves to roll.
            again = [] if self.stopped_for is not None else [
                inst for inst in chosen if supervise.rerunnable(inst.machine)]
            others = [inst for inst in chosen if inst not in again]
            if self.rolls(request, chosen):
                if self.pending:  # a plain restart's new target is waited for instead
                    raise NotRunning(STARTING)
                ident = self.start_roll(others, int(request.get("batch", 1)),
                                        None if grace is None else float(grace))
                for inst in again:
                    self._rerun(inst, why)
                return {"roll": ident}
            if self.roll_running:
                raise NotRunning("a rolling restart is in progress; wait for it to end")
            refused = [supervise.refusal(inst.machine, supervise.Restart(0.0, why))
                       for inst in others]
            if not again and all(refused):
                raise NotRunning(str(refused[0]))
            self._feed_all(lambda inst: supervise.Restart(
                inst.run.spec.stop_timeout if grace is None else float(grace), why), others)
            for inst in again:
                self._rerun(inst, why)
        elif cmd == "signal":
            # During a roll both generations of a slot serve: the old target, until it is
            # gone, and its replacement, before it takes the slot.
            chosen = self._addressed(request)
            live = [inst.target for inst in chosen if inst.target is not None]
            for child in live:
                child.kill_group(request["signal"])
            if not self.signal_replacements(chosen, request["signal"]) and not live:
                raise NotRunning(f"no target is running (state {self._phase()})")
        elif cmd == "reopen":
            for run in self.runs.values():
                if run.host is not None:
                    run.host.call("reopen")
        elif cmd == "scale":
            if self.roll_running:
                raise NotRunning("a rolling restart is in progress; wait for it to end")
            return self.scale(check_workers(request["workers"]), request.get("program", ""),
                              request.get("caller"))
        elif cmd == "apply":
            if self.roll_running:
                raise NotRunning("a rolling restart is in progress; wait for it to end")
            return self.apply(request["file"])
        return {}

    def _addressed(self, request: dict[str, Any]) -> list[Instance]:
        """The instances a request is for: all, a program's, or one instance."""
        program, k = request.get("program"), request.get("instance")
        if program is None:
            if k is not None and self.spec.several:
                raise NotRunning("name the program of the instance (GROUP/PROGRAM:K)")
            chosen = list(self.instances)
        else:
            run = self.runs.get(program)
            if run is None:
                raise NotRunning(f"group {self.spec.name!r} has no program {program!r}")
            chosen = list(run.instances)
        below = request.get("below")
        if below is not None:
            chosen = chosen[:below]
        if k is None:
            return chosen
        if not 0 <= k < len(chosen):
            raise NotRunning(f"the group has no instance {k} (it runs instances 0 to "
                             f"{len(chosen) - 1})")
        return [chosen[k]]
