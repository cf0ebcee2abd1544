"""The command line: a thin translator from argv to the library, ``main(argv) -> int``.

Exit codes (LSB-style): 0 ok, 1 runtime error, 2 usage or validation error, 3 not running,
4 already running. Errors are one line on stderr: ``immortal: error: ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .errors import ImmortalError, InvalidSpec, NotRunning, did_you_mean


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            # Unknown options of a subcommand reach the top parser: suggest from all of them.
            parsers = [self]
            for action in self._actions:
                if isinstance(action, argparse._SubParsersAction):
                    parsers.extend(action.choices.values())
            options = {o for p in parsers for a in p._actions for o in a.option_strings}
            words = message.split(":", 1)[1].split()
            message += "".join(did_you_mean(w, options) for w in words if w.startswith("-"))
        raise _Usage(message)


class _Usage(Exception):
    pass


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="immortal", description="Keep a program alive, detached, with its "
                     "output and events sent to a monitor.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="start FILE under supervision (detached by default)")
    run.add_argument("file", metavar="FILE")
    run.add_argument("args", nargs="*", metavar="ARG",
                     help="arguments for FILE; put them after '--'")
    run.add_argument("-n", "--name", help="group name (default: FILE's name)")
    run.add_argument("-s", "--strategy", default="daemon",
                     help="daemon (default), unattached or development")
    run.add_argument("-m", "--monitor", default="file", help="monitor name (default: file)")
    run.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                     help="a monitor option, e.g. -o output=app.log (repeatable)")
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

    lst = sub.add_parser("list", help="list the groups")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=_list)

    status = sub.add_parser("status", help="show a group's state")
    status.add_argument("name")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)

    stop = sub.add_parser("stop", help="stop a group: TERM, grace period, KILL")
    stop.add_argument("name")
    stop.add_argument("--timeout", type=float, metavar="S",
                      help="grace period before KILL (default: the group's --stop-timeout)")
    stop.set_defaults(handler=_stop)

    restart = sub.add_parser("restart", help="restart a group's target")
    restart.add_argument("name")
    restart.add_argument("--timeout", type=float, metavar="S",
                         help="grace period before KILL (default: the group's)")
    restart.set_defaults(handler=_restart)

    sig = sub.add_parser("signal", help="send a signal to a group's target (process group)")
    sig.add_argument("name")
    sig.add_argument("signal", help="a name (HUP, USR1, SIGUSR2...) or a number")
    sig.set_defaults(handler=_signal)

    reopen = sub.add_parser("reopen", help="make a group's monitors reopen their files")
    reopen.add_argument("name")
    reopen.set_defaults(handler=_reopen)

    logs = sub.add_parser("logs", help="print the end of a group's output file")
    logs.add_argument("name")
    logs.add_argument("-n", "--lines", type=int, default=20)
    logs.set_defaults(handler=_logs)
    return parser


def _run(ns: argparse.Namespace) -> int:
    from .launcher import start

    env = None
    if ns.env:
        env = {**os.environ, **_pairs(ns.env, "--env")}
    policy = {"min_uptime": ns.min_uptime, "window": ns.window,
              "max_restarts": ns.max_restarts}
    group = start(ns.file, ns.args, strategy=ns.strategy, monitor=ns.monitor,
                  options=_pairs(ns.option, "--option"), name=ns.name, exec=ns.executable,
                  env=env, cwd=ns.cwd, umask=ns.umask, stop_timeout=ns.stop_timeout,
                  policy=policy)
    status = group.status()
    pids = ", ".join(f"{role} {pid}" for role, pid in status.pids.items())
    print(f"started {group.name!r} ({ns.strategy}): {pids}")
    if status.output:
        print(f"output: {status.output}")
    if ns.strategy == "development":
        try:
            final = group.wait()
        except KeyboardInterrupt:
            final = group.stop()
        print(f"{group.name!r} ended: {final.state}"
              + (f" ({final.reason})" if final.reason else ""), file=sys.stderr)
    else:
        print(f"stop it with: immortal stop {group.name}")
    return 0


def _list(ns: argparse.Namespace) -> int:
    from .group import groups

    found = groups()
    if ns.json:
        print(json.dumps([s.to_json() for s in found], indent=1))
        return 0
    if not found:
        print("no groups")
        return 0
    print(f"{'NAME':<20} {'STATE':<11} {'TARGET':>8} {'RESTARTS':>8}")
    final = ("stopped", "fatal")
    for s in found:
        state = s.state if s.running or s.state in final else f"{s.state}*"
        target = s.pids.get("target", "-") if s.running else "-"
        print(f"{s.name:<20} {state:<11} {target!s:>8} {s.restarts:>8}")
    if any(not s.running and s.state not in final for s in found):
        print("* its processes are gone (killed without a stop); 'immortal run' starts it anew")
    return 0


def _status(ns: argparse.Namespace) -> int:
    from .group import attach

    status = attach(ns.name).status()
    print(json.dumps(status.to_json(), indent=1) if ns.json else status)
    return 0 if status.running else 3


def _stop(ns: argparse.Namespace) -> int:
    from .group import attach

    group = attach(ns.name)
    if not group.status().running:
        raise NotRunning(f"group {ns.name!r} is not running")
    final = group.stop(ns.timeout)
    print(f"stopped {ns.name!r}" + (f": last target {final.last_exit}" if final.last_exit
                                   else ""))
    return 0


def _signal(ns: argparse.Namespace) -> int:
    from .group import attach

    value = int(ns.signal) if ns.signal.isdigit() else ns.signal
    attach(ns.name).signal(value)
    print(f"sent {ns.signal} to {ns.name!r}'s target")
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

    output = attach(ns.name).status().output
    if not output:
        raise ImmortalError(f"group {ns.name!r}'s monitor declares no output file")
    try:
        with open(output, "rb") as handle:
            lines = handle.readlines()[-ns.lines:] if ns.lines > 0 else []
    except FileNotFoundError:
        lines = []
    sys.stdout.buffer.write(b"".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    tail: list[str] = []
    if "--" in words:
        # Everything after the first '--' belongs to the target, verbatim: argparse would
        # also drop a later '--' that the target may need.
        at = words.index("--")
        words, tail = words[:at], words[at + 1:]
    try:
        ns = parser.parse_args(words)
        if tail:
            if ns.command != "run":
                raise _Usage(f"'--' passes arguments to a target; '{ns.command}' takes none")
            ns.args = [*ns.args, *tail]
        return int(ns.handler(ns))
    except _Usage as exc:
        print(f"immortal: error: {exc}", file=sys.stderr)
        return 2
    except ImmortalError as exc:
        print(f"immortal: error: {exc}", file=sys.stderr)
        return exc.exit_code


def entry() -> None:
    """The ``immortal`` console script."""
    sys.exit(main())
