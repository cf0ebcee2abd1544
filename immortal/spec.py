"""What to run and how: a frozen, validated ``Spec``, the ``Strategy`` and the ``RestartPolicy``.

Everything a caller can get wrong is checked here, in the caller, before anything detaches.
Each check raises an error that names the field, what was expected and what was received.
"""

from __future__ import annotations

import enum
import math
import os
import re
import shutil
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import (
    InvalidSpec,
    InvalidType,
    TargetNotExecutable,
    TargetNotFound,
    UnknownKeyword,
    unknown_name,
)
from .names import MAX_NAME, check_name  # noqa: F401  (spec's checks, kept importable here)


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


def check_number(name: str, value: object, *, low: float = 0.0, high: float = math.inf,
                 integer: bool = False, allow_none: bool = False) -> Any:
    """Return ``value`` if it is a real number in [low, high], else raise naming the field."""
    if value is None and allow_none:
        return None
    kind = "an int" if integer else "a number"
    wanted = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise InvalidType(f"{name!r} must be {kind} in [{low}, {high}] "
                          f"(got {type(value).__name__}: {value!r})")
    if isinstance(value, float) and math.isnan(value) or not low <= value <= high:
        raise InvalidSpec(f"{name!r} must be {kind} in [{low}, {high}] (got {value!r})")
    return value


@dataclass(frozen=True)
class RestartPolicy:
    """When and how fast the pump restarts a target that died.

    - A target that ran at least ``min_uptime`` seconds is restarted at once, and the crash
      counter is reset (a stable run forgives earlier crashes).
    - A target that died sooner is restarted after ``backoff_initial * backoff_factor**(n-1)``
      seconds for its n-th quick death in a row, capped at ``backoff_max``, each delay spread
      by ±``jitter`` (a fraction) so that many groups do not restart in lockstep.
      ``backoff_initial=0`` switches backoff off, but not the floor: a quick death is
      always followed by at least 0.1 s (``supervise.QUICK_FLOOR``) before the restart.
      With ``min_uptime=0`` every run counts as stable, and restarts at once.
    - With ``max_restarts`` set, more than that many restarts within ``window`` seconds
      gives up: the group's state becomes ``fatal`` and nothing is spawned again.
    - An exit code in ``final_exit_codes`` means "do not restart": the group stops.
    """

    min_uptime: float = 1.0
    backoff_initial: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    jitter: float = 0.2
    max_restarts: int | None = None
    window: float = 60.0
    final_exit_codes: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        check_number("min_uptime", self.min_uptime, high=86400.0)
        check_number("backoff_initial", self.backoff_initial, high=86400.0)
        check_number("backoff_factor", self.backoff_factor, low=1.0, high=100.0)
        check_number("backoff_max", self.backoff_max, high=86400.0)
        check_number("jitter", self.jitter, high=1.0)
        check_number("max_restarts", self.max_restarts, low=1, high=10**6, integer=True,
                     allow_none=True)
        check_number("window", self.window, low=0.001, high=86400.0 * 365)
        codes = self.final_exit_codes
        if isinstance(codes, (str, bytes)) or not isinstance(codes, (Sequence, set, frozenset)):
            raise InvalidType(f"'final_exit_codes' must be a set of ints in [0, 255] "
                              f"(got {type(codes).__name__}: {codes!r})")
        for code in codes:
            check_number("final_exit_codes item", code, high=255, integer=True)
        object.__setattr__(self, "final_exit_codes", frozenset(codes))

    @classmethod
    def build(cls, value: RestartPolicy | Mapping[str, Any] | None) -> RestartPolicy:
        """A policy from a policy, a mapping of its fields, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise InvalidType(f"'policy' must be a RestartPolicy or a mapping "
                              f"(got {type(value).__name__}: {value!r})")
        known = {f.name for f in fields(cls)}
        for key in value:
            if key not in known:
                raise unknown_name("restart policy field", str(key), known)
        return cls(**value)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["final_exit_codes"] = sorted(self.final_exit_codes)
        return data


def default_name(file: str) -> str:
    stem = os.path.splitext(os.path.basename(file))[0]
    cleaned = re.sub(r"[^A-Za-z0-9._+@-]", "-", stem).lstrip(".-")[:MAX_NAME]
    return cleaned or "target"


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidType(f"{name} must be a str (got {type(value).__name__}: {value!r})")
    if "\0" in value:
        raise InvalidSpec(f"{name} must not contain a NUL byte (got {value!r})")
    return value


def check_args(args: object) -> tuple[str, ...]:
    if args is None:
        return ()
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise InvalidType(f"'args' must be a list of str (got {type(args).__name__}: {args!r}); "
                          "wrap a single argument in a list")
    return tuple(_check_str(f"'args[{i}]'", a) for i, a in enumerate(args))


def check_env(env: object) -> dict[str, str]:
    if env is None:
        return dict(os.environ)
    if not isinstance(env, Mapping):
        raise InvalidType(f"'env' must be a mapping of str to str "
                          f"(got {type(env).__name__}: {env!r})")
    result = {}
    for key, value in env.items():
        _check_str(f"'env' key {key!r}", key)
        if not key or "=" in key:
            raise InvalidSpec(f"'env' key must be non-empty and without '=' (got {key!r})")
        result[key] = _check_str(f"'env[{key!r}]'", value)
    return result


def _mode(path: str) -> str:
    return stat.filemode(os.stat(path).st_mode)


def check_file(file: object, cwd: str, has_exec: bool,
               env: Mapping[str, str] | None = None) -> str:
    """The absolute path of the program to run. A name without a slash that is not in
    ``cwd`` is looked up on the target's PATH, as a shell, supervisord and subprocess do."""
    if isinstance(file, os.PathLike):
        file = os.fspath(file)
    file = _check_str("'file'", file)
    if not file:
        raise InvalidSpec("'file' must be a path to the program to run (got '')")
    path = os.path.normpath(os.path.join(cwd, file))
    if os.sep not in file and not os.path.exists(path):
        search = (os.environ if env is None else env).get("PATH", os.defpath)
        found = shutil.which(file, path=search)
        if found is None:
            raise TargetNotFound(f"'file' {file!r} is neither in {cwd!r} nor on PATH "
                                 f"({search}); check the name, or give a path")
        path = os.path.abspath(found)
    if not os.path.exists(path):
        raise TargetNotFound(f"'file' {path!r} does not exist; check the path")
    if os.path.isdir(path):
        raise TargetNotFound(f"'file' {path!r} is a directory; give the program inside it")
    if not os.access(path, os.R_OK):
        raise TargetNotExecutable(f"'file' {path!r} is not readable by us (mode {_mode(path)})")
    if not path.endswith(".py") and not has_exec:
        if not os.access(path, os.X_OK):
            raise TargetNotExecutable(
                f"'file' {path!r} is not executable (mode {_mode(path)}); "
                f"run 'chmod +x {path}' or give the interpreter to run it with (exec)"
            )
        _check_shebang(path)
    return path


def _check_shebang(path: str) -> None:
    """The interpreter a script names in its '#!' line must exist and be executable: the
    exec's own error would be ENOENT, which reads as if the script itself were missing."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return  # the exec will say why
    if not head.startswith(b"#!"):
        return
    words = head[2:].split(b"\n", 1)[0].split()
    if not words:
        return
    interpreter = os.fsdecode(words[0])
    if not os.path.exists(interpreter):
        raise TargetNotFound(f"'file' {path!r} names the interpreter {interpreter!r} in its "
                             "'#!' line, which does not exist; install it, fix the line, "
                             "or give the interpreter to run it with (exec)")
    if os.path.isdir(interpreter) or not os.access(interpreter, os.X_OK):
        raise TargetNotExecutable(f"'file' {path!r} names the interpreter {interpreter!r} "
                                  f"in its '#!' line, which is not an executable file "
                                  f"(mode {_mode(interpreter)})")


def check_exec(executable: object, cwd: str, env: Mapping[str, str]) -> str | None:
    if executable is None:
        return None
    if isinstance(executable, os.PathLike):
        executable = os.fspath(executable)
    executable = _check_str("'exec'", executable)
    if os.sep in executable:
        path = os.path.normpath(os.path.join(cwd, executable))
    else:
        found = shutil.which(executable, path=env.get("PATH", os.defpath))
        if found is None:
            raise TargetNotFound(f"'exec' {executable!r} was not found on PATH")
        path = os.path.abspath(found)
    if not os.path.exists(path):
        raise TargetNotFound(f"'exec' {path!r} does not exist")
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise TargetNotExecutable(f"'exec' {path!r} is not an executable file "
                                  f"(mode {_mode(path)})")
    return path


def check_cwd(cwd: object) -> str:
    if cwd is None:
        return os.getcwd()
    if isinstance(cwd, os.PathLike):
        cwd = os.fspath(cwd)
    cwd = _check_str("'cwd'", cwd)
    path = os.path.abspath(cwd)
    if not os.path.isdir(path):
        raise TargetNotFound(f"'cwd' {path!r} is not an existing directory")
    return path


@dataclass(frozen=True)
class Spec:
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

    @property
    def is_python(self) -> bool:
        return self.file.endswith(".py")

    @property
    def interpreter(self) -> str | None:
        """What runs ``file``: ``exec``, else for a ``.py`` file the Python that runs
        immortal (the roles run with the caller's), else None (the file itself)."""
        return self.exec or (sys.executable if self.is_python else None)

    def command(self) -> list[str]:
        """The target's argv; never passed through a shell."""
        if self.interpreter:
            return [self.interpreter, self.file, *self.args]
        return [self.file, *self.args]

    def target_env(self) -> dict[str, str]:
        from .orphans import TOKEN, token

        env = dict(self.env)
        # Finds the target and its descendants after the supervisors die, whatever fds
        # they closed (immortal/orphans.py); it replaces an outer group's token.
        env[TOKEN] = token(self.directory)
        if self.is_python:
            # Buffered stdout is the first cause of "my logs are missing" under supervisors.
            env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategy"] = self.strategy.value
        data["policy"] = self.policy.to_json()
        data["args"] = list(self.args)
        data["sys_path"] = list(self.sys_path)
        data["monitors"] = [[name, dict(options)] for name, options in self.monitors]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Spec:
        values = dict(data)
        values["strategy"] = Strategy(values["strategy"])
        values["policy"] = RestartPolicy(**values["policy"])
        values["args"] = tuple(values["args"])
        values["sys_path"] = tuple(values.get("sys_path", ()))
        values["monitors"] = tuple((name, options) for name, options in values["monitors"])
        return cls(**values)


BACKPRESSURES = ("block", "drop")


def check_backpressure(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidType(f"'backpressure' must be a str (got {type(value).__name__}: "
                          f"{value!r})")
    if value not in BACKPRESSURES:
        raise unknown_name("backpressure", value, BACKPRESSURES)
    return value


def check_umask(value: object) -> int | None:
    return check_number("umask", value, high=0o777, integer=True, allow_none=True)


def check_timeout(name: str, value: object) -> float:
    return float(check_number(name, value, high=86400.0))


# start()'s arguments, checked -----------------------------------------------------------------

START_KEYWORDS = ("strategy", "monitor", "options", "monitors", "name", "exec", "env", "cwd",
                  "umask", "policy", "stop_timeout", "start_timeout", "capture", "backpressure",
                  "channel")


@dataclass(frozen=True)
class Request:
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

    def spec(self, directory: str, monitors: tuple[tuple[str, Mapping[str, Any]], ...],
             log_path: str | None) -> Spec:
        """The group's ``Spec``, with its instance directory and its checked monitors."""
        return Spec(
            name=self.name, file=self.file, args=self.args, strategy=self.strategy,
            monitors=monitors, env=self.env, cwd=self.cwd, directory=directory,
            exec=self.exec, umask=self.umask, policy=self.policy,
            stop_timeout=self.stop_timeout, start_timeout=self.start_timeout,
            backpressure=self.backpressure, channel=self.channel, log_path=log_path,
            sys_path=self.sys_path,
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
    **unknown: Any,
) -> Request:
    """Check every argument of ``start()`` (its keywords, its defaults), in the caller and
    in a fixed order: the first error raised names the field, what was expected and what
    was received. The monitors' own options are their ``check()``'s to judge."""
    for key in unknown:
        raise unknown_name("keyword argument", key, START_KEYWORDS, UnknownKeyword)
    mode = _check_mode(strategy, backpressure, channel, capture)
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
    return Request(
        name=group_name, file=path, args=arguments, strategy=mode, monitors=wanted,
        env=target_env, cwd=target_cwd,
        # A .py file runs with the Python that runs us: recorded, so 'status' can name it.
        exec=executable or (sys.executable if path.endswith(".py") else None),
        umask=_caller_umask() if mask is None else mask, policy=restart_policy,
        stop_timeout=grace, start_timeout=patience, capture=capture,
        backpressure=backpressure, channel=channel,
        sys_path=tuple(os.path.abspath(p or here) for p in sys.path),
    )


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


def _caller_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
