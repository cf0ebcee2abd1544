"""A monitor in a process of its own, forked by the pump: for a monitor that takes output
and cannot tell what it received (no ``delivered``).

Such a monitor's call could not be made exactly once in the pump: a pump SIGKILLed after
the monitor wrote a line and before the journal recorded it leaves no process that knows
whether the write happened, so its successor hands the line over again. In a process of
its own the call is not cut by the pump's death. The process finishes the call it is in,
records its mark in the journal's ledger (shared memory: the journal outlives the pump),
and ends; the successor's process for that slot takes the slot's lock only once it has
ended, and the pump reads the marks only then. A kill aimed at the monitor's own process
is the monitor's death: its pump dies with it, as it did when the monitor ran inside it,
and the successor hands the call over again (at least once, and skipped after a few deaths
in a row: ``suspects``).

The pump's side (``Remote``, here) is a ``delivery.Sink`` whose calls are messages, each
answered before the next; the monitor's process (``monitorchild``) runs the real ``Sink``.
Its ``Monitor.send`` goes straight to the target, on its own hold of the pump's end of the
channel (``channel.Sender``), from any of its threads, in a call or not.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from . import _linux
from .channel import Sender
from .delivery import Failed, Sink
from .ledger import Ledger
from .monitorchild import holder, read, serve, write

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

#: how long the pump waits for a new monitor process to say it is ready (its monitor
#: made: a module imported, a file opened)
READY_TIMEOUT = 60.0
END_TIMEOUT = 2.0  #: how long a monitor process has to end when the pump lets it go
BETWEEN_CALLS = 0.1  #: how long a closing pump waits for a call in progress to return


def wanted(factory: object) -> bool:
    """Whether the monitor ``factory`` makes takes output and has no ``delivered``: the
    one kind whose call a pump's death could leave in doubt (Linux: others have no
    process titles to tell it from the pump's, and keep it in the pump)."""
    if not _linux.LINUX:
        return False
    from .monitor import Monitor  # noqa: PLC0415 - layer: monitor is below, the name is late

    if isinstance(factory, type) and issubclass(factory, Monitor):
        def overrides(name: str) -> bool:
            return getattr(factory, name) is not getattr(Monitor, name)

        return not overrides("delivered") and any(
            overrides(name) for name in ("block", "lines", "stdout", "stderr"))
    hooks = set(dir(factory))
    return "monitor_delivered" not in hooks and bool(
        hooks & {"monitor_block", "monitor_lines", "monitor_stdout", "monitor_stderr"})


def lock_path(directory: Path, slot: int) -> Path:
    """The lock a monitor process holds for its slot while it lives."""
    return directory / f".monitor-{slot}.lock"


def left(directory: Path) -> list[tuple[int, int]]:
    """The monitor processes alive under a group's instance ``directory`` (its programs'
    directories too), each by its slot's lock (held while it lives): pid and start time.
    A dead pump's: still in their grace, for a stop to end with the rest of the group."""
    import fcntl  # noqa: PLC0415 - POSIX only, as the locks are

    found = []
    for path in [*directory.glob(".monitor-*.lock"),
                 *directory.glob("*/*/.monitor-*.lock")]:  # (programs/NAME/)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # got: nobody holds it
        except BlockingIOError:
            named = holder(fd)
            if named is not None:
                found.append(named)
        except OSError:
            pass
        finally:
            os.close(fd)
    return found


class CannotFork(OSError):
    """The monitor's process could not be forked (a process limit): the monitor runs in
    the pump instead, at least once across its kills."""


class Remote(Sink):
    """The pump's side of a monitor in a process of its own (``wanted``)."""

    def __init__(self, name: str, slot: int, ledger: Ledger, ledgers: list[Ledger],
                 build: Callable[[list[Ledger], Sender | None], Sink],
                 lock: Path, title: str, send: Sender | None) -> None:
        super().__init__(name, slot, ledger, {}, ledgers=ledgers)
        self._lock = threading.Lock()  # one call at a time: drop mode's thread, the pump's
        self._closed = False
        ours, theirs = socket.socketpair()
        with warnings.catch_warnings():
            # (3.12: a fork beside drop mode's threads. The child never takes their locks:
            # it runs the monitor alone, on streams of its own.)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                self.pid = os.fork()
            except OSError as exc:  # EAGAIN: a process limit, a pids cgroup
                ours.close()
                theirs.close()
                raise CannotFork(exc) from exc
        if self.pid == 0:  # the monitor's process: never returns
            serve(theirs, name, lock, title, lambda: build(self._ledgers, send),
                  keep=send.fileno() if send is not None else -1)
        theirs.close()
        self._sock = ours
        ours.settimeout(READY_TIMEOUT)
        try:
            kind, value = self._receive()
        except (OSError, EOFError) as exc:
            self.close()
            raise Failed(name, RuntimeError(
                f"its process ({self.pid}) did not start: {exc or type(exc).__name__}")) \
                from None
        ours.settimeout(None)
        if kind == "failed":
            self.close()
            raise Failed.said(name, value)
        self.takes, self._by_line, self.terminal = value

    @property
    def by_line(self) -> bool:
        return self._by_line

    def output(self, stream: int, data: bytes, offset: int, end: int,
               instance: int | None = None) -> None:
        self._call(("out", stream, data, offset, end, instance, self.counts), "output")

    def event(self, hook: str, kwargs: dict[str, Any], strict: bool = False) -> None:
        said = self._call(("event", hook, kwargs, strict), hook)
        if said is not None:
            raise Failed.said(self.name, said)

    def forget(self, count: int) -> None:
        super().forget(count)
        self._call(("forget", count), "forget")

    def add_ledger(self, journal_fd: int) -> None:
        """One more instance (a scale up): its journal's ledger in the monitor's process
        too (the host's list, shared with this sink, has it already)."""
        self._call(("ledger",), "ledger", journal_fd)

    def _call(self, message: tuple[Any, ...], what: str, fd: int | None = None) -> Any:
        with self._lock:
            if self._closed:
                return None
            try:
                write(self._sock, message, fd)
                return self._receive()[1]
            except (OSError, EOFError, pickle.PicklingError) as exc:
                if not self._closed:  # else closed under it (``close``): no more calls
                    self._died(what, exc)
                return None

    def _receive(self) -> tuple[str, Any]:
        return read(self._sock)  # type: ignore[return-value]

    def _died(self, what: str, exc: BaseException) -> None:
        """The monitor's process is gone (it crashed, or was killed) in a call.

        The pump dies too, as it did when the monitor ran inside it: the call stays in
        doubt in the journal, and the successor hands it over again (``suspects`` skips it
        for this monitor after a few deaths in a row). Its last event (``shutdown``) is
        the exception: the pump is ending anyway, and goes on without it."""
        self._closed = True
        status = _reap(self.pid, 0.0)
        sys.stderr.write(f"immortal: pump: monitor {self.name!r}: its process ({self.pid}) "
                         f"ended in {what!r} ({status or exc}); ")
        if what == "shutdown":
            sys.stderr.write("it gets no more calls\n")
            sys.stderr.flush()
            return
        sys.stderr.write("the pump ends with it, as when a monitor dies in it (a next "
                         "pump hands the monitor that call again)\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def close(self) -> None:
        """No more calls: the monitor's process ends and is reaped. One still in a call
        (drop mode's thread waits on it: the pump has given it its time already) is killed,
        as a monitor's thread ended with its pump when it ran in it; so is one that has not
        ended by ``END_TIMEOUT``."""
        held = self._lock.acquire(timeout=BETWEEN_CALLS)
        try:
            if self._sock.fileno() < 0:
                return
            self._closed = True
            if held:
                try:
                    write(self._sock, ("end", None))
                except OSError:
                    pass
            else:  # the thread in the call gets an end of file, and goes on quietly
                self._sock.shutdown(socket.SHUT_RDWR)
            if _reap(self.pid, END_TIMEOUT if held else 0.0) is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _reap(self.pid, END_TIMEOUT)
            if held:
                self._sock.close()
        finally:
            if held:
                self._lock.release()


def _reap(pid: int, timeout: float) -> str | None:
    """Wait up to ``timeout`` for ``pid`` (our child) to end: how it ended, or None."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, raw = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return "ended"  # reaped already (a pump that reaps its strays)
        if done:
            if os.WIFSIGNALED(raw):
                return f"killed by {signal.Signals(os.WTERMSIG(raw)).name}"
            return f"exit code {os.waitstatus_to_exitcode(raw)}"
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)  # a process told to end: it ends in a moment
