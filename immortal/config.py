"""``immortal.toml``: one file, one group of programs; ``load`` reads it into a ``Config``.

Precedence, from the weakest to the strongest (each value remembers which gave it):

1. the built-in defaults (``start()``'s own);
2. the file: the top-level keys (the group's) and ``[programs.NAME]`` (each program's);
3. the chosen environment's tables: ``[env.NAME]`` (the same keys as the top level,
   ``programs.P.*`` included) and ``[programs.P.env.NAME]`` (variables for P's target);
4. environment variables: ``IMMORTAL_READY`` (every program's ``ready``);
5. the command line: ``--set KEY=VALUE``, KEY dotted as in the file.

Which environment: ``-E NAME``, else ``$IMMORTAL_ENV``, else none. Paths in the file
(``file``, ``exec``, ``cwd``, ``env_file``, ``unix:`` addresses) are relative to the file's
directory, which is also each program's default ``cwd``. Every problem is collected, and
``ConfigError`` lists them all, each with its line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from . import envfile, readiness
from .checks import check_timeout
from .configcheck import DEFAULTS, Program, Setting, check_program  # noqa: F401  (DEFAULTS)
from .configfile import (CLI, DEFAULT, ENV_FILE, FILE, FILE_NAME, GROUP, VARIABLE,
                         ConfigError, Document, Layer, Problem, Source, parse)
from .configfile import overrides as command_line
from .errors import ImmortalError, did_you_mean
from .names import check_name
from .records import Record, replace
from .spec import Strategy

ENV_NAME = "IMMORTAL_ENV"  #: the environment to use when -E names none
GROUP_DEFAULTS: dict[str, Any] = {"strategy": "daemon", "start_timeout": 30.0}


class Config(Record):
    """A configuration file, loaded: the group and its programs."""

    path: str  #: the file, absolute
    environment: Setting  #: the environment's name (None: none), and who chose it
    name: Setting
    strategy: Setting
    start_timeout: Setting
    programs: dict[str, Program]

    @property
    def directory(self) -> str:
        return os.path.dirname(self.path)

    def group_kwargs(self) -> dict[str, Any]:
        """``start_group()``'s keyword arguments other than the programs."""
        return {"strategy": self.strategy.value, "start_timeout": self.start_timeout.value}

    def programs_kwargs(self) -> dict[str, dict[str, Any]]:
        """``start_group()``'s ``programs``: each program's ``start()`` keyword arguments."""
        return {name: dict(program.kwargs) for name, program in self.programs.items()}

    def start_kwargs(self, program: str) -> dict[str, Any]:
        """``immortal.start()``'s keyword arguments for ``program`` as a group of its own,
        named as the file's group."""
        return {**self.programs[program].kwargs, "name": self.name.value,
                **self.group_kwargs()}

    def to_json(self) -> dict[str, Any]:
        """Each value with its source (``{"value": ..., "source": "file:12"}``)."""
        def shown(setting: Setting) -> dict[str, Any]:
            return {"value": setting.value, "source": str(setting.source),
                    "kind": setting.source.kind, "line": setting.source.line}

        return {"path": self.path, "environment": shown(self.environment),
                "name": shown(self.name), "strategy": shown(self.strategy),
                "start_timeout": shown(self.start_timeout),
                "programs": {name: {key: shown(setting) for key, setting in
                                    program.settings.items()}
                             for name, program in self.programs.items()}}


def find(path: str | os.PathLike[str] | None = None, cwd: str | None = None) -> str:
    """The configuration file's absolute path: ``path``, else ``immortal.toml`` in ``cwd``
    (default: the current directory). ConfigError if there is none."""
    here = os.getcwd() if cwd is None else cwd
    chosen = os.path.join(here, FILE_NAME) if path is None else os.path.join(here, path)
    if not os.path.isfile(chosen):
        what = (f"no {FILE_NAME} in {here}; give one with -c FILE" if path is None
                else "no such file" if not os.path.exists(chosen) else "not a file")
        raise ConfigError(str(path or chosen), [Problem(Source(DEFAULT), "", what)])
    return os.path.abspath(chosen)


def load(path: str | os.PathLike[str] | None = None, env_name: str | None = None, *,
         overrides: Iterable[tuple[str, Any]] = (), environ: Mapping[str, str] | None = None,
         cwd: str | None = None, check_monitors: bool = True, as_group: bool = False,
         env_source: Source | None = None) -> Config:
    """Read, merge and check a configuration file; every problem at once as ConfigError.

    ``path``: the file (default ``immortal.toml`` in ``cwd``, default the current
    directory); ``env_name``: the environment (default ``environ[IMMORTAL_ENV]``, else
    none); ``overrides``: the command line's ``(dotted key, value)`` pairs, in order;
    ``environ``: the environment variables (default ``os.environ``), which the targets'
    environments start from; ``check_monitors``: also find each monitor and run its
    ``check()`` on its options; ``as_group``: also check the programs together, as
    ``start_group()`` will run them (``up``): a ``channel``, an address two programs
    ``listen`` on, a ``port:N`` probe of an address the group holds; ``env_source``: who
    chose ``env_name`` (default: the command line).
    """
    environ = os.environ if environ is None else environ
    chosen, document = _read(path, cwd)
    loaded = _Loader(document, chosen, environ, check_monitors).load(
        env_name, overrides, env_source or Source(CLI))
    if as_group:
        _check_as_group(loaded, document.path)
    return loaded


def load_each(path: str | os.PathLike[str] | None = None, *,
              overrides: Iterable[tuple[str, Any]] = (),
              environ: Mapping[str, str] | None = None,
              cwd: str | None = None) -> tuple[Config, tuple[str, ...]]:
    """What ``validate`` checks when no environment is chosen: the file with none, then in
    each environment it declares, as ``load(..., as_group=True)`` does. ConfigError with
    every problem; one found in an environment alone names it. Returns the file loaded
    with none, and the environments it declares."""
    names = environments(path, cwd)
    shown = os.fspath(path) if path is not None else FILE_NAME
    problems: list[Problem] = []
    plain: Config | None = None
    for name in ("", *names):  # "": none, whatever $IMMORTAL_ENV says
        try:
            loaded = load(path, name, overrides=overrides, environ=environ, cwd=cwd,
                          as_group=True)
        except ConfigError as exc:
            problems += exc.problems if not name else [
                _in_environment(p, name) for p in exc.problems if p not in problems]
        else:
            plain = plain or loaded
    if problems or plain is None:
        raise ConfigError(shown, problems)
    return plain, names


def environments(path: str | os.PathLike[str] | None = None,
                 cwd: str | None = None) -> tuple[str, ...]:
    """The environments the file declares (``[env.NAME]``), in its order."""
    return tuple(_read(path, cwd)[1].envs or ())


def _in_environment(problem: Problem, name: str) -> Problem:
    said = f"(in environment {name!r})"
    return replace(problem, key=f"{problem.key} {said}" if problem.key else said)


def _read(path: str | os.PathLike[str] | None, cwd: str | None) -> tuple[str, Document]:
    """The file's absolute path, and its document (ConfigError if it cannot be read, or
    is not TOML)."""
    chosen = find(path, cwd)
    shown = os.fspath(path) if path is not None else FILE_NAME
    try:
        with open(chosen, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(shown, [Problem(Source(DEFAULT), "", f"cannot be read: {reason}")])
    document = parse(shown, text)
    if document.problems and not document.base.tree:
        raise ConfigError(shown, document.problems)  # a syntax error: nothing to go on
    return chosen, document


class _Loader:
    """One ``load``: the layers merged in order, then every value checked."""

    def __init__(self, document: Document, path: str, environ: Mapping[str, str],
                 check_monitors: bool) -> None:
        self.document = document
        self.path = path
        self.base = os.path.dirname(path)
        self.environ = environ
        self.check_monitors = check_monitors
        self.problems: list[Problem] = document.problems
        self.tree: dict[str, Any] = {}
        self.sources: dict[tuple[str, ...], Source] = {}
        #: ``(program, key)`` refused by the strongest layer that has the key
        self.refused: set[tuple[str, str]] = set()

    def load(self, env_name: str | None, pairs: Iterable[tuple[str, Any]],
             env_source: Source) -> Config:
        environment = self._environment(env_name, env_source)
        cli = command_line(pairs, self.problems)
        self._merge(self.document.base)
        if environment.value is not None and environment.value in self.document.envs:
            self._merge(self.document.envs[environment.value])
        self._merge(self._variables(cli))
        self._merge(cli)
        group = self._group()
        programs = {name: self._program(name) for name in self.tree.get("programs", {})
                    if self._in_file(name)}
        if not programs and not self.tree.get("programs"):
            self.problems.append(Problem(Source(FILE, 1), "programs", "no program: add one, "
                                         "like [programs.web] with file = \"web.py\""))
        if self.problems:
            raise ConfigError(self.document.path, self.problems)
        name, strategy, start_timeout = group
        return Config(self.path, environment, name, strategy, start_timeout, programs)

    def _environment(self, env_name: str | None, source: Source) -> Setting:
        if env_name == "":  # -E '': none, said (a reload leaves the group's environment)
            return Setting(None, source)
        if env_name is None:
            env_name = self.environ.get(ENV_NAME) or None
            source = Source(VARIABLE, name=ENV_NAME) if env_name else Source(DEFAULT)
        known = self.document.envs
        if env_name is not None and env_name not in known:
            listed = ", ".join(sorted(known)) or "none (add an [env.NAME] table)"
            self.problems.append(Problem(source, "env", f"unknown environment {env_name!r}"
                                         f"{did_you_mean(env_name, known)}; the file's "
                                         f"environments: {listed}" + (
                                             "; the group runs in it: apply another with "
                                             "-E NAME, or none with -E ''"
                                             if source.kind == GROUP else "")))
        return Setting(env_name, source)

    def _variables(self, cli: Layer) -> Layer:
        """Layer 4: the environment variables, for every program known by then."""
        layer = Layer(lambda path: Source(VARIABLE, name=readiness.ENV), (), self.problems)
        ready = self.environ.get(readiness.ENV)
        if ready:
            names = {*self.tree.get("programs", {}), *cli.tree.get("programs", {})}
            for name in names:
                layer.put(("programs", name, "ready"), ready, ())
        return layer

    def _merge(self, layer: Layer) -> None:
        for name, program in layer.tree.get("programs", {}).items():
            if "env_file" in program:
                self._env_file(name, program["env_file"],
                               layer.sources[("programs", name, "env_file")])
        _deep_merge(self.tree, layer.tree)
        self.sources.update(layer.sources)
        self.refused -= {(name, key) for name, program in
                         layer.tree.get("programs", {}).items() for key in program}
        self.refused |= layer.refused

    def _env_file(self, program: str, value: str, source: Source) -> None:
        """An ``env_file`` replaces the variables an earlier one gave; the variables its
        own layer gives come on top of it."""
        env = self.tree.setdefault("programs", {}).setdefault(program, {}).setdefault("env", {})
        for key in list(env):
            if self.sources[("programs", program, "env", key)].kind == ENV_FILE:
                del env[key]
        try:
            found = envfile.read(os.path.join(self.base, value), value)
        except envfile.EnvFileError as exc:
            self.problems.append(Problem(Source(ENV_FILE, exc.line, value), "",
                                         str(exc).split(": ", 1)[1]))
            return
        except ImmortalError as exc:
            self.problems.append(Problem(source, f"programs.{program}.env_file", str(exc)))
            return
        for key, text, line in found:
            env[key] = text
            self.sources[("programs", program, "env", key)] = Source(ENV_FILE, line, value)

    def _group(self) -> tuple[Setting, Setting, Setting]:
        sources = self.sources
        name = self.tree.get("name")
        name_source = sources.get(("name",), Source(DEFAULT))
        if name is None:
            name = os.path.basename(self.base)
        try:
            check_name(name)
        except ImmortalError as exc:
            hint = "; set name = \"...\" at the top of the file" if (
                name_source.kind == DEFAULT) else ""
            self.problems.append(Problem(name_source, "name", f"{exc}{hint}"))
        strategy = self._checked(("strategy",), lambda v: Strategy.parse(v).value)
        start_timeout = self._checked(("start_timeout",),
                                      lambda v: check_timeout("start_timeout", v))
        return Setting(name, name_source), strategy, start_timeout

    def _checked(self, path: tuple[str, ...], check: Any) -> Setting:
        """A group setting (or its default), through ``check``."""
        value = self.tree.get(path[0], GROUP_DEFAULTS[path[0]])
        source = self.sources.get(path, Source(DEFAULT))
        try:
            check(value)
        except ImmortalError as exc:
            self.problems.append(Problem(source, path[0], str(exc)))
        return Setting(value, source)

    def _in_file(self, name: str) -> bool:
        """Whether ``name`` is a program of the file, or one an environment or the command
        line adds (with its ``file``); else a problem at the key that names it, a program
        the file does not have."""
        known = self.document.base.tree.get("programs", {})
        if name in known or "file" in self.tree["programs"][name]:
            return True
        listed = ", ".join(known) or "none"
        self.problems.append(Problem(
            self.sources[("programs", name)], f"programs.{name}",
            f"the file has no program {name!r}{did_you_mean(name, known)}; its programs: "
            f"{listed} (a program added here needs its file: programs.{name}.file)"))
        return False

    def _program(self, name: str) -> Program:
        table = self.tree["programs"][name]
        sources = {path[2:]: source for path, source in self.sources.items()
                   if path[:2] == ("programs", name) and len(path) > 2}
        refused = {key for program, key in self.refused if program == name}
        return check_program(name, table, sources, self.sources[("programs", name)],
                             self.base, self.environ, self.problems, self.check_monitors,
                             refused)


def _check_as_group(loaded: Config, shown: str) -> None:
    """What ``start_group()`` refuses of programs that are each good alone, found before
    ``up`` or ``validate`` says the file is good: ConfigError at each program's key."""
    from .programs import build_programs

    found: list[ImmortalError] = []
    try:
        build_programs(loaded.name.value, loaded.programs_kwargs(),
                       Strategy.parse(loaded.strategy.value), loaded.directory, found)
    except ImmortalError as exc:
        found.append(exc)
    if found:
        raise ConfigError(shown, [_as_problem(loaded, exc) for exc in found]) from None


def _as_problem(loaded: Config, exc: ImmortalError) -> Problem:
    """A refusal of ``start_group()`` at the program's key it is about."""
    named = re.match(r"program '([^']+)': (.*)", str(exc), re.S)
    program = loaded.programs.get(named.group(1)) if named else None
    if named is None or program is None:
        return Problem(Source(DEFAULT), "", str(exc))
    message = named.group(2)
    field = re.match(r"'(\w+)'", message)
    key = field.group(1) if field and field.group(1) in program.settings else "file"
    return Problem(program.settings[key].source, f"programs.{program.name}.{key}", message)


def _deep_merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Tables merge key by key; any other value (an array too) replaces the one below."""
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        elif isinstance(value, dict):
            into[key] = {}
            _deep_merge(into[key], value)
        else:
            into[key] = value
