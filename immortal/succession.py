"""The daemon's succession: how a process becomes the group's daemon, and stays it.

A process becomes the daemon in three ways: started as one (``main``, a detached first role,
a pump that ``exec``'d into it, or the command's own process in the foreground:
``fgdaemon``); a pump started as a fresh interpreter whose daemon died (``become``, from
``pump.main``); and a pump forked by the daemon whose daemon died, whose ``forking.Unwind``
comes up here through the frames of the daemon it was forked from. Each runs the daemon at
the top of its stack, in a loop (``_run``): however often the daemon dies, nothing nests.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import _linux, exiting, forking, process, rolelog
from .daemon import Daemon
from .detach import detach
from .roles import RoleArgs
from .spec import Spec


def become(spec: Spec, args: RoleArgs) -> int:
    """Run the daemon in this process, a pump whose daemon died: no exec.

    Only a single-threaded pump does this (a monitor's thread would run on in the daemon,
    and the daemon forks); the target is its child. The daemon is up, and forks a new pump,
    as soon as the pump's objects are freed. The monitor's modules stay imported, never
    called. A pump forked by the daemon comes here through ``_run`` (``Unwind``).
    """
    spec = _take_over(spec, args)
    return _run(spec, args)


def _take_over(spec: Spec, args: RoleArgs) -> Spec:
    """This process, a pump until now, becomes the daemon; the group's spec as the dead
    daemon last wrote it (a scale or an apply since this pump started changed it)."""
    exiting.free()  # the monitors' objects: their files flushed and closed before any fork
    log = Path(spec.directory) / "daemon.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    rolelog.install(str(log))  # its rotation renames the daemon's log now, not the pump's
    _linux.set_subreaper()
    return _latest(spec)


def _latest(spec: Spec) -> Spec:
    """``spec.json`` read again (if it is still ours and readable), else ``spec``."""
    from .state import check_dir, read_json

    try:
        check_dir(Path(spec.directory))
        data = read_json(Path(spec.directory) / "spec.json")
        return Spec.from_json(data) if data else spec
    except Exception as exc:  # the pump's own copy will do
        rolelog.report("spec", f"immortal: daemon: spec.json not read again ({exc})\n")
        return spec


def _run(spec: Spec, args: RoleArgs, first: type[Daemon] = Daemon) -> int:
    """Run the daemon (``first``: the foreground's, for the command's own process); each
    time a pump forked from it becomes the daemon (``Unwind``, in the pump's process), run
    that one here, at the top of its stack: a loop, never a nesting, however often the
    daemon dies. A pump that takes over is a plain daemon, whoever its predecessor was."""
    kind = first
    while True:
        try:
            return kind(spec, args).run()
        except forking.Unwind as change:
            spec, args = change.spec, change.role_args
        kind = Daemon
        spec = _take_over(spec, args)


def main(spec: Spec, args: RoleArgs) -> int:
    if args.foreground:
        # The command's own process (``foreground``): no detaching, and its stderr stays
        # where the command's was (a terminal, the journal, a container's log). Imported
        # here only: they bring the caller's modules (a start's), which a detached daemon
        # would carry, and share with every pump it forks, for nothing.
        from .fgdaemon import ForegroundDaemon
        from .foreground import SIGNALS

        process.role_signals(blocked=SIGNALS)  # pending until its loop takes them
        rolelog.install(None)
        _linux.set_subreaper()
        return _run(spec, args, ForegroundDaemon)
    process.role_signals()
    log = str(Path(spec.directory) / "daemon.log")
    if args.detach:
        detach(args.fds.numbers(), log)
    else:  # exec'd in place of a pump: stderr still points at the pump's log
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    rolelog.install(log)
    _linux.set_subreaper()
    return _run(spec, args)
