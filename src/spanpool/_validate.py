"""Checking what users pass to the pools, in one place.

Every message names the parameter as the user wrote it and its unit, and shows the value
given: ``max_age_minutes must be a number of minutes >= 0, not -50``. A value of the wrong
type (a string, a boolean, None where a number is needed) raises
:class:`~spanpool.errors.ArgumentTypeError`, a ``TypeError`` that is also a ``ValueError``;
a number out of range (negative, NaN, an infinity where none makes sense) a ``ValueError``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from .errors import ArgumentTypeError

__all__ = ["callable_", "integer", "number", "timeout"]


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, (int, float)) else f"{value!r} ({type(value).__name__})"


def integer(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int, if it is a whole number (not a bool) from ``minimum`` to
    ``maximum``."""
    bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an integer {bound}, not {_shown(value)}")
    result = int(value)
    if result < minimum or (maximum is not None and result > maximum):
        raise ValueError(f"{name} must be an integer {bound}, not {value!r}")
    return result


def number(
    name: str,
    value: object,
    *,
    unit: str = "seconds",
    minimum: float = 0.0,
    above: bool = False,
    infinite: bool = False,
) -> float:
    """``value`` as a float, if it is a real number (not a bool, not NaN) ``>= minimum``
    (``> minimum`` when ``above``); an infinity only when ``infinite``."""
    bound = f"{'>' if above else '>='} {minimum:g}"
    if infinite:
        bound += " (or inf)"
    what = f"{name} must be a number of {unit} {bound}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{what}, not {_shown(value)}")
    result = float(value)
    if (
        math.isnan(result)
        or result < minimum
        or (above and result == minimum)
        or (math.isinf(result) and not infinite)
    ):
        raise ValueError(f"{what}, not {value!r}")
    return result


def timeout(name: str, value: object) -> float | None:
    """How long to wait, in seconds: a number >= 0, inf to wait for ever, or None (whatever
    None means where it is passed)."""
    if value is None:
        return None
    return number(name, value, infinite=True)


def callable_(name: str, value: Any, what: str) -> Callable[..., Any]:
    """``value`` if it can be called; ``what`` says what it should be."""
    if not callable(value):
        raise ArgumentTypeError(f"{name} must be {what}, not {_shown(value)}")
    return value  # type: ignore[no-any-return]
