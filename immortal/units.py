"""systemd units that run a group in the foreground: ``immortal startup systemd NAME``.

The unit's ``ExecStart`` is an immortal command line that makes the group again in its own
process, ``immortal start-recorded --foreground NAME`` (``recorded``: from the group's
``spec.json``, every option as it was given): immortal is the service's main process
(``Type=notify``: it says ``READY=1`` once every target is ready, ``NotifyAccess=main``),
``KillMode=mixed`` (systemd's SIGTERM goes to immortal alone, which stops the targets with
their grace period; what is left after that is killed), ``Restart=on-failure`` (immortal
exits non-zero when the group gives up), ``ExecReload`` a SIGHUP (a rolling restart),
``TimeoutStopSec`` from the group's ``stop_timeout``.

A group from a configuration file (``startup systemd -c FILE``) is made by another command
line, ``immortal up --foreground -c FILE``, and reloaded by ``immortal reload -c FILE`` (the
file read again, its changes applied): the caller passes them as ``command`` and
``reload``; this module only writes what it is given.
Quoting follows systemd.syntax(7): each word in double quotes where it needs them, ``$``
and ``%`` escaped so that systemd expands nothing of ours.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence

from .errors import InvalidSpec

SYSTEM_DIR = "/etc/systemd/system"
USER_DIR = "~/.config/systemd/user"  #: under the user's home
MARGIN = 5  #: seconds systemd waits past immortal's own limits before it kills


# What a unit name may hold as it is (systemd.unit(5)), '@' aside: a group name may also
# hold '+' (``names.check_name``), which systemd refuses, and '@', which would make the unit
# an instance of a template ('immortal-a@b' of 'immortal-a@'): both are written in
# systemd-escape's form.
UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.")
UNIT_NAME_MAX = 255  #: bytes, systemd's limit


def unit_name(group: str) -> str:
    """The unit's file name for a group: ``immortal-NAME.service``, each character of
    NAME that systemd refuses, and '@', written ``\\xNN`` (``x+y``:
    ``immortal-x\\x2by.service``; ``a@b``: ``immortal-a\\x40b.service``, a plain unit).
    The other characters systemd takes stay as they are, so that the unit of a group whose
    name needs no escape keeps its name ('-' too, which systemd-escape would escape)."""
    escaped = "".join(c if c in UNIT_CHARS else "".join(f"\\x{b:02x}" for b in c.encode())
                      for c in group)
    name = f"immortal-{escaped}.service"
    if len(name.encode()) > UNIT_NAME_MAX:
        raise InvalidSpec(f"group {group!r} makes a unit name of {len(name.encode())} "
                          f"bytes, more than systemd takes ({UNIT_NAME_MAX}); pick a "
                          "shorter name, or one with fewer '+' or '@'")
    return name


def immortal_command() -> list[str]:
    """How this immortal is started again by systemd: the ``immortal`` script that runs
    now, by its real path, if that is what runs; else this Python with ``-m immortal``
    (never resolved: a virtual environment's python is found by its own path)."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "immortal" and os.access(script, os.X_OK):
        return [os.path.realpath(script)]
    return [sys.executable, "-m", "immortal"]


def exec_start(group: str, command: Sequence[str] | None = None) -> list[str]:
    """The unit's command line: ``command`` (a config file's, say) or the group's own
    record, ``immortal start-recorded --foreground NAME``."""
    if command is not None:
        return list(command)
    return [*immortal_command(), "start-recorded", "--foreground", group]


def quote(word: str, variables: bool = True) -> str:
    """One word of a command line (``variables``: where systemd expands ``$NAME``, as in
    ``ExecStart=``; not in ``Environment=``), as systemd reads it back."""
    escaped = word.replace("%", "%%")
    if variables:
        escaped = escaped.replace("$", "$$")
    if escaped and not any(c in escaped for c in ' \t\n"\'\\;'):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render(group: str, command: Sequence[str], *, user: bool, stop_timeout: float,
           start_timeout: float, environment: dict[str, str] | None = None,
           run_as: str | None = None, reload: Sequence[str] | None = None) -> str:
    """The unit's text. ``user``: a ``systemctl --user`` unit (wanted by
    ``default.target``), else a system one (``multi-user.target``; ``run_as``: its
    ``User=``). ``start_timeout``: how long immortal may take to say it is ready.
    ``reload``: ExecReload's command line (default: a SIGHUP, a rolling restart)."""
    lines = [
        "[Unit]",
        f"Description=immortal group {group}",
        "After=network.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=" + " ".join(quote(word) for word in command),
        "ExecReload=" + (" ".join(quote(word) for word in reload) if reload
                         else "/bin/kill -HUP $MAINPID"),
        "KillMode=mixed",
        "Restart=on-failure",
        f"TimeoutStartSec={math.ceil(start_timeout) + MARGIN}",
        f"TimeoutStopSec={math.ceil(stop_timeout) + MARGIN}",
    ]
    if run_as is not None and not user:
        lines.append(f"User={run_as}")
    for key, value in sorted((environment or {}).items()):
        lines.append("Environment=" + quote(f"{key}={value}", variables=False))
    lines += ["", "[Install]", f"WantedBy={'default.target' if user else 'multi-user.target'}",
              ""]
    return "\n".join(lines)


def unit_dir(user: bool) -> str:
    """Where ``--install`` writes a unit: the user's, or the system's."""
    return os.path.expanduser(USER_DIR) if user else SYSTEM_DIR
