"""The control socket's commands (``control``): what a request may say, checked.

Only these commands exist (one JSON object a request)::

    {"cmd": "status"}
    {"cmd": "stop", "timeout": 10.0}      grace period before KILL (optional); "kill": true,
                                          KILL at once (``Group.kill``)
    {"cmd": "restart", "timeout": 10.0}  every instance, or "instance": K alone; rolling
                                         ("batch": K) unless "all_at_once": true
    {"cmd": "signal", "signal": "USR1"}   to the target's process group (each instance's, or
                                          "instance": K's alone)
    {"cmd": "reopen"}                     monitors reopen their files (after logrotate)
    {"cmd": "scale", "workers": 4}        run 4 instances: more started, the highest retired;
                                          "caller": its pid; answered "scale": its id
                                          (``scalerecord``)
    {"cmd": "apply", "file": "apply.X.json"}  a group of several programs: its new ones,
                                          in that file of its directory (``programs``);
                                          "rolls": the programs the caller rolls next;
                                          "caller": its pid (it rolls them while it lives)

restart, signal and scale take "program": NAME in a group of several programs (restart,
signal: its instances alone; with "instance": K, its instance K); restart takes "rolling":
true to roll even a program of one instance that does not listen (an apply's), and
"below": N for the instances under N alone (an apply's: those it added run the new
definition already).
"""

from __future__ import annotations

import signal

from .errors import InvalidSpec

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from typing import Any

COMMANDS = ("status", "stop", "restart", "signal", "reopen", "scale", "apply")
#: the file an apply's programs come in, in the group's directory (a request has 64 KiB,
#: and each program its environment)


def apply_file(name: object) -> bool:
    """Whether ``name`` is an apply's file: ``apply.ID.json``, ID of 1 to 32 hex digits."""
    if not isinstance(name, str) or not name.startswith("apply.") \
            or not name.endswith(".json"):
        return False
    ident = name[len("apply."):-len(".json")]
    return 0 < len(ident) <= 32 and all(c in "0123456789abcdef" for c in ident)


def parse_signal(value: object) -> int:
    """A signal from a name ("HUP", "SIGHUP") or a number; InvalidSpec otherwise."""
    if isinstance(value, bool):
        raise InvalidSpec(f"'signal' must be a signal name or number (got {value!r})")
    if isinstance(value, int):
        try:
            return int(signal.Signals(value))
        except ValueError:
            raise InvalidSpec(f"'signal' {value} is no signal") from None
    if isinstance(value, str):
        name = value.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise InvalidSpec(f"'signal' {value!r} is no signal name (e.g. HUP, USR1)") \
                from None
    raise InvalidSpec(f"'signal' must be a signal name or number (got {value!r})")


def check_request(request: object) -> dict[str, Any]:
    """The request if it is one of the allowed commands with valid arguments."""
    if not isinstance(request, dict):
        raise InvalidSpec("a request must be a JSON object")
    cmd = request.get("cmd")
    if cmd not in COMMANDS:
        raise InvalidSpec(f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
    allowed = {"cmd", "expires"} | {
        "stop": {"timeout", "kill"},
        "restart": {"timeout", "instance", "batch", "all_at_once", "program", "rolling",
                    "below"},
        "signal": {"signal", "instance", "program"},
        "scale": {"workers", "program", "caller"},
        "apply": {"file", "rolls", "caller"}}.get(cmd, set())
    extra = set(request) - allowed
    if extra:
        raise InvalidSpec(f"command {cmd!r} takes no {', '.join(sorted(extra))}")
    expires = request.get("expires", 0.0)
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise InvalidSpec(f"'expires' must be a time (got {expires!r})")
    if "timeout" in request:
        timeout = request["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not 0 <= timeout <= 86400:
            raise InvalidSpec(f"'timeout' must be a number in [0, 86400] (got {timeout!r})")
    if "instance" in request:
        instance = request["instance"]
        if isinstance(instance, bool) or not isinstance(instance, int) or instance < 0:
            raise InvalidSpec(f"'instance' must be an instance number, 0 or more (got "
                              f"{instance!r})")
    if "below" in request:
        below = request["below"]
        if isinstance(below, bool) or not isinstance(below, int) or below < 1:
            raise InvalidSpec(f"'below' must be an instance count, 1 or more (got {below!r})")
    if "batch" in request:
        batch = request["batch"]
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidSpec(f"'batch' must be an int, 1 or more (got {batch!r})")
    for flag in ("all_at_once", "rolling", "kill"):
        if not isinstance(request.get(flag, False), bool):
            raise InvalidSpec(f"{flag!r} must be true or false (got {request[flag]!r})")
    if "program" in request and not isinstance(request["program"], str):
        raise InvalidSpec(f"'program' must be a program's name (got {request['program']!r})")
    if cmd == "apply" and not apply_file(request.get("file")):
        raise InvalidSpec(f"'file' must name an apply.ID.json file of the group's directory "
                          f"(got {request.get('file')!r})")
    rolls = request.get("rolls", [])
    if not isinstance(rolls, list) or not all(isinstance(name, str) for name in rolls):
        raise InvalidSpec(f"'rolls' must be a list of programs' names (got {rolls!r})")
    if "caller" in request:
        caller = request["caller"]
        if isinstance(caller, bool) or not isinstance(caller, int) or caller < 1:
            raise InvalidSpec(f"'caller' must be a process id, 1 or more (got {caller!r})")
    if cmd == "signal":
        request["signal"] = parse_signal(request.get("signal"))
    if cmd == "scale":
        workers = request.get("workers")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidSpec(f"'workers' must be a number of instances, 1 or more (got "
                              f"{workers!r})")
    return request
