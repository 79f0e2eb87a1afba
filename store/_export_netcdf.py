"""A store's runs as NetCDF-4 files, one per run, with the run's saved results as groups.

Layout of ``DEST/``::

    <run path>.nc                  e.g. mistral-7b/base.nc
      /                            the run's counts (n_active, n_tokens, optional moments and
                                   per-sequence counts) and its attributes
      /<kind>/<name>               each saved result (identification/lape, stats/..., ...)

``xr.open_dataset(path)`` reads the counts, ``xr.open_dataset(path, group="identification/lape")``
a result, ``xr.open_groups(path)`` all of it (``xr.open_datatree(path)`` too, when every result
shares the run's languages: a tree needs its groups aligned with the counts). netCDF attributes
hold only strings and numbers, so every other attribute (lists, mappings, booleans) is JSON
text, named in the ``json_attrs`` attribute; ``langneurons.store.decode_attrs(ds.attrs)`` gives
them back as data.

Why NetCDF-4 (HDF5) through h5netcdf: the counts are int64 (token totals past 2**31 are real on
large corpora), which the classic netCDF-3 format that scipy writes cannot hold; h5netcdf needs
only h5py's wheels, where netCDF4 brings the netCDF C library. Numeric variables are written
with zlib, shuffle and HDF5's Fletcher-32 checksum, so a damaged file fails on read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import xarray as xr

from langneurons._progress import progress
from langneurons.errors import StoreValidationError
from langneurons.store import _attrs, _export

#: Variable attributes CF readers expect as numeric arrays: kept so, not as JSON text.
_NUMERIC_ATTRS = ("flag_values", "flag_masks", "valid_range")
#: Attributes the export adds to each file's root group.
RUN_ATTR, RESULTS_ATTR = "langneurons_run", "langneurons_results"
ENGINE: Final = "h5netcdf"


def write(
    dest: Path,
    runs: Sequence[str],
    open_run: Callable[[str], xr.Dataset],
    results: Callable[[str], list[tuple[str, xr.Dataset]]],
) -> list[Path]:
    """Write one NetCDF file per run under the new folder ``dest``; return the files.

    ``open_run(run)`` gives the run's counts (dask-backed, so they stream to disk chunk by
    chunk), ``results(run)`` its saved results as ``(kind/name, dataset)`` pairs. Each file is
    read back and compared with the store before the folder is renamed into place.
    """
    _export.require("h5netcdf", "netcdf")
    _export.require("h5py", "netcdf")
    written: list[Path] = []
    with (
        _export.staged(dest, "export-netcdf") as tmp,
        progress("export netcdf", total=len(runs), unit="run") as task,
    ):
        for run in runs:
            path = _export.run_file(tmp, run, ".nc")
            counts = open_run(run)
            saved = results(run)
            _write_run(path, run, counts, saved)
            check(path, run, counts, saved)
            written.append(dest / path.relative_to(tmp))
            task.update()
    return written


def _write_run(
    path: Path, run: str, counts: xr.Dataset, saved: list[tuple[str, xr.Dataset]]
) -> None:
    root = _netcdf_ready(counts)
    root.attrs[RUN_ATTR] = run
    root.attrs[RESULTS_ATTR] = " ".join(name for name, _ in saved)
    root.to_netcdf(path, mode="w", engine=ENGINE, encoding=_encoding(root))
    for group, result in saved:
        data = _netcdf_ready(result)
        data.to_netcdf(path, mode="a", group=group, engine=ENGINE, encoding=_encoding(data))


def _netcdf_ready(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with attributes netCDF holds, strings as Python str, and no zarr encodings."""
    out = ds.drop_encoding()
    out.attrs = _attrs.encode_all(ds.attrs)
    for name, var in ds.variables.items():
        attrs = _attrs.encode_all({k: v for k, v in var.attrs.items() if k not in _NUMERIC_ATTRS})
        attrs.update({k: np.asarray(var.attrs[k]) for k in _NUMERIC_ATTRS if k in var.attrs})
        if var.dtype.kind in "OT":
            text = _export.labels(var)
            out[name] = xr.Variable(var.dims, text, attrs)
            if name in out.coords:
                out = out.assign_coords({name: out[name].variable})
        else:
            out[name].attrs = attrs
    return out


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Compression and checksums for numeric variables; strings as they are."""
    out: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        if var.dtype.kind in "biuf" and var.ndim > 0 and var.size > 0:
            out[str(name)] = {"zlib": True, "complevel": 4, "shuffle": True, "fletcher32": True}
    return out


def check(path: Path, run: str, counts: xr.Dataset, saved: list[tuple[str, xr.Dataset]]) -> None:
    """Read ``path`` back and compare it with what was exported (values and attributes)."""
    where = f"NetCDF export of run {run!r}"
    for group, expected in [(None, counts), *saved]:
        label = where if group is None else f"{where}, group {group!r}"
        with xr.open_dataset(path, engine=ENGINE, group=group, chunks=None) as found:
            _export.compare(expected, found, label)
            got = _attrs.decode(found.attrs)
            for key in (RUN_ATTR, RESULTS_ATTR):
                got.pop(key, None)
            if _as_json(got) != _as_json(_attrs.decode(expected.attrs)):
                raise StoreValidationError(f"{label}: the attributes read back differ")


def _as_json(attrs: dict[str, Any]) -> str:
    """Attributes as canonical JSON text (NaN equal to NaN, numpy scalars as Python)."""
    return json.dumps(_attrs.to_python(attrs), sort_keys=True)
