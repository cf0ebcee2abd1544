"""A group's name: what makes one valid.

Apart from ``spec`` because every command that attaches to a group by name needs the check
and nothing else of ``spec``, which is costly to import (dataclasses, enum, shutil).
"""

from __future__ import annotations

import re

from .errors import InvalidSpec, InvalidType

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]*")
MAX_NAME = 64


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidType(f"'name' must be a str (got {type(name).__name__}: {name!r})")
    size = len(name.encode("utf-8", "surrogateescape"))
    if not 0 < size <= MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidSpec(
            f"'name' must be 1 to {MAX_NAME} bytes of letters, digits and ._+@- not starting "
            f"with '.' or '-' (got {name!r}); pick another name"
        )
    return name
