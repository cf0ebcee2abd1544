"""The group's phase from its instances' (``combined``): the words only, so that a command
reading a status imports nothing more (the phases themselves are ``machine.Phase``)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Iterable

FINAL = ("stopped", "fatal")
#: the first of these that an instance is in is the group's, when they differ
PRECEDENCE = ("stopping", "running", "spawning", "restarting", "backoff")


def combined(phases: Iterable[str]) -> str:
    """One instance's own phase; for several, the phase they share, else stopping while
    any stops, running while any runs, then the first of spawning, restarting, backoff;
    once all have ended, fatal if any gave up (none: stopped)."""
    every = [str(phase.value if hasattr(phase, "value") else phase) for phase in phases]
    if not every:
        return "stopped"
    if len(set(every)) == 1:
        return every[0]
    if all(phase in FINAL for phase in every):
        return "fatal" if "fatal" in every else "stopped"
    for phase in PRECEDENCE:
        if phase in every:
            return phase
    return every[0]
