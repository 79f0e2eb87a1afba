"""One way to print a number, shared by the CLI's tables and the reports (ground floor)."""

from __future__ import annotations

import math
from typing import Any


def significant(value: float, digits: int = 3, *, sign: bool = False) -> str:
    """``value`` to ``digits`` significant digits, trailing zeros kept ("–" for NaN).

    ``significant(0.0512) == "0.0512"``, ``significant(1.0) == "1.00"``,
    ``significant(1456.7) == "1457"``; small effects stay visible (``0.000123``).
    """
    value = float(value)
    if not math.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(digits - 1 - magnitude, 0)
    return f"{value:{'+' if sign else ''}.{decimals}f}"


def num(
    value: Any,
    digits: int = 4,
    *,
    missing: str = "-",
    keep_zeros: bool = False,
    whole_below: float = 1e9,
) -> str:
    """``value`` in few characters: integers with thousands separators, floats to ``digits``
    significant digits (trailing zeros dropped, or kept with ``keep_zeros``).

    Booleans print as ``yes``/``no``, None and non-finite floats as ``missing``; a float that is
    a whole number below ``whole_below`` prints as an integer.
    """
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if value is None:
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return missing
        if value.is_integer() and abs(value) < whole_below:
            return f"{int(value):,}"
        return significant(value, digits) if keep_zeros else f"{value:.{digits}g}"
    return str(value)
