"""The daemon's signals: SIGTERM and SIGINT stop the group; SIGHUP and SIGCONT restart it as
``immortal restart NAME`` does (rolling where the pump rolls), except the SIGCONT that
resumes a job-control stop the daemon took (``jobstop``) and the one a service manager
sends after its SIGTERM."""

from __future__ import annotations

from . import rolelog, supervise
from .errors import ImmortalError
from .jobstop import JobStops
from .roles import Command

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Signals:
    """Mixed into the daemon, whose state it reads and changes (declared here; no stubs:
    this part comes before ``Answering`` in the daemon's bases)."""

    machine: supervise.State
    stop_request: Command | None
    job_stops: JobStops
    restart_asked: bool  #: by a signal (SIGHUP, SIGCONT), carried out after it
    hangup: bool  #: a SIGHUP among them: the operator's, said if refused
    _stop: Callable[[dict[str, Any], bool], None]
    _command: Callable[[dict[str, Any]], dict[str, Any]]

    def _on_stop_signal(self) -> None:
        self._stop({"cmd": "stop"}, True)  # by a signal

    def _on_continue(self) -> None:
        """SIGCONT: a restart as SIGHUP's, unless it resumes a stop we took (``jobstop``)."""
        if not self.job_stops.resumed():
            self.restart_asked = True

    def _on_hangup(self) -> None:
        """SIGHUP: a restart, rolling where the pump rolls (``rollout``), once the signals
        that came with it are taken (``_restart_asked``)."""
        self.restart_asked = self.hangup = True

    def _restart_asked(self) -> None:
        """The restart a signal asked, at the end of the loop's turn: not once a stop was
        asked. A service manager sends SIGCONT right after its SIGTERM (systemd does), and
        a process handles signals that are pending together from the last sent, so the
        SIGCONT can come first: taken at once, its restart would reach the pump before the
        stop."""
        hangup, self.restart_asked, self.hangup = self.hangup, False, False
        if self.stop_request is not None or supervise.ending(self.machine):
            if hangup:  # not the SIGCONT a service manager sends after every SIGTERM
                rolelog.report("command", "immortal: daemon: a restart signal during the "
                                          "stop was ignored\n")
            return
        self._restart_signal()

    def _restart_signal(self) -> None:
        try:
            self._command({"cmd": "restart"})
        except ImmortalError as exc:
            rolelog.report("command", f"immortal: daemon: restart: {exc}\n")
