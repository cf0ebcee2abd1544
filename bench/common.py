"""Helpers of the benchmark: stamp FIFOs, /proc figures, the C target, statistics."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_target(directory: Path) -> tuple[Path, str]:
    """Compile bench/target.c into ``directory``: static if the C library allows it."""
    source = HERE / "target.c"
    out = directory / "target"
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("bench needs gcc (or cc) to build its target")
    for extra in (["-static"], []):
        result = subprocess.run([gcc, "-O2", *extra, "-o", str(out), str(source)],
                                capture_output=True, text=True)
        if result.returncode == 0:
            return out, f"{Path(gcc).name} -O2 {' '.join(extra)}".strip()
    raise SystemExit(f"cannot compile {source}: {result.stderr}")


class Stamps:
    """A FIFO the targets write ``K pid ns`` lines to; held open O_RDWR so writers never
    block and we never see EOF."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            os.mkfifo(path, 0o600)
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._partial = b""

    def read(self, timeout: float = 0.0) -> list[tuple[str, int, int]]:
        """Stamps available now, or the first to come within ``timeout``."""
        got: list[tuple[str, int, int]] = []
        ready, _, _ = select.select([self.fd], [], [], timeout)
        while ready:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            self._partial += data
            *lines, self._partial = self._partial.split(b"\n")
            for line in lines:
                kind, pid, ns = line.split()
                got.append((kind.decode(), int(pid), int(ns)))
            ready, _, _ = select.select([self.fd], [], [], 0)
        return got

    def wait(self, kind: str, timeout: float = 10.0) -> tuple[list[tuple[str, int, int]],
                                                              tuple[str, int, int]]:
        """Read until a stamp of ``kind`` comes: (every stamp read, that stamp)."""
        deadline = time.monotonic() + timeout
        seen: list[tuple[str, int, int]] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind!r} stamp on {self.path.name} within {timeout} s")
            for stamp in self.read(left):
                seen.append(stamp)
                if stamp[0] == kind:
                    return seen, stamp

    def clear(self) -> None:
        self.read(0)

    def close(self) -> None:
        os.close(self.fd)


def _sum_over_tasks(pid: int, name: str, count: Callable[[str], int]) -> int:
    """``count`` applied to /proc/PID/task/*/NAME, summed over every thread of ``pid``."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    total = 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/{name}") as handle:
                total += count(handle.read())
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in ns (schedstat: exact, not ticks)."""
    return _sum_over_tasks(pid, "schedstat", lambda text: int(text.split()[0]))


def cpu_ticks_ms(pid: int) -> float:
    """utime + stime from /proc/PID/stat, in ms (clock-tick resolution)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def wakeups(pid: int) -> int:
    """Context switches of every thread so far (each wake-up of an idle process is one)."""
    return _sum_over_tasks(pid, "status", lambda text: sum(
        int(line.split()[1]) for line in text.splitlines()
        if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt"))))


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
