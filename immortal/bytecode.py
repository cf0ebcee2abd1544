"""The roles' interpreter: optimized bytecode (``-OO``) from a cache directory of our own.

A group's daemon and pump are CPython processes that live as long as the group, and much
of what they keep resident is the code and constants of the modules they import. Under
``-OO`` those carry no docstrings (nor asserts): a group's processes are smaller
(bench/notes.md). pip writes only plain bytecode, and a role compiling its modules at every
start would keep the compiler's leftovers for the group's whole life, more than ``-OO``
saves. So a role's interpreter is ``python -OO -X pycache_prefix=CACHE``: its bytecode,
the standard library's too, lives in a cache directory of ours (:func:`cache_dir`; never beside
the user's or the system's sources, which may be read-only or written by pip alone). A
role that finds the cache cold (a first start, a new install) imports every module a role
may need, which writes their bytecode there, and then ``exec``s itself afresh: same pid,
same fds, an interpreter that only reads bytecode. Without a cache directory it can write,
a role runs as a plain interpreter, as before.

Targets are not affected: they are ``exec``'d with their own command line, and ``-OO`` and
``-X`` are not passed on through the environment.
"""

from __future__ import annotations

import os
import sys

#: a role re-executed after filling the cache: it never fills it again (no loop when the
#: cache cannot be written)
WARMED = "immortal_warmed"
#: what a role may import, the built-in monitors included (a user's monitor is compiled by
#: the first pump that loads it, and written to the cache then)
_PACKAGES = ("immortal", "immortal_monitors")
_SKIPPED = ("immortal.__main__", "immortal._role")
#: what the roles import inside functions, not at a module's import (missed here, a module
#: is compiled by the first role that imports it, and written then)
_LATER = ("ctypes", "daemon")
#: the role interpreter's options (``interpreter``), the cache's path after the last
_OPTIONS = ("-OO", "-X")
_PREFIX = "pycache_prefix="


def cache_dir() -> str | None:
    """The cache of the roles' bytecode, made if missing; None if it cannot be written:
    ``$XDG_CACHE_HOME/immortal/bytecode``, else under the user's home from the password
    database (``su`` keeps another's ``$HOME``), for root ``/var/cache/immortal/bytecode``."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        if os.geteuid() == 0:
            base = "/var/cache"
        else:
            import pwd

            try:
                base = os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, ".cache")
            except KeyError:
                return None
    path = os.path.join(base, "immortal", "bytecode")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK | os.X_OK) else None


def interpreter() -> list[str]:
    """The start of a role's command line: the interpreter and its options."""
    path = cache_dir()
    if path is None:
        return [sys.executable]
    return [sys.executable, *_OPTIONS, f"{_PREFIX}{path}"]


def settle() -> None:
    """A role's first step: with a cold cache, fill it and re-execute (no return): with
    ``-OO`` if the cache took it, else as a plain interpreter."""
    if sys.flags.optimize < 2 or not sys.pycache_prefix:
        return  # a plain interpreter: nothing to settle
    # Only into our own cache (pycache_prefix), whatever PYTHONDONTWRITEBYTECODE says: it
    # is there to keep sources' directories clean, and is inherited from the caller.
    sys.dont_write_bytecode = False
    prefix = sys.pycache_prefix
    if WARMED in sys._xoptions or _stamp_ok(prefix):
        return
    if _fill(prefix):
        argv = [sys.executable, "-X", WARMED, *sys.orig_argv[1:]]
    else:
        # A cache that takes no file (a full disk): -OO would compile every module at
        # every start, and keep the compiler's leftovers; a plain interpreter reads pip's.
        sys.stderr.write(f"immortal: the bytecode cache {prefix} cannot be written: this "
                         "role runs as a plain interpreter\n")
        argv = [sys.executable, *plain(sys.orig_argv[1:])]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def plain(options: list[str]) -> list[str]:
    """A role's command line (after the interpreter) without ``interpreter``'s options."""
    count = len(_OPTIONS)
    if options[:count] == list(_OPTIONS) and options[count:count + 1] \
            and options[count].startswith(_PREFIX):
        return options[count + 1:]
    return options


def _key() -> str:
    """What the cache was filled for: this interpreter and this copy of immortal."""
    here = os.path.dirname(os.path.abspath(__file__))
    stamps = [os.stat(os.path.join(here, name)).st_mtime_ns for name in ("pump.py", "daemon.py")]
    return f"{sys.hexversion} {sys.executable} {here} {stamps[0]} {stamps[1]}\n"


def stamp_path(prefix: str) -> str:
    """The file that says the cache ``prefix`` was filled for this interpreter and copy."""
    # FNV-1a: hashlib would load OpenSSL into every role for one short name.
    digest = 0xCBF29CE484222325
    for byte in _key().encode():
        digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return os.path.join(prefix, f"filled-{digest:016x}")


def _stamp_ok(prefix: str) -> bool:
    try:
        with open(stamp_path(prefix)) as handle:
            return handle.read() == _key()
    except OSError:
        return False


def _fill(prefix: str) -> bool:
    """Every module a role may need imported (so written to the cache), then the stamp;
    whether the stamp was written."""
    import importlib
    import pkgutil

    for package in _PACKAGES:
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if info.name in _SKIPPED:
                continue
            try:
                importlib.import_module(info.name)
            except Exception:  # noqa: BLE001 - one module's failure only leaves it cold
                pass
    for name in _LATER:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    _write_loaded()
    path = stamp_path(prefix)
    scratch = f"{path}.{os.getpid()}"
    try:
        with open(scratch, "w") as handle:
            handle.write(_key())
        os.replace(scratch, path)
    except OSError:
        try:
            os.unlink(scratch)
        except OSError:
            pass
        return False
    return True


def _write_loaded() -> None:
    """Bytecode for the modules loaded before ``settle`` could allow writing it (the
    interpreter's start-up, ``site``, this package's ``__init__``: under
    PYTHONDONTWRITEBYTECODE they were compiled and not written)."""
    import importlib.util
    import py_compile

    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if not source or not source.endswith(".py"):
            continue
        cached = importlib.util.cache_from_source(source)  # -OO, under pycache_prefix
        if not os.path.exists(cached):
            try:
                py_compile.compile(source, cfile=cached)
            except (OSError, py_compile.PyCompileError):
                pass
