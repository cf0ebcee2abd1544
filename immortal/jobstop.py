"""The daemon's job-control stops, taken by itself so that the SIGCONT resuming one is known.

SIGCONT restarts a group as SIGHUP does (``kill -CONT`` on a master that replaces its
workers is how some servers load new code), yet SIGCONT is also what resumes a stopped
process, and a resumed daemon must not restart its group. Nothing in the signal tells the
two apart (its ``siginfo`` is the same either way, and that a process was stopped is told
to its parent alone), so the daemon makes the stops it can catch its own: SIGTSTP, SIGTTIN
and SIGTTOU (Ctrl-Z in a terminal, a background job reading or writing it) are caught, the
handler counts the stop and stops the process with SIGSTOP, and the SIGCONT that resumes it
is then known as such (``resumed``). SIGSTOP itself cannot be caught: a SIGSTOP and a
SIGCONT from an operator restart the group.

The handler stops the process from the signal handler itself, not from the role's loop: a
background job's write to its terminal under ``stty tostop`` is refused (EINTR) until the
process stops, and Python retries such a write without going back to the loop. A
namespace's init (PID 1) cannot stop itself (the kernel ignores a SIGSTOP sent to it from
inside): it ignores these signals, as the kernel does for an init without a handler.
"""

from __future__ import annotations

import os
import signal

from . import plainsignals

#: the stop signals a process can catch
SIGNALS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


class JobStops:
    """The stops this process took whose resuming SIGCONT was not seen yet."""

    def __init__(self) -> None:
        self.pending = 0

    def stop(self, number: int, frame: object) -> None:
        """The handler of ``SIGNALS``: counted, then stopped until a SIGCONT."""
        if os.getpid() == 1:
            return
        self.pending += 1
        os.kill(os.getpid(), signal.SIGSTOP)

    def resumed(self) -> bool:
        """At a SIGCONT: whether it is the one that resumed a stop we took (counted once)."""
        if self.pending:
            self.pending -= 1
            return True
        return False


def take() -> JobStops:
    """Catch this process's job-control stops from now on (see the module's docstring)."""
    stops = JobStops()
    for number in SIGNALS:
        plainsignals.handle(number, stops.stop)
    return stops
