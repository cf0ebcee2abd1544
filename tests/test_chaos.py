"""Chaos: kill the daemon, the pump and the target at random; nothing may be lost or doubled.

A run starts a ``daemon``-strategy group whose target (``programs/numbered.py``) writes
numbered lines alternately to stdout and stderr every 2 ms, with the ``recorder`` monitor
writing down every hook call. Then, again and again, it picks a victim at random among the
daemon, the pump and the target (a seeded ``random.Random``; the seed is in every failure
message, and ``IMMORTAL_CHAOS_SEED`` replays it), kills it (SIGKILL; for the target also
SIGTERM and SIGSEGV), and polls ``status.json`` until the group is whole again: a live
daemon, pump and target, none of them the process just killed. Meanwhile a thread walks
``/proc`` every 10 ms (the pytest process is a child subreaper, so the whole group is below
it) and counts the live targets, pumps and daemons, and the zombies.

Checks: never two targets, pumps or daemons at once; every kill recovered within
``RECOVERY_BOUND``; the target keeps its pid across pump and daemon kills; per target
instance, the line numbers the monitor got have no duplicate, keep their order within a
stream, and have no gap (a pump or daemon death loses no line; a target death can only cut
the tail, after the last line the monitor got); each pump or daemon kill gives one
``setup`` with the matching reason; no zombie lives longer than 1 s; the daemon's and the
pump's open fds after many target respawns equal those after 10.

Mixed bursts (``test_mixed_bursts``): ``BURST_KILLS`` SIGKILLs about 100 ms apart, each to
the daemon or the pump (chosen at random, whichever is current in the process table, not
waiting for recovery, only up to ``PARTNER_WAIT`` for a survivor to fork), then a wait
until the group is whole: the target must be the same process, no line lost, doubled or
reordered, never two targets.

Tiers: the default run does ``CI_KILLS`` kills. The long run (``IMMORTAL_CHAOS_KILLS=1000``)
is skipped unless that variable is set; it writes its figures as JSON to
``$IMMORTAL_CHAOS_REPORT`` when that is set.
"""

from __future__ import annotations

import collections
import json
import math
import os
import random
import re
import shlex
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import immortal
from conftest import LONG, PROGRAMS, SHORT, children_of
from immortal._linux import is_alive

NUMBERED = str(PROGRAMS / "numbered.py")
INTERVAL = 0.002  # seconds between two lines of the target
ROLES = ("daemon", "pump", "target")
RECOVERY_BOUND = SHORT  # a kill must be repaired within this; covers the 5 s pump back-off
POLL = 0.005  # how often the chaos loop re-reads status.json
CENSUS_PERIOD = 0.01  # how often the census walks /proc
ZOMBIE_AGE = 1.0  # a zombie older than this is a failure
FORK_GRACE = 1.0  # a fork that has not exec'd yet (its argv is its parent's) is not counted
CI_KILLS = 30
BURST_KILLS = 10  # SIGKILLs to the daemon or the pump in one burst, about a second
CI_BURSTS = 3
PARTNER_WAIT = 0.3  # a burst's kill waits this long at most for a survivor to fork
FD_SETTLE = 10  # target respawns before the first fd count
LINE = re.compile(r"^(out|err) (\d+)\.([0-9a-f]+) (\d+)$")


LONG_KILLS_RAW = os.environ.get("IMMORTAL_CHAOS_KILLS") or None


def _long_kills() -> int | None:
    try:
        return max(1, int(LONG_KILLS_RAW)) if LONG_KILLS_RAW else None
    except ValueError:
        return -1  # the test fails and says why


LONG_KILLS = _long_kills()


# --------------------------------------------------------------------------- /proc
@dataclass
class Proc:
    pid: int
    ppid: int
    state: str
    start: int
    argv: list[str]
    pgrp: int = 0

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start)

    def describe(self) -> str:
        return f"{self.pid} (parent {self.ppid}, {self.state}): {' '.join(self.argv)[:160]}"


def read_proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    argv = [a.decode(errors="replace") for a in raw.split(b"\0")]
    if argv and argv[-1] == "":
        argv.pop()
    return Proc(pid, int(fields[1]), fields[0].decode(), int(fields[19]), argv, int(fields[2]))


def process_tree(root: int) -> list[Proc]:
    """Every descendant of ``root``, zombies included."""
    found: list[Proc] = []
    todo = [root]
    while todo:
        for kid in children_of(todo.pop()):
            proc = read_proc(kid)
            if proc is not None:
                found.append(proc)
                todo.append(kid)
    return found


def still_alive(procs: list[Proc]) -> list[Proc]:
    """Those of ``procs`` (read in one walk of the tree) that are still the same living
    processes when read again after it.

    A walk reads one process after another, over milliseconds on a loaded machine: a target
    read alive early in it can die, be reaped and replaced before the walk reaches its
    successor's pump, and the walk then holds both. A process alive at its first read and
    again at its second lived all the while between; so the ones found again were all alive
    at once, at the instant between the walk's last read and the first read again.
    """
    again = []
    for proc in procs:
        now = read_proc(proc.pid)
        if now is not None and now.start == proc.start and now.state not in ("Z", "X") \
                and role_of(now.argv) == role_of(proc.argv):  # not a fork exec'd since
            again.append(proc)
    return again


def role_of(argv: list[str]) -> str | None:
    if any(arg.endswith("numbered.py") for arg in argv):
        return "target"
    for role in ("pump", "daemon"):
        if argv and argv[0].startswith(f"immortal: {role} "):
            return role  # titled by setproctitle once started
    if "immortal._role" in argv:
        index = argv.index("immortal._role")
        try:
            return str(json.loads(argv[index + 1])["role"])
        except (IndexError, ValueError, KeyError, TypeError):
            joined = " ".join(argv)
            for role in ("pump", "daemon"):
                if f'"role": "{role}"' in joined:
                    return role
    return None


class Census(threading.Thread):
    """Samples the process table below this (subreaper) process every ``period`` seconds.

    Records the most targets, pumps and daemons alive at once (a process between fork and
    exec, whose argv is still its parent's, is left out for ``FORK_GRACE``) and the zombies
    older than ``ZOMBIE_AGE``. Zombies whose parent is this process are ours to reap (the
    roles and orphans that came to us as subreaper): the census reaps them.
    """

    def __init__(self, period: float = CENSUS_PERIOD) -> None:
        super().__init__(name="census", daemon=True)
        self.period = period
        self.halt = threading.Event()
        self.me = os.getpid()
        self.samples = 0
        self.max_alive = dict.fromkeys(ROLES, 0)
        self.crowds: list[str] = []  # evidence: samples with two of one role
        self.crowd_keys: set[frozenset[tuple[int, int]]] = set()
        self.first_seen: dict[tuple[int, int], float] = {}
        self.old_zombies: dict[tuple[int, int], str] = {}
        self.unconfirmed = 0  # samples whose crowd was gone when read again (still_alive)
        self.max_zombie_age = 0.0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.sample()
            except Exception as exc:  # a thread must not raise (warnings are errors)
                if len(self.errors) < 5:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            self.halt.wait(self.period)

    def stop(self) -> None:
        self.halt.set()
        self.join(LONG)

    def sample(self) -> None:
        now = time.monotonic()
        procs = process_tree(self.me)
        by_pid = {p.pid: p for p in procs}
        seen = set()
        counts = dict.fromkeys(ROLES, 0)
        members: dict[str, list[Proc]] = {role: [] for role in ROLES}
        for proc in procs:
            seen.add(proc.key)
            first = self.first_seen.setdefault(proc.key, now)
            if proc.state == "Z":
                if proc.ppid == self.me:
                    try:
                        os.waitpid(proc.pid, os.WNOHANG)
                    except ChildProcessError:
                        pass
                    continue
                parent = by_pid.get(proc.ppid)
                if parent is not None and not parent.argv:
                    # Its parent is exiting (its memory is gone already): a killed role
                    # whose exit the kernel holds up (an inotify fd's release waits for an
                    # SRCU grace period, long under load). Nobody can reap the zombie until
                    # that exit ends; then it comes to us. Its age counts from then.
                    self.first_seen[proc.key] = now
                    continue
                age = now - first
                self.max_zombie_age = max(self.max_zombie_age, age)
                if age > ZOMBIE_AGE and proc.key not in self.old_zombies:
                    self.old_zombies[proc.key] = (
                        f"zombie {proc.pid} (parent {parent.describe() if parent else proc.ppid}"
                        f") older than {ZOMBIE_AGE} s")
                continue
            role = role_of(proc.argv)
            if role is None or role == "pump" and proc.pgrp == proc.pid:
                # (A pump is never a process group's leader: that is a target being
                # spawned, not exec'd yet, whose pump may have died: the daemon's child.)
                continue
            parent = by_pid.get(proc.ppid)
            if parent is not None and now - first < FORK_GRACE and (
                    parent.argv == proc.argv
                    or role == "daemon" and role_of(parent.argv) in ("daemon", "pump")):
                # Forked, not exec'd yet (the pump spawning a target, say), or a pump forked
                # from its daemon before either took its title: a daemon's child is no daemon.
                # Nor a pump's: a pump becoming the daemon forks its successor and starts
                # the pipe holder, both showing its new title while the parent was read
                # with its old one (two reads of /proc, not one instant).
                continue
            counts[role] += 1
            members[role].append(proc)
        for role in ROLES:
            if counts[role] > 1:
                confirmed = still_alive(members[role])
                self.unconfirmed += len(confirmed) < counts[role]
                members[role], counts[role] = confirmed, len(confirmed)
            self.max_alive[role] = max(self.max_alive[role], counts[role])
            crowd = frozenset(p.key for p in members[role])
            if counts[role] > 1 and crowd not in self.crowd_keys and len(self.crowds) < 10:
                self.crowd_keys.add(crowd)
                self.crowds.append(f"{counts[role]} {role}s alive at once: " + "; ".join(
                    p.describe() for p in members[role]))
        for key in [k for k in self.first_seen if k not in seen]:
            del self.first_seen[key]
        self.samples += 1


# --------------------------------------------------------------------------- fds
def fd_listing(pid: int) -> list[str] | None:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    listing = []
    for name in sorted(names, key=int):
        try:
            listing.append(f"{name} -> {os.readlink(f'/proc/{pid}/fd/{name}')}")
        except OSError:
            listing.append(f"{name} -> ?")
    return listing


def fd_count(pid: int, samples: int = 40) -> tuple[int | None, list[str] | None]:
    """The fewest fds ``pid`` held over a few ms of samples, and that listing.

    A pump that relays a line every 2 ms holds the monitor's file for a moment now and
    then; the fewest is its resting count.
    """
    best: list[str] | None = None
    for _ in range(samples):
        listing = fd_listing(pid)
        if listing is not None and (best is None or len(listing) < len(best)):
            best = listing
        time.sleep(0.001)
    return (len(best) if best is not None else None), best


# --------------------------------------------------------------------------- the run
@dataclass
class Kill:
    index: int
    role: str
    signal: int
    pid: int
    before: dict[str, int]
    after: dict[str, int] = field(default_factory=dict)
    recovery: float | None = None

    def describe(self) -> str:
        name = signal.Signals(self.signal).name
        took = "not recovered" if self.recovery is None else f"recovered in {self.recovery:.3f} s"
        return (f"kill #{self.index}: {self.role} {self.pid} by {name}, {took}; before "
                f"{self.before}, after {self.after}")


class Chaos:
    def __init__(self, group: immortal.Group, events_path: Path, seed: int) -> None:
        self.group = group
        self.events_path = events_path
        self.seed = seed
        self.rng = random.Random(seed)
        self.kills: list[Kill] = []
        self.problems: list[str] = []
        self.current: immortal.Status | None = None
        self.fds: dict[str, Any] = {}
        self.began = time.monotonic()

    # ---- waiting
    def whole(self, status: immortal.Status, killed: tuple[int, int | None] | None) -> bool:
        pids = status.pids
        if status.state != "running" or any(role not in pids for role in ROLES):
            return False
        if len({pids[role] for role in ROLES}) != len(ROLES):
            return False
        for role in ROLES:
            if not is_alive(pids[role], status.start_times.get(role)):
                return False
        if killed is not None:
            for role in ROLES:
                if pids[role] == killed[0] and (killed[1] is None or status.start_times.get(
                        role) in (None, killed[1])):
                    return False
        return True

    def wait_whole(self, killed: tuple[int, int | None] | None,
                   timeout: float = RECOVERY_BOUND) -> immortal.Status | None:
        deadline = time.monotonic() + timeout
        while True:
            status = self.group.status()
            if self.whole(status, killed):
                return status
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL)

    def wait_first_lines(self, timeout: float = SHORT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if b'"hook": "stderr"' in self.events_path.read_bytes():
                    return True
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        return False

    # ---- killing
    def pick(self) -> tuple[str, int]:
        role = self.rng.choice(ROLES)
        number = signal.SIGKILL
        if role == "target":
            draw = self.rng.random()
            if draw < 0.15:
                number = signal.SIGTERM
            elif draw < 0.3:
                number = signal.SIGSEGV
        return role, number

    def kill(self, role: str, number: int) -> Kill | None:
        """Kill ``role`` with ``number``, wait until the group is whole; None if it is not."""
        assert self.current is not None
        before = dict(self.current.pids)
        pid = before[role]
        start = self.current.start_times.get(role)
        if not is_alive(pid, start):
            status = self.group.status()
            self.problems.append(
                f"before kill #{len(self.kills)} the {role} {pid} had already died on its "
                f"own; status {status.state} {status.pids}")
            return None
        record = Kill(len(self.kills), role, number, pid, before)
        self.kills.append(record)
        began = time.monotonic()
        os.kill(pid, number)
        status = self.wait_whole((pid, start))
        if status is None:
            status = self.group.status()
            record.after = dict(status.pids)
            self.problems.append(f"{record.describe()} within {RECOVERY_BOUND} s; last "
                                 f"status: {status.state}, running={status.running}, "
                                 f"{status.pids}")
            return None
        record.recovery = time.monotonic() - began
        record.after = dict(status.pids)
        if role in ("pump", "daemon") and status.pids["target"] != before["target"]:
            self.problems.append(f"{record.describe()}: the target's pid changed")
        self.current = status
        return record

    def start(self) -> None:
        status = self.wait_whole(None, SHORT)
        if status is None:
            pytest.fail(f"seed {self.seed}: the group never ran whole: "
                        f"{self.group.status()}", pytrace=False)
        self.current = status
        if not self.wait_first_lines():
            pytest.fail(f"seed {self.seed}: no line from the target in {SHORT} s",
                        pytrace=False)

    def run(self, kills: int) -> None:
        for _ in range(kills):
            time.sleep(self.rng.uniform(0.01, 0.1))  # pacing, not synchronisation
            role, number = self.pick()
            if self.kill(role, number) is None:
                return

    def fd_drift(self, more: int) -> None:
        """fds of the daemon and the pump after FD_SETTLE target kills, and ``more`` later."""
        counts: dict[str, dict[str, Any]] = {}
        for phase, kills in (("after_10", FD_SETTLE), ("after_more", more)):
            for _ in range(kills):
                time.sleep(self.rng.uniform(0.005, 0.02))
                if self.kill("target", signal.SIGKILL) is None:
                    self.fds = counts
                    return
            assert self.current is not None
            for role in ("daemon", "pump"):
                pid = self.current.pids[role]
                number, listing = fd_count(pid)
                entry = counts.setdefault(role, {"pid": pid})
                if entry["pid"] != pid:
                    self.problems.append(f"the {role} changed during target kills: "
                                         f"{entry['pid']} → {pid}")
                entry[phase] = number
                entry[f"{phase}_listing"] = listing
        for role, entry in counts.items():
            entry["drift"] = (entry["after_more"] - entry["after_10"]
                              if None not in (entry.get("after_more"), entry.get("after_10"))
                              else None)
            entry["respawns"] = FD_SETTLE + more
            if entry["drift"] != 0:
                self.problems.append(
                    f"fd drift of the {role} {entry['pid']}: {entry['after_10']} fds after "
                    f"{FD_SETTLE} target respawns, {entry['after_more']} after "
                    f"{FD_SETTLE + more}:\n  {entry['after_10_listing']}\n  "
                    f"{entry['after_more_listing']}")
        self.fds = counts

    # ---- the record
    def events(self) -> tuple[list[dict[str, Any]], int]:
        events, corrupt = [], 0
        for raw in self.events_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                corrupt += 1
                continue
            if isinstance(event, dict):
                events.append(event)
            else:
                corrupt += 1
        return events, corrupt


def analyse_lines(events: list[dict[str, Any]], kills: list[Kill]) -> dict[str, Any]:
    """Per target instance: duplicates, order within a stream, gaps; gaps are blamed on the
    pump or daemon restart (a ``setup`` event) recorded between their neighbours."""
    problems: list[str] = []
    received: dict[str, list[tuple[int, int, str]]] = collections.defaultdict(list)
    foreign = []
    setups: list[tuple[int, str]] = []
    spawned_pids = set()
    exits: collections.Counter[int] = collections.Counter()
    repeats = 0  # lines handed over again by a dying pump, skipped by offset
    for index, event in enumerate(events):
        hook = event.get("hook")
        if hook == "repeat":
            repeats += 1
        elif hook == "setup":
            setups.append((index, str(event.get("why"))))
        elif hook in ("spawn", "respawn"):
            spawned_pids.add(event.get("pid"))
        elif hook == "exit":
            exits[event.get("pid")] += 1
        elif hook in ("stdout", "stderr"):
            match = LINE.match(str(event.get("line")))
            expected = "out" if hook == "stdout" else "err"
            if match is None or match.group(1) != expected:
                foreign.append(f"{hook}: {event.get('line')!r}")
                continue
            gen = f"{match.group(2)}.{match.group(3)}"
            number = int(match.group(4))
            if (number % 2 == 1) != (hook == "stdout"):
                foreign.append(f"{hook}: {event.get('line')!r} (odd numbers go to stdout)")
                continue
            received[gen].append((number, index, hook))

    # The setups after the first, in order, are the pump and daemon kills, in order.
    supervisor_kills = [k for k in kills
                        if k.role in ("pump", "daemon") and k.recovery is not None]
    restarts = setups[1:]
    blame: dict[int, Kill | None] = {}
    expected_why = {"pump": "pump restart", "daemon": "daemon restart"}
    for position, (index, why) in enumerate(restarts):
        kill = supervisor_kills[position] if position < len(supervisor_kills) else None
        blame[index] = kill
        if kill is not None and why != expected_why[kill.role]:
            problems.append(f"{kill.describe()}: its setup says why={why!r}")
    if len(restarts) != len(supervisor_kills):
        problems.append(f"{len(supervisor_kills)} pump/daemon kills but {len(restarts)} setups "
                        f"after the first: {[why for _, why in restarts]}")

    lost_by_cause: collections.Counter[str] = collections.Counter()
    lost_by_kill: collections.Counter[int] = collections.Counter()
    duplicated = reordered = 0
    gaps: list[str] = []
    for gen, lines in received.items():
        if int(gen.split(".")[0]) not in spawned_pids:
            problems.append(f"lines from target {gen}, whose pid no spawn/respawn reported")
        counts = collections.Counter(number for number, _, _ in lines)
        extra = sum(c - 1 for c in counts.values() if c > 1)
        if extra:
            duplicated += extra
            dups = sorted(n for n, c in counts.items() if c > 1)
            problems.append(f"target {gen}: {extra} duplicated lines, numbers {dups[:20]}")
        for stream in ("stdout", "stderr"):
            numbers = [number for number, _, hook in lines if hook == stream]
            wrong = sum(1 for a, b in zip(numbers, numbers[1:]) if b <= a)
            if wrong:
                reordered += wrong
                problems.append(f"target {gen}: {stream} numbers out of order {wrong} times")
        where = {}
        for number, index, _ in lines:
            where.setdefault(number, index)
        have = sorted(where)
        previous_number, previous_index = 0, -1
        for number in have:
            if number > previous_number + 1:
                missing = number - previous_number - 1
                index = where[number]
                between = [i for i in blame if previous_index < i < index]
                if between:
                    kill = blame[between[0]]
                    cause = kill.role if kill is not None else "unexplained setup"
                    if kill is not None:
                        lost_by_kill[kill.index] += missing
                    label = kill.describe() if kill is not None else "a setup"
                else:
                    cause, label = "no pump or daemon restart", "nothing in between"
                lost_by_cause[cause] += missing
                gaps.append(f"target {gen}: lines {previous_number + 1}..{number - 1} "
                            f"({missing}) missing; recorder events {previous_index}..{index};"
                            f" {label}")
            previous_number, previous_index = number, where[number]
    lost = sum(lost_by_cause.values())
    if lost:
        problems.append(f"{lost} lines lost ({dict(lost_by_cause)}):\n    "
                        + "\n    ".join(gaps[:20]))
    if foreign:
        problems.append(f"{len(foreign)} output lines that are no numbered line: {foreign[:10]}")
    target_kills = [k for k in kills if k.role == "target" and k.recovery is not None]
    for kill in target_kills:
        if exits[kill.pid] != 1:
            problems.append(f"{kill.describe()}: {exits[kill.pid]} exit events for it")
    return {
        "targets": len(received),
        "lines": sum(len(v) for v in received.values()),
        "lost": lost,
        "lost_by_cause": dict(lost_by_cause),
        "lost_by_kill": {str(k): v for k, v in lost_by_kill.items()},
        "duplicated": duplicated,
        "repeats_skipped": repeats,
        "reordered": reordered,
        "foreign": len(foreign),
        "gaps": gaps[:50],
        "problems": problems,
    }


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def tail(path: Path, size: int = 3000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return f"({path.name}: none)"
    return f"--- {path.name} (last {size} bytes of {len(data)}):\n" + data[-size:].decode(
        errors="replace")


def chaos(started: Any, recorder: Any, tmp_path: Path, kills: int, interval: float,
          fd_more: int) -> tuple[dict[str, Any], list[str], str]:
    """One chaos run: returns its figures, the problems found, and evidence for a failure."""
    seed = int(os.environ.get("IMMORTAL_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"chaos seed {seed} (IMMORTAL_CHAOS_SEED={seed} replays the same choices)")
    group = started(NUMBERED, ["--interval", str(interval)], strategy="daemon",
                    name="chaos", monitor="recorder", options=recorder.options,
                    policy={"min_uptime": 0.0}, cwd=tmp_path)
    run = Chaos(group, recorder.path, seed)
    census = Census()
    census.start()
    try:
        run.start()
        run.run(kills)
        if not run.problems:
            run.fd_drift(fd_more)
    finally:
        census.stop()
        final = group.stop(timeout=LONG)
    elapsed = time.monotonic() - run.began
    problems = list(run.problems)
    if final.running:
        problems.append(f"the group still runs after stop(): {final}")
    if census.errors:
        problems.append(f"census errors: {census.errors}")
    for role in ROLES:
        if census.max_alive[role] > 1:
            problems.append(f"{census.max_alive[role]} {role}s alive at once")
    if census.crowds:
        problems.append("crowds seen:\n    " + "\n    ".join(census.crowds))
    if census.old_zombies:
        problems.append(f"{len(census.old_zombies)} zombies older than {ZOMBIE_AGE} s: "
                        + "; ".join(list(census.old_zombies.values())[:10]))
    events, corrupt = run.events()
    lines = analyse_lines(events, run.kills)
    problems.extend(lines.pop("problems"))
    recovery: dict[str, Any] = {}
    for role in ROLES:
        times = [k.recovery for k in run.kills if k.role == role and k.recovery is not None]
        recovery[role] = {
            "kills": sum(1 for k in run.kills if k.role == role),
            "recovered": len(times),
            "median_s": statistics.median(times) if times else None,
            "p99_s": percentile(times, 0.99),
            "max_s": max(times) if times else None,
        }
    chaos_kills = run.kills[:kills]
    figures = {
        "seed": seed,
        "kills": len(chaos_kills),
        "kills_asked": kills,
        "signals": dict(collections.Counter(
            f"{k.role}:{signal.Signals(k.signal).name}" for k in chaos_kills)),
        "kills_total_with_fd_phase": len(run.kills),
        "elapsed_s": round(elapsed, 3),
        "recovery": recovery,
        "lines_received": lines["lines"],
        "target_instances": lines["targets"],
        "lines_lost": lines["lost"],
        "lines_lost_by_cause": lines["lost_by_cause"],
        "lines_lost_by_kill": lines["lost_by_kill"],
        "lines_duplicated": lines["duplicated"],
        "lines_handed_over_again": lines["repeats_skipped"],
        "lines_reordered": lines["reordered"],
        "lines_foreign": lines["foreign"],
        "recorder_corrupt_lines": corrupt,
        "max_alive": census.max_alive,
        "census_samples": census.samples,
        "census_crowds_unconfirmed": census.unconfirmed,
        "zombies_over_1s": len(census.old_zombies),
        "max_zombie_age_s": round(census.max_zombie_age, 3),
        "fd": {role: {k: v for k, v in entry.items() if not k.endswith("_listing")}
               for role, entry in run.fds.items()},
        "fd_drift": {role: entry.get("drift") for role, entry in run.fds.items()},
        "gaps": lines["gaps"],
        "problems": problems,
    }
    directory = group.directory
    evidence = "\n".join([
        f"seed {seed}; instance directory {directory}; recorder {recorder.path}",
        *(k.describe() for k in run.kills if k.recovery is None or k.index >= len(run.kills) - 5),
        tail(directory / "daemon.log"), tail(directory / "pump.log"),
        tail(directory / "pump.log.1"),
    ])
    return figures, problems, evidence


def report(figures: dict[str, Any], problems: list[str], evidence: str) -> str:
    shown = {k: v for k, v in figures.items() if k not in ("problems", "gaps")}
    return (f"chaos seed {figures['seed']}: {len(problems)} problems\n- "
            + "\n- ".join(problems) + "\nfigures: " + json.dumps(shown, indent=1)
            + "\n" + evidence)


# --------------------------------------------------------------------------- tests
@pytest.mark.timeout(120)
def test_chaos(started, recorder, tmp_path):
    """CI tier: about 30 random kills; everything must hold after each."""
    figures, problems, evidence = chaos(started, recorder, tmp_path, CI_KILLS, INTERVAL,
                                        fd_more=20)
    print(json.dumps({k: v for k, v in figures.items() if k != "problems"}, indent=1))
    assert not problems, report(figures, problems, evidence)


@pytest.mark.slow
@pytest.mark.skipif(LONG_KILLS is None, reason="long chaos tier: set IMMORTAL_CHAOS_KILLS "
                    "(e.g. 1000) to run it")
@pytest.mark.timeout(300 + 3 * max(0, LONG_KILLS or 0))
def test_chaos_long(started, recorder, tmp_path):
    """Long tier: IMMORTAL_CHAOS_KILLS kills; figures to $IMMORTAL_CHAOS_REPORT as JSON."""
    assert LONG_KILLS is not None and LONG_KILLS > 0, (
        f"IMMORTAL_CHAOS_KILLS must be a number of kills, got {LONG_KILLS_RAW!r}")
    figures, problems, evidence = chaos(started, recorder, tmp_path, LONG_KILLS, INTERVAL,
                                        fd_more=max(20, min(500, LONG_KILLS // 5)))
    destination = os.environ.get("IMMORTAL_CHAOS_REPORT")
    if destination:
        Path(destination).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "problems"}, indent=1))
    assert not problems, report(figures, problems, evidence)


def _held_target(group: immortal.Group, hold: Path, timeout: float) -> immortal.Status:
    """Wait until the target is the one that stays (it found ``hold``) and the group rests."""
    deadline = time.monotonic() + timeout
    while True:
        status = group.status()
        pid = status.pids.get("target")
        if status.state == "running" and pid and is_alive(pid, status.start_times.get(
                "target")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    argv = handle.read().split(b"\0")
            except OSError:
                argv = []
            if argv and argv[0].endswith(b"sleep") and group.status().spawned == \
                    status.spawned:
                return status
        if time.monotonic() > deadline:
            pytest.fail(f"no resting target within {timeout} s: {status}", pytrace=False)
        time.sleep(0.005)


def _wait_spawned(group: immortal.Group, at_least: int, timeout: float) -> immortal.Status:
    deadline = time.monotonic() + timeout
    while True:
        status = group.status()
        if status.spawned >= at_least:
            return status
        if not status.running or time.monotonic() > deadline:
            pytest.fail(f"spawned {status.spawned} < {at_least} after "
                        f"{timeout - max(0.0, deadline - time.monotonic()):.1f} s: {status}",
                        pytrace=False)
        time.sleep(0.01)


@pytest.mark.timeout(90)
def test_fds_stable_over_1000_respawns(started, recorder, tmp_path):
    """A target that exits at once, respawned at once: 1,000 respawns leak no fd in the
    daemon or the pump. To count at rest, the target sleeps instead while ``hold`` exists."""
    hold = tmp_path / "hold"
    script = f"[ -e {shlex.quote(str(hold))} ] && exec sleep 3600; exit 0"
    group = started("/bin/sh", ["-c", script], name="fds", monitor="recorder",
                    options=recorder.options,
                    policy={"min_uptime": 0.0, "backoff_initial": 0.0})
    counts = {}
    first = None
    for label, spawned in (("early", FD_SETTLE), ("late", FD_SETTLE + 1000)):
        _wait_spawned(group, spawned, timeout=LONG)
        hold.touch()
        status = _held_target(group, hold, timeout=SHORT)
        if first is None:
            first = status
        for role in ("daemon", "pump"):
            assert status.pids[role] == first.pids[role], (
                f"the {role} changed during the respawns: {first.pids} → {status.pids}")
            counts[(label, role)] = (status.spawned, fd_listing(status.pids[role]))
        if label == "early":
            hold.unlink()
            os.kill(status.pids["target"], signal.SIGKILL)  # the respawns go on
    for role in ("daemon", "pump"):
        (early_n, early), (late_n, late) = counts[("early", role)], counts[("late", role)]
        assert early is not None and late is not None
        assert len(late) == len(early), (
            f"the {role} held {len(early)} fds at spawned={early_n} and {len(late)} at "
            f"spawned={late_n}:\nearly: {early}\nlate:  {late}")


# --------------------------------------------------------------------------- mixed bursts
def supervisors() -> dict[str, list[Proc]]:
    """The live daemons and pumps below this process, by role (a fork that has not yet
    exec'd or taken its title is left out, as in the census)."""
    procs = process_tree(os.getpid())
    by_pid = {p.pid: p for p in procs}
    found: dict[str, list[Proc]] = {"daemon": [], "pump": []}
    for proc in procs:
        role = role_of(proc.argv)
        if proc.state == "Z" or role not in found:
            continue
        parent = by_pid.get(proc.ppid)
        if parent is not None and (parent.argv == proc.argv or (
                role == "daemon" and role_of(parent.argv) == "daemon")):
            continue
        found[role].append(proc)
    return found


def burst(rng: random.Random, kills: int) -> list[str]:
    """``kills`` SIGKILLs, each to the current daemon or pump, chosen at random.

    Each kill waits up to ``PARTNER_WAIT`` for both to exist (a survivor has forked its
    new partner, not necessarily ready yet): killing the lone survivor before it could
    fork ends the group by design (docs/design.md, "When a supervisor process dies", says
    how long that window lasts), but a survivor that stays alone longer (waiting, exec'ing)
    is killed all the same.
    """
    done = []
    for _ in range(kills):
        time.sleep(rng.uniform(0.05, 0.15))  # pacing, not synchronisation
        deadline = time.monotonic() + PARTNER_WAIT
        alive = supervisors()
        while not (alive["daemon"] and alive["pump"]) and time.monotonic() < deadline \
                and (alive["daemon"] or alive["pump"]):
            time.sleep(0.001)
            alive = supervisors()
        roles = [role for role in ("daemon", "pump") if alive[role]]
        if not roles:
            done.append("nobody")
            continue
        role = rng.choice(roles)
        victim = max(alive[role], key=lambda p: p.start)
        try:
            os.kill(victim.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        done.append(f"{role} {victim.pid}")
    return done


def mixed_bursts(started: Any, recorder: Any, tmp_path: Path, bursts: int) -> tuple[
        list[str], dict[str, Any]]:
    seed = int(os.environ.get("IMMORTAL_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"bursts seed {seed} (IMMORTAL_CHAOS_SEED={seed} replays the same choices)")
    group = started(NUMBERED, ["--interval", str(INTERVAL)], strategy="daemon",
                    name="bursts", monitor="recorder", options=recorder.options,
                    policy={"min_uptime": 0.0}, cwd=tmp_path)
    run = Chaos(group, recorder.path, seed)
    census = Census()
    census.start()
    problems: list[str] = []
    try:
        run.start()
        assert run.current is not None
        target = run.current.pids["target"]
        for number in range(bursts):
            killed = burst(run.rng, BURST_KILLS)
            status = run.wait_whole(None, LONG)
            if status is None:
                status = group.status()
                problems.append(f"seed {seed}: burst #{number} ({', '.join(killed)}) not "
                                f"recovered in {LONG} s: {status.state} {status.pids}\n"
                                + tail(group.directory / "daemon.log") + "\n"
                                + tail(group.directory / "pump.log") + "\nprocesses: "
                                + "; ".join(p.describe() for p in process_tree(os.getpid())))
                break
            if status.pids["target"] != target:
                problems.append(f"seed {seed}: burst #{number} ({', '.join(killed)}): the "
                                f"target changed, {target} → {status.pids['target']}")
                break
    finally:
        census.stop()
        group.stop(timeout=LONG)
    if census.max_alive["target"] > 1:
        problems.append(f"{census.max_alive['target']} targets alive at once: "
                        + "; ".join(census.crowds))
    events, _ = run.events()
    lines = analyse_lines(events, [])
    for key in ("lost", "duplicated", "reordered", "foreign"):
        if lines[key]:
            problems.append(f"{lines[key]} lines {key}: {lines['gaps'][:5]}")
    return problems, {"seed": seed, "max_alive": census.max_alive, "lines": lines["lines"],
                      "crowds": census.crowds}


@pytest.mark.timeout(240)
def test_mixed_bursts(started, recorder, tmp_path):
    """A few bursts of mixed daemon/pump kills: the group recovers, target and lines kept."""
    problems, figures = mixed_bursts(started, recorder, tmp_path, CI_BURSTS)
    print(json.dumps(figures, indent=1))
    assert not problems, "\n".join(problems) + "\n" + json.dumps(figures, indent=1)
