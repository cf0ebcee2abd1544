"""``start()``: validate in the caller, take the lock, launch the first role, wait for it.

Steps, in order; nothing is created before step 4, and a failure after it ends every
process that was started and removes the files it wrote (never a directory or a lock file:
another start may have opened them):

1. check every argument (``spec.py``), naming the field, the expectation and the value;
2. find the monitor and run its ``check(options)`` here, in the caller;
3. check the instance directory (not a symlink, ours, not writable by others);
4. create it and take its lock (``AlreadyRunning`` if held; nothing of that group touched);
5. write ``spec.json`` and start the first role as a fresh interpreter, handing it the lock
   and the write end of a handshake pipe;
6. wait on the handshake until the target has been spawned, or raise the role's error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import monitoring, standby
from .detach import read_handshake
from .errors import (
    ImmortalError,
    InvalidSpec,
    InvalidType,
    MonitorError,
    MonitorOptionsError,
    StartError,
    UnknownKeyword,
    unknown_name,
    unusable_home,
)
from .group import Group
from .records import replace
from .roles import Fds, RoleArgs, role_command
from .spec import (
    RestartPolicy,
    Spec,
    Strategy,
    check_args,
    check_backpressure,
    check_cwd,
    check_env,
    check_exec,
    check_file,
    check_name,
    check_timeout,
    check_umask,
    default_name,
)
from .state import Lock, check_dir, check_socket_path, ensure_dir, home, is_alive, write_json

START_KEYWORDS = ("strategy", "monitor", "options", "monitors", "name", "exec", "env", "cwd",
                  "umask", "policy", "stop_timeout", "start_timeout", "capture", "backpressure",
                  "channel")
_ERRORS = {"StartError": StartError, "MonitorError": MonitorError}


def _caller_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def start(
    file: str | os.PathLike[str],
    args: Sequence[str] | None = None,
    *,
    strategy: str | Strategy = Strategy.DAEMON,
    monitor: str | None = None,
    options: Mapping[str, Any] | None = None,
    monitors: Mapping[str, Mapping[str, Any] | None] | None = None,
    name: str | None = None,
    exec: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    umask: int | None = None,
    policy: RestartPolicy | Mapping[str, Any] | None = None,
    stop_timeout: float = 10.0,
    start_timeout: float = 30.0,
    capture: bool = False,
    backpressure: str = "block",
    channel: bool = False,
    **unknown: Any,
) -> Group:
    """Launch ``file`` with ``args`` and keep it alive; return a handle on the group.

    Returns once the target has been spawned. Raises a subclass of ``ImmortalError`` in the
    caller for every problem, including an exec failure after detaching; nothing is left
    behind then. ``strategy`` is ``"daemon"`` (default), ``"unattached"`` or
    ``"development"``. One monitor is ``monitor=`` (default ``"file"``) with its
    ``options=``; several are ``monitors={"file": {...}, "jsonl": {...}}``, each with its own
    options and its own ``check()``. ``backpressure="block"`` (default) makes the target
    wait while the monitors are behind; ``"drop"`` skips lines instead and counts them.
    ``channel=True`` opens a JSON message channel between the target and the monitors
    (``immortal.channel``). With ``capture=True`` (development only) the target's output comes
    to ``group.stdout`` and ``group.stderr`` (iterators of lines) instead of the terminal.
    """
    for key in unknown:
        raise unknown_name("keyword argument", key, START_KEYWORDS, UnknownKeyword)
    strategy = Strategy.parse(strategy)
    pressure = check_backpressure(backpressure)
    if not isinstance(channel, bool):
        raise InvalidType(f"'channel' must be a bool (got {type(channel).__name__}: "
                          f"{channel!r})")
    if not isinstance(capture, bool):
        raise InvalidType(f"'capture' must be a bool (got {type(capture).__name__}: "
                          f"{capture!r})")
    if capture and strategy != Strategy.DEVELOPMENT:
        raise InvalidSpec(f"'capture' needs strategy='development' (got {strategy.value!r}): "
                          "a detached group's output goes to its monitor")
    here = os.getcwd()
    target_cwd = check_cwd(cwd)
    target_env = check_env(env)
    executable = check_exec(exec, here, target_env)
    path = check_file(file, here, executable is not None, target_env)
    arguments = check_args(args)
    group_name = check_name(default_name(path) if name is None else name)
    mask = check_umask(umask)
    grace = check_timeout("stop_timeout", stop_timeout)
    patience = check_timeout("start_timeout", start_timeout)
    restart_policy = RestartPolicy.build(policy)
    if monitors is not None:
        if monitor is not None or options is not None:
            raise InvalidSpec("give either monitor= and options= (one monitor) or monitors= "
                              "(a mapping of monitor names to their options), not both")
        if not isinstance(monitors, Mapping):
            raise InvalidType(f"'monitors' must be a mapping of monitor names to options "
                              f"(got {type(monitors).__name__}: {monitors!r})")
        wanted = dict(monitors)
    else:
        wanted = {monitor if monitor is not None else monitoring.DEFAULT: options}
    chosen = []
    for name, factory in monitoring.resolve_all(wanted):
        try:
            chosen.append((name, factory, monitoring.check(factory, wanted[name], name)))
        except MonitorOptionsError as exc:
            if len(wanted) == 1:
                raise  # the monitor's own message, verbatim
            raise MonitorOptionsError(f"monitor {name!r}: {exc}") from exc

    directory = home() / group_name
    check_socket_path(directory)
    with _home_errors(directory.parent):
        check_dir(directory)
    log_path = next((path for path in (monitoring.output_path(factory, checked, directory)
                                       for _, factory, checked in chosen) if path), None)
    with _home_errors(directory.parent):
        created = bool(ensure_dir(directory))
        # Losing the lock leaves everything as it is, even a directory this call created:
        # the winner may have opened its lock file, or run in it already.
        lock = Lock.take(directory)
    spec = Spec(
        name=group_name, file=path, args=arguments, strategy=strategy,
        monitors=tuple((name, checked) for name, _, checked in chosen), env=target_env, cwd=target_cwd, directory=str(directory),
        # A .py file runs with the Python that runs us: recorded, so 'status' can name it.
        exec=executable or (sys.executable if path.endswith(".py") else None),
        umask=_caller_umask() if mask is None else mask,
        policy=restart_policy, stop_timeout=grace, start_timeout=patience,
        backpressure=pressure, channel=channel,
        log_path=log_path, sys_path=tuple(os.path.abspath(p or here) for p in sys.path),
    )
    try:
        try:
            write_json(directory / "spec.json", spec.to_json())
        except OSError as exc:  # a full disk, say: one clear error, nothing detached
            raise StartError(f"cannot write {str(directory / 'spec.json')!r}: "
                             f"{exc.strerror or exc}") from None
        return _launch(spec, lock, capture)
    except BaseException:
        _clean(directory, created)
        raise
    finally:
        lock.close()  # the roles hold the lock now (same open file description)


@contextlib.contextmanager
def _home_errors(base: Path) -> Iterator[None]:
    """An OSError of the home itself (a file in its path, no permission, /proc) is a
    StateDirError naming it; our own errors pass as they are."""
    try:
        yield
    except ImmortalError:
        raise
    except OSError as exc:
        raise unusable_home(exc, base) from exc


def _launch(spec: Spec, lock: Lock, capture: bool = False) -> Group:
    directory = Path(spec.directory)
    development = spec.strategy == Strategy.DEVELOPMENT
    role = "daemon" if spec.strategy == Strategy.DAEMON else "pump"
    hs_r, hs_w = os.pipe()
    parent_r = parent_w = None
    if development:
        parent_r, parent_w = os.pipe()
    fds = Fds(handshake=hs_w, lock=lock.fd, parent=parent_r)
    args = RoleArgs(role, str(directory), detach=not development, fds=fds)
    log: Any = None if development else open(directory / f"{role}.log", "ab")
    out = subprocess.PIPE if capture else log
    ready = None if development else standby.claim(role)
    try:
        # A standby (immortal run) gets its files over its socket, not as inherited fds.
        files = {"handshake": hs_w, "lock": lock.fd, "log": log.fileno()} if log else {}
        if ready is not None and ready.go(replace(args, fds=Fds()).to_json(), files,
                                          str(directory)):
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
        _handshake(spec, hs_r, pids, popen)
    except BaseException:
        _kill_roles(pids, popen)
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
    return Group(spec.name, directory, popen if development else None, parent_w)


def _handshake(spec: Spec, fd: int, pids: dict[str, tuple[int, int | None]],
               popen: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + spec.start_timeout
    try:
        for message in read_handshake(fd, deadline):
            if "role" in message:
                pids[message["role"]] = (message["pid"], message.get("start_time"))
            elif "error" in message:
                error = _ERRORS.get(message["error"], StartError)
                raise error(message.get("message", "the group failed to start"))
            elif message.get("ok"):
                return
    except TimeoutError:
        raise StartError(f"group {spec.name!r} did not start within {spec.start_timeout:g} s "
                         f"(start_timeout); see the logs in {spec.directory}") from None
    raise StartError(f"group {spec.name!r} failed to start: {_logs_tail(spec)}")


def _logs_tail(spec: Spec) -> str:
    text = []
    for log in ("daemon.log", "pump.log"):
        try:
            data = (Path(spec.directory) / log).read_bytes()[-2000:]
        except OSError:
            continue
        if data.strip():
            text.append(f"{log}: {data.decode('utf-8', 'replace').strip()}")
    return "; ".join(text) or f"no message; see {spec.directory}"


def _kill_roles(pids: dict[str, tuple[int, int | None]],
                popen: subprocess.Popen[bytes]) -> None:
    """Make sure no role of a failed start survives it (they report failure and exit)."""
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


def _clean(directory: Path, created: bool) -> None:
    """Remove what a failed start wrote, while it still holds the group lock.

    Files only: never a directory (another start may have opened the lock file in it, or
    another group may live in a parent this call created) and never a lock file (a start
    that opened it would lock a file nobody else can find). The role logs go only if the
    directory is this call's own.
    """
    names = ["spec.json", "status.json"]
    if created:
        names += ["daemon.log", "pump.log", "pump.log.1"]
    for name in names:
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass


