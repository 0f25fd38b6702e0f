"""utils/checks.py: the one set of input checks, their messages and the error type."""

from __future__ import annotations

import math

import pytest

from diffusion_lab.utils.checks import (
    InputError,
    MissingInputError,
    require_bool,
    require_choice,
    require_int,
    require_number,
)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "n must be an integer >= 1 and <= 5, got 0"),
        (6, "n must be an integer >= 1 and <= 5, got 6"),
        (True, "n must be an integer >= 1 and <= 5, got True"),
        (2.0, "n must be an integer >= 1 and <= 5, got 2.0"),
        ("3", "n must be an integer >= 1 and <= 5, got '3'"),
    ],
)
def test_require_int_refuses_with_one_line(value, message):
    with pytest.raises(InputError) as raised:
        require_int("n", value, minimum=1, maximum=5)
    assert str(raised.value) == message


def test_require_int_accepts_and_normalises():
    assert require_int("n", 5, minimum=1, maximum=5) == 5
    assert require_int("seed", -3) == -3


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (0.0, {"minimum": 0, "above": True}, "lr must be a finite number > 0, got 0.0"),
        (-1, {"minimum": 0}, "lr must be a finite number >= 0, got -1"),
        (math.nan, {}, "lr must be a finite number, got nan"),
        (math.inf, {"minimum": 0}, "lr must be a finite number >= 0, got inf"),
        (False, {}, "lr must be a finite number, got False"),
        (2, {"maximum": 1}, "lr must be a finite number <= 1, got 2"),
    ],
)
def test_require_number_refuses_with_one_line(value, kwargs, message):
    with pytest.raises(InputError) as raised:
        require_number("lr", value, **kwargs)
    assert str(raised.value) == message


def test_require_number_bool_and_choice():
    assert require_number("lr", 1, minimum=0, above=True) == 1.0
    assert isinstance(require_number("lr", 1), float)
    assert require_bool("use_ema", False) is False
    with pytest.raises(InputError, match="use_ema must be true or false, got 1"):
        require_bool("use_ema", 1)
    assert require_choice("loader", "index", ("index", "torch")) == "index"
    with pytest.raises(InputError, match="loader must be one of index, torch; got 'fast'"):
        require_choice("loader", "fast", ("index", "torch"))


def test_input_errors_are_the_builtin_errors_callers_catch():
    assert issubclass(InputError, ValueError)
    assert issubclass(MissingInputError, InputError)
    assert issubclass(MissingInputError, FileNotFoundError)
