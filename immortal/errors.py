"""The exception tree.

    ImmortalError                      root of everything immortal raises on purpose
    ├── InvalidSpec (ValueError)       an argument of start()/run is out of its domain
    │   ├── InvalidType (TypeError)    ... or of the wrong type
    │   └── UnknownName (ValueError)   an unknown strategy, keyword or option (with "did you mean")
    │       └── UnknownKeyword (TypeError)  an unexpected keyword argument, as Python has it
    ├── TargetNotFound (FileNotFoundError)   the file, exec or cwd does not exist
    ├── TargetNotExecutable (PermissionError) the file or exec cannot be run by us
    ├── MonitorError                   a monitor cannot be found, imported or used
    │   ├── MonitorNotFound (LookupError)
    │   └── MonitorOptionsError (ValueError)  a monitor's check() refused its options
    ├── StateDirError (PermissionError)      the instance directory is unsafe
    ├── AlreadyRunning                 a group of that name is running
    ├── NotRunning (LookupError)       no group of that name is running
    ├── StartError                     the group failed after detaching (exec error, monitor
    │   │                              setup, a target that died or was not ready in time)
    │   └── ListenError                a listen address cannot be bound (in use, not allowed)
    ├── StopTimeout (TimeoutError)     a group did not go away in time
    ├── NoAnswer (TimeoutError)        a group's control socket did not answer in time
    ├── ExecTimeout (TimeoutError)     immortal.exec: the program outlived its timeout
    ├── OutputTooLarge                 immortal.exec: it wrote more than max_buffer
    └── ChannelError (OSError)         the message channel is missing, full or closed

Each message names the field, what was expected, what was received, and what to do next.
The CLI maps them to exit codes: usage/validation 2, runtime 1, not running 3, already running 4.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .events import ExitStatus


#: What a monitor's code may raise without ending the process that calls it: any exception,
#: and SystemExit (``sys.exit`` in a hook or in ``check()`` is that monitor's error, not
#: the end of the pump, nor of the caller of ``start()``).
MONITOR_ERRORS = (Exception, SystemExit)


class ImmortalError(Exception):
    """Root of every error immortal raises on purpose."""

    exit_code = 1


class InvalidSpec(ImmortalError, ValueError):
    exit_code = 2


class InvalidType(InvalidSpec, TypeError):
    pass


class UnknownName(InvalidSpec):
    pass


class UnknownKeyword(UnknownName, TypeError):
    """An unknown keyword argument: Python calls that a TypeError, and so do we."""


class TargetNotFound(ImmortalError, FileNotFoundError):
    exit_code = 2


class TargetNotExecutable(ImmortalError, PermissionError):
    exit_code = 2


class MonitorError(ImmortalError):
    exit_code = 2


class MonitorNotFound(MonitorError, LookupError):
    pass


class MonitorOptionsError(MonitorError, ValueError):
    pass


class StateDirError(ImmortalError, PermissionError):
    exit_code = 2


class AlreadyRunning(ImmortalError):
    exit_code = 4

    def __init__(self, message: str, pids: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.pids = dict(pids or {})


class NotRunning(ImmortalError, LookupError):
    exit_code = 3


class StartError(ImmortalError):
    """The group failed after detaching: an exec error, a monitor's ``setup``, or a target
    that died, or was not ready in time, before it was ready (``status``: how it ended, an
    ``ExitStatus``; ``stderr``: its last lines on stderr). The group is gone then."""

    exit_code = 1

    def __init__(self, message: str, status: ExitStatus | None = None,
                 stderr: Iterable[str] = (), stopped: str | None = None) -> None:
        super().__init__(message)
        self.status = status  #: the target's ExitStatus, when it was spawned
        self.stderr = list(stderr)
        #: why the group was stopped before it was ready, when a stop ended the start
        self.stopped = stopped


class ListenError(StartError):
    """A listen address cannot be bound (in use, not ours to take, an unknown host); raised
    in the caller, before anything detaches. ``address`` is the address, as given."""

    def __init__(self, message: str, address: str = "") -> None:
        super().__init__(message)
        self.address = address


class StopTimeout(ImmortalError, TimeoutError):
    exit_code = 1


class NoAnswer(ImmortalError, TimeoutError):
    """The group's root process (frozen, or swamped) did not answer its control socket."""

    exit_code = 1


class _ExecEnded(ImmortalError):
    """``immortal.exec`` ended the program early: ``stdout`` and ``stderr`` hold what it
    wrote until then, ``status`` how it ended (killed, with everything it started)."""

    def __init__(self, message: str, stdout: bytes = b"", stderr: bytes = b"",
                 status: ExitStatus | None = None) -> None:
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr
        self.status = status


class ExecTimeout(_ExecEnded, TimeoutError):
    """The program ran past ``timeout``: it was killed, with every process it started."""


class OutputTooLarge(_ExecEnded):
    """The program wrote more than ``max_buffer`` bytes: it was killed, with every
    process it started."""


class ChannelError(ImmortalError, OSError):
    """The message channel is missing, closed, full, or got a value that is not JSON."""


def unusable_home(exc: OSError, home: object) -> StateDirError:
    """A StateDirError for an OSError met while creating or reading the immortal home."""
    where = f" ({str(exc.filename)!r})" if exc.filename and str(exc.filename) != str(home) else ""
    return StateDirError(f"the immortal home {str(home)!r} cannot be used: "
                         f"{exc.strerror or exc}{where}; set IMMORTAL_HOME to a directory "
                         "of yours")


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice spelled most like ``word``, if one is close enough to be a typo of it."""
    import difflib  # only when a message is built: it is not cheap to import

    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return close[0]
    # A short form of one choice alone ('prod' for 'production').
    longer = [choice for choice in choices if word and choice.startswith(word)]
    return longer[0] if len(longer) == 1 else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close choice exists, else ''."""
    close = closest(word, choices)
    return f" (did you mean {close!r}?)" if close else ""


def unknown_name(what: str, word: str, choices: Iterable[str],
                 kind: type[UnknownName] = UnknownName) -> UnknownName:
    """An UnknownName error (or ``kind``) listing the valid values, with a suggestion."""
    choices = sorted(choices)
    return kind(
        f"unknown {what} {word!r}{did_you_mean(word, choices)}; "
        f"valid: {', '.join(repr(c) for c in choices)}"
    )
