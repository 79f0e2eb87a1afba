"""Runs read into, and results written from, :class:`~langneurons.plain.PlainDataset` (no xarray).

The command line's ``identify`` reads a run's counts, computes and saves the result; importing
xarray (pandas, Dask's array module) would cost it more than the rest. :func:`read_run` gives
what ``open_run(run)[names].load()`` gives (the same arrays, dims, coordinates, attributes,
string labels as numpy unicode) by reading the zarr group directly, whole arrays through the
store's chunk reader; :func:`write_result` writes a result as ``Dataset.to_zarr`` writes
``result.to_xarray()`` (the same arrays, chunk shapes, codecs, fill values, attributes, down to
the bytes: ``tests/test_store_plain.py`` compares every file). Each does only what it matches
exactly: a run whose arrays carry attributes xarray decodes (CF masks, scales, times), or a
result with data types or attributes xarray encodes (datetimes, objects, ``_FillValue``,
``coordinates``), is left to the xarray path (:func:`read_run` returns None;
:func:`result_writer`, which ``save_result`` calls, writes such a result through
``result.to_xarray()``).
"""

from __future__ import annotations

import asyncio
import base64
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
import zarr.api.asynchronous
from zarr.abc.store import Store

from langneurons.errors import ParameterError
from langneurons.plain import PlainDataset, PlainVariable
from langneurons.store import _chunks, _integrity, _nodes

if TYPE_CHECKING:
    import xarray as xr

#: Array attributes a run's variables carry that xarray passes through undecoded (a units
#: value naming a time is decoded, see :func:`_plain_attrs`).
RUN_ATTRS = frozenset({"long_name", "units", "description", "standard_name", "comment"})
#: Units xarray decodes as times or time spans.
_TIME_UNITS = ("since", "day", "hour", "minute", "second", "nanosecond", "microsecond")
#: Variable attributes xarray's CF encoding reads or writes (a result holding one goes the
#: xarray way), besides every attribute named with a leading underscore. (``units`` is read
#: only for datetimes and time spans, which go the xarray way by their data type.)
CF_ATTRS = frozenset(
    {
        "missing_value",
        "scale_factor",
        "add_offset",
        "calendar",
        "dtype",
        "coordinates",
        "bounds",
        "grid_mapping",
        "climatology",
        "geometry",
        "node_coordinates",
        "node_count",
        "part_node_count",
        "interior_ring",
        "cell_measures",
        "formula_terms",
    }
)


# ---------------------------------------------------------------------- reading a run
def run_group(pinned: Store, run: str) -> zarr.Group:
    """The run's group through the store's consolidated metadata, as ``open_zarr`` opens it."""
    with _nodes.quiet():
        root = zarr.open_consolidated(pinned, mode="r", zarr_format=3)
        return _nodes.grp(root, run)


def read_run(group: zarr.Group, run: str, variables: Sequence[str] | None) -> PlainDataset | None:
    """The run's data variables ``variables`` (None: all) with the coordinates their dims need.

    Raises ParameterError naming a variable the run does not have; returns None when the run's
    arrays are not plain (xarray would decode them: read the run through xarray instead).
    """
    with _nodes.quiet():
        arrays = dict(group.arrays())
    dims = {n: tuple(a.metadata.dimension_names or ()) for n, a in arrays.items()}  # type: ignore[union-attr]
    attrs = {n: dict(a.attrs) for n, a in arrays.items()}
    coords = {n for n, d in dims.items() if n in d}  # dimension coordinates
    for found in attrs.values():  # and those a variable names (CF), as xarray reads them
        coords.update(c for c in str(found.get("coordinates", "")).split() if c in arrays)
    data_vars = [n for n in arrays if n not in coords]
    if isinstance(variables, str):
        raise ParameterError(
            f"variables must be a list of names, not the string {variables!r}; pass [{variables!r}]"
        )
    if variables is not None:
        missing = [v for v in variables if v not in data_vars]
        if missing:
            raise ParameterError(
                f"run {run!r} has no data variable {missing[0]!r}; choose from "
                f"{', '.join(sorted(data_vars))}"
            )
        data_vars = list(dict.fromkeys(variables))
    needed = {d for n in data_vars for d in dims[n]}
    keep = [n for n in arrays if n in coords and (variables is None or set(dims[n]) <= needed)]
    if not _plain_run(group, arrays, dims, attrs):
        return None
    values = _read_arrays({n: arrays[n] for n in (*keep, *data_vars)})

    def plain(name: str) -> PlainVariable:
        var_attrs = {k: v for k, v in attrs[name].items() if k != "coordinates"}
        _nodes.describe(name, var_attrs)
        return PlainVariable(dims[name], _nodes.unicode(values[name]), var_attrs)

    group_attrs = {k: v for k, v in group.attrs.items() if not k.lower().startswith("_nc")}
    return PlainDataset(
        {n: plain(n) for n in data_vars},
        {n: plain(n) for n in keep},
        _nodes.run_attrs(group_attrs),
    )


def _plain_run(
    group: zarr.Group,
    arrays: Mapping[str, zarr.Array],
    dims: Mapping[str, tuple[str, ...]],
    attrs: Mapping[str, Mapping[str, Any]],
) -> bool:
    """Whether xarray would read every array of the run as stored (no CF decoding to redo)."""
    if "coordinates" in group.attrs:
        return False
    all_dims = {d for names in dims.values() for d in names}
    for name, array in arrays.items():
        if len(dims[name]) != array.ndim:
            return False
        if name in all_dims and dims[name] != (name,):
            return False  # xarray refuses it: let it say why
        if not set(attrs[name]) <= RUN_ATTRS | {"coordinates"}:
            return False
        units = str(attrs[name].get("units", "")).lower()
        if any(word in units for word in _TIME_UNITS):
            return False
    return True


def _read_arrays(arrays: Mapping[str, zarr.Array]) -> dict[str, np.ndarray]:
    """Every value of each array, all in one round trip: the store's chunk reader where it
    decodes the array, zarr for the rest (labels, flags). Through a pinned store the pins are
    checked once, after every read (and before a failed read's error is raised)."""

    async def one(array: zarr.Array) -> Any:
        values = None
        if _chunks.decodes(array):
            values = await _chunks.read_all_async(array, check_pins=False)
        return await array.async_array.getitem(...) if values is None else values

    async def _read() -> list[Any]:
        found = await asyncio.gather(*(one(a) for a in arrays.values()), return_exceptions=True)
        for array in list(arrays.values())[:1]:  # the arrays of one run: one check covers all
            store = array.store_path.store
            if isinstance(store, _integrity.CheckedStore):
                await store.check_pins(array.path)
        failed = [e for e in found if isinstance(e, BaseException)]
        if failed:
            raise failed[0]
        return list(found)

    values = zarr.core.sync.sync(_read())
    return {name: np.asarray(v) for name, v in zip(arrays, values, strict=True)}


# ---------------------------------------------------------------------- writing a result
def check_result(result: object) -> None:
    """ParameterError unless ``result`` is an xarray Dataset (xarray is not imported for it:
    a Dataset exists only once xarray has been)."""
    xr = sys.modules.get("xarray")
    if xr is not None and isinstance(result, xr.Dataset):
        return
    what = type(result).__name__
    fix = (
        "; make it one with da.to_dataset(name=...)"
        if xr is not None and isinstance(result, xr.DataArray)
        else ""
    )
    raise ParameterError(
        f"a result must be an xarray.Dataset or a langneurons PlainDataset, got {what}{fix}"
    )


def result_writer(
    result: xr.Dataset | PlainDataset, kind: str, stamp: Mapping[str, Any]
) -> Callable[[Store, str], None]:
    """What writes ``result`` as stored (coded types, ``stamp`` attributes) as a new group
    ``path`` of ``zstore``: a PlainDataset by :func:`write_result` where it can, else the
    Dataset (``result.to_xarray()`` for a PlainDataset) by ``to_zarr``."""
    if isinstance(result, PlainDataset):
        plain = stored_result(result, kind, stamp)
        if plain is not None:
            return lambda zstore, path: write_result(zstore, path, plain)
        result = result.to_xarray()
    check_result(result)
    data = _nodes.vlen_strings(_nodes.coded_types(result.drop_encoding(), kind))
    data = data.assign_attrs(**stamp)
    encoding = {
        n: {
            "compressors": _integrity.string_codecs()
            if var.dtype.kind in "OUT"
            else _integrity.numeric_codecs()
        }
        for n, var in data.variables.items()
    }

    def write(zstore: Store, path: str) -> None:
        data.to_zarr(
            zstore,
            group=path,
            mode="w",
            zarr_format=3,
            consolidated=False,
            encoding=encoding,
            write_empty_chunks=True,
        )

    return write


def stored_result(result: PlainDataset, kind: str, stamp: Mapping[str, Any]) -> PlainDataset | None:
    """``result`` as stored (coded types, see :func:`langneurons.store._nodes.coded_types`;
    the save's ``stamp`` attributes), or None when :func:`write_result` cannot write it."""
    data_vars = dict(result.data_vars)
    types = data_vars.get(_nodes.NEURON_TYPE)
    if types is not None and types.dtype.kind in "OUT":
        coded = _nodes.coded_labels(types.data, types.attrs)
        if coded is not None:
            data_vars[_nodes.NEURON_TYPE] = PlainVariable(types.dims, *coded)
    assigned, mask = data_vars.get(_nodes.ASSIGNED), data_vars.get(_nodes.MASK)
    if kind == _nodes.IDENTIFICATION and assigned is not None and mask is not None:
        if _nodes.assigned_is_mask(assigned.dims, assigned.data, mask.dims, mask.data):
            del data_vars[_nodes.ASSIGNED]
    out = PlainDataset(data_vars, result.coords, {**result.attrs, **stamp})
    return out if _writable(out) else None


def _writable(ds: PlainDataset) -> bool:
    """Whether :func:`write_result` writes ``ds`` exactly as ``to_zarr`` would."""
    if "coordinates" in ds.attrs or not all(isinstance(k, str) for k in ds.attrs):
        return False
    sizes = ds.sizes
    for name, var in (*ds.coords.items(), *ds.data_vars.items()):
        if not isinstance(name, str) or not name or "/" in name or " " in name:
            return False
        if name in sizes and (name not in ds.coords or var.dims != (name,)):
            return False  # xarray makes it an index, or refuses it
        if not _plain_dtype(var.dtype):
            return False
        if any(not isinstance(k, str) or k.startswith("_") or k in CF_ATTRS for k in var.attrs):
            return False
    return True


def _plain_dtype(dtype: np.dtype[Any]) -> bool:
    """Booleans, integers, float32/64 in native order, and unicode strings."""
    if dtype.kind == "U":
        return True
    if not dtype.isnative:
        return False
    return dtype.kind in "biu" or (dtype.kind == "f" and dtype.itemsize in (4, 8))


def write_result(zstore: Store, path: str, ds: PlainDataset) -> None:
    """Write ``ds`` (from :func:`stored_result`) as the new group ``path`` of ``zstore``.

    What ``ds.to_xarray().to_zarr(zstore, group=path, mode="w", zarr_format=3,
    consolidated=False, write_empty_chunks=True, encoding=...)`` writes with the store's
    codecs: zarr's own chunk shapes, a float's NaN fill value and its ``_FillValue``
    attribute, each non-dimension coordinate named in a ``coordinates`` attribute.
    """
    variables = {**ds.coords, **ds.data_vars}
    named, unattached = _coordinates(ds)
    attrs = {k: _attr(v) for k, v in ds.attrs.items()}
    if unattached:
        attrs["coordinates"] = unattached
    specs = {}
    for name, var in variables.items():
        var_attrs = {k: _attr(v) for k, v in var.attrs.items()}
        if name in named:
            var_attrs["coordinates"] = named[name]
        fill: Any = None
        if var.dtype.kind == "f":  # xarray's default mask value of floats, as it encodes it
            fill = np.nan
            var_attrs["_FillValue"] = base64.standard_b64encode(struct.pack("<d", fill)).decode()
        strings = var.dtype.kind == "U"
        specs[name] = {
            "shape": var.data.shape,
            "dtype": str if strings else var.dtype,
            "fill_value": fill,
            "chunks": "auto",
            "compressors": _integrity.string_codecs() if strings else _integrity.numeric_codecs(),
            "config": {"write_empty_chunks": True},
            "dimension_names": var.dims,
            "attributes": var_attrs,
            "overwrite": True,
        }

    async def _create() -> list[Any]:  # the group, then its arrays' metadata, concurrently
        group = await zarr.api.asynchronous.open_group(
            zstore, mode="w", path=path, zarr_format=3, attributes=attrs
        )
        made = (group.create_array(name, **spec) for name, spec in specs.items())
        return await _nodes.settled(*made)

    with _nodes.quiet():
        made = zarr.core.sync.sync(_create())
    rest = []
    for name, found in zip(specs, made, strict=True):
        array = zarr.Array(found)
        data = variables[name].data
        if data.dtype.kind == "U":
            data = data.astype(object)  # as xarray hands strings to zarr
        elif data.ndim and data.size and _chunks.write_rows(array, 0, data):
            continue
        rest.append((array, data))

    async def _write() -> None:  # the rest (flags, labels, scalars) by zarr, concurrently
        await _nodes.settled(*(a.async_array.setitem(..., d) for a, d in rest))

    if rest:
        zarr.core.sync.sync(_write())


def _coordinates(ds: PlainDataset) -> tuple[dict[str, str], str]:
    """The ``coordinates`` attribute of each variable, and the group's (what xarray's CF
    encoding writes): each non-dimension coordinate is named by every variable, not itself a
    coordinate, whose dims hold the coordinate's; one no variable names goes on the group."""
    variables = {**ds.coords, **ds.data_vars}
    non_dim = {c for c in ds.coords if c not in ds.sizes}
    found: dict[str, set[str]] = {}
    for coord in non_dim:
        target = set(variables[coord].dims)
        for name, var in variables.items():
            if name not in non_dim and name not in var.dims and target <= set(var.dims):
                found.setdefault(name, set()).add(coord)
    named = {name: " ".join(sorted(coords)) for name, coords in found.items()}
    written = {c for coords in found.values() for c in coords}
    return named, " ".join(sorted(non_dim - written))


def _attr(value: Any) -> Any:
    """An attribute value as xarray hands it to zarr (numpy arrays and scalars as Python)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
