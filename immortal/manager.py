"""``Manager``: several groups run from one program, in the spirit of processman.

    manager = immortal.Manager()
    web = manager.start("web.py", strategy="development", capture=True)
    for line in web.stdout: ...
    manager.processes()        # {name: Group}, a copy
    manager.stop_all()         # TERM to every target at once, grace, KILL
    manager.kill_all()         # KILL now
    manager.shutdown(5.0)      # stop all; KILL whatever is left after 5 s
    manager.exec("make", ["test"], timeout=60)   # a program run to its end (immortal.exec)

A SIGTERM to the program stops its groups first (when the manager was made in the main
thread), then the program ends as the signal's default says. A stopped group is never
restarted.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

from . import execute
from .group import Group
from .launcher import start
from .spec import check_timeout
from .state import Status


class Manager:
    """Starts groups and stops them together."""

    def __init__(self, *, stop_on_sigterm: bool = True) -> None:
        self._groups: dict[str, Group] = {}
        self._running: set[execute.Execution] = set()  #: the execs in flight
        self._lock = threading.Lock()
        self._previous: Any = None
        if stop_on_sigterm and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def start(self, file: str | os.PathLike[str], args: Sequence[str] | None = None,
              **options: Any) -> Group:
        """``immortal.start(file, args, **options)``, remembered by this manager."""
        group = start(file, args, **options)
        with self._lock:
            self._groups[group.name] = group
        return group

    def exec(self, file: str | os.PathLike[str], args: Sequence[str] | None = None, *,
             timeout: float | None = None, max_buffer: int | None = None,
             env: Mapping[str, str] | None = None,
             cwd: str | os.PathLike[str] | None = None, **unknown: Any) -> execute.ExecResult:
        """``immortal.exec(file, args, ...)``; while it runs, ``stop_all``, ``kill_all`` and
        ``shutdown`` (from another thread, or a SIGTERM) kill it with its whole tree."""
        execute.no_other(unknown)
        limit, most = execute.check_limits(timeout, max_buffer)
        running = execute.prepare(file, args, env=env, cwd=cwd)
        with self._lock:
            self._running.add(running)
        try:
            return running.run(limit, most)
        finally:
            with self._lock:
                self._running.discard(running)

    def _kill_execs(self) -> None:
        with self._lock:
            running = list(self._running)
        for one in running:
            one.kill()

    def processes(self) -> dict[str, Group]:
        """The groups started by this manager, by name (a copy)."""
        with self._lock:
            return dict(self._groups)

    def stop_all(self, timeout: float | None = None) -> dict[str, Status]:
        """Stop every group at once: TERM, grace period (``timeout``, default each group's
        own), KILL; returns when all are gone. An exec in flight is killed at once."""
        groups = self.processes()
        self._kill_execs()
        graces = {name: group.begin_stop(timeout) for name, group in groups.items()}
        return {name: group.finish_stop(graces[name]) for name, group in groups.items()}

    def kill_all(self) -> dict[str, Status]:
        """SIGKILL every group (and exec in flight) now; returns when all are gone."""
        self._kill_execs()
        return {name: group.kill() for name, group in self.processes().items()}

    def shutdown(self, timeout: float = 10.0) -> dict[str, Status]:
        """Stop every group, giving each target ``timeout`` seconds after TERM; then KILL."""
        timeout = check_timeout("timeout", timeout)
        result = self.stop_all(timeout)
        self.close()
        return result

    def close(self) -> None:
        """Give SIGTERM back to whoever had it before this manager."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_sigterm(self, number: int, frame: FrameType | None) -> None:
        previous = self._previous
        self.stop_all()
        self.close()
        if callable(previous):
            previous(number, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
