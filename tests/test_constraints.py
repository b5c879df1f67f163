"""lrc.constraints.check_value: the one check of a value against an annotation (config, plugins, trainer)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Annotated, Any, Callable, Literal, Optional, TypedDict, Union

import numpy as np
import pytest

from lrc.constraints import (DropoutRate, Fraction, LocalPath, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                             PositiveInt, Range, UnitInterval, check_value, choices_of, core_type, range_of, type_name)


@pytest.mark.parametrize("value, annotation", [
    (1, PositiveInt), (0, NonNegativeInt), (np.int64(3), PositiveInt), (2, PositiveFloat), (0.5, UnitInterval),
    (1.0, Fraction), (0.0, DropoutRate), (None, Optional[PositiveInt]), (None, PositiveInt | None),
    ("avg", Literal["avg", "max"]), (2, Literal[1, 2, 3]), ([1, 2], list[PositiveInt]), ((0.9, 0.99), tuple[float, float]),
    ({"a": 1.0}, dict[str, NonNegativeFloat]), ("x", LocalPath), ("anything", Any), (object(), Callable),
    ([0, "auto"], list[Union[int, str]]), ("auto", Union[PositiveInt, Literal[-1, "auto"]]), (-1, Union[PositiveInt, Literal[-1, "auto"]]),
    (True, bool), ({"k": 1}, dict),
])
def test_values_that_fit(value, annotation):
    assert check_value(value, annotation) is None


@pytest.mark.parametrize("value, annotation, message", [
    (0, PositiveInt, "must be at least 1, got 0"),
    (True, PositiveInt, "expected int >= 1, got True"),  # a bool is never a number
    (2.0, PositiveInt, "expected int >= 1, got 2.0"),
    ("two", NonNegativeInt, "expected int >= 0, got 'two'"),
    (0, PositiveFloat, "must be greater than 0, got 0"),
    (float("nan"), float, "must be a finite number, got nan"),
    (float("inf"), NonNegativeFloat, "must be a finite number, got inf"),
    (1.0, DropoutRate, "must be in [0, 1), got 1.0"),
    (0.0, Fraction, "must be in (0, 1], got 0.0"),
    (-0.1, UnitInterval, "must be in [0, 1], got -0.1"),
    ("mx", Literal["avg", "max"], "'mx' is not one of avg, max. Did you mean 'max'?"),
    (True, Literal[1, 2, 3], "True is not one of 1, 2, 3"),
    (0, Optional[PositiveInt], "must be at least 1, got 0"),
    ("x", Optional[int], "expected int or null, got 'x'"),
    ([1, 0], list[PositiveInt], "item 1: must be at least 1, got 0"),
    ("abc", list[str], "expected list of str, got 'abc'"),
    ([0.9], tuple[float, float], "expected list of 2 float, got 1 item(s): [0.9]"),
    ({"a": -1.0}, dict[str, NonNegativeFloat], "a: must be at least 0, got -1.0"),
    ({1: 1.0}, dict[str, float], "key 1: expected str, got 1"),
    (5, Annotated[Optional[Union[int, float]], Range(min=0)], None),
    (-5, Annotated[Optional[Union[int, float]], Range(min=0)], "must be at least 0, got -5"),
    ("x", Annotated[Optional[Union[int, float]], Range(min=0)], "expected int >= 0 or float >= 0 or null, got 'x'"),
    ("fp16", Union[Literal[64, 32], Literal["bf16-mixed", "32-true"], None], "'fp16' is not one of 64, 32, bf16-mixed, 32-true"),
])
def test_values_that_do_not_fit_say_why(value, annotation, message):
    assert check_value(value, annotation) == message


@dataclasses.dataclass
class Block:
    size: PositiveInt = 1
    mode: Literal["a", "b"] = "a"


class Rope(TypedDict):
    rope_type: str


def test_dataclasses_typeddicts_and_what_cannot_be_judged():
    assert check_value({"size": 2}, Block) is None
    assert check_value({"sise": 2}, Block) == "unknown key 'sise'. Did you mean 'size'?"
    assert check_value({"mode": "c"}, Block) == "mode: 'c' is not one of a, b"
    assert check_value({"rope_type": "dynamic"}, Rope) is None and check_value(3, Rope) is not None
    assert check_value(3, "SomeForwardReference") is None  # an unresolved annotation is not judged


def test_reading_annotations():
    assert range_of(Optional[PositiveInt]) == Range(min=1) and range_of(int) is None
    assert core_type(PositiveInt | None) is int
    assert choices_of(Optional[Literal["a", "b"]]) == ("a", "b") and choices_of(str) is None
    assert type_name(Optional[PositiveInt]) == "int >= 1 or null"
    assert type_name(tuple[UnitInterval, UnitInterval]) == "list of 2 float in [0, 1]"
    assert type_name(Literal["avg", "max"]) == "one of avg, max"
    with pytest.raises(ValueError):
        Range(2, 1)


def test_the_bottom_layer_imports_no_torch():
    code = "import sys, lrc.constraints; print(any(m.split('.')[0] in ('torch', 'numpy') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
