"""A handle on one running (or finished) group: pids, status, restart, stop, wait.

The handle talks to the group through its instance directory and signals to its root
process (the daemon, or the pump when there is no daemon), after proving by start time that
the pid still names that process. What it reads (status, output, waiting for the end) is
``groupview.GroupView``'s; what it asks (restart, signal, reopen, stop, kill) is here, with
signals as the fallback when the root does not answer.
"""

from __future__ import annotations

import os
import signal
import time

from . import control
from ._linux import is_alive
from .errors import (InvalidSpec, InvalidType, NoAnswer, NotRunning, StartError, StateDirError,
                     StopTimeout)
from .groupview import MARGIN, POLL, GroupView
from .safety import check_path, check_socket
from .state import (
    KILLED,
    SOCKET_NAME,
    STALE,
    Status,
    check_dir,
    clear_stale,
    home,
    instance_dir,
    read_json,
    read_status,
    try_lock,
)

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

__all__ = ["MARGIN", "POLL", "RETRY", "Group", "attach", "groups"]

RETRY = 3.0  # seconds a command is retried while nobody answers on the control socket


class Group(GroupView):
    """A group of processes keeping one target alive. ``repr`` says whether it runs."""

    #: The pid of the running target the start that made this handle adopted, left by the
    #: group's dead supervisors (``immortal.adoption``); None if it spawned one.
    adopted: int | None = None

    def _root(self) -> tuple[int, Status]:
        status = self.status()
        if not status.running:
            raise NotRunning(f"group {self.name!r} is not running (state {status.state}); "
                             f"start it with 'immortal run'")
        return status.pids[status.root], status

    def _request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send a command; retried for a moment while a dead daemon's successor binds."""
        deadline = time.monotonic() + RETRY
        while True:
            try:
                check_socket(self.directory / SOCKET_NAME)
                return control.request(self.directory / SOCKET_NAME, {"cmd": cmd, **args})
            except NotRunning:
                if time.monotonic() >= deadline or not self.status().running:
                    raise
            time.sleep(POLL)

    def _grace(self, timeout: float | None) -> float:
        if timeout is not None:
            from .checks import check_timeout

            return check_timeout("timeout", timeout)
        spec = read_json(self.directory / "spec.json") or {}
        return float(spec.get("stop_timeout", 10.0))

    def restart(self, timeout: float | None = None, instance: int | None = None,
                batch: int = 1, all_at_once: bool = False) -> None:
        """Restart the target: TERM, ``timeout`` (default: the group's grace period), KILL,
        spawn. A group of several instances (``workers``), or one that listens, rolls
        (docs/workers.md): each instance (or ``instance`` alone) is replaced ``batch`` at a
        time, its old process retired once its replacement is ready; a replacement that
        fails aborts the roll (``StartError``: which instance, why, its last lines on
        stderr), the old processes serving on. ``all_at_once``: every instance restarted
        at once instead. Returns once the new targets run (and, rolling, are ready)."""
        _, before = self._root()
        chosen = self._instance(instance, before)
        grace = self._grace(timeout)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidSpec(f"'batch' must be an int, 1 or more (got {batch!r})")
        several = len(before.instances) > 1 or bool(before.listen)
        if several and not all_at_once:
            self._roll(before, chosen, grace, batch)
            return
        self._request("restart", timeout=grace, all_at_once=True,
                      **({} if chosen is None else {"instance": chosen}))
        deadline = time.monotonic() + grace + MARGIN
        while time.monotonic() < deadline:
            now = self.status()
            if not now.running:
                raise NotRunning(f"group {self.name!r} ended during the restart "
                                 f"(state {now.state})")
            if restarted(before, now, chosen):
                return
            time.sleep(POLL)
        raise StopTimeout(f"group {self.name!r} did not restart its target within "
                          f"{grace + MARGIN:g} s")

    def _roll(self, before: Status, chosen: int | None, grace: float, batch: int) -> None:
        """A rolling restart: asked, then followed in ``status.json``'s ``roll``."""
        if (before.roll or {}).get("state") == "rolling":
            raise NotRunning(f"group {self.name!r}: a rolling restart is in progress; wait "
                             "for it to end")
        last = int((before.roll or {}).get("id", 0))
        self._request("restart", timeout=grace, batch=batch,
                      **({} if chosen is None else {"instance": chosen}))
        spec = read_json(self.directory / "spec.json") or {}
        slots = 1 if chosen is not None else max(len(before.instances), 1)
        steps = -(-slots // batch)
        deadline = time.monotonic() + MARGIN + steps * (
            grace + float(spec.get("ready_timeout", 30.0)) + MARGIN)
        while time.monotonic() < deadline:
            now = self.status()
            roll = now.roll or {}
            if int(roll.get("id", 0)) > last and roll.get("state") != "rolling":
                if roll.get("state") == "done":
                    return
                lines = "".join(f"\n  {line}" for line in roll.get("stderr") or ())
                raise StartError(f"group {self.name!r}: the rolling restart was aborted: "
                                 f"{roll.get('why')}; the old processes keep serving"
                                 + (f"; its last lines on stderr:{lines}" if lines else ""),
                                 stderr=roll.get("stderr") or ())
            if not now.running:
                raise NotRunning(f"group {self.name!r} ended during the rolling restart "
                                 f"(state {now.state})")
            time.sleep(POLL)
        raise StopTimeout(f"group {self.name!r} did not end its rolling restart in time")

    def _instance(self, instance: int | None, status: Status) -> int | None:
        """``instance`` checked against the group's instances (None: all of them)."""
        if instance is None:
            return None
        if isinstance(instance, bool) or not isinstance(instance, int):
            raise InvalidType(f"'instance' must be an int (got {type(instance).__name__}: "
                              f"{instance!r})")
        count = len(status.instances) or 1
        if not 0 <= instance < count:
            raise InvalidSpec(f"'instance' must be from 0 to {count - 1}: group "
                              f"{self.name!r} runs {count} instance(s) (got {instance})")
        return instance

    def signal(self, number: int | str, instance: int | None = None) -> None:
        """Send a signal (a number or a name such as "USR1") to the target's process group;
        in a group of several instances (``workers``), to each one's, or to ``instance``'s
        alone."""
        _, status = self._root()
        chosen = self._instance(instance, status)
        value = control.parse_signal(number)
        try:
            self._request("signal", signal=value,
                          **({} if chosen is None else {"instance": chosen}))
        except NoAnswer:  # the root is frozen or swamped: signal the targets ourselves
            status = self.status()
            proven = [(pid, started) for pid, started in _targets(status, chosen)
                      if started is not None and is_alive(pid, started)]
            if not proven:
                raise NoAnswer(f"group {self.name!r} does not answer and runs no target "
                               "that can be proven ours; try 'immortal stop'") from None
            for pid, _ in proven:
                os.killpg(pid, value)

    def scale(self, workers: int, timeout: float | None = None) -> Status:
        """Run ``workers`` instances of the program: new ones are spawned (numbered on from
        the highest), or the highest retire (TERM, ``timeout``, default the group's grace
        period, then KILL). Returns the status once the group runs that many, each
        running and ready (the group's ``ready`` mode, as ``start()`` waits for it)."""
        from .checks import check_workers

        check_workers(workers)
        self._root()
        grace = self._grace(timeout)
        self._request("scale", workers=workers)
        patience = grace + float((read_json(self.directory / "spec.json") or {})
                                 .get("ready_timeout", 30.0)) + MARGIN
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            now = self.status()
            if not now.running:
                raise NotRunning(f"group {self.name!r} ended during the scale "
                                 f"(state {now.state})")
            if (len(now.instances) or 1) == workers and now.state == "running" and now.ready \
                    and all(entry.state == "running" for entry in now.instances):
                return now
            time.sleep(POLL)
        raise StopTimeout(f"group {self.name!r} does not run {workers} ready instance(s) "
                          f"within {patience:g} s")

    def reopen(self) -> None:
        """Make the monitors reopen their files (after an external logrotate)."""
        self._root()
        self._request("reopen")

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
        if final is None:
            return self.kill()
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
        from . import orphans

        lock = try_lock(self.directory / "lock", same_file=True)
        if lock is None:
            return self.status()
        try:
            ended = orphans.end_group(self.directory)
        finally:
            os.close(lock)
        final = clear_stale(self.directory, reason) or self.status()
        if self._popen is not None and self._popen.poll() is not None:
            final.running = False
        final.orphans = ended
        return final

    def kill(self) -> Status:
        """SIGKILL every process of the group now (no grace); returns when they are gone."""
        status = self.status()
        # Supervisors first, so that nothing respawns the target in between. (A pump that
        # saw its daemon die keeps its pid when it becomes the daemon: the KILL still lands.)
        for role in ("daemon", "pump"):
            if role in status.pids and is_alive(status.pids[role], status.start_times.get(role)):
                try:
                    os.kill(status.pids[role], signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for pid, started in _targets(status, None):
            if is_alive(pid, started):
                try:
                    os.killpg(pid, signal.SIGKILL)  # the target leads its process group
                except (ProcessLookupError, PermissionError):
                    pass
        self._wait_gone(MARGIN, status)
        self._reap()
        return self._end_leftovers(KILLED)


def _targets(status: Status, instance: int | None) -> list[tuple[int, int | None]]:
    """The targets ``status`` records, each (pid, start time): the group's one, or each
    instance's (``instance``'s alone, if given)."""
    if status.instances:
        return [(entry.pid, entry.start_time) for entry in status.instances
                if entry.pid and instance in (None, entry.instance)]
    pid = status.pids.get("target")
    return [(pid, status.start_times.get("target"))] if pid else []


def restarted(before: Status, now: Status, instance: int | None) -> bool:
    """Whether ``now`` shows the restart asked in ``before``: each instance restarted
    (``instance`` alone, if given) and running again."""
    if not before.instances or not now.instances:
        return now.spawned > before.spawned and now.state == "running"
    then = {entry.instance: entry.spawned for entry in before.instances}
    return all(entry.spawned > then.get(entry.instance, 0) and entry.state == "running"
               for entry in now.instances if instance in (None, entry.instance))


def attach(name: str) -> Group:
    """A handle on the group ``name`` started elsewhere (by another process or the CLI)."""
    from .names import check_name

    directory = instance_dir(check_name(name))
    try:
        check_dir(directory)  # what it reads, and the pids it signals, are ours or root's
        status = read_status(directory)
    except StateDirError:
        raise
    except OSError as exc:  # a file in the home's path, a home not ours to read
        from .errors import unusable_home

        raise unusable_home(exc, directory.parent) from exc
    # The lock file alone: a first start is under way (stop waits for it).
    if status is None and not os.path.exists(directory / "lock"):
        raise NotRunning(f"no group named {name!r} in {str(home())!r}; 'immortal list' "
                         "shows the groups there")
    return Group(name, directory)


def groups() -> list[Status]:
    """The status of every group in the immortal home, running or not."""
    base = home()
    check_path(base)
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith("."):
            continue  # not a group's (no group name starts with a dot): '.saved.json'
        status = read_status(base / name)
        if status is not None:
            found.append(status)
    return found
