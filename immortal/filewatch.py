"""Restart on a change: ``watch=`` paths and globs, ``ignore=`` globs, ``watch_delay``.

Checked in the caller (:func:`check`): every pattern is made absolute (against the
caller's working directory), and its fixed part, the path before the first component with
a wildcard, must exist. Watched in the pump (:class:`FileWatch`), whose loop restarts the
program: inotify through ctypes (``_linux.inotify``), one watch per directory, its fd in
the pump's selector like its pipes, so an idle watched group has no wake-up. A watched
directory, or the fixed part of a glob with ``**`` or several components, is watched with
every directory below it (those created later too); a file is watched through its
directory (an editor that saves by renaming a new file onto it replaces the inode).

Patterns: ``*`` and ``?`` match within one component, ``[...]`` a character class,
``**`` any number of components. A change matches a pattern when its path does (a
directory pattern: anything below it). An ``ignore`` glob without a ``/`` is matched
against each component of the path below the watched directory (``*.pyc``,
``__pycache__``), one with a ``/`` against the whole path (relative ones from the caller's
working directory); ``DEFAULT_IGNORE`` is always ignored too.

Debounce: each matching change puts the restart ``delay`` seconds later (trailing edge),
so a burst of writes gives one restart, once the files have been quiet that long.
"""

from __future__ import annotations

import os
import re
import time

from . import _linux, rolelog
from .errors import InvalidSpec, InvalidType, TargetNotFound
from .records import Record

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable, Iterable

#: Ignored in every watch: version control, caches and editors' temporary files.
DEFAULT_IGNORE = (".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache",
                  "*.pyc", "*.pyo", "*.swp", "*.swx", "*~", ".#*", "4913")
DEFAULT_DELAY = 0.5  #: seconds of quiet after a change before the restart
MAX_PATTERNS = 256

_WILD = re.compile(r"[*?\[]")
_MASK = (_linux.IN_MODIFY | _linux.IN_ATTRIB | _linux.IN_CLOSE_WRITE | _linux.IN_CREATE
         | _linux.IN_DELETE | _linux.IN_MOVED_FROM | _linux.IN_MOVED_TO
         | _linux.IN_DELETE_SELF | _linux.IN_MOVE_SELF | _linux.IN_ONLYDIR)


# ----------------------------------------------------------------- patterns (pure)
def _component(text: str) -> str:
    """The regex of one path component of a glob."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and text.find("]", i + 2) > 0:
            end = text.find("]", i + 2)
            body = text[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def translate(pattern: str) -> re.Pattern[str]:
    """An absolute glob (``*``, ``?``, ``[...]``, ``**``) as a regex of whole paths."""
    regex = ""
    for index, part in enumerate(pattern.split("/")):
        if part == "**":
            regex += "(?:/[^/]+)*"
            continue
        if index:
            regex += "/"
        regex += _component(part)
    return re.compile(regex + r"\Z", re.S)


class Pattern(Record):
    """One ``watch`` entry: the directory watched, whether below it too, and what matches
    (None: anything at or below ``root``)."""

    root: str
    recursive: bool
    regex: re.Pattern[str] | None

    def matches(self, path: str) -> bool:
        if self.regex is None:
            return _under(path, self.root)
        return bool(self.regex.match(path))


def _under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def pattern(entry: str) -> Pattern:
    """How an absolute ``watch`` entry is watched (it, or its fixed part, exists)."""
    parts = entry.split("/")
    wild = next((i for i, part in enumerate(parts) if _WILD.search(part)), None)
    if wild is None:
        if os.path.isdir(entry):
            return Pattern(entry, True, None)
        return Pattern(os.path.dirname(entry) or "/", False, translate(entry))
    root = "/".join(parts[:wild]) or "/"
    rest = parts[wild:]
    return Pattern(root, len(rest) > 1 or "**" in rest, translate(entry))


class Ignore(Record):
    """The ``ignore`` globs: by component (no ``/``) or by whole path."""

    names: tuple[re.Pattern[str], ...]
    paths: tuple[re.Pattern[str], ...]

    @classmethod
    def build(cls, globs: Iterable[str]) -> Ignore:
        every = [g.rstrip("/") or g for g in (*DEFAULT_IGNORE, *globs)]
        return cls(tuple(re.compile(_component(g) + r"\Z", re.S) for g in every if "/" not in g),
                   tuple(translate(g) for g in every if "/" in g))

    def ignored(self, path: str, root: str) -> bool:
        """Whether ``path`` (at or below the watched directory ``root``) is ignored."""
        below = os.path.relpath(path, root).split("/") if path != root else []
        if any(regex.match(name) for name in below for regex in self.names):
            return True
        at = path
        while self.paths and len(at) >= len(root):
            if any(regex.match(at) for regex in self.paths):
                return True
            at = os.path.dirname(at)
        return False


# ----------------------------------------------------------------- the caller's checks
def check(watch: object, ignore: object, delay: object,
          cwd: str) -> tuple[tuple[str, ...], tuple[str, ...], float]:
    """``watch``, ``ignore`` and ``watch_delay`` checked: the patterns made absolute, each
    fixed part found; the delay in seconds (default ``DEFAULT_DELAY``)."""
    entries = _strings("watch", watch, cwd)
    globs = _strings("ignore", ignore, cwd, absolute=False)
    if not entries and (globs or delay is not None):
        given = "ignore" if globs else "watch_delay"
        raise InvalidSpec(f"{given!r} needs 'watch' (got {given}={ignore if globs else delay!r}"
                          " and no path to watch)")
    seconds = DEFAULT_DELAY
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay != delay:
            raise InvalidType(f"'watch_delay' must be a number of seconds (got "
                              f"{type(delay).__name__}: {delay!r})")
        if not 0 <= delay <= 3600:
            raise InvalidSpec(f"'watch_delay' must be from 0 to 3600 seconds (got {delay!r})")
        seconds = float(delay)
    for entry in entries:
        needed = pattern(entry).root if _WILD.search(entry) else entry
        if not os.path.exists(needed):
            raise TargetNotFound(f"'watch' {entry!r}: {needed!r} does not exist; check the "
                                 f"path (a relative one starts from {cwd})")
    return entries, tuple(globs), seconds


def _strings(field: str, value: object, cwd: str, absolute: bool = True) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InvalidType(f"{field!r} must be a list of str (got {type(value).__name__}: "
                          f"{value!r}); wrap a single one in a list")
    if len(value) > MAX_PATTERNS:
        raise InvalidSpec(f"{field!r} holds at most {MAX_PATTERNS} patterns (got {len(value)})")
    out = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidType(f"'{field}[{index}]' must be a str (got {type(item).__name__}: "
                              f"{item!r})")
        if not item or "\0" in item:
            raise InvalidSpec(f"'{field}[{index}]' must be a path or a glob (got {item!r})")
        if absolute or "/" in item.rstrip("/"):
            item = os.path.normpath(os.path.join(cwd, item))
        out.append(item)
    return tuple(out)


# ----------------------------------------------------------------- the pump's watch
class FileWatch:
    """The watched files of one program: an inotify fd to put in a selector, and the
    debounced time of the restart a change asks for (``deadline``, ``take``)."""

    def __init__(self, entries: Iterable[str], ignore: Iterable[str], delay: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.patterns = [pattern(entry) for entry in entries]
        self.ignore = Ignore.build(ignore)
        self.delay = delay
        self.clock = clock
        self.due: float | None = None
        self.fd = -1
        self.libc: ctypes.CDLL | None = None
        self.dirs: dict[int, str] = {}  #: watch descriptor to its directory
        self.refused = False  #: a watch the kernel refused was reported

    def start(self) -> bool:
        """Set the watches up; False where inotify is not available (nothing watched)."""
        self.libc = _linux.inotify()
        if self.libc is None:
            return False
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            rolelog.report("watch", "immortal: pump: watch: inotify refused "
                           f"({os.strerror(_errno())}); nothing is watched\n")
            return False
        for found in self.patterns:
            self._add(found.root, found.recursive)
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def release(self) -> None:
        """Watch nothing more, the fd kept (``_linux.release_watches``): the group ends."""
        if self.libc is not None and self.fd >= 0:
            _linux.release_watches(self.libc, self.fd, self.dirs)
        self.dirs = {}

    def _root_of(self, path: str) -> str:
        return next((p.root for p in self.patterns if _under(path, p.root)), path)

    def _add(self, directory: str, recursive: bool, look: bool = False) -> bool:
        """Watch ``directory`` (and, ``recursive``, every directory below it not ignored);
        with ``look``, whether a path already below it matches: a directory made with its
        files at once (``mkdir -p``, an unpacked tarball, a checkout) or moved in holds
        files whose events came before its watch did."""
        assert self.libc is not None
        found = False
        todo = [directory]
        while todo:
            path = todo.pop()
            wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), _MASK)
            if wd < 0:
                code = _errno()
                if code not in (0, 2, 20) and not self.refused:  # gone, or no directory
                    self.refused = True
                    rolelog.report("watch", f"immortal: pump: watch: {path}: "
                                   f"{os.strerror(code)}; changes below it are missed\n")
                continue
            self.dirs[wd] = path
            if not recursive:
                continue
            try:
                entries = list(os.scandir(path))
            except OSError:
                continue
            for entry in entries:
                is_dir = entry.is_dir(follow_symlinks=False)
                if not (is_dir or look) or self.ignore.ignored(entry.path,
                                                               self._root_of(entry.path)):
                    continue
                if is_dir:
                    todo.append(entry.path)
                if look and not found:
                    found = any(p.matches(entry.path) for p in self.patterns)
        return found

    def on_ready(self, fd: object = None) -> None:
        """The selector's callback: read the events; a change that matches puts the
        restart ``delay`` from now."""
        changed = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break
            for wd, mask, name in _linux.inotify_events(data):
                changed = self._event(wd, mask, name) or changed
        if changed:
            self.due = self.clock() + self.delay

    def _event(self, wd: int, mask: int, name: bytes) -> bool:
        if mask & _linux.IN_Q_OVERFLOW:
            return True  # events were lost: a change may be among them
        directory = self.dirs.get(wd)
        if directory is None:
            return False
        if mask & _linux.IN_IGNORED:
            del self.dirs[wd]  # removed, or its watch dropped
            return False
        path = os.path.join(directory, os.fsdecode(name)) if name else directory
        root = self._root_of(path)
        if self.ignore.ignored(path, root):
            return False
        if mask & _linux.IN_ISDIR and mask & (_linux.IN_CREATE | _linux.IN_MOVED_TO):
            recursive = [p for p in self.patterns if p.recursive and _under(path, p.root)]
            if recursive and self._add(path, True, look=True):
                return True
        return any(p.matches(path) for p in self.patterns)

    def deadline(self) -> float | None:
        """When the restart a change asked for is due, or None."""
        return self.due

    def take(self) -> bool:
        """Whether the restart is due now (and, if so, no longer pending)."""
        if self.due is None or self.due > self.clock():
            return False
        self.due = None
        return True


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()
