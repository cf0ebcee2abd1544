"""Stress: the whole fault model at once, through the command line, with every built-in monitor.

One group (``stress``, strategy ``daemon``) whose target (``programs/fdcloser.py``) closes
every inherited fd and then writes numbered lines, alternately on stdout and stderr; five
monitors take them: ``file``, ``jsonl``, ``logging`` (into a file of its own through a
``dictConfig`` file), ``console``, ``plugins.lines:LineByLine`` (a test monitor that
stores each line it is handed, line by line, with no offset) and ``plugins.lines:Checked``
(the same with ``delivered``: it reads its own file back).

Phase 1, rounds: N ``immortal run`` of the same name at once (``python -m immortal run``,
one process each), sometimes with a SIGKILL of a live daemon, pump or target fired during
the starts; then a few single kills, each waited out; sometimes the daemon and the pump
killed together (the target is orphaned: an ``immortal status`` is read then, and the next
round's runs must end or adopt the orphan); an ``immortal status`` read; sometimes an
``immortal stop``, so that the next round's runs race to create the group.

Phase 2, bursts: K SIGKILLs within 1 s, each aimed at a daemon, pump or target chosen at
random among the live ones (found by their ``ps`` titles, ``immortal: daemon DIR`` and
``immortal: pump DIR``, and the target's command line); then the group must be whole again
(or, when no supervisor is left, one ``immortal run`` must rebuild it).

A thread samples the process table below this process (a child subreaper) about every 10 ms.

Checks: never two targets (nor two daemons or pumps) alive at one sample; every target that
ended was aimed at by a kill, ended by a ``stop``, or ended during starts into which a fault
was fired (or by the run that rebuilt a group with no supervisor left) — never by a
supervisor's death, not even its daemon and pump killed together (the pipe holder keeps its
pipes readable until the next run adopts it); no target
left without a supervisor after a round's runs; nothing of the group alive after a ``stop``;
per target instance and per monitor, no line missing below the highest line any monitor
got, and no line twice, in every monitor: the line monitor that cannot tell what it holds
(no ``delivered``: ``lines``) too, since it runs in a process of its own that a pump's
death does not cut short. Lines missing for an orphaned target are counted apart (no
process is left to deliver them). ``console`` is checked for duplicates
only (it reads back ``pump.log``, so it must have none): its stdout lines go to the
detached pump's ``/dev/null`` and its stderr lines to ``pump.log``, which each pump
restart rotates.

Sizes: a smoke size runs in the default suite (the harness itself stays exercised). The full
size (50 rounds of 20 runs, 100 bursts of 10 kills) runs only with ``IMMORTAL_STRESS=1``;
``IMMORTAL_STRESS_ROUNDS``, ``_CONCURRENCY``, ``_BURSTS``, ``_BURST_KILLS`` and ``_SEED``
change it. Figures go as JSON to ``$IMMORTAL_STRESS_REPORT``, else (full size) to
``bench/results/stress-<UTC time>.json``, else to the test's tmp dir; the path is printed.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import HERE, LONG, PROGRAMS, children_of
from immortal import holder
from immortal._linux import is_alive
from immortal.state import read_status

FDCLOSER = str(PROGRAMS / "fdcloser.py")
NAME = "stress"
INTERVAL = 0.005  # seconds between two lines of the target
PERIOD = 0.01  # how often the census samples the process table
FORK_GRACE = 1.0  # a fork that has not exec'd or taken its title yet is not counted
BOTH_WINDOW = 5.0  # a target ending this soon after its daemon and pump were killed is orphaned
RECOVERY = 20.0  # a group must be whole again within this (covers the pump's 5 s back-off)
CLI_TIMEOUT = 60.0  # one command line; more is a hang
ROLES = ("daemon", "pump", "target")
MONITORS = ("file", "jsonl", "logging", "lines", "checked")  # for loss and duplicates
#: monitors whose repeats of the call a pump died in are counted apart, not as duplicates:
#: none. (A monitor that cannot tell what it holds, no ``delivered``, runs in a process of
#: its own; the rule stays for a monitor that could not, and is tested below.)
AT_LEAST_ONCE: tuple[str, ...] = ()
LINE = re.compile(r"(out|err) (\d+\.[0-9a-f]+) (\d+)$")


@dataclass
class Size:
    rounds: int
    concurrency: int
    bursts: int
    burst_kills: int


SMOKE = Size(rounds=2, concurrency=4, bursts=2, burst_kills=4)
FULL = Size(rounds=50, concurrency=20, bursts=100, burst_kills=10)
ENABLED = os.environ.get("IMMORTAL_STRESS", "") not in ("", "0")


def _full_size() -> Size:
    values = asdict(FULL)
    for key in values:
        raw = os.environ.get(f"IMMORTAL_STRESS_{key.upper()}")
        if raw:
            values[key] = max(0, int(raw))
    return Size(**values)


_terminal: Any = None  # pytest's terminal reporter and capture manager: to write past capture


def progress(text: str) -> None:
    """Shown on the terminal even while pytest captures output (a long run says where it is)."""
    line = f"[stress {time.strftime('%H:%M:%S')}] {text}"
    if ENABLED and _terminal is not None:
        terminal, capture = _terminal
        with capture.global_and_fixture_disabled():
            terminal.write_line(line)
            terminal.flush()
    else:
        print(line)


# --------------------------------------------------------------------------- the table
@dataclass
class Proc:
    pid: int
    ppid: int
    state: str
    start: int
    argv: str
    script: str  # argv[1]: the script an interpreter runs
    pgrp: int = 0

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start)


def read_proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    words = raw.decode(errors="replace").split("\0")
    return Proc(pid, int(fields[1]), fields[0].decode(), int(fields[19]),
                " ".join(words).strip(), words[1] if len(words) > 1 else "", int(fields[2]))


def table(root: int) -> list[Proc]:
    """Every descendant of ``root`` (this subreaper process), zombies included."""
    found: list[Proc] = []
    todo = [root]
    while todo:
        for kid in children_of(todo.pop()):
            proc = read_proc(kid)
            if proc is not None:
                found.append(proc)
                todo.append(kid)
    return found


class Roles:
    """Tells the group's processes apart by title and command line."""

    def __init__(self, directory: Path) -> None:
        self.titles = {role: f"immortal: {role} {directory}" for role in ("daemon", "pump")}

    def of(self, proc: Proc) -> str | None:
        if proc.script == FDCLOSER:
            return "target"  # the interpreter running it (an `immortal run` names it too)
        for role, title in self.titles.items():
            if proc.argv == title or proc.argv.startswith(title + " "):
                return role
        return None

    def supervisors(self, procs: list[Proc]) -> int:
        """Live daemons and pumps, titled or still starting (an interpreter becoming one:
        the pump that `exec`s as the daemon has no title for a while)."""
        return sum(1 for p in procs if p.state != "Z" and (
            self.of(p) in ("daemon", "pump") or "immortal._role" in p.argv))

    def live(self, procs: list[Proc], now: float | None = None,
             first_seen: dict[tuple[int, int], float] | None = None) -> dict[str, list[Proc]]:
        """The live processes of each role; a fresh fork that still wears its parent's
        command line is left out (for FORK_GRACE, when first-seen times are given)."""
        by_pid = {p.pid: p for p in procs}
        found: dict[str, list[Proc]] = {role: [] for role in ROLES}
        for proc in procs:
            role = self.of(proc)
            if role is None or proc.state == "Z":
                continue
            if role == "pump" and proc.pgrp == proc.pid:
                # A target being spawned: the (v)fork of a pump, in a process group of its
                # own already, not exec'd yet; its pump may have died meanwhile, and it is
                # then the daemon's child (a pump is never a group's leader).
                continue
            parent = by_pid.get(proc.ppid)
            if parent is not None and parent.argv == proc.argv:
                young = first_seen is None or now is None or \
                    now - first_seen.get(proc.key, now) < FORK_GRACE
                if young:
                    continue
            found[role].append(proc)
        return found


class Census(threading.Thread):
    """Samples the table every PERIOD: the most of each role alive at once, and when each
    target instance was first and last seen alive. Reaps the zombies that came to us as
    subreaper (never a command line's: ``subprocess`` waits for those)."""

    def __init__(self, roles: Roles) -> None:
        super().__init__(name="census", daemon=True)
        self.roles = roles
        self.me = os.getpid()
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.samples = 0
        self.max_alive = dict.fromkeys(ROLES, 0)
        self.crowds: list[str] = []
        self.unconfirmed = 0  # samples whose crowd was gone when read again (see _confirmed)
        self.first_seen: dict[tuple[int, int], float] = {}
        self.targets: dict[tuple[int, int], list[float]] = {}  # key -> [first, last] alive
        self.bare_ends: set[tuple[int, int]] = set()  # targets gone with no supervisor left
        self.bare_samples = 0  # samples with a target and no supervisor
        self._alive_targets: set[tuple[int, int]] = set()
        self.commands: set[int] = set()  # our command lines' pids: never reaped here
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.sample()
            except Exception as exc:  # a thread must not raise (warnings are errors)
                if len(self.errors) < 5:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            self.halt.wait(PERIOD)

    def stop(self) -> None:
        self.halt.set()
        self.join(LONG)

    def _confirmed(self, procs: list[Proc], role: str) -> list[Proc]:
        """Those of ``procs`` still alive, and still of ``role``, when read again. The walk
        of the table is not one instant: a target read alive early in it may be dead and
        reaped, and its successor born, by the time the walk reaches the successor. Read
        again, a real second target (one nobody supervises, which runs on) is still there;
        the other kind is not, and is counted apart as ``overlaps_unconfirmed``. Nor is a
        fork that wore its parent's title at the first read and has exec'd since."""
        still = []
        for proc in procs:
            again = read_proc(proc.pid)
            if again is not None and again.state != "Z" and again.key == proc.key \
                    and self.roles.of(again) == role:
                still.append(proc)
        if len(still) < len(procs):
            self.unconfirmed += 1
        return still

    def sample(self) -> None:
        now = time.monotonic()
        procs = table(self.me)
        for proc in procs:
            self.first_seen.setdefault(proc.key, now)
            if proc.state == "Z" and proc.ppid == self.me:
                with self.lock:
                    if proc.pid not in self.commands:  # theirs: subprocess reaps them
                        try:
                            os.waitpid(proc.pid, os.WNOHANG)
                        except ChildProcessError:
                            pass
        live = self.roles.live(procs, now, self.first_seen)
        for role in ROLES:
            if len(live[role]) > 1:
                live[role] = self._confirmed(live[role], role)
        with self.lock:
            for role in ROLES:
                count = len(live[role])
                self.max_alive[role] = max(self.max_alive[role], count)
                if count > 1 and len(self.crowds) < 10:
                    by_pid = {p.pid: p for p in procs}
                    self.crowds.append(f"{count} {role}s alive at once: " + "; ".join(
                        f"{p.pid} {p.argv[:100]!r}, parent {p.ppid} "
                        f"{by_pid[p.ppid].argv[:100] if p.ppid in by_pid else '?'!r}"
                        for p in live[role]))
            for proc in live["target"]:
                self.targets.setdefault(proc.key, [now, now])[1] = now
            targets = {p.key for p in live["target"]}
            bare = self.roles.supervisors(procs) == 0
            if bare:
                self.bare_ends |= self._alive_targets - targets
                self.bare_samples += bool(targets)
            self._alive_targets = targets
            alive = {p.key for p in procs}
            for key in [k for k in self.first_seen if k not in alive]:
                del self.first_seen[key]
            self.samples += 1


# --------------------------------------------------------------------------- the run
@dataclass
class Kill:
    phase: str
    role: str
    pid: int
    start: int
    at: float


@dataclass
class Figures:
    seed: int
    size: dict[str, int]
    kills: collections.Counter = field(default_factory=collections.Counter)
    runs: collections.Counter = field(default_factory=collections.Counter)
    run_errors: list[str] = field(default_factory=list)
    status_reads: int = 0
    status_max_s: float = 0.0
    status_after_both_killed: list[str] = field(default_factory=list)
    recoveries: list[float] = field(default_factory=list)
    rebuilt_by_run: int = 0
    orphans: int = 0
    stops: int = 0
    stops_during_starts: int = 0


class Stress:
    def __init__(self, home: Path, tmp: Path, size: Size, seed: int) -> None:
        self.home = home
        self.tmp = tmp
        self.size = size
        self.rng = random.Random(seed)
        self.directory = home / NAME
        self.roles = Roles(self.directory)
        self.census = Census(self.roles)
        self.figures = Figures(seed, asdict(size))
        self.problems: list[str] = []
        self.kills: list[Kill] = []
        self.windows: list[tuple[float, float, str]] = []  # target deaths explained in them
        self.orphan_keys: set[tuple[int, int]] = set()
        self.began = time.monotonic()
        self.paths = {"lines": tmp / "lines.txt", "checked": tmp / "checked.txt",
                      "logging": tmp / "logging.txt", "logging_config": tmp / "logging.json"}
        self.paths["logging_config"].write_text(json.dumps({
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(stream)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "plain",
                                  "filename": str(self.paths["logging"])}},
            "loggers": {f"immortal.{NAME}": {"handlers": ["file"], "level": "DEBUG",
                                             "propagate": False}},
        }))
        self.env = {**os.environ, "IMMORTAL_HOME": str(home), "PYTHONPATH": os.pathsep.join(
            [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])}

    # ---- command lines
    def run_argv(self) -> list[str]:
        return [sys.executable, "-m", "immortal", "run", "--name", NAME, "--min-uptime", "0",
                "--stop-timeout", "5", "-m", "file", "-m", "jsonl",
                "-m", "logging", "-o", f"config={self.paths['logging_config']}",
                "-m", "plugins.lines:LineByLine", "-o", f"path={self.paths['lines']}",
                "-m", "plugins.lines:Checked", "-o", f"path={self.paths['checked']}",
                "-m", "console", "-o", "color=never",
                FDCLOSER, "--", "--interval", str(INTERVAL)]

    def cli(self, argv: list[str], timeout: float = CLI_TIMEOUT) -> tuple[int | None, str, str]:
        with self.census.lock:  # registered before the census could see it die
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=self.env)
            self.census.commands.add(child.pid)
        try:
            out, err = child.communicate(timeout=timeout)
            code: int | None = child.returncode
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            code, err = None, f"timed out after {timeout} s; {err}"
        with self.census.lock:
            self.census.commands.discard(child.pid)
        return code, out, err

    def immortal(self, *args: str, timeout: float = CLI_TIMEOUT) -> tuple[int | None, str, str]:
        return self.cli([sys.executable, "-m", "immortal", *args], timeout)

    def status_read(self, context: str) -> str:
        began = time.monotonic()
        code, out, err = self.immortal("status", NAME)
        took = time.monotonic() - began
        self.figures.status_reads += 1
        first = (out.strip().splitlines() or [""])[0]
        self.figures.status_max_s = max(self.figures.status_max_s, took)
        if code is None:
            self.problems.append(f"{context}: `immortal status` hangs: {err}")
        elif code not in (0, 3) or "Traceback" in err:
            self.problems.append(f"{context}: `immortal status` exit {code}: {err.strip()[-300:]}")
        return f"exit {code}, {took:.2f} s: {first} {err.strip()[:200]}".strip()

    def concurrent_runs(self, count: int, inject: bool) -> collections.Counter:
        barrier = threading.Barrier(count + (1 if inject else 0))
        results: list[tuple[int | None, str]] = []

        def one() -> None:
            barrier.wait(LONG)
            code, _, err = self.cli(self.run_argv())
            results.append((code, err))

        stopping = inject and self.rng.random() < 0.3
        delay = self.rng.uniform(0.0, 0.6)

        def injector() -> None:
            barrier.wait(LONG)
            time.sleep(delay)
            if stopping:  # a stop during the starts
                code, _, err = self.immortal("stop", NAME, "--timeout", "5")
                self.figures.stops_during_starts += 1
                if code is None or "Traceback" in err:
                    self.problems.append(f"`immortal stop` during {count} starts: exit {code}"
                                         f": {err.strip()[-300:]}")
            else:
                self.kill_random("start")

        threads = [threading.Thread(target=one) for _ in range(count)]
        if inject:
            threads.append(threading.Thread(target=injector))
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(CLI_TIMEOUT + LONG)
        if inject:
            self.windows.append((began, time.monotonic(), "starts with a stop fired in"
                                 if stopping else "starts with a kill fired in"))
        codes = collections.Counter(code for code, _ in results)
        for code, _ in results:
            self.figures.runs[str(code)] += 1
        odd = [(code, err.strip()[-300:]) for code, err in results if code not in (0, 4)]
        for code, text in odd:
            if len(self.figures.run_errors) < 10:
                self.figures.run_errors.append(f"exit {code}"
                                               f"{' (fault fired in)' if inject else ''}: {text}")
        if odd and not inject:
            self.problems.append(f"{count} concurrent runs: unexpected exits {odd[:3]}")
        if codes[0] > 1 and not inject:
            self.problems.append(f"{count} concurrent runs: {codes[0]} of them started a "
                                 f"group: {dict(codes)}")
        return codes

    # ---- the table
    def live(self) -> dict[str, list[Proc]]:
        return self.roles.live(table(os.getpid()))

    def kill_random(self, phase: str, roles: tuple[str, ...] = ROLES) -> Kill | None:
        live = self.live()
        choices = [(role, proc) for role in roles for proc in live[role]]
        if not choices:
            return None
        role, proc = self.rng.choice(choices)
        return self.kill(phase, role, proc)

    def kill(self, phase: str, role: str, proc: Proc) -> Kill | None:
        if not is_alive(proc.pid, proc.start):
            return None
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        record = Kill(phase, role, proc.pid, proc.start, time.monotonic())
        self.kills.append(record)
        self.figures.kills[role] += 1
        return record

    def note_orphans(self) -> bool:
        """No supervisor left (over a few looks, since a pump becoming the daemon has no title
        for a moment): the live targets are orphans, for the next run to end or adopt."""
        for _ in range(5):
            procs = table(os.getpid())
            if self.roles.supervisors(procs):
                return False
            time.sleep(0.05)
        live = self.roles.live(procs)
        for proc in live["target"]:
            if proc.key not in self.orphan_keys:
                self.orphan_keys.add(proc.key)
                self.figures.orphans += 1
        return True

    def whole(self) -> bool:
        status = read_status(self.directory)
        if status is None or status.state != "running":
            return False
        for role in ROLES:
            if not is_alive(status.pids.get(role), status.start_times.get(role)):
                return False
        live = self.live()
        return all(len(live[role]) == 1 and live[role][0].pid == status.pids[role]
                   for role in ROLES)

    def wait_whole(self, context: str, since: float) -> bool:
        deadline = time.monotonic() + RECOVERY
        while not self.whole():
            if time.monotonic() > deadline:
                status = read_status(self.directory)
                live = {r: [p.pid for p in ps] for r, ps in self.live().items()}
                self.problems.append(
                    f"{context}: not whole within {RECOVERY} s; status "
                    f"{status.state if status else None} {status.pids if status else {}}; "
                    f"alive {live}")
                self.repair(context)
                return False
            time.sleep(0.005)
        self.figures.recoveries.append(time.monotonic() - since)
        return True

    def ensure_running(self, context: str) -> None:
        """If no supervisor is left, rebuild the group with one `immortal run`."""
        if not self.note_orphans():
            return
        began = time.monotonic()
        code, _, err = self.cli(self.run_argv())
        self.windows.append((began, time.monotonic(), "a run replacing orphans"))
        self.figures.runs[str(code)] += 1
        self.figures.rebuilt_by_run += 1
        if code != 0:
            self.problems.append(f"{context}: `immortal run` with no supervisor left: exit "
                                 f"{code}: {err.strip()[-300:]}")

    def repair(self, context: str) -> None:
        """After a failure: stop, kill what is left of the group by hand, start afresh."""
        began = time.monotonic()
        self.immortal("stop", NAME, "--timeout", "5")
        for procs in self.live().values():
            for proc in procs:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.windows.append((began, time.monotonic() + 1.0, f"repair after {context}"))
        code, _, err = self.cli(self.run_argv())
        if code != 0:
            self.problems.append(f"{context}: repair run failed: exit {code}: {err[-300:]}")

    def stop(self, context: str) -> None:
        began = time.monotonic()
        code, _, err = self.immortal("stop", NAME, "--timeout", "5")
        self.windows.append((began, time.monotonic(), "stop"))
        self.figures.stops += 1
        if code not in (0, 3):
            self.problems.append(f"{context}: `immortal stop` exit {code}: {err.strip()[-300:]}")
        deadline = time.monotonic() + 2.0  # a killed process becomes a zombie, not at once
        while True:
            left = [p for ps in self.live().values() for p in ps]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if left:
            self.problems.append(f"{context}: alive after `immortal stop`: " + "; ".join(
                f"{p.pid}: {p.argv[:100]}" for p in left))
            for proc in left:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # ---- phases
    def round(self, index: int) -> None:
        inject = self.rng.random() < 0.5
        began = time.monotonic()
        orphans = len(self.orphan_keys)
        self.concurrent_runs(self.size.concurrency, inject)
        if self.note_orphans() and len(self.orphan_keys) > orphans:
            self.problems.append(f"round {index}: after {self.size.concurrency} runs"
                                 f"{' and a fault fired in' if inject else ''}, a target "
                                 f"runs with no supervisor")
        self.ensure_running(f"round {index}")
        if not self.wait_whole(f"round {index} after the runs", began):
            return
        for _ in range(self.rng.randint(1, 3)):
            time.sleep(self.rng.uniform(0.02, 0.2))  # pacing, not synchronisation
            kill = self.kill_random(f"round {index}")
            if kill is not None and not self.wait_whole(
                    f"round {index} after a {kill.role} kill", kill.at):
                return
        draw = self.rng.random()
        if draw < 0.25:
            live = self.live()
            for role in ("daemon", "pump"):
                for proc in live[role]:
                    self.kill(f"round {index} both", role, proc)
            time.sleep(0.05)  # let the kernel deliver; the status read below must cope
            self.note_orphans()
            self.figures.status_after_both_killed.append(
                self.status_read(f"round {index}, both supervisors killed"))
        else:
            self.status_read(f"round {index}")
            if draw < 0.65:
                self.stop(f"round {index}")

    def burst(self, index: int) -> None:
        began = time.monotonic()
        times = sorted(self.rng.uniform(0.0, 1.0) for _ in range(self.size.burst_kills))
        last = began
        for at in times:
            delay = began + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            kill = self.kill_random(f"burst {index}")
            if kill is not None:
                last = kill.at
        time.sleep(0.05)  # a killed process is a zombie until reaped
        self.ensure_running(f"burst {index}")
        if self.wait_whole(f"burst {index}", last):
            self.status_read(f"burst {index}")

    def execute(self) -> None:
        self.census.start()
        try:
            progress(f"seed {self.figures.seed}, size {asdict(self.size)}, home {self.home}")
            for index in range(self.size.rounds):
                self.round(index)
                if index % 5 == 4 or index == self.size.rounds - 1:
                    progress(f"round {index + 1}/{self.size.rounds}: "
                             f"kills {dict(self.figures.kills)}, runs "
                             f"{dict(self.figures.runs)}, problems {len(self.problems)}")
            if self.size.bursts:
                self.ensure_running("before the bursts")
                if not self.whole():
                    self.cli(self.run_argv())
                    self.wait_whole("before the bursts", time.monotonic())
            for index in range(self.size.bursts):
                self.burst(index)
                if index % 10 == 9 or index == self.size.bursts - 1:
                    progress(f"burst {index + 1}/{self.size.bursts}: "
                             f"kills {dict(self.figures.kills)}, problems {len(self.problems)}")
            self.stop("the end")
        finally:
            self.census.stop()

    # ---- the verdict
    def both_killed(self, last: float) -> bool:
        """Whether a daemon and a pump were both killed shortly before ``last``."""
        recent = {k.role for k in self.kills if last - BOTH_WINDOW <= k.at <= last + 2 * PERIOD}
        return {"daemon", "pump"} <= recent

    def target_deaths(self) -> tuple[dict[str, int], set[int]]:
        """How each target instance ended, and the pids of those that ended with no
        supervisor left (their last lines may be lost for some monitors: no one is left to
        deliver them)."""
        aimed = {(k.pid, k.start) for k in self.kills if k.role == "target"}
        counts: collections.Counter[str] = collections.Counter()
        unsupervised: set[int] = set()
        with self.census.lock:
            targets = dict(self.census.targets)
        for key, (first, last) in sorted(targets.items(), key=lambda item: item[1][0]):
            window = next((why for t0, t1, why in self.windows
                           if t0 - 2 * PERIOD <= last <= t1 + 2 * PERIOD), None)
            if key in aimed:
                counts["aimed at"] += 1
            elif window is not None:
                counts[window] += 1
                if window.startswith("repair"):
                    unsupervised.add(key[0])
            elif key in self.orphan_keys or (key in self.census.bare_ends
                                             and self.both_killed(last)):
                # It closed the read ends it was given: with no supervisor left, its next
                # write fails (the pipe holder, off by default, keeps them: holder.ENV).
                counts["orphaned: daemon and pump killed"] += 1
                unsupervised.add(key[0])
                if holder.enabled():
                    self.problems.append(
                        f"target {key[0]} died after its daemon and pump were killed (last "
                        f"seen {last - self.began:.2f} s into the run), its pipes held")
            else:
                why = ("its supervisors died, though no kill hit both"
                       if key in self.census.bare_ends else "its supervisors lived on")
                counts[f"unexplained: {why}"] += 1
                near = [f"{k.role} {k.pid} at {k.at - last:+.3f} s" for k in self.kills
                        if -BOTH_WINDOW <= k.at - last <= 0.2]
                self.problems.append(
                    f"target {key[0]} ended with no kill aimed at it ({why}; last seen "
                    f"{last - self.began:.2f} s into the run); kills around then: {near}")
        return dict(counts), unsupervised


# --------------------------------------------------------------------------- the output
def numbers_file(path: Path, pattern: re.Pattern[str]) -> list[tuple[str, str, int]]:
    """(gen, stream, number) for each numbered line of a text monitor's file."""
    found = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return found
    for raw in text.splitlines():
        match = pattern.search(raw)
        if match:
            found.append((match.group("gen"), match.group("kind"), int(match.group("n"))))
    return found


def numbers_jsonl(path: Path) -> list[tuple[str, str, int]]:
    found = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return found
    for raw in text.splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        match = LINE.match(str(record.get("line", ""))) if "stream" in record else None
        if match:
            found.append((match.group(2), match.group(1), int(match.group(3))))
    return found


def monitor_numbers(stress: Stress) -> dict[str, list[tuple[str, str, int]]]:
    def pattern(prefix: str) -> re.Pattern[str]:
        return re.compile(prefix + r"(?P<kind>out|err) (?P<gen>\d+\.[0-9a-f]+) (?P<n>\d+)$")

    directory = stress.directory
    console: list[tuple[str, str, int]] = []
    for log in sorted(directory.glob("*.log*")):
        if log.name.startswith(("pump", "daemon")):
            console += numbers_file(log, pattern(rf"^\[{NAME} \d+ std(?:out|err)\] "))
    return {
        "file": numbers_file(directory / "output.log", pattern(r" std(?:out|err) \| ")),
        "jsonl": numbers_jsonl(directory / "output.jsonl"),
        "logging": numbers_file(stress.paths["logging"], pattern(r"^std(?:out|err) ")),
        "lines": numbers_file(stress.paths["lines"], pattern(r"^std(?:out|err) ")),
        "checked": numbers_file(stress.paths["checked"], pattern(r"^std(?:out|err) ")),
        "console": console,
    }


def analyse(numbers: dict[str, list[tuple[str, str, int]]],
            unsupervised: set[int], pump_kills: int = 0,
            at_least_once: tuple[str, ...] = AT_LEAST_ONCE) -> dict[str, dict[str, Any]]:
    """Per monitor: lines got, lost (below the highest number any monitor got for that
    target instance) and duplicated; with a few examples. Lines of a target that ended with
    no supervisor left count apart (``lost_no_supervisor_left``), as do the single lines
    an ``AT_LEAST_ONCE`` monitor got twice, up to ``pump_kills`` (``repeated_in_flight``)."""
    highest: dict[str, int] = collections.defaultdict(int)
    for monitor in MONITORS:
        for gen, _, number in numbers[monitor]:
            highest[gen] = max(highest[gen], number)
    result = {}
    for monitor, got in numbers.items():
        seen = collections.Counter((gen, number) for gen, _, number in got)
        duplicated = sum(count - 1 for count in seen.values())
        examples = [f"{gen} line {n} x{c}" for (gen, n), c in seen.items() if c > 1][:5]
        entry: dict[str, Any] = {"lines": len(got), "duplicated": duplicated,
                                 "duplicate_examples": examples}
        if monitor in at_least_once and duplicated <= pump_kills \
                and all(count <= 2 for count in seen.values()):
            entry["repeated_in_flight"] = duplicated
            entry["duplicated"] = 0
        if monitor in MONITORS:
            missing = [(gen, n) for gen, top in highest.items() for n in range(1, top + 1)
                       if (gen, n) not in seen]
            excused = [m for m in missing if int(m[0].split(".")[0]) in unsupervised]
            missing = [m for m in missing if int(m[0].split(".")[0]) not in unsupervised]
            entry["lost"] = len(missing)
            entry["lost_examples"] = [f"{gen} line {n}" for gen, n in missing[:5]]
            entry["lost_no_supervisor_left"] = len(excused)
        else:
            entry["lost"] = None  # not measurable, see the module's docstring
        result[monitor] = entry
    result["_targets"] = {"instances": len(highest)}
    return result


def report_path(tmp_path: Path, full: bool) -> Path:
    chosen = os.environ.get("IMMORTAL_STRESS_REPORT")
    if chosen:
        return Path(chosen)
    if full:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return HERE.parent / "bench" / "results" / f"stress-{stamp}.json"
    return tmp_path / "stress.json"


def verdict(run: Stress) -> dict[str, Any]:
    """Adds the census's and the monitors' problems to the run's; returns the figures."""
    problems = run.problems
    deaths, unsupervised = run.target_deaths()
    census = run.census
    if census.errors:
        problems.append(f"census errors: {census.errors}")
    for role in ROLES:
        if census.max_alive[role] > 1:
            problems.append(f"{census.max_alive[role]} {role}s alive at one sample")
    if census.crowds:
        problems.append("crowds seen:\n    " + "\n    ".join(census.crowds))
    lines = analyse(monitor_numbers(run), unsupervised, run.figures.kills["pump"])
    for monitor, entry in lines.items():
        if entry.get("lost"):
            problems.append(f"monitor {monitor}: {entry['lost']} lines lost, e.g. "
                            f"{entry['lost_examples']}")
        if entry.get("duplicated"):
            problems.append(f"monitor {monitor}: {entry['duplicated']} lines duplicated, e.g."
                            f" {entry['duplicate_examples']}")
    if lines["file"]["lines"] == 0:
        problems.append("the file monitor got no line at all: the harness is broken")
    recoveries = sorted(run.figures.recoveries)
    figures = run.figures
    return {
        "seed": figures.seed,
        "size": figures.size,
        "elapsed_s": round(time.monotonic() - run.began, 1),
        "kills_by_role": dict(figures.kills),
        "kills_total": len(run.kills),
        "run_exit_codes": dict(figures.runs),
        "run_errors": figures.run_errors,
        "rebuilt_by_run_after_both_supervisors_died": figures.rebuilt_by_run,
        "orphans": figures.orphans,
        "stops": figures.stops,
        "stops_during_starts": figures.stops_during_starts,
        "status_reads": figures.status_reads,
        "status_max_s": round(figures.status_max_s, 3),
        "status_after_both_killed": figures.status_after_both_killed[:10],
        "max_alive_at_a_sample": census.max_alive,
        "overlaps_unconfirmed": census.unconfirmed,
        "census_samples": census.samples,
        "target_instances": len(census.targets),
        "target_ends": deaths,
        "recoveries": len(recoveries),
        "recovery_median_s": round(statistics.median(recoveries), 3) if recoveries else None,
        "recovery_max_s": round(recoveries[-1], 3) if recoveries else None,
        "monitors": {k: v for k, v in lines.items() if not k.startswith("_")},
        "problems": problems,
    }


def keep_logs(directory: Path, report: Path, outputs: list[Path]) -> Path:
    """The group's role logs (every adoption, leftover taken, recovery and restart is
    written there) and what each monitor wrote (``outputs``, and the group's ``file`` and
    ``jsonl`` outputs: each pump's events among the lines, where a loss shows whose it
    was), copied beside a failed run's report: the test's directory and the home go."""
    kept = report.with_name(report.stem + "-logs")
    kept.mkdir(parents=True, exist_ok=True)
    found = [log for log in directory.glob("*.log*") if log.name.startswith(("daemon", "pump"))]
    found += [*directory.glob("output.*"), *outputs]
    for each in sorted(found):
        if each.is_file():
            shutil.copy2(each, kept / each.name)
    return kept


def stress(home: Path, tmp_path: Path, size: Size, full: bool) -> None:
    seed = int(os.environ.get("IMMORTAL_STRESS_SEED")
               or random.SystemRandom().randrange(2**32))
    print(f"stress seed {seed} (IMMORTAL_STRESS_SEED={seed} replays the same choices)")
    run = Stress(home, tmp_path, size, seed)
    try:
        run.execute()
    finally:
        if run.live()["daemon"] or run.live()["pump"]:
            run.stop("clean-up")
    figures = verdict(run)
    problems = figures["problems"]
    destination = report_path(tmp_path, full)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"stress figures: {destination}")
    if problems:
        kept = keep_logs(run.directory, destination,
                         [run.paths["lines"], run.paths["checked"], run.paths["logging"]])
        print(f"the group's role logs: {kept}")
    progress(f"done in {figures['elapsed_s']:.0f} s, {len(problems)} problems; figures in "
             f"{destination}")
    shown = {k: v for k, v in figures.items() if k != "problems"}
    assert not problems, (f"stress seed {seed}: {len(problems)} problems:\n- "
                          + "\n- ".join(problems[:40]) + "\nfigures: "
                          + json.dumps(shown, indent=1) + f"\nfigures file: {destination}")


# --------------------------------------------------------------------------- tests
def test_a_line_in_flight_repeated_is_counted_apart_only_where_it_is_documented():
    """The figures' own rule: no monitor's repeat is excused, the line monitor's
    included. Where a monitor is named at least once, it may get one line twice per pump
    killed; a block monitor may not, nor a line three times, nor more repeats than pumps
    killed."""
    twice = [("1.aa", "out", 1), ("1.aa", "out", 1), ("1.aa", "err", 2)]
    numbers = {"file": twice, "jsonl": twice[1:], "logging": twice[1:], "lines": twice,
               "checked": twice[1:], "console": []}
    assert analyse(numbers, set(), pump_kills=1)["lines"]["duplicated"] == 1
    result = analyse(numbers, set(), pump_kills=1, at_least_once=("lines",))
    assert result["lines"]["duplicated"] == 0 and result["lines"]["repeated_in_flight"] == 1
    assert result["file"]["duplicated"] == 1
    assert analyse(numbers, set(), pump_kills=0, at_least_once=("lines",))["lines"][
        "duplicated"] == 1
    thrice = {**numbers, "lines": [*twice, ("1.aa", "out", 1)]}
    assert analyse(thrice, set(), pump_kills=5, at_least_once=("lines",))["lines"][
        "duplicated"] == 2


@pytest.mark.timeout(90)
def test_stress_smoke(home, tmp_path):
    """Smoke size: the harness itself, in the default suite."""
    stress(home, tmp_path, SMOKE, full=False)


@pytest.mark.slow
@pytest.mark.skipif(not ENABLED, reason="stress tier: set IMMORTAL_STRESS=1 to run it "
                                        "(50 rounds of 20 concurrent runs, 100 bursts of "
                                        "10 kills; up to 20 minutes)")
@pytest.mark.timeout(2400)
def test_stress_full(home, tmp_path, request):
    """Full size (or as IMMORTAL_STRESS_* say): figures to bench/results/ or
    $IMMORTAL_STRESS_REPORT."""
    global _terminal
    plugins = request.config.pluginmanager
    _terminal = (plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager"))
    stress(home, tmp_path, _full_size(), full=True)
