"""Zarr nodes of a store: opening a URL, reading keys, and typed access to groups and arrays.

The helpers every other module of the store shares (the journal, the writes, validation,
migration, zip export), so none of them imports a private name from a sibling. Each takes the
zarr :class:`~zarr.abc.store.Store` or group it works on; none holds state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import unicodedata
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import zarr
import zarr.api.asynchronous
import zarr.storage
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.group import AsyncGroup, ConsolidatedMetadata, GroupMetadata
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import StorePath, WrapperStore

from langneurons import _type_codes
from langneurons.errors import NO_SPACE, OutOfSpaceError, StoreValidationError
from langneurons.names import LANGUAGE, LAYER, NEURON
from langneurons.store import _attrs, _remote, schema

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


ROOT = "zarr.json"  # the root group's metadata


class LeanRoot(WrapperStore[Store]):
    """A view of a store that shows the root's ``zarr.json`` without its consolidated metadata
    (read once per view; a write to it through the view is seen by the next read).

    zarr reads the root's metadata to open the root, for every array it creates (no array may
    sit above a new one) and for every group it requires. With the store's consolidated
    metadata in it, each of those reads parsed every node's entry, so that a write, or a
    look at a few groups, cost time linear in the store. Writers and the store's own walks
    open the store through this view; readers that want the summary use the store itself.
    """

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._root: list[bytes | None] = []  # the root as shown, once read

    def _with_store(self, store: Store) -> LeanRoot:
        out = type(self)(store)
        out._root = self._root  # one reading, whatever the view
        return out

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if key != ROOT or byte_range is not None:
            return await self._store.get(key, prototype, byte_range)
        if not self._root:
            raw = await self._store.get(key, prototype)
            self._root[:] = [None if raw is None else _without_summary(raw.to_bytes())]
        shown = self._root[0]
        return None if shown is None else prototype.buffer.from_bytes(shown)

    async def set(self, key: str, value: Buffer) -> None:
        await self._store.set(key, value)
        if key == ROOT:
            self._root.clear()

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._store.set_if_not_exists(key, value)
        if key == ROOT and not (self._root and self._root[0] is not None):
            self._root.clear()  # a root that was there is left as it was

    async def delete(self, key: str) -> None:
        await self._store.delete(key)
        if key == ROOT:
            self._root.clear()


def _without_summary(raw: bytes) -> bytes:
    """The root's ``zarr.json`` without its consolidated metadata (unchanged when unparsable:
    zarr then reports it as it would)."""
    try:
        meta = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(meta, dict) or "consolidated_metadata" not in meta:
        return raw
    meta.pop("consolidated_metadata")
    return json.dumps(meta, allow_nan=True).encode()


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
    """Delete every key under ``path``."""
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


def copy_keys(src: Store, dst: Store, prefix: str, skip: tuple[str, ...] = ()) -> None:
    """Store every key of ``src`` (but ``skip``) under ``prefix`` in ``dst``, concurrently."""

    async def _copy() -> None:
        proto = default_buffer_prototype()
        keys = [k async for k in src.list() if k not in skip]
        values = await asyncio.gather(*(src.get(k, prototype=proto) for k in keys))
        base = prefix.rstrip("/") + "/" if prefix else ""
        await asyncio.gather(
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


def consolidate(
    zstore: Store, changed: Sequence[str] | None = None, *, gone: Sequence[str] = ()
) -> None:
    """Refresh the consolidated metadata (what plain xarray and readers see).

    ``changed``: the groups a write touched (a run, a result's folder). Only the entries of
    those subtrees and of their ancestors are read again; the rest are kept from the root's
    consolidated metadata, so a write costs the same in a store of 1 run or of 1,000 (zarr's
    own consolidation reads every node of the store). The root's ``zarr.json`` is the bytes
    zarr's consolidation writes (tested after every kind of write). None (and a root without
    consolidated metadata, or a changed path no longer reachable from the root): the whole
    store is walked, as ``repair`` does. ``gone``: groups about to be deleted (a replaced
    result's old copy), dropped from the listing without being read.

    It is refreshed after a write has committed (or rolled back), so running out of space here
    loses nothing: the error says so, and that ``repair`` refreshes it once there is room.
    """
    try:
        with quiet():
            if changed is None or not zarr.core.sync.sync(_consolidate_part(zstore, changed, gone)):
                zarr.consolidate_metadata(zstore)
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        raise OutOfSpaceError(
            f"the store's consolidated metadata (what plain xarray reads) could not be refreshed: "
            f"{NO_SPACE[exc.errno]} ({exc.strerror}); everything written before it is saved "
            "and consistent: free some space and run `langneurons repair STORE` to refresh it"
        ) from exc


def _entry(raw: bytes) -> dict[str, Any] | None:
    """A node's ``zarr.json`` as its entry in consolidated metadata (zarr's parse, then
    ``to_dict``), or None when it is no zarr v3 node (a walk does not list it)."""
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
            return None
        if meta.get("node_type") == "array":
            return dict(ArrayV3Metadata.from_dict(meta).to_dict())
        if meta.get("node_type") == "group":
            group = GroupMetadata.from_dict(meta)
            flat = dataclasses.replace(group, consolidated_metadata=ConsolidatedMetadata({}))
            return dict(flat.to_dict())
    except (ValueError, TypeError, KeyError):
        return None
    return None


async def _consolidate_part(zstore: Store, changed: Sequence[str], gone: Sequence[str]) -> bool:
    """:func:`consolidate` of the ``changed`` subtrees; False (nothing written) when the whole
    store must be walked instead."""
    proto = default_buffer_prototype()
    found = await zstore.get("zarr.json", proto)
    raw_root = b"" if found is None else found.to_bytes()
    try:
        root = json.loads(raw_root) if found is not None else None
    except ValueError:
        return False
    if not isinstance(root, dict):
        return False
    held = root.get("consolidated_metadata")
    if not isinstance(held, dict) or not isinstance(held.get("metadata"), dict):
        return False
    entries: dict[str, Any] = dict(held["metadata"])
    paths = sorted({p.strip("/") for p in changed})
    if "" in paths:  # the root: everything
        return False
    for path in [*paths, *(g.strip("/") for g in gone)]:
        for key in [k for k in entries if k == path or k.startswith(path + "/")]:
            del entries[key]
    ancestors = sorted(
        {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    )
    tops = [p for p in paths if not any(p.startswith(q + "/") for q in paths)]
    fresh: set[str] = set()  # entries read now (the others keep their text)
    raws = await asyncio.gather(*(zstore.get(f"{p}/zarr.json", proto) for p in ancestors + tops))
    for path, raw in zip(ancestors + tops, raws, strict=True):
        entry = None if raw is None else _entry(raw.to_bytes())
        if path in ancestors and (entry is None or entry.get("node_type") != "group"):
            return False  # the walk would not reach what lies below: walk it all
        if entry is None:
            continue  # deleted (or never a node): its entries are gone
        entries[path] = entry
        fresh.add(path)
        if path not in tops or entry.get("node_type") != "group":
            continue  # an ancestor: its own entry only
        group = await AsyncGroup.open(StorePath(zstore, path), use_consolidated=False)
        async for key, node in group.members(max_depth=None, use_consolidated_for_children=False):
            meta = node.metadata
            if isinstance(meta, GroupMetadata):  # as zarr's walk lists a group: no children
                meta = dataclasses.replace(meta, consolidated_metadata=ConsolidatedMetadata({}))
            entries[f"{path}/{key}"] = dict(meta.to_dict())
            fresh.add(f"{path}/{key}")
    order = sorted(
        entries, key=lambda k: (k.count("/"), unicodedata.normalize("NFKC", k).casefold())
    )
    try:
        kept = _entry_texts(raw_root.decode(), list(held["metadata"]))
    except UnicodeDecodeError:
        kept = None
    text = _render(root, held, {k: entries[k] for k in order}, kept, fresh)
    await zstore.set("zarr.json", proto.buffer.from_bytes(text.encode()))
    return True


_INDENT = 2  # zarr's default json_indent: the layout _entry_texts reads
_ENTRY = "\n" + " " * 3 * _INDENT + '"'  # the start of an entry of the consolidated metadata


def _render(
    root: dict[str, Any],
    held: dict[str, Any],
    entries: dict[str, Any],
    kept: dict[str, str] | None,
    fresh: set[str],
) -> str:
    """The root's ``zarr.json`` with ``entries`` as its consolidated metadata, as
    ``json.dumps(..., indent=json_indent, allow_nan=True)`` (zarr's writer) renders it.

    With zarr's default indent, json renders in Python, about 50 ms for the 1.7 MB root of a
    store of 200 runs; so the entries a write did not touch keep their text from the root as
    it was (``kept``), and only the root's own fields and the ``fresh`` entries are rendered.
    """
    indent = zarr.config.get("json_indent")
    whole = {**root, "consolidated_metadata": {**held, "metadata": entries}}
    if indent != _INDENT or kept is None or not entries:
        return json.dumps(whole, indent=indent, allow_nan=True)
    sentinel = "\x00langneurons entries\x00"
    marker = json.dumps(sentinel)
    head = json.dumps(
        {**root, "consolidated_metadata": {**held, "metadata": sentinel}},
        indent=indent,
        allow_nan=True,
    )
    if head.count(marker) != 1:  # the sentinel's text elsewhere in the root: render it all
        return json.dumps(whole, indent=indent, allow_nan=True)
    pad = "\n" + " " * 3 * _INDENT
    parts = []
    for key, entry in entries.items():
        text = kept.get(key) if key not in fresh else None
        if text is None:
            text = json.dumps(entry, indent=indent, allow_nan=True).replace("\n", pad)
        parts.append(f"{pad[1:]}{json.dumps(key)}: {text}")
    body = "{\n" + ",\n".join(parts) + "\n" + " " * 2 * _INDENT + "}"
    return head.replace(marker, body)


def _entry_texts(text: str, keys: list[str]) -> dict[str, str] | None:
    """``{path: its entry's text}`` of the consolidated metadata in the root's ``zarr.json``
    text, as json rendered it with zarr's default indent; None when the text is laid out
    otherwise or does not list exactly ``keys``, in order.

    In that layout each entry starts on a line indented three levels with its key's quote;
    every line inside an entry is indented deeper (json strings hold no raw newline), and the
    listing ends at the first line indented two levels.
    """
    cm = text.find("\n" + " " * _INDENT + '"consolidated_metadata": {\n')
    opening = "\n" + " " * 2 * _INDENT + '"metadata": {\n'
    start = text.find(opening, cm) if cm >= 0 else -1
    if start < 0:
        return None
    start += len(opening) - 1  # keep the newline: every entry starts after one
    end = text.find("\n" + " " * 2 * _INDENT + "}", start)
    if end < 0:
        return None
    pieces = text[start:end].split(_ENTRY)
    if pieces[0] != "" or len(pieces) - 1 != len(keys):
        return None
    out: dict[str, str] = {}
    for piece, key in zip(pieces[1:], keys, strict=True):
        lead = json.dumps(key)[1:] + ": "  # the key as json renders it, after its quote
        if not piece.startswith(lead):
            return None
        out[key] = piece[len(lead) :].removesuffix(",")
    return out


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
        await asyncio.gather(*(a.async_array.resize(shape) for a, shape in changes))

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
