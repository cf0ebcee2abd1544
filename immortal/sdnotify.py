"""immortal's own word to its service manager: systemd's ``Type=notify`` protocol, spoken by
a group's daemon run in the foreground (``fgdaemon``), never by a target.

When systemd starts a ``Type=notify`` service it sets ``NOTIFY_SOCKET`` (a datagram socket:
a path, or ``@name`` in the abstract namespace) and, with ``WatchdogSec=``,
``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, the process it is meant for). The service sends
``KEY=VALUE`` lines, one datagram per message (``sd_notify(3)``):

- ``READY=1`` once every target of the group is ready (what ``start()`` waits for);
- ``STATUS=...``, a one-line summary, each time it changes;
- ``RELOADING=1`` with ``MONOTONIC_USEC=`` (``CLOCK_MONOTONIC`` in microseconds, as
  systemd asks since its ``Type=notify-reload``) when a SIGHUP's rolling restart begins,
  and ``READY=1`` again once it is over;
- ``STOPPING=1`` when the group begins to end;
- ``WATCHDOG=1`` every half ``WATCHDOG_USEC``, only while the group is healthy (a ping's
  time with the pump not seen draining sends none): a daemon that stops pinging is
  restarted by systemd. Without ``WATCHDOG_USEC`` no timer runs.

The targets never see these variables (``notify.MANAGER_ENV``): a target gets a notify
socket of the group's own, and only with ``ready="notify"``. A socket is opened per
message (they are rare), so no file of ours outlives a send or is inherited by a pump.
The clock is a parameter: the timing is tested with a fake one.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

from .notify import ENV

WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
MAX_STATUS = 200  #: characters of a STATUS= line kept (a summary, not a log)


def address(value: str) -> str | bytes | None:
    """The socket address ``NOTIFY_SOCKET`` names: a path, or an abstract name for
    ``@name``; None for what a datagram cannot reach here (empty, ``vsock:...``)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog's interval in seconds, if systemd asks this process for pings."""
    try:
        usec = int(environ.get(WATCHDOG_USEC, ""))
    except ValueError:
        return None
    meant_for = environ.get(WATCHDOG_PID)
    if usec <= 0 or (meant_for and meant_for != str(pid)):
        return None
    return usec / 1e6


class Notifier:
    """Sends the messages above to ``target`` (``send(data)``: one datagram each)."""

    def __init__(self, send: Callable[[bytes], None], watchdog: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self.watchdog = watchdog  #: the interval, in seconds; None: no pings asked
        self.clock = clock
        self.since = clock()  # a first ping is due from then (a fixed time, not "now")
        self.last_look: float | None = None  #: when a ping was last due (sent or not)
        self.shown: str | None = None  #: the last STATUS= sent
        self.stopping_sent = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None,
                     clock: Callable[[], float] = time.monotonic) -> Notifier | None:
        """The notifier ``environ`` (default: ours) asks for; None without NOTIFY_SOCKET."""
        environ = os.environ if environ is None else environ
        where = address(environ.get(ENV, ""))
        if where is None:
            return None
        return cls(lambda data: send_datagram(where, data),
                   watchdog_interval(environ, os.getpid()), clock)

    def send(self, *lines: str) -> None:
        self._send("\n".join(lines).encode())

    def ready(self, status: str | None = None) -> None:
        """``READY=1`` (the start is over, or a reload), with a status line if given; not
        once ``STOPPING=1`` was sent: a reload that a stop cut short ends with the group,
        and systemd, told the service stops, must not hear it is back in service."""
        if self.stopping_sent:
            if status is not None:
                self.status(status)
            return
        lines = ["READY=1"]
        if status is not None and status != self.shown:
            self.shown = status
            lines.append(f"STATUS={_one_line(status)}")
        self.send(*lines)

    def status(self, text: str) -> None:
        """``STATUS=``, only when it says something new."""
        if text != self.shown:
            self.shown = text
            self.send(f"STATUS={_one_line(text)}")

    def reloading(self) -> None:
        """``RELOADING=1``, stamped with the monotonic clock as systemd asks."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={int(self.clock() * 1_000_000)}")

    def stopping(self) -> None:
        """``STOPPING=1``, once."""
        if not self.stopping_sent:
            self.stopping_sent = True
            self.send("STOPPING=1")

    def next_ping(self, healthy: bool) -> float | None:
        """When the next ``WATCHDOG=1`` is due (a ``clock()`` time): half the interval
        after the last; at once for the first; None while unhealthy, or without a
        watchdog (no timer at all)."""
        if self.watchdog is None or not healthy or self.stopping_sent:
            return None
        if self.last_look is None:
            return self.since
        return self.last_look + self.watchdog / 2

    def ping(self, vouched: bool = True) -> None:
        """A ping's time has come: ``WATCHDOG=1`` if the group is ``vouched`` for now;
        either way the next look is half an interval on."""
        self.last_look = self.clock()
        if vouched:
            self.send("WATCHDOG=1")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_STATUS]


def send_datagram(where: str | bytes, data: bytes) -> None:
    """One datagram to ``where``; lost (never blocking, never raising) if the manager
    does not take it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(data, socket.MSG_DONTWAIT, where)
        except OSError:
            pass
