"""The bootstrap's in-memory tiles: later blocks reuse the first pass's reads, same results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from langneurons.analysis import IdentifyParams, _resample
from langneurons.analysis.stability import bootstrap_identification
from langneurons.store import create_store

from .conftest import make_counts


@pytest.fixture
def run(tmp_path: Path) -> xr.Dataset:
    counts = make_counts(["en", "de", "fr"], layers=3, neurons=40, seed=2, sequences=6)
    store = create_store(tmp_path / "s.zarr")
    store.create_run("m/base", n_layers=3, n_neurons=40, sequences=True, counts=counts)
    return store.open_run("m/base")


def _boot(run: xr.Dataset, block: int) -> xr.Dataset:
    params = IdentifyParams(lam=0.05)
    return bootstrap_identification(run, params=params, n_boot=6, seed=1, block=block)


def test_blocks_read_the_store_once_and_agree(
    run: xr.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    original = _resample.Reader._read_tiles

    def counting(self: _resample.Reader, *, all_sequences: bool):  # type: ignore[no-untyped-def]
        reads.append(all_sequences)
        yield from original(self, all_sequences=all_sequences)

    monkeypatch.setattr(_resample.Reader, "_read_tiles", counting)
    one_block = _boot(run, 6)
    reads_one = len(reads)
    many_blocks = _boot(run, 1)  # six blocks: the store is read in the first only
    assert len(reads) - reads_one == reads_one
    xr.testing.assert_identical(one_block, many_blocks)


def test_no_cache_above_the_budget(run: xr.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = _boot(run, 1)
    monkeypatch.setattr(_resample, "CACHE_BYTES", 0)
    reads = []
    original = _resample.Reader._read_tiles

    def counting(self: _resample.Reader, *, all_sequences: bool):  # type: ignore[no-untyped-def]
        reads.append(all_sequences)
        yield from original(self, all_sequences=all_sequences)

    monkeypatch.setattr(_resample.Reader, "_read_tiles", counting)
    uncached = _boot(run, 1)
    assert len(reads) >= 6  # read again for every block
    for name in cached.data_vars:
        np.testing.assert_array_equal(cached[name].values, uncached[name].values)


def test_replicates_identified_in_threads_agree_with_one_at_a_time(
    run: xr.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langneurons.analysis import bootstrap

    monkeypatch.setattr(bootstrap, "THREADS", 2)
    threaded = _boot(run, 4)
    monkeypatch.setattr(bootstrap, "THREADS", 1)
    serial = _boot(run, 4)
    xr.testing.assert_identical(threaded, serial)
