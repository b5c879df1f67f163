"""Every registered plugin says what its arguments may be, in its constructor's annotations.

`lrc validate` and the builder check a plugin's arguments against those annotations (lrc.constraints), so
an argument without a range or a list of choices is an argument nobody checks. Parametrised over every
registry: a newly registered plugin is held to this without a new test.

* every settable number (int or float, also inside a list or tuple) carries a ``Range``;
* every settable string is a ``Literal`` (a fixed set of choices, listed in errors) or says it is free-form
  text with ``Annotated[str, Text(...)]`` (a path, a packaged name);
* every default fits its own annotation.
"""

import collections.abc
import types
import typing
from typing import Annotated, Literal

import pytest

from lrc.config import check_args, plugin_defaults
from lrc.config.validation import signature_of
from lrc.constraints import Range, Text, check_value
from lrc.registry import REGISTRIES

PLUGINS = [(kind, name) for kind, registry in REGISTRIES.items() for name in registry.names()]


def _parts(annotation):
    """The alternatives of a union (through ``| None``), each with its Annotated markers: [(type, markers)]."""
    markers = []
    while typing.get_origin(annotation) is Annotated:
        markers += list(annotation.__metadata__)
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [(t, markers + m) for a in typing.get_args(annotation) if a is not type(None) for t, m in _parts(a)]
    return [(annotation, markers)]


def unchecked(annotation, where: str) -> list[str]:
    """What about ``annotation`` leaves a value unchecked: numbers without a Range, strings without choices."""
    out = []
    for kind, markers in _parts(annotation):
        origin = typing.get_origin(kind)
        if kind in (int, float) and not any(isinstance(m, Range) for m in markers):
            out.append(f"{where}: a number without a Range (use lrc.constraints.PositiveInt, UnitInterval, ...)")
        elif kind is str and not any(isinstance(m, Text) for m in markers):
            out.append(f"{where}: a string without choices: a Literal, or Annotated[str, Text(...)] for free text")
        elif origin in (list, tuple, collections.abc.Sequence):
            for i, item in enumerate(a for a in typing.get_args(kind) if a is not Ellipsis):
                out += unchecked(item, f"{where}[{i}]")
    return out


@pytest.mark.parametrize("kind,name", PLUGINS, ids=[f"{k}:{n}" for k, n in PLUGINS])
def test_every_argument_is_annotated_with_what_it_may_be(kind, name):
    registry = REGISTRIES[kind]
    cls = registry.get(name)
    params, annotations = signature_of(cls)
    assert annotations, f"{kind} plugin {name!r}: its constructor's annotations do not resolve (an import missing?)"
    problems = []
    for arg, p in params.items():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if arg not in annotations:
            problems.append(f"{arg}: no annotation")
        elif arg not in registry.provided:
            problems += unchecked(annotations[arg], arg)
    assert not problems, f"{kind} plugin {name!r}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("kind,name", PLUGINS, ids=[f"{k}:{n}" for k, n in PLUGINS])
def test_defaults_fit_their_own_annotations(kind, name):
    registry = REGISTRIES[kind]
    cls = registry.get(name)
    defaults = plugin_defaults(cls, registry.provided)
    assert check_args(cls, defaults) == []


def test_the_contract_catches_what_it_should():
    assert unchecked(int, "n") and unchecked(str, "s") and unchecked(list[float], "l") and unchecked(int | None, "o")
    assert not unchecked(Annotated[int, Range(min=1)] | None, "n")
    assert not unchecked(Literal["avg", "max"], "mode") and not unchecked(Annotated[str, Text()], "path")
    assert check_value("x", Annotated[str, Text()]) is None
