"""``start()``: validate in the caller, take the lock, launch the first role, wait for it.

Steps, in order; nothing is created before step 4, and a failure after it ends every
process that was started and removes the files it wrote (never a directory or a lock file:
another start may have opened them):

1. check every argument (``request.build``), naming the field, the expectation and the value;
2. find the monitors and run their ``check(options)`` here, in the caller;
3. check the instance directory (not a symlink, ours, not writable by others);
4. create it and take its lock (``AlreadyRunning`` if held; nothing of that group touched);
5. look for a target the group's dead supervisors left running, to adopt if it runs the
   same command (``adoption.decide``: it reads the old ``spec.json``), then write
   ``spec.json``;
6. start the first role as a fresh interpreter (or hand a standby its arguments), with the
   lock and the write end of a handshake pipe, and wait on the handshake until the target
   is ready (``readiness.py``), or raise the role's error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import adoption, monitorload, orphans, standby
from . import listen as listening
from .detach import read_handshake
from .errors import ImmortalError, MonitorError, StartError, unusable_home
from .events import ExitStatus
from .group import Group
from ._linux import is_alive
from .readiness import SPAWN
from .records import replace
from .roles import Adopt, Fds, RoleArgs, role_command
from .request import Request, build, check_monitors
from .spec import RestartPolicy, Spec, Strategy
from .state import (Lock, check_dir, check_socket_path, ensure_dir, home, read_json,
                    write_json)

_ERRORS = {"StartError": StartError, "MonitorError": MonitorError}


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
    ready: str | None = None,
    ready_timeout: float = 30.0,
    listen: Sequence[str] | None = None,
    workers: int = 1,
    user: str | int | None = None,
    group: str | int | None = None,
    watch: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    watch_delay: float | None = None,
    memory_limit: int | str | None = None,
    memory_window: float | None = None,
    memory_children: bool = False,
    comment: str | None = None,
    **unknown: Any,
) -> Group:
    """Launch ``file`` with ``args`` and keep it alive; return a handle on the group.

    Returns once the target is *ready* (with ``workers=N``, every instance's): ``ready``
    says when that is (``"spawn"``, ``"uptime:S"``, ``"line:REGEX"``, ``"port:N"``,
    ``"notify"``; default ``$IMMORTAL_READY``, else ``"uptime:1"``: alive one second),
    within ``ready_timeout`` seconds of its spawn. Raises a subclass of ``ImmortalError`` in
    the caller for every problem, including an exec failure after detaching, and
    ``StartError`` for a target that dies before it is ready or is not ready in time (with
    its ``status`` and last ``stderr`` lines; the instance named); nothing is left behind
    then. ``strategy`` is ``"daemon"`` (default), ``"unattached"`` or
    ``"development"``. One monitor is ``monitor=`` (default ``"file"``) with its
    ``options=``; several are ``monitors={"file": {...}, "jsonl": {...}}``, each with its own
    options and its own ``check()``. ``backpressure="block"`` (default) makes the target
    wait while the monitors are behind; ``"drop"`` skips lines instead and counts them.
    ``channel=True`` opens a JSON message channel between the target and the monitors
    (``immortal.channel``). ``workers=N`` runs N instances of the program, each
    supervised on its own (restarted on its own death, with its own backoff), by one daemon
    and one pump; each gets ``IMMORTAL_INSTANCE`` (0 to N-1) and ``IMMORTAL_GROUP`` in its
    environment, and the same listen sockets. With ``capture=True`` (development only) the
    target's output comes to ``group.stdout`` and ``group.stderr`` (iterators of lines)
    instead of the terminal.
    ``listen=["tcp://0.0.0.0:8000", "unix:/run/app.sock"]`` binds those sockets here, once,
    and hands them to every target by systemd socket activation (fds 3, 4, ...,
    ``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``); ``ListenError`` if one cannot be.

    The operator's options (docs/cli.md has a section on each): ``user=``/``group=`` run
    the targets as that user (root only; the sockets are bound first, as root);
    ``watch=[paths or globs]`` restarts the program when one changes (``ignore=`` globs,
    ``watch_delay`` seconds of quiet first); ``memory_limit="300M"`` restarts a target
    whose memory stays over it for ``memory_window`` seconds (``memory_children``: its
    descendants' counted); ``comment=`` labels the supervisors' process titles and is the
    targets' ``IMMORTAL_COMMENT``.

    The steps (the module's docstring says more), one call each:

    1. check every argument (``request.build``);
    2. find the monitors and check their options;
    3. check the instance directory, and make the group's ``Spec`` in it;
    4. create the directory and take the group's lock;
    5. decide whether to adopt an orphaned target, bind the listen sockets, and write
       ``spec.json``;
    6. start the first role and wait on its handshake.

    A failure in 5 or 6 removes what they wrote; our copy of the lock is let go either way.
    """
    request = build(file, args, strategy=strategy, monitor=monitor, options=options,
                    monitors=monitors, name=name, exec=exec, env=env, cwd=cwd, umask=umask,
                    policy=policy, stop_timeout=stop_timeout, start_timeout=start_timeout,
                    capture=capture, backpressure=backpressure, channel=channel, ready=ready,
                    ready_timeout=ready_timeout, listen=listen, workers=workers, user=user,
                    group=group, watch=watch, ignore=ignore, watch_delay=watch_delay,
                    memory_limit=memory_limit, memory_window=memory_window,
                    memory_children=memory_children, comment=comment, **unknown)
    return launch(request)


def launch(request: Request) -> Group:
    """Steps 2 to 6 of ``start()``, for its arguments checked (``request.build``)."""
    spec = plan(request)
    with prepared(spec) as (spec, lock, adopt, sockets):
        return _launch(spec, lock, request.capture, adopt, sockets)


def plan(request: Request) -> Spec:
    """Steps 2 and 3: the group's ``Spec``, its monitors found and checked, its instance
    directory found safe to use. Nothing is created."""
    return _place(request, check_monitors(request.monitors))


@contextlib.contextmanager
def prepared(spec: Spec) -> Iterator[tuple[Spec, Lock, Adopt | None, tuple[int, ...]]]:
    """Steps 4 and 5: the directory made and locked, the orphan to adopt decided, the listen
    sockets bound and ``spec.json`` written; yields the spec as written, the lock, the
    target to adopt and the sockets' fds, for step 6 (a detached first role, or the
    daemon role ``exec``'d in the caller: ``foreground``). A failure inside removes what
    they wrote; our copies of the lock and the sockets are closed when it ends."""
    directory = Path(spec.directory)
    lock, created = _take_directory(directory)
    before: dict[str, Any] = {}
    with _undone_on_failure(directory, created, lock, before):
        adopt = adoption.decide(spec)
        before.update(read_json(directory / "spec.json") or {})
        if spec.several:
            with _home_errors(directory.parent):
                for view in spec.each():
                    ensure_dir(view.program_dir)
        with _listening(spec) as (spec, sockets):
            _write_spec(spec)
            yield spec, lock, adopt, sockets


def start_group(name: str, programs: Mapping[str, Mapping[str, Any]], *,
                strategy: str | Strategy = Strategy.DAEMON,
                start_timeout: float = 30.0) -> Group:
    """Launch a group of several programs under one daemon and one pump; return a handle.

    ``programs`` maps each program's name to its options: every keyword of ``start()``
    but the group's (``strategy``, ``name``, ``start_timeout``, ``capture``), with ``file``
    (and ``args``) among them, e.g. ``{"web": {"file": "server.py", "workers": 4,
    "listen": ["tcp://0.0.0.0:8000"]}, "worker": {"file": "worker.py"}}``. Each program has
    its own instances, restart policy, readiness and monitors (``Monitor.program`` names
    it); its targets get ``IMMORTAL_PROGRAM``. Every argument is checked here first, the
    error naming the program and the field (``channel`` is for a group of one program, and
    two programs may not listen on one address). Returns once every instance of every
    program is ready; ``StartError`` leaves nothing behind, as ``start()``'s.
    """
    return launch_group(_built(name, programs, strategy, start_timeout))


def plan_group(name: object, programs: object, strategy: object,
               start_timeout: object) -> Spec:
    """``plan`` for a group of several programs: its ``Spec``, every argument checked, its
    instance directory found safe to use. Nothing is created."""
    return _group_placed(_built(name, programs, strategy, start_timeout))


def launch_group(spec: Spec) -> Group:
    """``start_group``'s launch of a group of several programs built and checked
    (``programs.build_group``)."""
    with prepared(_group_placed(spec)) as (spec, lock, _, sockets):
        return _launch(spec, lock, False, None, sockets)


def _built(name: object, programs: object, strategy: object, start_timeout: object) -> Spec:
    from .names import check_name
    from .programs import build_group

    directory = home() / check_name(name)
    return build_group(name, programs, strategy, start_timeout, str(directory))


def _group_placed(spec: Spec) -> Spec:
    """A group of several programs' instance directory, found safe to use (step 3)."""
    directory = Path(spec.directory)
    check_socket_path(directory)
    with _home_errors(directory.parent):
        check_dir(directory)
    return spec


def _place(request: Request, chosen: tuple[tuple[str, Any, dict[str, Any]], ...]) -> Spec:
    """Step 3: the group's Spec in its instance directory, once the directory (if it
    exists) is found safe to use."""
    directory = home() / request.name
    check_socket_path(directory)
    with _home_errors(directory.parent):
        check_dir(directory)
    log_path = next((path for path in (monitorload.output_path(factory, checked, directory)
                                       for _, factory, checked in chosen) if path), None)
    monitors = tuple((name, checked) for name, _, checked in chosen)
    return request.spec(str(directory), monitors, log_path)


def _take_directory(directory: Path) -> tuple[Lock, bool]:
    """Step 4: create the instance directory if needed and take its lock; the lock, and
    whether this call created the directory."""
    with _home_errors(directory.parent):
        created = bool(ensure_dir(directory))
        # Losing the lock leaves everything as it is, even a directory this call created:
        # the winner may have opened its lock file, or run in it already.
        return Lock.take(directory), created


@contextlib.contextmanager
def _undone_on_failure(directory: Path, created: bool, lock: Lock,
                       before: dict[str, Any] | None = None) -> Iterator[None]:
    """Steps 5 and 6 remove what they wrote if they fail (``before``: the spec.json that
    was there, put back), and let go of our copy of the lock in any case (the roles hold it
    then: the same open file description)."""
    try:
        yield
    except BaseException:
        _clean(directory, created, before)
        raise
    finally:
        lock.close()


@contextlib.contextmanager
def _listening(spec: Spec) -> Iterator[tuple[Spec, tuple[int, ...]]]:
    """Step 5: the listen sockets, bound here (``listen.bind``), and the spec with the
    addresses as bound. Our copies are closed once the first role has its own; a failed
    start also removes the unix socket files nobody listens on any more
    (``listen.release``)."""
    if not spec.listening:
        yield spec, ()
        return
    _end_orphans(spec)
    sockets, bound = listening.bind(spec.listening)
    try:
        yield spec.bound(bound), tuple(sock.fileno() for sock in sockets)
    except BaseException:
        for sock in sockets:
            sock.close()
        listening.release(bound)
        raise
    finally:
        for sock in sockets:
            sock.close()


def _end_orphans(spec: Spec) -> None:
    """A target its dead supervisors left running holds the group's old listen sockets:
    it is ended (proved by token and start time) before they are bound again. Never
    adopted (``adoption.decide``): the sockets the new start binds are not its own."""
    found = orphans.find(spec.directory, holders=True)
    if found:
        pids = " ".join(str(pid) for pid, _ in found)
        adoption.note(spec, f"immortal: start: killing {pids} left running by a dead group "
                      "(its listen sockets are bound anew)\n")
        orphans.end(found)


def _write_spec(spec: Spec) -> None:
    """Step 5: ``spec.json``, which the roles read."""
    path = Path(spec.directory) / "spec.json"
    try:
        write_json(path, spec.to_json())
    except OSError as exc:  # a full disk, say: one clear error, nothing detached
        raise StartError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


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


def _launch(spec: Spec, lock: Lock, capture: bool = False,
            adopt: Adopt | None = None, sockets: tuple[int, ...] = ()) -> Group:
    directory = Path(spec.directory)
    development = spec.strategy == Strategy.DEVELOPMENT
    role = "daemon" if spec.strategy == Strategy.DAEMON else "pump"
    hs_r, hs_w = os.pipe()
    parent_r = parent_w = None
    if development:
        parent_r, parent_w = os.pipe()
    fds = Fds(handshake=hs_w, lock=lock.fd, parent=parent_r, listen=sockets or None)
    args = RoleArgs(role, str(directory), detach=not development, fds=fds, adopt=adopt)
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
        adopted = _handshake(spec, hs_r, pids, popen)
    except BaseException:
        _kill_roles(pids, popen, directory)
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


def _handshake(spec: Spec, fd: int, pids: dict[str, tuple[int, int | None]],
               popen: subprocess.Popen[bytes]) -> int | None:
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
        raise StartError(f"group {spec.name!r} did not start within {patience:g} s "
                         f"(start_timeout{_READY_WAIT if _waits(spec) else ''}); "
                         f"see the logs in {spec.directory}") from None
    raise StartError(f"group {spec.name!r} failed to start: {_logs_tail(spec)}")


_READY_WAIT = " + ready_timeout + stop_timeout"


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
    return StartError(text, status, lines)


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
                popen: subprocess.Popen[bytes], directory: Path) -> None:
    """Make sure no role of a failed start survives it (they report failure and exit),
    nor the pipe holder a daemon killed meanwhile could not end."""
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
    orphans.end(orphans.holders(directory))


def _clean(directory: Path, created: bool, before: dict[str, Any] | None = None) -> None:
    """Remove what a failed start wrote, while it still holds the group lock.

    Files only: never a directory (another start may have opened the lock file in it, or
    another group may live in a parent this call created) and never a lock file (a start
    that opened it would lock a file nobody else can find). The role logs go only if the
    directory is this call's own. A ``spec.json`` a stopped group had left (``before``) is
    put back: a recorded group (``immortal start-recorded``, a systemd unit's) can be
    started again from it after a start that failed (an address in use at boot).
    """
    names = ["spec.json", "status.json", "notify.sock"]
    if created:
        names += ["daemon.log", "pump.log", "pump.log.1"]
    for name in names:
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass
    if before:
        try:
            write_json(directory / "spec.json", before)
        except OSError:
            pass  # a full disk: the record is lost, as the start was
