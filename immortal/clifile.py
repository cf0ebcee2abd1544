"""The commands of the configuration file: its group's (``up``, ``down``, ``reload``) and
the file's own (``config``, ``validate``). ``cli.py`` runs them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from .errors import InvalidSpec
from .events import READER_GONE

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


def up(ns: argparse.Namespace) -> int:
    from . import fileverbs

    if ns.console is not None and not ns.foreground:
        raise InvalidSpec("--console goes with --foreground")
    if ns.foreground:
        return _up_here(ns, loaded(ns))
    config = in_group_environment(ns)
    outcome = fileverbs.up(config, ns.programs)
    # In development the group's output is this command's stdout: our words on stderr.
    development = config.strategy.value == "development"
    ours = sys.stderr if development else sys.stdout
    for line in fileverbs.describe(outcome):
        print(line, file=ours)
    if not development:
        return 0
    return attached(outcome.group)


def attached(group: Any) -> int:
    """A development group's command waits for its end (Ctrl-C stops it), says how it
    ended, and exits 1 where CI and service managers must see a failure: the group gave up
    (fatal), or its pump died and left its targets running without a supervisor."""
    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # a SIGTERM (kill, a service manager) ends it as Ctrl-C does

    signal.signal(signal.SIGTERM, terminated)
    try:
        final = group.wait()
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop: the next TERM waits for it
        final = group.stop()
    if final.reason == READER_GONE:
        return 0  # quietly, as a command whose reader went away (| head)
    if final.stale:  # killed, not stopped: what it left, if anything
        left = ", ".join(str(pid) for pid in group.orphans())
        print(f"{group.name!r} lost its pump: " + (
            f"left running without a supervisor: {left} ('immortal run' of the same "
            f"command adopts them; 'immortal stop {group.name}' ends them)" if left else
            "nothing of it runs"), file=sys.stderr)
        return 1
    print(f"{group.name!r} ended: {final.state}"
          + (f" ({final.reason})" if final.reason else ""), file=sys.stderr)
    return 1 if final.state == "fatal" else 0


def _up_here(ns: argparse.Namespace, config: Any) -> int:
    """``up --foreground``: this process becomes the group's daemon until the group ends
    (as ``run --foreground``; a unit's ExecStart from ``startup systemd -c``)."""
    from . import fileverbs

    fileverbs.in_foreground(config, ns.programs, ns.console)


def down(ns: argparse.Namespace) -> int:
    from . import fileverbs

    from .config import ENV_NAME

    ns.overrides = []  # down takes no --set: the file names the group, nothing else counts
    config = loaded(ns, check_monitors=False)
    if ns.env_name is None and not os.environ.get(ENV_NAME) \
            and fileverbs.current(config.name.value) is None:
        named = _running_as_named(ns, config)
        if named is not None:
            ns.env_name = named
            config = loaded(ns, check_monitors=False)
    outcome = fileverbs.down(config, ns.programs, ns.timeout)
    for line in fileverbs.describe(outcome):
        print(line)
    return 0


def reload(ns: argparse.Namespace) -> int:
    from . import fileverbs

    outcome = fileverbs.reload(in_group_environment(ns), ns.timeout)
    for line in fileverbs.describe(outcome):
        print(line)
    return 0


def in_group_environment(ns: argparse.Namespace) -> Any:
    """The file loaded in the environment -E (else $IMMORTAL_ENV) names, else in the one
    its running group was made in: a ``reload`` or ``up`` from another shell, cron or a
    unit changes the group's environment only when told to."""
    from . import fileverbs
    from .config import ENV_NAME
    from .configfile import GROUP, Source

    config = loaded(ns)
    if ns.env_name is not None or os.environ.get(ENV_NAME):
        return config
    group = fileverbs.current(config.name.value)
    if group is None:
        if ns.command != "reload":  # 'up' starts the file's group, whatever else runs
            return config
        running = _running_as_named(ns, config)
    else:
        running = fileverbs.running_environment(group.running_spec())
    if running is None:
        return config
    ns.env_name = running
    return loaded(ns, env_source=Source(GROUP))


def _running_as_named(ns: argparse.Namespace, config: Any) -> str | None:
    """The file's environment whose own group ``name`` runs, made in that environment,
    when the file's group without one does not run: a group an environment renames is
    found without -E. InvalidSpec if several run; None if none."""
    from . import fileverbs
    from .config import environments

    found = []
    for env in environments(config.path):
        try:
            other = loaded(argparse.Namespace(**{**vars(ns), "env_name": env}),
                           check_monitors=False)
        except Problems:
            continue
        name = other.name.value
        group = None if name == config.name.value else fileverbs.current(name)
        if group is not None and fileverbs.running_environment(group.running_spec()) == env:
            found.append(env)
    if len(found) > 1:
        raise InvalidSpec(f"groups of {config.path} run in environments "
                          f"{', '.join(map(repr, found))}; name the one with -E NAME")
    return found[0] if found else None


def loaded(ns: argparse.Namespace, check_monitors: bool = True,
           env_source: Any = None, every_environment: bool = False) -> Any:
    """The configuration file the options name, loaded (ConfigError: what is wrong);
    ``every_environment``: with none and in each of the file's (``config.load_each``)."""
    from .config import load, load_each
    from .configfile import ConfigError, parse_value

    pairs = []
    for item in ns.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"--set must look like KEY=VALUE, e.g. "
                              f"programs.web.workers=4 (got {item!r})")
        pairs.append((key.strip(), parse_value(value, key.strip())))
    try:
        if every_environment:
            return load_each(ns.config, overrides=pairs)
        # Every command that loads the file with its monitors runs it as one group (up),
        # or says whether it can (validate, config, startup): the group's checks too.
        return load(ns.config, ns.env_name, overrides=pairs, check_monitors=check_monitors,
                    as_group=check_monitors, env_source=env_source)
    except ConfigError as exc:
        raise Problems(exc.lines()) from None


def config(ns: argparse.Namespace) -> int:
    from .configview import config_view

    print(config_view(loaded(ns), ns.json))
    return 0


def validate(ns: argparse.Namespace) -> int:
    from .config import ENV_NAME

    if ns.env_name is not None or os.environ.get(ENV_NAME):
        config, each = loaded(ns), ()
    else:  # none chosen: the file with none, and in each of its environments
        config, each = loaded(ns, every_environment=True)
    programs = ", ".join(config.programs)
    environment = config.environment.value
    print(f"{config.path}: ok: group {config.name.value!r}, programs {programs}"
          + (f", environment {environment!r}" if environment else "")
          + (f"; with no environment and in {', '.join(map(repr, each))}" if each else ""))
    return 0


class Problems(Exception):
    """Everything wrong with a configuration file: one error line each, exit 2."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
