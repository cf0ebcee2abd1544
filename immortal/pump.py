"""The pump: keeps the target alive and relays its output and events to the monitor.

One pump per group at a time. Its loop (``loop.py``) blocks on the target's pipes, the
target's pidfd, the signals and its lifelines (to the daemon, or to the caller in
``development``); the restart decisions come from the pure machine in ``supervise.py``.

Signals: SIGTERM/SIGINT stop the group (TERM, grace, KILL), SIGHUP restarts the target.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _linux, control, notify, orphans, process, rolelog, supervise
from .detach import detach
from .errors import ImmortalError, NotRunning
from .events import PUMP_START, ExitStatus
from .link import take_over
from .loop import draw
from .pumpstart import PumpStart
from .records import replace
from . import listen as listening
from .roles import Adopt, Command, Exited, Finish, HandOver, Hello, Reaped, Rewrite, RoleArgs
from .spec import Spec
from .state import SOCKET_NAME, write_json

MONITOR_GRACE = 1.0  # backpressure "drop": how long monitors may take to catch up at the end


class Pump(PumpStart):
    """The running pump: carries out the machine's actions, and turns what happens (a
    target's death, output, signals, control requests, its daemon's death) into events."""

    # ----------------------------------------------------------------- the loop
    def _take_signals(self) -> None:
        """Our signals, carried out by the loop (until it runs, they wait)."""
        self.loop.take_signals({
            signal.SIGTERM: lambda: self._feed(supervise.Stop(self.spec.stop_timeout, "stop")),
            signal.SIGINT: lambda: self._feed(supervise.Stop(self.spec.stop_timeout, "stop")),
            signal.SIGHUP: lambda: self._feed(supervise.Restart(self.spec.stop_timeout)),
            signal.SIGCHLD: self._on_child,
        })

    def _watch(self) -> None:
        """What the loop waits on, and its chores: the control clients' deadlines, the
        dropped lines to tell (backpressure "drop"), the machine's Tick."""
        loop = self.loop
        loop.watch(self.streams.out_r, self._on_stdout)
        loop.watch(self.streams.err_r, self._on_stderr)
        if self.streams.channel_sock is not None:
            loop.watch(self.streams.channel_sock, self._on_channel)
        if self.streams.notify_sock is not None:
            loop.watch(self.streams.notify_sock, self._on_notify)
        if self.link.sock is not None:
            loop.watch(self.link.sock, self._on_daemon)
        if self.parent_fd is not None:
            loop.watch(self.parent_fd, self._on_parent)
        self._watch_target()
        loop.at(lambda: self.control.next_deadline() if self.control else None,
                lambda: self.control.drop_idle() if self.control else None)
        loop.at(lambda: self.host.next_report() if self.host else None, self._report_dropped)
        loop.at(lambda: self.deadline, lambda: self._feed(supervise.Tick()))
        loop.at(self.ready.deadline, self.ready.due)

    # ----------------------------------------------------------------- main loop
    def _loop(self) -> int:
        self.loop.run()  # until _finish stops it
        if self.control is not None:
            self.control.close()
        if self.daemon_pid is None and self.streams.notify_sock is not None:
            notify.remove(self.directory)  # ours: no daemon holds it
        if self.subreaper:
            process.kill_children()  # grandchildren that escaped the target's group
            orphans.end_group(self.directory)  # and those that left our tree
        if self.listen and (self.daemon_pid is None or self.link.sock is None):
            # The group's root (no daemon, or it died while the group ended): the socket
            # files go with the group.
            listening.close(self.listen)
            listening.release(self.spec.listen)
        return 0

    def _on_child(self) -> None:
        if not _linux.HAVE_PIDFD:
            self._on_target(None)
        if self.subreaper:
            keep = {self.target.pid} if self.target is not None else set()
            process.reap_strays(keep)

    def _on_stdout(self, fd: int) -> None:
        self.streams.relays[0].read()
        self._report_dropped()

    def _on_stderr(self, fd: int) -> None:
        self.streams.relays[1].read()
        self._report_dropped()

    def _report_dropped(self, force: bool = False) -> None:
        """Backpressure "drop": tell each monitor how many of its lines were dropped, once
        a second."""
        assert self.host is not None
        if self.host.report_dropped(force):
            self._write_status()

    def _on_channel(self, sock: socket.socket) -> None:
        assert self.host is not None
        host = self.host
        self.streams.receive(lambda message: host.call("message", message=message))

    def _on_notify(self, sock: socket.socket) -> None:
        self.ready.on_notify(self.target.pid if self.target is not None else None)

    def _lines(self, stream: str, block: bytes, offset: int, end: int) -> None:
        assert self.host is not None
        self.host.block(stream, block, offset, end)
        self.ready.lines(stream, block)  # the monitors first: they hold the line by then

    def _on_target(self, fd: object) -> None:
        if self.target is not None and not self.target.own and self.daemon_pid is None:
            # Adopted by a new start, not our child: its pidfd says it ended, not how.
            status = ExitStatus(pid=self.target.pid,
                                uptime=time.monotonic() - self.target.started_at)
            self.target.dead(status, close=False)
            self._target_died(status)
            return
        if self.target is None or not self.target.own:
            return
        reaped = self.target.reap(time.monotonic(), close=False)
        if reaped is not None:
            self._target_died(reaped)

    def _on_daemon(self, sock: socket.socket) -> None:
        gone, message = self.link.receive()
        if gone:
            self._daemon_died()
            return
        # Hello: the daemon we were started for is up (hand_over); Rewrite: it put the
        # instance directory back.
        if isinstance(message, (Hello, Rewrite)):
            self._write_status()
        elif isinstance(message, Command):
            try:
                self.command(message.request)
            except ImmortalError as exc:
                rolelog.report("command", f"immortal: pump: {message.request['cmd']}: "
                                          f"{exc}\n")
        elif isinstance(message, Reaped) and message.pid and self.target is not None \
                and not self.target.own and message.pid == self.target.pid:
            self.target.dead(message.status)
            self._target_died(message.status)

    def _on_parent(self, fd: int) -> None:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            return
        if not data:
            self.selector.unregister(fd)
            self._feed(supervise.Stop(self.spec.stop_timeout, "caller exited"))

    def _target_died(self, status: ExitStatus) -> None:
        assert self.host is not None and self.target is not None
        self._unwatch_target()
        dead = self.target.pid
        self.status_file.forget(dead)
        self.target = None
        self.streams.drain()
        # A death before readiness during a start gives the start up: the machine stops.
        self.ready.exited(status)
        # Decide first, so that the exit event carries the decision (a restart record).
        self.machine, actions = supervise.step(self.spec.policy, self.machine,
                                               supervise.Exited(status), time.monotonic(),
                                               draw())
        record = supervise.record(self.machine, status)
        self.machine = supervise.replace(self.machine, last_exit=record)
        spawned: process.Child | OSError | None = None
        first = next((a for a in actions if not isinstance(a, supervise.Wake)), None)
        if isinstance(first, supervise.Spawn):
            # An immediate restart: the successor first; telling the daemon and the
            # monitors costs it nothing then. (Its output is read only once this returns,
            # so the monitors still see 'exit' before any line of it.)
            try:
                spawned = self._spawn()
            except OSError as exc:
                spawned = exc
            else:
                # The successor has exec'd and is runnable, maybe on this CPU: let it run
                # before the bookkeeping below.
                os.sched_yield()
        self.link.tell(Exited(dead))
        self.host.call("exit", status=record)
        self._act(actions, spawned)
        self._write_status()

    def _check_daemon(self) -> None:
        """During start-up (long with a slow monitor), act on the daemon's death at once
        rather than at the end of it: the target would have no other supervisor. A first
        start answers its caller first."""
        if self.args.why != PUMP_START and self.link.gone():
            self._daemon_died()

    def _daemon_died(self) -> None:
        """The daemon is gone: become the daemon, keeping the target and its pipes
        (``link.take_over``); a group that is ending just ends."""
        assert self.link.sock is not None
        if self.link.sock.fileno() in self.selector.get_map():
            self.selector.unregister(self.link.sock)
        if self.pending and self.answered:
            self._give_up("its daemon died during the start")
        if supervise.ending(self.machine):
            self.streams.drain(final=False)
            self.link.sock = None
            return
        adopt = None
        if self.target is not None:
            adopt = Adopt(self.target.pid, self.target.started_wall)
            self.target.close()
        elif self.args.adopt is not None:  # still starting: the target we were to adopt
            adopt = Adopt(self.args.adopt.pid, self.args.adopt.started_wall)
        fds = replace(self.streams.fds(self.lock_fd), listen=self.listen)
        take_over(str(self.directory), adopt, fds, self.loop.close, self._settle)

    def _settle(self) -> None:
        """Before an exec into the daemon: the monitors' threads take what they were given
        (the successor would hand the same lines over again); not longer: nobody reads the
        pipes meanwhile."""
        self.streams.drain(final=False)
        self._catch_up(MONITOR_GRACE)
        self._write_status()

    def _dir_restored(self) -> None:
        """As the group's root: the instance directory was removed and made again
        (``dirwatch``, which took the lock anew); put back its other files."""
        assert self.control is not None
        self.control.close()
        self.control = control.Server(self.directory / SOCKET_NAME, self.selector,
                                      self.command)
        write_json(self.directory / "spec.json", self.spec.to_json())
        self._write_status()

    # ----------------------------------------------------------------- control
    def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out a control request (checked by ``control.check_request``)."""
        cmd = request["cmd"]
        grace = request.get("timeout", self.spec.stop_timeout)
        if cmd == "status":
            return {"status": self._status_data()}
        if cmd == "stop":
            self._feed(supervise.Stop(float(grace), "stop"))
        elif cmd == "restart":
            restart = supervise.Restart(float(grace))
            refused = supervise.refusal(self.machine, restart)
            if refused is not None:
                raise NotRunning(refused)
            self._feed(restart)
        elif cmd == "signal":
            if self.target is None:
                raise NotRunning(f"no target is running (state {self.machine.phase})")
            self.target.kill_group(request["signal"])
        elif cmd == "reopen":
            assert self.host is not None
            self.host.call("reopen")
        return {}

    # ----------------------------------------------------------------- actions
    def _feed(self, event: supervise.Event) -> None:
        self.machine, actions = supervise.step(self.spec.policy, self.machine, event,
                                               time.monotonic(), draw())
        self._act(actions)
        self._write_status()

    def _act(self, actions: tuple[supervise.Action, ...],
             spawned: process.Child | OSError | None = None) -> None:
        """Carry out the machine's actions; ``spawned`` is what the first Spawn already
        gave (see ``_target_died``)."""
        assert self.host is not None
        for action in actions:
            if isinstance(action, supervise.Spawn):
                child, spawned = spawned, None
                try:
                    if child is None:
                        self.target = self._spawn()
                    elif isinstance(child, OSError):
                        raise child
                    else:
                        self.target = child
                except OSError as exc:
                    error = process.exec_error(self.spec.command(), exc)
                    rolelog.report("spawn", f"immortal: pump: {error}\n")
                    self._feed(supervise.SpawnFailed(error))
                    continue
                self._watch_target()
                self.machine, more = supervise.step(
                    self.spec.policy, self.machine, supervise.Spawned(self.target.pid),
                    time.monotonic(), draw())
                self._act(more)
            elif isinstance(action, supervise.Hook):
                if self.target is None:
                    continue
                if action.name == "spawn":
                    self.host.call("spawn", pid=self.target.pid)
                else:
                    self.host.call("respawn", pid=self.target.pid, why=action.why)
            elif isinstance(action, supervise.Kill):
                if self.target is not None:
                    self.target.kill_group(action.signal)
            elif isinstance(action, supervise.Wake):
                self.deadline = action.at
            elif isinstance(action, supervise.Finish):
                self._finish(action)

    def _finish(self, action: supervise.Finish) -> None:
        assert self.host is not None
        self.loop.stop()
        self._catch_up(self.spec.stop_timeout)
        self._report_dropped(force=True)
        reason = action.reason if action.phase == supervise.STOPPED else f"fatal: {action.reason}"
        self._write_status()
        self.host.call("shutdown", reason=reason)
        for name in self.host.flush(MONITOR_GRACE):
            sys.stderr.write(f"immortal: pump: monitor {name!r} is still busy; it gets no "
                             "more calls\n")
        self.link.tell(Finish())
        if self.pending:
            self._fail_start()

    def _catch_up(self, timeout: float) -> None:
        """Backpressure "drop": the monitors' queues get ``timeout`` seconds to empty."""
        assert self.host is not None
        for name in self.host.catch_up(timeout):
            sys.stderr.write(f"immortal: pump: monitor {name!r} had not taken all its lines "
                             f"{timeout} s later; the rest were dropped\n")

    def _spawn(self) -> process.Child:
        fresh = self.machine.spawned == 0 and self.args.why == PUMP_START
        child = self.spawner.spawn(fresh, self.target.pid if self.target else None)
        self.ready.spawned(child.started_at)
        return child

    def _watch_target(self) -> None:
        if self.target is not None and self.target.pidfd >= 0:
            self.loop.watch(self.target.pidfd, self._on_target)
            self.watched = self.target.pidfd

    def _unwatch_target(self) -> None:
        # Before the pidfd is closed: a new pidfd may get the same number.
        if self.watched >= 0:
            self.selector.unregister(self.watched)
            self.watched = -1
        if self.target is not None:
            self.target.close()

    # ----------------------------------------------------------------- status
    def _write_status(self) -> None:
        self.status_file.write(self._status_data())

    def _status_data(self) -> dict[str, Any]:
        m = self.machine
        backoff = m.deadline if m.phase == supervise.BACKOFF else None
        status = self.status_file.record(m, self.target, self.host, backoff)
        status.ready = self.ready.ready and self.target is not None
        status.notify_status = self.ready.notice
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
