"""``python -m immortal`` and the ``immortal`` console script: the command line."""

import sys


def entry() -> None:
    argv = sys.argv[1:]
    if argv[:1] != ["run"]:
        from .cli import main

        sys.exit(main(argv))
    # First thing, before the command's own imports: 'immortal run' starts its first role
    # now, so that the role starts up while the command imports and checks its input.
    from . import standby

    standby.early(argv)
    try:
        from .cli import main

        code = main(argv)
    finally:
        for waiting in standby.pending_all():
            waiting.cancel()  # argparse refused the command line, say: reap it
    sys.exit(code)


if __name__ == "__main__":
    entry()
