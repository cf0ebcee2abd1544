"""The performance benchmark: immortal against a bare baseline and the anchors, in one run.

Not a test. Run it with the project's venv (``.venv/bin/python bench/run.py --quick``); it
writes ``docs/benchmarks.md`` (and the raw figures to ``bench/results/<mode>.json``). It
measures a regular install of this checkout (``pip install .``), made in a directory of the
run's own under ``/tmp`` and removed when it ends: two runs at once, of this checkout or of
another, never measure each other's code. ``--editable`` measures the project's venv as it is.

- ``--quick``: fewer rounds and smaller volumes; under two minutes.
- ``--anchors``: install the anchors (supervisor and circus into the venv
  ``/tmp/bench-anchors``, PM2 with ``npm install --prefix /tmp/bench-pm2 pm2``) where they
  are missing, and measure them too. Without it, anchors already installed are measured and
  missing ones are skipped with a note; but the rolling row installs PM2 itself when it is
  missing (its anchor, ``pm2 reload``: bench/pm2roll.py), and says so when it cannot.
- ``--profile``: also profile where start-up and restart time goes (``-X importtime`` of
  each role, an ``strace`` timeline of ``immortal run``, ``py-spy`` on a crash-looping pump
  and daemon) and put it in the report.
- ``--only ROW,...``: measure only some rows (for working on one). The figures go to a file
  of their own, ``bench/results/ROW[-ROW...]-only[-quick]-<UTC time>.json``;
  ``docs/benchmarks.md`` and ``bench/results/<mode>.json`` (the last whole run's) are left as
  they are, and a report (of those rows alone) is written only where ``--output`` says.
- ``--dry-run``: say what the run would measure and where it would install and write, and
  stop there (nothing installed, started or written).

The target is ``bench/target.c``, compiled with gcc at bench time: it writes a
CLOCK_MONOTONIC stamp to a FIFO as its first act, so recovery is measured from a death to the
first instruction of the successor. Every process the bench starts is stopped before it
exits: groups with ``stop()`` (``kill()`` if that fails), the anchors with their own
shutdown and then SIGKILL, and last of all anything left whose command line names the bench's
temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"  #: the figures of each run, as JSON
REPORT = ROOT / "docs" / "benchmarks.md"  #: the report of the last whole run
INSTALL_PREFIX = "bench-immortal-"  #: the run's own install: /tmp/bench-immortal-XXXXXXXX
EDITABLE = "--editable" in sys.argv


def _run_installed(argv: list[str]) -> int:
    """Run this bench again, with ``argv``, under a regular (``pip install .``) install of
    this checkout in a directory of this run's own, removed once that run ends (however it
    ends: this process waits for it); its exit code.

    The project's venv is an editable install, whose import hook costs every interpreter
    ≈ 8 ms of ``site`` (it imports ``pathlib``, ``urllib``...): a cost of the development
    set-up, not of immortal as users install it (the README's first command). ``--editable``
    measures the project's venv as it is. A directory per run: a shared one would have a
    run measure the code another run (of another checkout) installed there meanwhile.
    """
    where = Path(tempfile.mkdtemp(prefix=INSTALL_PREFIX, dir="/tmp"))
    python = where / "bin" / "python"
    try:
        log(f"installing this checkout into {where} (removed at the end)")
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True)
        run = subprocess.Popen([str(python), str(Path(__file__).resolve()), *argv],
                               env={**os.environ, "IMMORTAL_BENCH_INSTALLED": str(where)})
        # Ctrl-C reaches the run too (one process group) and it stops what it started:
        # wait for it. A SIGTERM to this process alone is passed on.
        signal.signal(signal.SIGINT, lambda number, frame: None)
        signal.signal(signal.SIGTERM, lambda number, frame: run.send_signal(number))
        code = run.wait()
        return 128 - code if code < 0 else code  # killed by a signal: as a shell says it
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _interrupted(number: int, frame: Any) -> None:
    """SIGTERM: the run ends as on Ctrl-C, stopping every process it started."""
    raise KeyboardInterrupt(f"signal {number}")


sys.path.insert(0, str(HERE))
if EDITABLE and str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

import anchors  # noqa: E402
import busylog  # noqa: E402
from common import (  # noqa: E402
    Stamps, alive, build_target, cpu_ns, cpu_ticks_ms, pss_kb, wakeups)

import immortal  # noqa: E402
from immortal import control  # noqa: E402

PY = sys.executable
SCRIPT = str(Path(PY).parent / "immortal")  # the console script of this interpreter's venv
ROWS = ("recovery", "crash", "start", "relay", "busylog", "idle", "memory", "killed", "stop",
        "rolling", "instance")
LINE = 100  # bytes per relayed line, newline included


class Mode:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.name = "quick" if quick else "full"
        self.rounds = 8 if quick else 16  # recovery rounds, half exits and half SIGKILLs
        self.anchor_rounds = 2 if quick else 6
        self.crash_windows = 2 if quick else 4
        self.crash_window = 1.0 if quick else 2.0
        self.cpu_window = 5.0 if quick else 20.0
        self.idle_window = 5.0 if quick else 20.0
        self.start_rounds = 4 if quick else 10
        self.relay_mb = 20 if quick else 200
        self.relay_rounds = 2 if quick else 3
        self.busylog_lines = 200_000 if quick else 2_000_000  # bench/busylog.py
        self.busylog_rounds = 2 if quick else 5
        self.groups = 10 if quick else 50
        self.killed_rounds = 3 if quick else 8


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def ms(ns: int | float) -> float:
    return ns / 1e6


# ------------------------------------------------------------------ the subjects


class Bench:
    def __init__(self, mode: Mode, work: Path, use_anchors: list[anchors.Anchor],
                 target: Path) -> None:
        self.mode = mode
        self.work = work
        self.target = str(target)
        self.anchors = use_anchors
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.extra: dict[str, Any] = {}
        self.notes: list[str] = []
        self.bare: list[subprocess.Popen] = []
        self.stamps: dict[str, Stamps] = {}

    def fifo(self, subject: str, key: str) -> Stamps:
        name = f"{subject}-{key}"
        if name not in self.stamps:
            self.stamps[name] = Stamps(self.work / f"{name}.fifo")
        return self.stamps[name]

    def add(self, row: str, subject: str, value: float) -> None:
        self.samples.setdefault(row, {}).setdefault(subject, []).append(value)

    # immortal
    def im_start(self, name: str, args: list[str], **kwargs: Any) -> immortal.Group:
        kwargs.setdefault("stop_timeout", 5)
        # The bench measures the spawn (and its crash loops start by dying): not readiness.
        kwargs.setdefault("ready", "spawn")
        return immortal.start(self.target, args, name=name, **kwargs)

    @staticmethod
    def im_pids(group: immortal.Group) -> list[int]:
        """immortal's own processes of ``group``: daemon, pump, its monitors' own processes
        (a monitor without ``delivered``) and pipe holder."""
        from immortal import _linux, orphans

        pids = group.status().pids
        hosted = [pid for pid in (_linux.children(pids["pump"]) if "pump" in pids else [])
                  if (_linux.shown_title(pid) or "").startswith("immortal: monitor ")]
        return [*(pids[r] for r in ("daemon", "pump") if r in pids), *hosted,
                *(pid for pid, _ in orphans.holders(group.directory))]

    # the bare baseline: a shell loop
    def bare_loop(self, args: list[str], stdout: Any = subprocess.DEVNULL) -> subprocess.Popen:
        popen = subprocess.Popen(["sh", "-c", 'while :; do "$@"; done', "sh", self.target, *args],
                                 stdin=subprocess.DEVNULL, stdout=stdout,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        self.bare.append(popen)
        return popen

    def bare_stop(self, popen: subprocess.Popen) -> None:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        popen.wait()
        if popen in self.bare:
            self.bare.remove(popen)


# ------------------------------------------------------------------ recovery, idle, memory, killed


def recovery_idle_memory_killed(b: Bench, rows: set[str]) -> None:
    """One stable target per subject, all running at once; deaths one at a time."""
    subjects: dict[str, dict[str, Any]] = {}
    group = b.im_start("b-rec", ["stamp", str(b.fifo("immortal", "rec").path)])
    subjects["immortal"] = {"stamps": b.fifo("immortal", "rec"), "pids": lambda: b.im_pids(group)}
    loop = b.bare_loop(["stamp", str(b.fifo("bare", "rec").path)])
    subjects["bare loop"] = {"stamps": b.fifo("bare", "rec"), "pids": lambda: [loop.pid]}
    for anchor in b.anchors:
        subjects[anchor.name] = {"stamps": b.fifo(anchor.name, "rec"),
                                 "pids": anchor.supervisor_pids, "anchor": True}
    for name, s in subjects.items():
        if name in ("immortal", "bare loop"):
            s["current"] = s["stamps"].wait("S", 15)[1]
        else:
            s["current"] = b.extra["anchor_cold"][name]["stamp"]
    try:
        if "recovery" in rows:
            # immortal and the bare loop take turns first, on a machine where no anchor has
            # a recovery pending; then the anchors (a slow one's pending recovery overlaps
            # the other anchors' turns).
            _recovery(b, {n: s for n, s in subjects.items() if not s.get("anchor")})
            _recovery(b, {n: s for n, s in subjects.items() if s.get("anchor")})
        if "idle" in rows:
            _idle(b, subjects)
        if "memory" in rows:
            _memory(b, subjects)
        if "killed" in rows:
            _killed(b, group, subjects["immortal"]["stamps"])
    finally:
        group.stop()
        b.bare_stop(loop)


def _recovery(b: Bench, subjects: dict[str, dict[str, Any]]) -> None:
    """Each subject's target, once it has run > 1 s, exits (SIGUSR1: it stamps and exits 0)
    or is SIGKILLed; the time until its successor's first instruction. Subjects take turns;
    a slow subject's pending recovery overlaps the others' turns."""
    m = b.mode
    if not subjects:
        return
    log(f"recovery of {', '.join(subjects)}: half exits, half SIGKILLs")
    wanted = {n: (m.anchor_rounds if s.get("anchor") else m.rounds) for n, s in subjects.items()}
    done = {n: 0 for n in subjects}
    pending: dict[str, tuple[str, int, int]] = {}  # name -> (how, base ns, old pid)
    deadline = time.monotonic() + 60 + 12 * max(wanted.values())
    while any(done[n] < wanted[n] for n in subjects) or pending:
        if time.monotonic() > deadline:
            b.notes.append("recovery: gave up waiting for some successors (60 s + 12 s/round)")
            break
        progressed = False
        for name, s in subjects.items():
            if name in pending:
                got = s["stamps"].read(0)
                if got:
                    _settle(b, name, s, pending, done, got)
                    progressed = progressed or name not in pending
                continue
            if done[name] >= wanted[name]:
                continue
            _, pid, started = s["current"]
            if time.monotonic_ns() - started < 1_100_000_000:
                continue
            how = "exit" if done[name] % 2 == 0 else "kill"
            s["stamps"].clear()
            if how == "kill":
                base = time.monotonic_ns()
                os.kill(pid, signal.SIGKILL)
            else:
                base = 0  # the target's own "E" stamp, just before it exits
                os.kill(pid, signal.SIGUSR1)
            pending[name] = (how, base, pid)
            # A fast subject gets its successor before the next subject's turn; a slow
            # one's recovery stays pending and overlaps the others' turns.
            end = time.monotonic() + 0.05
            while name in pending and time.monotonic() < end:
                got = s["stamps"].read(max(0.0, end - time.monotonic()))
                if got:
                    _settle(b, name, s, pending, done, got)
            progressed = True
        if not progressed:
            time.sleep(0.005)


def _settle(b: Bench, name: str, s: dict[str, Any], pending: dict, done: dict,
            got: list[tuple[str, int, int]]) -> None:
    """Take the stamps of a pending recovery: the old target's "E", the successor's "S"."""
    how, base, old = pending[name]
    for kind, pid, ns in got:
        if kind == "E" and pid == old and how == "exit" and base == 0:
            base = ns
        elif kind == "S" and base:
            b.add(f"recovery {how}", name, ms(ns - base))
            s["current"] = (kind, pid, ns)
            del pending[name]
            done[name] += 1
            return
    pending[name] = (how, base, old)


def _idle(b: Bench, subjects: dict[str, dict[str, Any]]) -> None:
    m = b.mode
    log(f"idle: {m.idle_window:g} s of silent targets")
    time.sleep(1.0)  # let the last recovery settle
    for s in subjects.values():
        s["stamps"].clear()
    before = {}
    for name, s in subjects.items():
        pids = s["pids"]()
        before[name] = (pids, sum(cpu_ns(p) for p in pids), sum(cpu_ticks_ms(p) for p in pids),
                        sum(wakeups(p) for p in pids))
    time.sleep(m.idle_window)
    result = {}
    for name, s in subjects.items():
        pids, c0, t0, w0 = before[name]
        now = s["pids"]()
        if now != pids:
            b.notes.append(f"idle: {name}'s supervisor pids changed during the window")
        restarted = [x for x in s["stamps"].read(0) if x[0] == "S"]
        result[name] = {"cpu_ms": ms(sum(cpu_ns(p) for p in pids) - c0),
                        "ticks_ms": sum(cpu_ticks_ms(p) for p in pids) - t0,
                        "wakeups": sum(wakeups(p) for p in pids) - w0,
                        "pids": len(pids), "restarts": len(restarted)}
    b.extra["idle"] = {"window": m.idle_window, "subjects": result}


def _memory(b: Bench, subjects: dict[str, dict[str, Any]]) -> None:
    m = b.mode
    log(f"memory: PSS of one group, then of {m.groups} groups")
    one = {}
    for name, s in subjects.items():
        pids = s["pids"]()
        one[name] = {"pss_kb": sum(pss_kb(p) for p in pids), "pids": len(pids)}
    status = immortal.attach("b-rec").status()
    one["immortal"]["roles"] = {role: pss_kb(status.pids[role]) for role in ("daemon", "pump")}
    sleeper = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    time.sleep(0.3)
    one["python sleeping (floor of one interpreter)"] = {"pss_kb": pss_kb(sleeper.pid),
                                                         "pids": 1}
    sleeper.kill()
    sleeper.wait()
    many: dict[str, Any] = {}
    groups = []
    try:
        for i in range(m.groups):
            groups.append(b.im_start(f"b-mem-{i}", ["stamp", "-"]))
        time.sleep(0.5)
        per = []
        for g in groups:
            per.append(sum(pss_kb(p) for p in b.im_pids(g)))
        many["immortal"] = {"pss_kb": sum(per), "groups": len(groups),
                            "per_group_kb": [min(per), statistics.median(per), max(per)]}
    finally:
        _stop_groups(groups)
    many["immortal, one group of workers"] = _workers_memory(b, m.groups)
    for anchor in b.anchors:
        try:
            anchor.start("many")
            time.sleep(1.0)
            many[anchor.name] = {"pss_kb": sum(pss_kb(p) for p in anchor.supervisor_pids()),
                                 "groups": m.groups}
            anchor.stop("many")
        except Exception as exc:  # noqa: BLE001 - an anchor's failure is a note, not a crash
            b.notes.append(f"memory: {anchor.name} with {m.groups} programs failed: {exc}")
    b.extra["memory"] = {"one": one, "many": many}


def _workers_memory(b: Bench, count: int) -> dict[str, Any]:
    """PSS of the daemon and pump of one group running ``count`` instances (as many as the
    groups above, and as the anchors' programs)."""
    group = b.im_start("b-mem-workers", ["stamp", "-"], workers=count)
    try:
        time.sleep(0.5)
        return {"pss_kb": sum(pss_kb(p) for p in b.im_pids(group)), "groups": 1,
                "instances": count}
    finally:
        _stop_groups([group])


def _stop_groups(groups: list[immortal.Group]) -> None:
    graces = []
    for g in groups:
        try:
            graces.append((g, g.begin_stop()))
        except Exception:  # noqa: BLE001
            g.kill()
    for g, grace in graces:
        try:
            g.finish_stop(grace)
        except Exception:  # noqa: BLE001
            g.kill()


def _killed(b: Bench, group: immortal.Group, stamps: Stamps) -> None:
    m = b.mode
    log(f"pump/daemon killed: {m.killed_rounds} rounds each")
    sock = group.directory / "control.sock"
    status_file = group.directory / "status.json"
    for r in range(m.killed_rounds):
        for role in ("pump", "daemon"):
            time.sleep(1.1)  # a stable pump: its successor starts at once
            old = json.loads(status_file.read_text())["pids"]
            stamps.clear()
            t0 = time.monotonic_ns()
            os.kill(old[role], signal.SIGKILL)
            whole = _wait_whole(old, role, status_file, sock, 10.0)
            t1 = time.monotonic_ns()
            if whole is None:
                b.notes.append(f"killed: the group was not whole within 10 s after its {role} "
                               "was killed")
                continue
            b.add(f"{role} killed", "immortal", ms(t1 - t0))
            new_targets = [x for x in stamps.read(0) if x[0] == "S"]
            if new_targets or not alive(old["target"]) or whole["target"] != old["target"]:
                b.notes.append(f"killed: the target was touched when the {role} was killed")


def _wait_whole(old: dict[str, int], role: str, status_file: Path, sock: Path,
                timeout: float) -> dict[str, int] | None:
    """Until status.json names a new, living pump under a living daemon (the old pump's pid
    after a daemon death: it became the daemon), the same target, and the daemon answers."""
    deadline = time.monotonic() + timeout
    want_daemon = old["daemon"] if role == "pump" else old["pump"]
    while time.monotonic() < deadline:
        try:
            data = json.loads(status_file.read_text())
        except (OSError, ValueError):
            data = {}
        pids = data.get("pids", {})
        if (data.get("state") == "running" and pids.get("daemon") == want_daemon
                and pids.get("pump") not in (None, old["pump"]) and alive(pids["pump"])
                and pids.get("target") == old["target"]):
            try:
                answer = control.request(sock, {"cmd": "status"}, timeout=1.0)
            except Exception:  # noqa: BLE001 - not answering yet
                answer = {}
            if answer.get("pump") == pids["pump"] and answer.get("daemon") == want_daemon:
                return pids
        time.sleep(0.0005)
    return None


# ------------------------------------------------------------------ crash loops


def _start_quietly(b: Bench, anchor: anchors.Anchor, key: str, record: dict) -> None:
    try:
        anchor.start(key)
    except Exception as exc:  # noqa: BLE001 - e.g. supervisorctl's "spawn error" (FATAL)
        record["said"] = str(exc).splitlines()[-1][-120:]


def crash_loops(b: Bench) -> None:
    m = b.mode
    log(f"crash loop without backoff: {m.crash_windows} windows of {m.crash_window:g} s each")
    for w in range(m.crash_windows):
        order = ["immortal", "bare loop", *[a.name for a in b.anchors]]
        if w % 2:
            order.reverse()
        for name in order:
            stamps = b.fifo("bare" if name == "bare loop" else name, "crash")
            stamps.clear()
            anchor = next((a for a in b.anchors if a.name == name), None)
            cpu_before = 0
            pids: list[int] = []
            if name == "immortal":
                g = b.im_start("b-crash", ["crash", str(stamps.path)],
                               policy={"min_uptime": 0, "backoff_initial": 0})
                pids = b.im_pids(g)
            elif name == "bare loop":
                loop = b.bare_loop(["crash", str(stamps.path)])
                pids = [loop.pid]
            else:
                assert anchor is not None
                try:
                    anchor.start("crash")
                except Exception as exc:  # noqa: BLE001
                    b.notes.append(f"crash loop: {name} failed to start it: {exc}")
                    continue
                pids = anchor.supervisor_pids()
            cpu_before = sum(cpu_ns(p) for p in pids)
            t_end = time.monotonic() + m.crash_window
            starts: list[int] = []
            while time.monotonic() < t_end:
                starts += [x[2] for x in stamps.read(max(0.0, t_end - time.monotonic()))
                           if x[0] == "S"]
            cpu = sum(cpu_ns(p) for p in pids) - cpu_before
            if name == "immortal":
                g.stop()
            elif name == "bare loop":
                b.bare_stop(loop)
            else:
                anchor.stop("crash")
            stamps.clear()
            b.extra.setdefault("crash_starts", {}).setdefault(name, []).append(len(starts))
            gaps = [ms(y - x) for x, y in zip(starts, starts[1:])]
            for gap in gaps:
                b.add("crash loop", name, gap)
            if len(starts) > 1:
                per = cpu / (len(starts) - 1)
                b.extra.setdefault("crash_cpu_per_restart_us", {}).setdefault(name, []).append(
                    per / 1000)

    log(f"crash loop with the default policy: supervisor CPU over {m.cpu_window:g} s")
    runs: dict[str, dict[str, Any]] = {}
    g = b.im_start("b-crashdef", ["crash", str(b.fifo("immortal", "crashdef").path)])
    runs["immortal"] = {"pids": b.im_pids(g), "stamps": b.fifo("immortal", "crashdef")}
    threads = []
    for anchor in b.anchors:
        # Their start commands may block until the program is given up (supervisorctl
        # start waits for FATAL): run them beside the window, measure the daemon.
        runs[anchor.name] = {"pids": anchor.supervisor_pids(),
                             "stamps": b.fifo(anchor.name, "crashdef")}
        threads.append(threading.Thread(target=_start_quietly,
                                        args=(b, anchor, "default", runs[anchor.name])))
    for r in runs.values():
        r["cpu0"] = sum(cpu_ns(p) for p in r["pids"])
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(m.cpu_window)
    wall = time.monotonic() - t0
    for thread in threads:
        thread.join(60)
    result = {}
    for name, r in runs.items():
        cpu = sum(cpu_ns(p) for p in r["pids"]) - r["cpu0"]
        restarts = len([x for x in r["stamps"].read(0) if x[0] == "S"])
        result[name] = {"cpu_pct": 100 * cpu / 1e9 / wall, "cpu_ms": ms(cpu),
                        "starts": restarts, "said": r.get("said", "")}
    g.stop()
    for anchor in b.anchors:
        if anchor.name in runs:
            try:
                anchor.stop("default")
            except Exception as exc:  # noqa: BLE001
                b.notes.append(f"crash loop (default policy): {anchor.name} stop: {exc}")
    b.extra["crash_default"] = {"window": m.cpu_window, "subjects": result}


# ------------------------------------------------------------------ start and stop


def start_stop(b: Bench) -> None:
    m = b.mode
    log(f"start and stop: {m.start_rounds} rounds")
    env = dict(os.environ)
    for r in range(m.start_rounds):
        t0 = time.monotonic_ns()
        subprocess.run([PY, "-c", "pass"], check=True)
        b.add("start", "python -c pass", ms(time.monotonic_ns() - t0))

        stamps = b.fifo("immortal", "run")
        stamps.clear()
        t0 = time.monotonic_ns()
        subprocess.run([PY, "-m", "immortal", "run", b.target, "-n", "b-run", "--stop-timeout",
                        "5", "--ready", "spawn", "--", "stamp", str(stamps.path)], check=True,
                       env=env, stdout=subprocess.DEVNULL)
        t1 = time.monotonic_ns()
        first = stamps.wait("S", 10)[1]
        b.add("start", "immortal run: first instruction", ms(first[2] - t0))
        b.add("start", "immortal run: returns", ms(t1 - t0))
        time.sleep(0.05)
        t0 = time.monotonic_ns()
        # The console script, as a user types it (`python -m immortal` adds runpy, ~4 ms).
        subprocess.run([SCRIPT, "stop", "b-run"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        b.add("stop", "immortal stop (CLI)", ms(time.monotonic_ns() - t0))
        if alive(first[1]):
            b.notes.append("stop: the target outlived 'immortal stop'")

        stamps = b.fifo("immortal", "start")
        stamps.clear()
        t0 = time.monotonic_ns()
        g = b.im_start("b-start", ["stamp", str(stamps.path)])
        t1 = time.monotonic_ns()
        first = stamps.wait("S", 10)[1]
        b.add("start", "start(): returns", ms(t1 - t0))
        b.add("start", "start(): first instruction", ms(first[2] - t0))
        time.sleep(0.05)
        t0 = time.monotonic_ns()
        g.stop()
        b.add("stop", "Group.stop()", ms(time.monotonic_ns() - t0))

        stamps = b.fifo("bare", "start")
        stamps.clear()
        t0 = time.monotonic_ns()
        child = subprocess.Popen([b.target, "stamp", str(stamps.path)])
        first = stamps.wait("S", 10)[1]
        b.add("start", "bare exec: first instruction", ms(first[2] - t0))
        time.sleep(0.05)
        t0 = time.monotonic_ns()
        child.terminate()
        child.wait()
        b.add("stop", "bare kill + wait", ms(time.monotonic_ns() - t0))

        for anchor in b.anchors:
            stamps = b.fifo(anchor.name, "ss")
            stamps.clear()
            try:
                t0 = time.monotonic_ns()
                anchor.start("ss")
                t1 = time.monotonic_ns()
                first = stamps.wait("S", 10)[1]
                b.add("start", f"{anchor.name}: first instruction", ms(first[2] - t0))
                b.add("start", f"{anchor.name}: returns", ms(t1 - t0))
                time.sleep(0.05)
                t0 = time.monotonic_ns()
                anchor.stop("ss")
                b.add("stop", anchor.name, ms(time.monotonic_ns() - t0))
            except Exception as exc:  # noqa: BLE001
                b.notes.append(f"start/stop: {anchor.name} failed: {exc}")


# ------------------------------------------------------------------ relay


RELAY_RE = re.compile(rb"\d{10} x{88}\n")
MARKER = b"END-OF-RELAY"


def count_lines(path: Path, offset: int, end: int,
                examples: list[str] | None = None) -> tuple[int, int]:
    """Newlines, and intact target lines (index and 88 'x' unbroken), in [offset, end);
    the first two damaged lines go to ``examples``."""
    lines = intact = 0
    with open(path, "rb") as handle:
        handle.seek(offset)
        left = end - offset
        carry = b""
        while left > 0:
            chunk = handle.read(min(left, 16 << 20))
            if not chunk:
                break
            left -= len(chunk)
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            whole, carry = data[:cut], data[cut:]
            lines += whole.count(b"\n")
            found = len(RELAY_RE.findall(whole)) + whole.count(MARKER + b"\n")
            intact += found
            if examples is not None and found < whole.count(b"\n") and len(examples) < 2:
                for line in whole.split(b"\n"):
                    if line and not RELAY_RE.search(line + b"\n") and MARKER not in line:
                        examples.append(line[:160].decode("ascii", "replace"))
                        if len(examples) >= 2:
                            break
    return lines, intact


def _wait_marker(path: Path, offset: int, timeout: float, stamps: Stamps,
                 ends: list[tuple[str, int, int]]) -> tuple[int, int]:
    """Poll (2 ms) until the last line is in ``path`` past ``offset``: (size, time ns).

    The last line ends in the marker; where a subject cuts lines at its reads and puts a
    prefix inside it, the marker is never whole: then the target's "E" stamp (it has
    written everything) and 0.5 s without growth end the wait, at the last growth seen."""
    deadline = time.monotonic() + timeout
    seen = offset
    grew = time.monotonic_ns()
    while time.monotonic() < deadline:
        ends += [x for x in stamps.read(0) if x[0] == "E"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        now = time.monotonic_ns()
        if size > seen:
            with open(path, "rb") as handle:
                start = max(offset, size - 400)
                handle.seek(start)
                tail = handle.read()  # to the end, which may be past `size` by now
                if MARKER in tail:
                    return start + len(tail), now
            seen, grew = size, now
        elif ends and now - grew > 500_000_000:
            return size, grew
        time.sleep(0.002)
    raise TimeoutError(f"no end marker in {path} within {timeout:g} s")


def _settled_size(path: Path, quiet: float = 0.3, limit: float = 10.0) -> int:
    """The file's size once it has not grown for ``quiet`` seconds (at most ``limit``)."""
    size = path.stat().st_size
    still = time.monotonic()
    deadline = still + limit
    while time.monotonic() < deadline and time.monotonic() - still < quiet:
        time.sleep(0.02)
        now = path.stat().st_size
        if now != size:
            size, still = now, time.monotonic()
    return size


def relay(b: Bench) -> None:
    m = b.mode
    count = m.relay_mb * 1_000_000 // LINE
    log(f"relay: {m.relay_mb} MB ({count} lines of {LINE} bytes), {m.relay_rounds} rounds")
    timeout = 60 + m.relay_mb * 1.0
    results: dict[str, list[dict[str, Any]]] = {}
    for r in range(m.relay_rounds):
        order = ["bare redirect", "immortal file", "immortal python", *[a.name for a in b.anchors]]
        if r % 2:
            order.reverse()
        for name in order:
            key = {"bare redirect": "bare", "immortal file": "immortal",
                   "immortal python": "immortalpy"}.get(name, name)
            stamps = b.fifo(key, "relay")
            stamps.clear()
            out = b.work / f"{key}-relay.log"
            done = b.work / f"{key}-relay.done"
            args = ["lines", str(stamps.path), str(count)]
            anchor = next((a for a in b.anchors if a.name == name), None)
            stop: Callable[[], None]
            pids: list[int] = []
            try:
                if name == "bare redirect":
                    child = subprocess.Popen(
                        ["sh", "-c", 'exec "$0" "$@" >> "$OUT"', b.target, *args],
                        env=dict(os.environ, OUT=str(out)), start_new_session=True)
                    b.bare.append(child)
                    stop = lambda child=child: b.bare_stop(child)  # noqa: E731
                elif name == "immortal file":
                    g = b.im_start("b-relay", args, options={"output": str(out)})
                    pids = b.im_pids(g)
                    stop = g.stop
                elif name == "immortal python":
                    done.unlink(missing_ok=True)
                    g = b.im_start("b-relaypy", args, monitor="bench_monitor:Counter",
                                   options={"done": str(done)})
                    pids = b.im_pids(g)
                    stop = g.stop
                else:
                    assert anchor is not None
                    anchor.start("relay")
                    pids = anchor.supervisor_pids()
                    stop = lambda anchor=anchor: anchor.stop("relay")  # noqa: E731
            except Exception as exc:  # noqa: BLE001
                b.notes.append(f"relay: {name} failed to start: {exc}")
                continue
            try:
                target = stamps.wait("S", 20)[1]
                offset = out.stat().st_size if out.exists() else 0
                cpu0 = sum(cpu_ns(p) for p in pids)
                t0 = time.monotonic_ns()
                os.kill(target[1], signal.SIGUSR1)
                ends: list[tuple[str, int, int]] = []
                if name == "immortal python":
                    while not done.exists():
                        ends += [x for x in stamps.read(0) if x[0] == "E"]
                        late = ends and time.monotonic_ns() - ends[0][2] > 30e9
                        if late or time.monotonic_ns() - t0 > timeout * 1e9:
                            raise TimeoutError("the Counter monitor saw no end marker (see "
                                               "the group's pump.log)")
                        time.sleep(0.002)
                    end, t1 = 0, time.monotonic_ns()
                else:
                    end, t1 = _wait_marker(out, offset, timeout, stamps, ends)
                cpu = sum(cpu_ns(p) for p in pids) - cpu0
                wrote = ends[0] if ends else stamps.wait("E", 5)[1]
                if name == "immortal python":
                    seen = int(done.read_text())
                    lines = intact = seen
                else:
                    examples = b.extra.setdefault("relay_damaged", {}).setdefault(name, [])
                    lines, intact = count_lines(out, offset, end, examples)
                    if intact != count:
                        # Count again once the output has settled: a shortfall that is
                        # gone then was the measurement's (the end was seen early), not a
                        # loss.
                        final = _settled_size(out)
                        again = count_lines(out, offset, final)
                        if again != (lines, intact):
                            b.notes.append(
                                f"relay: {name} round {r + 1}: {again[1] - intact} more intact "
                                "lines once the output settled than when its end was seen "
                                "(counted after it settled)")
                            lines, intact = again
                results.setdefault(name, []).append({
                    "ms": ms(t1 - t0), "target_ms": ms(wrote[2] - t0), "lines": lines,
                    "intact": intact, "lost": count - intact, "cpu_ms": ms(cpu)})
                b.add("relay", name, ms(t1 - t0))
            except Exception as exc:  # noqa: BLE001
                b.notes.append(f"relay: {name} round {r + 1}: {exc}")
            finally:
                stop()
                if out.exists():
                    os.truncate(out, 0)
    b.extra["relay"] = {"mb": m.relay_mb, "lines": count, "rounds": results}


def anchors_killed(b: Bench) -> None:
    """SIGKILL each anchor's daemon: does anything bring it back, what of its programs?"""
    log("anchors' daemons killed")
    result = {}
    for anchor in b.anchors:
        pids = anchor.supervisor_pids()
        if not pids:
            continue
        programs = [p for pid in pids for p in anchors.descendants(pid) if alive(p)]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        time.sleep(2.0)
        back = anchor.find_daemon()
        left = [p for p in programs if alive(p)]
        result[anchor.name] = {"programs": len(programs), "left_running": len(left),
                               "daemon_back": bool(back)}
        for pid in left:
            try:
                os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(
                    pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        anchor.daemon_pids = []
    b.extra["anchors_killed"] = result


# ------------------------------------------------------------------ anchors


def setup_anchors(b: Bench, classes: list[type[anchors.Anchor]]) -> None:
    b.extra["anchor_cold"] = {}
    for cls in classes:
        progs = {
            "rec": anchors.Prog("rec", [b.target, "stamp", str(b.fifo(cls.name, "rec").path)]),
            "crash": anchors.Prog("crash", [b.target, "crash",
                                            str(b.fifo(cls.name, "crash").path)], "crash"),
            "default": anchors.Prog("default", [b.target, "crash",
                                                str(b.fifo(cls.name, "crashdef").path)],
                                    "default"),
            "ss": anchors.Prog("ss", [b.target, "stamp", str(b.fifo(cls.name, "ss").path)]),
            "relay": anchors.Prog("relay", [b.target, "lines", str(b.fifo(cls.name, "relay").path),
                                            str(b.mode.relay_mb * 1_000_000 // LINE)],
                                  "relay", output=str(b.work / f"{cls.name}-relay.log")),
            "many": anchors.Prog("many", [b.target, "stamp", "-"], "many", count=b.mode.groups),
            busylog.ROW: anchors.Prog(busylog.ROW, [
                b.target, "stdio", str(b.fifo(cls.name, busylog.ROW).path),
                str(b.mode.busylog_lines)], "relay",
                output=str(b.work / f"{cls.name}-{busylog.ROW}.log")),
        }
        anchor = cls(b.work, progs)
        if not anchor.available():
            b.notes.append(f"{cls.name}: not installed (run with --anchors to install it)")
            continue
        try:
            version = anchor.version()
            stamps = b.fifo(cls.name, "rec")
            t0 = time.monotonic_ns()
            anchor.launch("rec")
            t1 = time.monotonic_ns()
            first = stamps.wait("S", 20)[1]
        except Exception as exc:  # noqa: BLE001
            b.notes.append(f"{cls.name}: skipped, it would not start: {exc}")
            anchor.shutdown()
            continue
        b.extra["anchor_cold"][cls.name] = {"version": version, "returns_ms": ms(t1 - t0),
                                            "first_ms": ms(first[2] - t0), "stamp": first}
        b.anchors.append(anchor)
        log(f"{cls.name}: {version}; cold start to first instruction {ms(first[2] - t0):.0f} ms")


# ------------------------------------------------------------------ clean-up


def cleanup(b: Bench | None, work: Path) -> list[str]:
    """Stop every group in our home, every bare loop, every anchor; then kill anything left
    whose command line names our temporary directory."""
    notes = []
    try:
        for status in immortal.groups():
            if status.running:
                g = immortal.attach(status.name)
                try:
                    g.stop(timeout=2)
                except Exception:  # noqa: BLE001
                    g.kill()
    except Exception as exc:  # noqa: BLE001
        notes.append(f"cleanup of groups: {exc}")
    if b is not None:
        for popen in list(b.bare):
            b.bare_stop(popen)
        for anchor in b.anchors:
            anchor.shutdown()
            notes += anchor.notes
    mark = str(work).encode()
    me = os.getpid()
    left = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if mark in cmdline:
            left.append(int(entry))
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        notes.append(f"cleanup: SIGKILLed {len(left)} leftover processes")
    return notes


# ------------------------------------------------------------------ main


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "immortal",
                            "monitors"], capture_output=True, text=True).stdout.strip()
    return {"cpu": model, "cores": str(os.cpu_count()), "kernel": platform.release(),
            "python": platform.python_version(), "commit": commit + (" (+ local changes to "
                                                                     "immortal/)" if dirty else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "memory": _meminfo(),
            "install": ("a regular install of this checkout (`pip install .` into a "
                        "directory of the run's own)"
                        if os.environ.get("IMMORTAL_BENCH_INSTALLED") else
                        "the project's venv as it is (editable install), `--editable`")}


def _meminfo() -> str:
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        return f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        return "?"


def _rounded(value: Any) -> Any:
    """Floats to 4 significant decimals' worth (µs for ms figures): a smaller JSON file."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short run (< 2 minutes)")
    parser.add_argument("--anchors", action="store_true",
                        help="install missing anchors into /tmp/bench-anchors, /tmp/bench-pm2")
    parser.add_argument("--no-anchors", action="store_true", help="measure no anchor")
    parser.add_argument("--profile", action="store_true", help="profile start and restart")
    parser.add_argument("--only", help=f"comma-separated rows: {','.join(ROWS)} (figures to "
                                       "a file of their own; no report unless --output)")
    parser.add_argument("--output", help=f"the report (default: {REPORT.relative_to(ROOT)}; "
                                         "none with --only)")
    parser.add_argument("--editable", action="store_true",
                        help=f"measure the project's venv as it is (default: a regular install "
                             f"of this checkout in /tmp/{INSTALL_PREFIX}*, removed at the end)")
    parser.add_argument("--dry-run", action="store_true",
                        help="say what would be measured, installed and written; do nothing")
    args = sys.argv[1:] if argv is None else argv
    ns = parser.parse_args(args)
    rows = set(ROWS) if not ns.only else set(ns.only.split(","))
    unknown = rows - set(ROWS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    mode = Mode(ns.quick)
    out_json, report_path = destinations(mode, rows if ns.only else None, ns.output)
    if ns.dry_run:
        installed = os.environ.get("IMMORTAL_BENCH_INSTALLED")
        print(f"rows: {', '.join(r for r in ROWS if r in rows)} ({mode.name})\n"
              f"install: " + ("the project's venv as it is (--editable)" if ns.editable else
                              installed or f"this checkout into /tmp/{INSTALL_PREFIX}*, "
                                           "removed at the end")
              + f"\nfigures: {out_json}\nreport: {report_path or 'none'}")
        return 0
    if not ns.editable and not os.environ.get("IMMORTAL_BENCH_INSTALLED"):
        return _run_installed(args)
    signal.signal(signal.SIGTERM, _interrupted)  # as Ctrl-C: what it started is stopped
    began = time.monotonic()
    notes: list[str] = []
    if ns.anchors and not ns.no_anchors:
        notes += anchors.install(log)
    work = Path(tempfile.mkdtemp(prefix="imb-", dir="/tmp"))
    os.environ["IMMORTAL_HOME"] = str(work / "home")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])
    b: Bench | None = None
    profile: dict[str, Any] = {}
    try:
        target, how = build_target(work)
        b = Bench(mode, work, [], target)
        b.notes += notes
        if not ns.no_anchors and rows - {"rolling", "instance"}:  # those two have their own
            setup_anchors(b, list(anchors.ALL))
        if rows & {"recovery", "idle", "memory", "killed"}:
            recovery_idle_memory_killed(b, rows)
        if "crash" in rows:
            crash_loops(b)
        if rows & {"start", "stop"}:
            start_stop(b)
        if "relay" in rows:
            relay(b)
        if busylog.ROW in rows:
            busylog.run(b, mode.busylog_lines, mode.busylog_rounds, log)
        if "killed" in rows and b.anchors:
            anchors_killed(b)
        if rows & {"rolling", "instance"}:
            import rolling

            if "rolling" in rows:
                b.extra["rolling"] = rolling.run(3 if ns.quick else 10, log)
                b.extra["rolling_finalizing"] = rolling.run(3 if ns.quick else 10, log,
                                                            finalize=True)
                if not ns.no_anchors:  # PM2's cluster reload, installed here if missing
                    import pm2roll

                    b.extra["rolling_pm2"] = pm2roll.run(3 if ns.quick else 6, log)
                    if b.extra["rolling_pm2"].get("skipped"):
                        b.notes.append(f"rolling row, PM2: {b.extra['rolling_pm2']['skipped']}")
            if "instance" in rows:
                b.extra["instance"] = rolling.crashed(8 if ns.quick else 24, log)
        if ns.profile:
            import profiling

            for anchor in b.anchors:  # quiet machine for the profiles
                anchor.shutdown()
            profile = profiling.run(b, log)
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        left = cleanup(b, work)
        if b is not None:
            b.notes += left
            for stamps in b.stamps.values():
                stamps.close()
    elapsed = time.monotonic() - began
    command = ".venv/bin/python bench/run.py" + "".join(f" {a}" for a in args)
    results = {"mode": mode.name, "params": vars(mode), "rows": sorted(rows), "command": command,
               "elapsed_s": elapsed, "machine": machine(), "target_build": how,
               "samples": b.samples, "extra": {k: v for k, v in b.extra.items()},
               "notes": b.notes, "profile": profile,
               "anchors": {name: v["version"] for name, v in
                           b.extra.get("anchor_cold", {}).items()}}
    for v in results["extra"].get("anchor_cold", {}).values():
        v.pop("stamp", None)
    out_json.parent.mkdir(exist_ok=True)
    out_json.write_text(json.dumps(_rounded(results), separators=(",", ":"), default=str))
    if report_path is not None:
        import report

        report_path.write_text(report.render(results))
    shutil.rmtree(work, ignore_errors=True)
    log(f"done in {elapsed:.0f} s: "
        + ", ".join(str(path) for path in (report_path, out_json) if path is not None))
    return 0


def destinations(mode: Mode, only: set[str] | None, output: str | None
                 ) -> tuple[Path, Path | None]:
    """Where a run's figures go, and its report (None: none). A whole run's figures are
    ``bench/results/<mode>.json`` and its report ``docs/benchmarks.md``; a run of some rows
    (``only``) keeps its figures in a file of its own, named after them and the time it began, and
    writes a report only to ``output``: a partial run never replaces a whole one's."""
    if only is None:
        return RESULTS / f"{mode.name}.json", Path(output) if output else REPORT
    stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime())
    name = "-".join(r for r in ROWS if r in only) + "-only" \
        + ("-quick" if mode.quick else "") + f"-{stamp}.json"
    return RESULTS / name, Path(output) if output else None


if __name__ == "__main__":
    sys.exit(main())
