"""The command line's parsers: each command's arguments, built with argparse (``run``'s
in ``runargs.py``), and the parser's one-line usage errors (``Usage``). ``cli.py`` runs
what they parse.
"""

from __future__ import annotations

import argparse
import os
import sys

from .cliexamples import EXAMPLES
from .errors import closest
from .runargs import foreground_options, monitor_options, run_parser

# 'immortal stop' is a fresh interpreter that pays for every import: this module does not
# import typing at run time, and builds only the parser of the command given.
TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size().columns`` gives it ($COLUMNS,
    else stdout's terminal, else 80), without importing shutil (and zlib, bz2, lzma with
    it): argparse makes a formatter for every argument it adds."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    stdout = sys.__stdout__  # None without a stdout at start
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help as wide as the terminal; descriptions and epilogs (the examples) as written."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        commands: dict[str, argparse.ArgumentParser] = {}
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                commands.update(action.choices)
        if message.startswith("unrecognized arguments:"):
            # Unknown options of a subcommand reach the top parser, built with the command
            # given alone (see main()): suggest from that command's options, never another's.
            parsers = [self, *commands.values()]
            options = {o for p in parsers for a in p._actions for o in a.option_strings}
            words = message.split(":", 1)[1].split()
            hints = "".join(_close_option(w, options) for w in words if w.startswith("-"))
            if not hints and "run" in commands:
                hints = (" (the program's own arguments go after '--': immortal run FILE "
                         "-- ARGS)")
            message += hints
        elif "invalid choice:" in message and commands and self.prog.split()[-1:] == [
                "immortal"]:
            # An unknown command: the closest one, rather than the whole list alone.
            word = message.split("invalid choice:", 1)[1].split("(", 1)[0].strip(" '\"")
            close = closest(word, commands)
            message = f"unknown command {word!r}" + (
                f" (did you mean {close!r}?)" if close else "") + \
                "; 'immortal --help' lists the commands"
        raise Usage(message)


def _close_option(word: str, options: set[str]) -> str:
    """did_you_mean for an option, its dashes left out of the likeness: every option shares
    them, which made '--bogus' look like '--user'."""
    bare = {option.lstrip("-"): option for option in options}
    close = closest(word.lstrip("-"), bare)
    return f" (did you mean {bare[close]!r}?)" if close else ""


class Usage(Exception):
    pass


class _Intermixed(_Parser):
    """A command whose optional positional may follow its options."""

    _inside = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inside:  # parse_known_intermixed_args's own passes
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def _config_options(parser: argparse.ArgumentParser, overrides: bool = True) -> None:
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="the configuration file (default: immortal.toml here)")
    parser.add_argument("-E", "--env-name", metavar="NAME",
                        help="the environment whose tables apply (default: $IMMORTAL_ENV)")
    if overrides:
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            dest="overrides", help="override a value of the file, KEY "
                            "dotted as there (programs.web.workers=4); VALUE is TOML, or "
                            "else a string (repeatable)")


def _list_parser(lst: argparse.ArgumentParser) -> None:
    lst.add_argument("--json", action="store_true")


def _names(parser: argparse.ArgumentParser, what: str) -> None:
    """Several groups by name, or ``--all`` of the home; a bare PROGRAM of the
    configuration file (``-c``, else immortal.toml here) is that file's GROUP/PROGRAM."""
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"the group(s) to {what}; GROUP/PROGRAM, or a program of the "
                        "configuration file by its name")
    parser.add_argument("--all", action="store_true", help=f"{what} every group of the home")
    _file_option(parser)


def _file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="the configuration file whose programs a bare PROGRAM names "
                        "(default: immortal.toml here, if any)")


def _status_parser(status: argparse.ArgumentParser) -> None:
    _names(status, "show")
    status.add_argument("--json", action="store_true")
    status.add_argument("--ready", action="store_true",
                        help="exit 0 only if the group runs and every target is ready "
                        "(3 otherwise): a readiness probe")


def _stop_parser(stop: argparse.ArgumentParser) -> None:
    _names(stop, "stop")
    stop.add_argument("--timeout", type=float, metavar="S",
                      help="grace period before KILL (default: the group's --stop-timeout)")


def _restart_parser(restart: argparse.ArgumentParser) -> None:
    restart.add_argument("names", nargs="*", metavar="NAME[:K]",
                         help="the group (every instance), or its instance K alone; in a "
                         "group of several programs, GROUP/PROGRAM[:K], or a program of "
                         "the configuration file by its name")
    restart.add_argument("--all", action="store_true", help="restart every running group "
                         "of the home")
    _file_option(restart)
    restart.add_argument("--timeout", type=float, metavar="S",
                         help="grace period before KILL (default: the group's)")
    pace = restart.add_mutually_exclusive_group()
    pace.add_argument("--batch", type=int, metavar="K",
                      help="a rolling restart replaces K instances at a time (default 1)")
    pace.add_argument("--all-at-once", action="store_true",
                      help="restart every instance at once, not rolling")


def _signal_parser(sig: argparse.ArgumentParser) -> None:
    sig.add_argument("name", metavar="NAME[:K]",
                     help="the group (every instance), or its instance K alone; in a "
                     "group of several programs, GROUP/PROGRAM[:K], or a program of the "
                     "configuration file by its name")
    _file_option(sig)
    sig.add_argument("signal", help="a name (HUP, USR1, SIGUSR2...) or a number")


def _scale_parser(scale: argparse.ArgumentParser) -> None:
    scale.add_argument("name", metavar="NAME",
                       help="the group; in a group of several programs, GROUP/PROGRAM, or "
                       "a program of the configuration file by its name")
    scale.add_argument("workers", type=int, metavar="N",
                       help="how many instances to run: more are spawned, the highest retire")
    _file_option(scale)
    scale.add_argument("--timeout", type=float, metavar="S",
                       help="grace period of the instances that retire (default: the group's)")


def _reopen_parser(reopen: argparse.ArgumentParser) -> None:
    reopen.add_argument("name")


def _monitors_parser(mons: argparse.ArgumentParser) -> None:
    mons.add_argument("--json", action="store_true")


def _check_parser(check: argparse.ArgumentParser) -> None:
    monitor_options(check, "an option of the -m before it")


def _logs_parser(logs: argparse.ArgumentParser) -> None:
    logs.add_argument("name", help="NAME, or NAME:K for instance K's lines alone; in a "
                      "group of several programs, GROUP/PROGRAM[:K], or a program of the "
                      "configuration file by its name")
    _file_option(logs)
    logs.add_argument("-n", "--lines", type=int, default=20,
                      help="how many of the last lines to print (default 20)")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="then print lines as they are appended, across rotations, until "
                      "the group ends or Ctrl-C")


def _config_parser(config: argparse.ArgumentParser) -> None:
    _config_options(config)
    config.add_argument("--json", action="store_true")


def _validate_parser(validate: argparse.ArgumentParser) -> None:
    _config_options(validate)


def _completion_parser(completion: argparse.ArgumentParser) -> None:
    completion.add_argument("shell", nargs="?", choices=("bash", "zsh"), metavar="SHELL",
                            help="bash or zsh")
    # What the generated scripts call back for names: not for people to type.
    completion.add_argument("--names", choices=("groups", "programs", "envs"),
                            help=argparse.SUPPRESS)
    completion.add_argument("-c", "--config", metavar="FILE", help=argparse.SUPPRESS)


def _startup_parser(startup: argparse.ArgumentParser) -> None:
    startup.add_argument("manager", choices=["systemd"], help="the service manager")
    startup.add_argument("name", nargs="?", help="a group that exists (its spec.json is its "
                         "record); or, with -c, none: the configuration file's group")
    startup.add_argument("-c", "--config", metavar="FILE",
                         help="a unit that runs this configuration file's group ('immortal "
                         "up --foreground -c FILE'; ExecReload 'immortal reload -c FILE')")
    startup.add_argument("-E", "--env-name", metavar="NAME",
                         help="with -c: the environment whose tables apply")
    # NAME may come after the options ('startup systemd --user NAME'): argparse gives an
    # optional positional nothing once an option follows the first one, unless intermixed.
    startup.__class__ = _Intermixed
    startup.add_argument("--user", action="store_true",
                         help="a unit for 'systemctl --user' (default: a system unit)")
    startup.add_argument("--install", action="store_true",
                         help="write the unit (~/.config/systemd/user/ or "
                         "/etc/systemd/system/) and enable it, instead of printing it")
    startup.add_argument("--no-enable", dest="enable", action="store_false",
                         help="with --install: write the unit only")
    startup.add_argument("--unit-dir", metavar="DIR",
                         help="with --install: write the unit in DIR instead")


def _start_recorded_parser(again: argparse.ArgumentParser) -> None:
    again.add_argument("name", help="a group that exists (its spec.json is its record)")
    foreground_options(again)


def _start_parser(start: argparse.ArgumentParser) -> None:
    start.add_argument("names", nargs="+", metavar="NAME",
                       help="a stopped group (its spec.json is its record)")
    foreground_options(start)


def _up_parser(up: argparse.ArgumentParser) -> None:
    up.add_argument("programs", nargs="*", metavar="PROGRAM",
                    help="the file's programs to start (default: all of them)")
    _config_options(up)
    foreground_options(up)


def _down_parser(down: argparse.ArgumentParser) -> None:
    down.add_argument("programs", nargs="*", metavar="PROGRAM",
                      help="the programs to stop (default: the whole group)")
    _config_options(down, overrides=False)
    down.add_argument("--timeout", type=float, metavar="S",
                      help="grace period before KILL (default: the group's)")


def _reload_parser(reload: argparse.ArgumentParser) -> None:
    _config_options(reload)
    reload.add_argument("--timeout", type=float, metavar="S",
                        help="grace period of the old processes a roll retires "
                        "(default: each program's)")


def _forget_parser(forget: argparse.ArgumentParser) -> None:
    forget.add_argument("names", nargs="+", metavar="NAME", help="a stopped group")


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _metrics_parser(metrics: argparse.ArgumentParser) -> None:
    metrics.add_argument("name", nargs="?", help="one group (default: every group)")


# Each command: its one-line help and what adds its arguments, in the order --help lists them.
COMMANDS = {
    "run": ("start FILE under supervision (detached by default)", run_parser),
    "up": ("start the group of immortal.toml, or programs of it", _up_parser),
    "down": ("stop the group of immortal.toml, or programs of it", _down_parser),
    "reload": ("apply immortal.toml to its running group: new programs started, removed "
               "ones stopped, changed ones rolled, the others untouched", _reload_parser),
    "start": ("start stopped groups again from their record (their spec.json)",
              _start_parser),
    "forget": ("remove stopped groups from the home, with their files", _forget_parser),
    "list": ("list the groups", _list_parser),
    "status": ("show a group's state", _status_parser),
    "stop": ("stop a group: TERM, grace period, KILL", _stop_parser),
    "restart": ("restart a group's target", _restart_parser),
    "signal": ("send a signal to a group's target (process group)", _signal_parser),
    "reopen": ("make a group's monitors reopen their files", _reopen_parser),
    "scale": ("run N instances of a group's program", _scale_parser),
    "monitors": ("list the installed monitors", _monitors_parser),
    "check": ("run monitors' check() on options, alone", _check_parser),
    "logs": ("print the end of a group's output file", _logs_parser),
    "config": ("print the effective configuration of immortal.toml, with each value's "
               "source", _config_parser),
    "validate": ("check immortal.toml without starting anything", _validate_parser),
    "completion": ("print a shell completion script (bash or zsh)", _completion_parser),
    "startup": ("print (or install) a systemd unit that runs a group in the foreground",
                _startup_parser),
    "start-recorded": ("start a group again from its record: 'start' of one group",
                       _start_recorded_parser),
    "save": ("record the running groups, for 'resurrect'", _no_arguments),
    "resurrect": ("start the groups 'save' recorded that do not run", _no_arguments),
    "metrics": ("print the groups' figures as OpenMetrics text", _metrics_parser),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``command`` of that one alone: argparse is slow
    to build them all, and a command line names one (the top-level --help,
    which lists them all, comes with ``command=None``)."""
    from . import __version__

    parser = _Parser(prog="immortal", description="Keep a program alive, detached, with its "
                     "output and events sent to a monitor.",
                     epilog="examples:\n  immortal run worker.py\n  immortal status worker\n"
                     "  immortal stop worker\n\n'immortal COMMAND --help' shows a command's "
                     "options and examples.")
    parser.add_argument("--version", action="version", version=f"immortal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (text, add_arguments) in COMMANDS.items():
        if command is None or name == command:
            add_arguments(sub.add_parser(name, help=text, description=text[:1].upper()
                                         + text[1:] + ".",
                                         epilog="examples:\n" + EXAMPLES[name]))
    return parser
