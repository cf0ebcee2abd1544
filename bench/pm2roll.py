"""The rolling row's anchor: PM2's cluster reload (``pm2 reload``) of 4 workers of a Node
HTTP server (``bench/http_server.js``, the counterpart of the stdlib server immortal rolls),
under the same client (``rolling.Client``). Not a test: figures for bench/run.py.

PM2 is installed with npm into ``anchors.PM2_PREFIX`` when it is missing (the row says so
when it cannot be). Its daemon runs with a ``PM2_HOME`` of its own under a temporary
directory, and is killed (``pm2 kill``, then SIGKILL of what is left) before the row ends.

In cluster mode PM2's daemon is the cluster's primary: it holds the port and hands each
connection to a worker. ``pm2 reload`` replaces the workers ``CONCURRENT_ACTIONS`` at a time
(2 unless ``PM2_CONCURRENT_ACTIONS`` or ``--parallel`` says otherwise): a new worker is
forked, and once it listens the old one is sent SIGINT and polled until it is gone (every
``kill_retry_time``, 100 ms). Both ways are measured: PM2's default (up to N + 2 processes)
and ``--parallel 1`` (N + 1, immortal's bound with batch 1). A reload is timed as the
command takes it; the command's own start-up (a node interpreter loading PM2 and talking to
its daemon) is measured apart, with ``pm2 pid``, and taken off for the net figure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import anchors
from rolling import WORKERS, Client

SERVER = Path(__file__).resolve().parent / "http_server.js"
NAME = "b-roll"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readiness(env: dict[str, str]) -> float:
    """The server's own readiness, without PM2: ``node http_server.js`` spawned to its
    'serving' line (ms)."""
    began = time.monotonic()
    proc = subprocess.Popen(["node", str(SERVER)], env={**env, "PORT": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        took = 1000 * (time.monotonic() - began)
        if not line.startswith(b"serving"):
            raise RuntimeError(f"node {SERVER.name} said {line!r}, not 'serving'")
        return took
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Pm2:
    def __init__(self, work: Path) -> None:
        self.bin = str(anchors.PM2_PREFIX / "node_modules" / ".bin" / "pm2")
        self.env = dict(os.environ, PM2_HOME=str(work / "home"),
                        PM2_DISABLE_VERSION_CHECK="true")
        self.env.pop("PM2_CONCURRENT_ACTIONS", None)

    def __call__(self, *args: str) -> float:
        """Run ``pm2 ARGS``; how long it took (ms)."""
        began = time.monotonic()
        result = subprocess.run([self.bin, *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=120)
        took = 1000 * (time.monotonic() - began)
        if result.returncode:
            raise RuntimeError(f"pm2 {' '.join(args)}: {result.stdout.strip()[-500:]}")
        return took

    def daemon(self) -> int | None:
        try:
            return int((Path(self.env["PM2_HOME"]) / "pm2.pid").read_text())
        except (OSError, ValueError):
            return None


def run(rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    missing = anchors.install_pm2(log)
    if missing is not None or shutil.which("node") is None:
        note = missing or "node not found: PM2 skipped"
        log(f"rolling restart, PM2: {note}")
        return {"skipped": note}
    log(f"rolling restart, PM2: {WORKERS} workers of a Node HTTP server in cluster mode, "
        f"{rounds} reloads each way under a client")
    work = Path(tempfile.mkdtemp(prefix="b-pm2roll-"))
    pm2 = Pm2(work)
    port = _free_port()
    app = {"name": NAME, "script": str(SERVER), "exec_mode": "cluster", "instances": WORKERS,
           "kill_timeout": 5000, "autorestart": True, "env": {"PORT": str(port)},
           "out_file": "/dev/null", "error_file": "/dev/null"}
    (work / "app.json").write_text(json.dumps({"apps": [app]}))
    version = ""
    taken: dict[str, list[float]] = {"default": [], "parallel 1": []}
    failed = dict.fromkeys(taken, 0)
    spans: list[float] = []
    noop: list[float] = []
    daemon: int | None = None
    left: list[int] = []
    client = None
    try:
        pm2("start", str(work / "app.json"))
        daemon = pm2.daemon()
        version = subprocess.run([pm2.bin, "--version"], env=pm2.env, capture_output=True,
                                 text=True, timeout=60).stdout.strip().splitlines()[-1]
        client = Client(f"tcp://127.0.0.1:{port}")
        client.served_since(0)
        for _ in range(rounds):
            spans.append(readiness(pm2.env))
            noop.append(pm2("pid", NAME))
            for way, extra in (("default", ()), ("parallel 1", ("--parallel", "1"))):
                client.served_since(client.answered)
                before = client.failed
                taken[way].append(pm2("reload", NAME, *extra))
                client.served_since(client.answered)
                failed[way] += client.failed - before
        client.served_since(client.answered)
    finally:
        if client is not None:
            client.stop()
        if daemon is not None:
            left = [daemon, *anchors.descendants(daemon)]
        try:
            pm2("kill")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"pm2 kill: {exc}")
        if not anchors.wait_gone(left, 10):
            for pid in left:
                if anchors.proc_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            anchors.wait_gone(left, 5)
        shutil.rmtree(work, ignore_errors=True)
    cli = statistics.median(noop)
    return {"version": f"pm2 {version} (node {_node_version()})", "workers": WORKERS,
            "rounds": rounds, "readiness_ms": statistics.median(spans),
            "command_ms": cli,
            "per_worker_ms": {way: [t / WORKERS for t in times]
                              for way, times in taken.items()},
            "net_per_worker_ms": {way: [(t - cli) / WORKERS for t in times]
                                  for way, times in taken.items()},
            "failed_by_way": failed, "answered": client.answered if client else 0,
            "failed": client.failed if client else 0}


def _node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True,
                          timeout=30).stdout.strip()
