"""The roles' signal calls with plain numbers: the C functions under ``signal.py``.

``signal.signal``, ``getsignal`` and ``pthread_sigmask`` wrap the functions of ``_signal``
to turn what they return into enum members (a ``Handlers``, a set of ``Signals``); for a
handler that is a function, ``signal.signal`` asks ``Handlers`` for it and catches the
ValueError. A forked pump's first such call runs that code of ``enum`` and touches those
members, pages it shared with its daemon until then, each of which then becomes a copy of
its own (bench/notes.md). The roles pass and compare numbers only: these take and give
ints, and the handlers as they are.
"""

from __future__ import annotations

import signal

__all__ = ["SIG_DFL", "SIG_IGN", "handle", "handler_of", "mask"]

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)
if TYPE_CHECKING:  # the same functions, as typeshed describes them
    from signal import getsignal as handler_of, pthread_sigmask as mask, signal as handle
else:
    try:
        from _signal import getsignal as handler_of, pthread_sigmask as mask, signal as handle
    except ImportError:  # pragma: no cover - not CPython
        from signal import getsignal as handler_of, pthread_sigmask as mask, signal as handle

SIG_DFL = int(signal.SIG_DFL)
SIG_IGN = int(signal.SIG_IGN)
