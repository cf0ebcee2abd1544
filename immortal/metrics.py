"""``immortal metrics [NAME]``: the groups' figures as OpenMetrics text, from their state
files (``status.json``), for a scraper that runs a command (node_exporter's textfile
collector, a cron job writing a ``.prom`` file, an exec probe). No server stays resident.

Each group is labelled ``group``, each instance ``instance`` (``"0"`` for a group of one)
and, in a group of several programs, ``program`` (each program numbers its instances from
0, so without it two samples would share their labels, which a scraper refuses):

- ``immortal_up``: a supervisor of the group runs (1) or not (0);
- ``immortal_state``: the phase of each instance's restart machine (a stateset: one sample
  per phase, 1 for the phase it is in);
- ``immortal_ready``: the instance's current target is ready;
- ``immortal_restarts_total``, ``immortal_spawned_total``: counters, per instance;
- ``immortal_uptime_seconds``: how long the instance's current target has run (only for a
  running target);
- ``immortal_dropped_lines_total``: lines each monitor lost to ``backpressure="drop"``;
- ``immortal_stalled``: the pump no longer drains the output (``stall.py``).

The text follows the OpenMetrics exposition format: families not interleaved, counters'
samples suffixed ``_total``, label values escaped, ``# EOF`` last.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .state import Status

PHASES = ("spawning", "running", "backoff", "restarting", "stopping", "stopped", "fatal")

#: name, type, help, unit (or None)
FAMILIES = (
    ("immortal_up", "gauge", "Whether a supervisor of the group runs.", None),
    ("immortal_state", "stateset", "The phase of the instance's restart machine.", None),
    ("immortal_ready", "gauge", "Whether the instance's current target is ready.", None),
    ("immortal_restarts", "counter", "Restarts of the instance's target.", None),
    ("immortal_spawned", "counter", "Targets the instance has spawned.", None),
    ("immortal_uptime_seconds", "gauge", "How long the instance's current target has run.",
     "seconds"),
    ("immortal_dropped_lines", "counter",
     "Lines a monitor lost to backpressure drop.", None),
    ("immortal_stalled", "gauge", "Whether the pump no longer drains the output.", None),
)

Sample = tuple[str, dict[str, str], float]  #: (family, labels, value)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def samples(status: Status, now: float) -> list[Sample]:
    """The samples of one group, as ``now`` (wall clock) sees its state."""
    group = {"group": status.name}
    found: list[Sample] = [("immortal_up", group, 1 if status.running else 0),
                           ("immortal_stalled", group, 1 if status.stalled else 0)]
    if status.instances:
        each = [(e.program, str(e.instance), e.state, e.ready, e.restarts, e.spawned,
                 e.started_at if e.pid else None) for e in status.instances]
    else:
        each = [(None, "0", status.state, status.ready, status.restarts, status.spawned,
                 status.target_started_at if "target" in status.pids else None)]
    for program, instance, state, ready, restarts, spawned, started in each:
        labels = {**group, **({"program": program} if program else {}), "instance": instance}
        for phase in PHASES:
            found.append(("immortal_state", {**labels, "immortal_state": phase},
                          1 if phase == state else 0))
        found += [("immortal_ready", labels, 1 if ready and status.running else 0),
                  ("immortal_restarts", labels, restarts),
                  ("immortal_spawned", labels, spawned)]
        if started is not None and status.running and state == "running":
            found.append(("immortal_uptime_seconds", labels, max(0.0, now - started)))
    for monitor, counts in sorted(status.monitors.items()):
        found.append(("immortal_dropped_lines", {**group, "monitor": monitor},
                      int(counts.get("dropped") or 0)))
    return found


def render(statuses: Iterable[Status], now: float) -> str:
    """OpenMetrics text for these groups: each family once, its samples together."""
    by_family: dict[str, list[Sample]] = {name: [] for name, _, _, _ in FAMILIES}
    for status in statuses:
        for sample in samples(status, now):
            by_family[sample[0]].append(sample)
    lines = []
    for name, kind, text, unit in FAMILIES:
        lines += [f"# TYPE {name} {kind}", f"# HELP {name} {text}"]
        if unit:
            lines.append(f"# UNIT {name} {unit}")
        suffix = "_total" if kind == "counter" else ""
        for _, labels, value in by_family[name]:
            shown = ",".join(f'{key}="{escape(value_)}"' for key, value_ in labels.items())
            lines.append(f"{name}{suffix}{{{shown}}} {_number(value)}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
