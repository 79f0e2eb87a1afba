"""The store's own encoder of whole chunk rows writes exactly the bytes zarr writes."""

from __future__ import annotations

from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import zarr
from numcodecs import Blosc

from langneurons.store import _chunks, _integrity


def _chunk_files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


def _array(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str) -> zarr.Array:
    with _integrity.write_empty_chunks():
        return zarr.create_array(
            path,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=0,
            compressors=_integrity.numeric_codecs(),
        )


@pytest.mark.parametrize(
    ("dtype", "shape", "chunks", "start", "n"),
    [
        ("int64", (5, 2, 7, 33), (1, 1, 3, 33), 2, 3),  # edge chunks along layers, padded
        ("uint16", (19, 2, 7, 33), (8, 1, 7, 33), 8, 11),  # ends inside the last chunk row
        ("float64", (4, 2, 5, 10), (1, 2, 5, 10), 0, 4),
        ("int64", (3, 2), (1, 2), 1, 2),
    ],
)
def test_whole_chunk_rows_match_zarr_byte_for_byte(
    tmp_path: Path, dtype: str, shape: tuple[int, ...], chunks: tuple[int, ...], start: int, n: int
) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, size=(n, *shape[1:])).astype(dtype)
    by_zarr = _array(tmp_path / "zarr", shape, chunks, dtype)
    with _integrity.write_empty_chunks():
        by_zarr[start : start + n] = data
    ours = _array(tmp_path / "ours", shape, chunks, dtype)
    assert _chunks.write_rows(ours, start, data)
    assert _chunk_files(tmp_path / "ours") == _chunk_files(tmp_path / "zarr")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "ours")[start : start + n], data)


def test_other_blocks_and_codecs_are_left_to_zarr(tmp_path: Path) -> None:
    arr = _array(tmp_path / "a", (19, 2, 3), (8, 1, 3), "uint16")
    rows = np.ones((3, 2, 3), dtype="uint16")
    assert not _chunks.write_rows(arr, 1, rows)  # starts inside a chunk row
    assert not _chunks.write_rows(arr, 0, rows)  # ends inside a chunk row before the end
    assert not _chunks.write_rows(arr, 0, rows.astype("int64"))  # another dtype
    assert _chunk_files(tmp_path / "a") == {}  # nothing written by the refusals
    _chunks.write_or_set(arr, 1, rows)  # through zarr instead
    np.testing.assert_array_equal(arr[1:4], rows)
    plain = zarr.create_array(tmp_path / "b", shape=(2, 3), chunks=(1, 3), dtype="int64")
    assert not _chunks.write_rows(plain, 0, np.ones((2, 3), dtype="int64"))  # zstd, no crc32c


@pytest.mark.parametrize("moe", [False, True])
def test_new_run_arrays_are_the_ones_zarr_creates_one_by_one(tmp_path: Path, moe: bool) -> None:
    """create_arrays builds the arrays in memory and stores their keys at once: same bytes."""
    from langneurons.store import _arrays, schema

    layout = schema.MoeLayout(expert_neurons=(6, 6, 6), n_shared=1)
    args = (3, 6, True, True, "uint16", layout if moe else None)
    ours = zarr.open_group(tmp_path / "ours", mode="w", zarr_format=3).require_group("m/base")
    made = _arrays.create_arrays(ours, *args[:5], moe=args[5])
    plain = zarr.open_group(tmp_path / "plain", mode="w", zarr_format=3).require_group("m/base")
    if moe:
        plain.attrs.update(dict(ours.attrs))
    with _integrity.write_empty_chunks():
        for name, kwargs, value in _arrays._array_specs(*args):
            array = plain.create_array(name, **kwargs)
            if value is not None:
                array[:] = value

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert files(tmp_path / "ours") == files(tmp_path / "plain")
    assert sorted(made) == sorted(name for name, _ in plain.arrays())
    for name, array in made.items():  # the returned arrays are the stored ones
        assert array.metadata == plain[name].metadata
        np.testing.assert_array_equal(array[...], plain[name][...])


@pytest.mark.parametrize(
    ("dtype", "shape", "chunks"),
    [
        ("int64", (5, 2, 7, 33), (1, 1, 3, 33)),  # edge chunks along layers
        ("uint16", (19, 2, 7, 33), (8, 1, 7, 33)),  # chunks not contiguous in the whole
        ("float64", (4, 2, 5, 10), (1, 2, 5, 10)),  # every chunk decoded in place
        ("int64", (3, 2), (1, 2)),
    ],
)
def test_whole_reads_match_zarr(
    tmp_path: Path, dtype: str, shape: tuple[int, ...], chunks: tuple[int, ...]
) -> None:
    data = np.random.default_rng(1).integers(0, 1000, size=shape).astype(dtype)
    arr = _array(tmp_path / "a", shape, chunks, dtype)
    with _integrity.write_empty_chunks():
        arr[...] = data
    got = _chunks.read_all(zarr.open_array(tmp_path / "a"))
    assert got is not None and got.dtype == data.dtype
    np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(got, arr[...])


def test_whole_reads_refuse_damage_and_leave_other_arrays_to_zarr(tmp_path: Path) -> None:
    from langneurons.errors import CorruptStoreError

    data = np.arange(4 * 2 * 3, dtype="int64").reshape(4, 2, 3) + 1
    arr = _array(tmp_path / "a", (4, 2, 3), (1, 2, 3), "int64")
    arr[...] = data
    chunk = tmp_path / "a" / "c" / "2" / "0" / "0"
    good = chunk.read_bytes()
    chunk.write_bytes(good[:-5] + bytes([good[-5] ^ 1]) + good[-4:])  # payload flipped
    with pytest.raises(CorruptStoreError, match=r"chunk c/2/0/0 fails its checksum"):
        _chunks.read_all(zarr.open_array(tmp_path / "a"))
    junk = b"not a blosc frame at all"  # intact checksum, payload blosc cannot decode
    chunk.write_bytes(junk + np.uint32(google_crc32c.value(junk)).tobytes())
    with pytest.raises(CorruptStoreError, match=r"chunk c/2/0/0 does not decode"):
        _chunks.read_all(zarr.open_array(tmp_path / "a"))
    codec = Blosc("lz4", 5, Blosc.SHUFFLE, typesize=8)  # a whole, checked, shorter chunk
    short = codec.encode(np.arange(4, dtype="int64"))
    chunk.write_bytes(bytes(short) + np.uint32(google_crc32c.value(short)).tobytes())
    with pytest.raises(CorruptStoreError, match=r"chunk c/2/0/0 holds 32 bytes where a chunk"):
        _chunks.read_all(zarr.open_array(tmp_path / "a"))
    chunk.unlink()  # a missing chunk is the fill value, as zarr reads it
    got = _chunks.read_all(zarr.open_array(tmp_path / "a"))
    assert got is not None
    np.testing.assert_array_equal(got, np.where(np.arange(4)[:, None, None] == 2, 0, data))
    plain = zarr.create_array(tmp_path / "b", shape=(2, 3), chunks=(1, 3), dtype="int64")
    assert _chunks.read_all(plain) is None  # zstd, no crc32c: zarr reads it


@pytest.mark.parametrize(
    "region",
    [
        (slice(0, 5), slice(0, 2), slice(0, 7), slice(0, 33)),  # everything
        (slice(1, 4), slice(1, 2), slice(2, 7), slice(5, 30)),  # parts of chunks on every axis
        (slice(3, 4), slice(0, 2), slice(3, 6), slice(0, 33)),  # whole chunks of layers
        (slice(2, 2), slice(0, 2), slice(0, 7), slice(0, 33)),  # empty
        (slice(None), slice(-1, None), slice(4, 100), slice(None, 10)),  # negatives, past the end
    ],
)
def test_block_reads_match_numpy(tmp_path: Path, region: tuple[slice, ...]) -> None:
    """read_all of a block (slices of step 1): the values of array[region], read by chunks."""
    shape, chunks = (5, 2, 7, 33), (1, 1, 3, 33)
    data = np.random.default_rng(4).integers(0, 1000, size=shape).astype("int64")
    arr = _array(tmp_path / "a", shape, chunks, "int64")
    arr[...] = data
    got = _chunks.read_all(zarr.open_array(tmp_path / "a"), region)
    assert got is not None
    np.testing.assert_array_equal(got, data[region])
    assert _chunks.read_all(arr, (slice(0, 5, 2), *region[1:])) is None  # strided: zarr's
    assert _chunks.read_all(arr, region[:2]) is None  # not one slice per axis


def test_big_whole_reads_touch_their_pages_first_and_still_name_damage(tmp_path: Path) -> None:
    """Past _PREFAULT_BYTES the new array's pages are touched in a thread while the chunks are
    read; the decodes wait for it (a touch after a decode would zero a decoded byte)."""
    from langneurons.errors import CorruptStoreError

    shape, chunks = (6, 2, 4, 40_000), (1, 1, 4, 40_000)  # 15 MiB of int64 in 12 chunks
    assert np.prod(shape) * 8 >= _chunks._PREFAULT_BYTES
    data = np.random.default_rng(2).integers(1, 1000, size=shape).astype("int64")
    arr = _array(tmp_path / "a", shape, chunks, "int64")
    arr[...] = data
    for _ in range(3):
        got = _chunks.read_all(zarr.open_array(tmp_path / "a"))
        assert got is not None
        np.testing.assert_array_equal(got, data)  # no zero left by the page touch
    chunk = tmp_path / "a" / "c" / "3" / "1" / "0" / "0"
    good = chunk.read_bytes()
    chunk.write_bytes(good[:-5] + bytes([good[-5] ^ 1]) + good[-4:])
    with pytest.raises(CorruptStoreError, match=r"chunk c/3/1/0/0 fails its checksum"):
        _chunks.read_all(zarr.open_array(tmp_path / "a"))
    junk = b"not a blosc frame at all"  # and the first failing chunk in order is the one named
    first = tmp_path / "a" / "c" / "1" / "0" / "0" / "0"
    first.write_bytes(junk + np.uint32(google_crc32c.value(junk)).tobytes())
    with pytest.raises(CorruptStoreError, match=r"chunk c/1/0/0/0 does not decode"):
        _chunks.read_all(zarr.open_array(tmp_path / "a"))


def test_big_block_reads_are_mapped_in_small_pages_and_whole_reads_are_numpy_s(
    tmp_path: Path,
) -> None:
    """A block past _PREFAULT_BYTES (a streaming tile) is read into an anonymous mapping (no
    huge-page advice, so no compaction stall on fragmented memory): same values, a normal
    writable C-contiguous array that outlives the read and pickles; a whole read and a small
    block keep numpy's allocation."""
    import mmap
    import pickle

    shape, chunks = (6, 2, 4, 40_000), (1, 1, 4, 40_000)  # 15 MiB of int64
    data = np.random.default_rng(3).integers(0, 1000, size=shape).astype("int64")
    arr = _array(tmp_path / "a", shape, chunks, "int64")
    arr[...] = data

    def mapped(values: np.ndarray) -> bool:
        base = values
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)

    region = (slice(1, 6), slice(0, 2), slice(0, 4), slice(0, 40_000))  # 12.5 MiB
    block = _chunks.read_all(zarr.open_array(tmp_path / "a"), region)
    assert block is not None and mapped(block)
    assert block.flags.c_contiguous and block.flags.writeable and block.dtype == np.int64
    np.testing.assert_array_equal(block, data[region])
    block[0, 0, 0, 0] = -1  # the caller's own memory
    assert pickle.loads(pickle.dumps(block))[0, 0, 0, 0] == -1
    edges = (slice(2, 5), slice(1, 2), slice(1, 3), slice(7, 39_999))  # parts of chunks
    small = _chunks.read_all(zarr.open_array(tmp_path / "a"), edges)
    assert small is not None and not mapped(small)  # under 4 MiB: numpy's
    np.testing.assert_array_equal(small, data[edges])
    whole = _chunks.read_all(zarr.open_array(tmp_path / "a"))
    assert whole is not None and not mapped(whole)  # read once: numpy's default
    np.testing.assert_array_equal(whole, data)


def test_open_run_reads_whole_variables_through_the_checked_store(tmp_path: Path) -> None:
    """.values of a run's counts takes the chunk reader; slices and dask stay zarr's."""
    from langneurons.errors import CorruptStoreError
    from langneurons.store import Counts, create_store

    rng = np.random.default_rng(2)
    active = rng.integers(0, 50, size=(3, 2, 4, 9))
    counts = Counts(["en", "de", "fr"], active, np.full((3, 2), 100))
    store = create_store(tmp_path / "s.zarr")
    store.create_run("m/base", n_layers=4, n_neurons=9, counts=counts)
    calls = []
    read_all = _chunks.read_all

    def spy(array: zarr.Array, region: object = None) -> np.ndarray | None:
        calls.append(array.path)
        return read_all(array, region)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_chunks, "read_all", spy)
        ds = store.open_run("m/base")
        np.testing.assert_array_equal(ds.n_active.isel(language=1).values, active[1])
        assert calls == []  # an integer selection: zarr's path
        np.testing.assert_array_equal(
            ds.n_active.isel(neuron=slice(0, None, 2)).values, active[..., ::2]
        )
        assert calls == []  # a strided one too
        np.testing.assert_array_equal(ds.n_active.values, active)
        np.testing.assert_array_equal(ds.n_tokens.values, counts.n_tokens)
        assert calls == ["m/base/n_active", "m/base/n_tokens"]
        fresh = store.open_run("m/base")  # ds's n_active is in memory now
        block = fresh.n_active.isel(language=slice(1, 3), layer=slice(1, 4), neuron=slice(2, 7))
        np.testing.assert_array_equal(block.values, active[1:3, :, 1:4, 2:7])  # a block: ours
        assert calls[-1] == "m/base/n_active" and len(calls) == 3
        lazy = store.open_run("m/base", chunks={})
        np.testing.assert_array_equal(lazy.n_active.values, active)
        assert len(calls) == 3  # dask reads chunk by chunk
    chunk = tmp_path / "s.zarr" / "m" / "base" / "n_active" / "c" / "1" / "0" / "0" / "0"
    other = tmp_path / "s.zarr" / "m" / "base" / "n_active" / "c" / "2" / "0" / "0" / "0"
    chunk.write_bytes(other.read_bytes())  # intact, but not the chunk written there
    with pytest.raises(CorruptStoreError, match=r"c/1/0/0/0 is not the chunk written there"):
        _ = store.open_run("m/base").n_active.values
