"""The pump: keeps the target alive and relays its output and events to the monitor.

One pump per group at a time. Its loop (``loop.py``) blocks on the target's pipes, the
target's pidfd, the signals and its lifelines (to the daemon, or to the caller in
``development``); the restart decisions come from the pure machine in ``supervise.py``.

Signals: SIGTERM/SIGINT stop the group (TERM, grace, KILL), SIGHUP restarts the target.
"""

from __future__ import annotations

import errno
import os
import random
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import (_linux, adoption, control, dirwatch, monitoring, orphans, process, relay,
               rolelog, supervise)
from .loop import Loop
from .statusfile import StatusFile
from .streams import Streams
from .detach import Handshake, detach
from .events import DAEMON_RESTART, PUMP_START, ExitStatus
from .spec import Spec, Strategy
from .errors import ImmortalError, NotRunning
from ._linux import is_alive, process_start_time
from .roles import (Adopt, Command, Exited, Finish, HandOver, Hello, Message, Reaped,
                    Rewrite, RoleArgs, Spawning, Started, Target, decode, hand_over)
from .state import SOCKET_NAME, read_json, try_lock, wait_lock, write_json

TARGET_LOCK = "target.lock"
CHANNEL_ENV = "IMMORTAL_CHANNEL_FD"  #: names the target's end of the message channel
ORPHAN_WAIT = 5.0  # how long a spawn waits for a killed orphan to let go of target.lock
MONITOR_GRACE = 1.0  # backpressure "drop": how long monitors may take to catch up at the end


class Pump:
    def __init__(self, spec: Spec, args: RoleArgs, subreaper: bool = False) -> None:
        args = adoption.claim(args)  # unattached, adopting an orphan: its pipes, reopened
        self.spec = spec
        self.args = args
        self.directory = Path(spec.directory)
        fds = args.fds
        self.handshake = Handshake(fds.handshake)
        self.lock_fd: int | None = fds.lock
        self.daemon_pid: int | None = args.daemon_pid
        self.streams = streams = Streams(fds, spec.channel,
                                         spec.strategy == Strategy.DEVELOPMENT, self._lines)
        self.out_r, self.out_w, self.err_r, self.err_w = (  # what a spawn hands the target
            streams.out_r, streams.out_w, streams.err_r, streams.err_w)
        self.channel = streams.channel
        self.lifeline: socket.socket | None = None
        if fds.lifeline is not None:
            self.lifeline = socket.socket(fileno=fds.lifeline)
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

    # ----------------------------------------------------------------- start-up
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

    def _take_signals(self) -> None:
        """Our signals, carried out by the loop (until it runs, they wait)."""
        self.loop.take_signals({
            signal.SIGTERM: lambda: self._feed(supervise.Stop(self.spec.stop_timeout, "stop")),
            signal.SIGINT: lambda: self._feed(supervise.Stop(self.spec.stop_timeout, "stop")),
            signal.SIGHUP: lambda: self._feed(supervise.Restart(self.spec.stop_timeout)),
            signal.SIGCHLD: self._on_child,
        })

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
            return ()
        self.machine = self._carried_over()
        try:
            self.target = self._spawn()
        except OSError as exc:
            if why == PUMP_START:
                raise
            self.machine, actions = supervise.step(
                self.spec.policy, self.machine, supervise.SpawnFailed(str(exc)),
                time.monotonic(), random.random())
            return actions
        self.machine, actions = supervise.step(self.spec.policy, self.machine,
                                               supervise.Spawned(self.target.pid),
                                               time.monotonic(), random.random())
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
        """Up: the status written, the daemon and the caller told."""
        if not self.args.fresh:  # a successor writes it once its daemon is up
            self._write_status()
        if self.daemon_pid is None:
            self.control = control.Server(self.directory / SOCKET_NAME, self.selector,
                                          self.command)
            dirwatch.keep(self.directory, self.selector, self.lock_fd, self._dir_restored)
        # The daemon first: once the caller has its answer, a pump's death is a restart.
        self._tell_daemon(Started())
        self.handshake.send(ok=True, target=self.target.pid if self.target else None,
                            adopted=self.args.adopt is not None and self.args.why == PUMP_START)
        self.handshake.close()
        if self.daemon_pid is None or self.args.fresh:
            # A fresh interpreter (unattached, development, a pump's successor): its argv
            # is a JSON blob. (A daemon's pump is its fork and was titled there.)
            _linux.set_title(f"immortal: pump {self.directory}")

    def _watch(self) -> None:
        """What the loop waits on, and its chores: the control clients' deadlines, the
        dropped lines to tell (backpressure "drop"), the machine's Tick."""
        loop = self.loop
        loop.watch(self.out_r, self._on_stdout)
        loop.watch(self.err_r, self._on_stderr)
        if self.streams.channel_sock is not None:
            loop.watch(self.streams.channel_sock, self._on_channel)
        if self.lifeline is not None:
            loop.watch(self.lifeline, self._on_daemon)
        if self.parent_fd is not None:
            loop.watch(self.parent_fd, self._on_parent)
        self._watch_target()
        loop.at(lambda: self.control.next_deadline() if self.control else None,
                lambda: self.control.drop_idle() if self.control else None)
        loop.at(lambda: self.host.next_report() if self.host else None, self._report_dropped)
        loop.at(lambda: self.deadline, lambda: self._feed(supervise.Tick()))

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

    # ----------------------------------------------------------------- main loop
    def _loop(self) -> int:
        self.loop.run()  # until _finish stops it
        if self.control is not None:
            self.control.close()
        if self.subreaper:
            process.kill_children()  # grandchildren that escaped the target's group
            orphans.end_group(self.directory)  # and those that left our tree
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

    def _lines(self, stream: str, block: bytes, offset: int, end: int) -> None:
        assert self.host is not None
        self.host.block(stream, block, offset, end)

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
        data = control.receive(sock)
        if data is None:
            return
        if not data:
            self._daemon_died()
            return
        message = decode(data)
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
        # Decide first, so that the exit event carries the decision (a restart record).
        self.machine, actions = supervise.step(self.spec.policy, self.machine,
                                               supervise.Exited(status), time.monotonic(),
                                               random.random())
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
        self._tell_daemon(Exited(dead))
        self.host.call("exit", status=record)
        self._act(actions, spawned)
        self._write_status()

    def _check_daemon(self) -> None:
        """During start-up (long with a slow monitor), act on the daemon's death at once
        rather than at the end of it: the target would have no other supervisor."""
        if self.lifeline is None or self.args.why == PUMP_START:
            return  # a first start answers its caller first
        try:
            data = self.lifeline.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._daemon_died()

    def _daemon_died(self) -> None:
        """The daemon is gone: become the daemon, keeping the target and its pipes.

        Same pid, so the target stays our child. Single-threaded, this process becomes the
        daemon in place (``daemon.become``), at once: what is in the pipes, and what it
        read but did not deliver (the journal), is delivered by the pump the new daemon
        forks. With a monitor's threads it ``exec``s instead, after a fresh successor pump
        is started (``roles.hand_over``).
        """
        assert self.lifeline is not None
        if self.lifeline.fileno() in self.selector.get_map():
            self.selector.unregister(self.lifeline)
        if supervise.ending(self.machine):
            self.streams.drain(final=False)
            self.lifeline = None
            return
        # What this process becomes (so that ps never shows two pumps in the hand-over).
        _linux.set_title(f"immortal: daemon {self.directory}")
        adopt = None
        if self.target is not None:
            adopt = Adopt(self.target.pid, self.target.started_wall)
            self.target.close()
        elif self.args.adopt is not None:  # still starting: the target we were to adopt
            adopt = Adopt(self.args.adopt.pid, self.args.adopt.started_wall)
        fds = self.streams.fds(self.lock_fd)
        if _linux.threads() == 1:
            # No thread of a monitor's to carry along: become the daemon in this process
            # (see main), without an exec's start-up, while we alone supervise.
            self.loop.close()
            raise HandOver(RoleArgs("daemon", str(self.directory), DAEMON_RESTART,
                                    fds=fds, adopt=adopt))
        self.streams.drain(final=False)
        # The monitors' threads take what they were given before the successor starts (it
        # would hand the same lines over again); not longer: nobody reads the pipes meanwhile.
        self._catch_up(MONITOR_GRACE)
        self._write_status()
        sys.stderr.flush()
        hand_over(str(self.directory), adopt, fds)

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
                                               time.monotonic(), random.random())
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
                    time.monotonic(), random.random())
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
        self._tell_daemon(Finish())

    def _catch_up(self, timeout: float) -> None:
        """Backpressure "drop": the monitors' queues get ``timeout`` seconds to empty."""
        assert self.host is not None
        for name in self.host.catch_up(timeout):
            sys.stderr.write(f"immortal: pump: monitor {name!r} had not taken all its lines "
                             f"{timeout} s later; the rest were dropped\n")

    def _spawn(self) -> process.Child:
        """Spawn a target holding ``target.lock``: never two targets of one group.

        The lock is the kernel's backstop: while any earlier target (or a descendant that
        inherited its fd) lives, the lock is held and nothing new is spawned.
        """
        # A new start of the name first ends what its last run left (its supervisors are
        # gone: we hold the group lock), found by token even if it closed target.lock.
        if self.machine.spawned == 0 and self.args.why == PUMP_START:
            self._kill_orphan(fresh=True)
        lock = try_lock(self.directory / TARGET_LOCK)
        if lock is None and self._kill_orphan():
            lock = wait_lock(self.directory / TARGET_LOCK, ORPHAN_WAIT)
        if lock is None:
            raise OSError(errno.EBUSY, "the previous target's descendants still hold "
                          f"{TARGET_LOCK}; the spawn waits until they are gone")
        try:
            env = self.spec.target_env()
            # The read ends too: if both supervisors die, the pipes outlive them while the
            # target lives, so its writes block on a full pipe instead of killing it (EPIPE).
            keep = [lock, self.out_r, self.err_r]
            if self.channel:
                env[CHANNEL_ENV] = str(self.channel[1])
                keep.append(self.channel[1])
            # The daemon hears of every target before anything that can fail or take time
            # (a hook, a status write): a pump that dies after the spawn leaves a target the
            # daemon hands to the next pump, never one nobody knows about. 'spawning' covers
            # a death inside the spawn itself (see orphans.find_spawned).
            self._tell_daemon(Spawning(_linux.boot_ticks()))
            try:
                child = process.spawn(self.spec.command(), env=env, cwd=self.spec.cwd,
                                      umask=self.spec.umask, stdout=self.out_w,
                                      stderr=self.err_w, pass_fds=tuple(keep))
            except OSError:
                self._tell_daemon(Spawning(None))
                raise
            self._tell_daemon(Target(child.pid, child.started_wall))
            return child
        finally:
            os.close(lock)  # the target's copy holds it now

    def _kill_orphan(self, fresh: bool = False) -> bool:
        """Kill what supervisors that all died left running (after proving it).

        ``fresh`` (a new start of the group): every process carrying the group's token,
        each proved by its start time (``orphans``). Otherwise, or where no token can be
        read, the target ``status.json`` recorded, proved by pid and start time.
        """
        found = orphans.find(self.directory) if fresh else []
        if not found:
            previous = read_json(self.directory / "status.json") or {}
            pid = (previous.get("pids") or {}).get("target")
            started = (previous.get("start_times") or {}).get("target")
            if not pid or (self.target is not None and self.target.pid == pid):
                return False
            if started is None or not is_alive(pid, started):
                return False
            found = [(pid, started)]
        pids = " ".join(str(pid) for pid, _ in found)
        rolelog.report("orphan", f"immortal: pump: killing {pids} left running by a dead "
                       "group (supervisors gone)\n")
        return bool(orphans.end(found, ORPHAN_WAIT))

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

    def _tell_daemon(self, message: Message) -> None:
        if self.lifeline is None:
            return
        try:
            self.lifeline.send(message.to_bytes())
        except OSError:
            pass  # the daemon is gone; its lifeline EOF is handled in the loop

    # ----------------------------------------------------------------- status
    def _write_status(self) -> None:
        self.status_file.write(self._status_data())

    def _status_data(self) -> dict[str, Any]:
        m = self.machine
        backoff = m.deadline if m.phase == supervise.BACKOFF else None
        return self.status_file.record(m, self.target, self.host, backoff).to_json(stored=True)


def main(spec: Spec, args: RoleArgs, become: Callable[[Spec, RoleArgs], int]) -> int:
    """Run the pump; ``become`` runs the daemon in this process (``daemon.become``) if the
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
