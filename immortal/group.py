"""A handle on one running (or finished) group: pids, status, restart, stop, wait.

The handle talks to the group through its instance directory and signals to its root
process (the daemon, or the pump when there is no daemon), after proving by start time that
the pid still names that process.
"""

from __future__ import annotations

import os
import select
import signal
import time

from . import control
from ._linux import is_alive, pidfd_open
from .errors import (
    ImmortalError,
    InvalidSpec,
    InvalidType,
    NoAnswer,
    NotRunning,
    StateDirError,
    StopTimeout,
)
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
    lock_held,
    read_json,
    read_status,
    try_lock,
)

# What 'immortal stop', 'status'... do not need is imported where it is used: a command
# is a fresh interpreter, and every import is paid at each run.
TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator
    from pathlib import Path
    from typing import IO, Any

POLL = 0.01  # how often a client re-reads status.json while it waits for a change
MARGIN = 10.0  # seconds a client waits beyond a grace period before it uses SIGKILL
RETRY = 3.0  # seconds a command is retried while nobody answers on the control socket


class Group:
    """A group of processes keeping one target alive. ``repr`` says whether it runs."""

    #: The pid of the running target the start that made this handle adopted, left by the
    #: group's dead supervisors (``immortal.adoption``); None if it spawned one.
    adopted: int | None = None

    def __init__(self, name: str, directory: Path,
                 popen: subprocess.Popen[bytes] | None = None,
                 parent_fd: int | None = None) -> None:
        self.name = name
        self.directory = directory
        self._popen = popen  # the pump, in development: our child
        self._parent_fd = parent_fd  # development: closing it tells the pump we are gone
        self._stop_began: float | None = None  # when the stop being waited for was asked
        self._streams: dict[str, _Lines] = {}
        if popen is not None:
            for stream in ("stdout", "stderr"):
                pipe = getattr(popen, stream)
                if pipe is not None:
                    self._streams[stream] = _Lines(pipe)

    @property
    def stdout(self) -> Iterator[bytes]:
        """The target's stdout lines (with newlines), for a ``development`` group started
        with ``capture=True``; ends when the group ends. Once iterated, a stream that is not
        read on makes the target wait; one never iterated keeps its latest 1,000 lines (see
        :attr:`dropped`)."""
        return self._stream("stdout")

    @property
    def stderr(self) -> Iterator[bytes]:
        """The target's stderr lines, as :attr:`stdout`."""
        return self._stream("stderr")

    @property
    def dropped(self) -> dict[str, int]:
        """Lines dropped so far from each captured stream: a stream nobody iterates keeps
        only its latest 1,000 lines, so that reading the other one never waits for it."""
        return {name: lines.dropped for name, lines in self._streams.items()}

    def _stream(self, name: str) -> Iterator[bytes]:
        if name not in self._streams:
            raise InvalidSpec(f"group {self.name!r} does not capture its output: start it "
                              "with strategy='development', capture=True")
        return iter(self._streams[name])

    @property
    def pid(self) -> int | None:
        """The target's pid, or None while no target runs."""
        return self.pids.get("target")

    def __repr__(self) -> str:
        status = self.status()
        if status.running:
            pids = ", ".join(f"{role} {pid}" for role, pid in status.pids.items())
            return f"<Group {self.name!r} {status.state} ({pids})>"
        return f"<Group {self.name!r} {status.state}, not running>"

    @property
    def pids(self) -> dict[str, int]:
        """Pids of the daemon, pump and target that are running now."""
        status = self.status()
        return dict(status.pids) if status.running else {}

    @property
    def output(self) -> str | None:
        """The file the group's monitor writes the output to, if it says."""
        return self.status().output

    def tail(self, lines: int = 20) -> Iterator[bytes]:
        """The last ``lines`` lines of the group's output file (bytes, each with its newline,
        a last line not yet ended without); none while the file does not exist. Raises
        ``ImmortalError`` if the monitor declares no output file, ``StateDirError`` if the
        file is a symlink (the monitor never writes through one)."""
        from . import tailing

        return tailing.tail(self._output_file(), _count(lines))

    def follow(self, lines: int = 0) -> Iterator[bytes]:
        """The last ``lines`` lines of the output file, then each line appended to it, as
        ``tail -F`` does: across rotations (a new file of the same name is read from its
        start) and truncations, until the group ends. It polls the file (``tailing``);
        close the iterator to stop early. Raises as :meth:`tail`."""
        from . import tailing

        count = _count(lines)
        return tailing.follow(self._output_file(), count, lambda: self.status().running)

    def _output_file(self) -> str:
        output = self.status().output
        if not output:
            raise ImmortalError(f"the monitor of group {self.name!r} declares no output file")
        return output

    def status(self) -> Status:
        """The group's state now. A read changes nothing: a group whose supervisors were
        killed reads as ``stale``, its pids kept for the next start or stop to find."""
        status = read_status(self.directory)
        if status is None:
            return Status(self.name, "unknown", directory=str(self.directory))
        if self._popen is not None and self._popen.poll() is not None:
            status.running = False
        return status

    def orphans(self) -> list[int]:
        """Processes carrying the group's token (see immortal/orphans.py), found while no
        supervisor of the group runs: a target whose supervisors were killed, or its
        descendants. Empty while the group runs (they are its own), and off Linux."""
        from . import orphans

        if self.status().running:
            return []
        return [pid for pid, _ in orphans.find(self.directory)]

    def wait_start(self) -> Status:
        """The status once a start in progress has settled: while the group lock is held
        but ``status.json`` shows no running group yet, a start is under way; it is waited
        for (up to its ``start_timeout`` plus a margin) until the group runs, or the lock
        is let go (the start failed)."""
        status = self.status()
        lock = self.directory / "lock"
        if status.running or not lock_held(lock):
            return status
        spec = read_json(self.directory / "spec.json") or {}
        deadline = time.monotonic() + float(spec.get("start_timeout") or 30.0) + MARGIN
        while not status.running and lock_held(lock) and time.monotonic() < deadline:
            time.sleep(POLL)
            status = self.status()
        return status

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
            from .spec import check_timeout

            return check_timeout("timeout", timeout)
        spec = read_json(self.directory / "spec.json") or {}
        return float(spec.get("stop_timeout", 10.0))

    def restart(self, timeout: float | None = None) -> None:
        """Restart the target: TERM, ``timeout`` (default: the group's grace period), KILL,
        spawn. Returns once the new target runs."""
        _, before = self._root()
        grace = self._grace(timeout)
        self._request("restart", timeout=grace)
        deadline = time.monotonic() + grace + MARGIN
        while time.monotonic() < deadline:
            now = self.status()
            if not now.running:
                raise NotRunning(f"group {self.name!r} ended during the restart "
                                 f"(state {now.state})")
            if now.spawned > before.spawned and now.state == "running":
                return
            time.sleep(POLL)
        raise StopTimeout(f"group {self.name!r} did not restart its target within "
                          f"{grace + MARGIN:g} s")

    def signal(self, number: int | str) -> None:
        """Send a signal (a number or a name such as "USR1") to the target's process group."""
        self._root()
        value = control.parse_signal(number)
        try:
            self._request("signal", signal=value)
        except NoAnswer:  # the root is frozen or swamped: signal the target ourselves
            status = self.status()
            pid = status.pids.get("target")
            started = status.start_times.get("target")
            if pid is None or started is None or not is_alive(pid, started):
                raise NoAnswer(f"group {self.name!r} does not answer and runs no target "
                               "that can be proven ours; try 'immortal stop'") from None
            os.killpg(pid, value)

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
        for role in ("daemon", "pump", "target"):
            if role in status.pids and is_alive(status.pids[role], status.start_times.get(role)):
                kill = os.killpg if role == "target" else os.kill  # the target leads its group
                try:
                    kill(status.pids[role], signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self._wait_gone(MARGIN, status)
        self._reap()
        return self._end_leftovers(KILLED)

    def _wait_gone(self, timeout: float, status: Status | None = None) -> Status | None:
        """The status once no process of the group runs (it is read again each time the
        one waited for is gone: the root may change), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        if status is None:
            status = self.status()
        while status.running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            root = status.root
            self._wait_pid(status.pids[root], status.start_times.get(root), remaining)
            status = self.status()
        return status

    def wait(self, timeout: float | None = None) -> Status:
        """Wait until the group ends by itself (or by a stop from elsewhere)."""
        if timeout is None:
            status = self.status()
            while status.running:  # the root may change: a pump takes over from a dead daemon
                root = status.root
                self._wait_pid(status.pids[root], status.start_times.get(root), None)
                status = self.status()
        elif self._wait_gone(timeout) is None:
            raise StopTimeout(f"group {self.name!r} still runs after {timeout} s")
        self._reap()
        return self.status()

    def _wait_pid(self, pid: int, start_time: int | None, timeout: float | None) -> bool:
        if self._popen is not None and self._popen.pid == pid:
            import subprocess  # loaded already: the caller started the pump with it

            try:
                self._popen.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            ends = pidfd_open(pid)  # readable when it ends
        except ProcessLookupError:
            return True
        except OSError:
            ends = -1
        try:
            while is_alive(pid, start_time):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if ends >= 0:
                    select.select([ends], [], [], remaining)
                else:
                    time.sleep(POLL)
            return True
        finally:
            if ends >= 0:
                os.close(ends)

    def _reap(self) -> None:
        if self._popen is not None:
            import subprocess

            try:
                self._popen.wait(5.0)
            except subprocess.TimeoutExpired:
                pass
        if self._parent_fd is not None:
            os.close(self._parent_fd)
            self._parent_fd = None


class _Lines:
    """Lines of one of the pump's output pipes, read by a thread into a bounded buffer.

    The two streams come through one pump: if an unread stream could make the pump wait,
    reading the other would hang once the unread one is full. So a stream that nobody has
    begun to iterate keeps only its latest ``LIMIT`` lines, dropping the oldest (counted in
    ``dropped``); a stream that is being iterated makes the pump, then the target, wait while
    it is full (backpressure), and memory stays bounded either way.
    """

    LIMIT = 1000

    def __init__(self, pipe: IO[bytes]) -> None:
        import collections
        import threading

        self._lines: collections.deque[bytes] = collections.deque()
        self._changed = threading.Condition()
        self._reading = False  # an iterator has begun: full means wait, not drop
        self._ended = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe: IO[bytes]) -> None:
        with pipe:
            for line in pipe:
                with self._changed:
                    while self._reading and len(self._lines) >= self.LIMIT:
                        self._changed.wait()
                    if len(self._lines) >= self.LIMIT:
                        self._lines.popleft()
                        self.dropped += 1
                    self._lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def __iter__(self) -> Iterator[bytes]:
        with self._changed:
            self._reading = True
        while True:
            with self._changed:
                while not self._lines and not self._ended:
                    self._changed.wait()
                if not self._lines:
                    return  # every later iterator ends at once too
                line = self._lines.popleft()
                self._changed.notify_all()
            yield line


def _count(lines: object) -> int:
    if isinstance(lines, bool) or not isinstance(lines, int):
        raise InvalidType(f"'lines' must be an int (got {type(lines).__name__}: {lines!r})")
    if lines < 0:
        raise InvalidSpec(f"'lines' must be 0 or more (got {lines})")
    return lines


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
        status = read_status(base / name)
        if status is not None:
            found.append(status)
    return found
