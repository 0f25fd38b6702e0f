"""Checks for values that enter from outside (a config, a file, an argument).

Each ``require_*`` returns the value, normalised (an int, a float, a bool, a str), or raises
:class:`InputError` with one line that names the value and what is accepted:

    require_int("data.batch_size", 0, minimum=1)
    InputError: data.batch_size must be an integer >= 1, got 0

``bool`` is refused wherever a number is asked for (``True`` is an ``int`` to Python, never to a user).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class InputError(ValueError):
    """Bad input (a config value, a file, an argument), refused where it enters, with one line
    that names the value and what is accepted. The entry points print that line alone,
    ``diffusion-<cmd>: error: <line>``, and exit with status 2 (:mod:`diffusion_lab.utils.cli`).

    A type of the project's own rather than "every ValueError": a ValueError raised by torch,
    numpy or a bug of ours is not the user's input and keeps its traceback. It subclasses
    ValueError so that code (and tests) catching ValueError for a bad value still does."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder named by the input is not there (also a FileNotFoundError)."""


def _bounds(minimum: float | None, maximum: float | None, above: bool = False) -> str:
    low = ("> " if above else ">= ") + f"{minimum:g}" if minimum is not None else ""
    high = f"<= {maximum:g}" if maximum is not None else ""
    return " and ".join(part for part in (low, high) if part)


def is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def require_int(
    name: str, value: object, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an int in [minimum, maximum] (either bound optional)."""
    low_ok = minimum is None or (is_int(value) and value >= minimum)
    high_ok = maximum is None or (is_int(value) and value <= maximum)
    if not is_int(value) or not low_ok or not high_ok:
        bounds = _bounds(minimum, maximum)
        raise InputError(
            f"{name} must be an integer{' ' + bounds if bounds else ''}, got {value!r}"
        )
    return int(value)


def require_number(
    name: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    above: bool = False,
) -> float:
    """``value`` as a finite float in [minimum, maximum]; ``above``: strictly above ``minimum``."""
    ok = is_number(value)
    if ok and minimum is not None:
        ok = value > minimum if above else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bounds = _bounds(minimum, maximum, above)
        raise InputError(
            f"{name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}"
        )
    return float(value)


def require_bool(name: str, value: object) -> bool:
    """``value`` if it is true or false."""
    if not isinstance(value, bool):
        raise InputError(f"{name} must be true or false, got {value!r}")
    return value


def require_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return str(value)
