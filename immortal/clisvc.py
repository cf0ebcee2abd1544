"""The commands for whoever runs immortal itself: a service manager, a boot, a scraper.

``startup systemd NAME`` (a unit that runs the group in the foreground: ``units``),
``start-recorded NAME`` (the group again from its record: ``recorded``), ``save`` and
``resurrect`` (every running group, again after a reboot), ``metrics [NAME]``
(OpenMetrics text: ``metrics``). ``cli`` parses and dispatches; each handler takes the
parsed arguments and returns the exit code.
"""

from __future__ import annotations

import os
import sys

from .errors import InvalidSpec, StartError

# Imported by cli for every command: what a handler alone needs, it imports itself.
TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    import argparse
    from pathlib import Path


def startup(ns: argparse.Namespace) -> int:
    """Print (or ``--install``) the systemd unit that runs group NAME in the foreground."""
    import shlex
    import subprocess
    from pathlib import Path

    from . import units
    from .recorded import record
    from .state import home

    if ns.config is not None:
        if ns.name is not None:
            raise InvalidSpec("name a group or give -c FILE (its group), not both")
        group, command, reload, stop, start = _from_file(ns)
    elif ns.name is None:
        raise InvalidSpec("name a group ('immortal startup systemd NAME'), or give its "
                          "configuration file ('immortal startup systemd -c FILE')")
    elif ns.env_name is not None:
        raise InvalidSpec("-E goes with -c FILE")
    else:
        spec = record(ns.name)
        group, command, reload = spec.name, units.exec_start(spec.name), None
        views = spec.each()  # a group of several programs: the longest of its programs'
        stop = max(v.stop_timeout for v in views)
        start = spec.start_timeout + max(v.ready_timeout + v.stop_timeout for v in views)
    text = units.render(
        group, command, user=ns.user, stop_timeout=stop, start_timeout=start,
        environment={"IMMORTAL_HOME": str(home())}, reload=reload,
        run_as=None if ns.user or os.geteuid() == 0 else _user_name())
    if not ns.install:
        sys.stdout.write(text)
        return 0
    directory = Path(ns.unit_dir) if ns.unit_dir else Path(units.unit_dir(ns.user))
    name = units.unit_name(group)
    path = _write_unit(directory, name, text)
    print(f"wrote {path}")
    manager = ["systemctl", *(["--user"] if ns.user else [])]
    if ns.enable:
        # A directory of one's own is not one systemd searches: enabled by its path, the
        # unit is linked there as well; by its name, systemd would not find it.
        unit = os.path.abspath(path) if ns.unit_dir else name
        try:
            done = subprocess.run([*manager, "enable", unit], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StartError(f"cannot run {' '.join(manager)} enable {unit}: {exc}") from None
        if done.returncode != 0:
            raise StartError(f"{' '.join(manager)} enable {unit} failed: "
                             f"{(done.stderr or done.stdout).strip()}")
        print(f"enabled {name}")
    # A name with an escape holds a backslash: quoted, as the shell must be given it.
    print(f"a group runs once: stop the detached one first ('immortal stop {group}'), "
          f"then start the unit: {shlex.join([*manager, 'start', name])}")
    if ns.user:
        print("to run it without a login session (and at boot): "
              f"'loginctl enable-linger {_user_name()}'")
    return 0


def _from_file(ns: argparse.Namespace) -> tuple[str, list[str], list[str], float, float]:
    """A configuration file's unit: its group's name, ExecStart ('up --foreground') and
    ExecReload ('reload') with the file's absolute path (and the environment chosen), and
    how long systemd waits for a stop and for a start (every program ready)."""
    from . import units
    from .clifile import loaded

    ns.overrides = []
    config = loaded(ns)
    chosen = ["-c", config.path]
    if config.environment.value:
        chosen += ["-E", config.environment.value]
    programs = [p.kwargs for p in config.programs.values()]
    stop = max(float(p.get("stop_timeout") or 10.0) for p in programs)
    ready = max(float(p.get("ready_timeout") or 30.0) for p in programs)
    return (config.name.value, [*units.immortal_command(), "up", "--foreground", *chosen],
            [*units.immortal_command(), "reload", *chosen], stop,
            float(config.start_timeout.value) + ready + stop)


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _write_unit(directory: Path, name: str, text: str) -> Path:
    """The unit file, written whole (a temporary file renamed), readable by systemd."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    temporary = directory / f".{name}.{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return path


def start_recorded(ns: argparse.Namespace) -> int:
    """Start group NAME again from its record, detached or in the foreground."""
    from .recorded import start_recorded as again
    from .render import started_view

    if ns.console is not None and not ns.foreground:
        raise InvalidSpec("--console goes with --foreground")
    group = again(ns.name, in_foreground=ns.foreground, console=ns.console)
    status = group.status()
    print(started_view(group.name, status.strategy or "daemon", status))
    print(f"stop it with: immortal stop {group.name}")
    return 0


def save(ns: argparse.Namespace) -> int:
    """Record every running group in .saved.json, for ``resurrect``."""
    from .recorded import save as record_all, saved_path

    kept, left = record_all()
    names = ": " + ", ".join(kept) if kept else ""
    print(f"saved {len(kept)} group(s) to {saved_path()}{names}")
    if left:
        print(f"not saved (development groups live with their caller): {', '.join(left)}")
    return 0


def resurrect(ns: argparse.Namespace) -> int:
    """Start every saved group that does not run; 1 if one of them failed."""
    from .recorded import resurrect as again

    failed = 0
    for name, what, _ in again():
        if what == "started":
            print(f"started {name!r}")
        elif what == "running":
            print(f"{name!r} is running already")
        else:
            failed += 1
            print(f"immortal: error: {name!r}: {what}", file=sys.stderr)
    return 1 if failed else 0


def metrics(ns: argparse.Namespace) -> int:
    """OpenMetrics text for every group (or NAME's)."""
    import time

    from .group import attach, groups
    from .metrics import render

    statuses = [attach(ns.name).status()] if ns.name else groups()
    sys.stdout.write(render(statuses, time.time()))
    return 0
