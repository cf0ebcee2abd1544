"""The pump's state and its start-up, step by step (``PumpStart.run``).

The pump runs each program of the group (``workers.Run``: a group of one runs one) with its
own monitors, spawner and instances. In order: the signals taken, the caller told the
pump's pid, each program's monitors loaded, the first target of each instance
(``workers.Instance``) adopted or spawned, the monitors' ``setup``
(and ``adopt``), what a dead predecessor left delivered, the status written; then the loop
(``pump.Pump``, which carries out each instance's machine's actions and reacts to what
happens). The caller is answered once every instance's target is ready (``readiness``: at
once for ``ready="spawn"``, else from the loop; ``answer.StartAnswer``). A step that fails
answers the caller with the error and ends the pump, taking the targets it spawned with it;
a target that dies before it is ready, or is not ready in time, stops the group, whose end
answers the caller. Here too: the daemon's death, at any step (``pumptakeover``).
"""

from __future__ import annotations

import functools
import os
import selectors
import signal
import time
from pathlib import Path

from . import (_linux, adoption, control, dirwatch, process, readiness, rolelog, rolling,
               supervise)
from .spare import Spares
from ._linux import process_start_time
from .detach import Handshake
from .errors import MONITOR_ERRORS
from .events import PUMP_START, ExitStatus
from .answer import StartAnswer
from .link import DaemonLink
from .loop import Loop, draw
from .notify import remove as remove_notify
from .readywatch import ReadyWatch
from .records import replace
from .roles import Fds, HandOver, Key, RoleArgs
from .spawner import Spawner
from .spec import Spec, Strategy
from .state import SOCKET_NAME, read_json
from .statusfile import StatusFile
from .streams import Streams
from .workers import Instance, Run


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class PumpStart(StartAnswer):
    """What a pump holds, and how it starts; ``pump.Pump`` runs it."""

    retire: Callable[[Run, int], None]  #: a scale down (``scaling.Scaling``)
    command: Callable[[dict[str, Any]], dict[str, Any]]  #: ``pumpcontrol.PumpControl``
    resume_roll: Callable[[dict[Key, int]], None]  #: ``rollresume.RollResume``
    continue_roll: Callable[[], None]
    watch_operations: Callable[[], None]  #: ``pumpops.Operations``
    close_operations: Callable[[], None]

    def __init__(self, spec: Spec, args: RoleArgs, subreaper: bool = False) -> None:
        # unattached, adopting an orphan: its pipes, reopened; or a dead group's files
        args = adoption.claim(args, spec)
        self.spec = spec
        self.args = args
        self.directory = Path(spec.directory)
        fds = args.fds
        self.handshake = Handshake(fds.handshake)
        self.lock_fd: int | None = fds.lock
        self.daemon_pid: int | None = args.daemon_pid
        self.link = DaemonLink(fds.lifeline)
        self.listen = fds.listen  # at fds 3, 4, ...: the daemon holds them too, if any
        self.runs: dict[str, Run] = {}
        self.streams: Streams | None = None  # the first instance's: channel, notify socket
        handed = fds.instances()
        for view in spec.each():
            run = self.add_run(view)
            count = max([view.workers, *(k + 1 for program, k in handed
                                         if program == view.program)])
            for k in range(count):
                self.add_instance(run, k, fds.instance((view.program, k)))
        self.spares = Spares()  # the instances' spare pipes, for a roll's replacements
        for inst in self.instances:
            inst.streams.spare = fds.spares().get(inst.key)
        assert self.streams is not None
        self.channel: list[int] | None = self.streams.channel
        self.parent_fd: int | None = fds.parent
        self.loop: Loop = Loop(selectors.DefaultSelector())
        self.selector: selectors.BaseSelector = self.loop.selector
        self.subreaper: bool = subreaper  # root of the group: orphans come here
        self.control: control.Server | None = None  # served here when there is no daemon
        self.keeper: dirwatch.Keeper | None = None  # the same
        self.setting_up: Spec | None = None  # the program whose monitors' setup runs
        self.previous = read_json(self.directory / "status.json") \
            if args.why != PUMP_START else None
        self.status_file: StatusFile = StatusFile(
            spec, (self.previous or {}).get("started_at") or time.time(), self.daemon_pid)
        if self.previous and self.previous.get("last_exit"):
            self.status_file.last_exit = ExitStatus.from_json(self.previous["last_exit"])
        # Readiness: a first start answers its caller once every target is ready (pending
        # until then), or gives the start up (answer.StartAnswer).
        self.pending = args.why == PUMP_START
        self.answered = False
        self.failure: str | None = None
        self.failed: Instance | None = None
        # A rolling restart (rollout.Rollout).
        self.roll: rolling.Roll | None = None
        self.roll_info: dict[str, Any] | None = None
        self.roll_grace: float | None = None
        self.replacements: dict[Any, Any] = {}  #: rollout.Replacement, by slot
        self.old_kill_at: dict[Any, float] = {}
        self.finish_waiting: supervise.Finish | None = None
        #: why the group stops, once it does (``_stop_all``): nothing runs again then
        self.stopped_for: str | None = None
        self.stop_grace: float | None = None  #: that stop's grace, if it gave one

    @property
    def instances(self) -> list[Instance]:
        """Every instance of every program, program by program."""
        return [inst for run in self.runs.values() for inst in run.instances]

    def add_run(self, view: Spec) -> Run:
        """A program of the group (``view``: its spec), with no instance yet."""
        offset = self.spec.listen_offset(view.program)
        sockets = (self.listen or ())[offset:offset + len(view.listen)]
        run = self.runs[view.program] = Run(
            view, Spawner(view, self.link.tell, tuple(sockets), offset))
        return run

    def add_instance(self, run: Run, k: int, files: Fds) -> Instance:
        """Instance ``k`` of ``run``, on ``files`` (none: made here). The group's first
        holds the channel and the notify socket."""
        first = self.streams is None
        console = self.args.fds.console
        if first:
            files = replace(files, channel=files.channel or self.args.fds.channel,
                            notify=files.notify or self.args.fds.notify, console=console)
        notify = self.spec.directory if first and any(
            view.ready == readiness.NOTIFY for view in self.spec.each()) else None
        # The raw output goes to the pump's own stdout and stderr in development, to the
        # command's console in the foreground.
        echo = (1, 2) if self.spec.strategy == Strategy.DEVELOPMENT else console
        streams = Streams(files, first and run.spec.channel and not self.spec.several, echo,
                          self._sink(run, k), notify)
        if first:
            self.streams = streams
        inst = Instance(k, streams, self._ready_watch(run, k), run)
        run.instances.append(inst)
        return inst

    def _sink(self, run: Run, k: int) -> Callable[[str, bytes, int, int], None]:
        """Where instance ``k``'s lines go: its program's monitors, told the instance."""
        # Called once per read: no frame of its own.
        return functools.partial(self._lines, run, k)

    def _ready_watch(self, run: Run, k: int) -> ReadyWatch:
        """Instance ``k``'s readiness, which tells ``_ready_changed`` of its moves and
        ``_notice_changed`` of its new STATUS texts."""
        def changed(state: readiness.Readiness) -> None:
            if k < len(run.instances):
                self._ready_changed(run.instances[k], state)

        def noticed(state: readiness.Readiness) -> None:
            if k < len(run.instances):
                self._notice_changed(run.instances[k])
        return ReadyWatch(run.spec.ready_mode, run.spec.ready_timeout, changed,
                          noticed=noticed)

    def shown(self, inst: Instance) -> int | None:
        """The number of an instance as monitors are told it (None in a program of one)."""
        return inst.run.shown(inst)

    def _own_pids(self) -> set[int]:
        return {inst.target.pid for inst in self.instances if inst.target is not None} | {
            repl.child.pid for repl in self.replacements.values()}

    def run(self) -> int:
        self._take_signals()
        self.handshake.send(role="pump", pid=os.getpid(), start_time=process_start_time(
            os.getpid()))
        error = self._load_monitors()
        if error is not None:
            return self._fail("MonitorError", error)
        if self.args.drain:
            return self.drain()
        self._check_daemon()
        self.resume_roll({k: adopt.pid for k, adopt in self.args.adopts().items()})
        # Before the first spawn: a change once it has started is never missed (one
        # before it may restart it once more).
        self.watch_operations()
        firsts: list[tuple[Instance, tuple[supervise.Action, ...]]] = []
        try:
            for inst in self.instances:
                firsts.append((inst, self._first_target(inst)))
        except OSError as exc:  # a first start fails instead
            self._kill_own_target()
            failed = self.instances[len(firsts)].run.spec
            return self._fail("StartError", self._named_spec(
                failed, process.exec_error(failed.command(), exc, failed.user)))
        if not self.pending and not self.args.fresh:
            # A successor names itself before any monitor is called: a setup, or the lines
            # a dead predecessor left, may take long (or end this pump too), and ``status``
            # would name the dead pump meanwhile.
            self._write_status()
        try:
            self._set_up([(inst, tuple(a for a in actions if isinstance(a, supervise.Hook)))
                          for inst, actions in firsts])
        except HandOver:
            raise  # the daemon died meanwhile: this process becomes it (see main)
        except MONITOR_ERRORS as exc:
            self._kill_own_target()
            failed = self.setting_up or self.spec
            return self._fail("StartError", self._named_spec(failed, f"setup failed: {exc}"))
        self._answer()
        self._watch()
        for inst, actions in firsts:
            self._act(inst, tuple(a for a in actions if not isinstance(a, supervise.Hook)))
        for run in list(self.runs.values()):
            if len(run.instances) > run.spec.workers:  # a scale down its predecessor began
                self.retire(run, run.spec.workers)
        self.continue_roll()  # before the deaths below: a retired old target's is a swap
        adopts = self.args.adopts()
        for inst in self.instances:
            adopt = adopts.get(inst.key)
            if adopt is not None and adopt.exit is not None and inst.target is not None \
                    and inst.target.pid == adopt.pid:
                self._target_died(inst, adopt.exit)
        return self._loop()

    @property
    def finished(self) -> bool:
        return self.loop.stopped

    def _named_spec(self, view: Spec, text: str) -> str:
        """``text`` about a program, naming it in a group of several programs."""
        return f"program {view.program!r}: {text}" if view.program else text

    def _first_target(self, inst: Instance) -> tuple[supervise.Action, ...]:
        """Adopt the target of ``inst`` we were handed, or spawn one: its machine's first
        state, and the actions left to carry out. An OSError only for a first start's
        failed spawn."""
        adopt = self.args.adopts().get(inst.key)
        why = self.args.why
        if adopt is not None:
            wall = adopt.started_wall if adopt.started_wall is not None else time.time()
            started = time.monotonic() - max(0.0, time.time() - wall)
            inst.target = process.Child(adopt.pid, started, None, own=False)
            if self.daemon_pid is None:  # adopted by a new start: nobody else watches it
                inst.target.pidfd = adoption.watch(adopt.pid)
            template = self._carried_over(inst)
            if why == PUMP_START:  # adopted by a new start: the group's first target
                template = supervise.replace(template, spawned=1)
            inst.machine = supervise.adopt(adopt.pid, started, template)
            inst.ready.spawned(started, *self._was_ready(inst, adopt.pid))
            return ()
        inst.machine = self._carried_over(inst)
        try:
            inst.target = self._spawn(inst)
        except OSError as exc:
            if why == PUMP_START:
                raise
            inst.machine, actions = supervise.step(
                inst.run.spec.policy, inst.machine, supervise.SpawnFailed(str(exc)),
                time.monotonic(), draw())
            return actions
        inst.machine, actions = supervise.step(inst.run.spec.policy, inst.machine,
                                               supervise.Spawned(inst.target.pid),
                                               time.monotonic(), draw())
        return actions  # the monitors' hook of the new target, carried out by _set_up

    def _kill_own_target(self) -> None:
        """A failed start: the targets we spawned go with it."""
        for inst in self.instances:
            target = inst.target
            if target is not None and target.own:
                target.kill_group(signal.SIGKILL)
                while target.reap(time.monotonic()) is None:
                    time.sleep(0.001)  # SIGKILL was sent: the reap takes microseconds

    def _set_up(self, hooks: list[tuple[Instance, tuple[supervise.Action, ...]]]) -> None:
        """The monitors' ``setup`` (and ``adopt``), then what a predecessor left, then the
        ``hooks`` of the targets spawned already (each machine chose spawn or respawn)."""
        adopts = self.args.adopts()
        why = self.args.why
        message = rolelog.tail(self.args.message_file)
        for run in self.runs.values():
            assert run.host is not None
            self.setting_up = run.spec
            run.host.call("setup", strict=why == PUMP_START, why=why, message=message)
        self.setting_up = None
        for inst in self.instances:
            adopt = adopts.get(inst.key)
            if adopt is not None and inst.run.host is not None:
                inst.run.host.call("adopt", pid=adopt.pid, instance=self.shown(inst))
        self._check_daemon()
        for inst in self.instances:
            inst.streams.recover()
        for inst, actions in hooks:
            self._act(inst, actions)

    def drain(self) -> int:
        """What the dead group's pipe holder kept (taken as a start takes it:
        ``adoption.claim``), handed to the monitors, each from its own mark; no target is
        spawned (``drain``: a stop of a group with no supervisor left)."""
        self._set_up([])
        for inst in self.instances:
            inst.streams.drain()
        for run in self.runs.values():
            if run.host is not None:  # backpressure "drop": queues emptied as at a stop,
                self._catch_up(run.spec.stop_timeout, run)  # and what was lost told
                run.host.report_dropped(force=True)
        # The dead pumps' drops (what the last had queued and not handed over: counted
        # now) and the drain's own, in the status the stop records as final.
        self.status_file.write_counts(list(self.runs.values()))
        for run in self.runs.values():
            self.shut_down(run, "stop")
        if self.streams is not None and self.streams.notify_sock is not None:
            remove_notify(self.directory)  # made for this pump alone
        return 0

    def _answer(self) -> None:
        """Up: the status written; the daemon and the caller told once every target is
        ready (``_ready_changed``: it may come later, or not at all)."""
        if self.daemon_pid is None or self.args.fresh:
            # A fresh interpreter (unattached, development, a pump's successor): its argv
            # is a JSON blob. (A daemon's pump is its fork and was titled there.) Titled
            # before the caller is answered: a start that finds the group's lock file gone
            # knows it runs by its supervisors' titles (``state.Lock``).
            _linux.set_title(self.spec.title("pump"))
        # A successor writes it once its daemon is up; a start whose targets are ready
        # already (ready at the spawn) writes it once its daemon knows (``_started``): a
        # status that says ready is never one the daemon does not know of.
        if not self.args.fresh and not (self.pending and self.all_ready):
            self._write_status()
        if self.daemon_pid is None:
            self.control = control.Server(self.directory / SOCKET_NAME, self.selector,
                                          self.command)
            self.keeper = dirwatch.keep(self.directory, self.loop, self.lock_fd,
                                        self._dir_restored)
        self._answer_once_ready()

    def _check_daemon(self) -> None:
        """During start-up (long with a slow monitor), act on the daemon's death at once
        rather than at the end of it: the targets would have no other supervisor. A first
        start answers its caller first."""
        if self.args.why != PUMP_START and self.link.gone():
            self._daemon_died()

    def _ending(self) -> bool:
        """The group is stopping or has ended: no instance will be spawned again."""
        return all(supervise.ending(inst.machine) for inst in self.instances)

    def _carried_over(self, inst: Instance) -> supervise.State:
        """The counters of ``inst`` so far, as the previous pump left them (a group of
        one's are the group's)."""
        if self.args.why == PUMP_START:
            return supervise.State()
        previous = self.previous or {}
        if previous.get("instances"):
            previous = next((entry for entry in previous["instances"]
                             if isinstance(entry, dict) and entry.get("instance") == inst.k
                             and (entry.get("program") or "") == inst.program), {})
        last = previous.get("last_exit")
        return supervise.carried_over(int(previous.get("restarts", 0)),
                                      int(previous.get("spawned", 0)),
                                      ExitStatus.from_json(last) if last else None)

    def _fail(self, kind: str, message: str) -> int:
        self.handshake.send(error=kind, message=message)
        rolelog.report("failed", f"immortal: pump: {message}\n")
        return 1

    # What the running pump provides (pump.Pump, pumphosts.Hosts, pumptakeover.TakeOver,
    # rollout.Rollout).
    def _load_monitors(self) -> str | None:
        raise NotImplementedError

    def load_host(self, run: Run) -> None:
        raise NotImplementedError

    def _take_signals(self) -> None:
        raise NotImplementedError

    def _watch(self) -> None:
        raise NotImplementedError

    def _act(self, inst: Instance, actions: tuple[supervise.Action, ...]) -> None:
        raise NotImplementedError

    def _target_died(self, inst: Instance, status: ExitStatus) -> None:
        raise NotImplementedError

    def _daemon_died(self) -> None:
        raise NotImplementedError

    def _loop(self) -> int:
        raise NotImplementedError

    def _catch_up(self, timeout: float, run: Run | None = None) -> None:
        raise NotImplementedError

    def _spawn(self, inst: Instance) -> process.Child:
        raise NotImplementedError

    def shut_down(self, run: Run, reason: str) -> None:
        raise NotImplementedError

    def _lines(self, run: Run, k: int, stream: str, block: bytes, offset: int,
               end: int) -> None:
        raise NotImplementedError

    def _write_status(self) -> None:
        raise NotImplementedError

    def _dir_restored(self, missing: set[str]) -> None:
        raise NotImplementedError
