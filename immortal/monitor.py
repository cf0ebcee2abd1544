"""``immortal.Monitor``: the base class for monitors, with short method names.

Subclass it, override what you need, and register the class under the entry point group
``immortal.monitors`` (or name it as ``"package.module:Class"``)::

    class Printer(immortal.Monitor):
        @classmethod
        def check(cls, options):
            if "path" not in options:
                raise ValueError("Printer needs option 'path'")
        def stdout(self, line):
            ...

``check`` runs in the caller before anything detaches; every other method runs in the pump,
or, for a monitor that takes output and does not override ``delivered``, in a process of its
own that the pump forks (Linux), so that a pump's death does not cut its calls short.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .errors import MONITOR_ERRORS
from .events import ExitStatus
from .hookimpls import takes

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


class Monitor:
    """Receives a group's output and events. Every method may be overridden; none must."""

    #: The monitor's options, as returned by :meth:`check`.
    options: Mapping[str, Any]
    #: The group's name and instance directory.
    name: str
    directory: Path
    #: How many instances of its program the group runs (``workers``), and which one the
    #: call under way is about (output, spawn, adopt, respawn, exit, delivered): 0, 1...
    #: in a group of several; None in a group of one, and during the group's own events
    #: (setup, shutdown...). Offsets count in each instance's own streams.
    workers: int = 1
    instance: int | None = None
    #: The program whose output and events these are, in a group of several programs
    #: (``start_group``: each program has monitors of its own); None in a group of one.
    #: Set before ``setup``.
    program: str | None = None
    #: The pid of the pump that hands it its calls. Not always this process's: a monitor
    #: that takes output and has no ``delivered`` runs in a process of its own, which the
    #: pump forked, so that a pump's death never cuts one of its calls in half
    #: (docs/monitors.md, "Exactly once"). Set before ``setup``.
    pump: int = 0
    #: True for a monitor that shows the output on the terminal itself (``console``): in
    #: ``development`` the pump then does not echo the raw output there as well.
    terminal: bool = False

    def __init__(self, options: Mapping[str, Any], *, name: str = "",
                 directory: Path | str = ".") -> None:
        self.options = options
        self.name = name
        self.directory = Path(directory)

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Validate ``options`` in the caller; raise (any exception) to refuse them.

        Return the options to use, or None to keep them as given.
        """
        return None

    @classmethod
    def output_path(cls, options: Mapping[str, Any], directory: Path) -> str | None:
        """The file this monitor writes the output to, if any (shown by ``run``, ``logs``)."""
        return None

    def setup(self, why: str, message: str | None) -> None:
        """A pump starts: "pump start", "pump restart" (message: the dead pump's stderr)
        or "daemon restart"."""

    def spawn(self, pid: int) -> None:
        """The group's first target was spawned."""

    def adopt(self, pid: int) -> None:
        """After a "pump restart" or "daemon restart" setup: the target already running,
        taken over by the new pump (no spawn event comes for it)."""

    def respawn(self, pid: int, why: str = "exit") -> None:
        """A new target was spawned after the previous one ended; ``why`` is "exit" or
        "manual". (An override may leave ``why`` out.)"""

    def exit(self, status: ExitStatus) -> None:
        """A target ended; ``str(status)`` reads "exited with status 1" or "killed by SIGKILL"."""

    def stdout(self, line: bytes, offset: int = 0) -> None:
        """A line of the target's stdout, without the newline. ``offset`` is where it starts
        in the group's stdout stream, across pumps and targets. Each line reaches you once,
        across pump deaths: without :meth:`delivered` you run in a process of your own,
        which finishes a call its pump died in; only a kill of that process itself hands
        you its call again. (An override may leave ``offset`` out.)"""

    def stderr(self, line: bytes, offset: int = 0) -> None:
        """A line of the target's stderr, as :meth:`stdout`."""

    def lines(self, stream: str, lines: list[bytes], offset: int) -> None:
        """Several lines of ``stream`` at once (``offset`` is the first one's), as
        :meth:`block` splits them. By default, :meth:`stdout` or :meth:`stderr` for each;
        override it to handle a batch in one go."""
        hook = self.stdout if stream == "stdout" else self.stderr
        takes_offset = takes(getattr(type(self), stream), "offset")
        error: BaseException | None = None
        for line in lines:
            try:
                if takes_offset:
                    hook(line, offset)
                else:
                    hook(line)  # type: ignore[call-arg]
            except MONITOR_ERRORS as exc:  # the other lines go; the first error is told
                error = error or exc
            offset += len(line) + 1
        if error is not None:
            raise error

    def block(self, stream: str, data: bytes, offset: int) -> None:
        """Several lines of ``stream`` as one ``bytes``: each line followed by ``b"\\n"``, so
        ``data`` ends with one (a piece of an overlong line, or a last line the target did
        not end, comes alone with a newline added); ``offset`` is the first line's. By
        default, :meth:`lines` with the lines split apart; override it to handle the bytes
        as they are (the ``file`` monitor prefixes each line with one ``replace``). A
        monitor that overrides it gets its output this way only."""
        lines = data.split(b"\n")
        del lines[-1]  # the empty string after the last newline
        self.lines(stream, lines, offset)

    def position(self) -> int | None:
        """With :meth:`delivered`: where your output stands before an output call (an
        integer from 0 to 2**64 - 2 of your own meaning: the ``file`` monitor gives its
        file's size), or None. Called before every output call: keep it cheap."""
        return None

    def delivered(self, stream: str, lines: list[bytes], offset: int,
                  position: int | None) -> int | None:
        """Whether your output holds lines a dead pump gave you: called in a new pump,
        on a new instance, *before* :meth:`setup`, when the pump before was killed during
        an output call to you, or after it returned and before recording that it did.
        ``lines`` are that call's lines of ``stream`` (``offset`` the first one's),
        ``position`` what :meth:`position` returned before the call. Return how many of
        them, from the first, your output holds (True: all, False: none): they are not
        handed over again, the rest are. None (the default) when you cannot tell: all are
        handed over again, so a line may reach you twice. Overriding it makes the pump
        record each call first, and keeps a monitor that takes output in the pump (without
        it, such a monitor runs in a process of its own)."""
        return None

    def dropped(self, count: int) -> None:
        """Backpressure "drop": ``count`` of this monitor's lines were skipped since the last
        call (its queue was full: it was behind)."""

    def message(self, message: Any) -> None:
        """A JSON value the target sent on its message channel (``channel=True``)."""

    def send(self, message: Any) -> None:
        """Send a JSON value to the target over its message channel (``channel=True``).

        Raises ``immortal.ChannelError`` if the group has no channel or the target does
        not read it (the channel is full).
        """
        sender = getattr(self, "_send", None)
        if sender is None:
            from .errors import ChannelError

            raise ChannelError("this group has no message channel: start it with "
                               "channel=True")
        sender(message)

    def reopen(self) -> None:
        """Reopen any file held open: it may have been rotated away (``immortal reopen``)."""

    def shutdown(self, reason: str) -> None:
        """The group ends (stopped, gave up, or a final exit code)."""

    # The pluggy side: each hook calls the short method, so overriding the short name is
    # all a subclass does (pluggy ignores an unmarked override of a marked method).
    def monitor_setup(self, why: str, message: str | None) -> None:
        self.setup(why, message)

    def monitor_spawn(self, pid: int) -> None:
        self.spawn(pid)

    def monitor_adopt(self, pid: int) -> None:
        self.adopt(pid)

    def monitor_respawn(self, pid: int, why: str) -> None:
        if takes(type(self).respawn, "why"):
            self.respawn(pid, why)
        else:
            self.respawn(pid)  # type: ignore[call-arg]

    def monitor_exit(self, status: ExitStatus) -> None:
        self.exit(status)

    # Output reaches a Monitor through monitor_block if it overrides block (the host checks),
    # else through monitor_lines (whose default calls stdout/stderr for each line), so
    # there is no monitor_stdout/monitor_stderr glue here.
    def monitor_lines(self, stream: str, lines: list[bytes], offset: int) -> None:
        self.lines(stream, lines, offset)

    def monitor_block(self, stream: str, data: bytes, offset: int) -> None:
        self.block(stream, data, offset)

    def monitor_dropped(self, count: int) -> None:
        self.dropped(count)

    def monitor_message(self, message: Any) -> None:
        self.message(message)

    def monitor_reopen(self) -> None:
        self.reopen()

    def monitor_shutdown(self, reason: str) -> None:
        self.shutdown(reason)


def output_path(factory: Any, options: Mapping[str, Any], directory: Path) -> str | None:
    """The file a monitor (its class or module, ``factory``) writes the output to, with
    ``options``, for a group in ``directory``; None for one that is no ``Monitor``
    subclass, or writes none."""
    if isinstance(factory, type) and issubclass(factory, Monitor):
        return factory.output_path(options, directory)
    return None
