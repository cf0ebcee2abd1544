"""The ``logging`` monitor: every line and event becomes a record of Python's ``logging``.

So whatever handlers the pump's logging has — syslog, journald, a cloud logger, a rotating
file — receive the target's output, configured by a file you already have.

Options:

``logger``
    the logger's name (default ``immortal.<group name>``; in a group of several programs,
    ``immortal.<group name>.<program>``).
``stdout_level``, ``stderr_level``
    the level of stdout lines (default ``INFO``) and of stderr lines (default
    ``WARNING``): a level name (any case) or a number.
``config``
    a logging configuration applied in the pump at ``setup``: a JSON file holding a
    ``logging.config.dictConfig`` dictionary (the file's content starts with ``{``), or else
    a ``logging.config.fileConfig`` INI file. Without it, if the pump's root logger has no
    handler, records of level INFO and above go to the pump's stderr (``pump.log`` when
    detached, the terminal in ``development``).

Events are logged at INFO, except an exit with a non-zero code, by a signal, or a failure
to start: WARNING. Each record's ``extra`` carries ``stream`` (``"stdout"``, ``"stderr"`` or
``"event"``), ``pid`` (the target's, None when unknown), ``group`` (the group's name),
``instance`` (which instance of the program, in a group of several; else None),
``program`` (the program's name, in a group of several programs; else None) and
``event`` (the event's name, None for lines); an exit's record also has ``status``
(``ExitStatus.to_json()``), a respawn's ``why``, a ``dropped`` one ``count`` and a
``message`` one ``data`` (the JSON value). Lines are decoded as UTF-8 with
``errors="replace"``. Backpressure ``dropped`` events are logged at WARNING.

Across pump kills, each line reaches a file handler once: before each line the pump records
how far the first file handler the logger reaches (``FileHandler`` and its rotating and
watched kinds) had written; a pump killed around a line leaves its successor to look
whether that file grew past it (or, a ``RotatingFileHandler`` having rotated it in that
record, whether the new file has it), and to hand the line over again only if not. Other
handlers (a stream, syslog, the network) cannot be read back: a line in that instant may
reach them twice, as may a file rotated otherwise in that very record.
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import immortal
from immortal.safety import check_opened, check_path
from immortal.statewords import last_text

from . import PerInstance, readback
from .file import refuse_unknown

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

OPTIONS = ("logger", "stdout_level", "stderr_level", "config")
DEFAULT_LEVELS = {"stdout_level": logging.INFO, "stderr_level": logging.WARNING}


def _refuse(message: str) -> None:
    raise immortal.MonitorOptionsError(f"the logging monitor's {message}")


def _level(key: str, value: object) -> int:
    """A level name (any case) or a non-negative number, as a number."""
    if isinstance(value, str):
        text = value.strip()
        if text.isdecimal():
            return int(text)
        number = logging.getLevelName(text.upper())
        if isinstance(number, int):
            return number
        names = [logging.getLevelName(n) for n in (10, 20, 30, 40, 50)]
        import difflib  # only for the message

        close = difflib.get_close_matches(text.upper(), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        _refuse(f"{key!r} must be a level name such as {', '.join(names)}, or a number "
                f"(got {value!r}){hint}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _refuse(f"{key!r} must be a level name such as 'INFO', or a non-negative number "
                f"(got {type(value).__name__}: {value!r})")
    return value  # type: ignore[return-value]


def _is_json(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4096).lstrip().startswith(b"{")


def _trusted_config(path: Path) -> None:
    """A configuration names classes to import and files to write: only root's or ours,
    in a directory nobody else may change, is applied."""
    try:
        check_path(path, immortal.MonitorOptionsError)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            check_opened(fd, path, immortal.MonitorOptionsError)
        finally:
            os.close(fd)
    except immortal.MonitorOptionsError as exc:
        _refuse(f"config: {exc}")


def _unsafe_file(path: str) -> str | None:
    """Why a handler must not write ``path`` (a symlink, or a directory another user could
    change on its way), or None."""
    try:
        if os.path.islink(path):
            return f"refusing {path!r}: it is a symlink, which another user may have planted"
        check_path(path, OSError)
    except OSError as exc:
        return str(exc)
    return None


def _handler_files(data: object) -> list[str]:
    """The ``filename`` of every handler of a dictConfig dictionary."""
    handlers = data.get("handlers") if isinstance(data, dict) else None
    if not isinstance(handlers, dict):
        return []
    return [h["filename"] for h in handlers.values()
            if isinstance(h, dict) and isinstance(h.get("filename"), str)]


def _config(value: object) -> str:
    """The absolute path of a logging configuration that parses."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        _refuse(f"'config' must be the path of a logging configuration file (got {value!r})")
    path = Path(os.path.abspath(os.fspath(value)))  # type: ignore[arg-type, call-overload]
    if not path.exists():
        _refuse(f"config {str(path)!r} does not exist")
    if not path.is_file():
        _refuse(f"config {str(path)!r} is not a file")
    _trusted_config(path)
    try:
        if _is_json(path):
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("version") != 1:
                _refuse(f"config {str(path)!r} is JSON but not a dictConfig dictionary "
                        "(an object with \"version\": 1)")
            for filename in _handler_files(data):
                if not os.path.isabs(filename):
                    # The pump runs in "/": checked here against our directory, it would
                    # check a file the handler never writes.
                    _refuse(f"config {str(path)!r}: a handler's filename {filename!r} is "
                            "relative: give an absolute path (the pump runs in '/')")
                why = _unsafe_file(filename)
                if why:
                    _refuse(f"config {str(path)!r}: a handler's file: {why}")
        else:
            parser = configparser.ConfigParser(interpolation=None)
            with open(path) as handle:
                parser.read_file(handle)
            missing = [s for s in ("loggers", "handlers", "formatters")
                       if not parser.has_section(s)]
            if missing:
                _refuse(f"config {str(path)!r} is no fileConfig INI file (no section "
                        f"{', '.join(f'[{s}]' for s in missing)}); a JSON dictConfig file "
                        "must start with '{'")
    except OSError as exc:
        _refuse(f"config {str(path)!r} cannot be read: {exc.strerror or exc}")
    except (ValueError, configparser.Error) as exc:
        _refuse(f"config {str(path)!r} does not parse: {exc}")
    return str(path)


def _handlers() -> list[logging.Handler]:
    """Every handler of the root logger and of every logger created so far."""
    loggers: list[Any] = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            found.setdefault(id(handler), handler)
    return list(found.values())


def _first_file(logger: logging.Logger) -> logging.FileHandler | None:
    """The first file handler a record of ``logger`` reaches, or None."""
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, logging.FileHandler):
                return handler
        current = current.parent if current.propagate else None
    return None


class LoggingMonitor(immortal.Monitor):
    """Forwards lines and events to the logger ``options.get("logger", "immortal.<name>")``."""

    _logger: logging.Logger
    _levels: dict[str, int]
    _pid = PerInstance()  # each instance's target, in a group of several
    _ready = False  # configured, in delivered() or setup(), whichever comes first
    _witness: logging.FileHandler | None = None  # whose file tells what was written
    _seen: tuple[object, int, int] = (None, -1, 0)  # the witness's stream, fd and inode

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> Mapping[str, Any]:
        refuse_unknown("logging", options, OPTIONS)
        checked: dict[str, Any] = {}
        if "logger" in options:
            logger = options["logger"]
            if not isinstance(logger, str) or not logger.strip():
                _refuse(f"'logger' must be a logger name such as 'myapp.worker' "
                        f"(got {logger!r})")
            checked["logger"] = logger
        for key in DEFAULT_LEVELS:
            if key in options:
                checked[key] = _level(key, options[key])
        if options.get("config") is not None:
            checked["config"] = _config(options["config"])
        return checked

    def _prepare(self) -> None:
        if self._ready:
            return
        self._levels = {key[:-len("_level")]: int(self.options.get(key, default))
                        for key, default in DEFAULT_LEVELS.items()}
        try:
            self._configure()
        finally:
            # Taken after the configuration: a dictConfig disables the loggers that exist
            # before it (disable_existing_loggers). A configuration that fails raises: at
            # "pump start" the start fails with its message; later, the pump reports it
            # and the records go wherever logging sends them.
            self._logger = logging.getLogger(
                self.options.get("logger") or ".".join(
                    ["immortal", self.name, *([self.program] if self.program else [])]))
            self._witness = _first_file(self._logger)
        self._ready = True

    def position(self) -> int | None:
        stream = self._witness.stream if self._witness is not None else None
        if stream is None:
            return None
        try:
            if self._seen[0] is not stream:
                fd = stream.fileno()
                self._seen = (stream, fd, os.fstat(fd).st_ino)
            # The handler flushes each record: where the file's offset stands is where the
            # next record goes (cheaper than the text stream's tell()).
            offset = os.lseek(self._seen[1], 0, os.SEEK_CUR)
            return readback.position_of(self._seen[2], offset)
        except (OSError, ValueError):
            return None

    def delivered(self, stream: str, lines: list[bytes], offset: int,
                  position: int | None) -> int | None:
        """Whether the witness file grew past ``position``, or a file its rotation in that
        call started is not empty: before setup, only the line in doubt (one record: one
        line a call) can have written there."""
        self._prepare()
        if self._witness is None:
            return None
        files = readback.since(self._witness.baseFilename, position,
                               getattr(self._witness, "backupCount", 0))
        if files is None:
            return None
        return int(any(readback.read(path, start, 1) for path, start in files))

    def setup(self, why: str, message: str | None) -> None:
        self._prepare()
        text = why if not message else f"{why}; the previous pump's stderr ended with:\n" \
            + message.rstrip("\n")
        self._event(logging.INFO, "setup", text)

    def _configure(self) -> None:
        config = self.options.get("config")
        if config:
            if _is_json(Path(config)):
                with open(config) as handle:
                    logging.config.dictConfig(json.load(handle))
            else:
                logging.config.fileConfig(config, disable_existing_loggers=False)
            # An INI file's handler arguments are Python expressions, not checked in the
            # caller: its files are checked here, before any record is written to them.
            for handler in _handlers():
                if isinstance(handler, logging.FileHandler):
                    why = _unsafe_file(handler.baseFilename)
                    if why:
                        handler.close()
                        raise immortal.MonitorError(f"the logging monitor's config "
                                                    f"{config!r}: a handler's file: {why}")
        elif not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(
                "%(asctime)s %(name)s %(levelname)s %(message)s"))
            logging.getLogger().addHandler(handler)
            logging.getLogger().setLevel(logging.INFO)

    def _event(self, level: int, event: str, text: str, **extra: Any) -> None:
        self._logger.log(level, text, extra={"stream": "event", "pid": self._pid,
                                             "group": self.name, "event": event,
                                             "instance": self.instance,
                                             "program": self.program, **extra})

    def _line(self, stream: str, line: bytes) -> None:
        self._logger.log(self._levels[stream], line.decode("utf-8", "replace"),
                         extra={"stream": stream, "pid": self._pid, "group": self.name,
                                "event": None, "instance": self.instance,
                                "program": self.program})

    def spawn(self, pid: int) -> None:
        self._pid = pid
        self._event(logging.INFO, "spawn", f"spawn pid {pid}")

    def adopt(self, pid: int) -> None:
        self._pid = pid
        self._event(logging.INFO, "adopt", f"adopt pid {pid}")

    def respawn(self, pid: int, why: str = "exit") -> None:
        self._pid = pid
        text = f"respawn pid {pid}" + ("" if why == "exit" else f" ({why})")
        self._event(logging.INFO, "respawn", text, why=why)

    def exit(self, status: immortal.ExitStatus) -> None:
        code = getattr(status, "code", None)
        failed = bool(code) or getattr(status, "signal", None) is not None \
            or getattr(status, "error", None) is not None
        self._pid = status.pid if status.pid is not None else self._pid
        self._event(logging.WARNING if failed else logging.INFO, "exit",
                    f"exit pid {status.pid}: {last_text(status)}", status=status.to_json())
        self._pid = None

    def stdout(self, line: bytes) -> None:
        self._line("stdout", line)

    def stderr(self, line: bytes) -> None:
        self._line("stderr", line)

    def dropped(self, count: int) -> None:
        self._event(logging.WARNING, "dropped", f"dropped {count} lines (backpressure)",
                    count=count)

    def message(self, message: Any) -> None:
        text = json.dumps(message, ensure_ascii=False, default=str)
        self._event(logging.INFO, "message", f"message {text}", data=message)

    def reopen(self) -> None:
        # FileHandler (and its rotating kinds) opens its file again at the next record once
        # its stream is gone; WatchedFileHandler notices by itself.
        for handler in _handlers():
            if isinstance(handler, logging.FileHandler):
                why = _unsafe_file(handler.baseFilename)
                if why:  # it keeps writing the file it has open, and says why
                    self._event(logging.ERROR, "reopen", f"not reopened: {why}")
                    continue
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.flush()
                        handler.stream.close()
                        handler.stream = None  # type: ignore[assignment]
                finally:
                    handler.release()
        self._event(logging.INFO, "reopen", "reopened")

    def shutdown(self, reason: str) -> None:
        self._event(logging.INFO, "shutdown", f"shutdown: {reason}")
        for handler in _handlers():
            try:
                handler.flush()
            except Exception:
                pass
