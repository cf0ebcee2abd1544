"""What to run and how: a frozen ``Spec``, its ``Program`` records and the ``Strategy``.

A group runs one program (``start()``: the ``Spec``'s own fields describe it, and
``spec.json`` reads as it always did) or several (``start_group()``: ``Spec.programs``, one
``Program`` record each, by name). Every part of the roles that runs one program works on a
*view* (``Spec.view``): a ``Spec`` whose own fields are that program's, with the group's
name, strategy and directory, so that one program of a group runs exactly as a group of one
runs its program. What a caller can get wrong is checked in the caller (``request.py``).
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Mapping
from pathlib import Path

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
from .errors import InvalidType, unknown_name
from .orphans import role_title
from .names import MAX_NAME, check_name  # noqa: F401  (spec's checks, kept importable here)
from .policy import RestartPolicy
from .records import Record, field, replace

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

PROGRAMS_DIR = "programs"  #: where the named programs' own files live, one directory each
COMMENT_ENV = "IMMORTAL_COMMENT"  #: the program's comment, in its targets' environment


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


class Program(Record):
    """One program of a group of several (``start_group``): every option of ``start()``
    that is the program's own, under its ``name``."""

    name: str
    file: str
    args: tuple[str, ...]
    monitors: tuple[tuple[str, Mapping[str, Any]], ...]  #: (name, checked options), in order
    env: Mapping[str, str]
    cwd: str
    exec: str | None = None
    umask: int | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    stop_timeout: float = 10.0
    log_path: str | None = None
    backpressure: str = "block"
    channel: bool = False
    ready: str = readiness.DEFAULT
    ready_timeout: float = 30.0
    listen: tuple[str, ...] = ()
    workers: int = 1  #: 0: the program is being removed (``Group.apply``), its instances retire
    # The operator's options (docs/cli.md): who the targets run as (privileges.py), the
    # files whose change restarts them (filewatch.py), their memory limit (memwatch.py), a
    # label.
    user: str | None = None
    group: str | None = None
    watch: tuple[str, ...] = ()  #: absolute paths and globs
    ignore: tuple[str, ...] = ()
    watch_delay: float = filewatch.DEFAULT_DELAY
    memory_limit: int | None = None  #: bytes
    memory_window: float = memwatch.DEFAULT_WINDOW
    memory_children: bool = False
    comment: str | None = None
    #: the names in ``env`` a configuration file set (``immortal up``): the rest is the
    #: environment its group was started in, which a ``reload`` keeps (``fileverbs``)
    variables: tuple[str, ...] = ()
    #: the configuration file's environment the program was made in (``up -E NAME``;
    #: None: none), which a ``reload`` without -E applies again (``fileverbs``)
    environment: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self._fields}
        return _program_json(self, data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Program:
        values = {name: data[name] for name in cls._fields if name in data}
        values["args"] = tuple(values.get("args", ()))
        values["policy"] = RestartPolicy(**values.get("policy", {}))
        return cls(**_program_values(values))

    def target_side(self) -> Program:
        """The program without what a rolling restart does not change (its count of
        instances): two programs equal here run their targets the same way."""
        return replace(self, workers=1, environment=None)


#: the fields of a ``Spec`` that are its program's (the others are the group's)
PROGRAM_FIELDS = tuple(name for name in Program._fields if name != "name")


def _program_json(program: Program | Spec, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a program's fields) as JSON takes them."""
    data["args"] = list(program.args)
    data["env"] = dict(program.env)
    data["policy"] = program.policy.to_json()
    data["monitors"] = [[name, dict(options)] for name, options in program.monitors]
    for key in ("listen", "watch", "ignore", "variables"):
        data[key] = list(getattr(program, key))
    return data


def _program_values(values: dict[str, Any]) -> dict[str, Any]:
    """A program's fields read from JSON, as the records hold them."""
    values["monitors"] = tuple((name, options) for name, options in values["monitors"])
    for key in ("listen", "watch", "ignore", "variables"):
        values[key] = tuple(values.get(key, ()))
    return values


class Spec(Record):
    """Everything the roles need to run one group; written to ``spec.json``. Its own
    program fields describe its one program (``programs`` empty), or, in a group of several
    programs, the first of ``programs`` (use ``view`` or ``each`` there)."""

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
    # The operator's options (``Program`` says what each is).
    user: str | None = None
    group: str | None = None
    watch: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    watch_delay: float = filewatch.DEFAULT_DELAY
    memory_limit: int | None = None
    memory_window: float = memwatch.DEFAULT_WINDOW
    memory_children: bool = False
    comment: str | None = None
    variables: tuple[str, ...] = ()
    environment: str | None = None
    #: a group of several programs (``start_group``): each one's record, in order
    programs: tuple[Program, ...] = ()
    #: the program a view is of (``view``); "" for a group's one program, and for a group
    program: str = ""

    @classmethod
    def of_programs(cls, name: str, strategy: Strategy, directory: str,
                    programs: tuple[Program, ...], start_timeout: float = 30.0,
                    sys_path: tuple[str, ...] = ()) -> Spec:
        """The spec of a group of several programs (its own program fields: the first's)."""
        first = programs[0]
        return cls(name=name, strategy=strategy, directory=directory,
                   start_timeout=start_timeout, sys_path=sys_path, programs=programs,
                   **{key: getattr(first, key) for key in PROGRAM_FIELDS})

    @property
    def several(self) -> bool:
        """A group of several programs, named (``start_group``)."""
        return bool(self.programs)

    def view(self, program: str) -> Spec:
        """The spec of ``program`` alone: its fields, the group's name and directory."""
        if not self.programs:
            if program:
                raise KeyError(program)
            return self
        found = next((p for p in self.programs if p.name == program), None)
        if found is None:
            raise KeyError(program)
        return replace(self, programs=(), program=program,
                       **{key: getattr(found, key) for key in PROGRAM_FIELDS})

    def each(self) -> list[Spec]:
        """A view of each program, in order (a group of one: itself)."""
        return [self.view(p.name) for p in self.programs] if self.programs else [self]

    def names(self) -> list[str]:
        """The programs' names, in order ("" alone for a group's one program)."""
        return [p.name for p in self.programs] if self.programs else [""]

    def replaced(self, program: str, **changes: Any) -> Spec:
        """This spec with fields of ``program`` changed (a scale)."""
        if not self.programs:
            return replace(self, **changes)
        programs = tuple(replace(p, **changes) if p.name == program else p
                         for p in self.programs)
        return type(self).of_programs(self.name, self.strategy, self.directory, programs,
                                      self.start_timeout, self.sys_path)

    @property
    def listening(self) -> tuple[str, ...]:
        """Every address the group listens on: its programs' in order, each program's
        sockets following the last one's (the roles hold them all at fds 3, 4, ...)."""
        if not self.programs:
            return self.listen
        return tuple(address for p in self.programs for address in p.listen)

    def bound(self, addresses: tuple[str, ...]) -> Spec:
        """This spec with ``listening`` as bound (a port 0 as the port it got)."""
        if not self.programs:
            return replace(self, listen=addresses)
        programs, at = [], 0
        for p in self.programs:
            programs.append(replace(p, listen=addresses[at:at + len(p.listen)]))
            at += len(p.listen)
        return type(self).of_programs(self.name, self.strategy, self.directory,
                                      tuple(programs), self.start_timeout, self.sys_path)

    def listen_offset(self, program: str) -> int:
        """Where the sockets of ``program`` start among ``listening``."""
        offset = 0
        for p in self.programs:
            if p.name == program:
                return offset
            offset += len(p.listen)
        return 0

    @property
    def program_dir(self) -> Path:
        """Where the files of this view's program live: the instance directory for a
        group's one program, ``programs/NAME`` in it for a named one."""
        return program_dir(self.directory, self.program)

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
        """What ``ps`` shows for a supervisor of the group (``role``: daemon or pump), with
        its programs' comments."""
        return role_title(role, self.directory,
                          ", ".join(dict.fromkeys(c for c in self.comments() if c)))

    def comments(self) -> list[str | None]:
        """Each program's comment, in order."""
        return [p.comment for p in self.programs] if self.programs else [self.comment]

    @property
    def ready_mode(self) -> readiness.Mode:
        return readiness.parse(self.ready)

    def to_json(self) -> dict[str, Any]:
        if self.programs:  # the group's fields, and each program's
            return {"name": self.name, "strategy": self.strategy.value,
                    "directory": self.directory, "start_timeout": self.start_timeout,
                    "sys_path": list(self.sys_path),
                    "programs": [p.to_json() for p in self.programs]}
        data = {name: getattr(self, name) for name in self._fields
                if name not in ("programs", "program")}
        if self.workers == 1:
            del data["workers"]  # a group of one's spec.json, as it always read
        data["strategy"] = self.strategy.value
        data["sys_path"] = list(self.sys_path)
        return _program_json(self, data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Spec:
        if data.get("programs"):
            return cls.of_programs(
                data["name"], Strategy(data["strategy"]), data["directory"],
                tuple(Program.from_json(p) for p in data["programs"]),
                float(data.get("start_timeout", 30.0)), tuple(data.get("sys_path", ())))
        values = dict(data)
        values["strategy"] = Strategy(values["strategy"])
        values["policy"] = RestartPolicy(**values["policy"])
        values["args"] = tuple(values["args"])
        values["sys_path"] = tuple(values.get("sys_path", ()))
        return cls(**_program_values(values))


def program_dir(directory: str | os.PathLike[str], program: str) -> Path:
    """The directory of ``program``'s own files (its targets' locks, its monitors' default
    output): the instance directory itself for a group's one program ("")."""
    base = Path(directory)
    return base / PROGRAMS_DIR / program if program else base


def read_applied(directory: str | os.PathLike[str], file: str) -> list[Program]:
    """The programs an apply's caller wrote to ``file`` in the instance directory (believed
    only if ours: ``read_json``), the file removed."""
    from .errors import InvalidSpec
    from .instance import read_json

    path = Path(directory) / file
    try:
        data = read_json(path)
    except OSError as exc:
        raise InvalidSpec(f"the apply's programs cannot be read: {exc}") from None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    programs = (data or {}).get("programs")
    if not isinstance(programs, list) or not programs \
            or not all(isinstance(p, dict) for p in programs):
        raise InvalidSpec(f"{file} holds no programs")
    try:
        return [Program.from_json(p) for p in programs]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidSpec(f"{file} holds a program that cannot be read ({exc})") from None
