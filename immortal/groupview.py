"""What a handle on a group reads: its status and pids, its output, and the end of its
processes (waited for through pidfds, by pid and start time).

``group.Group`` adds what it asks of the group (restart, signal, stop...); this base holds
only what observes it.
"""

from __future__ import annotations

import os
import select
import time

from ._linux import is_alive, pidfd_open
from .errors import ImmortalError, InvalidSpec, InvalidType, NotRunning, StopTimeout
from .state import Status, lock_held, read_json, read_status, read_unstarted

# What 'immortal stop', 'status'... do not need is imported where it is used: a command
# is a fresh interpreter, and every import is paid at each run.
TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import IO, Any

POLL = 0.01  # how often a client re-reads status.json while it waits for a change
MARGIN = 10.0  # seconds a client waits beyond a grace period before it uses SIGKILL


class GroupView:
    """The reading side of a handle on a group (see :class:`immortal.group.Group`)."""

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
        if status.stale:  # its state is the one its supervisors last wrote
            return f"<Group {self.name!r} stale: its supervisors were killed, not running>"
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

    def tail(self, lines: int = 20, instance: int | None = None,
             program: str | None = None) -> list[bytes]:
        """The last ``lines`` lines of the group's output file (bytes, each with its newline,
        a last line not yet ended without); none while the file does not exist. Raises
        ``ImmortalError`` if the monitor declares no output file, ``StateDirError`` if the
        file is a symlink (the monitor never writes through one). ``instance``: the lines
        and events of that instance only, in a group of several (the ``file`` monitor marks
        them ``stdout:K``, ``event:K``; ``InvalidSpec`` if the group has no instance K).
        ``program``: in a group of several programs, the file of that program's monitor
        (each program has its own)."""
        from . import tailing

        count = _count(lines)
        if instance is not None:
            self._instance(instance, self.status(), program)
        return list(tailing.tail(self._output_file(program), count, _of_instance(instance)))

    def follow(self, lines: int = 0, instance: int | None = None,
               program: str | None = None) -> Iterator[bytes]:
        """The last ``lines`` lines of the output file, then each line appended to it, as
        ``tail -F`` does: across rotations (a new file of the same name is read from its
        start, once the monitor writes there and the old file's end is read) and
        truncations, until the group ends. It polls the file (``tailing``); close the
        iterator to stop early. Raises as :meth:`tail`; ``instance`` as there."""
        from . import tailing

        count = _count(lines)
        if instance is not None:
            self._instance(instance, self.status(), program)
        return tailing.follow(self._output_file(program), count,
                              lambda: self.status().running, keep=_of_instance(instance))

    def _instance(self, instance: int | None, status: Status,
                  program: str | None = None) -> int | None:
        """``instance`` checked against the group's instances (None: all of them); in a
        group of several programs, against ``program``'s."""
        if instance is None:
            return None
        if isinstance(instance, bool) or not isinstance(instance, int):
            raise InvalidType(f"'instance' must be an int (got {type(instance).__name__}: "
                              f"{instance!r})")
        if program is None and status.programs():
            raise InvalidSpec(f"group {self.name!r} runs several programs: name the one of "
                              f"instance {instance} (program=..., GROUP/PROGRAM:K)")
        count = len([e for e in status.instances if program in (None, e.program)]) or 1
        if not 0 <= instance < count:
            whose = f"program {program!r} of group {self.name!r}" if program \
                else f"group {self.name!r}"
            raise InvalidSpec(f"'instance' must be from 0 to {count - 1}: {whose} runs "
                              f"{count} instance(s) (got {instance})")
        return instance

    def _output_file(self, program: str | None = None) -> str:
        spec = read_json(self.directory / "spec.json") or {}
        listed = {str(p.get("name")): p.get("log_path") for p in spec.get("programs") or ()}
        if program is None and listed:
            raise InvalidSpec(f"group {self.name!r} runs several programs, each with its "
                              "own output: name one (program=..., GROUP/PROGRAM); its "
                              "programs: " + ", ".join(listed))
        if program is not None and program not in listed:
            raise InvalidSpec(f"group {self.name!r} has no program {program!r}"
                              + (f"; its programs: {', '.join(listed)}" if listed else ""))
        # A group of one names its file in status.json, and in spec.json from before its
        # first status (a start under way): the file its monitor declared, either way.
        output = listed[program] if program is not None \
            else self.status().output or spec.get("log_path")
        if not output and not spec:
            raise NotRunning(f"group {self.name!r} has no record yet (a start of it has just "
                             "begun) or any more (it was forgotten); try again in a moment")
        if not output:
            what = f"program {program!r} of group" if program else "group"
            raise ImmortalError(f"the monitor of {what} {self.name!r} declares no output "
                                "file")
        return str(output)

    def status(self) -> Status:
        """The group's state now. A read changes nothing: a group whose supervisors were
        killed reads as ``stale``, its pids kept for the next start or stop to find."""
        status = read_status(self.directory)
        if status is None:
            return read_unstarted(self.directory) \
                or Status(self.name, "unknown", directory=str(self.directory))
        if self._popen is not None and self._popen.poll() is not None:
            status.running = False
        elif status.stale:
            return self._behind(status)
        return status

    def _behind(self, status: Status) -> Status:
        """A status whose supervisors are dead: killed, or replaced while ``status.json``
        could not be written (``peers.behind``)."""
        from .peers import behind

        return behind(self.directory, status)

    def orphans(self) -> list[int]:
        """Processes carrying the group's token (see immortal/orphans.py), found while no
        supervisor of the group runs: a target whose supervisors were killed, or its
        descendants. Empty while the group runs (they are its own), and off Linux."""
        from . import orphans

        if self.status().running:
            return []
        return [pid for pid, _ in orphans.find(self.directory)]

    def left_behind(self) -> bool:
        """Whether processes of the group run without its supervisors: :meth:`orphans`, or
        only its pipe holder (whose target died after them), which a stop ends too."""
        from . import orphans

        return bool(self.orphans() or (not self.status().running
                                       and orphans.holders(self.directory)))

    def wait_start(self) -> Status:
        """The status once a start in progress has settled: while the group lock is held
        but ``status.json`` shows no running group yet, or one whose first start still
        waits for its targets to be ready (``starting``), a start is under way; it is
        waited for (up to as long as that start may wait, plus a margin) until the group
        runs and is started, or the lock is let go (the start failed)."""
        status = self.status()
        lock = self.directory / "lock"
        if (status.running and not status.starting) or not lock_held(lock):
            return status
        deadline = time.monotonic() + _start_patience(
            read_json(self.directory / "spec.json") or {}) + MARGIN
        while (not status.running or status.starting) and lock_held(lock) \
                and time.monotonic() < deadline:
            time.sleep(POLL)
            status = self.status()
        return status

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
        """Wait until the group ends by itself (or by a stop from elsewhere); with
        ``timeout`` (seconds), ``StopTimeout`` if it still runs then."""
        if timeout is not None:
            from .checks import check_timeout

            timeout = check_timeout("timeout", timeout)
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

    def let_go(self) -> None:
        """The group stops: a reader that stopped reading (a loop left early) must not hold
        the pump, and with it the stop, for ever; the latest ``LIMIT`` lines are kept."""
        with self._changed:
            self._reading = False
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


def _of_instance(instance: int | None) -> Callable[[bytes], bool] | None:
    """Whether a line of the ``file`` monitor's output is instance ``instance``'s: its tag,
    after the time stamp, reads ``stdout:K``, ``stderr:K`` or ``event:K``. None: every
    line."""
    if instance is None:
        return None
    if isinstance(instance, bool) or not isinstance(instance, int) or instance < 0:
        raise InvalidType(f"'instance' must be an int of 0 or more (got {instance!r})")
    tags = {b"%s:%d" % (kind, instance) for kind in (b"stdout", b"stderr", b"event")}

    def keep(line: bytes) -> bool:
        tag = line.partition(b" ")[2].partition(b"|")[0]  # after the stamp, before the text
        return tag.strip() in tags
    return keep


def _start_patience(spec: dict[str, Any]) -> float:
    """How long a start of the group ``spec`` (spec.json's) may take: its roles' start,
    its targets' readiness, and a failed one's stop (as the caller of the start waits)."""
    programs = [entry for entry in spec.get("programs") or () if isinstance(entry, dict)]
    each = programs or [spec]
    ready = max(float(view.get("ready_timeout") or 0.0) + float(view.get("stop_timeout") or 0.0)
                for view in each)
    return float(spec.get("start_timeout") or 30.0) + ready
