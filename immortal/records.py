"""Records: small classes declared like dataclasses, without what dataclasses cost.

Creating a dataclass generates and execs its methods, and importing ``dataclasses`` imports
``inspect`` (and with it ``ast``, ``dis``, ``tokenize``), on the path of every ``immortal
stop`` (bench/notes.md weighs the two). Here the fields are read from the class annotations,
and one set of methods, written once below (no code is generated), serves every record::

    class Point(Record):            # immutable and hashable, like @dataclass(frozen=True)
        x: int
        y: int = 0

    class Bag(MutableRecord):       # like @dataclass: assignable, unhashable
        items: dict[str, int] = field(default_factory=dict)

``__init__`` takes the fields in order, by position or by name; equality goes by class and
field values; ``repr`` reads as a dataclass's; :func:`replace` and :func:`asdict` stand
for their ``dataclasses`` namesakes, and ``_fields`` lists the field names. Records have
``__slots__``: no attribute other than the fields can be set.
"""

from __future__ import annotations

from operator import attrgetter

TYPE_CHECKING = False  # typing's, without importing typing (see immortal/__init__.py)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, TypeVar

    from typing_extensions import dataclass_transform  # typing has it from Python 3.11 on

    _T = TypeVar("_T")
else:
    def dataclass_transform(**_options):  # only type checkers read it
        return lambda cls: cls

__all__ = ["FrozenRecordError", "MutableRecord", "Record", "asdict", "field", "replace"]


class FrozenRecordError(AttributeError):
    """An assignment to (or deletion of) a field of an immutable :class:`Record`."""


class _Factory:
    """The default of a field made afresh for each record: see :func:`field`."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A field whose default is ``default_factory()``, called for each new record (for
    mutable defaults: ``pids: dict[str, int] = field(default_factory=dict)``)."""
    return _Factory(default_factory)


def _no_fields(record: object) -> tuple[()]:
    """The ``_key`` of a record without fields (``attrgetter()`` needs at least one)."""
    return ()


class _RecordType(type):
    """Makes ``name: type = default`` lines into ``__slots__``, ``_fields``, ``_defaults``
    and ``_factories``."""

    def __new__(mcs, name: str, bases: tuple[type, ...],
                namespace: dict[str, Any]) -> _RecordType:
        if namespace.get("__module__") == __name__:  # the bases defined here
            return super().__new__(mcs, name, bases, namespace)
        own = tuple(namespace.get("__annotations__", ()))
        base: Any = bases[0]  # a record class: it has _fields, _defaults, _factories
        fields = base._fields + own  # a subclass adds to its base's
        defaults = {**base._defaults}
        factories = {**base._factories}
        for f in own:
            if f not in namespace:
                continue
            value = namespace.pop(f)  # a class attribute of that name would hide the slot
            if isinstance(value, _Factory):
                factories[f] = value.make
            elif value.__class__.__hash__ is None:  # as dataclasses refuse them
                raise ValueError(f"mutable default {value.__class__} for field {f} is not "
                                 "allowed: use default_factory")
            else:
                defaults[f] = value
        for before, after in zip(fields, fields[1:]):
            if (before in defaults or before in factories) and not (
                    after in defaults or after in factories):
                raise TypeError(f"non-default argument {after!r} follows default argument")
        # _key(record) is what equality and hash compare: all its field values.
        key = staticmethod(attrgetter(*fields) if fields else _no_fields)
        check = namespace.get("__post_init__", getattr(base, "__post_init__", None))
        namespace.update(__slots__=own, _fields=fields, _defaults=defaults,
                         _factories=factories, _key=key, __match_args__=fields, _check=check)
        return super().__new__(mcs, name, bases, namespace)


class _Base(metaclass=_RecordType):
    """What immutable and mutable records share."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()  # the field names, in order
    _defaults: ClassVar[dict[str, Any]] = {}  # field name: default value
    _factories: ClassVar[dict[str, Callable[[], Any]]] = {}  # field name: makes the default
    _key = staticmethod(_no_fields)
    #: the class's ``__post_init__``, called at the end of ``__init__`` as a dataclass's is
    #: and by :func:`replace` (an immutable record's sets fields with ``object.__setattr__``)
    _check: ClassVar[Callable[[Any], None] | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = self.__class__
        fields = cls._fields
        if len(args) > len(fields):
            raise TypeError(f"{cls.__qualname__}.__init__() takes {len(fields) + 1} positional "
                            f"arguments but {len(args) + 1} were given")
        setattr_ = object.__setattr__
        for name, value in zip(fields, args):
            setattr_(self, name, value)
        if len(args) == len(fields) and not kwargs:
            if cls._check is not None:
                cls._check(self)
            return
        defaults = cls._defaults
        missing = []
        for name in fields[len(args):]:
            if name in kwargs:
                setattr_(self, name, kwargs.pop(name))
            elif name in defaults:
                setattr_(self, name, defaults[name])
            elif name in cls._factories:
                setattr_(self, name, cls._factories[name]())
            else:
                missing.append(name)
        for name in kwargs:
            how = "got multiple values for" if name in fields else "got an unexpected keyword"
            raise TypeError(f"{cls.__qualname__}.__init__() {how} argument {name!r}")
        if missing:
            names = " and ".join(map(repr, missing))
            plural = "s" if len(missing) > 1 else ""
            raise TypeError(f"{cls.__qualname__}.__init__() missing {len(missing)} required "
                            f"positional argument{plural}: {names}")
        if cls._check is not None:
            cls._check(self)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            key = self._key
            return key(self) == key(other)
        return NotImplemented

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{self.__class__.__qualname__}({fields})"

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # For pickle and copy, which would otherwise set the slots through __setattr__.
        return self.__class__, tuple([getattr(self, name) for name in self._fields])


@dataclass_transform(eq_default=True, frozen_default=True, field_specifiers=(field,))
class Record(_Base):
    """An immutable record, like a frozen dataclass: hashable, and an assignment raises
    :class:`FrozenRecordError` (an ``AttributeError``)."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash((self.__class__, self._key(self)))

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenRecordError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenRecordError(f"cannot delete field {name!r}")


@dataclass_transform(eq_default=True, field_specifiers=(field,))
class MutableRecord(_Base):
    """A mutable record, like a plain dataclass: its fields can be assigned, and like one
    that compares by value it is unhashable."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]


def replace(obj: _T, /, **changes: Any) -> _T:
    """A copy of ``obj`` with some fields changed, as :func:`dataclasses.replace` makes it.

    For records, and (importing ``dataclasses`` then) for dataclasses. An unknown field is a
    :class:`TypeError`.
    """
    if not isinstance(obj, _Base):
        import dataclasses  # noqa: PLC0415 - only for a dataclass, such as a Spec
        dataclass: Any = obj  # a dataclass, which the type checker cannot see here
        return dataclasses.replace(dataclass, **changes)
    cls = obj.__class__
    new = object.__new__(cls)
    setattr_ = object.__setattr__
    for name in cls._fields:
        setattr_(new, name, changes.pop(name) if name in changes else getattr(obj, name))
    if changes:
        raise TypeError(f"{cls.__qualname__}.__init__() got an unexpected keyword argument "
                        f"{next(iter(changes))!r}")
    if cls._check is not None:
        cls._check(new)
    return new


def asdict(record: Any) -> dict[str, Any]:
    """The fields of ``record`` as a new dict, as :func:`dataclasses.asdict` makes it: a
    record inside (also in a list, tuple or dict) becomes a dict too, and the containers are
    copies. Other values are not copied."""
    if not isinstance(record, _Base):
        raise TypeError("asdict() should be called on record instances")
    return _asdict(record)


def _asdict(value: Any) -> Any:
    if isinstance(value, _Base):
        return {name: _asdict(getattr(value, name)) for name in value._fields}
    if isinstance(value, (list, tuple)):
        if hasattr(value, "_fields"):  # a namedtuple, rebuilt as dataclasses.asdict does
            return value.__class__(*[_asdict(v) for v in value])
        return value.__class__(_asdict(v) for v in value)
    if isinstance(value, dict):
        return value.__class__((_asdict(k), _asdict(v)) for k, v in value.items())
    return value
