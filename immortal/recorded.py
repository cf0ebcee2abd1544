"""Groups started again from their record: ``immortal start-recorded``, ``save`` and
``resurrect``.

Every group's ``spec.json`` records how it was started, every option checked (its monitors'
options as their ``check()`` returned them, its environment, its addresses as bound, the
operator's options), and stays after the group ends. ``arguments`` turns it back into
``start()``'s keyword arguments (``programs``, for a group of several programs, into
``start_group()``'s), so a group started from its record runs as it did (with the import
path its caller had, for monitors named ``package.module:Class``).

- ``start_recorded(NAME)``: the group again, detached or (``foreground``) in this process
  (``foreground.start``, or ``start_group`` for a group of several programs):
  what a systemd unit's ``ExecStart`` runs (``units``). A start that fails puts the record
  back (``launcher``), so a unit restarted after a failure (an address in use at boot)
  still finds it.
- ``save()``: the records of the groups running now, in ``.saved.json`` in the home;
  ``resurrect()`` starts each of them that does not run (PM2's ``save``/``resurrect``).
  A ``development`` group lives and dies with its caller: it is not saved.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from . import foreground
from .errors import AlreadyRunning, ImmortalError, InvalidSpec, NotRunning
from .group import Group, attach, groups
from .groupstart import launch_group, plan_group
from .launcher import launch, plan
from .records import replace
from .request import Request, build
from .spec import Program, Spec, Strategy
from .state import check_dir, home, read_json, write_json

#: ``save``'s record, in the home (a leading dot: no group's name)
SAVED = ".saved.json"


def arguments(spec: Spec) -> dict[str, Any]:
    """``start()``'s keyword arguments (``file`` and ``args`` among them) that start the
    group of one program ``spec`` records again, with the same options."""
    return {"strategy": spec.strategy.value, "name": spec.name,
            "start_timeout": spec.start_timeout, **options(spec)}


def programs(spec: Spec) -> dict[str, dict[str, Any]]:
    """``start_group()``'s ``programs`` that start the group of several programs ``spec``
    records again, each with its options (a program an apply was removing left out)."""
    return {p.name: options(p) for p in spec.programs if p.workers}


def options(program: Spec | Program) -> dict[str, Any]:
    """A program's options as ``start()`` takes them, and ``start_group()`` each
    program's: every one the record holds (its ``log_path`` follows from its monitors; a
    watch delay or a memory window, recorded at their defaults, only with what they are
    for: alone, they are refused)."""
    return {
        "file": program.file, "args": list(program.args),
        "monitors": {name: dict(given) for name, given in program.monitors},
        "exec": program.exec, "env": dict(program.env), "cwd": program.cwd,
        "umask": program.umask, "policy": program.policy.to_json(),
        "stop_timeout": program.stop_timeout, "backpressure": program.backpressure,
        "channel": program.channel, "ready": program.ready,
        "ready_timeout": program.ready_timeout, "listen": list(program.listen) or None,
        "workers": program.workers, "user": program.user, "group": program.group,
        "watch": list(program.watch), "ignore": list(program.ignore),
        "watch_delay": program.watch_delay if program.watch else None,
        "memory_limit": program.memory_limit,
        "memory_window": None if program.memory_limit is None else program.memory_window,
        "memory_children": program.memory_children,
        "comment": program.comment,
    }


def record(name: str) -> Spec:
    """The recorded ``Spec`` of the group ``name`` (its ``spec.json``), running or not."""
    attach(name)  # the directory and its files are ours, or an error that says why
    directory = home() / name
    check_dir(directory)
    data = read_json(directory / "spec.json")
    if data is None:
        raise NotRunning(f"group {name!r} has no recorded spec.json in {str(directory)!r}")
    spec = _spec(data, name)
    if spec.name != name:
        # A directory copied or renamed: its record names another group, and may hold
        # paths of that group's directory (its output file among them).
        raise InvalidSpec(f"the record in {str(directory)!r} is of group {spec.name!r}, not "
                          f"{name!r} (a copied or renamed directory?); start {spec.name!r}, "
                          f"or run the program anew as {name!r}")
    return spec


def _spec(data: Any, name: str) -> Spec:
    try:
        return Spec.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidSpec(f"the record of group {name!r} cannot be read: {exc}") from None


@contextlib.contextmanager
def _import_path(spec: Spec) -> Iterator[None]:
    """The import path the group's caller had, ahead of ours, while it starts."""
    before = list(sys.path)
    sys.path[:0] = [entry for entry in spec.sys_path if entry not in sys.path]
    try:
        yield
    finally:
        sys.path[:] = before


def start_again(spec: Spec) -> Group:
    """Start the group ``spec`` records again, detached, as it was started."""
    if spec.strategy == Strategy.DEVELOPMENT:
        raise InvalidSpec(f"group {spec.name!r} ran in development (it lived and died with "
                          "its caller): start it with 'immortal run' instead")
    with _import_path(spec):
        if spec.several:
            return launch_group(_planned(spec, spec.strategy))
        return launch(_request(spec, spec.strategy))


def start_recorded(name: str, *, in_foreground: bool = False,
                   console: bool | None = None) -> Group:
    """``immortal start-recorded NAME``: the group ``name`` started again from its record;
    with ``in_foreground``, in this process (``foreground.start``, or
    ``foreground.start_group``: never returns), as the daemon strategy whatever the record
    says."""
    spec = record(name)
    with _nothing_to_start(name):
        if not in_foreground:
            return start_again(spec)
        with _import_path(spec):
            _foreground(spec, console)


@contextlib.contextmanager
def _nothing_to_start(name: str) -> Iterator[None]:
    """The lock's refusal in a start's words: a start is not a 'run' of a new group, so
    neither 'stop it first' nor 'choose another name' is the way on."""
    try:
        yield
    except AlreadyRunning as exc:
        if not exc.pids:  # held by another command, not by the group's supervisors
            raise AlreadyRunning(
                f"group {name!r} is being started, stopped or forgotten by another "
                f"command, which holds its lock; 'immortal status {name}' shows what it "
                "became") from None
        shown = ", ".join(f"{role} {pid}" for role, pid in exc.pids.items())
        raise AlreadyRunning(
            f"group {name!r} is running already ({shown}): nothing to start; "
            f"'immortal restart {name}' restarts it", exc.pids) from None


def _request(spec: Spec, strategy: Strategy) -> Request:
    """The group of one program ``spec`` records, its arguments checked anew (``start()``'s
    checks), with the import path it records (not the one of this process, whose directory
    is not the group's caller's)."""
    return replace(build(**{**arguments(spec), "strategy": strategy}), sys_path=spec.sys_path)


def _planned(spec: Spec, strategy: Strategy) -> Spec:
    """The group of several programs ``spec`` records, planned anew (``start_group()``'s
    checks), with what ``start_group()`` takes no keyword for as recorded: its import path,
    the names of each program's environment its configuration file set, and the file's
    environment it was made in (``fileverbs``)."""
    new = plan_group(spec.name, programs(spec), strategy, spec.start_timeout)
    kept = {p.name: p for p in spec.programs}
    return replace(new, sys_path=spec.sys_path, programs=tuple(
        replace(p, variables=kept[p.name].variables, environment=kept[p.name].environment)
        for p in new.programs))


def _foreground(spec: Spec, console: bool | None) -> NoReturn:
    if spec.several:  # as foreground.start_group, from the record
        foreground.run(_planned(spec, Strategy.DAEMON), console=console)
    foreground.run(plan(_request(spec, Strategy.DAEMON)), console=console)


# ----------------------------------------------------------------- save, resurrect
def saved_path() -> Path:
    return home() / SAVED


def save() -> tuple[list[str], list[str]]:
    """Record every running group (``.saved.json``); the names saved, and those left out
    (development groups)."""
    kept, left = [], []
    records = []
    for status in groups():
        if not status.running:
            continue
        try:
            spec = record(status.name)
        except ImmortalError:
            continue  # ended meanwhile, or its record is not ours to trust
        if spec.strategy == Strategy.DEVELOPMENT:
            left.append(status.name)
            continue
        records.append(spec.to_json())
        kept.append(status.name)
    write_json(saved_path(), {"saved_at": time.time(), "groups": records})
    return kept, left


def saved() -> list[Spec]:
    """The groups ``save`` recorded, in order."""
    data = read_json(saved_path())
    if data is None:
        raise NotRunning(f"nothing saved: no {str(saved_path())!r} ('immortal save' writes it)")
    found = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(found, list):
        raise InvalidSpec(f"{str(saved_path())!r} holds no list of groups")
    return [_spec(entry, str(entry.get("name") if isinstance(entry, dict) else "?"))
            for entry in found]


def resurrect() -> list[tuple[str, str, Group | None]]:
    """Start every saved group that does not run: ``(name, what happened, group)`` each,
    what happened being ``started``, ``running`` (already) or the error's words."""
    done: list[tuple[str, str, Group | None]] = []
    for spec in saved():
        try:
            if attach(spec.name).status().running:
                done.append((spec.name, "running", None))
                continue
        except NotRunning:
            pass  # no trace of it in this home: started anew
        except ImmortalError as exc:
            done.append((spec.name, str(exc), None))
            continue
        try:
            done.append((spec.name, "started", start_again(spec)))
        except ImmortalError as exc:
            done.append((spec.name, str(exc), None))
    return done
