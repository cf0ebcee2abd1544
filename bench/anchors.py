"""The anchors: supervisord, circus and PM2, installed outside the project and driven by their
own command lines.

They are installed into their own places, never into the project's venv and never committed:
supervisor and circus (and the profilers py-spy and pyinstrument) into the venv
``/tmp/bench-anchors``, PM2 with ``npm install --prefix /tmp/bench-pm2 pm2``. ``install()``
creates what is missing; an anchor that will not install or run is skipped with a note.

Every anchor is configured up front with the same programs (``Prog``), each started and
stopped on demand with its control command, and runs in its own directory under the bench's
temporary directory (its sockets, pid file, logs and PM2_HOME), so nothing touches the
user's own supervisors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

VENV = Path(os.environ.get("BENCH_ANCHORS_VENV", "/tmp/bench-anchors"))
PM2_PREFIX = Path(os.environ.get("BENCH_PM2_PREFIX", "/tmp/bench-pm2"))
PY_PACKAGES = ("supervisor", "circus", "py-spy", "pyinstrument")


def _run(argv: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, **kwargs)


def install(log=print) -> list[str]:
    """Create the anchors' environments if missing; return notes on what failed."""
    notes = []
    python = VENV / "bin" / "python"
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        log(f"creating {VENV} ...")
        result = _run([base, "-m", "venv", str(VENV)])
        if result.returncode:
            return [f"cannot create {VENV}: {result.stdout.strip()[-300:]}"]
    for package in PY_PACKAGES:
        entry = {"supervisor": "supervisord", "circus": "circusd"}.get(package, package)
        if (VENV / "bin" / entry).exists():
            continue
        log(f"pip install {package} into {VENV} ...")
        result = _run([str(VENV / "bin" / "pip"), "install", "-q", package])
        if result.returncode:
            notes.append(f"pip install {package} failed: {result.stdout.strip()[-300:]}")
    missing = install_pm2(log)
    return notes + ([missing] if missing else [])


def install_pm2(log=print) -> str | None:
    """PM2 into ``PM2_PREFIX`` with npm, if it is not there; why it is not, if it cannot be
    (None: it is there)."""
    if (PM2_PREFIX / "node_modules" / ".bin" / "pm2").exists():
        return None
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "npm or node not found: PM2 skipped"
    log(f"npm install --prefix {PM2_PREFIX} pm2 ...")
    result = _run([npm, "install", "--prefix", str(PM2_PREFIX), "pm2"])
    if result.returncode:
        return f"npm install pm2 failed: {result.stdout.strip()[-300:]}"
    return None


@dataclass
class Prog:
    """A program every subject knows: its argv and how it is to be supervised.

    ``kind``: "stable" (restart at once), "crash" (a crash loop with backoff switched off
    where the subject allows it), "default" (the subject's default restart policy),
    "relay" (stdout to ``output``, timestamped where the subject can), "many" (``count``
    copies, for memory).
    """

    key: str
    argv: list[str]
    kind: str = "stable"
    output: str | None = None
    count: int = 1


def proc_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    kids = [int(p) for p in handle.read().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(proc_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Anchor:
    """One anchor supervisor: configure, launch its daemon, start/stop programs, shut down."""

    name = "?"
    daemon_pids: list[int]

    def __init__(self, workdir: Path, progs: dict[str, Prog]) -> None:
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.progs = progs
        self.daemon_pids = []
        self.notes: list[str] = []

    # Overridden.
    def available(self) -> bool: ...
    def version(self) -> str: ...
    def launch(self, autostart: str) -> None: ...
    def start(self, key: str) -> None: ...
    def stop(self, key: str) -> None: ...
    def _shutdown(self) -> None: ...

    def find_daemon(self) -> list[int]:
        """Living processes whose command line names this anchor's directory (its daemon,
        whatever pid it has now; its programs' command lines name other paths)."""
        mark = (str(self.dir) + "/").encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if mark in handle.read() and proc_alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def supervisor_pids(self) -> list[int]:
        """The anchor's own processes (not the programs it runs)."""
        return [p for p in self.daemon_pids if proc_alive(p)]

    def shutdown(self) -> None:
        """Its own shutdown, then SIGKILL whatever of it and its programs is left."""
        if not self.daemon_pids:
            return
        left = []
        for pid in self.daemon_pids:
            left += [pid, *descendants(pid)]
        try:
            self._shutdown()
        except Exception as exc:  # noqa: BLE001 - the kill below still cleans up
            self.notes.append(f"{self.name} shutdown failed: {exc}")
        if not wait_gone(left, 10):
            for pid in left:
                if proc_alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            wait_gone(left, 5)
        self.daemon_pids = []


class Supervisord(Anchor):
    name = "supervisord"

    def __init__(self, workdir: Path, progs: dict[str, Prog]) -> None:
        super().__init__(workdir, progs)
        self.conf = self.dir / "supervisord.conf"

    def available(self) -> bool:
        return (VENV / "bin" / "supervisord").exists()

    def version(self) -> str:
        out = _run([str(VENV / "bin" / "supervisord"), "--version"], 30).stdout.strip()
        return f"supervisord {out}"

    def _ctl(self, *args: str) -> None:
        result = _run([str(VENV / "bin" / "supervisorctl"), "-c", str(self.conf), *args], 120)
        if result.returncode and "ERROR" in result.stdout:
            raise RuntimeError(f"supervisorctl {' '.join(args)}: {result.stdout.strip()}")

    def launch(self, autostart: str) -> None:
        d = self.dir
        lines = [
            "[unix_http_server]", f"file={d}/supervisor.sock", "",
            "[supervisord]", f"logfile={d}/supervisord.log", f"pidfile={d}/supervisord.pid",
            f"childlogdir={d}", "user=root", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "", "[supervisorctl]", f"serverurl=unix://{d}/supervisor.sock", "",
        ]
        for prog in self.progs.values():
            lines += [f"[program:{prog.key}]", "command=" + " ".join(prog.argv),
                      f"autostart={'true' if prog.key == autostart else 'false'}",
                      "autorestart=true", "stopwaitsecs=5", "killasgroup=true",
                      "stopasgroup=true"]
            if prog.kind == "crash":
                lines += ["startsecs=0"]  # no STARTING phase, so no BACKOFF either
            elif prog.kind == "many":
                lines += [f"numprocs={prog.count}", "process_name=%(program_name)s_%(process_num)d"]
            if prog.output:
                lines += [f"stdout_logfile={prog.output}", "stdout_logfile_maxbytes=0",
                          "stderr_logfile=NONE"]
            else:
                lines += ["stdout_logfile=NONE", "stderr_logfile=NONE"]
            lines.append("")
        self.conf.write_text("\n".join(lines))
        _run([str(VENV / "bin" / "supervisord"), "-c", str(self.conf)], 60)
        deadline = time.monotonic() + 10
        pidfile = d / "supervisord.pid"
        while True:  # the file may exist a moment before its pid is written into it
            try:
                self.daemon_pids = [int(pidfile.read_text())]
                return
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def start(self, key: str) -> None:
        target = f"{key}:*" if self.progs[key].kind == "many" else key
        self._ctl("start", target)

    def stop(self, key: str) -> None:
        target = f"{key}:*" if self.progs[key].kind == "many" else key
        self._ctl("stop", target)

    def _shutdown(self) -> None:
        self._ctl("shutdown")


class Circus(Anchor):
    name = "circus"

    def __init__(self, workdir: Path, progs: dict[str, Prog]) -> None:
        super().__init__(workdir, progs)
        self.conf = self.dir / "circus.ini"
        self.endpoint = f"ipc://{self.dir}/ctl.sock"

    def available(self) -> bool:
        return (VENV / "bin" / "circusd").exists()

    def version(self) -> str:
        out = _run([str(VENV / "bin" / "python"), "-c",
                    "import circus; print(circus.__version__)"], 30).stdout.strip()
        return f"circus {out}"

    def _ctl(self, *args: str) -> None:
        result = _run([str(VENV / "bin" / "circusctl"), "--endpoint", self.endpoint,
                       "--timeout", "30", *args], 120)
        if result.returncode:
            raise RuntimeError(f"circusctl {' '.join(args)}: {result.stdout.strip()}")

    def launch(self, autostart: str) -> None:
        d = self.dir
        lines = ["[circus]", f"endpoint = {self.endpoint}",
                 f"pubsub_endpoint = ipc://{d}/pubsub.sock",
                 "multicast_endpoint = ",  # no UDP discovery socket
                 "statsd = false", f"pidfile = {d}/circusd.pid",
                 f"logoutput = {d}/circusd.log", ""]
        for prog in self.progs.values():
            lines += [f"[watcher:{prog.key}]", f"cmd = {prog.argv[0]}",
                      "args = " + " ".join(prog.argv[1:]),
                      f"autostart = {'true' if prog.key == autostart else 'false'}",
                      "graceful_timeout = 5", "copy_env = true"]
            if prog.kind == "crash":
                lines += ["max_retry = -1", "warmup_delay = 0"]
            elif prog.kind == "many":
                lines += [f"numprocesses = {prog.count}"]
            if prog.output:
                lines += ["stdout_stream.class = FileStream",
                          f"stdout_stream.filename = {prog.output}",
                          "stdout_stream.time_format = %Y-%m-%dT%H:%M:%S"]
            lines.append("")
        self.conf.write_text("\n".join(lines))
        _run([str(VENV / "bin" / "circusd"), "--daemon", str(self.conf)], 60)
        deadline = time.monotonic() + 20
        pidfile = d / "circusd.pid"
        while time.monotonic() < deadline:
            try:
                self.daemon_pids = [int(pidfile.read_text())]
                return
            except (OSError, ValueError):
                time.sleep(0.005)
        raise RuntimeError("circusd wrote no pid file within 20 s")

    def start(self, key: str) -> None:
        self._ctl("start", key)

    def stop(self, key: str) -> None:
        self._ctl("stop", key)

    def _shutdown(self) -> None:
        self._ctl("quit")


class PM2(Anchor):
    name = "pm2"

    def __init__(self, workdir: Path, progs: dict[str, Prog]) -> None:
        super().__init__(workdir, progs)
        self.env = dict(os.environ, PM2_HOME=str(self.dir / "home"),
                        PM2_DISABLE_VERSION_CHECK="true")
        self.bin = PM2_PREFIX / "node_modules" / ".bin" / "pm2"

    def available(self) -> bool:
        return self.bin.exists() and shutil.which("node") is not None

    def version(self) -> str:
        out = _run([str(self.bin), "--version"], 60, env=self.env).stdout.strip()
        node = _run(["node", "--version"], 30).stdout.strip()
        return f"pm2 {out.splitlines()[-1] if out else '?'} (node {node})"

    def _pm2(self, *args: str) -> str:
        result = _run([str(self.bin), *args], 120, env=self.env)
        if result.returncode:
            raise RuntimeError(f"pm2 {' '.join(args)}: {result.stdout.strip()[-500:]}")
        return result.stdout

    def _ecosystem(self, prog: Prog) -> Path:
        app: dict = {"name": prog.key, "script": prog.argv[0], "args": prog.argv[1:],
                     "interpreter": "none", "autorestart": True, "kill_timeout": 5000,
                     "exec_mode": "fork"}
        if prog.kind == "crash":
            app.update(min_uptime=0, max_restarts=10 ** 9, restart_delay=0)
        elif prog.kind == "stable":
            app.update(max_restarts=10 ** 9)
        elif prog.kind == "many":
            app.update(instances=prog.count)
        if prog.output:
            app.update(out_file=prog.output, error_file="/dev/null",
                       log_date_format="YYYY-MM-DDTHH:mm:ss.SSS")
        else:
            app.update(out_file="/dev/null", error_file="/dev/null")
        path = self.dir / f"{prog.key}.json"
        path.write_text(json.dumps({"apps": [app]}))
        return path

    def launch(self, autostart: str) -> None:
        for prog in self.progs.values():
            self._ecosystem(prog)
        self.start(autostart)  # the first command starts PM2's daemon
        pidfile = self.dir / "home" / "pm2.pid"
        self.daemon_pids = [int(pidfile.read_text())]

    def start(self, key: str) -> None:
        self._pm2("start", str(self.dir / f"{key}.json"))

    def stop(self, key: str) -> None:
        self._pm2("stop", key)

    def _shutdown(self) -> None:
        self._pm2("kill")


ALL = (Supervisord, Circus, PM2)
