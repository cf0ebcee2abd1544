"""A chaos test target: numbered lines, alternately on stdout and stderr, at a steady rate.

Usage: numbered.py [--interval SECONDS] [--count N]

Line n (n = 1, 2, 3, ... for each instance) is 'out <gen> <n>' on stdout when n is odd and
'err <gen> <n>' on stderr when n is even. <gen> names this instance: '<pid>.<6 hex digits>'
(the random part tells apart two instances that got the same pid). Each line is one
write(2) of fewer than PIPE_BUF bytes, so it reaches the pipe whole or not at all, and is
flushed at once. One line every --interval seconds (default 0.002); after --count lines
(default: no limit) the program exits with status 0.

A SIGSEGV from outside must not write a core file: RLIMIT_CORE is set to 0.
"""

import os
import resource
import sys
import time


def main(argv):
    interval = 0.002
    count = None
    i = 0
    while i < len(argv):
        if argv[i] == "--interval":
            interval = float(argv[i + 1])
            i += 2
        elif argv[i] == "--count":
            count = int(argv[i + 1])
            i += 2
        else:
            sys.stderr.write(f"numbered.py: unknown argument {argv[i]!r}\n")
            return 2
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    gen = f"{os.getpid()}.{os.urandom(3).hex()}"
    n = 0
    due = time.monotonic()
    while count is None or n < count:
        n += 1
        if n % 2:
            os.write(1, f"out {gen} {n}\n".encode())
        else:
            os.write(2, f"err {gen} {n}\n".encode())
        due += interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - due > 10 * interval:
            due = now  # blocked on a full pipe (no pump reading): no burst to catch up
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
