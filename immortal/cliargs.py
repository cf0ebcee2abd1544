"""The command line's parsers: each command's arguments, built with argparse, and the
parser's one-line usage errors (``Usage``). ``cli.py`` runs what they parse.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import did_you_mean

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


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            # Unknown options of a subcommand reach the top parser: suggest from all of them
            # (this parser may hold only the command given, see main()).
            full = build_parser()
            parsers = [full]
            for action in full._actions:
                if isinstance(action, argparse._SubParsersAction):
                    parsers.extend(action.choices.values())
            options = {o for p in parsers for a in p._actions for o in a.option_strings}
            words = message.split(":", 1)[1].split()
            message += "".join(did_you_mean(w, options) for w in words if w.startswith("-"))
        raise Usage(message)


class Usage(Exception):
    pass


class _MonitorAction(argparse.Action):
    """``-m NAME``: one more monitor; the ``-o`` options after it are its own."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace,
                 value: Any, option: str | None = None) -> None:
        monitors = list(getattr(ns, self.dest) or [])
        monitors.append([value, []])
        setattr(ns, self.dest, monitors)


class _OptionAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace,
                 value: Any, option: str | None = None) -> None:
        monitors = list(getattr(ns, self.dest) or [])
        if not monitors:
            monitors.append([None, []])  # the default monitor
        monitors[-1][1].append(value)
        setattr(ns, self.dest, monitors)


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"umask must be octal, like 022 (got {text!r})")


def _add_monitor_options(parser: argparse.ArgumentParser, option_help: str) -> None:
    parser.add_argument("-m", "--monitor", action=_MonitorAction, dest="monitors", default=[],
                        help="a monitor by name (default: file); repeat for several")
    parser.add_argument("-o", "--option", action=_OptionAction, dest="monitors",
                        metavar="KEY=VALUE", help=option_help)


def _run_parser(run: argparse.ArgumentParser) -> None:
    run.add_argument("file", metavar="FILE")
    run.add_argument("args", nargs="*", default=[], metavar="ARG",
                     help="arguments for FILE; put them after '--'")
    run.add_argument("-n", "--name", help="group name (default: FILE's name)")
    run.add_argument("-s", "--strategy", default="daemon",
                     help="daemon (default), unattached or development")
    _add_monitor_options(run, "an option of the -m before it (or of the default monitor), "
                              "e.g. -o output=app.log (repeatable)")
    run.add_argument("--exec", dest="executable", metavar="PATH",
                     help="interpreter to run FILE with")
    run.add_argument("--cwd", help="working directory of the target")
    run.add_argument("-e", "--env", action="append", metavar="KEY=VALUE",
                     help="set a variable in the target's environment (repeatable)")
    run.add_argument("--umask", type=_octal, help="umask of the target, in octal")
    run.add_argument("-w", "--workers", type=int, default=1, metavar="N",
                     help="run N instances of FILE, each restarted on its own (default 1)")
    run.add_argument("--stop-timeout", type=float, default=10.0, metavar="S",
                     help="grace period between TERM and KILL (default 10)")
    run.add_argument("--max-restarts", type=int, metavar="N",
                     help="give up after N restarts within --window seconds")
    run.add_argument("--window", type=float, default=60.0, metavar="S")
    run.add_argument("--min-uptime", type=float, default=1.0, metavar="S",
                     help="a run this long counts as stable: restart at once")
    run.add_argument("--ready", metavar="MODE",
                     help="when the target counts as started, and 'run' returns: spawn, "
                     "uptime:S, line:REGEX, port:N or notify (default: $IMMORTAL_READY, "
                     "else uptime:1)")
    run.add_argument("--ready-timeout", type=float, default=30.0, metavar="S",
                     help="fail the start if the target is not ready S seconds after its "
                     "spawn (default 30)")
    run.add_argument("--listen", action="append", metavar="ADDR",
                     help="a socket to bind once and pass to the target by socket "
                     "activation (fds 3, 4, ..., LISTEN_FDS): tcp://HOST:PORT or "
                     "unix:PATH (repeatable, in order)")


def _list_parser(lst: argparse.ArgumentParser) -> None:
    lst.add_argument("--json", action="store_true")


def _status_parser(status: argparse.ArgumentParser) -> None:
    status.add_argument("name")
    status.add_argument("--json", action="store_true")


def _stop_parser(stop: argparse.ArgumentParser) -> None:
    stop.add_argument("name")
    stop.add_argument("--timeout", type=float, metavar="S",
                      help="grace period before KILL (default: the group's --stop-timeout)")


def _restart_parser(restart: argparse.ArgumentParser) -> None:
    restart.add_argument("name", metavar="NAME[:K]",
                         help="the group (every instance), or its instance K alone; in a "
                         "group of several programs, GROUP/PROGRAM[:K]")
    restart.add_argument("--timeout", type=float, metavar="S",
                         help="grace period before KILL (default: the group's)")
    restart.add_argument("--batch", type=int, metavar="K", default=1,
                         help="a rolling restart replaces K instances at a time (default 1)")
    restart.add_argument("--all-at-once", action="store_true",
                         help="restart every instance at once, not rolling")


def _signal_parser(sig: argparse.ArgumentParser) -> None:
    sig.add_argument("name", metavar="NAME[:K]",
                     help="the group (every instance), or its instance K alone; in a "
                     "group of several programs, GROUP/PROGRAM[:K]")
    sig.add_argument("signal", help="a name (HUP, USR1, SIGUSR2...) or a number")


def _scale_parser(scale: argparse.ArgumentParser) -> None:
    scale.add_argument("name", metavar="NAME",
                       help="the group; in a group of several programs, GROUP/PROGRAM")
    scale.add_argument("workers", type=int, metavar="N",
                       help="how many instances to run: more are spawned, the highest retire")
    scale.add_argument("--timeout", type=float, metavar="S",
                       help="grace period of the instances that retire (default: the group's)")


def _reopen_parser(reopen: argparse.ArgumentParser) -> None:
    reopen.add_argument("name")


def _monitors_parser(mons: argparse.ArgumentParser) -> None:
    mons.add_argument("--json", action="store_true")


def _check_parser(check: argparse.ArgumentParser) -> None:
    _add_monitor_options(check, "an option of the -m before it")


def _logs_parser(logs: argparse.ArgumentParser) -> None:
    logs.add_argument("name", help="NAME, or NAME:K for instance K's lines alone; in a "
                      "group of several programs, GROUP/PROGRAM[:K]")
    logs.add_argument("-n", "--lines", type=int, default=20,
                      help="how many of the last lines to print (default 20)")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="then print lines as they are appended, across rotations, until "
                      "the group ends or Ctrl-C")


# Each command: its one-line help and what adds its arguments, in the order --help lists them.
COMMANDS = {
    "run": ("start FILE under supervision (detached by default)", _run_parser),
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
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``command`` of that one alone: argparse is slow
    to build them all, and a command line names one (the top-level --help,
    which lists them all, comes with ``command=None``)."""
    parser = _Parser(prog="immortal", description="Keep a program alive, detached, with its "
                     "output and events sent to a monitor.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (text, add_arguments) in COMMANDS.items():
        if command is None or name == command:
            add_arguments(sub.add_parser(name, help=text))
    return parser
