"""The daemon of a group run in the foreground: the command's own process (``foreground``).

A ``Daemon`` in every way (it forks and keeps the pump, holds the group's files, serves the
control socket, reaps), with what being the command's own process asks for:

- **Signals**, each taken explicitly (a PID 1, a container's init, would otherwise lose
  those it has no handler for: the kernel drops them): SIGTERM and SIGINT stop the group
  (TERM, the grace period, KILL), SIGHUP and SIGCONT restart it as ``immortal restart``
  does (rolling for a group of several or one that listens; not the SIGCONT of ``fg`` or
  ``bg`` after a Ctrl-Z: ``jobstop``), SIGUSR1 and SIGUSR2 are passed on to the targets
  (every instance's process group).
- **Orphans**: as a subreaper (as PID 1, for the whole namespace) it reaps every process
  that comes to it at SIGCHLD (``Daemon._reap``, which tells its pump's death and an
  adopted target's from an orphan's: theirs are never lost to it).
- **Its words**, on its own stderr (a terminal, the journal, a container's log): the start's
  answer (the handshake a ``start()`` caller reads comes to a pipe of its own): "started",
  or the start's error; at the end, ``'NAME' ended: STATE (REASON)``.
- **systemd** (``sdnotify``), with ``NOTIFY_SOCKET`` in its environment: ``READY=1`` once
  every target is ready (of every program, in a group of several), ``STATUS=`` on each
  change of ``status.json`` (watched with inotify), ``RELOADING=1`` then ``READY=1`` around
  a SIGHUP's (or SIGCONT's) restart and around an apply (``Group.apply``: its programs at
  their counts, each instance ready, those it changed rolled; or, if the apply's caller
  goes away before it rolled them, at once, with a ``STATUS=`` that says so: nobody will
  ask for those rolls), ``STOPPING=1``, and ``WATCHDOG=1`` while healthy (a pump runs and
  drains the output).
- **Its exit code** (``exit_code``).
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from . import _linux, dirwatch, rolelog
from .daemon import Daemon
from .detach import Handshake
from .errors import ImmortalError
from .firstrole import answer_error
from .foreground import SIGNALS
from .group import restarted
from .settling import settled
from .render import started_view
from .roles import RoleArgs
from .sdnotify import Notifier
from .spec import Spec
from .state import FINAL_STATES, Status, read_status

WATCHED = (b"status.json", b"stalled.json")  #: the files whose changes STATUS= follows


class ForegroundDaemon(Daemon):
    def __init__(self, spec: Spec, args: RoleArgs) -> None:
        super().__init__(spec, args)
        # The first pump answers the start here (see the module's docstring).
        self.answers, write_end = os.pipe()
        self.handshake = Handshake(write_end)
        self.heard = b""
        self.failure: str | None = None  #: the start's error, if it failed
        self.announced = False  #: the start said: a later pump's answer says it no more
        self.stop_asked = False  #: a stop was requested (a signal, 'immortal stop')
        self.notifier = Notifier.from_environ()
        self.reload_from: Status | None = None  #: a reload under way: from what
        #: an apply's reload: the programs it changed (None: a SIGHUP's restart)
        self.reload_changed: set[str] | None = None
        #: an apply's reload whose caller went away before its rolls: why it ends so
        self.abandoned: str | None = None
        #: the apply's caller, while it has programs to roll: its pid and a pidfd on it
        self.caller: tuple[int, int] | None = None
        self.status_fd: int | None = None

    # ----------------------------------------------------------------- the loop
    def _serve(self) -> int:
        self.loop.take_signals({
            signal.SIGTERM: self._on_stop_signal, signal.SIGINT: self._on_stop_signal,
            signal.SIGHUP: self._on_hangup, signal.SIGCHLD: self._reap,
            signal.SIGCONT: self._on_continue,
            signal.SIGUSR1: lambda: self._pass_on(signal.SIGUSR1),
            signal.SIGUSR2: lambda: self._pass_on(signal.SIGUSR2)})
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # blocked since the exec
        self.loop.watch(self.answers, self._on_answer)
        notifier = self.notifier
        if notifier is not None:
            self._watch_status()
            self.loop.at(lambda: notifier.next_ping(self._healthy()),
                         lambda: notifier.ping(self.stall.drains()))
        return super()._serve()

    def _watch_status(self) -> None:
        if self.status_fd is not None:
            self.selector.unregister(self.status_fd)
            os.close(self.status_fd)
        self.status_fd = dirwatch.watch_names(self.directory)
        if self.status_fd is not None:
            self.loop.watch(self.status_fd, self._on_status)

    def _healthy(self) -> bool:
        """A pump runs and drains the output: what the watchdog's pings vouch for."""
        return self.pump is not None and self.stall.stalled is None

    def _let_go(self) -> None:
        caller = None if self.caller is None else self.caller[1]
        for fd in (self.answers, self.status_fd, caller):
            if fd is not None:
                os.close(fd)
        self.status_fd = self.caller = None
        super()._let_go()

    def _dir_restored(self, missing: set[str]) -> None:
        super()._dir_restored(missing)
        if self.notifier is not None:
            self._watch_status()  # the old watch may be on a directory that went

    # ----------------------------------------------------------------- the start's answer
    def _on_answer(self, fd: int) -> None:
        data = os.read(fd, 65536)
        if not data:
            self.selector.unregister(fd)
            return
        *lines, self.heard = (self.heard + data).split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                self._answered(message)

    def _answered(self, message: dict[str, Any]) -> None:
        if "error" in message:
            status = read_status(self.directory)
            if self.stop_asked and status is not None and status.reason == "stop":
                # Ended by the stop asked during the start (a container stopped at once),
                # not by a failure of its own: no error, and the exit code a stop's.
                rolelog.report("answer", f"{self.spec.name!r} was stopped before it was "
                                         "ready\n")
                return
            self.failure = str(answer_error(self.spec, message))
            rolelog.report("answer", f"immortal: error: {self.failure}\n")
        elif message.get("ok"):
            status = read_status(self.directory)
            if status is not None and not self.announced:
                self.announced = True
                rolelog.report("answer", started_view(self.spec.name, "foreground", status)
                               + f"\nstop it with Ctrl-C, 'kill {os.getpid()}' or "
                               f"'immortal stop {self.spec.name}'\n")
            if self.notifier is not None:
                self.notifier.ready(summary(status))

    # ----------------------------------------------------------------- signals, requests
    def _pass_on(self, number: int) -> None:
        """SIGUSR1, SIGUSR2: to every target, as ``immortal signal NAME`` sends them."""
        try:
            self._command({"cmd": "signal", "signal": int(number)})
        except ImmortalError as exc:
            rolelog.report("command", f"immortal: daemon: {signal.Signals(number).name}: "
                                      f"{exc}\n")

    def _restart_signal(self) -> None:
        """SIGHUP, SIGCONT: a restart, as for any daemon; systemd hears of it
        (``RELOADING=1``, then ``READY=1`` once the new targets are ready, or at once if it
        is refused)."""
        before = read_status(self.directory)
        if not self.started:
            # During the start: systemd hears READY=1 once the new targets are ready, as
            # it would have of the first; no reload around it.
            before = None
        if self.notifier is not None and before is not None:
            self.notifier.reloading()
        try:
            self._command({"cmd": "restart"})
        except ImmortalError as exc:
            rolelog.report("command", f"immortal: daemon: restart: {exc}\n")
            if self.notifier is not None and before is not None:
                self.notifier.ready()  # refused: the reload is over
            return
        if before is None:  # no reload to follow (the start, or no status yet)
            return
        self.reload_from, self.reload_changed = before, None

    def _command(self, request: dict[str, Any]) -> dict[str, Any]:
        """A control request; an apply (``Group.apply``) is a reload for systemd, from the
        request until the group has settled on its new programs."""
        if request["cmd"] != "apply" or self.notifier is None:
            return super()._command(request)
        before = read_status(self.directory)
        answer = super()._command(request)
        # The programs its caller rolls next: the reload is over once they are (or a roll
        # of theirs is aborted: its caller's undo, an apply of the old definitions, then
        # rolls nothing).
        rolls = set(request.get("rolls", ())) & {p.name for p in self.spec.programs}
        if self.reload_from is None and before is not None:
            self.notifier.reloading()
            self.reload_from = before
        self.reload_changed, self.abandoned = rolls, None
        self._watch_caller(request.get("caller") if rolls else None)
        self._reload_over(before)  # an apply that changes nothing is over at once
        return answer

    def _watch_caller(self, pid: int | None) -> None:
        """Watch the apply's caller (``pid``) while the reload waits for its rolls: they
        are its to ask for, and if it goes away first (killed, or given up while the group
        took its programs) nobody will (``_caller_gone``). A kernel without pidfds: the
        reload waits for the rolls alone."""
        self._unwatch_caller()
        if pid is None or self.reload_from is None:
            return
        try:
            fd = _linux.pidfd_open(pid)
        except ProcessLookupError:
            self._caller_gone(pid)  # gone already, between its request and now
            return
        except OSError:
            return
        if fd >= 0:
            self.caller = pid, fd
            self.loop.watch(fd, lambda _: self._caller_gone(pid))

    def _unwatch_caller(self) -> None:
        if self.caller is not None:
            self.selector.unregister(self.caller[1])
            os.close(self.caller[1])
            self.caller = None

    def _caller_gone(self, pid: int) -> None:
        """The apply's caller ended before its reload did: the rolls it did not ask for
        will not come, and the reload ends once no roll is under way (one it asked for
        ends by itself). If it asked for each, the reload ends with the last, as ever."""
        self._unwatch_caller()
        before, changed = self.reload_from, self.reload_changed
        if before is None or not changed:
            return
        status = read_status(self.directory)
        left = sorted(changed) if status is None else unrolled(before, status, changed)
        if left:
            self.abandoned = (f"reload abandoned: the apply's caller (pid {pid}) went away "
                              f"before rolling {', '.join(left)}")
            self._reload_over(status)

    def _stop(self, request: dict[str, Any], by_signal: bool) -> None:
        self.stop_asked = True
        if self.notifier is not None:
            self.notifier.stopping()
        super()._stop(request, by_signal)

    def _handle_message(self, data: bytes, fds: list[int] | None = None) -> None:
        super()._handle_message(data, fds)
        if self.finished and self.notifier is not None:
            self.notifier.stopping()  # the group ends by itself (fatal, a final exit code)

    def _on_status(self, fd: int) -> None:
        """``status.json`` (or ``stalled.json``) changed: systemd's STATUS= line, and the
        end of a reload."""
        if not dirwatch.names(fd) & set(WATCHED) or self.notifier is None:
            return
        status = read_status(self.directory)
        if status is None:
            return
        self.notifier.status(summary(status))
        self._reload_over(status)

    def _reload_over(self, status: Status | None) -> None:
        """``READY=1`` if ``status`` shows the end of the reload under way (with the
        ``STATUS=`` of an abandoned one)."""
        before, changed = self.reload_from, self.reload_changed
        if before is None or status is None or self.notifier is None:
            return
        if self.abandoned is not None:
            over = not status.running or (status.roll or {}).get("state") != "rolling"
        elif changed is None:
            over = reloaded(before, status)
        else:
            over = applied(before, status, changed, self.spec)
        if over:
            why = self.abandoned
            self.reload_from = self.reload_changed = self.abandoned = None
            self._unwatch_caller()
            self.notifier.ready(why)

    # ----------------------------------------------------------------- the end
    def _end(self) -> int:
        super()._end()
        # The group is over: a late signal (a second Ctrl-C, a manager's SIGTERM again)
        # must not turn the exit code into a death by it, as it would once the
        # interpreter's exit put its handlers back to the defaults.
        for number in SIGNALS:
            signal.signal(number, signal.SIG_IGN)
        if self.notifier is not None:
            self.notifier.stopping()
        os.close(self.answers)
        for fd in (self.status_fd, None if self.caller is None else self.caller[1]):
            if fd is not None:
                os.close(fd)
        status = read_status(self.directory)
        if status is not None:
            rolelog.report("answer", f"{self.spec.name!r} ended: {status.state}"
                           + (f" ({status.reason})" if status.reason else "") + "\n")
        return exit_code(status, self.failure is not None, self.stop_asked, self.spec)


def exit_code(status: Status | None, failed: bool, stop_asked: bool, spec: Spec) -> int:
    """The foreground's exit code: 0 once the group stopped (a requested stop, one during
    the start too, or every instance ended on a final exit code); 1 if its start failed,
    it gave up (``fatal``) or it ended without a final phase (its pump could not go on);
    the target's own code when a group of one program and one instance ended by itself on
    one of its ``final_exit_codes``."""
    if failed or status is None or status.state != "stopped":
        return 1
    last = status.last_exit
    if not stop_asked and not spec.several and spec.workers == 1 and last is not None \
            and last.code is not None and last.code in spec.policy.final_exit_codes:
        return last.code
    return 0


def summary(status: Status | None) -> str:
    """A group's state on one line, for systemd's STATUS=."""
    if status is None:
        return "starting"
    parts = [status.state]
    if status.instances:
        ready = sum(1 for entry in status.instances if entry.ready)
        parts.append(f"{ready}/{len(status.instances)} instances ready")
    elif "target" in status.pids:
        parts.append(f"target pid {status.pids['target']}"
                     + ("" if status.ready else " (not ready)"))
    parts.append(f"restarts {status.restarts}")
    if status.stalled:
        parts.append("output stalled")
    if status.dropped:
        parts.append(f"{status.dropped} lines dropped")
    if status.reason and status.state in FINAL_STATES:
        parts.append(status.reason)
    return "; ".join(parts)


def reloaded(before: Status, now: Status) -> bool:
    """Whether ``now`` shows the end of the restart a SIGHUP asked in ``before``: a
    rolling restart over (done or aborted: the old targets serve on), or every instance
    restarted, running and ready; or the group no longer running."""
    if not now.running or now.state in FINAL_STATES:
        return True
    roll, last = now.roll or {}, before.roll or {}
    if int(roll.get("id", 0)) > int(last.get("id", 0)):
        return roll.get("state") != "rolling"
    return restarted(before, now, None) and now.ready


def applied(before: Status, now: Status, changed: set[str], spec: Spec) -> bool:
    """Whether ``now`` shows the end of the apply that began in ``before``: each program
    at its count (``spec``'s), every instance running and ready, and each program rolled
    (``changed``) running targets started since, or a roll aborted (the apply's caller
    puts the old definition back: the old processes serve on); or the group no longer
    running."""
    if not now.running or now.state in FINAL_STATES:
        return True
    roll, last = now.roll or {}, before.roll or {}
    if roll.get("state") == "rolling" or \
            not settled(now, {p.name: p.workers for p in spec.programs}):
        return False
    if int(roll.get("id", 0)) > int(last.get("id", 0)) and roll.get("state") != "done":
        return True
    then = {(e.program, e.pid, e.start_time) for e in before.instances}
    return all((e.program, e.pid, e.start_time) not in then for e in now.instances
               if e.program in changed)


def unrolled(before: Status, now: Status, changed: set[str]) -> list[str]:
    """The programs of ``changed`` (an apply's, begun in ``before``) that ``now`` shows
    neither rolled (each instance a target started since) nor rolling."""
    roll = now.roll or {}
    rolling = {str(slot).rpartition(":")[0] for slot in roll.get("slots") or ()} \
        if roll.get("state") == "rolling" else set()
    then = {(e.program, e.pid, e.start_time) for e in before.instances}
    return sorted(name for name in changed if name not in rolling and any(
        (e.program, e.pid, e.start_time) in then for e in now.instances if e.program == name))
