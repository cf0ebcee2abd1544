"""The workers' rows: four workers of a stdlib HTTP server on one socket, a client asking
as fast as it can; the group rolled several times (``run``), or one instance SIGKILLed at a
time (``crashed``). Not a test: figures for bench/run.py.

Per round: the time the roll took per worker, against the server's readiness time, and
the requests that failed during the roll. The goal: 0 failed, and a worker replaced in at
most its readiness time + 20 ms. Two readiness times: how much longer ``start()`` takes
waiting for its 'serving' line than for its spawn (measured while the client runs, one
start of each kind between two rolls), and the replacements' own in the roll, from their
spawn to their 'serving' line as the pump saw them (``bench_monitor:Timeline``): on a
loaded machine the servers start slower during a roll than alone, and the difference per
worker between the roll and its replacements' readiness is what the supervisor adds. The
pump's CPU time and wake-ups per roll are kept too (they do not depend on the load as wall
time does).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import immortal
from common import cpu_ns, wakeups

SERVER = str(Path(__file__).resolve().parent.parent / "tests" / "programs" / "listener.py")
WORKERS = 4


#: the server's flags: it exits at once once it answered what it had in hand (``os._exit``);
#: ``run(finalize=True)`` measures it exiting through CPython's finalization instead
GRACEFUL = ["--graceful"]
FINALIZING = ["--graceful", "--finalize"]


def _start(name: str, ready: str, workers: int = 1, args: list[str] = GRACEFUL,
           **more: Any) -> immortal.Group:
    return immortal.start(SERVER, args, name=name, workers=workers, ready=ready,
                          listen=["tcp://127.0.0.1:0"], stop_timeout=5, **more)


def _in_roll(path: Path, began_ns: int) -> list[float]:
    """The replacements' readiness in the roll begun at ``began_ns``: spawn to 'serving',
    per replacement, from the Timeline monitor's notes."""
    spawned: dict[int, int] = {}
    spans = []
    for line in path.read_text().splitlines():
        ns, what, _, pid = line.split()
        if int(ns) < began_ns:
            continue
        if what == "spawn":
            spawned[int(pid)] = int(ns)
        elif int(pid) in spawned:
            spans.append((int(ns) - spawned.pop(int(pid))) / 1e6)
    return spans


def readiness_spans(args: list[str]) -> dict[str, float]:
    """One start waiting for the server's 'serving' line, one waiting for its spawn."""
    spans = {}
    for ready in ("spawn", "line:^serving"):
        began = time.monotonic()
        group = _start("b-ready", ready, args=args)
        spans[ready] = time.monotonic() - began
        group.stop()
    return spans


class Client:
    """One connection per request, as fast as it can, counting answers and failures."""

    def __init__(self, address: str) -> None:
        host, port = address[len("tcp://"):].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.answered = self.failed = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._ask)
        self.thread.start()

    def _ask(self) -> None:
        while not self.done.is_set():
            connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                response.read()
                self.answered += response.status == 200
                self.failed += response.status != 200
            except OSError:
                self.failed += 1
            finally:
                connection.close()

    def served_since(self, before: int) -> None:
        deadline = time.monotonic() + 10
        while self.answered <= before and time.monotonic() < deadline:
            time.sleep(0.01)  # a bench, not a test: the client served since

    def stop(self) -> None:
        self.done.set()
        self.thread.join(30)


def run(rounds: int, log: Callable[[str], None], finalize: bool = False) -> dict[str, Any]:
    args = FINALIZING if finalize else GRACEFUL
    log(f"rolling restart: {WORKERS} workers of a stdlib HTTP server ({' '.join(args)}), "
        f"{rounds} rolls under a client")
    notes = Path(tempfile.mkdtemp(prefix="b-roll-")) / "timeline"
    group = _start("b-roll", "line:^serving", WORKERS, args, monitor="bench_monitor:Timeline",
                   options={"path": str(notes)})
    client = Client(group.status().listen[0])
    per_worker: list[float] = []
    in_roll: list[float] = []
    spans: dict[str, list[float]] = {"spawn": [], "line:^serving": []}
    cpu: list[float] = []
    wakes: list[int] = []
    try:
        for _ in range(rounds):
            for ready, span in readiness_spans(args).items():
                spans[ready].append(span)
            client.served_since(client.answered)
            pump = group.status().pids["pump"]
            before, cpu0, wake0 = client.answered, cpu_ns(pump), wakeups(pump)
            began, began_ns = time.monotonic(), time.monotonic_ns()
            group.restart()
            per_worker.append(1000 * (time.monotonic() - began) / WORKERS)
            in_roll.append(statistics.mean(_in_roll(notes, began_ns) or [float("nan")]))
            cpu.append((cpu_ns(pump) - cpu0) / 1e6)
            wakes.append(wakeups(pump) - wake0)
            client.served_since(before)
    finally:
        client.stop()
        group.stop()
        shutil.rmtree(notes.parent, ignore_errors=True)
    ready = 1000 * (statistics.median(spans["line:^serving"]) - statistics.median(spans["spawn"]))
    return {"workers": WORKERS, "rounds": rounds, "server": args, "readiness_ms": ready,
            "per_worker_ms": per_worker, "answered": client.answered,
            "failed": client.failed, "pump_cpu_ms_per_roll": cpu,
            "pump_wakeups_per_roll": wakes, "ready_in_roll_ms": in_roll}


def _idle_stopped(pid: int) -> None:
    """SIGSTOP ``pid`` at a moment it holds no client's connection (its only socket is the
    listening one at fd 3): a request it had in hand would die with it, and the row
    measures what the others do meanwhile, not that loss."""
    while True:
        os.kill(pid, signal.SIGSTOP)
        while _state(pid) not in ("T", None):
            time.sleep(0.0005)
        sockets = [fd for fd in os.listdir(f"/proc/{pid}/fd")
                   if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")]
        if sockets == ["3"]:
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()[0].decode()


def _replaced(path: Path, k: int, since_ns: int, timeout: float = 10.0) -> tuple[int, int]:
    """When the pump spawned instance ``k``'s successor after ``since_ns``, and when it saw
    it say it serves (the Timeline monitor's notes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spawned: dict[int, int] = {}
        for line in path.read_text().splitlines():
            ns, what, instance, pid = line.split()
            if int(ns) < since_ns or instance != str(k):
                continue
            if what == "spawn":
                spawned[int(pid)] = int(ns)
            elif int(pid) in spawned:
                return spawned[int(pid)], int(ns)
        time.sleep(0.001)  # a bench, not a test
    raise TimeoutError(f"instance {k} was not ready again within {timeout} s")


def crashed(rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """One instance SIGKILLed at a time (each in turn, idle, after 1.1 s of uptime) while
    the client asks: the time to its successor's spawn and to its 'serving' line, and the
    requests that failed (the others serve meanwhile: none should)."""
    log(f"one crashed instance: {WORKERS} workers of a stdlib HTTP server, {rounds} SIGKILLs "
        "under a client")
    notes = Path(tempfile.mkdtemp(prefix="b-crash-")) / "timeline"
    notes.touch()
    group = _start("b-crash", "line:^serving", WORKERS, monitor="bench_monitor:Timeline",
                   options={"path": str(notes)})
    client = Client(group.status().listen[0])
    spawn_ms: list[float] = []
    ready_ms: list[float] = []
    try:
        for turn in range(rounds):
            k = turn % WORKERS
            entry = next(e for e in group.status().instances if e.instance == k)
            uptime = time.time() - (entry.started_at or 0.0)
            time.sleep(max(0.0, 1.1 - uptime))  # a stable run: restarted at once
            client.served_since(client.answered)
            _idle_stopped(entry.pid)
            killed = time.monotonic_ns()
            os.kill(entry.pid, signal.SIGKILL)
            spawned, serving = _replaced(notes, k, killed)
            spawn_ms.append((spawned - killed) / 1e6)
            ready_ms.append((serving - killed) / 1e6)
        client.served_since(client.answered)
    finally:
        client.stop()
        group.stop()
        shutil.rmtree(notes.parent, ignore_errors=True)
    return {"workers": WORKERS, "rounds": rounds, "spawn_ms": spawn_ms, "ready_ms": ready_ms,
            "answered": client.answered, "failed": client.failed}
