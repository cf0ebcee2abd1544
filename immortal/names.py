"""A group's name: what makes one valid; and the addresses the commands take (``NAME``,
``NAME:K``, ``GROUP/PROGRAM``, ``GROUP/PROGRAM:K``).

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
            f"'name' must be 1 to {MAX_NAME} bytes of letters, digits and ._+@-, starting "
            f"with a letter or a digit (got {name!r}); pick another name"
        )
    return name


def address(text: str) -> tuple[str, str | None, int | None]:
    """A command's address: ``NAME`` (the whole group), ``NAME:K`` (its instance K),
    ``GROUP/PROGRAM`` (a program of a group of several programs) or ``GROUP/PROGRAM:K``
    (its instance K): names have no colon and no slash."""
    where, colon, number = text.partition(":")
    name, slash, program = where.partition("/")
    if slash and not program:
        raise InvalidSpec(f"GROUP/PROGRAM must name a program after the slash, e.g. "
                          f"{name}/web (got {text!r})")
    if colon and not number.isdecimal():
        raise InvalidSpec(f"NAME[:K] must name an instance by its number, e.g. "
                          f"{where}:0 (got {text!r})")
    return name, program or None, int(number) if colon else None


def whom(name: str, program: str | None, instance: int | None) -> str:
    """The words for an address: "instance 2 of 'web'", "program 'api' of 'site'"..."""
    if program is not None and instance is not None:
        return f"instance {instance} of program {program!r} of {name!r}"
    if program is not None:
        return f"program {program!r} of {name!r}"
    return f"{'instance ' + str(instance) if instance is not None else 'the target'} of " \
           f"{name!r}"
