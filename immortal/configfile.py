"""The shape of ``immortal.toml``: which keys exist, of which type, and where each value
came from.

A document is read into *layers* (``read``): the file's own values, one overlay per
environment (``[env.NAME]``, and the programs' ``[programs.P.env.NAME]`` variables), and
the command line's ``--set KEY=VALUE`` (``overrides``). Each layer is checked alone: an
unknown key (with "did you mean"), a value of the wrong type, each a ``Problem`` naming the
key and its line, all of them collected; a bad value is left out of its layer, so that
what is left can still be checked. ``config.py`` merges the layers in order of precedence
and checks the values themselves.
"""

from __future__ import annotations

from .configkeys import GROUP_KEYS, POLICY_KEYS, PROGRAM_KEYS, Bad, got, variable
from .errors import InvalidSpec, did_you_mean
from .names import check_name
from .records import Record
from .tomlkeys import key_lines, line_of, literals

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

FILE_NAME = "immortal.toml"

# Where a value came from, from the weakest to the strongest.
DEFAULT, FILE, ENV_TABLE, ENV_FILE, VARIABLE, CLI = (
    "default", "file", "env", "env_file", "variable", "command line")
#: where the environment came from when the running group chose it (``reload`` without -E)
GROUP = "group"


class Source(Record):
    """Where one value came from: ``kind`` (DEFAULT, FILE, ENV_TABLE, ENV_FILE, VARIABLE,
    CLI, or GROUP for the environment); ``line`` in the file (or in the environment file);
    ``name``: the environment's name (ENV_TABLE), the variable's (VARIABLE) or the
    environment file (ENV_FILE)."""

    kind: str
    line: int | None = None
    name: str = ""

    def __str__(self) -> str:
        where = "" if self.line is None else f":{self.line}"
        if self.kind == FILE:
            return f"file{where}"
        if self.kind == ENV_TABLE:
            return f"env.{self.name}{where}"
        if self.kind == ENV_FILE:
            return f"env_file {self.name}{where}"
        if self.kind == VARIABLE:
            return f"${self.name}"
        if self.kind == GROUP:
            return "the running group's"
        return self.kind


class Problem(Record):
    """One thing wrong with a configuration: where (``source``), which key (dotted, as the
    file writes it), and what."""

    source: Source
    key: str
    message: str

    def where(self, path: str) -> str:
        """``path:LINE`` for a place in the file, else where else the value came from."""
        if self.source.kind in (FILE, ENV_TABLE, DEFAULT):
            return path if self.source.line is None else f"{path}:{self.source.line}"
        if self.source.kind == ENV_FILE:
            line = "" if self.source.line is None else f":{self.source.line}"
            return f"{self.source.name}{line}"
        return str(self.source)


class ConfigError(InvalidSpec):
    """Everything wrong with a configuration at once: ``problems``, in file order; its
    message has one ``PATH:LINE: KEY: what`` line per problem."""

    def __init__(self, path: str, problems: Iterable[Problem]) -> None:
        self.path = path
        self.problems = sorted(problems, key=_order)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem, as an editor's "file:line:" jumps to it."""
        return [f"{p.where(self.path)}: {p.key + ': ' if p.key else ''}{p.message}"
                for p in self.problems]


def _order(problem: Problem) -> tuple[int, int, str]:
    kinds = (DEFAULT, FILE, ENV_TABLE, ENV_FILE, VARIABLE, GROUP, CLI)
    rank = 0 if problem.source.kind in (DEFAULT, FILE, ENV_TABLE) else kinds.index(
        problem.source.kind)
    return rank, problem.source.line or 0, problem.key


# Checking one layer -----------------------------------------------------------------------

class Layer:
    """One layer's values, checked (``tree``: nested dicts, as the file has them, with
    ``instances`` spelt ``workers``), and the ``Source`` of every path in it. Paths are the
    tree's; ``prefix`` is where the layer sits in the document (``("env", NAME)``)."""

    def __init__(self, where: Callable[[tuple[str, ...]], Source], prefix: tuple[str, ...],
                 problems: list[Problem], envs: Iterable[str] | None = None,
                 written: Mapping[tuple[object, ...], str] | None = None) -> None:
        self.tree: dict[str, Any] = {}
        self.sources: dict[tuple[str, ...], Source] = {}
        self.where = where  #: a path of the document to its Source
        self.prefix = prefix
        self.problems = problems
        #: the environments a program's env may hold tables for (None: no such tables)
        self.envs = None if envs is None else set(envs)
        #: ``programs.P.env.NAME`` of the file: environment to program to its variables
        self.program_envs: dict[str, dict[str, dict[str, Any]]] = {}
        #: the text of each number of the document as written (``tomlkeys.literals``)
        self.written = written or {}
        #: ``(program, key)`` of each program's key this layer refused (``workers`` for
        #: ``instances``): what a check of it with another key would only repeat
        self.refused: set[tuple[str, str]] = set()

    def problem(self, doc: tuple[str, ...], message: str) -> None:
        """A problem with the key at ``doc``, a path of the document; one of an
        environment's table named as the key it sets, in that environment."""
        path = doc[len(self.prefix):] if doc[:len(self.prefix)] == self.prefix else doc
        key = ".".join(doc)
        if len(self.prefix) == 2 and self.prefix[0] == "env" and path is not doc and path:
            key = f"{'.'.join(path)} (in environment {self.prefix[1]!r})"
        self.problems.append(Problem(self.where(doc), key, message))
        if len(path) > 2 and path[0] == "programs":
            self.refused.add((path[1], "workers" if path[2] == "instances" else path[2]))

    def put(self, path: tuple[str, ...], value: Any, doc: tuple[str, ...]) -> None:
        node = self.tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        self.sources[path] = self.where(doc)

    def group(self, table: dict[str, Any], hint: str = "") -> None:
        """The keys of the top of the document, of ``[env.NAME]`` or of the command line;
        ``hint``: what to say of an ``env`` key where there may be none."""
        for key, value in table.items():
            if key == "env" and self.envs is not None:
                continue  # the file's environments: layers of their own
            check = GROUP_KEYS.get(key)
            if check is None:
                self._unknown((key,), GROUP_KEYS, hint if key == "env" else "")
            elif key == "programs":
                self._programs(value)
            else:
                self._value((key,), value, check)

    def _programs(self, programs: object) -> None:
        doc = self.prefix + ("programs",)
        if not isinstance(programs, dict):
            self.problem(doc, f"expected a table of programs, like [programs.web] "
                         f"({got(programs)})")
            return
        for name, table in programs.items():
            try:
                check_name(name)
            except InvalidSpec:
                self.problem(doc + (name,), "a program's name must be 1 to 64 letters, "
                             "digits and ._+@-, starting with a letter or a digit")
                continue
            if not isinstance(table, dict):
                self.problem(doc + (name,), f"expected a table ({got(table)})")
                continue
            self.tree.setdefault("programs", {}).setdefault(name, {})
            self.sources[("programs", name)] = self.where(doc + (name,))
            self._program(("programs", name), table)

    def _program(self, path: tuple[str, ...], table: dict[str, Any]) -> None:
        if "workers" in table and "instances" in table:
            self.problem(self.prefix + path + ("instances",), "give workers or instances, "
                         "not both (they are one setting)")
        for key, value in table.items():
            check = PROGRAM_KEYS.get(key)
            at = path + (key,)
            if check is None:
                hint = "; a program's name is its table's, [programs.NAME]" if key == "name" \
                    else ("; start_timeout is the group's: set it at the top of the file"
                          if key == "start_timeout" else "")
                self._unknown(at, PROGRAM_KEYS, hint)
            elif key == "policy":
                self._table(at, value, POLICY_KEYS, "restart policy field")
            elif key == "monitors":
                self._monitors(at, value)
            elif key == "env":
                self._env(at, value)
            elif key == "umask" and _decimal(self.written.get(self.prefix + at), value):
                self.problem(self.prefix + at, _decimal_umask(
                    self.written[self.prefix + at], value))
            else:
                self._value(path + ("workers" if key == "instances" else key,), value,
                            check, self.prefix + at)

    def _table(self, path: tuple[str, ...], table: object,
               keys: dict[str, Callable[[Any], Any]], what: str) -> None:
        if not isinstance(table, dict):
            self.problem(self.prefix + path, f"expected a table ({got(table)})")
            return
        for key, value in table.items():
            if key not in keys:
                self._unknown(path + (key,), keys, "", what)
            else:
                self._value(path + (key,), value, keys[key])

    def _monitors(self, path: tuple[str, ...], table: object) -> None:
        if not isinstance(table, dict):
            self.problem(self.prefix + path, f"expected a table of monitors, each with its "
                         f"options, like [programs.web.monitors.file] ({got(table)})")
            return
        for name, options in table.items():
            at = path + (name,)
            if not isinstance(options, dict):
                self.problem(self.prefix + at, f"expected a table of the monitor's options, "
                             f"{{}} for none ({got(options)})")
            elif not options:
                self.put(at, {}, self.prefix + at)
            else:
                for key, value in options.items():
                    self.put(at + (key,), value, self.prefix + at + (key,))

    def _env(self, path: tuple[str, ...], table: object) -> None:
        """The target's variables; a table in it: the variables of one environment."""
        if not isinstance(table, dict):
            self.problem(self.prefix + path, f"expected a table of variables, like "
                         f"[programs.web.env] ({got(table)})")
            return
        for key, value in table.items():
            if isinstance(value, dict):
                self._program_env(path, key, value)
            elif not key or "=" in key or "\0" in key:
                self.problem(self.prefix + path + (key,), "a variable's name must be "
                             "non-empty, without '=' or NUL")
            else:
                self._value(path + (key,), value, variable)

    def _program_env(self, path: tuple[str, ...], name: str, table: dict[str, Any]) -> None:
        doc = self.prefix + path + (name,)
        if self.envs is None:
            self.problem(doc, "environment tables do not nest: give an environment's "
                         "variables in the file's [programs.P.env.NAME]")
        elif name not in self.envs:
            self.problem(doc, f"environment {name!r} is not declared"
                         f"{did_you_mean(name, self.envs)}; declare it at the top level "
                         f"with [env.{name}] (it may be empty)")
        else:
            self.program_envs.setdefault(name, {})[path[1]] = table

    def variables(self, program: str, name: str, table: dict[str, Any]) -> None:
        """The file's ``[programs.PROGRAM.env.NAME]``, into this layer (environment NAME's)."""
        for key, value in table.items():
            self._value(("programs", program, "env", key), value, variable,
                        ("programs", program, "env", name, key))

    def _value(self, path: tuple[str, ...], value: object, check: Callable[[Any], Any],
               doc: tuple[str, ...] | None = None) -> None:
        doc = self.prefix + path if doc is None else doc
        try:
            self.put(path, check(value), doc)
        except Bad as exc:
            self.problem(doc, str(exc))

    def _unknown(self, path: tuple[str, ...], known: Iterable[str], hint: str = "",
                 what: str = "key") -> None:
        known = sorted(known)
        close = "" if hint else did_you_mean(path[-1], known)
        self.problem(self.prefix + path, f"unknown {what} {path[-1]!r}{close}{hint}; "
                     f"valid: {', '.join(known)}")


def _decimal(text: str | None, value: object) -> bool:
    """An integer written without ``0o``: TOML reads ``22`` as twenty-two."""
    return text is not None and isinstance(value, int) and not isinstance(value, bool) \
        and not text.lstrip("+-").startswith("0o")


def _decimal_umask(text: str, value: int) -> str:
    digits = text.lstrip("+").replace("_", "")
    written = f"{digits:0>3}" if set(digits) <= set("01234567") else "022"
    return (f"a umask is octal, and {text} is a decimal integer (TOML has no leading "
            f"zeros: it reads {value}, umask 0o{value:03o}): write 0o{written}, or "
            f"\"{written}\"")


# The document and the command line --------------------------------------------------------

class Document(Record):
    """A configuration file, read and checked for shape: its layers (``base``, one per
    environment in ``envs``), the lines of its keys, and every problem found."""

    path: str
    text: str
    base: Layer
    envs: dict[str, Layer]
    problems: list[Problem]


def parse(path: str, text: str) -> Document:
    """The layers of ``text`` (the file at ``path``), each checked for shape; a TOML syntax
    error is the one problem then (its line, from the parser's message)."""
    problems: list[Problem] = []
    try:
        data = toml().loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError
        problems.append(_syntax(str(exc)))
        return Document(path, text, Layer(_file_source({}), (), problems), {}, problems)
    lines = key_lines(text)
    written = literals(text)
    where = _file_source(lines)
    envs_table = data.get("env", {})
    if not isinstance(envs_table, dict):
        problems.append(Problem(where(("env",)), "env", f"expected a table of environments, "
                                f"like [env.production] ({got(envs_table)})"))
        envs_table = {}
    base = Layer(where, (), problems, envs_table, written)
    base.group(data)
    envs = {}
    for name, table in envs_table.items():
        layer = Layer(_env_source(lines, name), ("env", name), problems, None, written)
        if isinstance(table, dict):
            layer.group(table, "; environments do not nest: an environment takes name, "
                        "strategy, start_timeout and programs")
        else:
            layer.problem(("env", name), f"expected a table, like [env.{name}] "
                          f"({got(table)})")
        for program, variables in base.program_envs.get(name, {}).items():
            layer.variables(program, name, variables)
        envs[name] = layer
    return Document(path, text, base, envs, problems)


def _file_source(lines: dict[tuple[object, ...], int]) -> Callable[[tuple[str, ...]], Source]:
    return lambda path: Source(FILE, line_of(lines, path))


def _env_source(lines: dict[tuple[object, ...], int],
                name: str) -> Callable[[tuple[str, ...]], Source]:
    return lambda path: Source(ENV_TABLE, line_of(lines, path), name)


def _syntax(message: str) -> Problem:
    """tomllib's message, "Invalid value (at line 3, column 9)": the line as the Problem's."""
    import re

    found = re.search(r"\(at line (\d+), column (\d+)\)", message)
    line = int(found.group(1)) if found else None
    text = message[:found.start()].rstrip() if found else message
    column = f" (column {found.group(2)})" if found else ""
    return Problem(Source(FILE, line), "", f"TOML syntax error: {text}{column}")


def toml() -> Any:
    """``tomllib``, or on Python 3.10 ``tomli``, the same parser."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib


def parse_value(text: str, key: str = "") -> Any:
    """A command line's VALUE: a TOML value (``4``, ``true``, ``["a", "b"]``, ``"x"``),
    else the text itself as a string (``line:ready``). A ``umask`` (``key``) of digits
    alone is octal, as ``run --umask 022`` (the string, where TOML would read decimal)."""
    if key.rsplit(".", 1)[-1] == "umask" and text.strip().isdigit():
        return text.strip()
    try:
        return toml().loads(f"v = {text}")["v"]
    except ValueError:
        return text


def overrides(pairs: Iterable[tuple[str, Any]], problems: list[Problem]) -> Layer:
    """The command line's layer: ``(KEY, value)`` pairs, KEY dotted as in the file
    (``programs.web.workers``, ``strategy``), in order (the last of a key wins)."""
    layer = Layer(lambda path: Source(CLI), (), problems)
    for key, value in pairs:
        parts = key.split(".")
        node: Any = value
        for part in reversed(parts):
            node = {part: node}
        if not all(parts):
            layer.problem((key,), "expected a dotted key, like programs.web.workers")
            continue
        if parts[0] == "env":
            layer.problem(tuple(parts), "choose an environment with -E NAME; set its "
                          "values with the keys they override (programs.web.workers=4)")
            continue
        layer.group(node)
    return layer
