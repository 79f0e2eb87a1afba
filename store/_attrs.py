"""Nested run attributes stored as JSON text, so that every tool can carry a run's attributes.

netCDF (and most dataset tools) accept only numbers, strings and flat lists of them as attributes,
so ``ds.to_netcdf()`` fails on a run whose attributes hold mappings. A run group's nested
attributes (``provenance``, ``writes``, ``migrated``, ``planned_units``, and ``results_of`` of
a results-only group) are written as JSON text, and every langneurons reader decodes them; runs
written before this keep their nested form on disk, and readers accept both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: Run-group attributes that hold nested data, stored as JSON text.
JSON_ATTRS: tuple[str, ...] = ("provenance", "writes", "results_of", "migrated", "planned_units")


def encode(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` with each nested attribute of :data:`JSON_ATTRS` as JSON text."""
    out = dict(attrs)
    for key in JSON_ATTRS:
        if key in out and not isinstance(out[key], str):
            out[key] = json.dumps(out[key], separators=(",", ":"), ensure_ascii=False)
    return out


def decode(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` with each attribute of :data:`JSON_ATTRS` as data (JSON text or already nested)."""
    out = dict(attrs)
    for key in JSON_ATTRS:
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
