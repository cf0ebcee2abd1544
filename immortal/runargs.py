"""The arguments of ``immortal run`` (``cliargs.py`` builds every command's parser): the
program, its monitors (``-m``/``-o``, ``check``'s too), its restart policy, the
operator's options, and ``--foreground`` (``start``'s, ``up``'s and
``start-recorded``'s too).
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


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


def _codes(text: str) -> list[int]:
    try:
        return [int(code) for code in text.split(",") if code.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"exit codes must be integers separated by commas, "
                                         f"like 0,3 (got {text!r})")


def monitor_options(parser: argparse.ArgumentParser, option_help: str) -> None:
    parser.add_argument("-m", "--monitor", action=_MonitorAction, dest="monitors", default=[],
                        help="a monitor by name (default: file); repeat for several")
    parser.add_argument("-o", "--option", action=_OptionAction, dest="monitors",
                        metavar="KEY=VALUE", help=option_help)


def run_parser(run: argparse.ArgumentParser) -> None:
    run.add_argument("file", metavar="FILE")
    run.add_argument("args", nargs="*", default=[], metavar="ARG",
                     help="arguments for FILE; put them after '--'")
    run.add_argument("-n", "--name", help="group name (default: FILE's name)")
    run.add_argument("-s", "--strategy", default="daemon",
                     help="daemon (default), unattached or development")
    monitor_options(run, "an option of the -m before it (or of the default monitor), "
                         "e.g. -o output=app.log (repeatable)")
    run.add_argument("--exec", dest="executable", metavar="PATH",
                     help="interpreter to run FILE with")
    run.add_argument("--cwd", help="working directory of the target")
    run.add_argument("-e", "--env", action="append", metavar="KEY=VALUE",
                     help="set a variable in the target's environment (repeatable)")
    run.add_argument("--env-file", metavar="FILE",
                     help="variables for the target's environment, KEY=VALUE lines (-e "
                     "options win)")
    run.add_argument("--umask", type=_octal, help="umask of the target, in octal")
    run.add_argument("-w", "--workers", "--instances", type=int, default=1, metavar="N",
                     help="run N instances of FILE, each restarted on its own (default 1)")
    run.add_argument("--stop-timeout", type=float, default=10.0, metavar="S",
                     help="grace period between TERM and KILL (default 10)")
    run.add_argument("--start-timeout", type=float, default=30.0, metavar="S",
                     help="how long the supervisors may take to start up and answer, before "
                     "the target's readiness (default 30)")
    _policy_options(run)
    run.add_argument("--ready", metavar="MODE",
                     help="when the target counts as started, and 'run' returns: spawn, "
                     "uptime:S, line:REGEX, port:N or notify (default: $IMMORTAL_READY, "
                     "else uptime:1)")
    run.add_argument("--ready-timeout", type=float, default=30.0, metavar="S",
                     help="fail the start if the target is not ready S seconds after its "
                     "spawn (default 30)")
    run.add_argument("--listen", action="append", metavar="ADDR",
                     help="a socket to bind once and pass to the target by socket "
                     "activation (fds 3, 4, ..., LISTEN_FDS): tcp://HOST:PORT, "
                     "tcp://[IPV6]:PORT or unix:PATH (repeatable, in order)")
    run.add_argument("--backpressure", default="block", metavar="MODE",
                     help="block (default): the target waits while the monitors are "
                     "behind; drop: lines are dropped and counted instead")
    run.add_argument("--channel", action="store_true",
                     help="open a JSON message channel between the target and the monitors")
    _operator_options(run)
    foreground_options(run)


def _policy_options(run: argparse.ArgumentParser) -> None:
    """The restart policy's fields; unset ones keep RestartPolicy's defaults."""
    policy = run.add_argument_group("restart policy")
    policy.add_argument("--min-uptime", type=float, metavar="S",
                        help="a run this long counts as stable: restart at once (default 1)")
    policy.add_argument("--backoff-initial", type=float, metavar="S",
                        help="the first delay after a quick death (default 0.5; 0: none)")
    policy.add_argument("--backoff-factor", type=float, metavar="F",
                        help="each further quick death multiplies the delay (default 2)")
    policy.add_argument("--backoff-max", type=float, metavar="S",
                        help="the delay's ceiling (default 30)")
    policy.add_argument("--jitter", type=float, metavar="F",
                        help="spread each delay by this fraction, up or down (default 0.2)")
    policy.add_argument("--max-restarts", type=int, metavar="N",
                        help="give up after N restarts within --window seconds")
    policy.add_argument("--window", type=float, metavar="S",
                        help="the window of --max-restarts (default 60)")
    policy.add_argument("--final-exit-codes", type=_codes, metavar="CODES",
                        help="exit codes that mean 'do not restart', e.g. 0,3 (the group "
                        "stops)")


POLICY_OPTIONS = ("min_uptime", "backoff_initial", "backoff_factor", "backoff_max", "jitter",
                  "max_restarts", "window", "final_exit_codes")


def _operator_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--user", help="run the target as USER (root only; listen sockets are "
                     "bound first, as root)")
    run.add_argument("--group", help="with --user: the target's group (default: USER's)")
    run.add_argument("--watch", action="append", metavar="PATH",
                     help="restart the program when a file here changes: a path or a glob "
                     "(*, ?, [..], **) (repeatable)")
    run.add_argument("--ignore", action="append", metavar="GLOB",
                     help="changes that do not count, by name (*.log) or path (repeatable)")
    run.add_argument("--watch-delay", type=float, metavar="S",
                     help="restart once the files were quiet S seconds (default 0.5)")
    run.add_argument("--memory-limit", metavar="SIZE",
                     help="restart a target whose memory stays over SIZE (300M, 1.5G)")
    run.add_argument("--memory-window", type=float, metavar="S",
                     help="for S seconds (default 10)")
    run.add_argument("--memory-children", action="store_true",
                     help="count the target's descendants' memory too")
    run.add_argument("--comment", help="a label shown in the supervisors' process titles "
                     "and given to the target as IMMORTAL_COMMENT")


def foreground_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--foreground", action="store_true",
                        help="run the group in this process, in the foreground, until it "
                        "ends (for systemd, a container's entry point, a terminal): no "
                        "detaching; exit 0 after a stop, 1 if it gives up")
    parser.add_argument("--console", action=argparse.BooleanOptionalAction, default=None,
                        help="with --foreground: echo the targets' output on this "
                        "command's stdout and stderr too (default: when stdout is a "
                        "terminal)")
