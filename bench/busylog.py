"""The relay as a busy program logs: a C target writing lines through stdio, as fast as it can.

``bench/target.c``'s ``stdio`` mode writes N lines of 100 bytes (99 characters and a newline)
with one ``fwrite`` each through a 64 KiB stdio buffer: 64 KiB writes that cut lines
anywhere, as many programs log. The figure is the time from the signal that starts its
writes until its last line is in the log (the file polled every 2 ms), every line then
checked: none lost, none doubled. Subjects, in turns: the bare loop ``while :; do target;
done >> LOG`` (bash, the baseline), immortal's default ``file`` monitor (timestamped), its
``jsonl`` monitor, and supervisord (no timestamps) when it is installed.

``relay`` (bench/run.py) measures another workload: 64 KiB ``write()`` calls of whole lines,
from a target that formats each line with ``snprintf``, against ``target >> file``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from common import cpu_ns

ROW = "busylog"
MARKER = b"END-OF-RELAY"
# A target line, intact, as each subject writes it (its index captured).
TEXT = rb"(\d{10}) x{76}(?:x{12}|END-OF-RELAY)"
FORMATS = {
    "bare loop": re.compile(rb"^" + TEXT + rb"$", re.M),
    "supervisord": re.compile(rb"^" + TEXT + rb"$", re.M),
    "immortal file": re.compile(rb"^\S+ stdout \| " + TEXT + rb"$", re.M),
    "immortal jsonl": re.compile(rb'^\{"stream": "stdout", "line": "' + TEXT + rb'", ', re.M),
}
SUBJECTS = tuple(FORMATS)


def check(path: Path, offset: int, end: int, count: int, pattern: re.Pattern[bytes]
          ) -> dict[str, int]:
    """The target's lines in ``path`` from ``offset`` to ``end``: how many are there
    intact, how many of its ``count`` lines are missing, how many came twice, and the
    output's other lines (damaged ones)."""
    seen = bytearray(count)
    intact = doubled = 0
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(end - offset)
    for match in pattern.finditer(data):
        index = int(match.group(1))
        intact += 1
        if index < count:
            doubled += seen[index]
            seen[index] = 1
    return {"intact": intact, "lost": count - sum(seen), "doubled": doubled,
            "other": data.count(b"\n") - intact}


def wait_last(path: Path, offset: int, timeout: float) -> tuple[int, int]:
    """Poll (2 ms) until the last line is in ``path`` past ``offset``: (size, ns)."""
    deadline = time.monotonic() + timeout
    seen = offset
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else 0
        if size > seen:
            with open(path, "rb") as handle:
                start = max(offset, size - 400)
                handle.seek(start)
                tail = handle.read()
            if MARKER in tail:
                return start + len(tail), time.monotonic_ns()
            seen = size
        time.sleep(0.002)
    raise TimeoutError(f"no end marker in {path} within {timeout:g} s")


def _start(b: Any, name: str, args: list[str], out: Path
           ) -> tuple[Callable[[], None], list[int]] | None:
    """Start ``name`` on the target with ``args``: (its stop, the supervisor's pids)."""
    if name == "bare loop":
        child = subprocess.Popen(["bash", "-c", 'while :; do "$@"; done >> "$OUT"', "bash",
                                  b.target, *args], env=dict(os.environ, OUT=str(out)),
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        b.bare.append(child)
        return (lambda: b.bare_stop(child)), [child.pid]
    if name.startswith("immortal"):
        monitor = name.split()[1]
        group = b.im_start(f"b-busy-{monitor}", args, monitor=monitor,
                           options={"output": str(out)})
        return group.stop, b.im_pids(group)
    anchor = next((a for a in b.anchors if a.name == name), None)
    if anchor is None:
        return None
    anchor.start(ROW)
    return (lambda: anchor.stop(ROW)), anchor.supervisor_pids()


def run(b: Any, lines: int, rounds: int, log: Callable[[str], None]) -> None:
    """Every subject ``rounds`` times, in turns (the order reversed every other round)."""
    log(f"{ROW}: {lines} lines of 100 bytes through stdio, {rounds} rounds")
    timeout = 60 + lines / 20_000
    results: dict[str, list[dict[str, Any]]] = {}
    for r in range(rounds):
        order = list(SUBJECTS) if r % 2 == 0 else list(reversed(SUBJECTS))
        for name in order:
            key = name.replace(" ", "-")
            stamps = b.fifo(key, ROW)
            stamps.clear()
            out = b.work / f"{key}-{ROW}.log"
            args = ["stdio", str(stamps.path), str(lines)]
            try:
                started = _start(b, name, args, out)
            except Exception as exc:  # noqa: BLE001
                b.notes.append(f"{ROW}: {name} failed to start: {exc}")
                continue
            if started is None:
                continue
            stop, pids = started
            try:
                target = stamps.wait("S", 20)[1]
                offset = out.stat().st_size if out.exists() else 0
                cpu0 = sum(cpu_ns(p) for p in pids)
                t0 = time.monotonic_ns()
                os.kill(target[1], signal.SIGUSR1)
                end, t1 = wait_last(out, offset, timeout)
                cpu = sum(cpu_ns(p) for p in pids) - cpu0
                wrote = stamps.wait("E", 10)[1]
                found = check(out, offset, end, lines, FORMATS[name])
                results.setdefault(name, []).append({
                    "ms": (t1 - t0) / 1e6, "target_ms": (wrote[2] - t0) / 1e6,
                    "cpu_ms": cpu / 1e6, **found})
                b.add(ROW, name, (t1 - t0) / 1e6)
            except Exception as exc:  # noqa: BLE001
                b.notes.append(f"{ROW}: {name} round {r + 1}: {exc}")
            finally:
                stop()
                if out.exists():
                    os.truncate(out, 0)
    b.extra[ROW] = {"lines": lines, "rounds": results}


def render(x: dict[str, Any], summary: list[list[str]]) -> list[str]:
    """The section of docs/benchmarks.md, and its summary row (appended to ``summary``)."""
    import statistics

    from report import f, ratio, span, table, verdict

    rounds = x["rounds"]

    def med(subject: str, field: str = "ms") -> float | None:
        runs = rounds.get(subject)
        return statistics.median(u[field] for u in runs) if runs else None

    bare, sv = med("bare loop"), med("supervisord")
    rows = []
    for subject in SUBJECTS:
        runs = rounds.get(subject)
        if not runs:
            continue
        v = [u["ms"] for u in runs]
        rows.append([subject, f(med(subject)), span(v), ratio(med(subject), bare),
                     ratio(med(subject), sv), f(med(subject, "target_ms")),
                     f(med(subject, "cpu_ms")),
                     ", ".join(f"{u['lost']}/{u['doubled']}" for u in runs)])
    im = med("immortal file")
    faults = sum(u["lost"] + u["doubled"] for u in rounds.get("immortal file", []))
    ok = None if im is None or sv is None else im <= sv and faults == 0
    out = ["## Relay as a busy program logs (stdio)", "",
           f"{x['lines']} lines of 100 bytes (99 characters and a newline) written by the C "
           "target through stdio with a 64 KiB buffer, one `fwrite` a line, as fast as it "
           "can: 64 KiB writes that cut lines anywhere. From the signal that starts its writes "
           "until its last line is in the log (polled every 2 ms); then every line checked. "
           "The baseline is bash's `while :; do target; done >> LOG`. Goal: the `file` "
           "monitor, timestamps on, no slower than supervisord (no timestamps) in the same "
           "run, 0 lines lost or doubled.", ""]
    out += table(["subject", "median ms", "min – max ms", "× bare loop", "× supervisord",
                  "target's own write time ms", "supervisor CPU ms",
                  "lost/doubled (each round)"], rows)
    out += ["", "Why the ratios differ from the Relay rows above: there the target formats "
            "every line with `snprintf` (its own time is most of the bare redirect's) and "
            "writes whole lines; here it copies ready lines into its stdio buffer, so the bare "
            "loop is several times faster and each supervisor's own cost per byte shows in "
            "full. In both the target writes no faster than the supervisor empties the pipe: "
            "its own write time is the relay time.", "",
            f"Verdict: {verdict(ok)}.", ""]
    summary.append(["relay, busy stdio, file monitor", "≤ supervisord (same run), 0 lost "
                    "or doubled", f"{f(im)} ms ({ratio(im, bare)} bare loop, "
                    f"{ratio(im, sv)} supervisord), {faults} lost or doubled", verdict(ok)])
    return out
