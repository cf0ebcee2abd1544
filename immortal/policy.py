"""The ``RestartPolicy``: when and how fast a target that died is restarted, checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .checks import check_number
from .errors import InvalidType, unknown_name
from .records import Record, asdict

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


class RestartPolicy(Record):
    """When and how fast the pump restarts a target that died.

    - A target that ran at least ``min_uptime`` seconds is restarted at once, and the crash
      counter is reset (a stable run forgives earlier crashes).
    - A target that died sooner is restarted after ``backoff_initial * backoff_factor**(n-1)``
      seconds for its n-th quick death in a row, capped at ``backoff_max``, each delay spread
      by ±``jitter`` (a fraction) so that many groups do not restart in lockstep.
      ``backoff_initial=0`` switches backoff off, but not the floor: a quick death is
      always followed by at least 0.1 s (``supervise.QUICK_FLOOR``) before the restart.
      With ``min_uptime=0`` every run counts as stable, and restarts at once.
    - With ``max_restarts`` set, more than that many restarts within ``window`` seconds
      gives up: the group's state becomes ``fatal`` and nothing is spawned again.
    - An exit code in ``final_exit_codes`` means "do not restart": the group stops.
    """

    min_uptime: float = 1.0
    backoff_initial: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    jitter: float = 0.2
    max_restarts: int | None = None
    window: float = 60.0
    final_exit_codes: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        check_number("min_uptime", self.min_uptime, high=86400.0)
        check_number("backoff_initial", self.backoff_initial, high=86400.0)
        check_number("backoff_factor", self.backoff_factor, low=1.0, high=100.0)
        check_number("backoff_max", self.backoff_max, high=86400.0)
        check_number("jitter", self.jitter, high=1.0)
        check_number("max_restarts", self.max_restarts, low=1, high=10**6, integer=True,
                     allow_none=True)
        check_number("window", self.window, low=0.001, high=86400.0 * 365)
        codes = self.final_exit_codes
        if isinstance(codes, (str, bytes)) or not isinstance(codes, (Sequence, set, frozenset)):
            raise InvalidType(f"'final_exit_codes' must be a set of ints in [0, 255] "
                              f"(got {type(codes).__name__}: {codes!r})")
        for code in codes:
            check_number("final_exit_codes", code, high=255, integer=True, items=True)
        object.__setattr__(self, "final_exit_codes", frozenset(codes))

    @classmethod
    def build(cls, value: RestartPolicy | Mapping[str, Any] | None) -> RestartPolicy:
        """A policy from a policy, a mapping of its fields, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise InvalidType(f"'policy' must be a RestartPolicy or a mapping "
                              f"(got {type(value).__name__}: {value!r})")
        known = set(cls._fields)
        for key in value:
            if key not in known:
                raise unknown_name("restart policy field", str(key), known)
        return cls(**value)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["final_exit_codes"] = sorted(self.final_exit_codes)
        return data
