"""Parameter checks shared by the analysis modules (one-line ParameterError messages)."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

from langneurons.errors import ParameterError


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """A string option among ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ParameterError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_open_unit(name: str, value: object) -> float:
    """A level in the open interval (0, 1), such as ``ci`` or ``alpha``."""
    if isinstance(value, Real) and not isinstance(value, bool) and 0.0 < float(value) < 1.0:
        return float(value)
    raise ParameterError(f"{name} must be a number in (0, 1), got {value!r}")


def check_int(name: str, value: object, minimum: int) -> int:
    """An integer ``>= minimum`` (bools are not integers here)."""
    if isinstance(value, Integral) and not isinstance(value, bool) and int(value) >= minimum:
        return int(value)
    raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
