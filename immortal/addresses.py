"""Listen addresses as a caller writes them, checked: ``tcp://HOST:PORT`` and ``unix:PATH``.

``HOST`` is an IPv4 address, a host name, or an IPv6 address in brackets (``[::1]``);
``PORT`` is 0 to 65535, 0 for a port the system chooses (the bound one is recorded, see
``listen.bind``). A unix ``PATH`` relative to the caller's working directory is made
absolute. The canonical form (:func:`canonical`) is what ``spec.json`` and ``status`` show;
:func:`fdname` is the name a socket gets in ``LISTEN_FDNAMES``.
"""

from __future__ import annotations

import os
import re

from .errors import InvalidSpec, InvalidType

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_LISTEN = 64  #: addresses a group may listen on (they travel in one SCM_RIGHTS message)
UNIX_PATH_MAX = 107  #: bytes of a unix socket's path (sun_path, less its NUL)
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_FORMS = "'tcp://HOST:PORT' (HOST an IPv4 address, a name or [IPv6]) or 'unix:PATH'"


class Address:
    """One parsed address: ``kind`` "tcp" (``host``, ``port``) or "unix" (``path``)."""

    __slots__ = ("kind", "host", "port", "path")

    def __init__(self, kind: str, host: str = "", port: int = 0, path: str = "") -> None:
        self.kind = kind
        self.host = host  #: as given, without the brackets of an IPv6 address
        self.port = port
        self.path = path

    @property
    def ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.ipv6 else self.host
        return f"tcp://{host}:{self.port}"


def check_listen(value: object, cwd: str) -> tuple[str, ...]:
    """``start(listen=...)``: a list of addresses, each checked (:func:`parse`), returned in
    canonical form, in order. Raises InvalidSpec/InvalidType naming the address."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InvalidType(f"'listen' must be a list of addresses such as "
                          f"['tcp://0.0.0.0:8000'] (got {type(value).__name__}: {value!r}); "
                          "wrap a single address in a list")
    if len(value) > MAX_LISTEN:
        raise InvalidSpec(f"'listen' takes at most {MAX_LISTEN} addresses "
                          f"(got {len(value)})")
    found: list[str] = []
    for index, item in enumerate(value):
        text = str(parse(item, cwd, f"'listen[{index}]'"))
        if text in found and not text.endswith(":0"):
            raise InvalidSpec(f"'listen[{index}]' {text!r} is given twice; give each "
                              "address once")
        found.append(text)
    return tuple(found)


def parse(text: object, cwd: str, field: str = "'listen'") -> Address:
    """The address ``text`` (a unix path relative to ``cwd``), or InvalidSpec naming
    ``field``, what was expected and what was received."""
    if not isinstance(text, str):
        raise InvalidType(f"{field} must be a str, {_FORMS} (got {type(text).__name__}: "
                          f"{text!r})")
    if text.startswith("unix:"):
        return _unix(text, cwd, field)
    if text.startswith("tcp://"):
        return _tcp(text, field)
    raise InvalidSpec(f"{field} must be {_FORMS} (got {text!r})")


def _unix(text: str, cwd: str, field: str) -> Address:
    path = text[len("unix:"):]
    if not path or "\0" in path:
        raise InvalidSpec(f"{field} must name a path after 'unix:', like "
                          f"'unix:/run/app.sock' (got {text!r})")
    path = os.path.normpath(os.path.join(cwd, path))
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise InvalidSpec(f"{field} {text!r}: the socket's path {path!r} is longer than "
                          f"{UNIX_PATH_MAX} bytes, the system's limit; choose a shorter one")
    return Address("unix", path=path)


def _tcp(text: str, field: str) -> Address:
    rest = text[len("tcp://"):]
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise InvalidSpec(f"{field} {text!r} must end with ':PORT', a port from 0 to 65535 "
                          "(0: one the system chooses)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ip(host, v6=True):
            raise InvalidSpec(f"{field} {text!r}: {host!r} in brackets is not an IPv6 "
                              "address")
    elif not host:
        raise InvalidSpec(f"{field} {text!r} names no host: give 0.0.0.0 (every IPv4 "
                          "interface), [::] (every interface) or 127.0.0.1 (this machine)")
    elif ":" in host:
        raise InvalidSpec(f"{field} {text!r}: an IPv6 host goes in brackets, as in "
                          "'tcp://[::1]:8000'")
    elif host.replace(".", "").isdigit():
        if not _is_ip(host, v6=False):
            raise InvalidSpec(f"{field} {text!r}: {host!r} is not an IPv4 address")
    elif not _HOST_NAME.match(host) or len(host) > 253:
        raise InvalidSpec(f"{field} {text!r}: {host!r} is not a host name or an IP address")
    return Address("tcp", host=host, port=int(port))


def _is_ip(host: str, v6: bool) -> bool:
    import socket

    try:
        socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, host)
    except (OSError, ValueError):
        return False
    return True


def fdname(text: str) -> str:
    """The name of the socket of ``text`` (a canonical address) in ``LISTEN_FDNAMES``:
    ``tcp-HOST-PORT`` (an IPv6 host in brackets, its colons as underscores), or the unix
    path's base name. The protocol separates names with colons and allows no control
    characters, so neither appears in one."""
    address = parse(text, "/")
    if address.kind == "unix":
        name = os.path.basename(address.path) or "unix"
    else:
        host = f"[{address.host}]" if address.ipv6 else address.host
        name = f"tcp-{host}-{address.port}"
    return "".join(c if " " < c < "\x7f" and c != ":" else "_" for c in name)[:255]


def fdnames(addresses: Sequence[str]) -> str:
    """``LISTEN_FDNAMES`` for ``addresses``, in order."""
    return ":".join(fdname(text) for text in addresses)
