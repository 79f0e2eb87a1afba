"""Chunk manifests: the checksum of the chunk written at each place of an array.

A chunk's trailing CRC32C proves its bytes are intact, not that they belong where they lie: a
valid chunk copied from another run, or two languages' chunks swapped, pass it. So every
langneurons writer records, next to each array's ``zarr.json``, the checksum each chunk had when
it was written there (``chunk_manifest.json``: ``{"crc32c": {"c/0/1/0/0": "1a2b3c4d"}}``, a
chunk's stored last four bytes as hex, so recording costs no hashing). Readers and ``validate``
compare each chunk they read with the entry for its place.

Writes go through a :class:`Recorder`, a view of the store that notes each chunk written or
deleted; :func:`flush` then updates the manifests, before the journal's commit point. A rollback
records the chunks it writes the same way, so a manifest always holds what a writer wrote, never
what a check found. Each manifest is one key, written atomically by the store.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import cast

import zarr
from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype

from langneurons.errors import CorruptStoreError
from langneurons.store import _nodes, _summary, schema

CHUNK_KEY = re.compile(r"^(?P<array>.+)/(?P<chunk>c(/\d+)*)$")  # "c" alone: a 0-d array
FORMAT = 1  # the value of a group's ``chunk_manifests`` attribute


def tail(chunk: bytes) -> str:
    """A chunk's stored checksum (its last four bytes) as the manifest writes it."""
    return chunk[-4:].hex()


def parse(raw: bytes) -> dict[str, str]:
    """The ``{chunk key: checksum}`` of a manifest's bytes (ValueError when it is not one)."""
    meta = json.loads(raw)
    entries = meta.get("crc32c") if isinstance(meta, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
        raise ValueError("no crc32c mapping of chunk keys to checksums")
    return {str(k): v for k, v in entries.items()}


def dumps(entries: Mapping[str, str]) -> bytes:
    """A manifest's bytes."""
    return json.dumps({"crc32c": dict(sorted(entries.items()))}, indent=0).encode()


def key(array_path: str) -> str:
    """The store key of an array's manifest."""
    return f"{array_path}/{schema.CHUNK_MANIFEST}"


def misplaced(entries: Mapping[str, str], chunk: str, data: bytes) -> str | None:
    """Why the (intact) chunk ``data`` read at ``chunk`` is not the one written there, or None."""
    got = tail(data)
    if entries.get(chunk) == got:
        return None
    elsewhere = sorted(k for k, v in entries.items() if v == got and k != chunk)
    if elsewhere:
        why = f"its bytes are the chunk written at {elsewhere[0]}: chunks swapped or copied"
    else:
        why = "no chunk written to this array had its checksum: copied from elsewhere, or "
        why += "written by another tool"
    return f"chunk {chunk} is not the chunk written there ({why})"


class Recorder(_summary.LeanRoot):
    """A view of a store that notes every chunk written or deleted through it.

    As every writer's view, it shows the root without its consolidated metadata
    (:class:`~langneurons.store._summary.LeanRoot`).
    """

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.chunks: dict[str, dict[str, str | None]] = {}  # array -> chunk -> crc (None: gone)
        self.arrays: set[str] = set()  # arrays whose zarr.json was written (created or resized)

    def _with_store(self, store: Store) -> Recorder:
        out = cast(Recorder, super()._with_store(store))  # the root read once, shared
        out.chunks, out.arrays = self.chunks, self.arrays  # one record, whatever the view
        return out

    def _note(self, key: str, value: Buffer | None) -> None:
        if key.endswith("/zarr.json"):
            self.arrays.add(key[: -len("/zarr.json")])
            return
        match = CHUNK_KEY.match(key)
        if match is not None:
            crc = None if value is None else tail(value.as_numpy_array()[-4:].tobytes())
            self.chunks.setdefault(match["array"], {})[match["chunk"]] = crc

    async def set(self, key: str, value: Buffer) -> None:
        await super().set(key, value)
        self._note(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await super().set_if_not_exists(key, value)
        if CHUNK_KEY.match(key) is None and not key.endswith("/zarr.json"):
            return  # nothing to note (the root's metadata among them)
        current = await self._store.get(key, default_buffer_prototype())
        self._note(key, current)

    async def delete(self, key: str) -> None:
        await super().delete(key)
        self._note(key, None)


def _checked_meta(raw: bytes | None) -> bool:
    """Whether ``raw`` is the ``zarr.json`` of an array whose chunks end in a CRC32C."""
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        return False
    if not isinstance(meta, dict) or meta.get("node_type") != "array":
        return False
    codecs = meta.get("codecs") or []
    return bool(codecs) and isinstance(codecs[-1], dict) and codecs[-1].get("name") == "crc32c"


def load(zstore: Store, array_path: str) -> dict[str, str] | None:
    """An array's manifest (None when it has none; ValueError when it is damaged)."""
    raw = _nodes.raw(zstore, key(array_path))
    return None if raw is None else parse(raw)


def flush(zstore: Store, recorder: Recorder, *, new: bool) -> None:
    """Write what ``recorder`` saw into the manifests of the arrays it touched.

    ``new``: the arrays were created through the recorder, so each gets a manifest of what it
    recorded. Otherwise only arrays that already have a manifest are updated: an array written
    before manifests stays unverified rather than getting a manifest of its newest chunks only.
    The arrays are updated concurrently (each manifest is its own key).
    """
    proto = default_buffer_prototype()

    async def one(path: str) -> None:
        meta_raw, raw = await asyncio.gather(
            zstore.get(f"{path}/zarr.json", proto), zstore.get(key(path), proto)
        )
        if not _checked_meta(None if meta_raw is None else meta_raw.to_bytes()):
            return
        try:
            entries = None if raw is None else parse(raw.to_bytes())
        except ValueError as exc:
            raise CorruptStoreError(
                f"{key(path)!r} is not a chunk manifest ({exc}); the store is damaged: restore it "
                "from a copy (`langneurons validate STORE` lists all damage)"
            ) from exc
        if entries is None:
            if not new:
                return
            entries = {}
        for chunk, crc in recorder.chunks.get(path, {}).items():
            if crc is None:
                entries.pop(chunk, None)
            else:
                entries[chunk] = crc
        await zstore.set(key(path), proto.buffer.from_bytes(dumps(entries)))

    async def every() -> list[BaseException | None]:
        paths = sorted(recorder.arrays | set(recorder.chunks))
        return list(await asyncio.gather(*(one(p) for p in paths), return_exceptions=True))

    # every update has finished before a failure is raised (a rollback never races one)
    for outcome in zarr.core.sync.sync(every()):
        if isinstance(outcome, BaseException):
            raise outcome


def rebind(zstore: Store, arr: zarr.Array) -> None:
    """Write the manifest of ``arr`` from the chunks stored now (for arrays that have none)."""
    prefix = f"{arr.path}/"
    entries = {}
    for k in _nodes.keys(zstore, prefix):
        match = CHUNK_KEY.match(k)
        if match is not None and match["array"] == arr.path:
            data = _nodes.raw(zstore, k)
            if data is not None:
                entries[match["chunk"]] = tail(data)
    _nodes.put(zstore, key(arr.path), dumps(entries))
