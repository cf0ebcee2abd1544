"""Environment files: ``KEY=VALUE`` lines, as ``env_file`` in ``immortal.toml`` and
``immortal run --env-file`` read them.

One variable a line; blank lines and lines starting with ``#`` are skipped; ``export KEY=VALUE``
is read as ``KEY=VALUE`` (a file a shell can source too); a value wholly in single or double
quotes loses them, and one that opens a quote must close it at its end (else it is an
error: a typo, not a value). Nothing else is interpreted: no ``$VAR`` expansion, no escapes, so the
value is what the file says.
"""

from __future__ import annotations

import re

from .errors import InvalidSpec, TargetNotFound

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")


class EnvFileError(InvalidSpec):
    """A line of an environment file that is not ``KEY=VALUE`` (``line``: its number)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def parse(text: str, where: str) -> list[tuple[str, str, int]]:
    """``(key, value, line)`` for each variable of ``text``, in order; ``where`` names the
    file in errors. Raises EnvFileError at the first line that is not ``KEY=VALUE``."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals or not _KEY.match(key):
            raise EnvFileError(f"{where}:{number}: expected KEY=VALUE, a KEY of letters, "
                               f"digits and _.-, not starting with a digit, '.' or '-' (got "
                               f"{raw.strip()!r})", number)
        value = value.strip()
        if value[:1] in ("'", '"'):
            if len(value) < 2 or value[-1] != value[0]:
                raise EnvFileError(f"{where}:{number}: the value of {key} opens a {value[0]} "
                                   f"quote that does not close at the end of the line (quote "
                                   f"the whole value, or none of it)", number)
            value = value[1:-1]
        found.append((key, value, number))
    return found


def read(path: str, shown: str | None = None) -> list[tuple[str, str, int]]:
    """The variables of the file at ``path`` (``shown``: how errors name it), as
    :func:`parse` gives them. A missing or unreadable file is TargetNotFound."""
    where = shown or path
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise TargetNotFound(f"environment file {where!r} cannot be read: {reason}") from None
    return parse(text, where)
