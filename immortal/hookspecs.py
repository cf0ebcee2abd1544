"""The monitor contract: the pluggy hook specifications of project ``"immortal"``.

A monitor is any object with some of these ``monitor_*`` functions: a module, an instance
of a plain class, or (most convenient) a subclass of :class:`immortal.Monitor`, whose short
method names (``setup``, ``stdout``...) are wired to these hooks. Names are matched as
pytest does, so no marker is needed; an unknown ``monitor_*`` name is an error.

``instance``: in a group running several instances of its program (``workers``), which
one the output or event is about (0, 1...); None in a group of one. An implementation may
leave it out, as any argument (a ``Monitor`` reads ``self.instance`` instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pluggy

from .hookimpls import PROJECT  # the hooks' names live there, beside the pump's finder

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def monitor_check(options: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Validate options in the caller, before anything detaches; raise to refuse.

    Return the options to use (e.g. with paths made absolute), or None to keep them.
    """


@hookspec
def monitor_setup(why: str, message: str | None) -> None:
    """A pump starts: why is "pump start", "pump restart" or "daemon restart"."""


@hookspec
def monitor_spawn(pid: int, instance: int | None) -> None:
    """The first target of the group was spawned."""


@hookspec
def monitor_adopt(pid: int, instance: int | None) -> None:
    """After a "pump restart" or "daemon restart" setup: the new pump took over the target
    that was already running, with this pid (no spawn event comes for it)."""


@hookspec
def monitor_respawn(pid: int, why: str, instance: int | None) -> None:
    """A later target was spawned; ``why`` is "exit" (the previous one died) or "manual"
    (a restart was asked for)."""


@hookspec
def monitor_exit(status: Any, instance: int | None) -> None:
    """A target died; ``status`` is an :class:`immortal.ExitStatus`."""


@hookspec
def monitor_stdout(line: bytes, offset: int, instance: int | None) -> None:
    """One line the target wrote to stdout, without its newline. ``offset`` is where it
    starts in the group's stdout stream (in a group of several, that instance's stream),
    counted across pumps and targets: a pump killed in
    the instant after a monitor returned from a line delivers it again, at the same offset
    (each monitor's progress is recorded after each call, so nothing else is repeated),
    unless the monitor answers ``monitor_delivered``."""


@hookspec
def monitor_stderr(line: bytes, offset: int, instance: int | None) -> None:
    """One line the target wrote to stderr, as ``monitor_stdout``."""


@hookspec
def monitor_lines(stream: str, lines: list[bytes], offset: int,
                  instance: int | None) -> None:
    """Several lines of one stream ("stdout" or "stderr") at once; ``offset`` is the first
    one's. A monitor that has this hook (and not ``monitor_block``) gets its lines this way
    only (not through ``monitor_stdout``/``monitor_stderr``), in one call per read of the
    pipe."""


@hookspec
def monitor_block(stream: str, data: bytes, offset: int, instance: int | None) -> None:
    """Several lines of one stream at once as one ``bytes``: each line followed by a newline,
    ``data`` ending with one; ``offset`` is the first line's. A piece of an overlong line, or
    a final line the target did not end, comes alone, with a newline added. A monitor that
    has this hook gets its output this way only (not through ``monitor_lines``,
    ``monitor_stdout`` or ``monitor_stderr``): the lines are then never split apart unless
    another monitor of the group wants them so."""


@hookspec(firstresult=True)
def monitor_position() -> int | None:
    """Optional, with ``monitor_delivered``: where this monitor's output stands (a
    non-negative integer below 2**64 of its own meaning, such as the size of its file), or
    None. Called before each output call; the journal keeps it for ``monitor_delivered``."""


@hookspec(firstresult=True)
def monitor_delivered(stream: str, lines: list[bytes], offset: int,
                      position: int | None, instance: int | None) -> int | None:
    """Optional: in a new pump, before ``monitor_setup``: the dead pump was killed in an
    output call to this monitor (or just after it, before recording it). ``lines`` are
    that call's lines of ``stream``, ``offset`` the first one's, ``position`` what
    ``monitor_position`` returned before the call (None without it). Return how many of
    ``lines``, from the first, the monitor's output already holds (True: all, False:
    none): those are not handed over again; None when it cannot tell: all are (at least
    once)."""


@hookspec
def monitor_message(message: Any) -> None:
    """A JSON value the target sent on its message channel (``channel=True``)."""


@hookspec
def monitor_dropped(count: int) -> None:
    """Backpressure "drop": ``count`` of this monitor's lines were skipped since the last
    call, its queue being full (at most one call a second)."""


@hookspec
def monitor_reopen() -> None:
    """Reopen files (``immortal reopen NAME``, after an external logrotate)."""


@hookspec
def monitor_shutdown(reason: str) -> None:
    """The group ends: "stop", "fatal: ...", or a final exit code."""
