"""The pump's answers to control requests (``control.check_request`` checked them): a
status, a stop, a restart (a rolling one: ``rollout``) or a signal of every instance or of
one (``NAME:K``), a reopen of
the monitors' files, and a scale (as the group's root: a daemon scales with its files).
"""

from __future__ import annotations

from . import supervise
from .checks import check_workers
from .errors import NotRunning

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .monitoring import Host
    from .spec import Spec
    from .workers import Instance


class PumpControl:
    """What the pump (``pump.Pump``) does with a control request; the rest it provides."""

    spec: Spec
    instances: list[Instance]
    host: Host | None
    scale: Callable[[int], None]  #: ``scaling.Scaling``
    _status_data: Callable[[], dict[str, Any]]
    _feed_all: Callable[..., None]  #: an event for every instance, or those chosen
    _phase: Callable[[], supervise.Phase]
    start_roll: Callable[[list[int], int, float], int]  #: ``rollout.Rollout``
    roll_running: bool

    def rolls(self, request: dict[str, Any]) -> bool:
        """Whether a restart request is carried out as a rolling restart: a group of
        several instances, or one that listens, unless ``all_at_once`` is asked."""
        several = len(self.instances) > 1 or bool(self.spec.listen)
        return several and not request.get("all_at_once")

    def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out a control request; a restart or a signal goes to every instance, or
        to ``request["instance"]`` alone."""
        cmd = request["cmd"]
        grace = request.get("timeout", self.spec.stop_timeout)
        if cmd == "status":
            return {"status": self._status_data()}
        if cmd == "stop":
            self._feed_all(supervise.Stop(float(grace), "stop"))
        elif cmd == "restart" and self.rolls(request):
            chosen = self._addressed(request.get("instance"))
            return {"roll": self.start_roll([inst.k for inst in chosen],
                                            int(request.get("batch", 1)), float(grace))}
        elif cmd == "restart":
            if self.roll_running:
                raise NotRunning("a rolling restart is in progress; wait for it to end")
            restart = supervise.Restart(float(grace), request.get("why", "manual"))
            chosen = self._addressed(request.get("instance"))
            refused = [supervise.refusal(inst.machine, restart) for inst in chosen]
            if all(refused):
                raise NotRunning(str(refused[0]))
            self._feed_all(restart, chosen)
        elif cmd == "signal":
            live = [inst for inst in self._addressed(request.get("instance"))
                    if inst.target is not None]
            if not live:
                raise NotRunning(f"no target is running (state {self._phase()})")
            for inst in live:
                assert inst.target is not None
                inst.target.kill_group(request["signal"])
        elif cmd == "reopen":
            assert self.host is not None
            self.host.call("reopen")
        elif cmd == "scale":
            if self.roll_running:
                raise NotRunning("a rolling restart is in progress; wait for it to end")
            self.scale(check_workers(request["workers"]))
        return {}

    def _addressed(self, k: int | None) -> list[Instance]:
        """The instances a request is for: all, or instance ``k``."""
        if k is None:
            return list(self.instances)
        if not 0 <= k < len(self.instances):
            raise NotRunning(f"the group has no instance {k} (it runs instances 0 to "
                             f"{len(self.instances) - 1})")
        return [self.instances[k]]
