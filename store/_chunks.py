"""Whole-chunk writes of the count arrays, encoded here instead of by zarr's per-chunk path.

Writing a block of rows that covers whole chunks (a new language's counts: one chunk row of
``n_active``) through ``array[rows] = data`` costs zarr, for each chunk, a chunk-sized buffer
filled with the fill value, a copy of the data into it, a comparison of it with the fill value,
the encode, and a copy to append the checksum: about 5x what the encode and the write cost
(``benchmarks/store.py``). :func:`write_rows` encodes each chunk with the same codecs as the
array's metadata declares (bytes, blosc, crc32c: the schema-2 chain of
:func:`~langneurons.store._integrity.numeric_codecs`), from a view of the data where the chunk
is whole, and stores the chunks concurrently through the same store (so a
:class:`~langneurons.store._manifest.Recorder` records every one). The stored bytes are the ones
zarr writes (a test compares them), so readers, ``validate`` and the manifests see no
difference. Any other array, codec chain or region falls back to zarr.

Reads mirror it: :func:`read_all` reads every chunk of such an array concurrently and decodes
each straight into its place in one preallocated array, where zarr decodes into a chunk buffer
and copies it over (twice the memory traffic, and the page faults of twice the memory). Open
datasets read whole variables this way (:mod:`~langneurons.store._whole_reads`), and so does
:meth:`~langneurons.store.ActivationStore.read_run`; any other selection is zarr's.
"""

from __future__ import annotations

import asyncio
import itertools
import mmap
import sys
from collections.abc import Sequence
from typing import Any

import google_crc32c
import numpy as np
import zarr
from numcodecs import Blosc
from zarr.core.buffer import Buffer, default_buffer_prototype

from langneurons.store import _integrity, _nodes

_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}
_READ_BATCH = 64  # chunks read at once (memory: their compressed bytes)
_PREFAULT_BYTES = 4 << 20  # a whole read at least this big has its pages touched while reading
_CONCURRENT = 4  # chunks encoded or being written at once (memory: a few compressed chunks)


def _encoder(array: zarr.Array) -> tuple[np.dtype[Any], Blosc] | None:
    """The little-endian dtype and blosc codec of ``array``, or None when its chain differs."""
    meta: dict[str, Any] = dict(array.metadata.to_dict())
    if meta.get("zarr_format") != 3 or meta.get("chunk_key_encoding", {}).get("name") != "default":
        return None
    grid = meta.get("chunk_grid", {})
    if grid.get("name") != "regular":
        return None
    codecs: list[Any] = list(meta.get("codecs") or [])
    names = [c.get("name") if isinstance(c, dict) else None for c in codecs]
    if names != ["bytes", "blosc", "crc32c"]:
        return None
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "iuf":
        return None
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    if dtype.itemsize > 1 and endian != "little":
        return None
    conf: dict[str, Any] = dict(codecs[1].get("configuration") or {})
    shuffle = _SHUFFLE.get(str(conf.get("shuffle")))
    if shuffle is None or not isinstance(conf.get("typesize"), int):
        return None
    blosc = Blosc(
        cname=str(conf["cname"]),
        clevel=int(conf["clevel"]),
        shuffle=shuffle,
        blocksize=int(conf.get("blocksize") or 0),
        typesize=int(conf["typesize"]),
    )
    return dtype.newbyteorder("<"), blosc


def _encode(blosc: Blosc, chunk: np.ndarray) -> bytes:
    """One chunk's stored bytes: blosc of its little-endian bytes, then their CRC32C."""
    packed = blosc.encode(chunk.reshape(-1).view(np.uint8))
    return bytes(packed) + np.uint32(google_crc32c.value(packed)).tobytes()


def write_rows(array: zarr.Array, start: int, data: np.ndarray) -> bool:
    """``array[start:start + len(data)] = data`` for blocks of whole chunk rows.

    Returns False, having written nothing, when the block is not one this path handles (the
    caller then writes it through zarr): ``start`` not on a chunk boundary of the first axis, a
    block that ends inside a chunk row before the array's end, other dtypes or codecs.
    """
    found = _encoder(array)
    data = np.asarray(data)
    if found is None or data.dtype != array.dtype or data.ndim != array.ndim:
        return False
    dtype, blosc = found
    shape, chunks = tuple(array.shape), tuple(array.chunks)
    stop = start + data.shape[0]
    if data.shape[1:] != shape[1:] or stop > shape[0] or start % chunks[0]:
        return False
    if stop % chunks[0] and stop != shape[0]:
        return False
    fill = array.fill_value
    grid = [range(start // chunks[0], -(-stop // chunks[0]))]
    grid += [range(-(-s // c)) for s, c in zip(shape[1:], chunks[1:], strict=True)]

    def chunk_bytes(coords: tuple[int, ...]) -> bytes:
        region = tuple(
            slice(i * c - (start if axis == 0 else 0), (i + 1) * c - (start if axis == 0 else 0))
            for axis, (i, c) in enumerate(zip(coords, chunks, strict=True))
        )
        part = data[region]
        if part.shape != chunks:  # an edge chunk: stored whole, padded with the fill value
            whole = np.full(chunks, fill, dtype=dtype)
            whole[tuple(slice(0, n) for n in part.shape)] = part
            part = whole
        return _encode(blosc, np.ascontiguousarray(part, dtype=dtype))

    store = array.store_path.store
    prefix = array.path + "/" if array.path else ""
    coords = [tuple(int(i) for i in idx) for idx in np.ndindex(*map(len, grid))]
    coords = [(c[0] + grid[0].start, *c[1:]) for c in coords]

    async def _write_all() -> None:
        gate = asyncio.Semaphore(_CONCURRENT)
        proto = default_buffer_prototype()

        async def one(where: tuple[int, ...]) -> None:
            async with gate:
                raw = await asyncio.to_thread(chunk_bytes, where)
                key = prefix + array.metadata.encode_chunk_key(where)
                await store.set(key, proto.buffer.from_bytes(raw))

        await _nodes.settled(*(one(where) for where in coords))

    zarr.core.sync.sync(_write_all())
    return True


def write_or_set(array: zarr.Array, start: int, data: np.ndarray) -> None:
    """``array[start:start + len(data)] = data``: by :func:`write_rows` where it can, else zarr."""
    if not write_rows(array, start, data):
        array[start : start + len(data)] = data


def read_all(array: zarr.Array, region: Sequence[slice] | None = None) -> np.ndarray | None:
    """Every value of ``array`` (or of ``array[region]``, slices of step 1), or None when its
    chain is not one this path decodes.

    Each chunk is checked as zarr checks it (its CRC32C; through a
    :class:`~langneurons.store._integrity.CheckedStore`, which checks it and its place on
    every read, that check is not repeated, and the reader's pins are checked once after the
    last chunk): a damaged chunk raises CorruptStoreError naming the array and the chunk. A
    missing chunk reads as the fill value, as in zarr (the checked store refuses it first).
    """
    return zarr.core.sync.sync(read_all_async(array, region=region))


async def read_all_async(
    array: zarr.Array, *, check_pins: bool = True, region: Sequence[slice] | None = None
) -> np.ndarray | None:
    """:func:`read_all` in the caller's event loop (several arrays read in one round trip).

    ``check_pins=False``: a caller reading several arrays of a pinned run checks the pins
    itself, once after the last read (and before raising a failed read's error).

    Each chunk is decoded into its place, in a worker thread, as soon as it has been read, so
    that the decoding of one overlaps the reading of the next (at most :data:`_READ_BATCH`
    compressed chunks are held at once); a chunk only partly in ``region`` (or an edge chunk)
    is decoded aside and its part copied. When chunks fail, the one first in the array's order
    is named, after the pins are checked (a change explains it first).
    """
    found = _encoder(array)
    if found is None or sys.byteorder != "little":
        return None
    dtype, blosc = found
    shape, chunks = tuple(array.shape), tuple(array.chunks)
    box = block_bounds(region, shape)
    if box is None:
        return None
    whole = all(a == 0 and b == n for (a, b), n in zip(box, shape, strict=True))
    out = _new_array(tuple(b - a for a, b in box), dtype, block=not whole)
    if out.size == 0:
        return out
    store = array.store_path.store
    checked = isinstance(store, _integrity.CheckedStore)
    prefix = array.path + "/" if array.path else ""
    fill = array.fill_value
    chunk_bytes = int(np.prod(chunks)) * dtype.itemsize
    coords = [
        tuple(int(i) for i in idx)
        for idx in itertools.product(
            *(range(a // c, -(-b // c)) for (a, b), c in zip(box, chunks, strict=True))
        )
    ]

    def place(where: tuple[int, ...], value: Buffer | None, key: str) -> None:
        # the chunk's part in the box: where it goes in out, and where it sits in the chunk
        lows = [max(i * c, a) for i, c, (a, _) in zip(where, chunks, box, strict=True)]
        highs = [
            min((i + 1) * c, s, b)
            for i, c, s, (_, b) in zip(where, chunks, shape, box, strict=True)
        ]
        target = out[
            tuple(slice(lo - a, hi - a) for lo, hi, (a, _) in zip(lows, highs, box, strict=True))
        ]
        if value is None:
            target[...] = fill
            return
        raw = value.as_numpy_array()
        if not checked and not _integrity.crc_ok(raw):
            raise _damage(array.path, f"chunk {key} fails its checksum")
        payload = raw[:-4]
        try:
            if target.shape == chunks and target.flags.c_contiguous:
                blosc.decode(payload, out=target.reshape(-1).view(np.uint8))
            else:  # an edge chunk, one partly selected or not contiguous in out: decode, copy
                whole = np.frombuffer(blosc.decode(payload), dtype=dtype).reshape(chunks)
                target[...] = whole[
                    tuple(
                        slice(lo - i * c, hi - i * c)
                        for lo, hi, i, c in zip(lows, highs, where, chunks, strict=True)
                    )
                ]
        except (RuntimeError, ValueError) as exc:
            problem = f"chunk {key} does not decode ({exc})"
            raise _damage(array.path, problem) from exc
        # a short chunk decodes into part of its place, silently: the frame's header (bytes
        # 4-8, little-endian, in every blosc1 frame) says how many bytes it holds
        size = int.from_bytes(payload[4:8].tobytes(), "little")
        if size != chunk_bytes:
            problem = f"chunk {key} holds {size} bytes where a chunk has {chunk_bytes}"
            raise _damage(array.path, problem)

    gate = asyncio.Semaphore(_READ_BATCH)  # compressed chunks held at once
    proto = default_buffer_prototype()
    # The kernel gives a new array's pages on first write, zeroed: a third of a whole read's
    # time when the decode pays it. Touched in a thread while the chunks are being read, the
    # pages are there when the decodes (in threads, overlapping) start.
    touched = (
        asyncio.create_task(asyncio.to_thread(_touch, out))
        if out.nbytes >= _PREFAULT_BYTES
        else None
    )

    async def one(where: tuple[int, ...]) -> None:
        key = array.metadata.encode_chunk_key(where)
        async with gate:
            if isinstance(store, _integrity.CheckedStore):
                value = await store.get_unpinned(prefix + key, proto)
            else:
                value = await store.get(prefix + key, proto)
            if touched is not None:
                await touched  # never written to while a decode writes the same page
            await asyncio.to_thread(place, where, value, key)

    done = await asyncio.gather(*(one(where) for where in coords), return_exceptions=True)
    if touched is not None:
        await touched
    failed = [e for e in done if isinstance(e, BaseException)]
    if isinstance(store, _integrity.CheckedStore) and check_pins:  # once, after every read
        await store.check_pins(array.path)
    if failed:
        raise failed[0]
    return out


def block_bounds(
    region: Sequence[slice] | None, shape: tuple[int, ...]
) -> list[tuple[int, int]] | None:
    """``[(start, stop)]`` of each axis of ``region`` (None: everything), or None when it is not
    slices of step 1, one per axis."""
    if region is None:
        return [(0, n) for n in shape]
    if len(region) != len(shape):
        return None
    out = []
    for part, n in zip(region, shape, strict=True):
        if not isinstance(part, slice):
            return None
        start, stop, step = part.indices(n)
        if step != 1:
            return None
        out.append((start, max(start, stop)))
    return out


def _new_array(shape: tuple[int, ...], dtype: np.dtype[Any], *, block: bool) -> np.ndarray:
    """A new C-contiguous array for a read; a big block in 4 KiB pages.

    numpy asks the kernel for transparent huge pages on arrays of 4 MiB or more. Where memory
    is fragmented (a machine up for a while, its page cache full) the kernel then compacts
    memory before it backs the pages, in the faulting thread: here 0.5-0.75 s for 73 MiB that
    took 10 ms, or 35 ms in 4 KiB pages, when huge pages were free. Blocks are what the
    streaming statistics read, tile after tile, each freed before the next, so each would pay
    it again; they are mapped without the advice (anonymous memory, 4 KiB pages: steady
    ~0.5 ms a MiB), and the array keeps the mapping alive. A whole read happens once and
    keeps numpy's default (and ``np.load``'s, its baseline).
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not block or nbytes < _PREFAULT_BYTES:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).reshape(shape)


def _touch(out: np.ndarray) -> None:
    """Write one byte of each memory page of the new array ``out`` (C-contiguous), so that
    the kernel maps and zeroes its pages now rather than in the middle of the decodes."""
    out.reshape(-1).view(np.uint8)[:: mmap.PAGESIZE] = 0


def _damage(path: str, problem: str) -> Exception:
    """The store's error for a damaged chunk of the array at ``path``."""
    if "/" in path:  # a run's or a result's array: named as every reader names it
        return _integrity.damage_error(path, [problem])
    return _integrity.damage_error_line(f"array {path!r}: {problem}")


def decodes(array: zarr.Array) -> bool:
    """Whether :func:`read_all` and :func:`write_rows` handle ``array`` (its codec chain)."""
    return _encoder(array) is not None
