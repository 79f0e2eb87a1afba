"""Printing results: their headline tables, or ``--json`` with every small variable."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # numpy and xarray are imported when a result is printed
    import xarray as xr

# Variables larger than this are saved in the store but left out of --json output.
JSON_MAX_SIZE = 20_000


def to_jsonable(ds: xr.Dataset, saved: str | None = None) -> dict[str, Any]:
    """A result Dataset as plain JSON data: attrs, and every small variable with its dims."""
    out: dict[str, Any] = {"saved": saved, "attrs": clean(ds.attrs), "variables": {}}
    for name, var in ds.variables.items():
        if var.size > JSON_MAX_SIZE:
            out["variables"][name] = {
                "dims": list(var.dims),
                "shape": list(var.shape),
                "omitted": "too large; read it from the store",
            }
            continue
        out["variables"][name] = {"dims": list(var.dims), "values": clean(var.values.tolist())}
    return out


def clean(value: Any) -> Any:
    """``value`` as JSON data: string keys, NaN and infinities as null, numpy scalars as Python."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    import numpy as np

    if isinstance(value, np.generic):
        return clean(value.item())
    return value


def emit(results: dict[str, tuple[xr.Dataset, str | None]], as_json: bool) -> None:
    """Print results (name -> (dataset, where saved)) as JSON or as their headline tables."""
    from langneurons.cli._tables import headline

    if as_json:
        data = {name: to_jsonable(ds, path) for name, (ds, path) in results.items()}
        click.echo(json.dumps(data, indent=2))
        return
    for name, (ds, path) in results.items():
        click.echo(f"{name}: " + (f"saved at {path}" if path else "not saved (--no-save)"))
        for line in headline(name, ds):
            click.echo(line)
