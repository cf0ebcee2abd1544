"""What to run and how: a frozen, validated ``Spec``, the ``Strategy``, and ``build``, which
checks every argument of ``start()``.

Everything a caller can get wrong is checked in the caller, before anything detaches: the
values by ``checks.py``, the restart policy by ``policy.py`` (both importable from here).
Each check raises an error that names the field, what was expected and what was received.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .checks import (  # noqa: F401  (the value checks, kept importable here)
    BACKPRESSURES,
    check_args,
    check_backpressure,
    check_comment,
    check_cwd,
    check_env,
    check_exec,
    check_file,
    check_number,
    check_timeout,
    check_umask,
    check_workers,
    default_name,
)
from . import filewatch, memwatch, notify, privileges, readiness
from .addresses import check_listen
from .addresses import parse as parse_address
from .errors import InvalidSpec, InvalidType, UnknownKeyword, unknown_name
from .names import MAX_NAME, check_name  # noqa: F401  (spec's checks, kept importable here)
from .policy import RestartPolicy
from .records import Record, asdict, field


class Strategy(str, enum.Enum):
    """How the target is launched (see docs/design.md for the process trees)."""

    DEVELOPMENT = "development"  #: caller ─► pump ─► target; output to the terminal too
    UNATTACHED = "unattached"  #: caller ─x pump ─► target; output only to the monitor
    DAEMON = "daemon"  #: caller ─x daemon ─► pump ─► target

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object) -> Strategy:
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise InvalidType(f"'strategy' must be a str (got {type(value).__name__}: {value!r})")
        try:
            return cls(value)
        except ValueError:
            raise unknown_name("strategy", value, [s.value for s in cls]) from None


class Spec(Record):
    """Everything the roles need to run one group; written to ``spec.json``."""

    name: str
    file: str
    args: tuple[str, ...]
    strategy: Strategy
    monitors: tuple[tuple[str, Mapping[str, Any]], ...]  #: (name, checked options), in order
    env: Mapping[str, str]
    cwd: str
    directory: str
    exec: str | None = None
    umask: int | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    stop_timeout: float = 10.0
    start_timeout: float = 30.0
    log_path: str | None = None
    sys_path: tuple[str, ...] = ()
    backpressure: str = "block"  #: "block": the target waits for slow monitors; "drop"
    channel: bool = False  #: a JSON message channel between the target and the monitors
    # Readiness (readiness.py): when start() returns, and how long it may wait for that.
    ready: str = readiness.DEFAULT  #: the mode, in its canonical form
    ready_timeout: float = 30.0
    #: the addresses the group listens on, in order, as bound (``listen.py``): the
    #: targets' fds 3, 4, ... by socket activation
    listen: tuple[str, ...] = ()
    workers: int = 1  #: instances of the program the group runs, each supervised on its own
    # The operator's options (docs/cli.md): who the target runs as (privileges.py), the
    # files whose change restarts it (filewatch.py), its memory limit (memwatch.py), a label.
    user: str | None = None
    group: str | None = None
    watch: tuple[str, ...] = ()  #: absolute paths and globs
    ignore: tuple[str, ...] = ()
    watch_delay: float = filewatch.DEFAULT_DELAY
    memory_limit: int | None = None  #: bytes
    memory_window: float = memwatch.DEFAULT_WINDOW
    memory_children: bool = False
    comment: str | None = None

    @property
    def is_python(self) -> bool:
        return self.file.endswith(".py")

    @property
    def interpreter(self) -> str | None:
        """What runs ``file``: ``exec``, else for a ``.py`` file the Python that runs
        immortal (the roles run with the caller's), else None (the file itself)."""
        return self.exec or (sys.executable if self.is_python else None)

    def command(self) -> list[str]:
        """The target's argv; never parsed by a shell (``process.spawn`` may exec it from
        one, as ``"$0" "$@"``)."""
        if self.interpreter:
            return [self.interpreter, self.file, *self.args]
        return [self.file, *self.args]

    def target_env(self) -> dict[str, str]:
        """The environment of every target of the group; what one spawn adds (its
        instance, its sockets) is ``listen.activation``'s."""
        from .orphans import TOKEN, token

        env = dict(self.env)
        # A service manager's words to whoever it started (immortal, run in the foreground
        # under systemd): a target answering them would speak for immortal. A target gets
        # a NOTIFY_SOCKET of the group's own only (ready="notify", below).
        for name in notify.MANAGER_ENV:
            env.pop(name, None)
        # Finds the target and its descendants after the supervisors die, whatever fds
        # they closed (immortal/orphans.py); it replaces an outer group's token.
        env[TOKEN] = token(self.directory)
        if self.is_python:
            # Buffered stdout is the first cause of "my logs are missing" under supervisors.
            env.setdefault("PYTHONUNBUFFERED", "1")
        if self.ready == readiness.NOTIFY:
            env[notify.ENV] = notify.path(self.directory)
        if self.user is not None:
            env.update(privileges.login_env(self.user))
        if self.comment is not None:
            env[COMMENT_ENV] = self.comment
        return env

    def title(self, role: str) -> str:
        """What ``ps`` shows for a supervisor of the group (``role``: daemon or pump)."""
        title = f"immortal: {role} {self.directory}"
        return f"{title} [{self.comment}]" if self.comment else title

    @property
    def ready_mode(self) -> readiness.Mode:
        return readiness.parse(self.ready)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.workers == 1:
            del data["workers"]  # a group of one's spec.json, as it always read
        data["strategy"] = self.strategy.value
        data["policy"] = self.policy.to_json()
        data["args"] = list(self.args)
        data["sys_path"] = list(self.sys_path)
        data["monitors"] = [[name, dict(options)] for name, options in self.monitors]
        data["listen"] = list(self.listen)
        data["watch"] = list(self.watch)
        data["ignore"] = list(self.ignore)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Spec:
        values = dict(data)
        values["strategy"] = Strategy(values["strategy"])
        values["policy"] = RestartPolicy(**values["policy"])
        values["args"] = tuple(values["args"])
        values["sys_path"] = tuple(values.get("sys_path", ()))
        values["monitors"] = tuple((name, options) for name, options in values["monitors"])
        values["listen"] = tuple(values.get("listen", ()))
        values["watch"] = tuple(values.get("watch", ()))
        values["ignore"] = tuple(values.get("ignore", ()))
        return cls(**values)


# start()'s arguments, checked -----------------------------------------------------------------

START_KEYWORDS = ("strategy", "monitor", "options", "monitors", "name", "exec", "env", "cwd",
                  "umask", "policy", "stop_timeout", "start_timeout", "capture", "backpressure",
                  "channel", "ready", "ready_timeout", "listen", "workers", "user", "group",
                  "watch", "ignore", "watch_delay", "memory_limit", "memory_window",
                  "memory_children", "comment")
COMMENT_ENV = "IMMORTAL_COMMENT"  #: the group's comment, in its targets' environment


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
    operations: dict[str, Any] = field(default_factory=dict)  #: the Spec's operator options

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
    if channel and count > 1:
        raise InvalidSpec(f"'channel' works with one instance only (got workers={count}): "
                          "a monitor's send() would not know which instance to reach")
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
    wanted = _wanted_monitors(monitor, options, monitors)
    readiness_mode, ready_limit = check_ready(ready, ready_timeout, bool(listen))
    addresses = check_listen(listen, here)
    _check_probe(readiness_mode, addresses, here)
    if count > 1 and readiness_mode.startswith(readiness.PORT + ":"):
        raise InvalidSpec(f"'ready' {readiness_mode!r} works with one instance only (got "
                          f"workers={count}): one port that accepts cannot say which "
                          "instance is ready; use 'line:REGEX' or 'notify'")
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
    """The operator's options, checked, as the ``Spec``'s fields."""
    user_name, group_name = privileges.check(user, group)
    if user_name is not None and ready == readiness.NOTIFY:
        raise InvalidSpec(f"'ready' 'notify' does not work with 'user' (got user="
                          f"{user!r}): the notify socket lives in the group's private "
                          "directory, which the user cannot reach; use 'line:REGEX', "
                          "'port:N' or 'uptime:S'")
    paths, globs, seconds = filewatch.check(watch, ignore, delay, here)
    size, span, tree = memwatch.check(limit, window, children)
    return {"user": user_name, "group": group_name, "watch": paths, "ignore": globs,
            "watch_delay": seconds, "memory_limit": size, "memory_window": span,
            "memory_children": tree, "comment": check_comment(comment)}


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
        from .monitoring import DEFAULT

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
    limit = check_timeout("ready_timeout", timeout)
    if limit <= 0:
        raise InvalidSpec(f"'ready_timeout' must be more than 0 (got {timeout!r})")
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


def _check_probe(mode: str, addresses: tuple[str, ...], cwd: str) -> None:
    """``port:N`` on one of the group's own listen ports: refused (see ``_HELD``)."""
    if not mode.startswith(readiness.PORT + ":"):
        return
    port = int(mode.partition(":")[2])
    for text in addresses:
        address = parse_address(text, cwd)
        if address.kind == "tcp" and address.port == port:
            raise InvalidSpec(_HELD)
