"""Chunk integrity and read isolation.

Schema version 2 writes every chunk of every array (none is left implicit as the fill value)
and ends each chunk's codec chain with a CRC32C checksum. Zarr itself reads a missing chunk as
zeros and names neither array nor run when a checksum fails; :class:`CheckedStore` sits between
zarr and the storage for every langneurons reader and turns both into a one-line
:class:`~langneurons.errors.CorruptStoreError` naming the run, the array and the chunk.

It also isolates readers from writers. A reader pins the metadata of the run (or result) it
opened; after each chunk it reads, it checks that no write is in flight on that run and that the
run's metadata is still the pinned one. A reader therefore sees the state it opened, or gets
:class:`~langneurons.errors.RunChangedError`, never a mixture of two states.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import google_crc32c
import numpy as np
import zarr
from zarr.abc.store import ByteRequest, Store
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import WrapperStore

from langneurons.errors import CorruptStoreError, RunChangedError
from langneurons.store import _manifest, schema

_CHUNK_KEY = re.compile(r"^(?P<array>.+)/c(?P<coords>(/\d+)*)$")  # "c" alone: a 0-d array


def numeric_codecs() -> list[Any]:
    """Byte-shuffled lz4 (counts compress ~4x and decode at memory speed), then a checksum."""
    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()]


def string_codecs() -> list[Any]:
    """zarr's default compressor for variable-length strings, then a checksum."""
    return [ZstdCodec(level=0), Crc32cCodec()]


def write_empty_chunks() -> Any:
    """Context in which zarr stores chunks that hold only the fill value (v2 keeps every chunk)."""
    return zarr.config.set({"array.write_empty_chunks": True})


def owner(group: str) -> str:
    """Name a run or result group: ``run 'm/base'`` or ``result identification/x of run 'm'``."""
    parts = group.split("/")
    for i, part in enumerate(parts):
        if i > 0 and part in schema.RESULT_GROUPS:
            return f"result {'/'.join(parts[i:])} of run {'/'.join(parts[:i])!r}"
    return f"run {group!r}"


def describe(array_path: str) -> str:
    """Name an array: ``run 'm/base', array 'n_active'``, or the result it belongs to."""
    group, name = array_path.rsplit("/", 1)
    return f"{owner(group)}, array {name!r}"


def damage_error(array_path: str, problems: list[str]) -> CorruptStoreError:
    """The one-line error every reader gives for a damaged array."""
    return damage_error_line(f"{describe(array_path)}: {problems[0]}", len(problems))


def damage_error_line(problem: str, count: int = 1) -> CorruptStoreError:
    """The error for a problem line of ``validate`` (``"run 'r', array 'a': chunk ..."``)."""
    more = f" (and {count - 1} more)" if count > 1 else ""
    return CorruptStoreError(
        f"{problem}{more}; the store is damaged: restore it from a copy or re-create the run "
        "(`langneurons validate STORE` lists all damage)"
    )


def crc_ok(data: bytes | np.ndarray) -> bool:
    """Whether a chunk's trailing CRC32C matches its payload."""
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if raw.size < 4:
        return False
    computed = np.uint32(google_crc32c.value(raw[:-4])).tobytes()  # no copy of the chunk
    return computed == raw[-4:].tobytes()


def _has_crc(meta: Mapping[str, Any]) -> bool:
    codecs = meta.get("codecs") or []
    return bool(codecs) and codecs[-1].get("name") == "crc32c"


class CheckedStore(WrapperStore[Store]):
    """A view of a store whose chunk reads are checked and, optionally, pinned to one state.

    Parameters
    ----------
    store
        The store to read.
    pins
        ``{group path: bytes of its zarr.json}`` as they were when the reader opened it; a chunk
        read under a pinned group fails with RunChangedError once that group has changed.
    runs
        Runs whose journal marks a write in flight (a chunk read while one is fails the same way).
    known
        ``{key: bytes or None (absent)}`` of arrays' metadata and chunk manifests the reader has
        just read (under the same pins), so that they are not read again.
    root
        The root's ``zarr.json`` as this view shows it (None: as stored). A reader of one run
        is shown the root with the consolidated metadata of that run alone
        (:func:`~langneurons.store._summary.scoped`), so that opening it builds the metadata
        of its own arrays, not of every array in the store.
    """

    def __init__(
        self,
        store: Store,
        pins: Mapping[str, bytes] | None = None,
        runs: Iterable[str] = (),
        known: Mapping[str, bytes | None] | None = None,
        root: bytes | None = None,
    ) -> None:
        super().__init__(store)
        self._pins = dict(pins or {})
        self._runs = tuple(runs)
        self._known = dict(known or {})
        self._root = root
        self._meta: dict[str, dict[str, Any] | None] = {}
        self._manifests: dict[str, dict[str, str] | None] = {}

    def _with_store(self, store: Store) -> CheckedStore:
        return type(self)(store, self._pins, self._runs, self._known, self._root)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "store": self._store,
            "pins": self._pins,
            "runs": self._runs,
            "known": self._known,
            "root": self._root,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["store"], state["pins"], state["runs"], state.get("known"), state.get("root")
        )

    async def _read(self, key: str) -> bytes | None:
        """A key's bytes: as the reader already read them, or from the store."""
        if key in self._known:
            return self._known[key]
        raw = await self._store.get(key, default_buffer_prototype())
        return None if raw is None else raw.to_bytes()

    async def _array_meta(self, path: str) -> dict[str, Any] | None:
        if path not in self._meta:
            raw = await self._read(f"{path}/zarr.json")
            meta = json.loads(raw) if raw is not None else None
            ok = isinstance(meta, dict) and meta.get("node_type") == "array"
            self._meta[path] = meta if ok else None
        return self._meta[path]

    async def _manifest(self, path: str) -> dict[str, str] | None:
        """The array's chunk manifest, read once (None for arrays written before manifests)."""
        if path not in self._manifests:
            raw = await self._read(_manifest.key(path))
            try:
                self._manifests[path] = None if raw is None else _manifest.parse(raw)
            except ValueError as exc:
                await self.check_pins(path)
                raise damage_error(path, [f"its chunk manifest is damaged ({exc})"]) from exc
        return self._manifests[path]

    async def check_pins(self, array_path: str) -> None:
        """RunChangedError if a group pinned above ``array_path`` changed or is being written.

        A writer's commit rewrites its run's ``zarr.json`` (never back to the same bytes), and
        a write in flight holds a journal: a check after a read covers that read, and one
        check after a batch of reads covers them all (:meth:`get_unpinned`).
        """
        proto = default_buffer_prototype()
        for group, pinned in self._pins.items():
            if array_path.startswith(group + "/"):
                now = await self._store.get(f"{group}/zarr.json", proto)
                if now is None or now.to_bytes() != pinned:
                    raise _changed(group)
        for run in self._runs:
            if array_path.startswith(run + "/"):
                if await self._store.exists(f"{run}/{schema.JOURNAL}/zarr.json"):
                    raise _changed(run)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if key == "zarr.json" and self._root is not None and byte_range is None:
            return prototype.buffer.from_bytes(self._root)
        value, path = await self._checked_get(key, prototype, byte_range)
        if path is not None:
            await self.check_pins(path)
        return value

    async def get_unpinned(self, key: str, prototype: BufferPrototype) -> Buffer | None:
        """:meth:`get` of a whole chunk, checked, leaving the pin check to the caller: a reader
        of many chunks calls :meth:`check_pins` once after the last (a damaged chunk still
        checks the pins first, so that a change explains it)."""
        value, _ = await self._checked_get(key, prototype, None)
        return value

    async def _checked_get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None
    ) -> tuple[Buffer | None, str | None]:
        """The value and, for a checked chunk, its array's path (whose pins are to check)."""
        value = await self._store.get(key, prototype, byte_range)
        match = _CHUNK_KEY.match(key)
        if match is None or byte_range is not None:
            return value, None
        path = match["array"]
        meta = await self._array_meta(path)
        if meta is None or not _has_crc(meta):
            return value, None  # not a schema-2 array: nothing to check
        chunk = "c" + match["coords"]
        problem = None
        if value is None or not crc_ok(value.as_numpy_array()):
            problem = f"chunk {chunk} {'is missing' if value is None else 'fails its checksum'}"
        else:
            entries = await self._manifest(path)
            if entries is not None:  # the chunk's checksum must be the one written at its place
                last = value.as_numpy_array()[-4:].tobytes()  # all misplaced reads: no copy
                problem = _manifest.misplaced(entries, chunk, last)
        if problem is not None:
            await self.check_pins(path)  # a change explains damage-like reads first
            raise damage_error(path, [problem])
        return value, path


def _changed(group: str) -> RunChangedError:
    return RunChangedError(
        f"{owner(group)} changed while it was being read (a writer committed to it or is writing); "
        "open it again to read the new state"
    )


def chunk_keys(arr: zarr.Array) -> list[str]:
    """Every chunk key of an array's grid."""
    chunks = arr.metadata.chunk_grid.chunk_shape  # type: ignore[attr-defined]
    grid = [math.ceil(s / c) for s, c in zip(arr.shape, chunks, strict=True)]
    return [arr.metadata.encode_chunk_key(tuple(int(i) for i in idx)) for idx in np.ndindex(*grid)]


def damaged_chunks(
    store: Store, arr: zarr.Array, *, verify: bool = True, manifest_expected: bool = False
) -> list[str]:
    """Each chunk of ``arr`` that is missing or (``verify``) fails its checksum or its place.

    ``manifest_expected``: the array's group says every array has a chunk manifest, so a
    missing one is damage (otherwise the chunks' places are only unverified).
    """
    meta = arr.metadata.to_dict()
    if not _has_crc(meta):
        return []  # not a schema-2 array: absent chunks are the fill value
    prefix = f"{arr.path}/"

    async def _scan() -> list[str]:
        stored = {k[len(prefix) :] async for k in store.list_prefix(prefix)}
        out = []
        entries = None
        proto = default_buffer_prototype()
        if verify:
            raw = await store.get(_manifest.key(arr.path), proto)
            try:
                entries = None if raw is None else _manifest.parse(raw.to_bytes())
            except ValueError as exc:
                return [f"its chunk manifest is damaged ({exc})"]
            if entries is None and manifest_expected:
                out.append(f"its chunk manifest {schema.CHUNK_MANIFEST} is missing")
        for key in chunk_keys(arr):
            if key not in stored:
                out.append(f"chunk {key} is missing")
            elif verify:
                value = await store.get(prefix + key, proto)
                if value is None or not crc_ok(value.as_numpy_array()):
                    out.append(f"chunk {key} fails its checksum")
                elif entries is not None:
                    wrong = _manifest.misplaced(entries, key, value.to_bytes())
                    if wrong is not None:
                        out.append(wrong)
        return out

    return list(zarr.core.sync.sync(_scan()))
