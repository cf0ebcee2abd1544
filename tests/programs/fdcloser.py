"""A stress test target that closes every inherited fd but 0, 1 and 2 first, as daemons and
some servers do; then it writes numbered lines exactly as ``numbered.py`` (same arguments,
same line format).

Closing them drops whatever immortal may have left open in the target (a lock, a pipe's
other end): supervision must not depend on the target keeping them.
"""

import os
import sys

if __name__ == "__main__":
    try:
        limit = os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        limit = 1024
    os.closerange(3, max(limit, 1024))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from numbered import main

    sys.exit(main(sys.argv[1:]))
