"""``python -m immortal`` and the ``immortal`` console script: the command line."""

import os
import sys


def entry() -> None:
    argv = sys.argv[1:]
    try:
        here = os.getcwd()
    except OSError:  # a working directory removed under us: nothing of it to import
        here = None
    if here is not None and here not in sys.path and "" not in sys.path:
        # A monitor named 'package.module:Class' from the directory the command runs in
        # is found by the 'immortal' script as by 'python -m immortal' (which puts the
        # directory first); last here, so that a file there never hides an installed
        # package of ours.
        sys.path.append(here)
    if argv[:1] == ["run"]:
        # First thing, before the command's own imports: 'immortal run' starts its first
        # role now, so that it starts up while the command imports and checks its input
        # (cancelled below if it goes unused).
        from . import standby

        standby.early(argv)
    from .cli import main

    try:
        code = main(argv)
    finally:
        loaded = sys.modules.get("immortal.standby")
        if loaded is not None:
            for waiting in loaded.pending_all():
                waiting.cancel()  # unused: a check failed, or the guess from argv was wrong
    sys.exit(code)


if __name__ == "__main__":
    entry()
