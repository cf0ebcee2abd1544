"""Shell completion: ``immortal completion bash|zsh`` prints a script generated from the
command line's own parsers (``cliargs.py``), so that it completes every command and option
there is; names come back from ``immortal completion --names groups|programs|envs``
(:func:`names`), read from the immortal home and from ``immortal.toml`` without importing
the rest of immortal.
"""

from __future__ import annotations

import argparse
import os

from .cliargs import COMMANDS, build_parser
from .configfile import FILE_NAME, toml
from .instance import home

#: What completes the value of an option or a positional, by its ``dest``: a kind the
#: scripts know (files, directories, groups, envs, signals), or a list of words.
VALUES: dict[str, str | tuple[str, ...]] = {
    "config": "files", "env_file": "files", "executable": "files", "file": "files",
    "cwd": "directories", "name": "groups", "names": "groups", "programs": "programs",
    "env_name": "envs", "signal": "signals",
    "strategy": ("daemon", "unattached", "development"), "backpressure": ("block", "drop"),
    "shell": ("bash", "zsh"),
}
SIGNALS = ("HUP", "INT", "QUIT", "TERM", "KILL", "USR1", "USR2", "CONT", "STOP", "WINCH")


def names(kind: str, config: str | None = None) -> list[str]:
    """``groups``: the groups in the immortal home, then ``GROUP/PROGRAM`` for each program
    of the configuration file (``config``, else ``immortal.toml`` here); ``programs``: that
    file's programs; ``envs``: its environments. Quietly none when there are none."""
    if kind == "groups":
        try:
            base = home()
            found = sorted(entry for entry in os.listdir(base)
                           if os.path.exists(os.path.join(base, entry, "spec.json")))
        except OSError:
            found = []
        group, programs, _ = file_names(config)
        return found + [f"{group}/{program}" for program in programs if group]
    group, programs, envs = file_names(config)
    return programs if kind == "programs" else envs


def file_names(config: str | None) -> tuple[str | None, list[str], list[str]]:
    """The group name, programs and environments of a configuration file, as written."""

    path = config or FILE_NAME
    try:
        with open(path, encoding="utf-8") as handle:
            data = toml().loads(handle.read())
    except (OSError, ValueError):
        return None, [], []
    programs = data.get("programs")
    envs = data.get("env")
    name = data.get("name") or os.path.basename(os.path.dirname(os.path.abspath(path)))
    return (str(name), list(programs) if isinstance(programs, dict) else [],
            sorted(envs) if isinstance(envs, dict) else [])


class _Command:
    """What a script needs of one command: its options (those taking a value apart), its
    positionals' completions, and each option's help."""

    def __init__(self, name: str, parser: argparse.ArgumentParser) -> None:
        self.name = name
        self.flags: list[str] = []
        self.valued: dict[str, str | tuple[str, ...]] = {}  # option: what completes its value
        self.positionals: list[str | tuple[str, ...]] = []
        #: what completes every positional from the last one on (NAME...), if anything
        self.rest: str | tuple[str, ...] = ""
        self.helps: dict[str, str] = {}
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            what = VALUES.get(action.dest, "")
            if not action.option_strings:
                repeated = action.nargs in ("*", "+")
                self.positionals.append(what if not repeated or name != "run" else "")
                if repeated and name != "run":
                    self.rest = what
                continue
            for option in action.option_strings:
                self.helps[option] = (action.help or "").split(";")[0]
                if action.nargs == 0:
                    self.flags.append(option)
                else:
                    self.valued[option] = what


def commands() -> list[_Command]:
    """Every command's completion data, in the order ``--help`` lists them."""
    found = []
    for name in COMMANDS:
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        found.append(_Command(name, sub.choices[name]))
    return found


def script(shell: str) -> str:
    """The completion script for ``shell`` (``bash`` or ``zsh``)."""
    from .completionscripts import bash, zsh

    return bash(commands()) if shell == "bash" else zsh(commands(), COMMANDS)
