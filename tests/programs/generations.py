"""A test target for a rolling restart's readiness: the first process of an instance (the
old one) and its later ones (the replacements) print different lines.

Usage: generations.py STATE [--old-ready] [--new-ready] [--delay S] [--interval S]

Each process appends its pid to STATE.<IMMORTAL_INSTANCE>; the first one there is the old
one (generation 0), any later one a replacement. Every --interval seconds (default 0.005)
it prints 'line <pid> <n>' (n = 1, 2, ...), alternately on stdout and stderr, one write of
fewer than PIPE_BUF bytes each; with --old-ready (the old one) or --new-ready (a
replacement, after --delay seconds, default 0), also 'serving <pid>' on stdout, every time.
SIGTERM: exit 0 at once.
"""

import os
import signal
import sys
import time

argv = sys.argv[1:]
state = f"{argv[0]}.{os.environ.get('IMMORTAL_INSTANCE', '0')}"
interval = float(argv[argv.index("--interval") + 1]) if "--interval" in argv else 0.005
delay = float(argv[argv.index("--delay") + 1]) if "--delay" in argv else 0.0
old = not os.path.exists(state) or os.path.getsize(state) == 0
with open(state, "a") as handle:
    handle.write(f"{os.getpid()}\n")
says_ready = "--old-ready" in argv if old else "--new-ready" in argv
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
pid = os.getpid()
began = time.monotonic()
n = 0
while True:
    n += 1
    os.write(1 if n % 2 else 2, f"line {pid} {n}\n".encode())
    if says_ready and time.monotonic() - began >= delay:
        os.write(1, f"serving {pid}\n".encode())
    time.sleep(interval)
