"""A memory limit: ``memory_limit``, ``memory_window``, ``memory_children``.

A target whose resident memory (RSS, ``/proc/PID/statm``; with ``memory_children`` its
descendants' added, those still below it in the process tree) stays over ``memory_limit``
for ``memory_window`` seconds is restarted gracefully (TERM, the grace period, KILL, a new
target), with the reason ``memory`` in its restart record. The pump reads the memory every
:func:`interval` seconds while a target runs, and only when the option is set: a group
without it pays no wake-up.

The limit is bytes, an int or a str with a unit: ``"300M"``, ``"1.5G"``, ``"512K"``
(powers of 1024; ``KB``, ``MiB``... read the same). :class:`MemoryWatch` is pure: it is
given the readings and the time.
"""

from __future__ import annotations

import math
import re

from . import _linux
from .errors import InvalidSpec, InvalidType

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_WINDOW = 10.0  #: seconds over the limit before the restart
MAX_INTERVAL = 1.0  #: seconds between two readings, at most
MIN_INTERVAL = 0.1
REASON = "memory"  #: the restart record's reason

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*\Z", re.I)


def parse_size(field: str, value: object) -> int:
    """Bytes, from an int or a str such as ``"300M"``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidType(f"{field!r} must be a size: bytes, or a str such as '300M' "
                          f"(got {type(value).__name__}: {value!r})")
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise InvalidSpec(f"{field!r} must be a size such as '300M', '1.5G' or '512K' "
                              f"(powers of 1024), or a number of bytes (got {value!r})")
        number = float(match.group(1)) * _UNITS[match.group(2).upper()]
    else:
        number = float(value)
    if math.isnan(number) or number < 1 << 20 or number > 1 << 50:
        raise InvalidSpec(f"{field!r} must be from 1M to 1P (got {value!r})")
    return int(number)


def check(limit: object, window: object,
          children: object) -> tuple[int | None, float, bool]:
    """The limit in bytes (None: no limit), the window in seconds, whether descendants
    count."""
    if not isinstance(children, bool):
        raise InvalidType(f"'memory_children' must be a bool (got {type(children).__name__}: "
                          f"{children!r})")
    if limit is None:
        if window is not None or children:
            given = "memory_window" if window is not None else "memory_children"
            raise InvalidSpec(f"{given!r} needs 'memory_limit' (got {given} without a limit)")
        return None, DEFAULT_WINDOW, False
    seconds = DEFAULT_WINDOW
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, (int, float)) \
                or window != window:
            raise InvalidType(f"'memory_window' must be a number of seconds (got "
                              f"{type(window).__name__}: {window!r})")
        if not 0 <= window <= 86400:
            raise InvalidSpec(f"'memory_window' must be from 0 to 86400 seconds "
                              f"(got {window!r})")
        seconds = float(window)
    return parse_size("memory_limit", limit), seconds, children


def interval(window: float) -> float:
    """Seconds between two readings: a second, or a quarter of a shorter window (at
    least ``MIN_INTERVAL``)."""
    return max(MIN_INTERVAL, min(MAX_INTERVAL, window / 4))


def measure(pid: int, children: bool) -> int | None:
    """The memory of ``pid`` in bytes (and its descendants', ``children``); None if gone."""
    total = _linux.rss(pid)
    if total is None or not children:
        return total
    return total + sum(_linux.rss(kid) or 0 for kid in _linux.descendants(pid))


class MemoryWatch:
    """Which targets have stayed over the limit for the window (pure: the pump reads the
    memory and the clock)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.every = interval(window)
        self.over: dict[int, float] = {}  #: since when each one is over the limit
        self.next_at: float | None = None  #: the next reading, while a target runs

    def deadline(self, running: bool, now: float) -> float | None:
        """When to read next: None while no target runs (no wake-up)."""
        if not running:
            self.next_at = None
            self.over.clear()
            return None
        if self.next_at is None:
            self.next_at = now + self.every
        return self.next_at

    def readings(self, now: float, found: Mapping[int, int | None]) -> list[int]:
        """The memory of each running target (by key) read at ``now``: the keys to
        restart, over the limit for the whole window."""
        self.next_at = now + self.every
        restart = []
        for key in list(self.over):
            if key not in found:
                del self.over[key]  # not running any more (restarted, stopped)
        for key, size in found.items():
            if size is None or size <= self.limit:
                self.over.pop(key, None)
                continue
            since = self.over.setdefault(key, now)
            if now - since >= self.window:
                del self.over[key]
                restart.append(key)
        return restart
