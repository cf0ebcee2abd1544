"""The command line: a thin translator from argv to the library, ``main(argv) -> int``.

Exit codes (LSB-style): 0 ok, 1 runtime error, 2 usage or validation error, 3 not running,
4 already running. Errors are one line on stderr: ``immortal: error: ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import ImmortalError, InvalidSpec, NotRunning, did_you_mean

# A command is a fresh interpreter that pays for every import at each run: each handler
# imports what it alone needs ('stop' needs group, control and state, not the launcher,
# pluggy or the monitors), and this module does not import typing at run time.
TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size().columns`` gives it ($COLUMNS,
    else stdout's terminal, else 80), without importing shutil (and zlib, bz2, lzma with
    it): argparse makes a formatter for every argument it adds."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
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
        raise _Usage(message)


class _Usage(Exception):
    pass


class _Interrupted(Exception):
    """Ctrl-C: one line that says what was left behind, exit 130 (128 + SIGINT)."""


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


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    result = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"{what} must look like KEY=VALUE (got {item!r})")
        result[key] = value
    return result


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
    run.add_argument("--stop-timeout", type=float, default=10.0, metavar="S",
                     help="grace period between TERM and KILL (default 10)")
    run.add_argument("--max-restarts", type=int, metavar="N",
                     help="give up after N restarts within --window seconds")
    run.add_argument("--window", type=float, default=60.0, metavar="S")
    run.add_argument("--min-uptime", type=float, default=1.0, metavar="S",
                     help="a run this long counts as stable: restart at once")
    run.set_defaults(handler=_run)


def _list_parser(lst: argparse.ArgumentParser) -> None:
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=_list)


def _status_parser(status: argparse.ArgumentParser) -> None:
    status.add_argument("name")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)


def _stop_parser(stop: argparse.ArgumentParser) -> None:
    stop.add_argument("name")
    stop.add_argument("--timeout", type=float, metavar="S",
                      help="grace period before KILL (default: the group's --stop-timeout)")
    stop.set_defaults(handler=_stop)


def _restart_parser(restart: argparse.ArgumentParser) -> None:
    restart.add_argument("name")
    restart.add_argument("--timeout", type=float, metavar="S",
                         help="grace period before KILL (default: the group's)")
    restart.set_defaults(handler=_restart)


def _signal_parser(sig: argparse.ArgumentParser) -> None:
    sig.add_argument("name")
    sig.add_argument("signal", help="a name (HUP, USR1, SIGUSR2...) or a number")
    sig.set_defaults(handler=_signal)


def _reopen_parser(reopen: argparse.ArgumentParser) -> None:
    reopen.add_argument("name")
    reopen.set_defaults(handler=_reopen)


def _monitors_parser(mons: argparse.ArgumentParser) -> None:
    mons.add_argument("--json", action="store_true")
    mons.set_defaults(handler=_monitors)


def _check_parser(check: argparse.ArgumentParser) -> None:
    _add_monitor_options(check, "an option of the -m before it")
    check.set_defaults(handler=_check)


def _logs_parser(logs: argparse.ArgumentParser) -> None:
    logs.add_argument("name")
    logs.add_argument("-n", "--lines", type=int, default=20,
                      help="how many of the last lines to print (default 20)")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="then print lines as they are appended, across rotations, until "
                      "the group ends or Ctrl-C")
    logs.set_defaults(handler=_logs)


# Each command: its one-line help and what adds its arguments, in the order --help lists them.
COMMANDS = {
    "run": ("start FILE under supervision (detached by default)", _run_parser),
    "list": ("list the groups", _list_parser),
    "status": ("show a group's state", _status_parser),
    "stop": ("stop a group: TERM, grace period, KILL", _stop_parser),
    "restart": ("restart a group's target", _restart_parser),
    "signal": ("send a signal to a group's target (process group)", _signal_parser),
    "reopen": ("make a group's monitors reopen their files", _reopen_parser),
    "monitors": ("list the installed monitors", _monitors_parser),
    "check": ("run monitors' check() on options, alone", _check_parser),
    "logs": ("print the end of a group's output file", _logs_parser),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``command`` of that one alone: argparse takes
    milliseconds to build them all, and a command line names one (the top-level --help,
    which lists them all, comes with ``command=None``)."""
    parser = _Parser(prog="immortal", description="Keep a program alive, detached, with its "
                     "output and events sent to a monitor.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (text, add_arguments) in COMMANDS.items():
        if command is None or name == command:
            add_arguments(sub.add_parser(name, help=text))
    return parser


def _chosen(ns: argparse.Namespace) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    for name, pairs in ns.monitors or [[None, []]]:
        name = name or "file"
        if name in chosen:
            raise InvalidSpec(f"monitor {name!r} is given twice; give each monitor once, "
                              "with all its -o options after it")
        chosen[name] = _pairs(pairs, "--option")
    return chosen


def _monitors(ns: argparse.Namespace) -> int:
    from .monitoring import installed
    from .render import monitors_view

    rows = []
    for name, entry in sorted(installed().items()):
        dist = getattr(entry, "dist", None)
        rows.append({"name": name, "object": entry.value,
                     "distribution": dist.name if dist else None,
                     "version": dist.version if dist else None})
    if rows or ns.json:
        print(monitors_view(rows, ns.json))
    return 0


def _check(ns: argparse.Namespace) -> int:
    from . import monitoring

    for name, options in _chosen(ns).items():
        factory = monitoring.resolve(name)
        checked = monitoring.check(factory, options, name)
        print(f"{name}: ok {json.dumps(checked, sort_keys=True)}")
    return 0


def _run(ns: argparse.Namespace) -> int:
    from .launcher import start
    from .render import started_view

    env = None
    if ns.env:
        env = {**os.environ, **_pairs(ns.env, "--env")}
    policy = {"min_uptime": ns.min_uptime, "window": ns.window,
              "max_restarts": ns.max_restarts}
    group = start(ns.file, ns.args, strategy=ns.strategy, monitors=_chosen(ns),
                  name=ns.name, exec=ns.executable,
                  env=env, cwd=ns.cwd, umask=ns.umask, stop_timeout=ns.stop_timeout,
                  policy=policy)
    print(started_view(group.name, ns.strategy, group.status()))
    if group.adopted:
        print(f"adopted running target {group.adopted} (left by its dead supervisors)")
    if ns.strategy == "development":
        try:
            final = group.wait()
        except KeyboardInterrupt:
            final = group.stop()
        print(f"{group.name!r} ended: {final.state}"
              + (f" ({final.reason})" if final.reason else ""), file=sys.stderr)
        if final.state == "fatal":
            return 1  # it gave up: CI and service managers must see a failure
    else:
        print(f"stop it with: immortal stop {group.name}")
    return 0


def _list(ns: argparse.Namespace) -> int:
    from .group import groups
    from .render import list_view
    from .state import home

    print(list_view(groups(), home(), ns.json))
    return 0


def _status(ns: argparse.Namespace) -> int:
    from .group import attach
    from .render import status_view

    group = attach(ns.name)
    status = group.status()
    if not status.running:
        status.orphans = group.orphans()
    print(status_view(status, ns.json))
    return 0 if status.running else 3


def _stop(ns: argparse.Namespace) -> int:
    from .group import attach

    group = attach(ns.name)
    # A start under way is waited for, then stopped; a group whose supervisors were killed
    # still has its processes ended.
    if not group.wait_start().running and not group.orphans():
        raise NotRunning(f"group {ns.name!r} is not running")
    try:
        final = group.stop(ns.timeout)
    except KeyboardInterrupt:
        raise _Interrupted(_left_in(group)) from None
    print(f"stopped {ns.name!r}"
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


def _signal(ns: argparse.Namespace) -> int:
    from .group import attach

    value = int(ns.signal) if ns.signal.isdigit() else ns.signal
    attach(ns.name).signal(value)
    print(f"sent {ns.signal} to the target of {ns.name!r}")
    return 0


def _reopen(ns: argparse.Namespace) -> int:
    from .group import attach

    attach(ns.name).reopen()
    print(f"{ns.name!r}: monitors reopened their files")
    return 0


def _restart(ns: argparse.Namespace) -> int:
    from .group import attach

    group = attach(ns.name)
    group.restart(ns.timeout)
    print(f"restarted {ns.name!r}: target pid {group.pids.get('target')}")
    return 0


def _logs(ns: argparse.Namespace) -> int:
    from .group import attach

    if ns.lines < 0:
        raise InvalidSpec(f"--lines must be 0 or more (got {ns.lines})")
    group = attach(ns.name)
    lines = group.follow(ns.lines) if ns.follow else group.tail(ns.lines)
    out = sys.stdout.buffer
    try:
        for line in lines:
            out.write(line)
            if ns.follow:
                out.flush()
        sys.stdout.flush()
    except KeyboardInterrupt:
        pass  # Ctrl-C ends a follow: that is how it is meant to end
    except BrokenPipeError:
        # The reader went away (e.g. '| head'): quietly, and without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()  # a follow's file
    return 0


# The library's names for what the command line calls an option or an argument: a
# message that starts with a field ("'stop_timeout' must be...") speaks the CLI's words.
RUN_WORDS = {"name": "--name", "file": "FILE", "exec": "--exec", "cwd": "--cwd",
             "env": "--env", "umask": "--umask", "stop_timeout": "--stop-timeout",
             "min_uptime": "--min-uptime", "window": "--window",
             "max_restarts": "--max-restarts", "strategy": "--strategy",
             "options": "--option", "monitor": "--monitor"}
GROUP_WORDS = {"name": "NAME", "timeout": "--timeout"}


def _cli_words(message: str, command: str) -> str:
    import re  # loaded already by argparse

    words = RUN_WORDS if command == "run" else GROUP_WORDS
    field = re.match(r"'(\w+)'", message)
    if field and field.group(1) in words:
        message = words[field.group(1)] + message[field.end():]
    return message.replace("(exec)", "(--exec)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    tail: list[str] = []
    if "--" in words:
        # Everything after the first '--' belongs to the target, verbatim: argparse would
        # also drop a later '--' that the target may need.
        at = words.index("--")
        words, tail = words[:at], words[at + 1:]
    # The top level has no option but --help: its first word is the command, if it is one.
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    code = 0
    try:
        ns = parser.parse_args(words)
        if tail:
            if ns.command != "run":
                raise _Usage(f"'--' passes arguments to a target; '{ns.command}' takes none")
            ns.args = [*ns.args, *tail]
        code = int(ns.handler(ns))
        sys.stdout.flush()  # a reader that went away (| head) is met here, not at exit
        return code
    except BrokenPipeError:
        # Quietly, as 'logs' does: the reader has what it wanted. The command's own code
        # if it had finished; and no second error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return code
    except _Usage as exc:
        print(f"immortal: error: {exc}", file=sys.stderr)
        return 2
    except _Interrupted as exc:
        print(f"immortal: error: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("immortal: error: interrupted", file=sys.stderr)
        return 130
    except ImmortalError as exc:
        print(f"immortal: error: {_cli_words(str(exc), words[0] if words else '')}",
              file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # not one of ours: still one line, never a traceback
        print(f"immortal: error: {exc}", file=sys.stderr)
        return 1
