"""Groups started again from their record: ``immortal start-recorded``, ``save`` and
``resurrect``.

Every group's ``spec.json`` records how it was started, every option checked (its monitors'
options as their ``check()`` returned them, its environment, its addresses as bound), and
stays after the group ends. ``arguments`` turns it back into ``start()``'s keyword
arguments, so a group started from its record runs as it did (with the import path its
caller had, for monitors named ``package.module:Class``).

- ``start_recorded(NAME)``: the group again, detached or (``foreground``) in this process:
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
from .errors import ImmortalError, InvalidSpec, NotRunning
from .group import Group, attach, groups
from .launcher import start
from .spec import Spec, Strategy
from .state import check_dir, home, read_json, write_json

#: ``save``'s record, in the home (a leading dot: no group's name)
SAVED = ".saved.json"


def arguments(spec: Spec) -> dict[str, Any]:
    """``start()``'s keyword arguments (``file`` and ``args`` among them) that start the
    group ``spec`` records again, with the same options."""
    return {
        "file": spec.file, "args": list(spec.args), "strategy": spec.strategy.value,
        "monitors": {name: dict(options) for name, options in spec.monitors},
        "name": spec.name, "exec": spec.exec, "env": dict(spec.env), "cwd": spec.cwd,
        "umask": spec.umask, "policy": spec.policy.to_json(),
        "stop_timeout": spec.stop_timeout, "start_timeout": spec.start_timeout,
        "backpressure": spec.backpressure, "channel": spec.channel, "ready": spec.ready,
        "ready_timeout": spec.ready_timeout, "listen": list(spec.listen) or None,
        "workers": spec.workers,
    }


def record(name: str) -> Spec:
    """The recorded ``Spec`` of the group ``name`` (its ``spec.json``), running or not."""
    attach(name)  # the directory and its files are ours, or an error that says why
    directory = home() / name
    check_dir(directory)
    data = read_json(directory / "spec.json")
    if data is None:
        raise NotRunning(f"group {name!r} has no recorded spec.json in {str(directory)!r}")
    return _spec(data, name)


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
    _one_program(spec)
    with _import_path(spec):
        return start(**arguments(spec))


def start_recorded(name: str, *, in_foreground: bool = False,
                   console: bool | None = None) -> Group:
    """``immortal start-recorded NAME``: the group ``name`` started again from its record;
    with ``in_foreground``, in this process (``foreground.start``: never returns), as the
    daemon strategy whatever the record says."""
    spec = record(name)
    _one_program(spec)
    if not in_foreground:
        return start_again(spec)
    given = arguments(spec)
    given.pop("strategy")
    with _import_path(spec):
        _foreground(given, console)


def _one_program(spec: Spec) -> None:
    """A group of several programs is not started again from its record (yet)."""
    if spec.several:
        raise InvalidSpec(f"group {spec.name!r} runs several programs (start_group()): its "
                          "record starts a group of one program only; start it with "
                          "start_group() or its config file")


def _foreground(given: dict[str, Any], console: bool | None) -> NoReturn:
    foreground.start(given.pop("file"), given.pop("args"), console=console, **given)


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
