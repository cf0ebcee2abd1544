"""The rolling-restart row: four workers of a stdlib HTTP server on one socket, a client
asking as fast as it can, rolled several times. Not a test: figures for bench/run.py.

Per round: the time the roll took per worker, against the server's readiness time (how
much longer ``start()`` takes waiting for its 'serving' line than for its spawn, measured
here too), and the requests that failed during the roll. The goal: 0 failed, and a worker
replaced in at most its readiness time + 20 ms.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

import immortal

SERVER = str(Path(__file__).resolve().parent.parent / "tests" / "programs" / "listener.py")
WORKERS = 4


def _start(name: str, ready: str, workers: int = 1) -> immortal.Group:
    return immortal.start(SERVER, ["--graceful"], name=name, workers=workers, ready=ready,
                          listen=["tcp://127.0.0.1:0"], stop_timeout=5)


def readiness_ms(rounds: int) -> float:
    """How much longer a start waits for the server's 'serving' line than for its spawn."""
    spans: dict[str, list[float]] = {"spawn": [], "line:^serving": []}
    for _ in range(rounds):
        for ready in spans:
            began = time.monotonic()
            group = _start("b-ready", ready)
            spans[ready].append(time.monotonic() - began)
            group.stop()
    return 1000 * (statistics.median(spans["line:^serving"]) - statistics.median(spans["spawn"]))


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

    def stop(self) -> None:
        self.done.set()
        self.thread.join(30)


def run(rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    log(f"rolling restart: {WORKERS} workers of a stdlib HTTP server, {rounds} rolls under "
        "a client")
    ready = readiness_ms(rounds)
    group = _start("b-roll", "line:^serving", WORKERS)
    client = Client(group.status().listen[0])
    per_worker: list[float] = []
    try:
        for _ in range(rounds):
            before = client.answered
            began = time.monotonic()
            group.restart()
            per_worker.append(1000 * (time.monotonic() - began) / WORKERS)
            deadline = time.monotonic() + 10
            while client.answered <= before and time.monotonic() < deadline:
                time.sleep(0.01)  # a bench, not a test: the client served since
    finally:
        client.stop()
        group.stop()
    return {"workers": WORKERS, "rounds": rounds, "readiness_ms": ready,
            "per_worker_ms": per_worker, "answered": client.answered,
            "failed": client.failed}
