"""Step 6 of a start (``launcher.py``'s docstring lists them): the first role started as
a fresh interpreter (or a standby handed its arguments), with the group's lock and the
write end of a handshake pipe, and its handshake read until the target is ready
(``readiness.py``) or the role reports why it is not. A start that fails here leaves no
role running; the files it wrote are ``prepare.py``'s to remove.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import orphans, standby
from .detach import read_handshake
from .errors import ImmortalError, MonitorError, StartError
from .events import ExitStatus
from .group import Group
from ._linux import boot_ticks, is_alive
from .readiness import SPAWN
from .records import replace
from .roles import Adopt, Fds, RoleArgs, role_command
from .spec import Spec, Strategy
from .state import Lock

_ERRORS = {"StartError": StartError, "MonitorError": MonitorError}


def start_roles(spec: Spec, lock: Lock, capture: bool = False,
                adopt: Adopt | None = None, sockets: tuple[int, ...] = (),
                leftover: bool = False) -> Group:
    """Step 6: start the first role (the daemon, or the pump without one) and wait on its
    handshake; a handle on the group once its target is ready. ``capture`` (development
    only): the role's output comes to the handle's ``stdout`` and ``stderr``."""
    directory = Path(spec.directory)
    began = boot_ticks()
    development = spec.strategy == Strategy.DEVELOPMENT
    role = "daemon" if spec.strategy == Strategy.DAEMON else "pump"
    hs_r, hs_w = os.pipe()
    parent_r = parent_w = None
    if development:
        parent_r, parent_w = os.pipe()
    fds = Fds(handshake=hs_w, lock=lock.fd, parent=parent_r, listen=sockets or None)
    args = RoleArgs(role, str(directory), detach=not development, fds=fds, adopt=adopt,
                    leftover=leftover)
    logged = _log_sizes(directory)
    log: Any = None if development else open(directory / f"{role}.log", "ab")
    out = subprocess.PIPE if capture else log
    ready = None if development else standby.claim(role)
    try:
        # A standby (immortal run) gets its files over its socket, not as inherited fds.
        files = {"handshake": hs_w, "lock": lock.fd, "log": log.fileno()} if log else {}
        if ready is not None and ready.go(replace(args, fds=Fds()).to_json(), files,
                                          str(directory), sockets):
            popen = ready.popen
        else:
            popen = subprocess.Popen(role_command(args), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=out, pass_fds=fds.numbers(), env=standby.role_env(),
                                     cwd=str(directory), start_new_session=not development)
    finally:
        os.close(hs_w)
        if parent_r is not None:
            os.close(parent_r)
        if log is not None:
            log.close()
    pids: dict[str, tuple[int, int | None]] = {}
    try:
        with _sigterm_raises():
            adopted = _handshake(spec, hs_r, pids, popen, logged)
    except BaseException:
        _kill_roles(pids, popen, directory, adopt is None, began)
        if parent_w is not None:
            os.close(parent_w)
        raise
    finally:
        os.close(hs_r)
        if not development:
            # The first process exits as soon as it has detached (double fork).
            try:
                popen.wait(timeout=spec.start_timeout)
            except subprocess.TimeoutExpired:
                pass
    group = Group(spec.name, directory, popen if development else None, parent_w)
    group.adopted = adopted
    return group


class Terminated(BaseException):
    """A SIGTERM came while the caller waited for its start (``_sigterm_raises``)."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the caller waits for the start: a SIGTERM ends the start as Ctrl-C does (its
    roles and target killed, its files removed), raised as ``Terminated``; ``passed_on``
    then gives it to whoever had it before. Only in the main thread, and not where it is
    ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_IGN, None):
        yield
        return

    def terminated(number: int, frame: Any) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def passed_on() -> Iterator[None]:
    """Around a whole start: a SIGTERM that ended it (``Terminated``, once everything of
    the start is undone) is raised again for whoever had it before: by default the process
    ends of it now, as without a start under way; a ``Manager`` stops its other groups
    first. Else (a handler that returns) it is a ``StartError``."""
    try:
        yield
    except Terminated:
        signal.raise_signal(signal.SIGTERM)
        raise StartError("the start was ended by a SIGTERM; nothing of it is left") from None


def _handshake(spec: Spec, fd: int, pids: dict[str, tuple[int, int | None]],
               popen: subprocess.Popen[bytes], logged: dict[str, int]) -> int | None:
    """Wait for the first role's answer: the pid of the target it adopted, if it did."""
    patience = _patience(spec)
    deadline = time.monotonic() + patience
    try:
        for message in read_handshake(fd, deadline):
            if "role" in message:
                pids[message["role"]] = (message["pid"], message.get("start_time"))
            elif "error" in message:
                raise answer_error(spec, message)
            elif message.get("ok"):
                return message["target"] if message.get("adopted") else None
    except TimeoutError:
        _late_roles(spec, fd, pids)
        raise StartError(f"group {spec.name!r} did not start within {patience:g} s "
                         f"(start_timeout{_READY_WAIT if _waits(spec) else ''}); "
                         f"see the logs in {spec.directory}") from None
    raise StartError(f"group {spec.name!r} failed to start: {_logs_tail(spec, logged)}")


_READY_WAIT = " + ready_timeout + stop_timeout"
#: how long a start that ran out of time still reads the roles that report late: each is
#: killed with the rest, rather than left to start the group its caller was told failed
LATE_ROLES = 5.0


def _late_roles(spec: Spec, fd: int, pids: dict[str, tuple[int, int | None]]) -> None:
    """After the handshake's deadline: the pids of the roles that report after it, until
    every role of the strategy has (or the start ended, or ``LATE_ROLES`` passed)."""
    roles = 2 if spec.strategy == Strategy.DAEMON else 1
    try:
        for message in read_handshake(fd, time.monotonic() + LATE_ROLES):
            if "role" in message:
                pids[message["role"]] = (message["pid"], message.get("start_time"))
                if len(pids) >= roles:
                    return
            elif "error" in message or message.get("ok"):
                return
    except TimeoutError:
        pass


def _waits(spec: Spec) -> bool:
    """Whether the start waits for a readiness other than the spawn."""
    return any(view.ready != SPAWN for view in spec.each())


def _patience(spec: Spec) -> float:
    """How long the handshake may take: the roles' start, then (unless ready at its spawn)
    the target's readiness and, if it fails, the stop of the target (the longest of its
    programs')."""
    return spec.start_timeout + max(0.0 if view.ready == SPAWN else
                                    view.ready_timeout + view.stop_timeout
                                    for view in spec.each())


def answer_error(spec: Spec, message: dict[str, Any]) -> ImmortalError:
    """The error a role reported; a target that was not ready comes with its exit status
    and its last lines on stderr, shown under the message."""
    error = _ERRORS.get(message.get("error", ""), StartError)
    text = str(message.get("message") or "the group failed to start")
    if error is not StartError or "status" not in message:
        return error(text)
    status = ExitStatus.from_json(message["status"]) if message.get("status") else None
    lines = [str(line) for line in message.get("stderr") or []]
    text = f"group {spec.name!r} failed to start: {text}"
    if lines:
        text += "; its last lines on stderr:\n" + "\n".join(f"  {line}" for line in lines)
    stopped = message.get("stopped")
    return StartError(text, status, lines, stopped if isinstance(stopped, str) else None)


_LOGS = ("daemon.log", "pump.log")


def _log_sizes(directory: Path) -> dict[str, int]:
    """How long the role logs are before this start: what it adds is what it says."""
    sizes = {}
    for log in _LOGS:
        try:
            sizes[log] = (directory / log).stat().st_size
        except OSError:
            sizes[log] = 0
    return sizes


def _logs_tail(spec: Spec, logged: dict[str, int]) -> str:
    """What the roles of this start wrote to their logs (not what an earlier run did),
    the end of it; or that they died without a word (killed)."""
    text = []
    for log in _LOGS:
        try:
            with open(Path(spec.directory) / log, "rb") as handle:
                handle.seek(logged.get(log, 0))
                data = handle.read()[-2000:]
        except OSError:
            continue
        if data.strip():
            text.append(f"{log}: {data.decode('utf-8', 'replace').strip()}")
    return "; ".join(text) or ("its supervisors ended before it was ready, without a "
                               f"message (killed?); see {spec.directory}")


def _kill_roles(pids: dict[str, tuple[int, int | None]],
                popen: subprocess.Popen[bytes], directory: Path, targets: bool,
                began: int) -> None:
    """Make sure no role of a failed start survives it (they report failure and exit),
    nor the pipe holder its daemon started and, killed meanwhile, could not end; with
    ``targets``, nor a target its roles spawned and could not end, killed first (a start
    that adopted one leaves it, as its roles do). ``began``: when the start began (boot
    ticks)."""
    deadline = time.monotonic() + 5.0
    for role in ("daemon", "pump"):
        if role not in pids:
            continue
        pid, start_time = pids[role]
        while is_alive(pid, start_time) and time.monotonic() < deadline:
            time.sleep(0.005)
        if is_alive(pid, start_time):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if popen.poll() is None:
        try:
            popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    # Its own holders only (started since the start began): an older one is a dead
    # group's, which keeps what that group's targets wrote for the next start (adoption).
    own = [(pid, started) for pid, started in orphans.holders(directory) if started >= began]
    orphans.end(orphans.find(directory) + own if targets else own)
