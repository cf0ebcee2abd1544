"""A caller of ``immortal.foreground.start_group``: ``fg_group.py NAME PROGRAMS_JSON
[START_TIMEOUT]``. It becomes the group's daemon (never returns); bad input prints
``error: ...`` and exits 2, as the command line does.
"""

import json
import sys

from immortal import ImmortalError, foreground

try:
    foreground.start_group(sys.argv[1], json.loads(sys.argv[2]),
                           start_timeout=float(sys.argv[3]) if len(sys.argv) > 3 else 30.0)
except ImmortalError as exc:
    print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(2)
