"""Readiness: when a target counts as up, so that ``start()`` returns then, or fails.

A mode says what "ready" means (``parse`` checks it in the caller):

- ``spawn``: once spawned (what ``start()`` waited for before readiness existed);
- ``uptime:S``: alive S seconds (the default, ``uptime:1``, as supervisord's
  ``startsecs=1``);
- ``line:REGEX``: a line of its stdout matches (``re.search`` on the decoded line);
- ``port:N``: a TCP connection to 127.0.0.1:N succeeds (plain ``port`` parses, and the
  caller's checks refuse it: ``request.check_ready``);
- ``notify``: it sends ``READY=1`` over the sd_notify socket (``notify.py``).

:class:`Readiness` follows one target: a pure object fed with what happens to it (spawned
at a time, a line, a notify datagram, a probe's result, its death, the clock), answering
waiting, ready or failed, and when it next wants the clock. The pump holds one per target.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping

from .errors import InvalidSpec, InvalidType, UnknownName, did_you_mean
from .records import Record

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from .events import ExitStatus

SPAWN, UPTIME, LINE, PORT, NOTIFY = "spawn", "uptime", "line", "port", "notify"
KINDS = (SPAWN, UPTIME, LINE, PORT, NOTIFY)
FORMS = ("spawn", "uptime:S", "line:REGEX", "port", "port:N", "notify")
DEFAULT = "uptime:1"
ENV = "IMMORTAL_READY"  #: the operator's knob: the mode of a start() that names none

WAITING, READY, FAILED = "waiting", "ready", "failed"
TAIL = 10  #: stderr lines kept while a target is not ready, for the error that says why
LINE_MAX = 300  #: characters kept of each of those lines
# A port is probed at once, then again after a delay that doubles up to a ceiling: a
# server that binds quickly is seen quickly, one that takes its time costs few probes.
PROBE_FIRST = 0.01
PROBE_MAX = 0.25


class Mode(Record):
    """A readiness mode, checked: ``str(mode)`` is its canonical form."""

    kind: str
    seconds: float = 0.0  #: uptime
    pattern: str | None = None  #: line
    port: int | None = None  #: port (None: plain ``port``, refused by the caller's checks)

    def __str__(self) -> str:
        if self.kind == UPTIME:
            return f"uptime:{self.seconds:g}"
        if self.kind == LINE:
            return f"line:{self.pattern}"
        if self.kind == PORT and self.port is not None:
            return f"port:{self.port}"
        return self.kind


def parse(value: object, what: str = "'ready'") -> Mode:
    """The mode ``value`` names; ``InvalidType``/``InvalidSpec``/``UnknownName`` naming
    ``what`` (the field, or the environment variable) otherwise."""
    if isinstance(value, Mode):
        return value
    if not isinstance(value, str):
        raise InvalidType(f"{what} must be a str, one of {', '.join(FORMS)} "
                          f"(got {type(value).__name__}: {value!r})")
    kind, colon, rest = value.partition(":")
    if kind not in KINDS:
        raise UnknownName(f"{what}: unknown readiness mode {kind!r}"
                          f"{did_you_mean(kind, KINDS)}; valid: {', '.join(FORMS)}")
    if kind == UPTIME:
        return Mode(UPTIME, seconds=_seconds(rest, colon, what))
    if kind == LINE:
        if not rest:
            raise InvalidSpec(f"{what} 'line:' needs a regular expression after the colon, "
                              f"as 'line:listening on' (got {value!r})")
        try:
            re.compile(rest)
        except re.error as exc:
            raise InvalidSpec(f"{what} {value!r}: not a regular expression ({exc})") from None
        return Mode(LINE, pattern=rest)
    if kind == PORT:
        return Mode(PORT, port=_port(rest, what) if colon else None)
    if colon:
        raise InvalidSpec(f"{what} {kind!r} takes nothing after it (got {value!r})")
    return Mode(kind)


def _seconds(text: str, colon: str, what: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not colon or not 0 <= seconds <= 86400:  # NaN fails the comparison too
        raise InvalidSpec(f"{what} 'uptime' needs seconds in [0, 86400] after a colon, as "
                          f"'uptime:1' (got {'uptime' + colon + text!r})")
    return seconds


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidSpec(f"{what} 'port:N' needs a TCP port in [1, 65535] (got "
                          f"{'port:' + text!r})")
    return int(text)


class Readiness:
    """Whether one target is ready: ``state`` is WAITING, READY or FAILED (final both),
    ``reason`` says why it failed, ``exit`` how it died if it did, ``stderr`` its last
    lines on stderr while it was waiting, ``notice`` its last ``STATUS=`` text."""

    def __init__(self, mode: Mode, timeout: float) -> None:
        self.mode = mode
        self.timeout = timeout
        self.state = WAITING
        self.spawned_at: float | None = None
        self.reason: str | None = None
        self.exit: ExitStatus | None = None
        self.notice: str | None = None
        self.stderr: deque[str] = deque(maxlen=TAIL)
        self._pattern = re.compile(mode.pattern) if mode.pattern is not None else None
        self._probe_at: float | None = None
        self._interval = PROBE_FIRST

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def waiting(self) -> bool:
        return self.state == WAITING

    # ----------------------------------------------------------------- events
    def spawned(self, now: float) -> None:
        """The target was spawned at ``now`` (or, adopted, started then)."""
        self.spawned_at = now
        if self.mode.kind == SPAWN:
            self.state = READY
        elif self.mode.kind == PORT:
            self._probe_at = now

    def known_ready(self) -> None:
        """Ready already (a target that ran before this pump: adopted)."""
        if self.state == WAITING:
            self.state = READY

    def line(self, stream: str, text: str) -> None:
        """A whole line of the target's ``stream`` ("stdout" or "stderr"), newline off."""
        if self.state != WAITING:
            return
        if stream == "stderr":
            self.stderr.append(text[:LINE_MAX])
        elif self._pattern is not None and self._pattern.search(text):
            self.state = READY

    def notified(self, fields: Mapping[str, str]) -> None:
        """An sd_notify datagram's assignments, from the target (its sender checked)."""
        if "STATUS" in fields:
            self.notice = fields["STATUS"]
        if self.state == WAITING and self.mode.kind == NOTIFY and fields.get("READY") == "1":
            self.state = READY

    def probed(self, ok: bool, now: float) -> None:
        """The result of a probe (``wants_probe``) made at ``now``."""
        if self.state != WAITING:
            return
        if ok:
            self.state = READY
            return
        self._probe_at = now + self._interval
        self._interval = min(PROBE_MAX, self._interval * 2)

    def exited(self, status: ExitStatus, final: bool = False) -> None:
        """The target died (whether or not it had been ready); ``final``: on one of its
        ``final_exit_codes``, its work done (a job quicker than its readiness), which counts
        as ready: the start succeeded, and the group ends as that code says."""
        if self.state != WAITING:
            return
        if final:
            self.state = READY
            return
        self.state = FAILED
        self.exit = status
        self.reason = f"its target {status} before it was ready (ready={self.mode})"

    def tick(self, now: float) -> None:
        """The clock: an uptime reached, or the time limit passed."""
        if self.state != WAITING or self.spawned_at is None:
            return
        if self.mode.kind == UPTIME and now >= self.spawned_at + self.mode.seconds:
            self.state = READY
        elif now >= self.spawned_at + self.timeout:
            self.state = FAILED
            self.reason = (f"its target was not ready within {self.timeout:g} s "
                           f"(ready={self.mode}, ready_timeout={self.timeout:g})")

    # ----------------------------------------------------------------- questions
    def wants_probe(self, now: float) -> bool:
        """Whether a probe of the port is due at ``now``."""
        return self.state == WAITING and self._probe_at is not None and now >= self._probe_at

    def deadline(self) -> float | None:
        """When ``tick`` (and a due probe) should next be called; None: not before another
        event."""
        if self.state != WAITING or self.spawned_at is None:
            return None
        times = [self.spawned_at + self.timeout]
        if self.mode.kind == UPTIME:
            times.append(self.spawned_at + self.mode.seconds)
        if self._probe_at is not None:
            times.append(self._probe_at)
        return min(times)
