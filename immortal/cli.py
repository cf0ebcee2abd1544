"""The command line: a thin translator from argv to the library, ``main(argv) -> int``:
what each command does, and its exit code (the parsers are ``cliargs.py``'s).

Exit codes (LSB-style): 0 ok, 1 runtime error, 2 usage or validation error, 3 not running,
4 already running. Errors are one line on stderr: ``immortal: error: ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import clifile, clinames, clisvc
from .cliargs import COMMANDS, Usage, build_parser  # noqa: F401  (build_parser: kept here)
from .errors import ImmortalError, InvalidSpec, StartError
from .events import READER_GONE
from .names import address, whom
from .runargs import POLICY_OPTIONS

# A command is a fresh interpreter that pays for every import at each run: each handler
# imports what it alone needs ('stop' needs group, control and state, not the launcher,
# pluggy or the monitors), and this module does not import typing at run time.
TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    result = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"{what} must look like KEY=VALUE (got {item!r})")
        result[key] = value
    return result


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
    from .monitorload import installed
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
    from . import monitorload

    for name, options in _chosen(ns).items():
        factory = monitorload.resolve(name)
        checked = monitorload.check(factory, options, name)
        print(f"{name}: ok {json.dumps(checked, sort_keys=True)}")
    return 0


def _env_file(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    from .envfile import read

    return {key: value for key, value, _ in read(path)}


def _run(ns: argparse.Namespace) -> int:
    from .launcher import start
    from .render import started_view

    env = None
    if ns.env or ns.env_file:
        env = {**os.environ, **_env_file(ns.env_file), **_pairs(ns.env, "--env")}
    policy = {key: getattr(ns, key) for key in POLICY_OPTIONS
              if getattr(ns, key) is not None}
    options = dict(monitors=_chosen(ns), name=ns.name, exec=ns.executable, env=env,
                   cwd=ns.cwd, umask=ns.umask, stop_timeout=ns.stop_timeout,
                   start_timeout=ns.start_timeout, policy=policy, ready=ns.ready,
                   ready_timeout=ns.ready_timeout, listen=ns.listen, workers=ns.workers,
                   backpressure=ns.backpressure, channel=ns.channel, user=ns.user,
                   group=ns.group, watch=ns.watch, ignore=ns.ignore,
                   watch_delay=ns.watch_delay, memory_limit=ns.memory_limit,
                   memory_window=ns.memory_window, memory_children=ns.memory_children,
                   comment=ns.comment)
    if ns.foreground:
        from .foreground import start as run_here

        run_here(ns.file, ns.args, strategy=ns.strategy, console=ns.console, **options)
    if ns.console is not None:
        raise InvalidSpec("--console goes with --foreground (a detached group's output "
                          "goes to its monitors; -s development shows it on the terminal)")
    try:
        group = start(ns.file, ns.args, strategy=ns.strategy, **options)
    except StartError as exc:
        if exc.stopped == READER_GONE:
            return 0  # its reader went away before it was ready (| head): quietly
        raise
    # In development the target's output is this command's stdout, written by the pump while
    # we print: our words go to stderr, so that they never land inside a line of its output
    # (a long line reaches a pipe in several writes) and '| grep' sees the target's alone.
    ours = sys.stderr if ns.strategy == "development" else sys.stdout
    print(started_view(group.name, ns.strategy, group.status()), file=ours)
    if group.adopted:
        print(f"adopted running target {group.adopted} (left by its dead supervisors)",
              file=ours)
    if ns.strategy == "development":
        return clifile.attached(group)
    print(f"stop it with: immortal stop {group.name}")
    return 0


def _list(ns: argparse.Namespace) -> int:
    from .group import groups
    from .listview import list_view
    from .state import home

    print(list_view(groups(), home(), ns.json))
    return 0


def _signal(ns: argparse.Namespace) -> int:
    from .clinames import resolve
    from .group import attach

    name, program, instance = address(resolve(ns.name, ns.config))
    value = int(ns.signal) if ns.signal.isdigit() else ns.signal
    attach(name).signal(value, instance=instance, program=program)
    print(f"sent {ns.signal} to {whom(name, program, instance)}")
    return 0


def _reopen(ns: argparse.Namespace) -> int:
    from .group import attach

    attach(clinames.whole_group("reopen", ns.name)).reopen()
    print(f"{ns.name!r}: monitors reopened their files")
    return 0


def _metrics(ns: argparse.Namespace) -> int:
    if ns.name is not None:
        clinames.whole_group("metrics", ns.name)
    return clisvc.metrics(ns)


def _restart(ns: argparse.Namespace) -> int:
    from .group import attach

    from .state import instance_label

    name, program, instance = address(ns.name)
    group = attach(name)
    group.restart(ns.timeout, instance=instance, batch=ns.batch, all_at_once=ns.all_at_once,
                  program=program)
    status = group.status()
    if status.instances:
        pids = ", ".join(f"{instance_label(name, entry)} {_target(entry)}"
                         for entry in status.instances
                         if instance in (None, entry.instance)
                         and program in (None, entry.program))
        print(f"restarted {ns.name!r}: target pids {pids}")
    else:
        print(f"restarted {name!r}: target pid {_target(status)}")
    return 0


def _target(entry: Any) -> str:
    """An instance's (or a group of one's) target pid; its state when none runs since the
    restart (its new target died at once: in backoff; a job that finished)."""
    pid = entry.pid if hasattr(entry, "pid") else entry.pids.get("target")
    if pid:
        return str(pid)
    last = f": its new target {entry.last_exit}" if entry.last_exit is not None else ""
    return f"(none: {entry.state}{last})"


def _scale(ns: argparse.Namespace) -> int:
    from .group import attach

    from .clinames import resolve
    from .state import instance_label

    name, program, instance = address(resolve(ns.name, ns.config))
    if instance is not None:
        raise InvalidSpec(f"scale takes a group's NAME, or GROUP/PROGRAM, not an instance "
                          f"(got {ns.name!r})")
    status = attach(name).scale(ns.workers, ns.timeout, program=program)
    pids = ", ".join(f"{instance_label(name, e)} {e.pid}" for e in status.instances
                     if program in (None, e.program)) \
        or f"target {status.pids.get('target')}"
    print(f"{ns.name!r} runs {ns.workers} instance(s): {pids}")
    return 0


def _logs(ns: argparse.Namespace) -> int:
    from .group import attach

    from .clinames import resolve

    if ns.lines < 0:
        raise InvalidSpec(f"--lines must be 0 or more (got {ns.lines})")
    name, program, instance = address(resolve(ns.name, ns.config))
    group = attach(name)
    lines = (group.follow(ns.lines, instance, program) if ns.follow
             else group.tail(ns.lines, instance, program))
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


def _completion(ns: argparse.Namespace) -> int:
    from . import completion

    if ns.names:
        names = completion.names(ns.names, ns.config)
        if names:
            print("\n".join(names))
        return 0
    if ns.shell is None:
        raise Usage("name a shell: 'immortal completion bash' or 'immortal completion zsh'")
    print(completion.script(ns.shell), end="")
    return 0


# What runs each command of cliargs.COMMANDS.
HANDLERS = {"run": _run, "up": clifile.up, "down": clifile.down, "reload": clifile.reload,
            "start": clinames.start, "forget": clinames.forget, "list": _list,
            "status": clinames.status, "stop": clinames.several(clinames.stop),
            "restart": clinames.several(_restart),
            "signal": _signal, "reopen": _reopen, "scale": _scale, "monitors": _monitors,
            "check": _check, "logs": _logs, "config": clifile.config, "validate": clifile.validate,
            "completion": _completion, "startup": clisvc.startup,
            "start-recorded": clisvc.start_recorded, "save": clisvc.save,
            "resurrect": clisvc.resurrect, "metrics": _metrics}


# The library's names for what the command line calls an option or an argument: a
# message that starts with a field ("'stop_timeout' must be...") speaks the CLI's words.
RUN_WORDS = {"name": "--name", "file": "FILE", "exec": "--exec", "cwd": "--cwd",
             "env": "--env", "umask": "--umask", "stop_timeout": "--stop-timeout",
             "min_uptime": "--min-uptime", "window": "--window",
             "max_restarts": "--max-restarts", "strategy": "--strategy",
             "workers": "--workers", "options": "--option", "monitor": "--monitor",
             "ready": "--ready", "ready_timeout": "--ready-timeout",
             "start_timeout": "--start-timeout", "backoff_initial": "--backoff-initial",
             "backoff_factor": "--backoff-factor", "backoff_max": "--backoff-max",
             "jitter": "--jitter", "final_exit_codes": "--final-exit-codes",
             "backpressure": "--backpressure", "channel": "--channel", "user": "--user",
             "group": "--group", "watch": "--watch", "ignore": "--ignore",
             "watch_delay": "--watch-delay", "memory_limit": "--memory-limit",
             "memory_window": "--memory-window", "memory_children": "--memory-children",
             "comment": "--comment"}
GROUP_WORDS = {"name": "NAME", "timeout": "--timeout", "instance": "NAME:K", "workers": "N",
               "program": "GROUP/PROGRAM", "batch": "--batch"}


def _cli_words(message: str, command: str) -> str:
    import re  # loaded already by argparse

    words = RUN_WORDS if command == "run" else GROUP_WORDS
    field = re.match(r"'(\w+)'", message)
    if field and field.group(1) in words:
        message = words[field.group(1)] + message[field.end():]
    # The Python API's keywords elsewhere in the message, as the command line's words:
    # "needs 'user'", "(got group='x' ...)", "(program=..., GROUP/PROGRAM)".
    message = re.sub(r"\b(needs|with|goes with) '(\w+)'",
                     lambda m: f"{m.group(1)} {words.get(m.group(2), repr(m.group(2)))}",
                     message)
    message = re.sub(r"\(got (\w+)=", lambda m: f"(got {words[m.group(1)]} "
                     if m.group(1) in words else m.group(0), message)
    message = message.replace("program=..., ", "")
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
                raise Usage(f"'--' passes arguments to a target; '{ns.command}' takes none")
            ns.args = [*ns.args, *tail]
        code = int(HANDLERS[ns.command](ns))
        sys.stdout.flush()  # a reader that went away (| head) is met here, not at exit
        return code
    except BrokenPipeError:
        # Quietly, as 'logs' does: the reader has what it wanted. The command's own code
        # if it had finished; and no second error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return code
    except Usage as exc:
        print(f"immortal: error: {exc}", file=sys.stderr)
        return 2
    except clinames.Interrupted as exc:
        print(f"immortal: error: {exc}", file=sys.stderr)
        return 130
    except clifile.Problems as exc:
        for line in exc.lines:
            print(f"immortal: error: {line}", file=sys.stderr)
        return 2
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
