"""One check per kind of value a user gives: a number (finite, of the right type, in range) or a word.

Every flag and recipe key that takes a number goes through :func:`check_number`, so NaN, inf, a
negative count or a share above 1 stops where it enters, named as the user spelled it (``--min-share``,
``recipe.generation.steps``), before anything runs. Two fronts share the one rule:

- ``check_number(value, "recipe.generation.steps", integer=True, lo=1)`` raises :class:`InputError`;
- ``number_arg("--genuine-cap", integer=True, lo=1)`` is an argparse ``type=``: argparse prints
  ``scoremix CMD: error: argument --genuine-cap: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from typing import Any

from scoremix_plugin.errors import InputError


def _range_text(lo, hi, lo_open, hi_open) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return "finite"


def check_number(
    value: Any,
    what: str,
    *,
    integer: bool = False,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    error: type[Exception] = InputError,
) -> int | float:
    """``value`` as an int (``integer``) or a finite float in the range, else ``error`` naming ``what``."""
    kind = "an integer" if integer else "a number"
    rng = _range_text(lo, hi, lo_open, hi_open)
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if not bad and integer and isinstance(value, float):
        bad = not (math.isfinite(value) and value.is_integer())
    if bad or not math.isfinite(value):
        raise error(f"{what} must be {kind} {rng}, got {value!r}")
    v = int(value) if integer else float(value)
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and (v >= hi if hi_open else v > hi)):
        raise error(f"{what} must be {kind} {rng}, got {value!r}")
    return v


def _parse(text: str, integer: bool):
    s = text.strip()
    try:
        return int(s) if integer else float(s)
    except ValueError:
        return text


def number_arg(
    flag: str,
    *,
    integer: bool = False,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Callable[[str], int | float]:
    """An argparse ``type=`` for ``flag``: parse, then :func:`check_number` (errors as ArgumentTypeError)."""

    def parse(text: str):
        try:
            return check_number(
                _parse(text, integer), flag, integer=integer, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open
            )
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e).replace(f"{flag} ", "", 1)) from None

    parse.__name__ = "integer" if integer else "number"
    return parse


def check_choice(value: Any, what: str, choices: Iterable[Any], error: type[Exception] = InputError) -> Any:
    """``value`` when it is one of ``choices``, else ``error`` naming ``what`` and the choices."""
    choices = list(choices)
    if value not in choices:
        raise error(f"{what} must be one of {choices}, got {value!r}")
    return value
