"""The daemon: keeps the pump alive and holds what must outlive a pump.

It runs no plugin code, so the process that holds everything is the least likely to
crash. It holds the instance lock and both ends of the target's stdout/stderr pipes, and
it is a child subreaper: when a pump dies, the target is re-parented to the daemon, which
starts a new pump that adopts the target (same pid, same pipes, nothing lost that was still
in the pipe), and reaps the target for that pump when it dies.

Signals: SIGTERM/SIGINT stop the group (passed to the pump), SIGHUP restarts the target.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from . import control, dirwatch, orphans, process
from .detach import Handshake, detach
from .events import DAEMON_RESTART, PUMP_RESTART, PUMP_START, ExitStatus
from .relay import make_channel, make_journal, make_pipe
from .spec import Spec
from .errors import NotRunning
from .state import SOCKET_NAME, parent_pid, process_start_time, read_json, write_json

PUMP_RESTART_MIN = 0.05  # first delay when pumps keep dying at once; doubles to the max
PUMP_RESTART_MAX = 5.0
PUMP_STABLE = 1.0  # a pump that lived this long restarts at once


def role_command(args: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "immortal._role", json.dumps(args)]


def exec_daemon(spec: Spec, args: dict[str, Any]) -> None:
    """Replace this process (a pump whose daemon died) with a daemon: same pid."""
    fds = args["fds"]
    for fd in (fds.get("lock"), *fds["out"], *fds["err"], fds.get("journal"),
               *(fds.get("channel") or ())):
        if fd is not None:
            os.set_inheritable(fd, True)
    argv = role_command({"role": "daemon", "dir": spec.directory, **args})
    os.execv(argv[0], argv)


class Daemon:
    def __init__(self, spec: Spec, args: dict[str, Any]) -> None:
        self.spec = spec
        self.directory = Path(spec.directory)
        fds = args.get("fds", {})
        self.handshake = Handshake(fds.get("handshake"))
        self.lock_fd = fds.get("lock")
        if fds.get("out"):
            self.out = tuple(fds["out"])
            self.err = tuple(fds["err"])
            for fd in (*self.out, *self.err):
                os.set_inheritable(fd, False)
        else:
            self.out = make_pipe()
            self.err = make_pipe()
        # The relay journal: what a pump read but did not deliver outlives it.
        self.journal = fds["journal"] if fds.get("journal") is not None else make_journal()
        os.set_inheritable(self.journal, False)
        self.channel: list[int] | None = None  # both ends, held for the group's life
        if fds.get("channel"):
            self.channel = list(fds["channel"])
            for fd in self.channel:
                os.set_inheritable(fd, False)
        elif spec.channel:
            self.channel = list(make_channel())
        self.why: str = args.get("why", PUMP_START)
        adopt = args.get("adopt")
        self.target_pid: int | None = adopt["pid"] if adopt else None
        self.target_started: float | None = adopt["started_wall"] if adopt else None
        self.target_exit: ExitStatus | None = None
        self.pump: _ForkedPump | None = None
        self.pump_started = 0.0
        self.pump_sock: socket.socket | None = None
        self.pump_failures = 0
        self.started = False  # the first pump reported success
        self.stopping = False
        self.finished = False
        self.restart_at: float | None = None
        self.stranger = -1
        self.selector = selectors.DefaultSelector()

    def run(self) -> int:
        self.handshake.send(role="daemon", pid=os.getpid(),
                            start_time=process_start_time(os.getpid()))
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(number, _ignore)
        self.selector.register(wake_r, selectors.EVENT_READ, "signal")
        if self.why == DAEMON_RESTART:
            self.started = True
            self._reap()  # the target may have died while we were exec'ing
            self._watch_stranger()
        self.control = control.Server(self.directory / SOCKET_NAME, self.selector,
                                      self._command)
        dirwatch.keep(self.directory, self.selector, self.lock_fd, self._dir_restored)
        process.set_title(f"immortal: daemon {self.directory}")
        self._start_pump(self.why, None)
        self.handshake.close()  # the pump holds its own copy and answers the caller
        while True:
            timeouts = [t for t in (self.restart_at, self.control.next_deadline()) if t]
            timeout = max(0.0, min(timeouts) - time.monotonic()) if timeouts else None
            for key, _ in self.selector.select(timeout):
                if callable(key.data):
                    key.data(key.fileobj)  # the control socket
                elif key.data == "signal":
                    self._on_signal(wake_r)
                elif key.data == "stranger":
                    self._on_stranger()
                else:
                    self._on_pump_message(key.fileobj)  # type: ignore[arg-type]
            self.control.drop_idle()
            if self.restart_at is not None and time.monotonic() >= self.restart_at:
                self.restart_at = None
                self._start_pump(PUMP_RESTART, str(self.directory / "pump.log.1"))
            if self.pump is None and self.restart_at is None:
                return self._end()

    # ----------------------------------------------------------------- pump
    def _start_pump(self, why: str, message_file: str | None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log = self.directory / "pump.log"
        if why == PUMP_RESTART and log.exists():
            os.replace(log, self.directory / "pump.log.1")
        adopt = None
        if (self.target_pid is not None and self.target_exit is None and self.stranger < 0
                and parent_pid(self.target_pid) != os.getpid()):
            # Not re-parented to us, so not alive as the old pump's orphan: already gone.
            self.target_pid = self.target_started = None
        if self.target_pid is not None:
            adopt = {"pid": self.target_pid, "started_wall": self.target_started,
                     "exit": self.target_exit.to_json() if self.target_exit else None}
        fds: dict[str, Any] = {"out": list(self.out), "err": list(self.err),
                               "journal": self.journal, "channel": self.channel,
                               "lifeline": theirs.fileno(), "lock": self.lock_fd,
                               "handshake": self.handshake.fd}
        args = {"role": "pump", "dir": str(self.directory), "why": why, "adopt": adopt,
                "message_file": message_file, "daemon_pid": os.getpid(), "fds": fds}
        keep = [fd for fd in (*self.out, *self.err, self.journal, *(self.channel or ()),
                              theirs.fileno(), self.lock_fd,
                              self.handshake.fd) if fd is not None]
        self.pump = _fork_pump(self.spec, args, keep, log)
        theirs.close()
        self.pump_sock = ours
        self.pump_started = time.monotonic()
        self.selector.register(ours, selectors.EVENT_READ, "pump")
        if self.target_exit is not None:
            self.target_pid = self.target_exit = None  # handed over to the new pump

    def _on_pump_message(self, sock: socket.socket) -> None:
        data = control.receive(sock)
        if data is None:
            return
        if not data:
            # The pump is dying; SIGCHLD tells when it is gone.
            self.selector.unregister(sock)
            return
        self._handle_message(data)

    def _handle_message(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if "target" in message:
            self.target_pid = message["target"]
            self.target_started = message.get("started_wall")
            self.target_exit = None
        if message.get("exited") is not None and message["exited"] == self.target_pid:
            self.target_pid = self.target_started = None
        if message.get("started"):
            self.started = True
        if "finish" in message:
            self.finished = True

    def _pump_died(self, status: ExitStatus) -> None:
        assert self.pump is not None
        self.pump.returncode = status.code if status.code is not None else -(status.signal or 0)
        self.pump = None
        if self.pump_sock is not None:
            # What the pump said before it died (a target's death, its finish) still counts.
            self.pump_sock.setblocking(False)
            while True:
                try:
                    data = self.pump_sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                self._handle_message(data)
            try:
                self.selector.unregister(self.pump_sock)
            except (KeyError, ValueError):
                pass
            self.pump_sock.close()
            self.pump_sock = None
        if self.finished or self.stopping or not self.started:
            return  # the group ends
        sys.stderr.write(f"immortal: daemon: pump {status}; starting a new one\n")
        lived = time.monotonic() - self.pump_started
        self.pump_failures = 0 if lived >= PUMP_STABLE else self.pump_failures + 1
        delay = 0.0
        if self.pump_failures:
            delay = min(PUMP_RESTART_MAX, PUMP_RESTART_MIN * 2 ** (self.pump_failures - 1))
        self.restart_at = time.monotonic() + delay

    # ----------------------------------------------------------------- signals, reaping
    def _on_signal(self, fd: int) -> None:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            return
        for number in data:
            if number in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
                if self.pump is not None:
                    self.pump.send_signal(signal.SIGTERM)
                else:
                    self.restart_at = None
            elif number == signal.SIGHUP and self.pump is not None:
                self.pump.send_signal(signal.SIGHUP)
            elif number == signal.SIGCHLD:
                self._reap()

    def _reap(self) -> None:
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            status = ExitStatus.from_wait_status(pid, raw)
            if self.pump is not None and pid == self.pump.pid:
                self._pump_died(status)
            elif pid == self.target_pid:
                self._target_reaped(status)
            # else: an orphaned grandchild, reaped so that no zombie stays

    def _watch_stranger(self) -> None:
        """Watch an adopted target that is not our child (its daemon died after it had
        adopted it, so it went to init): a pidfd tells when it ends, not how."""
        pid = self.target_pid
        if pid is None or self.target_exit is not None or parent_pid(pid) == os.getpid():
            return
        try:
            self.stranger = os.pidfd_open(pid)
        except (OSError, AttributeError):
            self._target_reaped(ExitStatus(pid=pid))
            return
        self.selector.register(self.stranger, selectors.EVENT_READ, "stranger")

    def _on_stranger(self) -> None:
        self.selector.unregister(self.stranger)
        os.close(self.stranger)
        self.stranger = -1
        if self.target_pid is not None:
            self._target_reaped(ExitStatus(pid=self.target_pid))

    def _target_reaped(self, status: ExitStatus) -> None:
        """The adopted target died: tell its pump, or keep it for the next pump."""
        if self.target_started is not None:
            status = ExitStatus(code=status.code, signal=status.signal,
                                core_dumped=status.core_dumped, pid=status.pid,
                                uptime=max(0.0, time.time() - self.target_started))
        if self.pump is not None and self.pump_sock is not None:
            try:
                self.pump_sock.send(json.dumps({"reaped": self.target_pid,
                                                "status": status.to_json()}).encode())
                self.target_pid = None
                return
            except OSError:
                pass
        self.target_exit = status

    def _command(self, request: dict[str, Any]) -> dict[str, Any]:
        """A control request: answered here (status) or passed on to the pump."""
        cmd = request["cmd"]
        if cmd == "status":
            return {"status": read_json(self.directory / "status.json"),
                    "daemon": os.getpid(), "pump": self.pump.pid if self.pump else None}
        if cmd == "stop":
            self.stopping = True
            if self.pump is None:
                self.restart_at = None  # between two pumps: nothing more to start
                return {}
        try:
            if self.pump is None or self.pump_sock is None:
                raise OSError("no pump is running right now (one is being restarted)")
            self.pump_sock.send(json.dumps(request).encode())
        except OSError as exc:
            if cmd == "stop":
                return {}  # the pump is ending already; the group ends with it
            raise NotRunning(f"the pump cannot be reached ({exc}); try again in a moment") \
                from None
        return {}

    def _dir_restored(self) -> None:
        """The instance directory was removed and made again (``dirwatch``, which took
        the lock anew): the socket, spec.json, and status.json from the pump."""
        self.control.close()
        self.control = control.Server(self.directory / SOCKET_NAME, self.selector,
                                      self._command)
        write_json(self.directory / "spec.json", self.spec.to_json())
        if self.pump_sock is not None:
            try:
                self.pump_sock.send(b'{"rewrite": true}')
            except OSError:
                pass  # a new pump writes status.json when it starts

    def _end(self) -> int:
        """The group ends: kill and reap whatever is left of it (escaped grandchildren)."""
        self.control.close()
        process.kill_children()
        orphans.end_group(self.directory)  # and those that went up with a dead daemon
        return 0


class _ForkedPump:
    """The pump as the daemon sees it: a pid, and how it ended."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def send_signal(self, number: int) -> None:
        if self.returncode is None:  # not reaped yet, so the pid is still the pump's
            os.kill(self.pid, number)


_frozen = False  # gc.freeze() done, before the first fork
_ROLE_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


def _fork_pump(spec: Spec, args: dict[str, Any], keep: list[int],
               log: Path) -> _ForkedPump:
    """Start the pump as a fork of this process, not as a fresh interpreter.

    The daemon is ours and single-threaded, so a fork is safe here (never in the caller,
    which may have threads). It saves an interpreter's start-up and the imports the two
    share, and their pages count half to each in PSS. ``pump`` is imported before the
    fork for the same reason; the monitor is imported only in the child.
    """
    from . import pump

    global _frozen
    if not _frozen:
        _preload_builtin_monitors(spec)
        # Once, before the first fork: the child's collector then leaves the pages of the
        # objects both processes share alone (copy-on-write keeps them shared).
        gc.freeze()
        _frozen = True
    sys.stderr.flush()
    # Blocked across the fork: the child must not run our handlers (they would write to
    # our wake-up pipe), and it takes the default actions until the pump sets its own.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _ROLE_SIGNALS)
    process.import_title()  # shared with the pump, which takes its title at once
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return _ForkedPump(pid)
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for number in _ROLE_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        _become_pump_fds(keep, log)
        process.set_title(f"immortal: pump {spec.directory}")  # its argv is still ours
        atexit._clear()  # the daemon's exit functions are not the pump's
        code = pump.main(spec, args)
        # What a fresh interpreter's exit would do for a monitor that left a buffered file
        # open: the pump's objects are freed (cycles too), which flushes and closes them.
        gc.collect()
        atexit._run_exitfuncs()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            # Never return into the daemon's loop, and run none of its clean-up.
            os._exit(code)
    raise AssertionError("unreachable")


def _preload_builtin_monitors(spec: Spec) -> None:
    """Import the group's built-in monitors (ours, like this module) before the first fork,
    so that their code is shared with every pump instead of copied into each: ≈ 1 MB of
    PSS. Imported only, never called; any other monitor is imported by the pump alone."""
    import importlib

    from . import entrypoints
    from .hookspecs import ENTRY_POINT_GROUP

    for name, _ in spec.monitors:
        value = name if ":" in name else entrypoints.find(ENTRY_POINT_GROUP, name)
        module = (value or "").partition(":")[0].strip()
        if module.startswith("immortal_monitors."):
            try:
                importlib.import_module(module)
            except Exception:  # the pump reports it, as it would without this
                pass


def _become_pump_fds(keep: list[int], log: Path) -> None:
    """stdin and stdout on /dev/null, stderr on pump.log, and none of the daemon's other
    files: a pump holding the daemon's end of the lifeline, or its control socket, would
    hide the daemon's death from itself and from clients."""
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    kept = {0, 1, 2, *keep}
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: close the gaps between the kept ones, up to the limit
        low = 3
        for fd in sorted(kept):
            if fd >= low:
                os.closerange(low, fd)
                low = fd + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        return
    for fd in open_fds:
        if fd not in kept:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own fd, closed already


def _ignore(number: int, frame: object) -> None:
    """The handler of the signals we take: the wake-up fd carries them to the loop."""


def main(spec: Spec, args: dict[str, Any]) -> int:
    process.reset_signals()
    fds = args.get("fds", {})
    log = str(Path(spec.directory) / "daemon.log")
    if args.get("detach"):
        keep = [fd for fd in (fds.get("handshake"), fds.get("lock")) if fd is not None]
        detach(keep, log)
    else:  # exec'd in place of a pump: stderr still points at the pump's log
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    process.set_subreaper()
    return Daemon(spec, args).run()
