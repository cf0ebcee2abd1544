"""``start_group()``'s and ``Group.apply()``'s programs, checked in the caller: each one's
options as ``start()`` checks them (``request.build``), the error naming the program; the
group's own (its name, strategy, start timeout); and what the programs may not share (a
listen address). Then ``Spec.of_programs``, and what an apply changes (``Applied``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import monitor
from .addresses import parse as parse_address
from .checks import check_timeout
from .errors import (ImmortalError, InvalidSpec, InvalidType, NotRunning, UnknownKeyword,
                     unknown_name)
from .instance import UNROLLED, try_lock
from .names import check_name
from .readiness import NOTIFY
from .records import Record, replace
from .request import START_KEYWORDS, build, check_monitors, check_probe
from .spec import Program, Spec, Strategy, program_dir
from .state import read_json, write_json

#: the keywords of ``start()`` that are the group's, not a program's
GROUP_KEYWORDS = ("strategy", "name", "start_timeout", "capture")
#: what each program of ``start_group(name, programs)`` may say
PROGRAM_KEYWORDS = ("file", "args", *(key for key in START_KEYWORDS
                                      if key not in GROUP_KEYWORDS))
MAX_PROGRAMS = 64
#: Held by the caller of an apply (``reload``, ``up``) from its request to its last roll:
#: two at once would each compare the programs with what the other changes.
APPLY_LOCK = "apply.lock"


def _named(program: str, exc: ImmortalError) -> ImmortalError:
    """``exc`` again, its message saying which program it is about."""
    error = type(exc)(f"program {program!r}: {exc}")
    error.__cause__ = exc
    return error


def check_programs(programs: object) -> dict[str, Mapping[str, Any]]:
    """The programs mapping's shape: names to mappings of ``start()`` keywords."""
    if not isinstance(programs, Mapping):
        raise InvalidType(f"'programs' must be a mapping of program names to their options "
                          f"(got {type(programs).__name__}: {programs!r})")
    if not programs:
        raise InvalidSpec("'programs' names no program; give at least one, e.g. "
                          "{'web': {'file': 'server.py'}}")
    if len(programs) > MAX_PROGRAMS:
        raise InvalidSpec(f"'programs' takes at most {MAX_PROGRAMS} programs "
                          f"(got {len(programs)})")
    checked: dict[str, Mapping[str, Any]] = {}
    for name, options in programs.items():
        try:
            check_name(name)
        except ImmortalError as exc:
            raise type(exc)(str(exc).replace("'name'", "a program's name", 1)) from None
        if not isinstance(options, Mapping):
            raise InvalidType(f"program {name!r}: its options must be a mapping of start() "
                              f"keywords (got {type(options).__name__}: {options!r})")
        for key in options:
            if key not in PROGRAM_KEYWORDS:
                if key in GROUP_KEYWORDS:
                    raise InvalidSpec(f"program {name!r}: {key!r} is the group's, not a "
                                      f"program's: give it to start_group()")
                raise _named(name, unknown_name("keyword argument", str(key),
                                                PROGRAM_KEYWORDS, UnknownKeyword))
        if "file" not in options:
            raise InvalidSpec(f"program {name!r}: 'file' is missing: the program to run")
        checked[name] = options
    return checked


def build_programs(group: str, programs: object, strategy: Strategy, directory: str,
                   found: list[ImmortalError] | None = None) -> tuple[Program, ...]:
    """Each program checked as ``start()`` checks its arguments, then what they may not
    share: the first error names the program and the field. With ``found``, every such
    error goes there instead (a configuration file's check reports them all)."""
    def refuse(exc: ImmortalError) -> None:
        if found is None:
            raise exc
        found.append(exc)

    made = []
    for name, options in check_programs(programs).items():
        values = dict(options)
        file = values.pop("file")
        try:
            request = build(file, strategy=strategy, name=group, **values)
            if request.channel:
                raise InvalidSpec("'channel' works in a group of one program only (start())")
            chosen = check_monitors(request.monitors)
        except ImmortalError as exc:
            refuse(_named(name, exc))
            continue
        where = program_dir(directory, name)
        log_path = next((path for path in (monitor.output_path(factory, checked, where)
                                           for _, factory, checked in chosen) if path), None)
        monitors = tuple((monitor, checked) for monitor, _, checked in chosen)
        made.append(request.program(name, monitors, log_path))
    _check_shared(made, refuse)
    return tuple(made)


def _check_shared(programs: list[Program], refuse: Callable[[ImmortalError], None]) -> None:
    """No listen address in two programs, and no readiness probe of a port the group
    holds (a connect to it succeeds before any target accepts)."""
    here = os.getcwd()
    owner: dict[str, str] = {}
    every = [address for p in programs for address in p.listen]
    for p in programs:
        for text in p.listen:
            key = str(parse_address(text, here))
            if key in owner and not key.endswith(":0"):
                refuse(InvalidSpec(f"program {p.name!r}: 'listen' {text!r} is program "
                                   f"{owner[key]!r}'s already; give each address to one "
                                   "program"))
                continue
            owner[key] = p.name
    for p in programs:
        try:
            check_probe(p.ready, every, here)
        except ImmortalError as exc:
            refuse(_named(p.name, exc))


def build_group(name: object, programs: object, strategy: object,
                start_timeout: object, directory: str) -> Spec:
    """The spec of a group of several programs, every argument checked."""
    import sys

    group = check_name(name)
    mode = Strategy.parse(strategy)
    patience = check_timeout("start_timeout", start_timeout, above_zero=True)
    made = build_programs(group, programs, mode, directory)
    return Spec.of_programs(group, mode, directory, made, patience,
                            tuple(os.path.abspath(p or os.getcwd()) for p in sys.path))


class Applied(Record):
    """What an apply did to each program (``Group.apply``), by name: ``added`` (started),
    ``removed`` (stopped), ``changed`` (rolled: a rolling restart with the new definition;
    its count of instances scaled too if it changed), ``scaled`` (only its count changed)
    and ``unchanged`` (untouched: the same processes)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    scaled: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    def actions(self) -> dict[str, str]:
        """Each program's action, by name: "added", "removed", "rolled", "scaled" or
        "unchanged"."""
        words = {"added": "added", "removed": "removed", "changed": "rolled",
                 "scaled": "scaled", "unchanged": "unchanged"}
        return {program: words[field] for field in self._fields
                for program in getattr(self, field)}


def compare(old: Spec, new: tuple[Program, ...],
            unrolled: tuple[str, ...] = ()) -> tuple[Applied, tuple[Program, ...]]:
    """What changes from the group ``old`` to the programs ``new``, and ``new`` with the
    addresses as bound; what cannot change in a running group (its listen addresses, bound
    once) is refused. A program of ``unrolled`` (its processes still run the definition
    before ``old``'s) is changed, whatever ``new`` says."""
    before = {p.name: p for p in old.programs if p.workers}
    after = {p.name: p for p in new}
    changed, scaled, unchanged, programs = [], [], [], []
    for name, p in after.items():
        was = before.get(name)
        if was is None:
            if p.listen:
                raise InvalidSpec(f"program {name!r}: 'listen' addresses are bound when the "
                                  "group starts; a program that listens cannot be added to "
                                  "a running group (stop and start it)")
            programs.append(p)
            continue
        if tuple(p.listen) != tuple(was.listen) and not _same_bound(was.listen, p.listen):
            raise InvalidSpec(f"program {name!r}: its 'listen' addresses cannot change in "
                              "a running group (they are bound once; stop and start it)")
        p = replace(p, listen=was.listen)
        programs.append(p)
        if p.target_side() != was.target_side() or name in unrolled:
            changed.append(name)
        elif p.workers != was.workers:
            scaled.append(name)
        else:
            unchanged.append(name)
    if not any(p.ready == NOTIFY for p in old.programs) \
            and any(p.ready == NOTIFY for p in new):
        raise InvalidSpec("'ready' 'notify' needs the group's notify socket, made when the "
                          "group starts if a program uses it; stop and start the group")
    removed = [name for name in before if name not in after]
    for name in removed:
        if before[name].listen:
            raise InvalidSpec(f"program {name!r} listens: its addresses are bound for the "
                              "group's life; it cannot be removed from a running group "
                              "(stop and start it)")
    return Applied(tuple(n for n in after if n not in before), tuple(removed),
                   tuple(changed), tuple(scaled), tuple(unchanged)), tuple(programs)


def _same_bound(bound: tuple[str, ...], asked: tuple[str, ...]) -> bool:
    """Whether ``asked`` names the addresses bound as ``bound`` (a port 0 as bound)."""
    return len(bound) == len(asked) and all(
        b == a or (a.endswith(":0") and b.rsplit(":", 1)[0] == a.rsplit(":", 1)[0])
        for b, a in zip(bound, asked))


def unrolled(directory: Path) -> tuple[str, ...]:
    """The programs an earlier apply changed and its caller did not roll (killed first)."""
    data = read_json(directory / UNROLLED)
    names = data.get("programs") if isinstance(data, dict) else None
    return tuple(n for n in names if isinstance(n, str)) if isinstance(names, list) else ()


def note_unrolled(directory: Path, names: Sequence[str]) -> None:
    """Record the programs this apply's caller has yet to roll (none: the record goes)."""
    if names:
        write_json(directory / UNROLLED, {"programs": list(names)})
        return
    try:
        os.unlink(directory / UNROLLED)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def one_change(directory: Path, name: str) -> Iterator[None]:
    """The group's apply lock, held while the caller changes its programs; NotRunning if
    another caller holds it."""
    held = try_lock(directory / APPLY_LOCK)
    if held is None:
        raise NotRunning(f"group {name!r}: another change of its programs (a reload, an "
                         "up) is in progress; wait for it to end")
    try:
        yield
    finally:
        os.close(held)
