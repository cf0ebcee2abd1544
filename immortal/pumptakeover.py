"""The pump whose daemon died becomes the daemon, in place: it keeps the targets and their
pipes and hands them over (``link.take_over``), so a group is never left without a
supervisor that holds what must outlive a pump. A group that is ending just ends."""

from __future__ import annotations

from selectors import BaseSelector

from .link import DaemonLink, take_over
from .loop import Loop
from .monitoring import MONITOR_GRACE
from .records import replace
from .roles import Adopt, Fds, Key, RoleArgs
from .spare import Spares
from .spec import Spec
from .streams import Streams
from .workers import Instance, Run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


class TakeOver:
    """What the pump (``pump.Pump``) does when its daemon dies; the rest it provides (no
    stubs here: this part comes before ``PumpStart`` in the pump's bases)."""

    spec: Spec
    args: RoleArgs
    directory: Path
    link: DaemonLink
    loop: Loop
    selector: BaseSelector
    streams: Streams | None
    spares: Spares
    lock_fd: int | None
    listen: tuple[int, ...] | None
    pending: bool
    answered: bool
    runs: dict[str, Run]
    instances: list[Instance]
    _give_up: Callable[[Instance | None, str], None]
    _ending: Callable[[], bool]
    _catch_up: Callable[[float], None]
    _write_status: Callable[[], None]
    close_operations: Callable[[], None]

    def _daemon_died(self) -> None:
        """The daemon is gone: become the daemon, keeping the targets and their pipes
        (``link.take_over``); a group that is ending just ends."""
        assert self.link.sock is not None
        if self.link.sock.fileno() in self.selector.get_map():
            self.selector.unregister(self.link.sock)
        if self.pending and self.answered:
            self._give_up(None, "its daemon died during the start")
        if self._ending():
            for inst in self.instances:
                inst.streams.drain(final=False)
            self.link.sock = None
            return
        adopts: dict[Key, Adopt] = {}
        handed = self.args.adopts()
        for inst in self.instances:
            if inst.target is not None:
                adopts[inst.key] = Adopt(inst.target.pid, inst.target.started_wall,
                                         instance=inst.k, program=inst.program)
                inst.target.close()
            elif inst.key in handed:  # still starting: the target we were to adopt
                adopts[inst.key] = replace(handed[inst.key], exit=None, ticks=None,
                                           journal=False)
        assert self.streams is not None
        group = self.streams.fds(self.lock_fd)
        fds = Fds(lock=self.lock_fd, channel=group.channel, notify=group.notify,
                  listen=self.listen, console=group.console).with_instances(
            {inst.key: inst.streams.files() for inst in self.instances}).with_spares(
            {inst.key: inst.streams.spare for inst in self.instances if inst.streams.spare})
        take_over(str(self.directory), adopts, fds, self._close_loop, self._settle,
                  self.spec.title("daemon"))

    def _close_loop(self) -> None:
        """Before this process becomes the daemon in place: the loop and the pump's own
        watches go (the daemon's loop is a new one)."""
        self.loop.close()
        self.close_operations()
        self.spares.close()
        for run in self.runs.values():  # monitors in processes of their own end with it
            if run.host is not None:
                run.host.close()

    def _settle(self) -> None:
        """Before an exec into the daemon: the monitors' threads take what they were given
        (the successor would hand the same lines over again); not longer: nobody reads the
        pipes meanwhile."""
        for inst in self.instances:
            inst.streams.drain(final=False)
        self._catch_up(MONITOR_GRACE)
        self._write_status()
