"""A first benchmark: start latency and recovery time, immortal against a bare loop.

Not a test: run it by hand (``.venv/bin/python bench/quick.py [--rounds N]``); it writes
its figures to ``bench/results-quick.md``. Issue 6 grows this into the full comparison.

- start: ``immortal.start()`` until it returns (the target has been spawned), and
  ``python -c pass`` as the floor of any fresh interpreter;
- recovery: SIGKILL of a target that has run > 1 s until the next target's pid shows in
  ``status.json`` (polled every 0.5 ms, so the figure includes up to that much slack).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import immortal  # noqa: E402

SLEEPER = [sys.executable, "-c", "import time; time.sleep(3600)"]


def measure_start(rounds: int) -> tuple[list[float], list[float]]:
    bare, ours = [], []
    for i in range(rounds):
        begun = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - begun)
        begun = time.perf_counter()
        group = immortal.start(SLEEPER[0], SLEEPER[1:], name=f"bench-start-{i}",
                               stop_timeout=2)
        ours.append(time.perf_counter() - begun)
        group.stop()
    return bare, ours


def measure_recovery(rounds: int) -> list[float]:
    group = immortal.start(SLEEPER[0], SLEEPER[1:], name="bench-recovery", stop_timeout=2)
    times = []
    try:
        for _ in range(rounds):
            time.sleep(1.1)  # a stable run: the restart is immediate, no backoff
            old = group.pids["target"]
            begun = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while group.status().pids.get("target") in (None, old):
                if time.monotonic() > deadline:
                    raise TimeoutError("no new target within 10 s")
                time.sleep(0.0005)
            times.append(time.perf_counter() - begun)
    finally:
        group.stop()
    return times


def row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"| {name} | {statistics.median(ms):.1f} | {min(ms):.1f} – {max(ms):.1f} "
            f"| {len(ms)} |")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imb-", dir="/tmp") as home:
        os.environ["IMMORTAL_HOME"] = home
        bare, ours = measure_start(ns.rounds)
        recovery = measure_recovery(ns.rounds)
    lines = [
        "# Quick benchmark", "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"command: `python bench/quick.py --rounds {ns.rounds}`", "",
        "| what | median ms | min – max ms | rounds |", "|---|---|---|---|",
        row("`python -c pass` (floor)", bare),
        row("`immortal.start()` until the target is spawned (daemon)", ours),
        row("recovery after SIGKILL of a stable target", recovery),
    ]
    out = HERE / "results-quick.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
