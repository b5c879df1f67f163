"""check_number: the one check behind plugins' numeric constructor arguments."""

import pytest

from lrc.ops import check_number


@pytest.mark.parametrize("value,kwargs,message", [
    (0, dict(integer=True, minimum=1), "tome: k must be a positive integer, got 0"),
    (2.0, dict(integer=True, minimum=1), "tome: k must be a positive integer, got 2.0"),
    (True, dict(integer=True, minimum=1), "tome: k must be a positive integer, got True"),
    (-1, dict(integer=True), "tome: k must be a non-negative integer, got -1"),
    (-0.5, dict(), "tome: k must be a non-negative number, got -0.5"),
    (0.0, dict(strict=True), "tome: k must be a positive number, got 0.0"),
    ("3", dict(minimum=2), "tome: k must be a number >= 2, got '3'"),
])
def test_bad_values_name_plugin_key_and_rule(value, kwargs, message):
    with pytest.raises(ValueError) as err:
        check_number("tome", "k", value, **kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize("value,kwargs", [(1, dict(integer=True, minimum=1)), (0, dict(integer=True)),
                                          (0.0, dict()), (0.1, dict(strict=True)), (2, dict(minimum=2))])
def test_good_values_pass(value, kwargs):
    check_number("tome", "k", value, **kwargs)
