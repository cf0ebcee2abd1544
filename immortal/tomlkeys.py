"""Where each key of a TOML document is written: ``key_lines(text)`` maps every key path
to its line number; ``literals(text)`` every number, date or boolean to its text as written.

``tomllib`` gives the values and no positions, but an error in a configuration file must
name its line. This is a small reader of the document's structure alone, for a text that
``tomllib`` has already accepted: table headers, keys (bare, quoted, dotted), and the keys
inside inline tables; values are skipped, strings and arrays spanning lines included.
"""

from __future__ import annotations

from bisect import bisect_right

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Mapping

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0
        self.starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self.found: dict[tuple[object, ...], int] = {}
        #: the text of each value that is not a string, array or table (``22``, ``0o022``)
        self.literals: dict[tuple[object, ...], str] = {}

    def line(self, at: int | None = None) -> int:
        return bisect_right(self.starts, self.at if at is None else at)

    def peek(self, count: int = 1) -> str:
        return self.text[self.at:self.at + count]

    def blank(self, newlines: bool) -> None:
        """Skip spaces and comments, and line ends too if ``newlines``."""
        text = self.text
        while self.at < len(text):
            char = text[self.at]
            if char in " \t\r" or newlines and char == "\n":
                self.at += 1
            elif char == "#":
                end = text.find("\n", self.at)
                self.at = len(text) if end < 0 else end
            else:
                return

    def note(self, path: tuple[object, ...], at: int) -> None:
        self.found.setdefault(path, self.line(at))

    # keys ---------------------------------------------------------------------------------

    def key(self) -> tuple[str, ...]:
        """A dotted key: its parts."""
        parts = [self.simple_key()]
        self.blank(False)
        while self.peek() == ".":
            self.at += 1
            self.blank(False)
            parts.append(self.simple_key())
            self.blank(False)
        return tuple(parts)

    def simple_key(self) -> str:
        if self.peek() in ('"', "'"):
            return self.string()
        start = self.at
        while self.at < len(self.text) and self.text[self.at] in _BARE:
            self.at += 1
        return self.text[start:self.at]

    # values -------------------------------------------------------------------------------

    def string(self) -> str:
        """A string of any of the four kinds; its value (escapes decoded for keys)."""
        quote = self.peek()
        if self.peek(3) == quote * 3:
            end = self.text.find(quote * 3, self.at + 3)
            while quote == '"' and self._escaped(end):
                end = self.text.find(quote * 3, end + 1)
            end += 3
            while self.text[end:end + 1] == quote:  # up to two quotes may close the content
                end += 1
            value = self.text[self.at + 3:end - 3]
            self.at = end
            return value
        chars = []
        self.at += 1
        while self.text[self.at] != quote:
            char = self.text[self.at]
            if char == "\\" and quote == '"':
                self.at += 1
                char = _ESCAPES.get(self.text[self.at], self.text[self.at])
            chars.append(char)
            self.at += 1
        self.at += 1
        return "".join(chars)

    def _escaped(self, at: int) -> bool:
        count = 0
        while at - count - 1 >= 0 and self.text[at - count - 1] == "\\":
            count += 1
        return count % 2 == 1

    def value(self, path: tuple[object, ...]) -> None:
        char = self.peek()
        if char in ('"', "'"):
            self.string()
        elif char == "[":
            self.array(path)
        elif char == "{":
            self.inline_table(path)
        else:  # a number, a date, a boolean: up to what ends a value
            start = self.at
            while self.at < len(self.text) and self.text[self.at] not in ",]}\n#":
                self.at += 1
            self.literals[path] = self.text[start:self.at].strip()

    def array(self, path: tuple[object, ...]) -> None:
        self.at += 1
        index = 0
        while True:
            self.blank(True)
            if self.peek() == "]":
                self.at += 1
                return
            self.note(path + (index,), self.at)
            self.value(path + (index,))
            index += 1
            self.blank(True)
            if self.peek() == ",":
                self.at += 1

    def inline_table(self, path: tuple[object, ...]) -> None:
        self.at += 1
        while True:
            self.blank(False)
            if self.peek() == "}":
                self.at += 1
                return
            start = self.at
            key = path + self.key()
            self.note(key, start)
            self.blank(False)
            self.at += 1  # '='
            self.blank(False)
            self.value(key)
            self.blank(False)
            if self.peek() == ",":
                self.at += 1

    # the document -------------------------------------------------------------------------

    def document(self) -> dict[tuple[object, ...], int]:
        table: tuple[object, ...] = ()
        arrays: dict[tuple[object, ...], int] = {}  # [[x]]: how many items so far
        while True:
            self.blank(True)
            if self.at >= len(self.text):
                return self.found
            start = self.at
            if self.peek(2) == "[[":
                self.at += 2
                self.blank(False)
                name = self.key()
                index = arrays.get(name, 0)
                arrays[name] = index + 1
                table = name + (index,)
                self.note(name, start)
                self.at = self.text.index("]]", self.at) + 2
            elif self.peek() == "[":
                self.at += 1
                self.blank(False)
                table = self.key()
                self.at = self.text.index("]", self.at) + 1
            else:
                key = table + self.key()
                self.blank(False)
                self.at += 1  # '='
                self.blank(False)
                self.note(key, start)
                self.value(key)
                continue
            self.note(table, start)


def key_lines(text: str) -> dict[tuple[object, ...], int]:
    """Every key path of the TOML document ``text`` (already accepted by a TOML parser) to
    the line (from 1) where it is written: a table's path to its header's line, a dotted
    key's implied tables to the line of that key, an array item to the line it starts on.
    A text this reader cannot follow gives what it found up to there."""
    reader = _Reader(text)
    try:
        return reader.document()
    except (IndexError, ValueError):
        return reader.found


def literals(text: str) -> dict[tuple[object, ...], str]:
    """Every number, date or boolean of the TOML document ``text`` (already accepted by a
    TOML parser), by key path, as written: what the parser's value no longer says (``22``
    and ``0o026`` are one integer)."""
    reader = _Reader(text)
    try:
        reader.document()
    except (IndexError, ValueError):
        pass
    return reader.literals


def line_of(lines: Mapping[tuple[object, ...], int], path: tuple[object, ...]) -> int | None:
    """The line of ``path``, else of the nearest table above it that is written, else of
    the first key written below it (a table only implied by its sub-tables' headers)."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    below = [line for key, line in lines.items() if key[:len(path)] == path]
    return min(below) if below else None
