"""The process of a monitor that runs apart from its pump (``monitorprocess``): forked by
the pump, it leaves the pump's world behind, holds its slot's lock once the process before
it in the slot has ended, makes the monitor and its ``delivery.Sink``, and answers the
pump's calls one at a time. Once the pump is gone it finishes the call it is in (within
``FINISH_GRACE``: then the kernel ends it) and ends.

The messages both ways are pickles, each after its length (``write``, ``read``).
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

from . import _linux, delivery, exiting, orphans, relay, rolelog
from .delivery import Failed, Sink
from .errors import MONITOR_ERRORS
from .ledger import Ledger

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

#: how long a monitor's process may finish the call it is in once its pump is gone
FINISH_GRACE = 2.0
#: how long a new monitor process waits for the one before it in its slot to end
#: (past its grace: that one was stopped, and is killed)
TAKE_OVER = FINISH_GRACE + 1.0
_FRAME = struct.Struct("=I")


def write(sock: socket.socket, message: tuple[Any, ...], fd: int | None = None) -> None:
    """One message: its length, then its pickle (with ``fd`` passed along)."""
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    frame = _FRAME.pack(len(data)) + data
    if fd is None:
        sock.sendall(frame)
    else:
        socket.send_fds(sock, [frame], [fd])


def read(sock: socket.socket, fds: list[int] | None = None) -> tuple[Any, ...]:
    """One message (``fds``: the descriptors passed with it); EOFError at the end."""
    size = _FRAME.unpack(_exactly(sock, _FRAME.size, fds))[0]
    return pickle.loads(_exactly(sock, size))  # type: ignore[no-any-return]


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


def serve(sock: socket.socket, name: str, lock: Path, title: str,
          build: Callable[[], Sink], keep: int = -1) -> None:
    """The monitor's process, just forked from the pump: never returns. ``keep``: a
    descriptor of the pump's its monitor uses too (the channel's), or -1."""
    code = 1
    try:
        _detach(sock, keep)
        _linux.set_title(title)
        _take_slot(lock)
        try:
            sink = build()
        except MONITOR_ERRORS as exc:
            write(sock, ("failed", f"{type(exc).__name__}: {exc}"))
            raise SystemExit(1) from None
        write(sock, ("ready", (sink.takes, sink.by_line,
                               bool(getattr(sink, "terminal", False)))))
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


def _detach(sock: socket.socket, keep: int) -> None:
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
    low = 3
    for fd in sorted({sock.fileno(), keep} - {-1}):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
    os.setsid()  # no terminal's signals; never taken for a target of the daemon's
    # Not the pump's buffers (what it had not flushed would be written twice). Its stderr,
    # the pump's log, goes through a role log of its own (bounded, never fatal: its size,
    # rate limits and exit summary are this process's).
    sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
    rolelog.reinstall()
    delivery.KILL_AFTER_CALL = None  # a test hook aimed at the pump
    threading.Thread(target=_finish_when_orphaned, args=(sock.fileno(),),
                     daemon=True).start()


def _finish_when_orphaned(fd: int) -> None:
    """Once the pump is gone, the call in progress has ``FINISH_GRACE`` to end; then the
    process is killed, whatever its monitor is doing: by this thread, even if the monitor
    handles or re-arms SIGALRM; by SIGALRM's default, even if the monitor holds the GIL
    in C code."""
    poll = select.poll()
    poll.register(fd, select.POLLHUP)
    while not poll.poll():
        pass
    signal.setitimer(signal.ITIMER_REAL, FINISH_GRACE)
    time.sleep(FINISH_GRACE)
    os.kill(os.getpid(), signal.SIGKILL)


def _take_slot(lock: Path) -> None:
    """Hold the slot's lock: once the process before this one in the slot has ended, so
    that its last call's mark is in the journal before the pump reads the marks. One
    that outlives its grace (stopped) is killed."""
    import fcntl  # noqa: PLC0415 - POSIX only, and this process's alone

    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:  # (its directory gone: the group's is put back meanwhile)
        sys.stderr.write(f"immortal: monitor process: no lock {str(lock)!r} ({exc}); it "
                         "does not wait for the one before it\n")
        return
    deadline = time.monotonic() + TAKE_OVER
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.002)  # the one before ends in a moment: its call is done
                continue
        named = holder(fd)  # (the start time proves it is still that process)
        orphans.end([named] if named is not None else [], timeout=0.0)
        fcntl.flock(fd, fcntl.LOCK_EX)
        break
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {_linux.process_start_time(os.getpid())}\n".encode(), 0)


def holder(fd: int) -> tuple[int, int] | None:
    """The process a slot's lock file names (its pid, its start time), if it names one."""
    try:
        pid, started = os.pread(fd, 64, 0).split()
        return int(pid), int(started)
    except (ValueError, OSError):
        return None


def _loop(sock: socket.socket, sink: Sink) -> None:
    """Answer the pump's calls, one at a time, until it says the end or is gone (then the
    call it was in is done, and its mark stored: the monitor ends as at the end)."""
    ledgers = sink._ledgers  # noqa: SLF001 - the sink's own list: a scale changes it
    while True:
        fds: list[int] = []
        try:
            kind, *args = read(sock, fds)
        except (EOFError, ConnectionResetError):
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
        try:
            write(sock, ("done", said))
        except (BrokenPipeError, ConnectionResetError):
            return


def _count(sink: Sink, workers: int) -> None:
    plugin = getattr(sink, "plugin", None)
    if plugin is not None and hasattr(plugin, "workers"):
        plugin.workers = workers
