"""A running group scaled up or down (``Group.scale``, ``immortal scale``): the pump's side.

Up: each new instance gets its pipes and journal (made and kept by the daemon, which sends
them over the lifeline, ``Grow``; made here by a pump without a daemon) and its first
target, spawned as a group's first is (the monitors get ``spawn`` for it), with its own
readiness: the pump answers at once, and ``Group.scale`` waits in the caller until
``status.json`` shows every instance running and ready. Down: the
highest instances retire, each stopped as a stop does it (TERM, the group's grace, KILL);
once all have ended they are dropped, their files closed, and the daemon told
(``Retired``), which closes its own copies. A pump started while instances retire (its
predecessor died) finds more instances than the spec's ``workers`` and retires the rest.
"""

from __future__ import annotations

import os
import time

from . import process, relay, supervise
from .errors import NotRunning
from .loop import draw
from .records import replace
from .roles import Fds, Retired
from .state import write_json
from .streams import Streams
from .workers import Instance

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from selectors import BaseSelector

    from .link import DaemonLink
    from .loop import Loop
    from .monitoring import Host
    from .readywatch import ReadyWatch
    from .spec import Spec

RETIRED = "retired"  #: the reason a retired instance's machine ends with


class Scaling:
    """What the pump (``pump.Pump``) does to scale; the rest it provides."""

    spec: Spec
    directory: Path
    instances: list[Instance]
    host: Host | None
    link: DaemonLink
    loop: Loop
    selector: BaseSelector
    daemon_pid: int | None
    retiring: int | None  #: the instances from this number on are retiring

    def scale(self, workers: int) -> None:
        """A pump without a daemon: run ``workers`` instances, the new ones' files made
        here."""
        if self.retiring is not None:
            raise NotRunning("instances are still retiring after the last scale; try "
                             "again in a moment")
        before = len(self.instances)
        self.spec = replace(self.spec, workers=workers)
        write_json(self.directory / "spec.json", self.spec.to_json())
        if workers < before:
            self.retire(workers)
        for k in range(before, workers):
            self.grow(k, ())

    def grow(self, k: int, fds: tuple[int, ...]) -> None:
        """Instance ``k`` joins, on the files ``fds`` (out read, out write, err read, err
        write, journal; none: made here), and its first target is spawned."""
        if k != len(self.instances) or self.host is None:
            for fd in fds:  # not the next one (a scale this pump was started with)
                os.close(fd)
            return
        given = Fds(out=(fds[0], fds[1]), err=(fds[2], fds[3]), journal=fds[4]) if fds \
            else Fds()
        streams = Streams(given, False, self.instances[0].streams.echo, self._sink(k))
        inst = Instance(k, streams, self._ready_watch(k))
        self.instances.append(inst)
        self.spec = replace(self.spec, workers=max(self.spec.workers, k + 1))
        self.host.add_ledger(relay.Ledger(streams.journal))
        self._watch_streams(inst)
        try:
            inst.target = self._spawn(inst)
        except OSError as exc:
            self._feed(inst, supervise.SpawnFailed(process.exec_error(self.spec.command(),
                                                                      exc)))
            return
        self._watch_target(inst)
        inst.machine, actions = supervise.step(self.spec.policy, inst.machine,
                                               supervise.Spawned(inst.target.pid),
                                               time.monotonic(), draw())
        self._act(inst, actions)
        self._write_status()

    def retire(self, workers: int) -> None:
        """The instances from ``workers`` on stop, all at once; they are dropped once all
        have ended."""
        self.retiring = workers
        self.spec = replace(self.spec, workers=workers)
        for inst in self.instances[workers:]:
            self._feed(inst, supervise.Stop(self.spec.stop_timeout, RETIRED), write=False)
        self.retired()
        self._write_status()

    def retired(self) -> None:
        """If every retiring instance has ended: drop them, close their files, tell the
        daemon."""
        workers = self.retiring
        if workers is None or not all(inst.final for inst in self.instances[workers:]):
            return
        for inst in self.instances[workers:]:
            self._unwatch_target(inst)
            for fd in (inst.streams.out_r, inst.streams.err_r):
                if fd in self.selector.get_map():
                    self.selector.unregister(fd)
            inst.streams.drain()
        gone = self.instances[workers:]
        del self.instances[workers:]
        assert self.host is not None
        self.host.drop_ledgers(workers)
        for inst in gone:
            inst.streams.close()
        self.retiring = None
        self.link.tell(Retired(workers))

    # What the pump provides (pump.Pump, pumpstart.PumpStart).
    def _sink(self, k: int) -> Callable[[str, bytes, int, int], None]:
        raise NotImplementedError

    def _watch_streams(self, inst: Instance) -> None:
        raise NotImplementedError

    def _ready_watch(self, k: int) -> ReadyWatch:
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
