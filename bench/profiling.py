"""Where the time goes: start-up and restart of immortal's roles, measured.

- interpreter floors: ``python -c pass``, ``python -S -c pass`` (no site), and ``python -c
  'import immortal._role'`` (what every role imports before it does anything);
- ``-X importtime`` of the caller (``python -m immortal run``) and of the real daemon and
  pump of a group (``PYTHONPROFILEIMPORTTIME=1`` reaches them through the environment; their
  stderr is their role log);
- an ``strace -f`` timeline of ``python -m immortal run``: every exec and fork from the
  command to the target's exec;
- ``py-spy`` (from the anchors' venv) on the pump and the daemon of a crash-looping group
  (no backoff), and on the pump relaying with the ``file`` monitor.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import immortal

import anchors

PYSPY = anchors.VENV / "bin" / "py-spy"


def _median_ms(argv: list[str], n: int = 10) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def parse_importtime(text: str) -> list[tuple[int, int, int, str]]:
    """(self µs, cumulative µs, depth, module) for each ``import time:`` line."""
    out = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        try:
            head, cum, field = line.split("|", 2)
            own_us = int(head.split(":")[1])
            cum_us = int(cum)
        except (ValueError, IndexError):
            continue
        depth = (len(field) - len(field.lstrip(" ")) - 1) // 2
        out.append((own_us, cum_us, depth, field.strip()))
    return out


def summarize_imports(rows: list[tuple[int, int, int, str]]) -> dict[str, Any]:
    total = sum(cum for _, cum, depth, _ in rows if depth == 0)
    top = sorted(((cum, name, depth) for _, cum, depth, name in rows if depth <= 1),
                 reverse=True)
    heavy = [(name, cum / 1000, depth) for cum, name, depth in top if cum >= 1500][:10]
    own = {}
    for own_us, _, _, name in rows:
        key = name.split(".")[0]
        own[key] = own.get(key, 0) + own_us
    by_package = sorted(((v / 1000, k) for k, v in own.items()), reverse=True)[:8]
    return {"total_ms": total / 1000, "modules": len(rows), "heavy": heavy,
            "by_package": by_package}


def imports(b: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    stamps = b.fifo("immortal", "prof")
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "immortal",
                           "run", b.target, "-n", "b-prof-imp", "--ready", "spawn", "--",
                           "stamp", "-"],
                          capture_output=True, text=True, env=env)
    result["caller (python -m immortal run)"] = summarize_imports(parse_importtime(proc.stderr))
    try:
        immortal.attach("b-prof-imp").stop()
    except Exception:  # noqa: BLE001
        pass
    os.environ["PYTHONPROFILEIMPORTTIME"] = "1"
    try:
        group = b.im_start("b-prof-roles", ["stamp", str(stamps.path)])
    finally:
        del os.environ["PYTHONPROFILEIMPORTTIME"]
    stamps.wait("S", 10)
    time.sleep(0.2)
    group.stop()
    for role in ("daemon", "pump"):
        text = (group.directory / f"{role}.log").read_text(errors="replace")
        result[f"{role} role"] = summarize_imports(parse_importtime(text))
    return result


def timeline(b: Any) -> dict[str, Any] | None:
    strace = shutil.which("strace")
    if strace is None:
        return None
    out = b.work / "strace.txt"
    stamps = b.fifo("immortal", "prof")
    stamps.clear()
    argv = [strace, "-f", "-ttt", "-qq", "-s", "400", "--seccomp-bpf", "-e",
            "trace=execve,clone,clone3,vfork,fork,exit_group", "-o", str(out),
            sys.executable, "-m", "immortal", "run", b.target, "-n", "b-prof-run", "--ready",
            "spawn", "--", "stamp", str(stamps.path)]
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stamps.wait("S", 20)
        time.sleep(0.5)
    finally:
        try:
            immortal.attach("b-prof-run").stop()
        except Exception:  # noqa: BLE001
            pass
        try:
            tracer.wait(15)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
    return parse_strace(out.read_text(errors="replace"), b.target)


_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")


def parse_strace(text: str, target: str) -> dict[str, Any]:
    """Execs, forks and exits of the traced tree, each process named by what it execs."""
    raw: list[tuple[float, int, str, str]] = []  # (ts, pid, kind, detail)
    label: dict[int, str] = {}
    parent: dict[int, int] = {}
    first_pid = None
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        pid, ts, call = int(match.group(1)), float(match.group(2)), match.group(3)
        if first_pid is None:
            first_pid = pid
        if call.startswith("execve(") and "= -1 " not in call and "resumed>" not in call:
            program = call.split('"')[1]
            if "immortal._role" in call and '"standby"' in call:
                # Started ahead by 'immortal run' (immortal/standby.py): argv names the role.
                name = "daemon role (standby)" if '"daemon"' in call else "pump role (standby)"
            elif "immortal._role" in call:
                name = "daemon role" if '\\"role\\": \\"daemon\\"' in call else "pump role"
            elif program == target:
                name = "target"
            elif pid == first_pid:
                name = "caller"
            else:
                name = Path(program).name
            label.setdefault(pid, name)
            raw.append((ts, pid, "exec", name))
        elif call.startswith(("clone(", "clone3(", "vfork(", "fork(", "<... clone",
                              "<... vfork", "<... fork")):
            ret = call.rsplit("=", 1)[-1].strip()
            if not call.endswith("<unfinished ...>") and ret.isdigit():
                parent[int(ret)] = pid
                raw.append((ts, pid, "fork", ret))
        elif call.startswith("exit_group("):
            raw.append((ts, pid, "exit", ""))
    raw.sort()
    if not raw:
        return {"events": []}

    def name(pid: int) -> str:
        if pid in label:
            return f"{label[pid]} [{pid}]"
        if pid in parent:
            return f"fork of {name(parent[pid])}"
        return str(pid)

    t0 = raw[0][0]
    events = []
    target_seen = False
    for ts, pid, kind, detail in raw:
        if target_seen and not (kind == "exit" and pid == first_pid):
            continue
        if kind == "exec":
            what = f"exec {name(pid)}"
            target_seen = detail == "target"
        elif kind == "fork":
            what = f"{name(pid)} forks {name(int(detail))}"
        else:
            what = f"{name(pid)} exits"
        events.append(((ts - t0) * 1000, what))
    return {"events": events}


def spawn_primitives(b: Any, n: int = 200) -> dict[str, float]:
    """From this interpreter: how long spawning the target takes until its first
    instruction, with the pump's ``subprocess.Popen`` arguments and with
    ``os.posix_spawn`` (vfork-like, no Python-level child set-up)."""
    stamps = b.fifo("immortal", "spawnprim")
    out_r, out_w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    argv = [b.target, "crash", str(stamps.path)]
    result: dict[str, list[float]] = {"subprocess.Popen (as process.spawn)": [],
                                      "os.posix_spawn": []}
    try:
        for i in range(n):
            stamps.clear()
            t0 = time.monotonic_ns()
            if i % 2 == 0:
                child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w,
                                         stderr=out_w, close_fds=True, process_group=0)
                pid = -1
                key = "subprocess.Popen (as process.spawn)"
            else:
                pid = os.posix_spawn(argv[0], argv, os.environ, setpgroup=0, file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, out_w, 2)])
                key = "os.posix_spawn"
            first = stamps.wait("S", 5)[1]
            result[key].append((first[2] - t0) / 1e6)
            if pid < 0:
                child.wait()
            else:
                os.waitpid(pid, 0)
    finally:
        os.close(out_r)
        os.close(out_w)
        os.close(devnull)
    return {k: statistics.median(v) for k, v in result.items() if v}


def _pyspy(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    return subprocess.Popen([str(PYSPY), "record", "-p", str(pid), "-r", "997", "-d",
                             str(max(1, round(seconds))), "-f", "raw", "-o", str(out),
                             "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_ROOTS = ("_run_module_as_main ", "_run_code ", "<module> (immortal/_role.py)",
          "main (immortal/", "Pump.run ", "Pump._loop ", "Daemon.run ", "Loop.run ",
          "Loop.turn ")
_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def parse_pyspy(path: Path) -> dict[str, Any]:
    """Inclusive and self shares of functions (file:function, lines merged)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {"samples": 0}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = []
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            name = f"{match.group(1)} ({_short(match.group(2))})" if match else frame
            frames.append(name)
        for name in set(frames):
            inclusive[name] += n
        if frames:
            own[frames[-1]] += n
    if not total:
        return {"samples": 0}
    inc = [(name, 100 * n / total) for name, n in inclusive.most_common()
           if not name.startswith(_ROOTS)][:14]
    slf = [(name, 100 * n / total) for name, n in own.most_common(10)]
    return {"samples": total, "inclusive": inc, "self": slf}


def _short(path: str) -> str:
    for marker in ("/immortal/", "/monitors/", "/bench/"):
        if marker in path:
            return marker.strip("/") + "/" + path.split(marker, 1)[1]
    return path.rsplit("/", 1)[-1] if path.startswith("/") else path


def pyspy_crash(b: Any, seconds: float = 3.0) -> dict[str, Any] | None:
    if not PYSPY.exists():
        return None
    group = b.im_start("b-prof-crash", ["crash", "-"],
                       policy={"min_uptime": 0, "backoff_initial": 0})
    result: dict[str, Any] = {}
    try:
        time.sleep(0.3)
        status = group.status()
        pids = status.pids
        spies = {role: _pyspy(pids[role], seconds, b.work / f"pyspy-{role}.txt")
                 for role in ("pump", "daemon")}
        for spy in spies.values():
            spy.wait(seconds + 30)
        result["restarts"] = group.status().restarts - status.restarts
        result["seconds"] = seconds
        for role in spies:
            result[role] = parse_pyspy(b.work / f"pyspy-{role}.txt")
    finally:
        group.stop()
    return result


def pyspy_relay(b: Any, mb: int = 20) -> dict[str, Any] | None:
    if not PYSPY.exists():
        return None
    stamps = b.fifo("immortal", "profrelay")
    out = b.work / "prof-relay.log"
    count = mb * 1_000_000 // 100
    group = b.im_start("b-prof-relay", ["lines", str(stamps.path), str(count)],
                       options={"output": str(out)})
    try:
        target = stamps.wait("S", 10)[1]
        pump = group.status().pids["pump"]
        spy = _pyspy(pump, 3.0, b.work / "pyspy-relay.txt")
        time.sleep(0.3)  # py-spy attached
        os.kill(target[1], signal.SIGUSR1)
        spy.wait(40)
        return {"mb": mb, "pump": parse_pyspy(b.work / "pyspy-relay.txt")}
    finally:
        group.stop()
        out.unlink(missing_ok=True)


def block_formatting(b: Any) -> dict[str, float]:
    """ms per 20 MB of 100-byte lines, in 64 KiB blocks written to a file: ways for a
    monitor to timestamp a block of lines, against writing the block as it is."""
    line = b"0000000000 " + b"x" * 88 + b"\n"
    block = line * 655
    count = 20_000_000 // len(block)
    prefix = b"2026-11-27T22:19:34.123Z stdout | "
    path = b.work / "blocks.out"

    def as_is(fd: int, data: bytes) -> None:
        os.write(fd, data)

    def split_join(fd: int, data: bytes) -> None:
        lines = data[:data.rfind(b"\n")].split(b"\n")
        max(map(len, lines))
        os.write(fd, prefix + (b"\n" + prefix).join(lines) + b"\n")

    def replace(fd: int, data: bytes) -> None:
        os.write(fd, prefix + data[:-1].replace(b"\n", b"\n" + prefix) + b"\n")

    result = {}
    for name, step in (("the block as it is (what the bare redirect writes)", as_is),
                       ("split into lines, check their length, join with the prefix, write "
                        "(the file monitor's batch path)", split_join),
                       ("`bytes.replace` of the newlines by newline + prefix, write", replace)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        t0 = time.perf_counter()
        for _ in range(count):
            step(fd, bytes(block))
        result[name] = (time.perf_counter() - t0) * 1000
        os.close(fd)
        path.unlink()
    return result


def memory_floors(b: Any) -> dict[str, float]:
    """PSS (MB) of an idle interpreter after various imports: what a role's memory is made
    of, and what it could be."""
    from common import pss_kb

    py = sys.executable
    sleep = "import time; time.sleep(60)"
    daemon_stdlib = "import json, selectors, socket, subprocess, signal, struct, mmap, fcntl; "
    cases = {
        "python (site, nothing imported)": [py, "-c", sleep],
        "python -S (nothing imported)": [py, "-S", "-c", sleep],
        "the daemon role's imports (`immortal._role`, `immortal.daemon`)":
            [py, "-c", "import immortal._role, immortal.daemon; " + sleep],
        "the daemon role's imports, the pump's (forked from it) and the `file` monitor":
            [py, "-c", "import immortal._role, immortal.daemon, immortal.pump, "
                       "immortal.monitoring, immortal.monitorload as m; m.resolve('file'); "
                       + sleep],
        "only the stdlib modules a daemon needs": [py, "-c", daemon_stdlib + sleep],
        "the same with -S": [py, "-S", "-c", daemon_stdlib + sleep],
    }
    procs = {k: subprocess.Popen(v) for k, v in cases.items()}
    try:
        time.sleep(2.0)
        return {k: pss_kb(p.pid) / 1024 for k, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def run(b: Any, log: Callable[[str], None]) -> dict[str, Any]:
    log("profile: interpreter floors, import times, exec timeline, py-spy")
    py = sys.executable
    prof: dict[str, Any] = {
        "floors": {
            "python -c pass": _median_ms([py, "-c", "pass"]),
            "python -S -c pass (no site)": _median_ms([py, "-S", "-c", "pass"]),
            "python -I -S -c pass": _median_ms([py, "-I", "-S", "-c", "pass"]),
            "python -c 'import immortal._role'": _median_ms([py, "-c", "import immortal._role"]),
            "python -c 'import immortal.pump, immortal_monitors.file'": _median_ms(
                [py, "-c", "import immortal.pump, immortal_monitors.file"]),
        }}
    for name, step in (("imports", imports), ("timeline", timeline),
                       ("spawn", spawn_primitives), ("memory", memory_floors),
                       ("blocks", block_formatting),
                       ("pyspy_crash", pyspy_crash), ("pyspy_relay", pyspy_relay)):
        try:
            prof[name] = step(b)
        except Exception as exc:  # noqa: BLE001 - a profile that fails is a note
            b.notes.append(f"profile {name} failed: {type(exc).__name__}: {exc}")
    if not PYSPY.exists():
        b.notes.append("profile: py-spy not installed (run with --anchors)")
    return prof


def render(p: dict[str, Any]) -> list[str]:
    def f(v: float) -> str:
        return f"{v:.1f}"

    out = ["## Where the time goes (measured in this run)", ""]
    if p.get("floors"):
        out += ["Interpreter start-up, median of 10 (ms):", ""]
        out += ["| command | ms |", "|---|---|"]
        out += [f"| `{k}` | {f(v)} |" for k, v in p["floors"].items()]
        out += [""]
    if p.get("imports"):
        out += ["`-X importtime` (inflates every figure a little; ms):", ""]
        out += ["| process | imports total | modules | heaviest (cumulative, depth ≤ 1) | "
                "own time by top package |", "|---|---|---|---|---|"]
        for proc, s in p["imports"].items():
            heavy = ", ".join(f"{'·' * d}{n} {f(v)}" for n, v, d in s["heavy"][:7])
            pk = ", ".join(f"{n} {f(v)}" for v, n in s["by_package"][:6])
            out.append(f"| {proc} | {f(s['total_ms'])} | {s['modules']} | {heavy} | {pk} |")
        out += [""]
    if p.get("timeline") and p["timeline"].get("events"):
        out += ["`strace -f` timeline of `python -m immortal run` (execs, forks and exits; "
                "strace slows each fork and exec, so the total is above the unstraced "
                "median). The command starts the first role in standby at once; the role "
                "waits for the command's checks, then detaches with DaemonContext's double "
                "fork (\"fork of fork of daemon role\" is the daemon proper), which forks "
                "the pump (\"fork of fork of fork ...\"), which spawns the target.", ""]
        out += ["| ms | Δ ms | event |", "|---|---|---|"]
        last = 0.0
        for t, what in p["timeline"]["events"]:
            out.append(f"| {f(t)} | {f(t - last)} | {what} |")
            last = t
        out += [""]
    if p.get("memory"):
        out += ["PSS of an idle interpreter after some imports (MB):", "",
                "| interpreter | PSS MB |", "|---|---|"]
        out += [f"| {k} | {v:.1f} |" for k, v in p["memory"].items()]
        out += [""]
    if p.get("spawn"):
        out += ["Spawning the target from the bench's interpreter until its first "
                "instruction, median of 100 each (ms):", "", "| how | ms |", "|---|---|"]
        out += [f"| {k} | {v:.3f} |" for k, v in p["spawn"].items()]
        out += [""]
    if p.get("blocks"):
        out += ["Timestamping 20 MB of 100-byte lines in 64 KiB blocks and writing them to a "
                "file, in the bench's interpreter (ms):", "", "| how | ms |", "|---|---|"]
        out += [f"| {k} | {v:.1f} |" for k, v in p["blocks"].items()]
        out += [""]
    crash = p.get("pyspy_crash")
    if crash:
        out += [f"`py-spy` (997 Hz, non-blocking) on a group in a crash loop without backoff: "
                f"{crash['restarts']} restarts in {crash['seconds']:g} s. Share of the "
                "samples in which a function was on the stack (inclusive) and at its top "
                "(self):", ""]
        for role in ("pump", "daemon"):
            s = crash.get(role) or {}
            if not s.get("samples"):
                continue
            out += [f"{role}: {s['samples']} samples "
                    f"(≈ {s['samples'] / 997 / crash['seconds'] * 100:.0f} % of a core)", ""]
            out += _pyspy_tables(s)
    relay = p.get("pyspy_relay")
    if relay and relay["pump"].get("samples"):
        s = relay["pump"]
        out += [f"`py-spy` on the pump relaying {relay['mb']} MB through the `file` monitor: "
                f"{s['samples']} samples.", ""]
        out += _pyspy_tables(s)
    return out


def _pyspy_tables(s: dict[str, Any]) -> list[str]:
    """The inclusive and self tables of one py-spy profile."""
    return (["| inclusive % | function |", "|---|---|"]
            + [f"| {v:.0f} | `{n}` |" for n, v in s["inclusive"][:12]]
            + ["", "| self % | function |", "|---|---|"]
            + [f"| {v:.0f} | `{n}` |" for n, v in s["self"][:8]] + [""])
