"""Concurrent writers: real processes writing into one store lose nothing and mislabel nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from langneurons.store import create_store, open_store

from .conftest import make_counts

_WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from conftest import make_counts
from langneurons.store import open_store
while time.time() < {start}:
    time.sleep(0.005)
store = open_store({path!r}, mode="r+")
for lang, seed in {jobs!r}:
    store.merge_counts("m/base", make_counts([lang], seed=seed, moments=True, sequences=2))
"""


def _spawn(path: Path, jobs: list[tuple[str, int]], start: float) -> subprocess.Popen[str]:
    code = _WRITER.format(tests=str(Path(__file__).parent), path=str(path), jobs=jobs, start=start)
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("layout", ["different-languages", "shards-of-one-language"])
def test_two_processes_write_concurrently(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "s.zarr"
    store = create_store(path)
    store.create_run("m/base", n_layers=3, n_neurons=7, moments=True, sequences=True)
    if layout == "different-languages":
        jobs_a = [(lang, seed) for seed, lang in enumerate(["en", "de", "fr", "es", "ru"])]
        jobs_b = [(lang, 100 + seed) for seed, lang in enumerate(["zh", "ja", "ko", "ar", "hi"])]
    else:
        jobs_a = [("en", seed) for seed in range(5)] + [("de", 50)]
        jobs_b = [("en", 100 + seed) for seed in range(5)] + [("de", 150)]
    start = time.time() + 2.0
    procs = [_spawn(path, jobs_a, start), _spawn(path, jobs_b, start)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

    ds = open_store(path).open_run("m/base").load()
    expected: dict[str, list[int]] = {}
    for lang, seed in jobs_a + jobs_b:
        expected.setdefault(lang, []).append(seed)
    assert sorted(ds.language.values) == sorted(expected)
    total_sequences = 0
    for lang, seeds in expected.items():
        parts = [make_counts([lang], seed=s, moments=True, sequences=2) for s in seeds]
        np.testing.assert_array_equal(
            ds.n_active.sel(language=lang).values, sum(p.n_active[0] for p in parts)
        )
        np.testing.assert_array_equal(
            ds.n_tokens.sel(language=lang).values, sum(p.n_tokens[0] for p in parts)
        )
        np.testing.assert_allclose(
            ds.act_sum.sel(language=lang).values, sum(np.asarray(p.act_sum)[0] for p in parts)
        )
        mine = ds.seq_language.values == lang
        assert int(mine.sum()) == 2 * len(seeds)
        np.testing.assert_array_equal(
            ds.seq_n_active.values[mine].astype(np.int64).sum(axis=0),
            ds.n_active.sel(language=lang).values,
        )
        total_sequences += 2 * len(seeds)
    assert ds.sizes["sequence"] == total_sequences
    assert open_store(path).validate() == []


def test_two_processes_create_one_store(tmp_path: Path) -> None:
    """Creating the same store at the same moment: both get it, nothing half-made is seen."""
    code = """
import sys, time
from langneurons.store import create_store
while time.time() < {start}:
    pass
store = create_store({path!r})
store.create_run("r" + sys.argv[1], n_layers=1, n_neurons=1)
"""
    for attempt in range(3):
        path = tmp_path / f"s{attempt}.zarr"
        start = time.time() + 1.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code.format(start=start, path=str(path)), str(i)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        assert open_store(path).runs() == ["r0", "r1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s0.zarr", "s1.zarr", "s2.zarr"]
