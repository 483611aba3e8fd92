"""`Frozen`: immutable records declared by annotations, without importing `dataclasses`.

Why not dataclasses: the config, the active-job file and the job identity are on the hook
path, and there `import dataclasses` costs ~20 ms of CPU (it imports `inspect`, hence `ast`,
`dis`, `tokenize`, `re`, `enum`), and each `@dataclass(frozen=True)` another 1-2 ms of
generated code compiled at import: together about half of what the hooks cost above
interpreter start (bench/hooks.py). A Frozen subclass lists its fields as class annotations;
a class attribute is the field's default (`Factory(fn)` for a fresh mutable one). It gets
keyword or positional construction, equality, hashing, a repr, `replace(**changes)` and
`to_dict()` (dataclasses.asdict's job), and refuses attribute assignment.

Standard library only: the hooks use it.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Tuple, TypeVar

    F = TypeVar("F", bound="Frozen")


class FrozenError(AttributeError):
    """Assignment to a field of a Frozen record (dataclasses.FrozenInstanceError's role)."""


class Factory:
    """A default made fresh for each record (dataclasses.field(default_factory=...))."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]):
        self.make = make


_NO_DEFAULT = object()


class Frozen:
    _fields: Tuple[str, ...] = ()
    _types: Dict[str, str] = {}
    _defaults: Dict[str, Any] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        names: Dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for name, typ in klass.__dict__.get("__annotations__", {}).items():
                if not name.startswith("_"):
                    names[name] = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
        cls._fields = tuple(names)
        cls._types = names
        cls._defaults = {n: getattr(cls, n, _NO_DEFAULT) for n in names}
        missing = False
        for n in names:  # as dataclasses: no field without a default after one with
            if cls._defaults[n] is _NO_DEFAULT:
                if missing:
                    raise TypeError(f"{cls.__name__}: field {n!r} without a default follows one with")
            else:
                missing = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments, got {len(args)}")
        values = dict(zip(fields, args))
        for k, v in kw.items():
            if k not in self._defaults:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {k!r}")
            if k in values:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {k!r}")
            values[k] = v
        put = object.__setattr__
        for name in fields:
            if name in values:
                v = values[name]
            else:
                v = self._defaults[name]
                if v is _NO_DEFAULT:
                    raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
                if isinstance(v, Factory):
                    v = v.make()
            put(self, name, v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenError(f"cannot delete field {name!r}")

    def _astuple(self) -> tuple:
        return tuple(getattr(self, n) for n in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._astuple() == other._astuple()

    def __hash__(self) -> int:
        return hash((self.__class__.__name__,) + self._astuple())

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({inner})"

    def replace(self: F, **changes: Any) -> F:
        """A copy with some fields changed (dataclasses.replace)."""
        values = {n: getattr(self, n) for n in self._fields}
        for k in changes:
            if k not in values:
                raise TypeError(f"{type(self).__name__} has no field {k!r}")
        values.update(changes)
        return type(self)(**values)

    def to_dict(self) -> Dict[str, Any]:
        """Fields by name, nested records, lists, tuples and dicts converted too
        (dataclasses.asdict)."""
        return {n: _plain(getattr(self, n)) for n in self._fields}


def _plain(v: Any) -> Any:
    if isinstance(v, Frozen):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def factory(make: Callable[[], Any]) -> Any:
    """`field = factory(dict)`: typed as Any so a field's annotation stays its value's type."""
    return Factory(make)
