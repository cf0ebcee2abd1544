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

The pump's side (``Remote``) is a ``delivery.Sink`` whose calls are messages, each
answered before the next: the monitor's process runs the real ``Sink``. Its calls back
into the pump (``Monitor.send``) come as messages in the middle of a call.
"""

from __future__ import annotations

import atexit
import gc
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import _linux, delivery, exiting, relay
from .delivery import Failed, Sink
from .errors import MONITOR_ERRORS, ChannelError
from .ledger import Ledger

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

#: how long a monitor's process may finish the call it is in once its pump is gone
FINISH_GRACE = 2.0
#: how long a new monitor process waits for the one before it in its slot to end
#: (past its grace: that one was stopped, and is killed)
TAKE_OVER = FINISH_GRACE + 1.0
#: how long the pump waits for a new monitor process to say it is ready (its monitor
#: made: a module imported, a file opened)
READY_TIMEOUT = 60.0
END_TIMEOUT = 2.0  #: how long a monitor process has to end when the pump lets it go
BETWEEN_CALLS = 0.1  #: how long a closing pump waits for a call in progress to return
_FRAME = struct.Struct("=I")


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


class Remote(Sink):
    """The pump's side of a monitor in a process of its own (``wanted``)."""

    def __init__(self, name: str, slot: int, ledger: Ledger, ledgers: list[Ledger],
                 build: Callable[[list[Ledger], Callable[[Any], None] | None], Sink],
                 lock: Path, title: str, send: Callable[[Any], None] | None) -> None:
        super().__init__(name, slot, ledger, {}, ledgers=ledgers)
        self._send = send
        self._lock = threading.Lock()  # one call at a time: drop mode's thread, the pump's
        self._closed = False
        ours, theirs = socket.socketpair()
        self.pid = os.fork()
        if self.pid == 0:  # the monitor's process: never returns
            _serve(theirs, name, lock, title, lambda: build(
                self._ledgers, _send_to_pump if send is not None else None))
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
                data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
                frame = _FRAME.pack(len(data)) + data
                if fd is None:
                    self._sock.sendall(frame)
                else:
                    socket.send_fds(self._sock, [frame], [fd])
                while True:
                    kind, value = self._receive()
                    if kind != "send":
                        return value
                    self._reply_send(value)
            except (OSError, EOFError, pickle.PicklingError) as exc:
                if not self._closed:  # else closed under it (``close``): no more calls
                    self._died(what, exc)
                return None

    def _reply_send(self, message: Any) -> None:
        """A ``Monitor.send`` from the monitor's process, in the middle of its call."""
        error = None
        try:
            assert self._send is not None
            self._send(message)
        except ChannelError as exc:
            error = str(exc)
        data = pickle.dumps(("sent", error), pickle.HIGHEST_PROTOCOL)
        self._sock.sendall(_FRAME.pack(len(data)) + data)

    def _receive(self) -> tuple[str, Any]:
        size = _FRAME.unpack(_exactly(self._sock, _FRAME.size))[0]
        return pickle.loads(_exactly(self._sock, size))  # type: ignore[no-any-return]

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
        sys.stderr.write("the pump ends with it, and its successor hands that call over "
                         "again\n")
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
                    data = pickle.dumps(("end", None))
                    self._sock.sendall(_FRAME.pack(len(data)) + data)
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


def _exactly(sock: socket.socket, size: int, fds: list[int] | None = None) -> bytes:
    """``size`` bytes from ``sock``; with ``fds``, the descriptors passed with them."""
    chunks, left = [], size
    while left:
        if fds is None:
            chunk = sock.recv(left)
        else:
            chunk, passed, _, _ = socket.recv_fds(sock, left, 1)
            fds.extend(passed)
        if not chunk:
            raise EOFError("the other side is gone")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- the monitor's process
_socket: socket.socket | None = None  #: the pump's socket, in the monitor's process


def _serve(sock: socket.socket, name: str, lock: Path, title: str,
           build: Callable[[], Sink]) -> None:
    """The monitor's process, just forked from the pump: never returns."""
    code = 1
    try:
        _detach(sock)
        _linux.set_title(title)
        _take_slot(lock)
        global _socket
        _socket = sock
        try:
            sink = build()
        except MONITOR_ERRORS as exc:
            _answer(("failed", f"{type(exc).__name__}: {exc}"))
            raise SystemExit(1) from None
        _answer(("ready", (sink.takes, sink.by_line, bool(getattr(sink, "terminal", False)))))
        _loop(sock, sink)
        del sink
        exiting.finish()  # what its monitor left open flushed, its exit functions run
        code = 0
    except BaseException:  # noqa: BLE001 - whatever it is, this process ends here
        if not isinstance(sys.exc_info()[1], (SystemExit, EOFError, BrokenPipeError,
                                              ConnectionResetError)):
            import traceback  # noqa: PLC0415 - a failure's path

            sys.stderr.write(f"immortal: monitor {name!r}: its process failed:\n")
            traceback.print_exc(file=sys.stderr)
    finally:
        exiting.leave(code)


def _detach(sock: socket.socket) -> None:
    """Leave the pump's world behind: its descriptors (its locks above all, which say
    the pump lives), its signal handlers, its session, its buffered streams."""
    # The pump's objects are never collected, nor flushed, here (``exiting.finish`` sees
    # only what was made since): their descriptors are not ours.
    gc.freeze()
    atexit._clear()  # the pump's exit functions are not the monitor's
    signal.set_wakeup_fd(-1)
    for number in signal.valid_signals():
        if number in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(number, signal.SIG_IGN if number == signal.SIGPIPE
                          else signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
    os.setsid()  # no terminal's signals; never taken for a target of the daemon's
    # Not the pump's buffers (what it had not flushed would be written twice); its
    # stderr is kept where it is the role log's (``rolelog``: bounded, never fatal).
    sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
    if hasattr(sys.stderr, "buffer"):
        sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
    delivery.KILL_AFTER_CALL = None  # a test hook aimed at the pump
    threading.Thread(target=_finish_when_orphaned, args=(keep,), daemon=True).start()


def _finish_when_orphaned(fd: int) -> None:
    """Once the pump is gone, the call in progress has ``FINISH_GRACE`` to end; then the
    process is ended by the kernel (SIGALRM's default), whatever its monitor is doing."""
    poll = select.poll()
    poll.register(fd, select.POLLHUP)
    while not poll.poll():
        pass
    signal.setitimer(signal.ITIMER_REAL, FINISH_GRACE)


def _take_slot(lock: Path) -> None:
    """Hold the slot's lock: once the process before this one in the slot has ended, so
    that its last call's mark is in the journal before the pump reads the marks. One
    that outlives its grace (stopped) is killed."""
    import fcntl  # noqa: PLC0415 - POSIX only, and this process's alone

    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + TAKE_OVER
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.002)  # the one before ends in a moment: its call is done
                continue
        _kill_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        break
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {_linux.process_start_time(os.getpid())}\n".encode(), 0)


def _kill_holder(fd: int) -> None:
    """SIGKILL the process the lock file names, if it is still that process."""
    try:
        pid, started = os.pread(fd, 64, 0).split()
        if _linux.process_start_time(int(pid)) == int(started):
            os.kill(int(pid), signal.SIGKILL)
    except (ValueError, OSError):
        pass


def _answer(message: tuple[str, Any]) -> None:
    assert _socket is not None
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    _socket.sendall(_FRAME.pack(len(data)) + data)


def _send_to_pump(message: Any) -> None:
    """``Monitor.send`` in the monitor's process: through the pump, in the call."""
    assert _socket is not None
    _answer(("send", message))
    size = _FRAME.unpack(_exactly(_socket, _FRAME.size))[0]
    _, error = pickle.loads(_exactly(_socket, size))
    if error is not None:
        raise ChannelError(error)


def _loop(sock: socket.socket, sink: Sink) -> None:
    """Answer the pump's calls, one at a time, until it says the end or is gone."""
    ledgers = sink._ledgers  # noqa: SLF001 - the sink's own list: a scale changes it
    while True:
        fds: list[int] = []
        try:
            size = _FRAME.unpack(_exactly(sock, _FRAME.size, fds))[0]
            kind, *args = pickle.loads(_exactly(sock, size))
        except EOFError:
            return
        said = None
        if kind == "end":
            return
        if kind == "out":
            *call, sink.counts = args
            sink.output(*call)
        elif kind == "event":
            try:
                sink.event(*args)
            except Failed as exc:
                said = str(exc).partition(": ")[2]
        elif kind == "forget":
            sink.forget(args[0])
            del ledgers[args[0]:]
            _count(sink, len(ledgers))
        elif kind == "ledger":
            ledgers.append(Ledger(relay.open_journal(fds[0])))
            os.close(fds[0])
            _count(sink, len(ledgers))
        _answer(("done", said))


def _count(sink: Sink, workers: int) -> None:
    plugin = getattr(sink, "plugin", None)
    if plugin is not None and hasattr(plugin, "workers"):
        plugin.workers = workers
