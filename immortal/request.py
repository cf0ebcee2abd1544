"""``start()``'s arguments, checked in the caller (``build``), in a fixed order: the first
error raised names the field, what was expected and what was received. The values are
``checks.py``'s to judge, the restart policy ``policy.py``'s, the monitors' options their
``check()``'s; a group of several programs checks each program's the same way
(``programs.py``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from . import filewatch, memwatch, privileges, readiness
from .addresses import check_listen
from .addresses import parse as parse_address
from .checks import (check_args, check_backpressure, check_comment, check_cwd, check_env,
                     check_exec, check_file, check_timeout, check_umask, check_workers,
                     default_name)
from .errors import InvalidSpec, InvalidType, MonitorOptionsError, UnknownKeyword, unknown_name
from .names import check_name
from .policy import RestartPolicy
from .records import Record, field
from .spec import Program, Spec, Strategy

START_KEYWORDS = ("strategy", "monitor", "options", "monitors", "name", "exec", "env", "cwd",
                  "umask", "policy", "stop_timeout", "start_timeout", "capture", "backpressure",
                  "channel", "ready", "ready_timeout", "listen", "workers", "user", "group",
                  "watch", "ignore", "watch_delay", "memory_limit", "memory_window",
                  "memory_children", "comment")


class Request(Record):
    """The arguments of one ``start()``, each checked (``build``): all a ``Spec`` holds but
    what comes from the monitors and the instance directory (see :meth:`spec`)."""

    name: str
    file: str
    args: tuple[str, ...]
    strategy: Strategy
    monitors: dict[str, Any]  #: monitor name to its options as given, not yet checked
    env: dict[str, str]
    cwd: str
    exec: str | None  #: what runs ``file``: ``exec``, or for a .py file our Python
    umask: int
    policy: RestartPolicy
    stop_timeout: float
    start_timeout: float
    capture: bool
    backpressure: str
    channel: bool
    sys_path: tuple[str, ...]
    ready: str  #: the readiness mode, checked, in its canonical form
    ready_timeout: float
    listen: tuple[str, ...]  #: the addresses, checked (unix paths made absolute), not bound
    workers: int = 1
    operations: dict[str, Any] = field(default_factory=dict)  #: the operator's options

    def spec(self, directory: str, monitors: tuple[tuple[str, Mapping[str, Any]], ...],
             log_path: str | None) -> Spec:
        """The group's ``Spec``, with its instance directory and its checked monitors."""
        return Spec(
            name=self.name, file=self.file, args=self.args, strategy=self.strategy,
            monitors=monitors, env=self.env, cwd=self.cwd, directory=directory,
            exec=self.exec, umask=self.umask, policy=self.policy,
            stop_timeout=self.stop_timeout, start_timeout=self.start_timeout,
            backpressure=self.backpressure, channel=self.channel, log_path=log_path,
            sys_path=self.sys_path, ready=self.ready, ready_timeout=self.ready_timeout,
            listen=self.listen, workers=self.workers, **self.operations,
        )

    def program(self, name: str, monitors: tuple[tuple[str, Mapping[str, Any]], ...],
                log_path: str | None) -> Program:
        """The ``Program`` these arguments make, under ``name``, with its checked
        monitors (a program of a group of several: ``start_group``)."""
        return Program(
            name=name, file=self.file, args=self.args, monitors=monitors, env=self.env,
            cwd=self.cwd, exec=self.exec, umask=self.umask, policy=self.policy,
            stop_timeout=self.stop_timeout, log_path=log_path,
            backpressure=self.backpressure, channel=self.channel, ready=self.ready,
            ready_timeout=self.ready_timeout, listen=self.listen, workers=self.workers,
            **self.operations,
        )


def build(
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
) -> Request:
    """Check every argument of ``start()`` (its keywords, its defaults), in the caller and
    in a fixed order: the first error raised names the field, what was expected and what
    was received. The monitors' own options are their ``check()``'s to judge."""
    for key in unknown:
        raise unknown_name("keyword argument", key, START_KEYWORDS, UnknownKeyword)
    mode = _check_mode(strategy, backpressure, channel, capture)
    count = check_workers(workers)
    check_channel(channel, count)
    here = os.getcwd()
    target_cwd = check_cwd(cwd)
    target_env = check_env(env)
    executable = check_exec(exec, here, target_env)
    path = check_file(file, here, executable is not None, target_env)
    arguments = check_args(args)
    group_name = check_name(default_name(path) if name is None else name)
    mask = check_umask(umask)
    grace = check_timeout("stop_timeout", stop_timeout)
    patience = check_timeout("start_timeout", start_timeout, above_zero=True)
    restart_policy = RestartPolicy.build(policy)
    wanted = _wanted_monitors(monitor, options, monitors)
    readiness_mode, ready_limit = check_ready(ready, ready_timeout, bool(listen))
    addresses = check_listen(listen, here)
    check_probe(readiness_mode, addresses, here)
    check_probe_workers(readiness_mode, count)
    operations = _operations(user, group, watch, ignore, watch_delay, memory_limit,
                             memory_window, memory_children, comment, here, readiness_mode)
    return Request(
        name=group_name, file=path, args=arguments, strategy=mode, monitors=wanted,
        env=target_env, cwd=target_cwd,
        # A .py file runs with the Python that runs us: recorded, so 'status' can name it.
        exec=executable or (sys.executable if path.endswith(".py") else None),
        umask=_caller_umask() if mask is None else mask, policy=restart_policy,
        stop_timeout=grace, start_timeout=patience, capture=capture,
        backpressure=backpressure, channel=channel,
        sys_path=tuple(os.path.abspath(p or here) for p in sys.path),
        ready=readiness_mode, ready_timeout=ready_limit,
        listen=addresses, workers=count, operations=operations,
    )


def _operations(user: object, group: object, watch: object, ignore: object, delay: object,
                limit: object, window: object, children: object, comment: object,
                here: str, ready: str) -> dict[str, Any]:
    """The operator's options, checked, as the ``Spec``'s (a ``Program``'s) fields."""
    user_name, group_name = privileges.check(user, group)
    check_notify_user(ready, user_name)
    paths, globs, seconds = filewatch.check(watch, ignore, delay, here)
    size, span, tree = memwatch.check(limit, window, children)
    return {"user": user_name, "group": group_name, "watch": paths, "ignore": globs,
            "watch_delay": seconds, "memory_limit": size, "memory_window": span,
            "memory_children": tree, "comment": check_comment(comment)}


# The checks of build() that weigh two options together, each alone (configcheck runs each).

def check_channel(channel: object, count: int) -> None:
    """A channel goes with one instance."""
    if channel and count > 1:
        raise InvalidSpec(f"'channel' works with one instance only (got workers={count}): "
                          "a monitor's send() would not know which instance to reach")


def check_probe_workers(mode: str, count: int) -> None:
    """A ``port:N`` readiness goes with one instance."""
    if count > 1 and mode.startswith(readiness.PORT + ":"):
        raise InvalidSpec(f"'ready' {mode!r} works with one instance only (got "
                          f"workers={count}): one port that accepts cannot say which "
                          "instance is ready; use 'line:REGEX' or 'notify'")


def check_notify_user(mode: str, user: str | None) -> None:
    """A ``notify`` readiness does not go with ``user``."""
    if user is not None and mode == readiness.NOTIFY:
        raise InvalidSpec(f"'ready' 'notify' does not work with 'user' (got user="
                          f"{user!r}): the notify socket lives in the group's private "
                          "directory, which the user cannot reach; use 'line:REGEX', "
                          "'port:N' or 'uptime:S'")


def _check_mode(strategy: object, backpressure: object, channel: object,
                capture: object) -> Strategy:
    """The strategy, once it, backpressure, channel and capture are checked together."""
    mode = Strategy.parse(strategy)
    check_backpressure(backpressure)
    if not isinstance(channel, bool):
        raise InvalidType(f"'channel' must be a bool (got {type(channel).__name__}: "
                          f"{channel!r})")
    if not isinstance(capture, bool):
        raise InvalidType(f"'capture' must be a bool (got {type(capture).__name__}: "
                          f"{capture!r})")
    if capture and mode != Strategy.DEVELOPMENT:
        raise InvalidSpec(f"'capture' needs strategy='development' (got {mode.value!r}): "
                          "a detached group's output goes to its monitor")
    return mode


def _wanted_monitors(monitor: str | None, options: Mapping[str, Any] | None,
                     monitors: object) -> dict[str, Any]:
    """Monitor names to their options: one from ``monitor=`` and ``options=``, or many
    from ``monitors=``, never both."""
    if monitors is None:
        from .monitorload import DEFAULT

        return {monitor if monitor is not None else DEFAULT: options}
    if monitor is not None or options is not None:
        raise InvalidSpec("give either monitor= and options= (one monitor) or monitors= "
                          "(a mapping of monitor names to their options), not both")
    if not isinstance(monitors, Mapping):
        raise InvalidType(f"'monitors' must be a mapping of monitor names to options "
                          f"(got {type(monitors).__name__}: {monitors!r})")
    return dict(monitors)


def check_ready(ready: object, timeout: object, listens: bool = False) -> tuple[str, float]:
    """The readiness mode (canonical) and its time limit. ``ready=None`` is the operator's
    ``$IMMORTAL_READY``, else ``uptime:1``. ``listens``: the group has listen sockets."""
    limit = check_timeout("ready_timeout", timeout, above_zero=True)
    if ready is None:
        value = os.environ.get(readiness.ENV)
        mode = readiness.parse(value, readiness.ENV) if value else \
            readiness.parse(readiness.DEFAULT)
    else:
        mode = readiness.parse(ready)
    if mode.kind == readiness.PORT and mode.port is None:
        if listens:
            raise InvalidSpec(_HELD)
        raise InvalidSpec("'ready' 'port' waits on a port the target binds: name the port, "
                          "'port:N'")
    if mode.kind == readiness.UPTIME and mode.seconds >= limit:
        raise InvalidSpec(f"'ready' {str(mode)!r} can never be reached within "
                          f"ready_timeout={limit:g} s; raise 'ready_timeout' above "
                          f"{mode.seconds:g}")
    return str(mode), limit


def _caller_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# A connect to a socket the supervisors hold listening succeeds before any target accepts
# (the kernel completes it into the backlog): it would call every target ready at once.
_HELD = ("'ready' cannot probe a port the group listens on: the supervisors hold that "
         "socket, so a connect succeeds before the target accepts; use 'notify', "
         "'line:REGEX' or 'uptime:S' (or 'port:N' on another port the target binds)")


def check_probe(mode: str, addresses: Sequence[str], cwd: str) -> None:
    """``port:N`` on one of the group's own listen ports: refused (see ``_HELD``)."""
    if not mode.startswith(readiness.PORT + ":"):
        return
    port = int(mode.partition(":")[2])
    for text in addresses:
        address = parse_address(text, cwd)
        if address.kind == "tcp" and address.port == port:
            raise InvalidSpec(_HELD)


def check_monitors(wanted: dict[str, Any]) -> tuple[tuple[str, Any, dict[str, Any]], ...]:
    """``(name, factory, checked options)`` of each monitor, found and checked here; a
    monitor's own message comes verbatim when it is the only one."""
    from . import monitorload

    chosen = []
    for name, factory in monitorload.resolve_all(wanted):
        try:
            chosen.append((name, factory, monitorload.check(factory, wanted[name], name)))
        except MonitorOptionsError as exc:
            if len(wanted) == 1:
                raise  # the monitor's own message, verbatim
            raise MonitorOptionsError(f"monitor {name!r}: {exc}") from exc
    return tuple(chosen)
