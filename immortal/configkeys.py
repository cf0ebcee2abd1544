"""The keys of ``immortal.toml`` and the type each takes: a check per key that returns the
value as ``start()`` takes it (``"022"`` as a umask, one address as a list of them), or
raises ``Bad`` saying what was expected and what was received."""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Bad(Exception):
    """A value of the wrong type: the message says what was expected."""


def got(value: object) -> str:
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a float",
             list: "an array", dict: "a table"}
    shown = repr(value) if not isinstance(value, (dict, list)) or len(repr(value)) < 40 \
        else repr(value)[:37] + "..."
    return f"got {kinds.get(type(value), type(value).__name__)}: {shown}"


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise Bad(f"expected a string ({got(value)})")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Bad(f"expected a number of seconds ({got(value)})")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad(f"expected an integer ({got(value)})")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Bad(f"expected true or false ({got(value)})")
    return value


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Bad(f"expected an array of strings ({got(value)})")
    return value


def _listen(value: object) -> list[str]:
    """One address, or an array of them."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Bad(f"expected an address or an array of addresses, like "
                  f"['tcp://0.0.0.0:8000'] ({got(value)})")
    return value


def _umask(value: object) -> int:
    """An integer (``0o022``), or its octal digits as a string (``"022"``)."""
    if isinstance(value, str) and value and set(value) <= set("01234567"):
        return int(value, 8)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad(f"expected an octal integer like 0o022, or a string like \"022\" "
                  f"({got(value)})")
    return value


def _codes(value: object) -> list[int]:
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise Bad(f"expected an array of exit codes, like [0, 3] ({got(value)})")
    return value


def _size(value: object) -> str | int:
    """A memory size: bytes, or a string with a unit ("300M", "1.5G")."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Bad(f"expected a size like \"300M\" or a number of bytes ({got(value)})")
    return value


def variable(value: object) -> str:
    """An environment variable's value: a string, or a number written as one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Bad(f"expected a string ({got(value)})")
    return str(value)


#: A program's keys: start()'s keywords (``instances`` spells ``workers``), and env_file.
PROGRAM_KEYS: dict[str, Callable[[Any], Any]] = {
    "file": _string, "args": _strings, "exec": _string, "cwd": _string, "env": dict,
    "env_file": _string, "umask": _umask, "workers": _integer, "instances": _integer,
    "listen": _listen, "ready": _string, "ready_timeout": _number,
    "stop_timeout": _number, "policy": dict, "monitors": dict, "backpressure": _string,
    "channel": _boolean, "user": _string, "group": _string, "watch": _strings,
    "ignore": _strings, "watch_delay": _number, "memory_limit": _size,
    "memory_window": _number, "memory_children": _boolean, "comment": _string,
}
#: RestartPolicy's fields (tests/test_config.py checks that they are all here).
POLICY_KEYS: dict[str, Callable[[Any], Any]] = {
    "min_uptime": _number, "backoff_initial": _number, "backoff_factor": _number,
    "backoff_max": _number, "jitter": _number, "max_restarts": _integer, "window": _number,
    "final_exit_codes": _codes,
}
#: The group's keys, at the top of the file or of an environment.
GROUP_KEYS: dict[str, Callable[[Any], Any]] = {
    "name": _string, "strategy": _string, "start_timeout": _number, "programs": dict,
}
