"""The daemon: keeps the pump alive and holds what must outlive a pump.

It runs no plugin code, so the process that holds everything is the least likely to
crash. It holds the instance lock and both ends of the target's stdout/stderr pipes, and
it is a child subreaper: when a pump dies, the target is re-parented to the daemon, which
starts a new pump that adopts the target (same pid, same pipes, nothing lost that was still
in the pipe), and reaps the target for that pump when it dies.

Its signals: ``daemonsignals``.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

from . import (_linux, adoption, control, dirwatch, forking, holder, jobstop, orphans, process,
               rolelog, stall, supervise)
from .detach import Handshake
from .events import DAEMON_RESTART, PUMP_RESTART, ExitStatus
from .loop import Loop
from .ledger import Ledger
from .relay import open_journal
from .spec import Spec
from ._linux import process_start_time
from .kept import KeptTargets
from .keptfiles import KeptFiles
from .holder import PAUSE
from .daemoncontrol import OVERRULED, Answering
from .daemonhold import Holding
from .daemonsignals import Signals
from .daemonscale import Scaling
from .roles import (Command, Finish, Hello, Message, Retired, Rewrite, RoleArgs,
                    Spare, Started, Target, decode, split_adopts)
from .state import SOCKET_NAME, read_json, write_stopped

SPARE_FDS = 4  #: the files a ``Spare`` comes with: an instance's spare pipes, both ends

# The daemon's policies for its pump (see supervise.PumpPolicy). A pump that lived a second
# restarts at once; quicker deaths, and failed forks, back off from 0.05 s, doubling.
PUMP_ALONE = supervise.PumpPolicy(min_uptime=1.0, backoff_initial=0.05, backoff_max=5.0)
# While a target lives, no long wait with one supervisor: a lower cap, a pump killed from
# outside replaced at once, and a stop with no pump to carry it out gets one (once only:
# a pump that dies again during the stop, as one a monitor kills, ends the group).
PUMP_WITH_TARGET = supervise.replace(PUMP_ALONE, backoff_max=0.5, killed_at_once=True,
                                     stop_spawns=1)
# A pump that finished, or one of a group that never started: its end is the group's.
PUMP_LAST = supervise.replace(PUMP_ALONE, restart=False)


class Daemon(Holding, Scaling, Signals, Answering):
    def __init__(self, spec: Spec, args: RoleArgs) -> None:
        # a new start adopting an orphan: its pipes, reopened; or a dead group's files
        args = adoption.claim(args, spec)
        self.spec = spec
        self.directory = Path(spec.directory)
        fds = args.fds
        self.handshake = Handshake(fds.handshake)  # kept until the first pump ends
        self.began = _linux.boot_ticks()  #: when this daemon started (``_end``)
        #: the target a new start adopts (an orphan of the name), told to its caller
        self.first_adopt = args.adopt.pid if args.adopt is not None else None
        self.lock_fd = fds.lock
        # Each instance's pipes and journal, the channel, the notify and listen sockets.
        self.files = KeptFiles(fds, spec)
        self.why: str = args.why
        self.leftover = args.leftover  # for the first pump alone (``adoption.leftover``)
        self.targets = KeptTargets(args.adopts(), self.files.keys())
        self.pump: forking.ForkedPump | None = None
        self.pump_started = 0.0
        self.pump_sock: socket.socket | None = None
        # The pump's supervision: the machine decides, the daemon carries out. A Spawn is
        # carried out by the loop (``due``), with the role's why and message of ``next_start``.
        self.machine = supervise.State()
        self.due: supervise.Spawn | None = None
        self.next_start: tuple[str, str | None] = (self.why, None)
        self.fork_failures = 0  # in a row, for the log only
        self.stop_request: Command | None = None  # passed on to the pump that stops
        self.stop_by_signal = False  # passed on as SIGTERM rather than as the request
        self.restart_asked = False  # by a signal (SIGHUP, SIGCONT), carried out after it
        self.hangup = False  # a SIGHUP among them: the operator's, said if refused
        self.started = False  # the first pump reported success: the caller has its answer
        self.finished = False  # the pump said the group is over
        self.loop = Loop(selectors.DefaultSelector())
        self.keeper: dirwatch.Keeper | None = None
        self.selector = self.loop.selector
        if args.pump and fds.pump is not None:  # the successor our predecessor started
            self.pump = forking.ForkedPump(args.pump)
            self.pump_sock = socket.socket(fileno=fds.pump)
            self.pump_sock.set_inheritable(False)
            self.pump_started = time.monotonic()
            self.machine = supervise.adopt(args.pump, self.pump_started)
            self.loop.watch(self.pump_sock, self._on_pump_message)

    @property
    def restart_deadline(self) -> float | None:
        """When the pump's supervision wants the loop back (0.0: at once), or None."""
        return 0.0 if self.due is not None else self.machine.deadline

    def run(self) -> int:
        try:
            return self._serve()
        except forking.Unwind:
            # Raised in a pump forked from this daemon, which becomes the daemon: here this
            # object is the dead daemon, and its files (on /dev/null in the pump) go.
            self._let_go()
            raise

    def _let_go(self) -> None:
        """Close this daemon's own files, without any other clean-up (no socket path
        removed, no status changed): in a pump forked from it, their numbers are on
        /dev/null and nothing else owns them. Not the group's files: the pump holds those."""
        control_server = getattr(self, "control", None)
        if control_server is not None:
            control_server.abandon()
        if self.keeper is not None:
            self.keeper.close()
        watch = getattr(self, "stall", None)
        if watch is not None:
            watch.abandon()
        if self.pump_sock is not None:
            self.pump_sock.close()
        for target in self.targets:
            if target.stranger >= 0:
                os.close(target.stranger)
                target.stranger = -1
        self.loop.close()

    def _serve(self) -> int:
        self.handshake.send(role="daemon", pid=os.getpid(),
                            start_time=process_start_time(os.getpid()))
        self.loop.take_signals({signal.SIGTERM: self._on_stop_signal,
                                signal.SIGINT: self._on_stop_signal,
                                signal.SIGHUP: self._on_hangup, signal.SIGCHLD: self._reap,
                                signal.SIGCONT: self._on_continue})
        self.job_stops = jobstop.take()
        self.loop.at(lambda: 0.0 if self.restart_asked else None, self._restart_asked)
        pipes, ledgers, busy = self._watched()
        self.stall = stall.Watch(pipes, ledgers, [], self.directory, busy=busy)
        self.loop.watch(self.stall, lambda _: self.stall.ready())
        if self.why == DAEMON_RESTART:
            self.started = True
            self._watch_stranger()  # first: a pump reaped below must not think it gone
            self._reap()  # the target, or the successor pump, may have died meanwhile
            if self.pump_sock is not None:
                # The successor writes its status once we are up: a group reads as whole
                # only when its daemon can reap again.
                self._tell_pump(Hello())
        elif any(target.pid is not None for target in self.targets):
            self._watch_stranger()  # an orphan adopted by a new start: not our child
        self.control = control.Server(self.directory / SOCKET_NAME, self.selector,
                                      self._command)
        self.keeper = dirwatch.keep(self.directory, self.loop, self.lock_fd,
                                    self._dir_restored)
        _linux.set_title(self.spec.title("daemon"))
        # The holder first: a target the first pump spawns (one that closes every inherited
        # fd) must never have pipes that only the two supervisors read.
        self._hold()
        if self.pump is None and self.machine == supervise.State():
            self._feed(supervise.initial()[1])
            self._start_pump()  # the first pump, at once
        if PAUSE:
            holder.pause_at("pump")  # a test hook: unset in use
        if PAUSE:
            holder.pause_at("others")
        if self.started:
            self._end_other_holders()
        # else once the first pump has started the group: a start that fails leaves the
        # holder a dead group left as it was, with what it keeps, for the next start.
        if self.started:  # a restarted daemon: its caller was answered long ago
            self.handshake.close()
        self.loop.at(lambda: self.control.next_deadline(), lambda: self.control.drop_idle())
        self.loop.at(lambda: self.stall.deadline, self.stall.tick)
        self.loop.at(lambda: self.restart_deadline, self._restart_due)
        self.loop.at(lambda: self.stop_overdue_at, self._stop_overdue)
        while self.pump is not None or self.restart_deadline is not None:
            self.loop.turn()
        return self._end()

    def _watched(self) -> tuple[list[int], list[Ledger], list[tuple[Ledger, list[str]]]]:
        """What the stall watch looks at: every instance's pipes (read ends) and ledger,
        and where each program's monitors say they are busy (its instance 0's ledger)."""
        pipes, journals = self.files.watched()
        ledgers = [Ledger(open_journal(journal)) for journal in journals]
        by_key = dict(zip(self.files.keys(), ledgers))
        busy = [(by_key[(view.program, 0)], [name for name, _ in view.monitors])
                for view in self.spec.each() if (view.program, 0) in by_key]
        return pipes, ledgers, busy

    def _restart_due(self) -> None:
        """At ``restart_deadline``: the machine's Tick if it is due, then a due spawn."""
        deadline = self.machine.deadline
        if deadline is not None and time.monotonic() >= deadline:
            self._step(supervise.Tick(), self._policy(self.targets.alive()))
        if self.due is not None:
            self._start_pump()

    # ----------------------------------------------------------------- pump
    def _policy(self, alive: bool) -> supervise.PumpPolicy:
        """The policy for the pump's next event: whether its end is the group's, else
        whether a target lives."""
        if self.finished or not self.started:
            return PUMP_LAST
        return PUMP_WITH_TARGET if alive else PUMP_ALONE

    def _step(self, event: supervise.Event, policy: supervise.PumpPolicy) -> None:
        # The pump's policies have no jitter: any rand gives the same delays.
        self.machine, actions = supervise.step(policy, self.machine, event, time.monotonic(),
                                               0.5)
        self._feed(actions)

    def _feed(self, actions: tuple[supervise.Action, ...]) -> None:
        """Carry out the machine's actions (a Wake is read from the machine itself)."""
        for action in actions:
            if isinstance(action, supervise.Spawn):
                self.due = action
            elif isinstance(action, supervise.Kill):
                self._pass_stop()
            elif isinstance(action, supervise.Finish):
                self.due = None  # the group ends with this pump

    def _pass_stop(self) -> None:
        """The stop, to the pump that carries it out."""
        if self.pump is None or self.stop_request is None:
            return
        if self.stop_by_signal:
            self.pump.send_signal(signal.SIGTERM)
        else:
            self._tell_pump(self.stop_request)

    def _start_pump(self) -> None:
        self.due = None
        why, message_file = self.next_start
        log = self.directory / "pump.log"
        if why == PUMP_RESTART and log.exists():
            try:
                os.replace(log, self.directory / "pump.log.1")
            except OSError:
                pass  # a directory we can no longer write: the new pump appends instead
        self.targets.left(self.pump is not None)
        adopts = self.targets.adopts()
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as exc:  # out of fds
            self._pump_not_started(exc)
            return
        fds = self.files.fds(lock=self.lock_fd, lifeline=theirs.fileno(),
                             handshake=self.handshake.fd)
        args = RoleArgs("pump", str(self.directory), why, fds=fds, message_file=message_file,
                        daemon_pid=os.getpid(), leftover=self.leftover,
                        **split_adopts(adopts))
        try:
            self.pump = forking.fork_pump(self.spec, args, log)
        except OSError as exc:
            ours.close()
            theirs.close()
            self._pump_not_started(exc)
            return
        self.stall.restart()
        self.leftover = False
        theirs.close()
        if self.fork_failures:
            sys.stderr.write(f"immortal: daemon: pump started after {self.fork_failures} "
                             "failed attempts\n")
            self.fork_failures = 0
        self.pump_sock = ours
        self.pump_started = time.monotonic()
        self.loop.watch(ours, self._on_pump_message)
        # Started to carry out a stop (the machine answers Kill): the request, not a signal.
        self.stop_by_signal = False
        self._step(supervise.Spawned(self.pump.pid), self._policy(self.targets.alive()))
        self.targets.handed_over()

    def _pump_not_started(self, exc: OSError) -> None:
        """The pump could not be started (fork: EAGAIN from a process limit, ENOMEM): the
        machine backs off and tries again, soon while a target lives; a first start fails."""
        if not self.started:
            self.handshake.send(error="StartError", message=f"cannot start the pump: {exc}")
        else:
            self.fork_failures += 1
            if self.fork_failures == 1:
                rolelog.report("fork", f"immortal: daemon: cannot start a pump ({exc}); "
                               "retrying\n")
        self._step(supervise.SpawnFailed(str(exc)), self._policy(self.targets.alive()))

    def _tell_pump(self, message: Message) -> None:
        if self.pump_sock is not None:
            try:
                self.pump_sock.send(message.to_bytes())
            except OSError:
                pass  # the pump is dying; SIGCHLD tells when it is gone

    def _on_pump_message(self, sock: socket.socket) -> None:
        if sock is not self.pump_sock:
            # Reported in the same batch as the SIGCHLD that reaped its pump: that reaping
            # read what the pump had said and closed the socket already.
            return
        try:
            data, fds, _, _ = socket.recv_fds(sock, 65536, SPARE_FDS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        if not data:
            # The pump is dying; SIGCHLD tells when it is gone.
            self.selector.unregister(sock)
            return
        self._handle_message(data, fds)

    def _handle_message(self, data: bytes, fds: list[int] | None = None) -> None:
        message = decode(data)
        if isinstance(message, Spare):
            self.files.keep_spare((message.program, message.instance), fds or [])
            return
        for fd in fds or ():  # files with any other message are none of ours
            os.close(fd)
        self.targets.heard(message)
        if isinstance(message, Target) and message.swap:
            self.files.swap((message.program, message.instance))
            self.stall.pipes(*self._watched())
            self._hold()
        elif isinstance(message, Retired):
            self._retired(message.workers, message.program)
        elif isinstance(message, Started):
            self.started = True
            self._end_other_holders()
        elif isinstance(message, Finish):
            self.finished = True
            if self.keeper is not None:  # the group ends: see Keeper.release
                self.keeper.release()

    def _pump_died(self, status: ExitStatus) -> None:
        assert self.pump is not None
        self.pump.returncode = status.code if status.code is not None else -(status.signal or 0)
        self.pump = None
        if self.pump_sock is not None:
            # What the pump said before it died (a target's death, its finish) still counts.
            self.pump_sock.setblocking(False)
            while True:
                try:
                    data, fds, _, _ = socket.recv_fds(self.pump_sock, 65536, SPARE_FDS)
                except OSError:
                    break
                if not data:
                    break
                self._handle_message(data, fds)
            try:
                self.selector.unregister(self.pump_sock)
            except (KeyError, ValueError):
                pass
            self.pump_sock.close()
            self.pump_sock = None
        self._answer_for()
        self.next_start = (PUMP_RESTART, str(self.directory / "pump.log.1"))
        policy = PUMP_LAST  # after a finish, or before a start: the group ends
        if self.started and not self.finished and not self.overruled:
            if self.machine.phase != supervise.STOPPING:
                rolelog.report("pump", f"immortal: daemon: pump {status}; starting a new one\n")
            policy = self._policy(self.targets.left(pump_running=False))
        self._step(supervise.Exited(status), policy)

    def _end_other_holders(self) -> None:
        """End a dead daemon's holder, or the one a group whose supervisors all died left
        behind: ours holds their files now."""
        if holder.enabled():
            holder.end_others(str(self.directory), self.targets.holder)

    def _answer_for(self) -> None:
        """The first pump is gone: the caller's answer was its to give. It may have died
        after telling us the start was over and before answering: the caller is answered
        here then, as it would have been (a second ``ok`` after its own is never read).
        Before that, its death fails the start: our copy closed, the caller reads the end
        of the pipe."""
        if self.handshake.fd is None:
            return
        if self.started:
            adopt = self.first_adopt
            self.handshake.send(ok=True, target=adopt, adopted=adopt is not None)
        self.handshake.close()

    def _dir_restored(self, missing: set[str]) -> None:
        """The instance directory, or files of it, were removed and ``dirwatch`` put back
        the lock: the socket, spec.json, and status.json from the pump, those ``missing``."""
        if SOCKET_NAME in missing:
            self.control.close()
            self.control = control.Server(self.directory / SOCKET_NAME, self.selector,
                                          self._command)
        if "spec.json" in missing:
            self._write_spec()
        if "status.json" in missing and self.pump_sock is not None:
            try:
                self.pump_sock.send(Rewrite().to_bytes())
            except OSError:
                pass  # a new pump writes status.json when it starts

    def _end(self) -> int:
        """The group ends: kill and reap whatever is left of it (escaped grandchildren)."""
        self.control.close()
        self.stall.close()
        process.kill_children()
        # And those that went up with a dead daemon; a start that failed leaves a dead
        # group's holder (older than itself) to the next start.
        orphans.end_group(self.directory, since=None if self.started else self.began)
        self.files.end(self.spec)
        if self.overruled:  # its pump, the status's writer, was killed with the stop undone
            write_stopped(self.directory, read_json(self.directory / "status.json") or {},
                          OVERRULED)
        return 0
