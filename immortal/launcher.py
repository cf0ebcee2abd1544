"""``start()``: validate in the caller, take the lock, launch the first role, wait for it.

Steps, in order; nothing is created before step 4, and a failure after it ends every
process that was started and removes the files it wrote (never a directory or a lock file:
another start may have opened them):

1. check every argument (``request.build``), naming the field, the expectation and the value;
2. find the monitors and run their ``check(options)`` here, in the caller;
3. check the instance directory (not a symlink, ours, not writable by others:
   ``prepare.check_place``);
4. create it and take its lock (``AlreadyRunning`` if held; nothing of that group touched);
5. look for a target the group's dead supervisors left running, to adopt if it runs the
   same command (``adoption.decide``: it reads the old ``spec.json``), then write
   ``spec.json`` (4 and 5: ``prepare.prepared``);
6. start the first role as a fresh interpreter (or hand a standby its arguments), with the
   lock and the write end of a handshake pipe, and wait on the handshake until the target
   is ready (``readiness.py``), or raise the role's error (``firstrole.start_roles``).

A group of several programs takes the same steps from ``groupstart.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from . import monitor
from .firstrole import passed_on, start_roles
from .group import Group
from .prepare import check_place, prepared
from .request import Request, build, check_monitors
from .spec import RestartPolicy, Spec, Strategy
from .state import home


def start(
    file: str | os.PathLike[str], args: Sequence[str] | None = None, *,
    strategy: str | Strategy = Strategy.DAEMON, monitor: str | None = None,
    options: Mapping[str, Any] | None = None,
    monitors: Mapping[str, Mapping[str, Any] | None] | None = None,
    name: str | None = None, exec: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
    umask: int | None = None, policy: RestartPolicy | Mapping[str, Any] | None = None,
    stop_timeout: float = 10.0, start_timeout: float = 30.0, capture: bool = False,
    backpressure: str = "block", channel: bool = False, ready: str | None = None,
    ready_timeout: float = 30.0, listen: Sequence[str] | None = None, workers: int = 1,
    user: str | int | None = None, group: str | int | None = None,
    watch: Sequence[str] | None = None, ignore: Sequence[str] | None = None,
    watch_delay: float | None = None, memory_limit: int | str | None = None,
    memory_window: float | None = None, memory_children: bool = False,
    comment: str | None = None, **unknown: Any,
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
    instead of the terminal. ``env=`` is the target's whole environment (default: the
    caller's); to add to the caller's, as the command line's ``-e`` does, pass
    ``{**os.environ, "KEY": "value"}``.
    ``listen=["tcp://0.0.0.0:8000", "unix:/run/app.sock"]`` binds those sockets here, once,
    and hands them to every target by systemd socket activation (fds 3, 4, ...,
    ``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``); ``ListenError`` if one cannot be.

    The operator's options (docs/cli.md has a section on each): ``user=``/``group=`` run
    the targets as that user (root only; the sockets are bound first, as root);
    ``watch=[paths or globs]`` restarts the program when one changes (``ignore=`` globs,
    ``watch_delay`` seconds of quiet first); ``memory_limit="300M"`` restarts a target
    whose memory stays over it for ``memory_window`` seconds (``memory_children``: its
    descendants' counted); ``comment=`` labels the supervisors' process titles and is the
    targets' ``IMMORTAL_COMMENT``. The steps are the module docstring's.
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
    with passed_on(), prepared(spec) as (spec, lock, adopt, sockets, leftover):
        return start_roles(spec, lock, request.capture, adopt, sockets, leftover)


def plan(request: Request) -> Spec:
    """Steps 2 and 3: the group's ``Spec``, its monitors found and checked, its instance
    directory found safe to use. Nothing is created."""
    return _place(request, check_monitors(request.monitors))


def _place(request: Request, chosen: tuple[tuple[str, Any, dict[str, Any]], ...]) -> Spec:
    """Step 3: the group's Spec in its instance directory, once the directory (if it
    exists) is found safe to use."""
    directory = home() / request.name
    check_place(directory)
    log_path = next((path for path in (monitor.output_path(factory, checked, directory)
                                       for _, factory, checked in chosen) if path), None)
    monitors = tuple((name, checked) for name, _, checked in chosen)
    return request.spec(str(directory), monitors, log_path)
