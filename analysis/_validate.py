"""Checks shared by the analysis modules: parameters (one-line ParameterError messages), labels."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
from numpy.typing import NDArray

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


def as_labels(values: object) -> NDArray[np.str_]:
    """String labels as numpy unicode (``<U``), whatever their dtype or backing.

    Labels arrive as ``<U`` from ``open_run``, as NumPy ``StringDType`` from plain
    ``xr.open_zarr``, as object arrays of str, or as bytes; dask-backed or in memory.
    """
    arr = np.asarray(getattr(values, "values", values))
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "T":  # StringDType casts to unicode only with an explicit width
        return arr.astype(f"U{max(1, int(np.strings.str_len(arr).max(initial=0)))}")
    if arr.dtype.kind == "S":
        return np.strings.decode(arr, "utf-8")
    items = [x.decode() if isinstance(x, bytes) else str(x) for x in arr.ravel().tolist()]
    return np.array(items, dtype=np.str_).reshape(arr.shape)
