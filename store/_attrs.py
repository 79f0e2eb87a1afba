"""Nested run attributes stored as JSON text, so that every tool can carry a run's attributes.

netCDF (and most dataset tools) accept only numbers, strings and flat lists of them as attributes,
so ``ds.to_netcdf()`` fails on a run whose attributes hold mappings. A run group's nested
attributes (``provenance``, ``writes``, ``migrated``, ``planned_units``, ``moe``, and
``results_of`` of a results-only group) are written as JSON text, and every langneurons reader
decodes them; runs written before this keep their nested form on disk, and readers accept both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

#: Run-group attributes that hold nested data, stored as JSON text.
JSON_ATTRS: tuple[str, ...] = (
    "provenance",
    "writes",
    "results_of",
    "migrated",
    "planned_units",
    "moe",  # a mixture-of-experts run's experts (docs/design/moe.md)
)
#: Attribute of an exported file (NetCDF) naming, as a JSON list, the other attributes it holds as
#: JSON text: every attribute that is not a string or a number (lists, mappings, booleans, None).
LISTED: str = "json_attrs"


def encode(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` with each nested attribute of :data:`JSON_ATTRS` as JSON text."""
    out = dict(attrs)
    for key in JSON_ATTRS:
        if key in out and not isinstance(out[key], str):
            out[key] = json.dumps(out[key], separators=(",", ":"), ensure_ascii=False)
    return out


def encode_all(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` as strings and numbers only (what netCDF holds), listed under :data:`LISTED`.

    The attributes of :data:`JSON_ATTRS` are JSON text already (as the store writes them); every
    other attribute that is not a string or a number becomes JSON text and is named in the
    :data:`LISTED` attribute, so :func:`decode` gives back the attributes exactly.
    """
    out: dict[str, Any] = {}
    listed = []
    for key, item in attrs.items():
        if key == LISTED:
            continue
        plain = isinstance(item, (str, int, float, np.integer, np.floating))
        if plain and not isinstance(item, (bool, np.bool_)):
            out[key] = item.item() if isinstance(item, np.generic) else item
            continue
        out[key] = json.dumps(to_python(item), separators=(",", ":"), ensure_ascii=False)
        if key not in JSON_ATTRS:
            listed.append(key)
    if listed:
        out[LISTED] = json.dumps(listed)
    return out


def to_python(item: Any) -> Any:
    """``item`` with numpy scalars and arrays as Python data (for json.dumps)."""
    if isinstance(item, np.ndarray):
        return item.tolist()
    if isinstance(item, np.generic):
        return item.item()
    if isinstance(item, Mapping):
        return {str(k): to_python(v) for k, v in item.items()}
    if isinstance(item, (list, tuple)):
        return [to_python(v) for v in item]
    return item


def decode(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` with each attribute of :data:`JSON_ATTRS` as data (JSON text or already nested).

    Attributes named by a :data:`LISTED` attribute (an exported NetCDF file's) are decoded too,
    and the list itself dropped.
    """
    out = dict(attrs)
    listed: list[str] = []
    if isinstance(out.get(LISTED), str):
        try:
            found = json.loads(out[LISTED])
        except ValueError:
            found = None
        if isinstance(found, list) and all(isinstance(k, str) for k in found):
            listed = found
            del out[LISTED]
    for key in (*JSON_ATTRS, *listed):
        value = out.get(key)
        if isinstance(value, str):
            try:
                out[key] = json.loads(value)
            except ValueError:
                pass  # not ours to fix here: the schema check names a bad value
    return out


def value(attrs: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """One attribute, decoded when it is one of :data:`JSON_ATTRS`."""
    if key not in attrs:
        return default
    return decode({key: attrs[key]})[key]
