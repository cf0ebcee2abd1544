"""The checks of the values a caller gives ``start()``: numbers in range, strings, the
program, its interpreter, its working directory, its environment.

Each check raises an error that names the field, what was expected and what was received.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Mapping, Sequence

from .errors import InvalidSpec, InvalidType, TargetNotExecutable, TargetNotFound, unknown_name
from .names import MAX_NAME

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any


def check_number(name: str, value: object, *, low: float = 0.0, high: float = math.inf,
                 integer: bool = False, allow_none: bool = False, above: bool = False,
                 items: bool = False) -> Any:
    """Return ``value`` if it is a real number in [low, high] (``above``: more than
    ``low``), else raise naming the field; ``items``: ``value`` is one of the field's items.
    The message starts with the field, which the command line turns into its option."""
    if value is None and allow_none:
        return None
    kind = ("ints" if items else "an int") if integer else ("numbers" if items else "a number")
    wanted = (int,) if integer else (int, float)
    span = _span(low, high, above)
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise InvalidType(f"{name!r} must be {kind} {span} "
                          f"(got {type(value).__name__}: {value!r})")
    if isinstance(value, float) and math.isnan(value) or not low <= value <= high \
            or above and value == low:
        raise InvalidSpec(f"{name!r} must be {kind} {span} (got {_shown(value)})")
    return value


def _span(low: float, high: float, above: bool) -> str:
    """The range as the user would write it: ``in [0, 255]``, ``1 or more``, ``more than
    0 and at most 86400``."""
    if above:
        return f"more than {_shown(low)}" + (
            f" and at most {_shown(high)}" if high != math.inf else "")
    if high == math.inf:
        return f"{_shown(low)} or more"
    return f"in [{_shown(low)}, {_shown(high)}]"


def _shown(number: float) -> str:
    """``number`` as a user writes it: 86400.0 as 86400, 0.5 as 0.5."""
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    return repr(number)


def default_name(file: str) -> str:
    stem = os.path.splitext(os.path.basename(file))[0]
    cleaned = re.sub(r"[^A-Za-z0-9._+@-]", "-", stem).lstrip(".-")[:MAX_NAME]
    return cleaned or "target"


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidType(f"{name} must be a str (got {type(value).__name__}: {value!r})")
    if "\0" in value:
        raise InvalidSpec(f"{name} must not contain a NUL byte (got {value!r})")
    return value


def check_args(args: object) -> tuple[str, ...]:
    if args is None:
        return ()
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise InvalidType(f"'args' must be a list of str (got {type(args).__name__}: {args!r}); "
                          "wrap a single argument in a list")
    return tuple(_check_str(f"'args[{i}]'", a) for i, a in enumerate(args))


def check_env(env: object) -> dict[str, str]:
    if env is None:
        return dict(os.environ)
    if not isinstance(env, Mapping):
        raise InvalidType(f"'env' must be a mapping of str to str "
                          f"(got {type(env).__name__}: {env!r})")
    result = {}
    for key, value in env.items():
        _check_str(f"'env' key {key!r}", key)
        if not key or "=" in key:
            raise InvalidSpec(f"'env' key must be non-empty and without '=' (got {key!r})")
        result[key] = _check_str(f"'env[{key!r}]'", value)
    return result


def _mode(path: str) -> str:
    return stat.filemode(os.stat(path).st_mode)


def check_file(file: object, cwd: str, has_exec: bool,
               env: Mapping[str, str] | None = None) -> str:
    """The absolute path of the program to run. A name without a slash that is not in
    ``cwd`` is looked up on the target's PATH, as a shell, supervisord and subprocess do."""
    if isinstance(file, os.PathLike):
        file = os.fspath(file)
    file = _check_str("'file'", file)
    if not file:
        raise InvalidSpec("'file' must be a path to the program to run (got '')")
    path = os.path.normpath(os.path.join(cwd, file))
    if os.sep not in file and not os.path.exists(path):
        search = (os.environ if env is None else env).get("PATH", os.defpath)
        found = _which(file, search)
        if found is None:
            meant = f" (did you mean {file + '.py'!r}?)" if os.path.isfile(path + ".py") else ""
            raise TargetNotFound(f"'file' {file!r} is neither in {cwd!r} nor on PATH"
                                 f"{meant or f' ({search})'}; check the name, or give a path")
        path = os.path.abspath(found)
    if not os.path.exists(path):
        raise TargetNotFound(f"'file' {path!r} does not exist; check the path")
    if os.path.isdir(path):
        raise TargetNotFound(f"'file' {path!r} is a directory; give the program inside it")
    if not os.access(path, os.R_OK):
        raise TargetNotExecutable(f"'file' {path!r} is not readable by us (mode {_mode(path)})")
    if not path.endswith(".py") and not has_exec:
        if not os.access(path, os.X_OK):
            raise TargetNotExecutable(
                f"'file' {path!r} is not executable (mode {_mode(path)}); "
                f"run 'chmod +x {path}' or give the interpreter to run it with (exec)"
            )
        _check_shebang(path)
    return path


def _check_shebang(path: str) -> None:
    """The interpreter a script names in its '#!' line must exist and be executable: the
    exec's own error would be ENOENT, which reads as if the script itself were missing."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return  # the exec will say why
    if not head.startswith(b"#!"):
        return
    words = head[2:].split(b"\n", 1)[0].split()
    if not words:
        return
    interpreter = os.fsdecode(words[0])
    if not os.path.exists(interpreter):
        raise TargetNotFound(f"'file' {path!r} names the interpreter {interpreter!r} in its "
                             "'#!' line, which does not exist; install it, fix the line, "
                             "or give the interpreter to run it with (exec)")
    if os.path.isdir(interpreter) or not os.access(interpreter, os.X_OK):
        raise TargetNotExecutable(f"'file' {path!r} names the interpreter {interpreter!r} "
                                  f"in its '#!' line, which is not an executable file "
                                  f"(mode {_mode(interpreter)})")


def check_exec(executable: object, cwd: str, env: Mapping[str, str]) -> str | None:
    if executable is None:
        return None
    if isinstance(executable, os.PathLike):
        executable = os.fspath(executable)
    executable = _check_str("'exec'", executable)
    if os.sep in executable:
        path = os.path.normpath(os.path.join(cwd, executable))
    else:
        found = _which(executable, env.get("PATH", os.defpath))
        if found is None:
            raise TargetNotFound(f"'exec' {executable!r} was not found on PATH")
        path = os.path.abspath(found)
    if not os.path.exists(path):
        raise TargetNotFound(f"'exec' {path!r} does not exist")
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise TargetNotExecutable(f"'exec' {path!r} is not an executable file "
                                  f"(mode {_mode(path)})")
    return path


def check_cwd(cwd: object) -> str:
    if cwd is None:
        return os.getcwd()
    if isinstance(cwd, os.PathLike):
        cwd = os.fspath(cwd)
    cwd = _check_str("'cwd'", cwd)
    path = os.path.abspath(cwd)
    if not os.path.isdir(path):
        raise TargetNotFound(f"'cwd' {path!r} is not an existing directory")
    return path


BACKPRESSURES = ("block", "drop")


def check_backpressure(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidType(f"'backpressure' must be a str (got {type(value).__name__}: "
                          f"{value!r})")
    if value not in BACKPRESSURES:
        raise unknown_name("backpressure", value, BACKPRESSURES)
    return value


def check_umask(value: object) -> int | None:
    return check_number("umask", value, high=0o777, integer=True, allow_none=True)


def check_timeout(name: str, value: object, above_zero: bool = False) -> float:
    """Seconds, from 0 (``above_zero``: more than 0) to a day."""
    return float(check_number(name, value, high=86400.0, above=above_zero))


MAX_COMMENT = 200  #: characters of a comment at most (it is shown in process titles)


def check_comment(value: object) -> str | None:
    """A label for the operator: one line of printable text, or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidType(f"'comment' must be a str (got {type(value).__name__}: {value!r})")
    if not value.isprintable() or len(value) > MAX_COMMENT:
        raise InvalidSpec(f"'comment' must be one line of printable text, at most "
                          f"{MAX_COMMENT} characters (got {value!r})")
    return value or None


MAX_WORKERS = 1024  #: instances of one group's program at most (each holds pipes and a journal)


def check_workers(value: object, name: str = "workers") -> int:
    """How many instances of the program a group runs: an int from 1 to ``MAX_WORKERS``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"{name!r} must be an int (got {type(value).__name__}: {value!r})")
    if not 1 <= value <= MAX_WORKERS:
        raise InvalidSpec(f"{name!r} must be from 1 to {MAX_WORKERS} (got {value})")
    return value


def _which(name: str, search: str) -> str | None:
    """``shutil.which``, imported here: the checks run in the caller, and the roles, which
    import this module through ``spec``, would carry ``shutil`` and its compressors'
    extensions for nothing (bench/notes.md)."""
    import shutil  # noqa: PLC0415

    return shutil.which(name, path=search)
