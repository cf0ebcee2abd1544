"""One program of a configuration file, checked value by value: its ``start()`` keyword
arguments, and each value's source.

Every value is checked on its own, with ``start()``'s own checks (``checks.py``,
``readiness``, ``addresses``, each ``RestartPolicy`` field alone), so that each bad value
is reported, at its line; the checks that weigh several values together (``request.build``)
and the monitors' ``check()`` run once the values are each good.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import filewatch, memwatch, monitorload, privileges, readiness
from .addresses import check_listen
from .checks import (check_backpressure, check_comment, check_cwd, check_env, check_exec,
                     check_file, check_timeout, check_umask, check_workers)
from .configfile import DEFAULT, Problem, Source
from .errors import ImmortalError
from .policy import RestartPolicy
from .records import Record
from .request import (build, check_channel, check_notify_user, check_probe,
                      check_probe_workers, check_ready)

#: The operator's options (``request.build``'s checks, ``Program``'s fields).
OPERATOR_KEYS = ("user", "group", "watch", "ignore", "watch_delay", "memory_limit",
                 "memory_window", "memory_children", "comment")
#: A program's defaults (``start()``'s; ``cwd``: the file's directory).
DEFAULTS: dict[str, Any] = {
    "args": [], "exec": None, "cwd": None, "env_file": None, "umask": None, "workers": 1,
    "listen": [], "ready": readiness.DEFAULT, "ready_timeout": 30.0, "stop_timeout": 10.0,
    "backpressure": "block", "channel": False, "user": None, "group": None, "watch": None,
    "ignore": None, "watch_delay": None, "memory_limit": None, "memory_window": None,
    "memory_children": False, "comment": None,
}
DEFAULT_MONITORS: dict[str, Any] = {"file": {}}
ORDER = ("file", "args", "exec", "cwd", "env_file", "env", "umask", "workers", "listen", "ready",
         "ready_timeout", "stop_timeout", "policy", "monitors", "backpressure", "channel",
         *OPERATOR_KEYS)


class Setting(Record):
    """One value of the effective configuration, and where it came from."""

    value: Any
    source: Source


class Program(Record):
    """One program: ``kwargs``, its ``start()`` keyword arguments (``env``: the caller's
    environment with ``variables`` on top); ``settings``, each value with its source, by
    dotted key (``workers``, ``policy.max_restarts``, ``env.PORT``,
    ``monitors.file.output``), in the order ``immortal config`` shows them."""

    name: str
    kwargs: dict[str, Any]
    settings: dict[str, Setting]
    variables: dict[str, str]  #: what the configuration adds to the target's environment


class _Program:
    """The checks of one program, each problem added to ``problems``."""

    def __init__(self, name: str, table: Mapping[str, Any],
                 sources: Mapping[tuple[str, ...], Source], source: Source, base: str,
                 problems: list[Problem], refused: Iterable[str] = ()) -> None:
        self.name = name
        self.table = table
        self.sources = sources
        self.source = source  #: the program's table
        self.base = base
        self.problems = problems
        self.settings: dict[str, Setting] = {}
        self.bad = False
        #: the keys found wrong (``policy`` for ``policy.window``), here or by a layer
        self.failed = set(refused)

    def problem(self, key: str, message: str, source: Source | None = None) -> None:
        self.bad = True
        self.failed.add(key.split(".")[0])
        where = source or self.sources.get(tuple(key.split(".")), self.source)
        shown = f"programs.{self.name}" + (f".{key}" if key else "")
        self.problems.append(Problem(where, shown, message))

    def value(self, key: str, check: Callable[[Any], Any] | None = None) -> Any:
        """The value of ``key`` (or its default), recorded with its source; what ``check``
        makes of it, or the value itself (kept, and reported, if the check refuses it)."""
        value = self.table.get(key, DEFAULTS.get(key))
        self.settings[key] = Setting(value, self.sources.get((key,), Source(DEFAULT)))
        if check is None or value is None:
            return value
        try:
            checked = check(value)
        except ImmortalError as exc:
            self.problem(key, str(exc))
            return value
        self.settings[key] = Setting(checked, self.settings[key].source)
        return checked

    def ordered(self) -> dict[str, Setting]:
        """The settings in the order of ``ORDER``, a key's sub-keys with it in the order
        they were recorded."""
        rank = {key: index for index, key in enumerate(ORDER)}
        return dict(sorted(self.settings.items(), key=lambda item: rank[item[0].split(".")[0]]))


def check_program(name: str, table: Mapping[str, Any],
                  sources: Mapping[tuple[str, ...], Source], source: Source, base: str,
                  environ: Mapping[str, str], problems: list[Problem],
                  check_monitors: bool = True, refused: Iterable[str] = ()) -> Program:
    """The program ``name`` of the merged configuration (``table``), its values' sources
    (paths relative to the program), its table's ``source``; ``base``: the file's
    directory; ``refused``: its keys a layer refused (their problems said already).
    Problems go to ``problems``."""
    one = _Program(name, table, sources, source, base, problems, refused)
    if "file" not in table:
        one.problem("file", "missing: the program to run, like file = \"web.py\"", source)
    variables = {key: value for key, value in table.get("env", {}).items()}
    try:
        target_env = check_env({**environ, **variables})
    except ImmortalError as exc:
        one.problem("env", str(exc))
        target_env = dict(environ)
    executable = one.value("exec", lambda v: check_exec(v, base, target_env))
    has_exec = executable is not None
    kwargs: dict[str, Any] = {
        "file": one.value("file", lambda v: check_file(v, base, has_exec, target_env)),
        "args": one.value("args"),
        "exec": executable,
    }
    cwd = one.value("cwd", lambda v: check_cwd(os.path.join(base, v)))
    kwargs["cwd"] = base if cwd is None else cwd
    one.settings["cwd"] = Setting(kwargs["cwd"], one.settings["cwd"].source)

    # The file the variables were read from, as 'config' shows it: the file's directory's.
    one.value("env_file", lambda v: os.path.normpath(os.path.join(base, v)))
    for key in sorted(variables):
        one.settings[f"env.{key}"] = Setting(variables[key], sources[("env", key)])
    kwargs["env"] = target_env
    kwargs.update(
        umask=one.value("umask", check_umask),
        workers=one.value("workers", check_workers),
        listen=one.value("listen", lambda v: list(check_listen(v, base))),
        ready=one.value("ready", lambda v: str(readiness.parse(v))),
        ready_timeout=one.value("ready_timeout",
                                lambda v: check_timeout("ready_timeout", v, above_zero=True)),
        stop_timeout=one.value("stop_timeout", lambda v: check_timeout("stop_timeout", v)),
        policy=_policy(one),
        monitors=_monitors(one),
        backpressure=one.value("backpressure", check_backpressure),
        channel=one.value("channel"),
    )
    kwargs.update(_operations(one, base))
    _together(one, kwargs, base)
    if check_monitors:
        _check_monitors(one, kwargs["monitors"])
    return Program(name, kwargs, one.ordered(), variables)


def _operations(one: _Program, base: str) -> dict[str, Any]:
    """The operator's options: those checkable alone checked here (a watched path, and an
    ignored one with a ``/``, is relative to the file's directory, not to wherever the
    command runs); the rest weighed together (``_together``)."""
    def watched(value: Any) -> list[str]:
        paths = [os.path.join(base, entry) if isinstance(entry, str) else entry
                 for entry in value]
        return list(filewatch.check(paths, None, None, base)[0])

    def ignored(value: Any) -> list[Any]:
        # A glob without a '/' matches a component anywhere below: it stays as it is.
        return [os.path.normpath(os.path.join(base, entry))
                if isinstance(entry, str) and "/" in entry.rstrip("/") else entry
                for entry in value]

    checks: dict[str, Callable[[Any], Any]] = {
        "user": lambda v: privileges.check(v, None)[0], "watch": watched, "ignore": ignored,
        "memory_limit": lambda v: memwatch.parse_size("memory_limit", v),
        "comment": check_comment}
    return {key: one.value(key, checks.get(key)) for key in OPERATOR_KEYS}


def _policy(one: _Program) -> dict[str, Any]:
    """Each field of the restart policy, checked alone (the others at their defaults)."""
    given = one.table.get("policy", {})
    policy = {}
    for field in RestartPolicy._fields:
        value = given.get(field, RestartPolicy._defaults[field])
        if field == "final_exit_codes":
            value = sorted(value)
        key = f"policy.{field}"
        one.settings[key] = Setting(value, one.sources.get(("policy", field), Source(DEFAULT)))
        try:
            RestartPolicy(**{field: value})
        except ImmortalError as exc:
            one.problem(key, str(exc))
        policy[field] = value
    return policy


def _monitors(one: _Program) -> dict[str, Any]:
    monitors = one.table.get("monitors") or DEFAULT_MONITORS
    default = "monitors" not in one.table
    for monitor, options in monitors.items():
        if not options:
            one.settings[f"monitors.{monitor}"] = Setting(
                {}, Source(DEFAULT) if default else one.sources[("monitors", monitor)])
        for key, value in options.items():
            one.settings[f"monitors.{monitor}.{key}"] = Setting(
                value, one.sources[("monitors", monitor, key)])
    return {monitor: dict(options) for monitor, options in monitors.items()}


def _together(one: _Program, kwargs: dict[str, Any], base: str) -> None:
    """The checks of ``start()`` that weigh several values together, each one whose
    values are each good (a problem with one of them is said already: another would only
    follow from it); then, if nothing was found wrong, ``request.build`` as a whole."""
    k = kwargs
    checks: tuple[tuple[tuple[str, ...], Callable[[], object]], ...] = (
        (("channel", "workers"), lambda: check_channel(k["channel"], k["workers"])),
        (("ready", "ready_timeout", "listen"),
         lambda: check_ready(k["ready"], k["ready_timeout"], bool(k["listen"]))),
        (("ready", "listen"), lambda: check_probe(k["ready"], k["listen"], base)),
        (("ready", "workers"), lambda: check_probe_workers(k["ready"], k["workers"])),
        (("user", "group"), lambda: privileges.check(k["user"], k["group"])),
        (("ready", "user"), lambda: check_notify_user(k["ready"], k["user"])),
        (("watch", "ignore", "watch_delay"),
         lambda: filewatch.check(k["watch"], k["ignore"], k["watch_delay"], base)),
        (("memory_limit", "memory_window", "memory_children"),
         lambda: memwatch.check(k["memory_limit"], k["memory_window"],
                                k["memory_children"])),
    )
    for keys, check in checks:
        if not one.failed.intersection(keys):
            _weighed(one, check)
    if not one.bad and not one.failed:
        _weighed(one, lambda: build(**kwargs))


def _weighed(one: _Program, check: Callable[[], object]) -> None:
    """``check`` run; its error reported at the key it names first."""
    try:
        check()
    except ImmortalError as exc:
        field = re.match(r"'(\w+)'", str(exc))
        key = field.group(1) if field and field.group(1) in one.settings else ""
        one.problem(key, str(exc), None if key else one.source)


def _check_monitors(one: _Program, monitors: Mapping[str, Any]) -> None:
    """Each monitor found, and its ``check()`` run on its options, as ``start()`` does."""
    for monitor, options in monitors.items():
        where = [s.source for k, s in one.settings.items()
                 if k == f"monitors.{monitor}" or k.startswith(f"monitors.{monitor}.")]
        source = min(where, key=lambda s: s.line or 0) if where else one.source
        try:
            monitorload.check(monitorload.resolve(monitor), options, monitor)
        except ImmortalError as exc:
            one.problem(f"monitors.{monitor}", str(exc), source)
