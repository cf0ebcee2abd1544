"""Did ``relay._keep_heap`` pay? The relay's read loop with and without what it did: one
1 MiB block allocated (by mmap) and freed before the first read, which raises glibc's mmap
and trim thresholds for the process (see bench/notes.md).

``.venv/bin/python bench/keep_heap.py [MB] [RUNS]``: a writer process fills the pipe with
lines (10, 30 and 100 bytes) as fast as it can; the real ``Relay`` reads them into a journal
and hands each block to a monitor-like ``emit`` that makes a timestamped copy (as the file
monitor does). Per variant, in fresh processes taken in turns: the reader's CPU time and
minor page faults for MB megabytes, min / median over RUNS runs.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys

WRITER = """
import os, sys
chunk = b"x" * ({width} - 1) + b"\\n"
chunk *= 262144 // len(chunk)
left = {mb} * 1024 * 1024
while left > 0:
    left -= os.write(1, chunk[:left])
"""


def one(tuned: bool, mb: int, width: int) -> dict[str, float]:
    from immortal import relay

    if tuned:
        bytes(1 << 20)  # what _keep_heap did
    r, w = relay.make_pipe()
    journal = relay.open_journal(relay.make_journal())
    writer = subprocess.Popen([sys.executable, "-c", WRITER.format(mb=mb, width=width)],
                              stdout=w)
    os.close(w)
    os.set_blocking(r, True)
    sizes = [0]

    def emit(block: bytes, offset: int, end: int) -> None:
        sizes[0] += len(block.replace(b"\n", b"\n2026-01-01T00:00:00 "))

    reader = relay.Relay(r, journal, 0, emit)
    before = resource.getrusage(resource.RUSAGE_SELF)
    while reader.read():
        pass
    reader.deliver(final=True)
    after = resource.getrusage(resource.RUSAGE_SELF)
    writer.wait()
    return {"cpu_ms": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            * 1000, "minflt": after.ru_minflt - before.ru_minflt}


def main(mb: int, runs: int) -> None:
    print(f"{mb} MB through the relay, {runs} runs each; CPU ms and minor faults, "
          "min / median")
    print("| line bytes | variant | reader CPU ms | minor faults |\n|---|---|---|---|")
    for width in (10, 30, 100):
        results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for _ in range(runs):
            for tuned in (True, False):
                out = subprocess.run([sys.executable, __file__, "--one", str(int(tuned)),
                                      str(mb), str(width)],
                                     capture_output=True, text=True, check=True)
                results[tuned].append(json.loads(out.stdout))
        for tuned in (True, False):
            cpu = [r["cpu_ms"] for r in results[tuned]]
            flt = [r["minflt"] for r in results[tuned]]
            name = "with the 1 MiB free" if tuned else "without"
            print(f"| {width} | {name} | {min(cpu):.0f} / {statistics.median(cpu):.0f} | "
                  f"{min(flt):.0f} / {statistics.median(flt):.0f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one(sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 256,
             int(sys.argv[2]) if len(sys.argv) > 2 else 5)
