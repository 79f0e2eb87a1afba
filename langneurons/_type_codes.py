"""Neuron types as small integer codes with CF flag attributes (ground floor: numpy only).

An identification's ``neuron_type`` is stored as ``int8`` codes ``[layer, neuron]`` with the CF
attributes ``flag_values = [0, 1, 2, 3, 4]`` and
``flag_meanings = "none unassigned specific related general"``: 1 byte per neuron instead of a
variable-length string, and any xarray or netCDF tool shows what the codes mean. Results saved
before this (``neuron_type`` as strings) are read unchanged: :func:`as_type_labels` takes both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

#: ``CODES[i]`` is the type of code ``i`` (the order of the identification kernels' codes).
CODES: Final = ("none", "unassigned", "specific", "related", "general")
#: The codes of a mixture-of-experts identification (docs/design/moe.md): the dense ones, then a
#: neuron of an expert with no tokens of a language (``undefined``) and a padding neuron.
MOE_CODES: Final = (*CODES, "undefined", "padding")
FLAG_VALUES: Final = "flag_values"
FLAG_MEANINGS: Final = "flag_meanings"


def flag_attrs(codes: tuple[str, ...] = CODES) -> dict[str, Any]:
    """The CF attributes of coded neuron types (JSON-serialisable)."""
    return {FLAG_VALUES: list(range(len(codes))), FLAG_MEANINGS: " ".join(codes)}


def is_coded(attrs: Mapping[str, Any], dtype: np.dtype[Any]) -> bool:
    """True when a variable with these attrs and dtype holds coded types (integers + flags)."""
    return dtype.kind in "iu" and FLAG_VALUES in attrs and FLAG_MEANINGS in attrs


def encode(labels: NDArray[Any], codes: tuple[str, ...] = CODES) -> NDArray[np.int8]:
    """``int8`` codes of type labels (any string dtype) in the table ``codes`` (:data:`CODES`
    or :data:`MOE_CODES`); ValueError naming an unknown label."""
    arr = np.asarray(labels)
    if arr.dtype.kind not in "UT":
        arr = arr.astype(str)
    out = np.zeros(arr.shape, dtype=np.int8)
    known = np.zeros(arr.shape, dtype=np.bool_)
    for code, name in enumerate(codes):
        hit = arr == name
        out[hit] = code
        known |= hit
    if not known.all():
        bad = str(arr[~known].reshape(-1)[0])
        raise ValueError(f"neuron_type holds {bad!r}, not one of {list(codes)}")
    return out


def decode(codes: NDArray[Any], attrs: Mapping[str, Any]) -> NDArray[np.str_]:
    """Type labels (``<U``) of integer codes, by their ``flag_values`` and ``flag_meanings``."""
    values = [int(v) for v in np.asarray(attrs[FLAG_VALUES]).reshape(-1)]
    meanings = str(attrs[FLAG_MEANINGS]).split()
    if len(values) != len(meanings) or not values or min(values) < 0:
        raise ValueError(
            f"neuron_type's flag_values {values} and flag_meanings {meanings} do not pair up"
        )
    table = np.full(max(values) + 1, "", dtype=f"U{max(len(m) for m in meanings)}")
    table[values] = meanings
    arr = np.asarray(codes)
    if arr.size and (arr.min() < 0 or arr.max() >= table.size or not table[arr].all()):
        raise ValueError(f"neuron_type holds codes outside its flag_values {values}")
    return table[arr]


def as_type_labels(values: Any, attrs: Mapping[str, Any] | None = None) -> NDArray[Any]:
    """Labels of ``values`` (a DataArray or array): decoded when coded, else as they are.

    ``attrs`` default to ``values.attrs`` (a DataArray's); the result is a numpy array, decoded
    to ``<U`` when coded and otherwise in the dtype it came in.
    """
    attrs = getattr(values, "attrs", {}) if attrs is None else attrs
    arr = np.asarray(getattr(values, "values", values))
    if is_coded(attrs, arr.dtype):
        return decode(arr, attrs)
    return arr
