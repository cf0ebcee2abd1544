"""Targets run as another user: ``user=`` and ``group=``, checked in the caller, applied at
each spawn.

The supervisors stay root: they hold the group's files (the lock, ``status.json``, the
journal, all root's, in a 0700 directory), bind the listen sockets (in the caller, before
anything detaches: ports below 1024 included), signal and reap the targets, and take over
from one another. Only the target drops its privileges, in the child between the ``fork``
and the ``exec`` (subprocess's ``user``, ``group`` and ``extra_groups``, carried out by its
C code in that order): the supplementary groups become exactly the user's
(``os.getgrouplist``, what ``initgroups`` sets), then the gid, then the uid. Its pipes, its
``target.lock`` and its sockets are open files it inherits, so it needs no right on the
directory. ``HOME``, ``USER`` and ``LOGNAME`` are the user's (``Spec.target_env``).

The names are looked up again at each spawn (:func:`resolve`): a user removed since the
start is a failed spawn, retried with backoff, never a target left running as root; a
restart asked then is refused (:func:`still_there`), the running targets left alone. A
number with no entry in the database (a container's arbitrary uid) is taken as is: that
uid, the gid ``group=`` gives or else the same number, no other group, ``HOME`` ``/``.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd

from .errors import InvalidSpec, InvalidType
from .records import Record


class Drop(Record):
    """Who a target runs as: what the child sets before its ``exec``."""

    name: str  #: the user's name (``USER``, ``LOGNAME``)
    uid: int
    gid: int
    groups: tuple[int, ...]  #: the supplementary groups: the user's, as initgroups sets
    home: str


def _user_entry(value: str | int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(value) if isinstance(value, int) else pwd.getpwnam(value)
    except KeyError:
        return None


def _group_entry(value: str | int) -> grp.struct_group | None:
    try:
        return grp.getgrgid(value) if isinstance(value, int) else grp.getgrnam(value)
    except KeyError:
        return None


#: the ids a process may take: uid_t and gid_t, but for -1 ("unchanged" to the kernel)
MAX_ID = 2 ** 32 - 2


def _bare(value: str | int) -> int | None:
    """A number with no entry in its database (``123456``, as containers run arbitrary
    uids): the id itself, taken as is; None for a name."""
    if isinstance(value, int):
        return value if 0 <= value <= MAX_ID else None
    return int(value) if value.isdecimal() and int(value) <= MAX_ID else None


def _name_or_id(field: str, value: object) -> str | int:
    """A name, or a number (an int, or a str of digits)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidType(f"{field!r} must be a name or a number (got "
                          f"{type(value).__name__}: {value!r})")
    if isinstance(value, str):
        if not value or "\0" in value:
            raise InvalidSpec(f"{field!r} must be a name or a number (got {value!r})")
        return int(value) if value.isdecimal() else value
    if value < 0:
        raise InvalidSpec(f"{field!r} must be a name or a number from 0 (got {value})")
    return value


def check(user: object, group: object) -> tuple[str | None, str | None]:
    """``user`` and ``group`` checked in the caller: both exist, and we are root (only
    root may change a process's user). Their names, as stored in the spec."""
    if user is None and group is None:
        return None, None
    if user is None:
        raise InvalidSpec(f"'group' needs 'user' (got group={group!r} alone): the target's "
                          "supplementary groups are its user's")
    wanted = _name_or_id("user", user)
    if os.geteuid() != 0:
        raise InvalidSpec(f"'user' needs root: only root may run a target as another user "
                          f"(got user={user!r}, we run as uid {os.geteuid()}); start the "
                          "group as root, or leave 'user' out")
    entry = _user_entry(wanted)
    if entry is None and _bare(wanted) is None:
        raise InvalidSpec(f"'user' {user!r} does not exist (no such user in the password "
                          f"database, nor a uid from 0 to {MAX_ID})")
    name = entry.pw_name if entry is not None else str(wanted)
    if group is None:
        return name, None
    asked = _name_or_id("group", group)
    found = _group_entry(asked)
    if found is None and _bare(asked) is None:
        raise InvalidSpec(f"'group' {group!r} does not exist (no such group in the group "
                          f"database, nor a gid from 0 to {MAX_ID})")
    return name, found.gr_name if found is not None else str(asked)


def still_there(user: str | None, group: str | None) -> None:
    """Refuse a restart (``InvalidSpec``) whose new target could not be spawned: its user
    or group was removed since the start. The running target is left alone, rather than
    stopped for a successor that fails its spawn in a loop."""
    if user is None:
        return
    try:
        resolve(user, group)
    except OSError:
        gone = _user_entry(user) is None and _bare(user) is None
        field, name = ("user", user) if gone else ("group", group)
        raise InvalidSpec(f"{field!r} {name!r} no longer exists (removed from the system "
                          f"since the group started); its targets run on "
                          f"untouched: create the {field} again, or stop the group and run "
                          f"it as another user") from None


def login_env(user: str) -> dict[str, str]:
    """``HOME``, ``USER`` and ``LOGNAME`` of ``user`` (none if it is gone: its spawn
    fails anyway, in :func:`resolve`)."""
    entry = _user_entry(user)
    if entry is None:
        # A bare uid: no home of its own (as container runtimes set it), and not the
        # caller's name, which would say root.
        return {"HOME": "/", "USER": user, "LOGNAME": user} if _bare(user) is not None else {}
    return {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}


def resolve(user: str, group: str | None) -> Drop:
    """Who to run as, looked up now (at a spawn); OSError if the user or the group is gone
    (the spawn fails, and is retried)."""
    entry = _user_entry(user)
    uid = _bare(user) if entry is None else entry.pw_uid
    if uid is None:
        raise OSError(errno.ENOENT, f"the user {user!r} no longer exists")
    gid = uid if entry is None else entry.pw_gid
    if group is not None:
        found = _group_entry(group)
        number = _bare(group) if found is None else found.gr_gid
        if number is None:
            raise OSError(errno.ENOENT, f"the group {group!r} no longer exists")
        gid = number
    if entry is None:  # a bare uid: its gid alone, none of the caller's groups
        return Drop(user, uid, gid, (gid,), "/")
    name = entry.pw_name
    return Drop(name, entry.pw_uid, gid, tuple(os.getgrouplist(name, gid)), entry.pw_dir)
