"""Whole variables of a lazily opened run read by the store's chunk reader (xarray's side).

:func:`whole_reads` wraps a run's arrays so that ``.values`` / ``.load()`` of a whole variable,
or of a block of it (slices of step 1), goes through :func:`~langneurons.store._chunks.read_all`
(concurrent reads, decoded in place, no chunk buffer copied over); any other selection is
xarray's and zarr's. Apart from :mod:`~langneurons.store._chunks` so
that the store imports xarray only where a Dataset is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import xarray as xr
import zarr
from xarray.backends.zarr import ZarrArrayWrapper
from xarray.core import indexing

from langneurons.store import _chunks

#: Attributes xarray decodes (the values it gives differ from the stored ones).
DECODED = ("_FillValue", "missing_value", "scale_factor", "add_offset", "units", "calendar")


class _WholeReads(ZarrArrayWrapper):
    """xarray's lazy zarr array, reading the whole array (``.values``) or a block of it (slices
    of step 1 on every axis: the tiles of the analyses' chunk reader) by ``read_all``."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        basic = isinstance(key, indexing.BasicIndexer)  # the reader's own test of a block:
        if basic and _chunks.block_bounds(key.tuple, self.shape) is not None:
            values = _chunks.read_all(self.get_array(), key.tuple)
            if values is not None:
                return values
        return super().__getitem__(key)


def whole_reads(ds: xr.Dataset, arrays: Mapping[str, zarr.Array]) -> xr.Dataset:
    """``ds`` (opened lazily, without dask) with its variables in ``arrays`` read whole by
    ``read_all`` (``.values``, ``.load()``); the variables must be the arrays undecoded."""
    swapped = {}
    for name, array in arrays.items():
        var = ds.variables.get(name)
        if var is None or var.shape != tuple(array.shape) or var.dtype != array.dtype:
            continue
        if not _chunks.decodes(array) or var.chunks is not None:  # dask reads its own chunks
            continue
        if any(k in var.encoding for k in DECODED):  # values xarray changes from stored ones
            continue
        lazy: Any = indexing.LazilyIndexedArray(_WholeReads(array))  # as xarray wraps it
        data = indexing.MemoryCachedArray(indexing.CopyOnWriteArray(lazy))
        swapped[name] = xr.Variable(var.dims, data, var.attrs, var.encoding)
    return ds.assign(swapped) if swapped else ds
