"""Zarr nodes of a store: opening a URL, reading keys, and typed access to groups and arrays.

The helpers every other module of the store shares (the journal, the writes, validation,
migration, zip export), so none of them imports a private name from a sibling. Each takes the
zarr :class:`~zarr.abc.store.Store` or group it works on; none holds state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import warnings
from collections.abc import Awaitable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import zarr
import zarr.api.asynchronous
import zarr.storage
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype

from langneurons import _type_codes
from langneurons.errors import StoreValidationError
from langneurons.names import LANGUAGE, LAYER, NEURON
from langneurons.store import _attrs, _leftovers, _remote, schema

if TYPE_CHECKING:
    import xarray as xr

#: Variables of an identification result that the stored form changes (see coded_types).
NEURON_TYPE, ASSIGNED, MASK = "neuron_type", "assigned", "mask"
IDENTIFICATION = "identification"  # the result kind whose assigned is not stored
ASSIGNED_DIMS = (LAYER, NEURON, LANGUAGE)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence zarr's notice that consolidated metadata is not in the v3 spec (we rely on it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        warnings.filterwarnings("ignore", message="Object at .* is not recognized")
        yield


# ---------------------------------------------------------------------- URLs and keys
def local_path(url: str) -> Path | None:
    """The directory of a local store URL (plain path or ``file://``); None for other URLs."""
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url:
        return None
    return Path(url)


def zarr_store(url: str, *, read_only: bool) -> Store:
    """The zarr store behind a URL: a zip (read-only), a local directory, or any fsspec URL."""
    if url.endswith(".zip"):
        if not read_only:
            raise PermissionError(f"zip store {url!r} is read-only; open it with mode='r'")
        return zarr.core.sync.sync(zarr.storage.ZipStore.open(url, mode="r", read_only=True))
    path = local_path(url)
    if path is not None:
        return zarr.storage.LocalStore(path, read_only=read_only)
    return _remote.open_fsspec(url, read_only=read_only)  # its failures as langneurons errors


def exists(zstore: Store, key: str) -> bool:
    """Whether ``key`` is in the store."""
    return bool(zarr.core.sync.sync(zstore.exists(key)))


def raw(zstore: Store, key: str) -> bytes | None:
    """The bytes stored at ``key`` (None when there are none)."""
    value = zarr.core.sync.sync(zstore.get(key, prototype=default_buffer_prototype()))
    return None if value is None else value.to_bytes()


def raw_many(zstore: Store, keys: list[str]) -> dict[str, bytes | None]:
    """:func:`raw` of each of ``keys``, read concurrently."""

    async def _get() -> list[Any]:
        proto = default_buffer_prototype()
        return list(await asyncio.gather(*(zstore.get(k, prototype=proto) for k in keys)))

    values = zarr.core.sync.sync(_get())
    return {k: None if v is None else v.to_bytes() for k, v in zip(keys, values, strict=True)}


def put(zstore: Store, key: str, data: bytes) -> None:
    """Store ``data`` at ``key``."""
    buffer = default_buffer_prototype().buffer.from_bytes(data)
    zarr.core.sync.sync(zstore.set(key, buffer))


def delete(zstore: Store, key: str) -> None:
    """Delete one key."""
    zarr.core.sync.sync(zstore.delete(key))


def delete_group(zstore: Store, path: str) -> None:
    """Delete every key under ``path`` (bookkeeping, such as a journal: see :func:`delete_node`
    for a node that holds data)."""
    zarr.core.sync.sync(zstore.delete_dir(path))


def delete_node(zstore: Store, path: str) -> None:
    """Delete the group or array at ``path`` and everything under it.

    In a local store the folder is first renamed to a hidden tombstone (one atomic step), so a
    process killed while deleting leaves something ``repair`` knows for a leftover, never a
    node that lost its ``zarr.json`` but kept its data (which ``repair`` must not delete).
    """
    if isinstance(zstore, zarr.storage.LocalStore) and not zstore.read_only and path.strip("/"):
        folder = Path(zstore.root) / path
        if folder.is_dir() and not folder.is_symlink():
            if not (folder.name.startswith(".") and folder.name.endswith(".tmp")):
                grave = folder.with_name(_leftovers.tombstone(folder.name))
                os.rename(folder, grave)  # already hidden .tmp folders are leftovers by name
                folder = grave
            shutil.rmtree(folder)
            return
    zarr.core.sync.sync(zstore.delete_dir(path))


def has_keys(zstore: Store, prefix: str) -> bool:
    """Whether any key lies under ``prefix`` (a group, or the remains of one)."""

    async def _any() -> bool:
        async for _ in zstore.list_prefix(prefix.rstrip("/") + "/"):
            return True
        return False

    return bool(zarr.core.sync.sync(_any()))


def keys(zstore: Store, prefix: str = "") -> list[str]:
    """Every key of the store (under ``prefix``), sorted."""

    async def _list() -> list[str]:
        if prefix:
            return sorted([k async for k in zstore.list_prefix(prefix)])
        return sorted([k async for k in zstore.list()])

    return list(zarr.core.sync.sync(_list()))


def move(zstore: Store, src: str, dst: str) -> None:
    """Copy every key under ``src`` to ``dst``, then delete ``src`` (stores without rename)."""

    async def _copy() -> None:
        proto = default_buffer_prototype()
        async for key in zstore.list_prefix(src + "/"):
            buf = await zstore.get(key, prototype=proto)
            if buf is not None:
                await zstore.set(dst + key[len(src) :], buf)
        await zstore.delete_dir(src)

    zarr.core.sync.sync(_copy())


async def settled(*aws: Awaitable[Any]) -> list[Any]:
    """``asyncio.gather(*aws)`` that lets every write finish (or fail) before it raises the
    first failure: a write still in flight when a failed one is rolled back would land after
    the rollback (a chunk of a run that is being deleted, its folder made again)."""
    done = await asyncio.gather(*aws, return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
    return list(done)


def drain(timeout: float = 60.0) -> None:
    """Wait (up to ``timeout`` seconds) until zarr's event loop runs no other task.

    zarr writes an array's chunks concurrently and, when one write fails, raises at once while
    the others go on; a rollback started then would race them (a chunk landing in a run being
    deleted). Called before a rollback, so that it starts once every write has settled.
    """

    async def _drain() -> None:
        me = asyncio.current_task()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            left = deadline - asyncio.get_running_loop().time()
            if not pending or left <= 0:
                return
            await asyncio.wait(pending, timeout=left)

    zarr.core.sync.sync(_drain())


def copy_keys(src: Store, dst: Store, prefix: str, skip: tuple[str, ...] = ()) -> None:
    """Store every key of ``src`` (but ``skip``) under ``prefix`` in ``dst``, concurrently."""

    async def _copy() -> None:
        proto = default_buffer_prototype()
        keys = [k async for k in src.list() if k not in skip]
        values = await asyncio.gather(*(src.get(k, prototype=proto) for k in keys))
        base = prefix.rstrip("/") + "/" if prefix else ""
        await settled(
            *(dst.set(base + k, v) for k, v in zip(keys, values, strict=True) if v is not None)
        )

    zarr.core.sync.sync(_copy())


def open_arrays(zstore: Store, group: str, names: list[str]) -> dict[str, zarr.Array]:
    """The arrays ``names`` of ``group`` (zarr v3), their metadata read concurrently."""

    async def _open() -> list[Any]:
        return list(
            await asyncio.gather(
                *(
                    zarr.api.asynchronous.open_array(
                        store=zstore, path=f"{group}/{name}", mode="r", zarr_format=3
                    )
                    for name in names
                )
            )
        )

    with quiet():
        found = zarr.core.sync.sync(_open())
    return {name: zarr.Array(a) for name, a in zip(names, found, strict=True)}


def init_store(zstore: Store) -> None:
    """Write the root group of an empty langneurons store."""
    with quiet():
        zarr.open_group(
            zstore,
            mode="w-",
            zarr_format=3,
            attributes={
                schema.STORE_ATTR: {
                    "schema_version": schema.SCHEMA_VERSION,
                    "kind": "activation-store",
                }
            },
        )
        zarr.consolidate_metadata(zstore)


# ---------------------------------------------------------------------- groups and arrays
class _CachedGroup:
    """A group whose children are looked up once (each lookup otherwise re-reads metadata)."""

    def __init__(self, group: zarr.Group, members: dict[str, Any] | None = None) -> None:
        self._group = group
        if members is None:
            with quiet():
                members = dict(group.members())
        self._members = members

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def __getitem__(self, name: str) -> Any:
        return self._members[name]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._group, attr)


def cached(group: zarr.Group, members: dict[str, Any] | None = None) -> zarr.Group:
    """``group`` with its children cached, for the many lookups of one write.

    ``members``: the children as the caller has just created them (nothing is read).
    """
    return cast(zarr.Group, _CachedGroup(group, members))


def arr(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of a group (raises StoreValidationError when it is not one)."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise StoreValidationError(f"{group.path}/{name} is not an array")
    return node


def read(group: zarr.Group, name: str) -> np.ndarray:
    """All values of the array ``name``."""
    return np.asarray(arr(group, name)[...])


def labels(group: zarr.Group, name: str) -> list[str]:
    """A string array as a list of str."""
    return [str(x) for x in read(group, name)]


def grp(group: zarr.Group, name: str) -> zarr.Group:
    """The subgroup ``name`` of a group."""
    node = group[name]
    if not isinstance(node, zarr.Group):
        raise StoreValidationError(f"{group.path}/{name} is not a group")
    return node


def chunk_rows(array: zarr.Array) -> Iterator[slice]:
    """Slices of ``array`` along its first axis, one row of chunks each (bounded memory)."""
    step = array.chunks[0]
    for start in range(0, array.shape[0], step):
        yield slice(start, min(start + step, array.shape[0]))


def resize_many(changes: list[tuple[zarr.Array, tuple[int, ...]]]) -> None:
    """``array.resize(shape)`` of each ``(array, shape)``, concurrently (one round trip)."""

    async def _resize() -> None:
        await settled(*(a.async_array.resize(shape) for a, shape in changes))

    zarr.core.sync.sync(_resize())


def shrink(array: zarr.Array, n: int) -> None:
    """Cut ``array`` to ``n`` rows and rewrite its last, partial chunk row.

    Resizing deletes the chunks past the end but keeps a partial one as the longer write left it;
    rewriting it puts back the bytes of its rows alone, and puts them on a recorder's record.
    """
    array.resize((n, *array.shape[1:]))
    start = n - n % array.chunks[0]
    if start < n:
        array[start:n] = np.asarray(array[start:n])


def fill_zeros(array: zarr.Array) -> None:
    """Write zeros to every chunk of ``array``, one chunk row at a time."""
    for rows in chunk_rows(array):
        array[rows] = np.zeros((rows.stop - rows.start, *array.shape[1:]), dtype=array.dtype)


# ---------------------------------------------------------------------- datasets
def described(ds: xr.Dataset) -> xr.Dataset:
    """Variables with their CF-style attributes (runs written before they were stored too)."""
    for name in schema.VARIABLE_ATTRS:
        if name in ds.variables:
            describe(name, ds[name].attrs)
    return ds


def describe(name: str, attrs: dict[str, Any]) -> None:
    """Add the schema's CF-style attributes of variable ``name`` that ``attrs`` lacks."""
    for key, value in schema.VARIABLE_ATTRS.get(name, {}).items():
        attrs.setdefault(key, value)


def unicode_labels(ds: xr.Dataset) -> xr.Dataset:
    """String coordinates and variables as numpy unicode, friendlier than StringDType for .sel."""
    for name, var in ds.variables.items():
        if var.dtype.kind == "T":
            value = (var.dims, unicode(np.asarray(var.values)), var.attrs)
            ds = ds.assign_coords({name: value}) if name in ds.coords else ds.assign({name: value})
    return ds


def unicode(values: np.ndarray) -> np.ndarray:
    """StringDType values as numpy unicode (see :func:`unicode_labels`); others as they are."""
    if values.dtype.kind != "T":
        return values
    return np.array([str(x) for x in values.ravel()], dtype=str).reshape(values.shape)


def run_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A run's attributes as readers give them: without the store's bookkeeping (the chunk
    manifests' format), nested ones as JSON text, as stored (older runs stored them nested):
    every attribute is then a string or a number, and ``ds.to_netcdf()`` can carry them."""
    return _attrs.encode({k: v for k, v in attrs.items() if k != schema.MANIFESTS_ATTR})


def coded_types(ds: xr.Dataset, kind: str) -> xr.Dataset:
    """A result as stored: ``neuron_type`` as int8 codes with CF flags, no copy of ``mask``.

    ``neuron_type`` strings become :mod:`langneurons._type_codes` codes (left as they are when
    they hold a label outside its list). In an identification, ``assigned[layer, neuron,
    language]``, its ``mask[language, layer, neuron]`` transposed, is dropped when it equals that
    transpose (``open_result`` gives it back as a lazy view).
    """
    out = ds
    if NEURON_TYPE in ds.data_vars and ds[NEURON_TYPE].dtype.kind in "OUT":
        var = ds[NEURON_TYPE]
        coded = coded_labels(np.asarray(var.values), var.attrs)
        if coded is not None:
            out = out.assign({NEURON_TYPE: (var.dims, *coded)})
    if kind == IDENTIFICATION and _assigned_is_mask(out):
        out = out.drop_vars(ASSIGNED)
    return out


def coded_labels(
    labels: np.ndarray, attrs: Mapping[str, Any]
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """``neuron_type`` labels as stored: int8 codes and ``attrs`` with the CF flags (the dense
    table, else the MoE one with undefined and padding); None when a label is in neither."""
    for table in (_type_codes.CODES, _type_codes.MOE_CODES):
        try:
            codes = _type_codes.encode(labels, table)
        except ValueError:
            continue
        return codes, {**attrs, **_type_codes.flag_attrs(table)}
    return None


def _assigned_is_mask(ds: xr.Dataset) -> bool:
    """True when ``assigned`` is an in-memory copy of ``mask`` transposed."""
    if ASSIGNED not in ds.data_vars or MASK not in ds.data_vars:
        return False
    assigned, mask = ds[ASSIGNED], ds[MASK]
    if not all(isinstance(v.data, np.ndarray) for v in (assigned, mask)):
        return False  # lazy: comparing would load both, keep what was given
    return assigned_is_mask(assigned.dims, assigned.values, mask.dims, mask.values)


def assigned_is_mask(
    assigned_dims: tuple[Any, ...],
    assigned: np.ndarray,
    mask_dims: tuple[Any, ...],
    mask: np.ndarray,
) -> bool:
    """True when ``assigned[layer, neuron, language]`` equals ``mask`` (any order) transposed."""
    if tuple(assigned_dims) != ASSIGNED_DIMS or set(mask_dims) != set(ASSIGNED_DIMS):
        return False
    order = [list(mask_dims).index(d) for d in ASSIGNED_DIMS]
    return bool(np.array_equal(assigned, mask.transpose(order)))


def labelled_types(ds: xr.Dataset) -> xr.Dataset:
    """A stored result as the analysis returned it: type labels, ``assigned`` back as a view.

    Coded ``neuron_type`` is decoded lazily (block by block when dask-backed); results saved
    with string types are returned as they are.
    """
    if NEURON_TYPE in ds.data_vars:
        var = ds[NEURON_TYPE]
        if _type_codes.is_coded(var.attrs, var.dtype):
            attrs = {
                k: v
                for k, v in var.attrs.items()
                if k not in (_type_codes.FLAG_VALUES, _type_codes.FLAG_MEANINGS)
            }
            flags = dict(var.attrs)
            data = var.data
            width = max(len(c) for c in str(var.attrs[_type_codes.FLAG_MEANINGS]).split())
            if hasattr(data, "map_blocks"):
                labels = data.map_blocks(_type_codes.decode, flags, dtype=np.dtype(f"U{width}"))
            else:
                labels = _type_codes.decode(np.asarray(data), flags)
            ds = ds.assign({NEURON_TYPE: (var.dims, labels, attrs)})
    if (
        ds.attrs.get("result_kind") == IDENTIFICATION
        and ASSIGNED not in ds.data_vars
        and MASK in ds.data_vars
    ):
        mask = ds[MASK]
        if set(mask.dims) == set(ASSIGNED_DIMS):
            ds = ds.assign({ASSIGNED: mask.transpose(*ASSIGNED_DIMS)})
    return ds


def vlen_strings(ds: xr.Dataset) -> xr.Dataset:
    """Fixed-width unicode arrays as variable-length strings (the only string type in Zarr v3)."""
    fixed = [name for name, var in ds.variables.items() if var.dtype.kind == "U"]
    out = ds.assign({n: ds[n].astype(object) for n in fixed if n not in ds.coords})
    return out.assign_coords({n: ds[n].astype(object) for n in fixed if n in ds.coords})
