"""Superseded by ``bench/run.py``: this runs its quick mode.

``.venv/bin/python bench/quick.py [ARGS]`` is ``.venv/bin/python bench/run.py --quick [ARGS]``;
the figures go to ``docs/benchmarks.md``. ``bench/results-quick.md`` keeps the first
measurement (start latency and recovery time) that ``docs/design.md`` cites.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run.main(["--quick", *sys.argv[1:]]))
