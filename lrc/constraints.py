"""What a value may be, written once in its annotation, and the one check of a value against it.

Config sections (lrc/config/schema.py), lightning.Trainer's arguments and every plugin constructor
say what they accept in their type annotations; ``check_value`` reads those annotations, so a range
or a list of choices is never written a second time in a hand-made check:

* ``Annotated[int, Range(min=1)]`` (the alias ``PositiveInt``): an int of at least 1;
  ``Range(0, 1, max_open=True)``: a number in [0, 1). A bool is never a number, and a float must be
  finite (YAML's ``.nan`` and ``.inf`` are refused);
* ``Literal["avg", "max"]``: one of those values; the error lists them (and the close matches);
* ``X | None``, ``list[X]``, ``tuple[X, Y]``, ``dict[K, V]``, a dataclass (a mapping of its fields):
  checked all the way down;
* ``Annotated[str, Text("...")]``: a free-form string (a path, a name looked up elsewhere), saying so
  explicitly, so that a string argument with a fixed set of choices is visibly a ``Literal`` instead
  (tests/plugins/test_contracts.py holds every registered plugin to this).

Anything the checker cannot judge (a TypeVar, a Callable, an unresolved forward reference) is
accepted: the annotation's owner still checks it when it runs. This module is the bottom layer: it
imports neither torch nor anything else of lrc.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

__all__ = ["Range", "Text", "check_value", "type_name", "range_of", "core_type", "choices_of", "PositiveInt",
           "NonNegativeInt", "Index", "PositiveFloat", "NonNegativeFloat", "UnitInterval", "Fraction",
           "DropoutRate", "Seed", "LocalPath", "Name"]


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``min``/``max`` (None: unbounded), each end closed unless ``*_open``.

    ``Range()`` bounds nothing and says so: the value was considered and any finite number fits
    (a layer index counted from the end, an offset)."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"Range: min {self.min} is above max {self.max}")

    def __contains__(self, value: float) -> bool:
        if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
            return False
        return not (self.max is not None and (value > self.max or (self.max_open and value == self.max)))

    def describe(self) -> str:
        """``at least 1``, ``greater than 0``, ``in [0, 1)``, ... (what ``must be`` is followed by)."""
        if self.min is not None and self.max is not None:
            return f"in {'(' if self.min_open else '['}{self.min:g}, {self.max:g}{')' if self.max_open else ']'}"
        if self.min is not None:
            return f"{'greater than' if self.min_open else 'at least'} {self.min:g}"
        if self.max is not None:
            return f"{'less than' if self.max_open else 'at most'} {self.max:g}"
        return "any finite number"

    def short(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1)``: the bound inside a type name; empty when unbounded."""
        if self.min is not None and self.max is not None:
            return self.describe()
        if self.min is not None:
            return f"{'>' if self.min_open else '>='} {self.min:g}"
        if self.max is not None:
            return f"{'<' if self.max_open else '<='} {self.max:g}"
        return ""


@dataclass(frozen=True)
class Text:
    """Marker for ``Annotated[str, Text(...)]``: a free-form string with no fixed set of choices."""

    what: str = "text"


# The aliases that annotations use. Each names what the number is, so a signature reads as its own docs.
PositiveInt = Annotated[int, Range(min=1)]  # sizes, counts, dimensions
NonNegativeInt = Annotated[int, Range(min=0)]  # counts that may be zero (layers of a part that can be left out)
Index = Annotated[int, Range()]  # a position that counts from the end when negative (select_layer=-1)
PositiveFloat = Annotated[float, Range(min=0, min_open=True)]  # rates, durations, scales
NonNegativeFloat = Annotated[float, Range(min=0)]  # loss weights, margins, learning rates
UnitInterval = Annotated[float, Range(0, 1)]  # fractions and probabilities, both ends allowed
Fraction = Annotated[float, Range(0, 1, min_open=True)]  # a share that keeps something: (0, 1]
DropoutRate = Annotated[float, Range(0, 1, max_open=True)]  # [0, 1): 1 would drop everything
Seed = Annotated[int, Range(0, 2**32 - 1)]  # what NumPy and Lightning accept as a seed
LocalPath = Annotated[str, Text("a local file or folder path")]
Name = Annotated[str, Text("a name")]


# ---------------------------------------------------------------------------------------------
# Looking into annotations
# ---------------------------------------------------------------------------------------------
_UNIONS = (Union, types.UnionType)
_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _strip_none(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (one alternative left), else the annotation itself."""
    if typing.get_origin(annotation) in _UNIONS:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def range_of(annotation: Any) -> Range | None:
    """The Range of ``Annotated[..., Range]`` (through ``| None``), else None."""
    annotation = _strip_none(annotation)
    if typing.get_origin(annotation) is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, Range)), None)
    return None


def core_type(annotation: Any) -> Any:
    """The annotation without ``Annotated`` markers and ``| None``: ``int`` for ``PositiveInt | None``."""
    annotation = _strip_none(annotation)
    while typing.get_origin(annotation) is Annotated:
        annotation = _strip_none(typing.get_args(annotation)[0])
    return annotation


def choices_of(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal`` (through ``Annotated`` and ``| None``), else None."""
    core = core_type(annotation)
    return typing.get_args(core) if typing.get_origin(core) is Literal else None


def type_name(annotation: Any) -> str:
    """How errors name an annotation: ``int >= 1 or null``, ``one of avg, max``, ``list of float in [0, 1]``."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
        return "any value"
    if annotation is None or annotation is type(None):
        return "null"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        ranges = tuple(m for m in annotation.__metadata__ if isinstance(m, Range) and m.short())
        if ranges and typing.get_origin(args[0]) in _UNIONS:  # the bound belongs to the numbers: int >= 0 or null
            members = [Annotated[(a, *ranges)] if a in (int, float) else a for a in typing.get_args(args[0])]
            return type_name(Union[tuple(members)])
        return " ".join([type_name(args[0]), *(r.short() for r in ranges)])
    if origin in _UNIONS:
        literals = [c for a in args if typing.get_origin(a) is Literal for c in typing.get_args(a)]
        names = [type_name(a) for a in args if a is not type(None) and typing.get_origin(a) is not Literal]
        if literals:
            names.append(f"one of {_join(literals)}")
        return " or ".join(names + (["null"] if type(None) in args else []))
    if origin is Literal:
        return f"one of {_join(args)}"
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        if origin is tuple and args and args[-1] is not Ellipsis:
            names = [type_name(a) for a in args]
            return f"list of {len(args)} {names[0]}" if len(set(names)) == 1 else f"list [{', '.join(names)}]"
        return f"list of {type_name(args[0])}" if args else "list"
    if origin in _MAPPINGS or annotation in _MAPPINGS:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}" if len(args) == 2 else "mapping"
    if dataclasses.is_dataclass(annotation):
        return "mapping"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _join(values: Any) -> str:
    return ", ".join("null" if v is None else str(v) for v in values)


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Problem:
    text: str
    wrong_type: bool  # the value is not even of the annotation's type (so another union member may explain it)


def check_value(value: Any, annotation: Any) -> str | None:
    """None when ``value`` fits ``annotation``; else what is wrong, e.g. ``must be at least 1, got 0`` or
    ``expected int >= 1 or null, got 'two'`` (callers put the key and source in front)."""
    problem = _check(value, annotation)
    return None if problem is None else problem.text


def _wrong(value: Any, annotation: Any) -> _Problem:
    return _Problem(f"expected {type_name(annotation)}, got {value!r}", True)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check(value: Any, annotation: Any) -> _Problem | None:
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
        return None
    if annotation is None or annotation is type(None):
        return None if value is None else _wrong(value, annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        problem = _check(value, args[0])
        if problem is not None:
            return _wrong(value, annotation) if problem.wrong_type else problem
        for marker in annotation.__metadata__:
            if isinstance(marker, Range) and _is_number(value) and value not in marker:
                return _Problem(f"must be {marker.describe()}, got {value!r}", False)
        return None
    if origin in _UNIONS:
        return _check_union(value, annotation, args)
    if origin is Literal:
        return _check_literal(value, args)
    if annotation is bool:
        return None if isinstance(value, bool) else _wrong(value, annotation)
    if annotation is int:
        return None if _is_int(value) else _wrong(value, annotation)
    if annotation is float:
        if not _is_number(value):
            return _wrong(value, annotation)
        return None if math.isfinite(value) else _Problem(f"must be a finite number, got {value!r}", False)
    if annotation is str:
        return None if isinstance(value, str) else _wrong(value, annotation)
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        return _check_sequence(value, annotation, origin, args)
    if origin in _MAPPINGS or annotation in _MAPPINGS:
        return _check_mapping(value, annotation, args)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _check_dataclass(value, annotation)
    if typing.is_typeddict(annotation):
        return None if isinstance(value, collections.abc.Mapping) else _wrong(value, annotation)
    if isinstance(annotation, type) and origin is None:
        try:
            return None if isinstance(value, annotation) else _wrong(value, annotation)
        except TypeError:  # a class that refuses isinstance (a Protocol without runtime_checkable ...)
            return None
    return None  # TypeVar, Callable, a forward reference ...: not judged here


def _check_union(value: Any, annotation: Any, args: tuple[Any, ...]) -> _Problem | None:
    # Literal members are pooled, so Lightning's precision (three Literals and None) lists every choice once.
    literals = tuple(c for a in args if typing.get_origin(a) is Literal for c in typing.get_args(a))
    members = [a for a in args if typing.get_origin(a) is not Literal]
    problems = []
    for member in members:
        problem = _check(value, member)
        if problem is None:
            return None
        problems.append(problem)
    if literals:
        if any(_same(value, c) for c in literals):
            return None
        if any(type(value) is type(c) for c in literals):  # the right kind of value, not one of the choices
            problems.append(_check_literal(value, literals))  # type: ignore[arg-type]
    meaningful = [p for p in problems if not p.wrong_type]
    if len(meaningful) == 1:
        return meaningful[0]
    return _wrong(value, annotation)


def _same(value: Any, choice: Any) -> bool:
    # True == 1 in Python; a config's `true` is still not the stage `1`
    return value == choice and isinstance(value, bool) == isinstance(choice, bool)


def _check_literal(value: Any, choices: tuple[Any, ...]) -> _Problem | None:
    if any(_same(value, c) for c in choices):
        return None
    close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)], n=3, cutoff=0.5) \
        if isinstance(value, str) else []
    hint = f". Did you mean {', '.join(map(repr, close))}?" if close else ""
    return _Problem(f"{value!r} is not one of {_join(choices)}{hint}", False)


def _check_sequence(value: Any, annotation: Any, origin: Any, args: tuple[Any, ...]) -> _Problem | None:
    if isinstance(value, (str, bytes)) or isinstance(value, collections.abc.Mapping) \
            or not isinstance(value, collections.abc.Sequence):
        return _wrong(value, annotation)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            return _Problem(f"expected {type_name(annotation)}, got {len(value)} item(s): {_plain(value)!r}", False)
        members = list(args)
    else:
        members = [args[0] if args else Any] * len(value)
    for i, (item, member) in enumerate(zip(value, members)):
        problem = _check(item, member)
        if problem is not None:
            return _Problem(f"item {i}: {problem.text}", False)
    return None


def _check_mapping(value: Any, annotation: Any, args: tuple[Any, ...]) -> _Problem | None:
    if not isinstance(value, collections.abc.Mapping):
        return _wrong(value, annotation)
    key_type, value_type = args if len(args) == 2 else (Any, Any)
    for key, item in value.items():
        problem = _check(key, key_type)
        if problem is not None:
            return _Problem(f"key {key!r}: {problem.text}", False)
        problem = _check(item, value_type)
        if problem is not None:
            return _Problem(f"{key}: {problem.text}", False)
    return None


def _check_dataclass(value: Any, schema: type) -> _Problem | None:
    if not isinstance(value, collections.abc.Mapping):
        return _wrong(value, schema)
    hints = typing.get_type_hints(schema, include_extras=True)
    names = [f.name for f in dataclasses.fields(schema)]
    for key, item in value.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            return _Problem(f"unknown key {key!r}{f'. Did you mean {close[0]!r}?' if close else ''}", False)
        problem = _check(item, hints[key])
        if problem is not None:
            return _Problem(f"{key}: {problem.text}", False)
    return None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, collections.abc.Sequence) else value
