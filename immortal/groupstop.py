"""Ending a group (``stop``, ``kill``), and what every request of a handle needs: the
group's root process, the control socket, the grace period.

The handle talks to the group through its instance directory and signals to its root
process (the daemon, or the pump when there is no daemon), after proving by start time that
the pid still names that process; signals are the fallback when the root does not answer.
"""

from __future__ import annotations

import os
import signal
import time

from . import control
from ._linux import is_alive
from .errors import ImmortalError, NoAnswer, NotRunning, StateDirError
from .groupview import MARGIN, POLL, GroupView
from .safety import socket_problem
from .state import (KILLED, LEFT_ENDED, SOCKET_NAME, STALE, Status, clear_stale, read_json,
                    try_lock)

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

RETRY = 3.0  # seconds a command is retried while nobody answers on the control socket


#: seconds a kill waits for the group's answer before it KILLs every process itself
KILL_ASKED = 1.0


class GroupStop(GroupView):
    """A handle's requests to the group: how they reach it, and how the group ends (see
    :class:`immortal.group.Group` for the others)."""

    def _root(self, wait: bool = True, next_step: str = "start it with 'immortal run'"
              ) -> tuple[int, Status]:
        """The root's pid and the status; ``wait``: once a start in progress has settled,
        as a stop waits for it (a scale or a roll of targets not yet ready would fail that
        start; a plain restart, a signal or a reopen need not wait); ``next_step``: what
        the message of a group that is not running tells the user to do."""
        status = self.wait_start() if wait else self.status()
        if not status.running and status.stale:  # its last state is the one it was killed in
            left = " ".join(str(pid) for pid in self.orphans())
            raise NotRunning(f"group {self.name!r} is not running: its supervisors were "
                             "killed without a stop" + (f" (left running: {left})" if left
                                                        else "")
                             + f"; 'immortal stop {self.name}' ends what they left, "
                             "'immortal run' starts it anew")
        if not status.running:
            raise NotRunning(f"group {self.name!r} is not running (state {status.state}); "
                             + next_step)
        return status.pids[status.root], status

    def _request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send a command; retried for a moment while a dead daemon's successor binds."""
        path = self.directory / SOCKET_NAME
        deadline = time.monotonic() + RETRY
        while True:
            problem = socket_problem(path)
            if problem is not None:
                raise StateDirError(
                    f"group {self.name!r} takes no command: its control socket "
                    f"({SOCKET_NAME}, in {str(self.directory)!r}) {problem}; remove it "
                    f"('rm {path}'): the group then makes its socket again")
            try:
                return control.request(path, {"cmd": cmd, **args})
            except NoAnswer:
                raise NoAnswer(f"group {self.name!r} did not answer {cmd!r} within 5 s: "
                               "its root process is frozen or swamped; 'immortal stop "
                               f"{self.name}' stops it by signals") from None
            except NotRunning:
                status = self.status()
                if not status.running:
                    raise NotRunning(f"group {self.name!r} is not running (state "
                                     f"{status.state}): it ended as {cmd!r} was sent"
                                     ) from None
                if time.monotonic() >= deadline:
                    raise self._unreachable(status, path) from None
            time.sleep(POLL)

    def _unreachable(self, status: Status, path: Path) -> NoAnswer:
        """A group whose supervisors run but whose control socket serves nobody: gone and
        not put back (its root role frozen, or off Linux), or its server closed."""
        how = "refuses connections" if os.path.lexists(path) else "is gone"
        root = f"{status.root} {status.pids[status.root]}"
        return NoAnswer(f"group {self.name!r} runs ({root}) but takes no command: its "
                        f"control socket ({SOCKET_NAME}, in {str(self.directory)!r}) {how}; "
                        f"'immortal stop {self.name}' stops it by signals, then 'immortal "
                        f"start {self.name}' starts it again")

    def _grace(self, timeout: float | None, program: str | None = None) -> float:
        """``timeout`` checked, else the group's grace period (``program``'s, or the
        longest of its programs')."""
        if timeout is not None:
            from .checks import check_timeout

            return check_timeout("timeout", timeout)
        spec = read_json(self.directory / "spec.json") or {}
        if spec.get("programs"):
            return max(float(p.get("stop_timeout", 10.0)) for p in spec["programs"]
                       if program in (None, p.get("name")))
        return float(spec.get("stop_timeout", 10.0))

    def stop(self, timeout: float | None = None) -> Status:
        """Stop the group: TERM to the target's process group, ``timeout`` seconds of grace
        (default: the group's ``stop_timeout``), then KILL. Returns when every process of
        the group is gone; past the grace period plus a margin they are killed outright.
        """
        self.wait_start()
        grace, status = self._begin_stop(timeout)
        return self._finish_stop(grace, status)

    def begin_stop(self, timeout: float | None = None) -> float:
        """Ask the group to stop and return at once; returns the grace period in force."""
        self.wait_start()
        return self._begin_stop(timeout)[0]

    def finish_stop(self, grace: float) -> Status:
        """Wait for a stop begun by :meth:`begin_stop`; KILL what outlives grace + margin."""
        return self._finish_stop(grace, self.status())

    def _begin_stop(self, timeout: float | None) -> tuple[float, Status]:
        """The grace period, and the status to wait from.

        The request goes first, and what the wait needs (the status, spec.json's grace
        period) is read while the group stops: a group that is not running does not
        answer, and the status read then says so. Without a timeout the group applies its
        own stop_timeout."""
        grace = None if timeout is None else self._grace(timeout)  # refuse a bad one first
        self._stop_began = time.monotonic()
        self._let_go()
        try:
            self._request("stop", **({} if grace is None else {"timeout": grace}))
        except NotRunning:  # no answer: a signal does it, with the group's own grace
            status = self.status()
            if status.running:
                try:
                    os.kill(status.pids[status.root], signal.SIGTERM)
                except ProcessLookupError:
                    pass
        except NoAnswer:
            # The root is frozen or swamped: TERM to every supervisor (a live pump stops the
            # target with the group's own grace); what still lives past grace + margin: KILL.
            status = self.status()
            for role in status.live_roles():
                try:
                    os.kill(status.pids[role], signal.SIGTERM)
                except ProcessLookupError:
                    pass
        else:
            status = self.status()
        return (self._grace(None) if grace is None else grace), status

    def _finish_stop(self, grace: float, status: Status) -> Status:
        budget = grace + MARGIN
        if self._stop_began is not None:  # the margin counts from the request, answered or not
            budget -= time.monotonic() - self._stop_began
            self._stop_began = None
        final = self._wait_gone(max(0.0, budget), status)
        if final is None:  # its pump did not end it: no asking again
            return self._kill_now(self.status())
        self._reap()
        return self._end_leftovers(STALE)

    def _end_leftovers(self, reason: str) -> Status:
        """Once no supervisor runs: end every process still carrying the group's token
        (escaped grandchildren the daemon could not reach, a target whose supervisors were
        killed), and record a group killed without a stop as stopped with ``reason``.

        Under the group lock: a group started since then is never touched (its target
        carries the same token). The lock is taken for a moment, so a start at that very
        moment may be refused as already running.
        """
        from . import monitorprocess, orphans

        lock = try_lock(self.directory / "lock", same_file=True)
        if lock is None:
            return self.status()
        try:
            ended: list[int] = []
            if reason == STALE and orphans.holders(self.directory):
                # A stop: what the pipe holder keeps goes to the monitors first (a kill
                # ends it at once).
                ended = self._deliver_kept()
            ended += orphans.end_group(self.directory)
            # A dead pump's monitor processes, in their grace still (a hanging one: the
            # whole grace): a stop returns once the whole group is gone.
            orphans.end(monitorprocess.left(self.directory))
        finally:
            os.close(lock)
        if reason == STALE and ended:
            # Its supervisors died before they ended it (during this stop, or before): the
            # stop ended what they left, and is how it ended.
            reason = LEFT_ENDED
        final = clear_stale(self.directory, reason) or self.status()
        if self._popen is not None and self._popen.poll() is not None:
            final.running = False
        final.orphans = ended
        return final

    def _deliver_kept(self) -> list[int]:
        """What the pipe holder of a group with no supervisor left keeps, to its monitors
        (``drain``); the targets it ended first."""
        raise NotImplementedError  # group's: drain runs a pump, above this layer

    def kill(self) -> Status:
        """SIGKILL every process of the group now (no grace); returns when they are gone.
        The group's pump KILLs its targets itself, so their ends are recorded (``last
        killed by SIGKILL``) and its monitors get each ``exit`` and their ``shutdown``;
        what it has not ended within a margin (no pump answers, a frozen one), and every
        supervisor, is KILLed here."""
        status = self.status()
        self._let_go()
        if status.running:
            try:  # not for long: a kill is now, whatever its pump's state
                control.request(self.directory / SOCKET_NAME, {"cmd": "stop", "kill": True},
                                timeout=KILL_ASKED)
            except (ImmortalError, OSError):
                pass  # no answer, or a group started by an older immortal: signals below
            else:
                final = self._wait_gone(MARGIN, status)
                if final is not None:
                    self._reap()
                    return self._end_leftovers(KILLED)
                status = self.status()
        return self._kill_now(status)

    def _let_go(self) -> None:
        """A captured stream (development) no longer holds the pump: it is stopping."""
        for lines in self._streams.values():
            lines.let_go()

    def _kill_now(self, status: Status) -> Status:
        """SIGKILL every process of the group ``status`` names, supervisors first."""
        # Supervisors first, so that nothing respawns the target in between. (A pump that
        # saw its daemon die keeps its pid when it becomes the daemon: the KILL still lands.)
        for role in ("daemon", "pump"):
            if role in status.pids and is_alive(status.pids[role], status.start_times.get(role)):
                try:
                    os.kill(status.pids[role], signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for pid, started in targets_of(status, None):
            if is_alive(pid, started):
                try:
                    os.killpg(pid, signal.SIGKILL)  # the target leads its process group
                except (ProcessLookupError, PermissionError):
                    pass
        self._wait_gone(MARGIN, status)
        self._reap()
        return self._end_leftovers(KILLED)


def targets_of(status: Status, instance: int | None,
               program: str | None = None) -> list[tuple[int, int | None]]:
    """The targets ``status`` records, each (pid, start time): the group's one, or each
    instance's (``program``'s, ``instance``'s alone, if given), and a roll's replacements
    of those."""
    if status.instances:
        found = [(entry.pid, entry.start_time) for entry in status.instances
                 if entry.pid and instance in (None, entry.instance)
                 and program in (None, entry.program)]
    else:
        pid = status.pids.get("target")
        found = [(pid, status.start_times.get("target"))] if pid else []
    for slot, (pid, started) in ((status.roll or {}).get("replacements") or {}).items():
        named, _, k = str(slot).rpartition(":")
        if instance in (None, int(k)) and program in (None, named):
            found.append((int(pid), started))
    return found
