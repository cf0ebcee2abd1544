"""Each program's monitors as the pump drives them (``monitoring.Host``, one per program):
loaded on its instances' journals, told the lines they lost to backpressure "drop", given
time to catch up, and told ``shutdown`` at the end (of the group, or of a program an apply
removed)."""

from __future__ import annotations

import sys

from . import monitorfind, monitoring, rolelog
from .ledger import Ledger
from .errors import MONITOR_ERRORS
from .events import PUMP_START
from .monitoring import MONITOR_GRACE
from .spec import Strategy

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable

    from .spec import Spec
    from .streams import Streams
    from .workers import Run


class Hosts:
    """What the pump (``pump.Pump``) does with its programs' monitors; the rest it
    provides."""

    spec: Spec
    runs: dict[str, Run]
    streams: Streams | None
    channel: list[int] | None
    # What the pump provides (no stubs here: this part comes first in the pump's bases,
    # and they would hide its own).
    _named_spec: Callable[[Spec, str], str]
    _write_status: Callable[[], None]

    def _load_monitors(self) -> str | None:
        """Import and create each program's monitors (``Run.host``); the error if they
        fail."""
        for run in self.runs.values():
            try:
                self.load_host(run)
            except MONITOR_ERRORS as exc:
                return self._named_spec(run.spec,
                                        f"the monitors failed to load in the pump: {exc}")
        return None

    def load_host(self, run: Run) -> None:
        """The monitors of ``run``, on its instances' journals."""
        view = run.spec
        assert self.streams is not None
        run.host = monitoring.Host(
            [(name, monitorfind.find(name), options) for name, options in view.monitors],
            self.spec.name, view.program_dir,
            self.streams.send if self.channel and not self.spec.several else None,
            [Ledger(inst.streams.journal) for inst in run.instances],
            drop=view.backpressure == "drop", program=view.program or None, isolate=True)
        if run.host.terminal and self.spec.strategy == Strategy.DEVELOPMENT:
            # (Its terminal is the pump's own stdout: the foreground's console echo stays.)
            for inst in run.instances:
                inst.streams.no_echo()

    def _report_dropped(self, force: bool = False) -> None:
        """Backpressure "drop": tell each monitor how many of its lines were dropped, once
        a second."""
        told = [run.host.report_dropped(force) for run in self.runs.values()
                if run.host is not None]
        if any(told):
            self._write_status()

    def _next_report(self) -> float | None:
        due = [at for at in (run.host.next_report() for run in self.runs.values()
                             if run.host is not None) if at is not None]
        return min(due) if due else None

    def replace_host(self, run: Run, reason: str) -> None:
        """``run``'s monitors changed (an apply; ``run.spec`` has the new ones): the old
        ones told ``shutdown(reason)`` and let go, then the new ones loaded on the same
        journals (each starting where the one in its slot had got to) and set up."""
        self.shut_down(run, reason)
        self.start_host(run)

    def start_host(self, run: Run) -> None:
        """The monitors of a program that joins a running pump (an apply, or its new
        monitors): loaded and set up; if they fail, the program runs on without any,
        and the pump's log says why."""
        try:
            self.load_host(run)
            assert run.host is not None
            run.host.call("setup", why=PUMP_START, message=None)
        except MONITOR_ERRORS as exc:
            rolelog.report("monitors", f"immortal: pump: program {run.name!r}: its monitors "
                           f"failed ({exc}); it runs without them\n")
            run.host = monitoring.Host([], self.spec.name, run.spec.program_dir, None,
                                       [Ledger(inst.streams.journal)
                                        for inst in run.instances], program=run.name or None)

    def shut_down(self, run: Run, reason: str) -> None:
        """The last event of ``run``'s monitors; no call follows."""
        if run.host is None:
            return
        run.host.call("shutdown", reason=reason)
        for name in run.host.flush(MONITOR_GRACE):
            sys.stderr.write(f"immortal: pump: monitor {name!r} is still busy; it gets no "
                             "more calls\n")
        run.host.close()

    def _catch_up(self, timeout: float, run: Run | None = None) -> None:
        """Backpressure "drop": the monitors' queues (``run``'s, else every program's)
        get ``timeout`` seconds to empty."""
        for each in [run] if run is not None else list(self.runs.values()):
            for name in each.host.catch_up(timeout) if each.host is not None else ():
                sys.stderr.write(f"immortal: pump: monitor {name!r} had not taken all its "
                                 f"lines {timeout} s later; the rest were dropped\n")
