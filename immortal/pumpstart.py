"""The pump's state and its start-up, step by step (``PumpStart.run``).

In order: the signals taken, the caller told the pump's pid, the monitors loaded, the first
target adopted or spawned, the monitors' ``setup`` (and ``adopt``), what a dead predecessor
left delivered, the status written; then the loop (``pump.Pump``, which carries out the
machine's actions and reacts to what happens). The caller is answered once the target is
ready (``readiness``: at once for ``ready="spawn"``, else from the loop). A step that fails
answers the caller with the error and ends the pump, taking a target it spawned with it; a
target that dies before it is ready, or is not ready in time, stops the group, whose end
answers the caller (``_fail_start``).
"""

from __future__ import annotations

import os
import selectors
import signal
import time
from pathlib import Path

from . import (_linux, adoption, control, dirwatch, monitoring, process, readiness, relay,
               rolelog, supervise)
from ._linux import process_start_time
from .detach import Handshake
from .events import PUMP_START, ExitStatus
from .link import DaemonLink
from .loop import Loop, draw
from .readywatch import ReadyWatch
from .roles import HandOver, RoleArgs, Started
from .spawner import Spawner
from .spec import Spec, Strategy
from .state import SOCKET_NAME, read_json
from .statusfile import StatusFile
from .streams import Streams

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class PumpStart:
    """What a pump holds, and how it starts; ``pump.Pump`` runs it."""

    def __init__(self, spec: Spec, args: RoleArgs, subreaper: bool = False) -> None:
        args = adoption.claim(args)  # unattached, adopting an orphan: its pipes, reopened
        self.spec = spec
        self.args = args
        self.directory = Path(spec.directory)
        fds = args.fds
        self.handshake = Handshake(fds.handshake)
        self.lock_fd: int | None = fds.lock
        self.daemon_pid: int | None = args.daemon_pid
        wants_notify = spec.ready == readiness.NOTIFY
        self.streams = streams = Streams(fds, spec.channel,
                                         spec.strategy == Strategy.DEVELOPMENT, self._lines,
                                         notify=spec.directory if wants_notify else None)
        self.channel = streams.channel
        self.link = DaemonLink(fds.lifeline)
        self.listen = fds.listen  # at fds 3, 4, ...: the daemon holds them too, if any
        self.spawner = Spawner(spec, streams, self.link.tell, fds.listen or ())
        self.parent_fd: int | None = fds.parent
        self.loop = Loop(selectors.DefaultSelector())
        self.selector = self.loop.selector
        self.target: process.Child | None = None
        self.watched = -1  # the pidfd registered in the selector
        self.subreaper = subreaper  # root of the group: orphans come here
        self.control: control.Server | None = None  # served here when there is no daemon
        self.machine = supervise.State()
        self.deadline: float | None = None  # when the machine wants a Tick
        self.host: monitoring.Host | None = None
        self.previous = read_json(self.directory / "status.json") \
            if args.why != PUMP_START else None
        self.status_file = StatusFile(spec, (self.previous or {}).get("started_at")
                                      or time.time(), self.daemon_pid)
        # Readiness: a first start answers its caller once the target is ready (pending
        # until then), or gives the start up (failure: why).
        self.ready = ReadyWatch(spec.ready_mode, spec.ready_timeout, streams.notify_sock,
                                self._ready_changed)
        self.pending = args.why == PUMP_START
        self.answered = False
        self.failure: str | None = None

    def run(self) -> int:
        self._take_signals()
        self.handshake.send(role="pump", pid=os.getpid(), start_time=process_start_time(
            os.getpid()))
        error = self._load_monitors()
        if error is not None:
            return self._fail("MonitorError", error)
        self._check_daemon()
        try:
            actions = self._first_target()
        except OSError as exc:  # a first start fails instead
            return self._fail("StartError", process.exec_error(self.spec.command(), exc))
        hooks = tuple(a for a in actions if isinstance(a, supervise.Hook))
        try:
            self._set_up(hooks)
        except HandOver:
            raise  # the daemon died meanwhile: this process becomes it (see main)
        except Exception as exc:
            self._kill_own_target()
            return self._fail("StartError", f"setup failed: {exc}")
        self._answer()
        self._watch()
        self._act(tuple(a for a in actions if not isinstance(a, supervise.Hook)))
        adopt = self.args.adopt
        if adopt is not None and adopt.exit is not None:
            self._target_died(adopt.exit)
        return self._loop()

    @property
    def finished(self) -> bool:
        return self.loop.stopped

    def _load_monitors(self) -> str | None:
        """Import and create the monitors (``self.host``); the error if they fail."""
        try:
            self.host = monitoring.Host(
                [(name, monitoring.resolve(name), options)
                 for name, options in self.spec.monitors],
                self.spec.name, self.directory, self.streams.send if self.channel else None,
                relay.Ledger(self.streams.journal), drop=self.spec.backpressure == "drop")
        except Exception as exc:
            return f"the monitors failed to load in the pump: {exc}"
        if self.host.terminal:
            self.streams.no_echo()
        return None

    def _first_target(self) -> tuple[supervise.Action, ...]:
        """Adopt the target we were handed, or spawn one: the machine's first state, and
        the actions left to carry out. An OSError only for a first start's failed spawn."""
        adopt = self.args.adopt
        why = self.args.why
        if adopt is not None:
            wall = adopt.started_wall if adopt.started_wall is not None else time.time()
            started = time.monotonic() - max(0.0, time.time() - wall)
            self.target = process.Child(adopt.pid, started, None, own=False)
            if self.daemon_pid is None:  # adopted by a new start: nobody else watches it
                self.target.pidfd = adoption.watch(adopt.pid)
            template = self._carried_over()
            if why == PUMP_START:  # adopted by a new start: the group's first target
                template = supervise.replace(template, spawned=1)
            self.machine = supervise.adopt(adopt.pid, started, template)
            self.ready.spawned(started, *self._was_ready(adopt.pid))
            return ()
        self.machine = self._carried_over()
        try:
            self.target = self._spawn()
        except OSError as exc:
            if why == PUMP_START:
                raise
            self.machine, actions = supervise.step(
                self.spec.policy, self.machine, supervise.SpawnFailed(str(exc)),
                time.monotonic(), draw())
            return actions
        self.machine, actions = supervise.step(self.spec.policy, self.machine,
                                               supervise.Spawned(self.target.pid),
                                               time.monotonic(), draw())
        return actions  # the monitors' hook of the new target, carried out by _set_up

    def _kill_own_target(self) -> None:
        """A failed start: the target we spawned goes with it."""
        if self.target is not None and self.target.own:
            self.target.kill_group(signal.SIGKILL)
            while self.target.reap(time.monotonic()) is None:
                time.sleep(0.001)  # SIGKILL was sent: the reap is a matter of microseconds

    def _set_up(self, hooks: tuple[supervise.Action, ...]) -> None:
        """The monitors' ``setup`` (and ``adopt``), then what a predecessor left, then the
        ``hooks`` of a target spawned already (the machine chose spawn or respawn)."""
        assert self.host is not None
        adopt = self.args.adopt
        why = self.args.why
        message = rolelog.tail(self.args.message_file)
        self.host.call("setup", strict=why == PUMP_START, why=why, message=message)
        if adopt is not None:
            self.host.call("adopt", pid=adopt.pid)
        self._check_daemon()
        self.streams.recover()
        self._act(hooks)

    def _answer(self) -> None:
        """Up: the status written; the daemon and the caller told once the target is ready
        (``_ready_changed``: it may come later, or not at all)."""
        if not self.args.fresh:  # a successor writes it once its daemon is up
            self._write_status()
        if self.daemon_pid is None:
            self.control = control.Server(self.directory / SOCKET_NAME, self.selector,
                                          self.command)
            dirwatch.keep(self.directory, self.selector, self.lock_fd, self._dir_restored)
        self.answered = True
        if not self.pending or self.ready.ready:
            self._started()
        if self.daemon_pid is None or self.args.fresh:
            # A fresh interpreter (unattached, development, a pump's successor): its argv
            # is a JSON blob. (A daemon's pump is its fork and was titled there.)
            _linux.set_title(f"immortal: pump {self.directory}")

    def _started(self) -> None:
        """The start is over: the daemon told, then the caller (once the caller has its
        answer, a pump's death is a restart)."""
        self.pending = False
        self.link.tell(Started())
        self.handshake.send(ok=True, target=self.target.pid if self.target else None,
                            adopted=self.args.adopt is not None and self.args.why == PUMP_START)
        self.handshake.close()

    def _ready_changed(self, state: readiness.Readiness) -> None:
        """The current target became ready, or failed to: during a start the caller gets
        its answer, or the start is given up; afterwards, it is recorded (and a time limit
        passed is logged: the restart policy goes on as for any target)."""
        if not self.answered:
            return  # _answer looks at it
        if state.ready:
            self._write_status()  # first: a caller that has its answer reads it
            if self.pending:
                self._started()
        elif state.state == readiness.FAILED:
            if self.pending:
                self._give_up(state.reason or "not ready")
            elif state.exit is None:
                rolelog.report("ready", f"immortal: pump: {state.reason}\n")
                self._write_status()

    def _give_up(self, reason: str) -> None:
        """A start whose target will not be ready: the group stops (TERM, grace, KILL), and
        its end (``_fail_start``) answers the caller."""
        if self.failure is None:
            self.failure = reason
        self._feed(supervise.Stop(self.spec.stop_timeout, f"start failed: {reason}"))

    def _fail_start(self) -> None:
        """The group ended before its target was ready: the caller gets why, with the
        target's exit status and its last lines on stderr."""
        self.pending = False
        last = self.machine.last_exit
        reason = self.failure or (f"it was stopped before its target was ready "
                                  f"({self.machine.reason or 'stop'})")
        current = self.ready.current
        if last is not None and (current is None or current.exit is None):
            reason += f"; it was stopped: {last}"  # how it ended: the time limit's stop
        self.handshake.send(error="StartError", message=reason,
                            status=last.to_json() if last else None,
                            stderr=list(current.stderr) if current else [])
        self.handshake.close()

    def _was_ready(self, pid: int) -> tuple[bool, str | None]:
        """Whether an adopted target was ready, and its last notify STATUS text: one a new
        start adopts ran before (ready); a successor's, as the last status.json says."""
        if self.args.why == PUMP_START:
            return True, None
        previous = self.previous or {}
        same = (previous.get("pids") or {}).get("target") == pid
        return same and bool(previous.get("ready")), \
            previous.get("notify_status") if same else None

    def _carried_over(self) -> supervise.State:
        """The counters of the group so far, as the previous pump left them."""
        if self.args.why == PUMP_START:
            return supervise.State()
        previous = self.previous or {}
        last = previous.get("last_exit")
        return supervise.carried_over(int(previous.get("restarts", 0)),
                                      int(previous.get("spawned", 0)),
                                      ExitStatus.from_json(last) if last else None)

    def _fail(self, kind: str, message: str) -> int:
        self.handshake.send(error=kind, message=message)
        rolelog.report("failed", f"immortal: pump: {message}\n")
        return 1

    # What the running pump provides (pump.Pump).
    def _take_signals(self) -> None:
        raise NotImplementedError

    def _check_daemon(self) -> None:
        raise NotImplementedError

    def _watch(self) -> None:
        raise NotImplementedError

    def _act(self, actions: tuple[supervise.Action, ...]) -> None:
        raise NotImplementedError

    def _feed(self, event: supervise.Event) -> None:
        raise NotImplementedError

    def _target_died(self, status: ExitStatus) -> None:
        raise NotImplementedError

    def _loop(self) -> int:
        raise NotImplementedError

    def _spawn(self) -> process.Child:
        raise NotImplementedError

    def _lines(self, stream: str, block: bytes, offset: int, end: int) -> None:
        raise NotImplementedError

    def _write_status(self) -> None:
        raise NotImplementedError

    def _dir_restored(self) -> None:
        raise NotImplementedError

    def command(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError
