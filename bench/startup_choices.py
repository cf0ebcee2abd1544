"""Measure the start-up choices that trade plainness for speed (see bench/notes.md).

``.venv/bin/python bench/startup_choices.py [RUNS]``: each figure is the time a fresh
interpreter spends running a snippet (measured inside it, so that the interpreter's own
start is left out), as min / median over RUNS runs; and which heavy modules a role or a
command has imported anyway. The machine's load moves the medians: compare within one run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 25
PROBE = """
import time
_t0 = time.perf_counter()
{code}
_t1 = time.perf_counter()
import sys
_rss = [int(line.split()[1]) for line in open('/proc/self/status')
        if line.startswith('VmRSS:')][0]
print(_t1 - _t0, _rss, ' '.join(sorted(m for m in {watched!r} if m in sys.modules)))
"""

# Status, Lock and ExitStatus as the stop/status path defines them, three ways.
STATUS_FIELDS = ["name", "state", "running", "pids", "restarts", "spawned", "last_exit",
                 "next_restart_at", "reason", "strategy", "started_at", "target_started_at",
                 "output", "directory", "start_times", "dropped", "monitors", "stalled",
                 "orphans"]
EXIT_FIELDS = ["code", "signal", "core_dumped", "error", "pid", "uptime", "decision",
               "reason", "delay", "attempt"]


def _declare(base: str, name: str, fields: list[str], decorator: str = "") -> str:
    body = "\n".join(f"    {f}: object = None" for f in fields)
    return f"{decorator}\nclass {name}{base}:\n{body}\n"


def records_variant() -> str:
    return ("from immortal.records import MutableRecord, Record\n"
            + _declare("(MutableRecord)", "Status", STATUS_FIELDS)
            + _declare("(MutableRecord)", "Lock", ["fd"])
            + _declare("(Record)", "ExitStatus", EXIT_FIELDS))


def dataclass_variant() -> str:
    return ("from dataclasses import dataclass\n"
            + _declare("", "Status", STATUS_FIELDS, "@dataclass(slots=True)")
            + _declare("", "Lock", ["fd"], "@dataclass(slots=True)")
            + _declare("", "ExitStatus", EXIT_FIELDS, "@dataclass(frozen=True, slots=True)"))


def slots_variant() -> str:
    """Hand-written classes: __init__, __eq__, __repr__ for each (what records.py writes
    once for all)."""
    out = []
    for name, fields in (("Status", STATUS_FIELDS), ("Lock", ["fd"]),
                         ("ExitStatus", EXIT_FIELDS)):
        args = ", ".join(f"{f}=None" for f in fields)
        mine = ", ".join(f"self.{f}" for f in fields)
        theirs = ", ".join(f"other.{f}" for f in fields)
        out += [f"class {name}:", f"    __slots__ = {tuple(fields)!r}",
                f"    def __init__(self, {args}):",
                *[f"        self.{f} = {f}" for f in fields],
                "    def __eq__(self, other):",
                "        if other.__class__ is not self.__class__:",
                "            return NotImplemented",
                f"        return ({mine},) == ({theirs},)",
                "    def __repr__(self):",
                f"        return '{name}(' + ', '.join(f'{{f}}={{getattr(self, f)!r}}' "
                "for f in self.__slots__) + ')'", ""]
    return "\n".join(out)


def namedtuple_variant() -> str:
    """ExitStatus and Lock only: a namedtuple cannot stand for the mutable Status."""
    return ("from collections import namedtuple\n"
            f"ExitStatus = namedtuple('ExitStatus', {EXIT_FIELDS!r}, "
            f"defaults=[None] * {len(EXIT_FIELDS)})\n"
            "Lock = namedtuple('Lock', ['fd'])\n")


WATCHED = ("typing", "dataclasses", "inspect", "logging", "collections", "enum")


def measure(code: str, warm: str = "") -> tuple[float, float, float, str]:
    times, sizes, loaded = [], [], ""
    for _ in range(RUNS):
        probe = warm + "\n" + PROBE.format(code=code, watched=WATCHED)
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             check=True)
        seconds, rss, *modules = out.stdout.split()
        times.append(float(seconds) * 1000)
        sizes.append(int(rss) / 1024)
        loaded = " ".join(modules)
    return min(times), statistics.median(times), statistics.median(sizes), loaded


def row(label: str, code: str, warm: str = "") -> None:
    low, mid, rss, loaded = measure(code, warm)
    print(f"| {label} | {low:.2f} | {mid:.2f} | {rss:.1f} | {loaded or '-'} |")


def main() -> None:
    print(f"runs: {RUNS}; times in ms (min | median); RSS in MB after (median); modules: "
          f"those of {WATCHED} loaded after")
    print("| snippet | min | median | RSS | loaded after |\n|---|---|---|---|---|")
    row("nothing", "pass")
    row("import typing", "import typing")
    row("import dataclasses", "import dataclasses")
    row("records: Status, Lock, ExitStatus (records.py included)", records_variant(),
        warm="import immortal")
    row("dataclasses(slots=True): the same (dataclasses included)", dataclass_variant())
    row("dataclasses(slots=True): the same, dataclasses loaded before", dataclass_variant(),
        warm="import dataclasses")
    row("hand-written __slots__ classes: the same", slots_variant())
    row("namedtuple: ExitStatus and Lock only", namedtuple_variant())
    for code in ("import immortal.state, immortal.events, immortal.group  # stop, status",
                 "import immortal.supervise", "import immortal.pump  # the pump role",
                 "import immortal.daemon  # the daemon role", "import immortal.cli"):
        row(code, code, warm="import immortal")
    row("setproctitle, its extension alone (_linux.import_title)",
        "from immortal import _linux\n_linux.import_title()", warm="import immortal._linux")
    row("setproctitle, its package (import setproctitle)", "import setproctitle",
        warm="import immortal._linux")


if __name__ == "__main__":
    main()
