"""The pump: keeps the target alive and relays its output and events to the monitor.

One pump per group at a time, for every instance of each of its programs (``workers``,
``programs``: each program with its own monitors, policy and readiness). Its loop
(``loop.py``) blocks on the targets' pipes and pidfds, the notify socket, the signals and
its lifelines (to the daemon, or to the caller in ``development``); the restart decisions
come from the pure machine in ``supervise.py``, one machine per instance, and each
instance's readiness is its own ``readywatch.ReadyWatch``.

Signals: SIGTERM/SIGINT stop the group (TERM, grace, KILL), SIGHUP restarts the target
(every instance at once; SIGHUP to the daemon rolls, see ``rollout``).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from . import _linux, control, notify, orphans, process, relay, rolelog, supervise
from . import listen as listening
from .detach import detach
from .events import PUMP_START, READER_GONE, ExitStatus
from .loop import draw
from .pumpcontrol import PumpControl
from .pumphosts import Hosts
from .pumplinks import Lifelines
from .pumpops import Operations
from .pumpstart import PumpStart
from .pumptakeover import TakeOver
from .rollout import Rollout
from .rollsignals import RollSignals
from .rollresume import RollResume
from .readywatch import route
from .roles import Exited, Finish, HandOver, RoleArgs
from .scaling import Scaling
from .spec import Spec, Strategy
from .state import SOCKET_NAME, write_json
from .workers import Instance, Run, group_phase

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

#: reads of one pipe per wake-up at most, while it stays full: its size, then the other fds
READS_PER_WAKE = relay.PIPE_SIZE // relay.READ_SIZE


class Pump(Hosts, TakeOver, Lifelines, PumpStart, Scaling, PumpControl, Rollout,
           RollSignals, RollResume, Operations):
    """The running pump: carries out each instance's machine's actions, and turns what happens
    (a target's death, output, signals, control requests, its daemon's death) into
    events of the instance they are about, or of all (a stop). Its parts: ``Hosts``
    (each program's monitors), ``TakeOver`` (its daemon's death), ``Lifelines`` (what
    its daemon and its caller say), ``PumpStart`` (its state, its start-up), ``Scaling``
    (a scale, an apply), ``PumpControl`` (control requests), ``Rollout`` (a rolling
    restart), ``RollSignals`` (its signals and deadlines), ``RollResume`` (one a dead
    pump left), ``Operations`` (each program's watches of files and memory)."""

    # ----------------------------------------------------------------- the loop
    def _take_signals(self) -> None:
        """Our signals, carried out by the loop (until it runs, they wait)."""
        self.loop.take_signals({
            signal.SIGTERM: lambda: self._stop_all("stop"),
            signal.SIGINT: lambda: self._stop_all("stop"),
            signal.SIGHUP: lambda: self._feed_all(
                lambda inst: supervise.Restart(inst.run.spec.stop_timeout)),
            signal.SIGCHLD: self._on_child,
        })

    def _watch(self) -> None:
        """What the loop waits on, and its chores: the control clients' deadlines, the
        dropped lines to tell (backpressure "drop"), the machines' Ticks."""
        loop = self.loop
        for inst in self.instances:
            self._watch_streams(inst)
        assert self.streams is not None
        if self.streams.channel_sock is not None:
            loop.watch(self.streams.channel_sock, self._on_channel)
        if self.streams.notify_sock is not None:
            loop.watch(self.streams.notify_sock, self._on_notify)
        if self.link.sock is not None:
            loop.watch(self.link.sock, self._on_daemon)
        if self.parent_fd is not None:
            loop.watch(self.parent_fd, self._on_parent)
        if self.spec.strategy == Strategy.DEVELOPMENT and _linux.reader_watchable(1):
            # Its reader gone ('| head') is an error on a pipe's write end, never readable
            # else: seen at once, not at the next echo, which a monitor that shows the
            # output itself (``terminal``) leaves to it.
            loop.watch(1, self._on_reader_gone)
        for inst in self.instances:
            self._watch_target(inst)
        loop.at(lambda: self.control.next_deadline() if self.control else None,
                lambda: self.control.drop_idle() if self.control else None)
        loop.at(self._next_report, self._report_dropped)
        loop.at(self._next_tick, self._ticks)
        loop.at(self._next_ready, self._ready_due)
        loop.at(self.roll_deadline, self.roll_due)
        loop.watch(self.spares.fd, lambda _: self.spares.ready())
        loop.at(lambda: self.spares.retry_at, self.spares.due)
        loop.at(lambda: self.status_file.retry_at, self._write_status)
        for inst in self.instances:
            if inst.streams.spare is not None:
                self.spares.add(inst.streams)

    def _watch_streams(self, inst: Instance) -> None:
        relays = inst.streams.relays
        self.loop.watch(inst.streams.out_r, lambda fd: self._on_output(relays[0]))
        self.loop.watch(inst.streams.err_r, lambda fd: self._on_output(relays[1]))

    def _next_tick(self) -> float | None:
        """When the first of the machines wants a Tick, or None."""
        due = [inst.deadline for inst in self.instances if inst.deadline is not None]
        return min(due) if due else None

    def _ticks(self) -> None:
        now = time.monotonic()
        for inst in list(self.instances):
            if inst.deadline is not None and inst.deadline <= now:
                self._feed(inst, supervise.Tick())

    def _next_ready(self) -> float | None:
        """When the first of the readiness watches wants the clock (or a probe), or None."""
        due = [at for at in (inst.ready.deadline() for inst in self.instances)
               if at is not None]
        return min(due) if due else None

    def _ready_due(self) -> None:
        now = time.monotonic()
        for inst in list(self.instances):
            at = inst.ready.deadline()
            if at is not None and at <= now:
                inst.ready.due()

    # ----------------------------------------------------------------- main loop
    def _loop(self) -> int:
        self.loop.run()  # until _finish stops it
        self.close_operations()
        if self.control is not None:
            self.control.close()
        if self.daemon_pid is None and self.streams is not None \
                and self.streams.notify_sock is not None:
            notify.remove(self.directory)  # ours: no daemon holds it
        if self.subreaper:
            process.kill_children()  # grandchildren that escaped the target's group
            orphans.end_group(self.directory)  # and those that left our tree
        if self.listen and (self.daemon_pid is None or self.link.sock is None):
            # The group's root (no daemon, or it died while the group ended): the socket
            # files go with the group.
            listening.close(self.listen)
            listening.release(self.spec.listening)
        return 0

    def _on_child(self) -> None:
        if not _linux.HAVE_PIDFD:
            for inst in list(self.instances):
                self._on_target(inst, None)
        if self.subreaper:
            process.reap_strays(self._own_pids())

    def _on_output(self, stream: relay.Relay) -> None:
        # While the target keeps the pipe full, up to a pipe's worth of reads per wake-up:
        # not a turn of the loop (its wait, every deadline asked again) for each.
        for _ in range(READS_PER_WAKE):
            if not stream.read() or not stream.more or self.loop.stopped:
                break
        if stream.echo_gone:
            stream.echo_gone = False
            # A development group ends with its command's output (as 'python app.py |
            # head' does); the foreground's console (a service manager's) is only dropped.
            if self.spec.strategy == Strategy.DEVELOPMENT and self.stopped_for is None:
                self._stop_all(READER_GONE)
        self._report_dropped()

    def _on_reader_gone(self, fd: int) -> None:
        self.selector.unregister(fd)
        if self.stopped_for is None:
            self._stop_all(READER_GONE)

    def _on_channel(self, sock: socket.socket) -> None:
        host = self.instances[0].run.host
        assert host is not None and self.streams is not None
        self.streams.receive(lambda message: host.call("message", message=message))

    def _on_notify(self, sock: socket.socket) -> None:
        route(sock, {**{inst.target.pid: inst.ready for inst in self.instances
                        if inst.target is not None}, **self.roll_watches()})

    def _lines(self, run: Run, k: int, stream: str, block: bytes, offset: int,
               end: int) -> None:
        if run.host is not None:
            run.host.block(stream, block, offset, end, k if len(run.instances) > 1 else None)
        if k < len(run.instances):  # the monitors first: they hold the line by then
            run.instances[k].ready.lines(stream, block)

    def _on_target(self, inst: Instance, fd: object) -> None:
        target = inst.target
        if target is not None and not target.own and self.daemon_pid is None:
            # Adopted by a new start, not our child: its pidfd says it ended, not how.
            status = ExitStatus(pid=target.pid, uptime=time.monotonic() - target.started_at)
            target.dead(status, close=False)
            self._target_died(inst, status)
            return
        if target is None or not target.own:
            return
        reaped = target.reap(time.monotonic(), close=False)
        if reaped is not None:
            self._target_died(inst, reaped)

    def _target_died(self, inst: Instance, status: ExitStatus) -> None:
        host = inst.run.host
        assert host is not None and inst.target is not None
        if self.old_gone(inst, status):  # retired by a roll: its replacement takes over
            return
        self._unwatch_target(inst)
        dead = inst.target.pid
        self.status_file.forget(dead)
        inst.target = None
        inst.streams.drain()
        # A death before readiness during a start gives the start up: every machine stops;
        # but for an exit on a final code, which ends the instance as done.
        inst.ready.exited(status, status.code is not None
                          and status.code in inst.run.spec.policy.final_exit_codes)
        # Decide first, so that the exit event carries the decision (a restart record).
        inst.machine, actions = supervise.step(inst.run.spec.policy, inst.machine,
                                               supervise.Exited(status), time.monotonic(),
                                               draw())
        record = supervise.record(inst.machine, status)
        if self.shown(inst) is not None:
            record = supervise.replace(record, instance=inst.k)
        inst.machine = supervise.replace(inst.machine, last_exit=record)
        self.status_file.last_exit = record
        spawned: process.Child | OSError | None = None
        first = next((a for a in actions if not isinstance(a, supervise.Wake)), None)
        if isinstance(first, supervise.Spawn):
            # An immediate restart: the successor first; telling the daemon and the
            # monitors costs it nothing then. (Its output is read only once this returns,
            # so the monitors still see 'exit' before any line of it.)
            try:
                spawned = self._spawn(inst)
            except OSError as exc:
                spawned = exc
            else:
                # The successor has exec'd and is runnable, maybe on this CPU: let it run
                # before the bookkeeping below.
                os.sched_yield()
        self.link.tell(Exited(dead, inst.k, inst.program))
        host.call("exit", status=record, instance=self.shown(inst))
        self._act(inst, actions, spawned)
        self._write_status()

    def _dir_restored(self, missing: set[str]) -> None:
        """As the group's root: the instance directory, or files of it, were removed and
        ``dirwatch`` put back the lock; put back those of its other files ``missing``."""
        assert self.control is not None
        if SOCKET_NAME in missing:
            self.control.close()
            self.control = control.Server(self.directory / SOCKET_NAME, self.selector,
                                          self.command)
        if "spec.json" in missing:
            try:
                write_json(self.directory / "spec.json", self.spec.to_json())
            except OSError as exc:  # a full disk: the group runs on without it
                rolelog.report("spec", f"immortal: pump: cannot write spec.json: {exc}\n")
        if "status.json" in missing:
            self._write_status()

    # ----------------------------------------------------------------- actions
    def _feed(self, inst: Instance, event: supervise.Event, write: bool = True) -> None:
        inst.machine, actions = supervise.step(inst.run.spec.policy, inst.machine, event,
                                               time.monotonic(), draw())
        self._act(inst, actions)
        if write:
            self._write_status()

    def _feed_all(self, event: supervise.Event | Callable[[Instance], supervise.Event],
                  chosen: list[Instance] | None = None) -> None:
        """``event`` for every instance (or those ``chosen``), all at once: a stop's TERM
        reaches every target before any grace period runs (and a roll's replacements').
        ``event`` may be made for each instance (its program's grace period)."""
        each = event if callable(event) else (lambda inst: event)
        for inst in list(self.instances if chosen is None else chosen):
            if not self.finished:
                self._feed(inst, each(inst), write=False)
        self._write_status()

    def _stop_all(self, reason: str, grace: float | None = None, kill: bool = False) -> None:
        """Every instance stops, each with ``grace``, else its program's own; ``kill``:
        KILLed at once."""
        if self.stopped_for is None:
            self.stopped_for = reason
        if grace is not None:
            self.stop_grace = grace
        self.abort_roll(grace)
        self._feed_all(lambda inst: supervise.Stop(
            inst.run.spec.stop_timeout if grace is None else grace, reason, kill))

    def _rerun(self, inst: Instance, why: str) -> None:
        """A restart of an instance that ended on its own (``supervise.rerunnable``): its
        target is run again."""
        inst.machine, actions = supervise.rerun(inst.machine, why)
        self._act(inst, actions)

    def _act(self, inst: Instance, actions: tuple[supervise.Action, ...],
             spawned: process.Child | OSError | None = None) -> None:
        """Carry out the actions of ``inst``'s machine; ``spawned`` is what the first
        Spawn already gave (see ``_target_died``)."""
        host = inst.run.host
        assert host is not None
        for action in actions:
            if isinstance(action, supervise.Spawn):
                child, spawned = spawned, None
                try:
                    if child is None:
                        inst.target = self._spawn(inst)
                    elif isinstance(child, OSError):
                        raise child
                    else:
                        inst.target = child
                except OSError as exc:
                    spec = inst.run.spec
                    error = process.exec_error(spec.command(), exc, spec.user)
                    rolelog.report("spawn", f"immortal: pump: {error}\n")
                    self._feed(inst, supervise.SpawnFailed(error))
                    continue
                self._watch_target(inst)
                inst.machine, more = supervise.step(
                    inst.run.spec.policy, inst.machine, supervise.Spawned(inst.target.pid),
                    time.monotonic(), draw())
                self._act(inst, more)
            elif isinstance(action, supervise.Hook):
                if inst.target is None:
                    continue
                if action.name == "spawn":
                    host.call("spawn", pid=inst.target.pid, instance=self.shown(inst))
                else:
                    host.call("respawn", pid=inst.target.pid, why=action.why,
                              instance=self.shown(inst))
            elif isinstance(action, supervise.Kill):
                if inst.target is not None:
                    inst.target.kill_group(action.signal)
            elif isinstance(action, supervise.Wake):
                inst.deadline = action.at
            elif isinstance(action, supervise.Finish):
                self.retired(inst.run)  # the last of the instances retiring, maybe
                if all(other.final for other in self.instances) and not self.finished:
                    if self.replacements:  # a roll's, being stopped: _finish once gone
                        self.finish_waiting = action
                    else:
                        self._finish(action)

    def _finish(self, action: supervise.Finish) -> None:
        self.loop.stop()
        if self.keeper is not None:  # the targets are gone: see Keeper.release
            self.keeper.release()
        self.release_operations()
        for run in self.runs.values():
            # The monitors' queues get the stop's grace (a shorter one a stop asked for:
            # the daemon kills a pump that outlives it by a margin), else the program's.
            grace = run.spec.stop_timeout
            self._catch_up(grace if self.stop_grace is None else min(grace, self.stop_grace),
                           run)
        self._report_dropped(force=True)
        phase = self._phase()
        reason = action.reason if phase == supervise.STOPPED else f"fatal: {action.reason}"
        self._write_status()
        for run in self.runs.values():
            self.shut_down(run, reason)
        self.link.tell(Finish())
        if self.pending:
            self._fail_start()

    def _spawn(self, inst: Instance) -> process.Child:
        # The first spawn of a new start first ends what the name's last run left.
        fresh = self.args.why == PUMP_START and not any(
            other.machine.spawned or other.target is not None for other in self.instances)
        child = inst.run.spawner.spawn(inst.k, inst.streams, fresh, self._own_pids())
        inst.ready.spawned(child.started_at)
        return child

    def _watch_target(self, inst: Instance) -> None:
        if inst.target is not None and inst.target.pidfd >= 0:
            self.loop.watch(inst.target.pidfd, lambda fd: self._on_target(inst, fd))
            inst.watched = inst.target.pidfd

    def _unwatch_target(self, inst: Instance) -> None:
        # Before the pidfd is closed: a new pidfd may get the same number.
        if inst.watched >= 0:
            self.selector.unregister(inst.watched)
            inst.watched = -1
        if inst.target is not None:
            inst.target.close()

    # ----------------------------------------------------------------- status
    def _phase(self) -> supervise.Phase:
        return group_phase(inst.machine.phase for inst in self.instances)

    def _write_status(self) -> None:
        self.status_file.write(self._status_data())

    def _status_data(self) -> dict[str, Any]:
        status = self.status_file.record(list(self.runs.values()))
        status.roll = self.roll_info
        status.starting = self.pending
        return status.to_json(stored=True)


def main(spec: Spec, args: RoleArgs, become: Callable[[Spec, RoleArgs], int]) -> int:
    """Run the pump; ``become`` runs the daemon in this process (``succession.become``) if the
    daemon dies and this pump can take its place without an exec."""
    process.role_signals()
    if args.detach:
        detach(args.fds.numbers(), str(Path(spec.directory) / "pump.log"))
    # Our own log when detached or forked by the daemon; the caller's stderr in development.
    own = args.detach or args.daemon_pid is not None
    rolelog.install(str(Path(spec.directory) / "pump.log") if own else None)
    # No daemon above us: we are the group's root, and escaped grandchildren are ours.
    subreaper = _linux.set_subreaper() if args.daemon_pid is None else False
    try:
        return Pump(spec, args, subreaper).run()
    except HandOver as change:  # the daemon died: this process becomes it
        daemon_args = change.args[0]
    return become(spec, daemon_args)
