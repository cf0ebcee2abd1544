"""Commands on groups by name: several names, or ``--all`` (``status``, ``stop``,
``restart``), a bare PROGRAM of the configuration file as GROUP/PROGRAM, and groups started
again or removed by name without a file (``start``, ``forget``). ``cli.py`` runs them.
"""

from __future__ import annotations

import argparse
import sys

from .errors import ImmortalError, InvalidSpec, NotRunning
from .names import address, whom

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Interrupted(Exception):
    """Ctrl-C: one line that says what was left behind, exit 130 (128 + SIGINT)."""


def start(ns: argparse.Namespace) -> int:
    """``start NAME...``: each stopped group again from its record."""
    from . import clisvc

    if ns.foreground and len(ns.names) > 1:
        raise InvalidSpec("--foreground starts one group in this process: name one")
    return each(ns.names, lambda name: clisvc.start_recorded(
        _one(ns, whole_group("start", name))))


def forget(ns: argparse.Namespace) -> int:
    from .forget import forget as remove

    def one(name: str) -> int:
        directory = remove(whole_group("forget", name))
        print(f"forgot {name!r} ({directory} removed)")
        return 0

    return each(ns.names, one)


def names(ns: argparse.Namespace, running_only: bool = True) -> list[str]:
    """The addresses a command of several names was given (a bare PROGRAM of the
    configuration file made GROUP/PROGRAM), or with ``--all`` every group of the home
    (``running_only``: those that run, or left processes running)."""
    if ns.all and ns.names:
        raise InvalidSpec(f"name groups or give --all, not both (got {' '.join(ns.names)})")
    if ns.all:
        from .group import attach, groups

        found = [s.name for s in groups()
                 if not running_only or s.running or attach(s.name).left_behind()]
        if not found:
            raise NotRunning("no group " + ("runs" if running_only else "exists") +
                             " in the home; 'immortal list' shows them")
        return found
    if not ns.names:
        from .cliargs import Usage

        raise Usage(f"name a group (or several), or give --all: 'immortal {ns.command} "
                    "NAME'")
    return [resolve(name, ns.config) for name in ns.names]


def resolve(text: str, config: str | None = None) -> str:
    """A command's address, with a bare ``PROGRAM`` (``PROGRAM:K``) of the configuration
    file (``config``, else ``immortal.toml`` here, if any) made ``GROUP/PROGRAM[:K]``: a
    group of that name in the home comes first, and the file is read only when there is
    none ('stop' and 'status' of a group pay for no TOML parser)."""
    import os

    from .names import check_name
    from .state import home

    name, program, instance = address(text)
    if program is not None or not name:
        return text
    try:
        directory = home() / check_name(name)
    except ImmortalError:
        return text
    has_file = config is not None or os.path.exists("immortal.toml")
    if os.path.exists(directory / "lock") or os.path.exists(directory / "status.json"):
        if has_file:
            _shadowed(name, directory, config)
        return text
    if not has_file:
        return text
    from .completion import file_names

    group, programs, _ = file_names(config)
    if group is None or name not in programs:
        return text
    return f"{group}/{name}" + ("" if instance is None else f":{instance}")


def _shadowed(name: str, directory: Any, config: str | None) -> None:
    """A group ``name`` that does not run, where the file here names a program ``name``:
    the group comes first (as documented), and a note on stderr says what the file's
    program is called, which the user most likely meant."""
    import sys

    from .state import read_status

    status = read_status(directory)
    if status is not None and status.running:
        return
    from .completion import file_names

    group, programs, _ = file_names(config)
    if group is not None and name in programs:
        print(f"note: {name!r} is a group that does not run; the configuration's program "
              f"is '{group}/{name}'", file=sys.stderr)


def whole_group(command: str, text: str) -> str:
    """``text``, the NAME of a group for ``start``, ``forget``, ``reopen`` or ``metrics``; a
    program's or an instance's address (a bare PROGRAM of the file included) is refused
    with what acts on it instead, not as a group name that is badly spelt."""
    name, program, instance = address(resolve(text))
    if program is None and instance is None:
        return text
    what = whom(name, program, instance)
    if command == "start":
        again = (f"'immortal up {program}' starts it again from its file, " if program
                 else f"'immortal scale {name} N' runs more instances, ")
        raise InvalidSpec(f"'immortal start' takes a stopped group's NAME (got {text!r}: "
                          f"{what}); {again}'immortal start {name}' the stopped group")
    if command == "forget":
        raise InvalidSpec(f"'immortal forget' takes a stopped group's NAME (got {text!r}: "
                          f"{what}); a program or an instance stopped is gone from its "
                          f"group already; 'immortal forget {name}' removes the stopped "
                          "group")
    instead = {
        "reopen": f"the group's monitors reopen together: 'immortal reopen {name}'",
        "metrics": f"'immortal metrics {name}' prints the group's figures, labelled by "
                   + ("program and instance" if program else "instance"),
    }[command]
    raise InvalidSpec(f"'immortal {command}' takes a group's NAME (got {text!r}: {what}); "
                      f"{instead}")


def each(addresses: list[str], run: Callable[[str], int]) -> int:
    """``run`` for every address, on after a failure (its error printed): the exit code is
    the first failure's, 0 if none failed."""
    if len(addresses) == 1:
        return run(addresses[0])
    code = 0
    for one in addresses:
        try:
            result = run(one)
        except ImmortalError as exc:
            print(f"immortal: error: {exc}", file=sys.stderr)
            result = exc.exit_code
        code = code or result
    return code


def _one(ns: argparse.Namespace, name: str) -> argparse.Namespace:
    """``ns`` for one of its names."""
    return argparse.Namespace(**{**vars(ns), "name": name})


def several(handler: Callable[[argparse.Namespace], int], running_only: bool = True
            ) -> Callable[[argparse.Namespace], int]:
    """A one-group ``handler`` of ``cli`` for the names (or ``--all``) a command took."""
    def run(ns: argparse.Namespace) -> int:
        return each(names(ns, running_only), lambda name: handler(_one(ns, name)))

    return run


def status(ns: argparse.Namespace) -> int:
    from .render import status_view

    views, code = [], 0
    chosen = names(ns, running_only=False)
    for name in chosen:
        try:
            status, program = _status_of(name)
        except ImmortalError as exc:
            if len(chosen) == 1:
                raise  # the command's one error, in its words (cli.main)
            print(f"immortal: error: {exc}", file=sys.stderr)
            code = code or exc.exit_code
            continue
        views.append(status_view(status, ns.json, program))
        running, ready = status.running, status.ready
        if program is not None:  # the program's: one of its instances runs; each is ready
            mine = status.programs()[program]
            running = running and any(entry.state == "running" for entry in mine)
            ready = all(entry.ready for entry in mine)
        ok = running and (ready or not ns.ready)  # --ready: a readiness probe
        code = code or (0 if ok else 3)
    if ns.json and (ns.all or len(chosen) != 1):
        print("[" + ",\n".join(views) + "]")
    elif views:
        print("\n\n".join(views))
    return code


def _status_of(text: str) -> tuple[Any, str | None]:
    """The status of the group ``text`` names, and the program it names (GROUP/PROGRAM),
    checked to be one the group runs; None for a group's NAME."""
    from .group import attach

    name, program, instance = address(text)
    if instance is not None:
        raise InvalidSpec(f"status takes a group's NAME, or GROUP/PROGRAM (got {text!r})")
    group = attach(name)
    status = group.status()
    if not status.running:
        status.orphans = group.orphans()
    if program is not None and program not in status.programs():
        raise NotRunning(f"group {name!r} runs no program {program!r}")
    return status, program


def stop(ns: argparse.Namespace) -> int:
    from .group import attach

    name, program, instance = address(ns.name)
    if instance is not None:
        raise InvalidSpec(f"stop takes a group's NAME, or GROUP/PROGRAM: it stops the whole "
                          f"group, or that program (got {ns.name!r}); 'immortal scale' "
                          "retires instances")
    group = attach(name)
    if program is not None:
        from .fileverbs import without

        for program, action in without(group, [program], ns.timeout).items():
            print(f"{action} {name}/{program}")
        return 0
    # A start under way is waited for, then stopped; a group whose supervisors were killed
    # still has its processes ended.
    if not group.wait_start().running and not group.left_behind():
        raise NotRunning(f"group {name!r} is not running")
    try:
        final = group.stop(ns.timeout)
    except KeyboardInterrupt:
        raise Interrupted(_left_in(group)) from None
    print(f"stopped {name!r}"
          + (f": last target {final.last_exit}" if final.last_exit else ""))
    if final.orphans:
        print(f"ended {len(final.orphans)} process(es) left running without supervisors: "
              + " ".join(map(str, final.orphans)))
    return 0


def _left_in(group: Any) -> str:
    """What an interrupted stop leaves: the group finishes a stop it received by itself."""
    status = group.status()
    name = group.name
    if not status.running:
        return f"interrupted; group {name!r} is {status.state}"
    if status.state == "stopping":
        return (f"interrupted; group {name!r} is still stopping and finishes by itself "
                f"(KILL after its grace period); 'immortal status {name}' shows it")
    return (f"interrupted; group {name!r} still runs ({status.state}); "
            f"'immortal stop {name}' stops it")
