"""Issue 15, statistics that stream: ``language_preference_tests`` and ``activation_probability``
(method ``cluster``) read the per-sequence counts in one pass of the bootstrap's chunked reader
(``_resample.Reader``), with a bounded number of dask computes, and give exactly what the lazy
per-language sums gave (every sum is of integers in float64, so the order of the additions does
not matter).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback

from langneurons.analysis import _resample
from langneurons.analysis.neuron_tests import language_preference_tests
from langneurons.analysis.uncertainty import activation_probability
from langneurons.store import Counts, create_store, open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import stats as bench_stats  # noqa: E402  (the benchmark keeps the old interval as its baseline)

LANGS = ["en", "de", "fr"]


class Computes(Callback):  # type: ignore[misc]
    """Counts dask computes (graph starts) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def _start(self, dsk: Any) -> None:
        self.n += 1


def _counts(items: int, responses: int, layers: int = 3, neurons: int = 40) -> Counts:
    """Per-sequence counts; ``responses`` sequences per item and language (items repeat when
    above 1), uint16-sized, summing exactly to the per-language counts."""
    rng = np.random.default_rng(7)
    k, per = len(LANGS), items * responses
    tokens = rng.integers(1, 60, size=(k * per, 2))
    active = (rng.random((k * per, 2, layers, neurons)) * (tokens[:, :, None, None] + 1)).astype(
        np.int64
    )
    active = np.minimum(active, tokens[:, :, None, None])
    return Counts(
        LANGS,
        active.reshape(k, per, 2, layers, neurons).sum(axis=1),
        tokens.reshape(k, per, 2).sum(axis=1),
        seq_n_active=active,
        seq_n_tokens=tokens,
        seq_language=[lang for lang in LANGS for _ in range(per)],
        seq_id=[f"item{(i % per) // responses}" for i in range(k * per)],
    )


@pytest.fixture(scope="module", params=[1, 3], ids=["sequences", "items"])
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One run four ways: read lazily from the store, dask-backed, in memory, odd dask chunks."""
    path = tmp_path_factory.mktemp("stream") / "s.zarr"
    store = create_store(path)
    store.create_run(
        "m/base", n_layers=3, n_neurons=40, sequences=True, counts=_counts(6, request.param)
    )
    lazy = open_store(path).open_run("m/base")
    loaded = lazy.load()
    return {
        "store": open_store(path).open_run("m/base"),
        "dask": open_store(path).open_run("m/base", chunks={}),
        "numpy": loaded,
        "rechunked": loaded.chunk({"sequence": 5, "layer": 2, "neuron": 7}),
    }


def _lazy_sums(
    run: xr.Dataset, d: _resample.Design, cluster: str, on_language: Any = None
) -> tuple[xr.Dataset, Any]:
    """The sums as the tests and intervals computed them before the streaming reader (no
    language reported early: the interval then starts from the returned sums)."""
    if cluster == "item":
        sums, n = _resample.item_sums(run, d)
    else:
        sums, n = _resample.cluster_sums(run, d), d.counts
    return sums.compute(), n


def _backings(runs: dict[str, xr.Dataset]) -> Iterator[tuple[str, xr.Dataset]]:
    yield from runs.items()


@pytest.mark.parametrize("role", ["response", "all"])
@pytest.mark.parametrize("cluster", ["sequence", "item"])
def test_streamed_sums_equal_the_lazy_sums_exactly(
    runs: dict[str, xr.Dataset], role: str, cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for tiles in (None, 300):  # the default tiles, and tiles split below the store's chunks
        if tiles:
            monkeypatch.setattr(_resample, "TILE_BYTES", tiles)
            monkeypatch.setattr(_resample, "WORK_BYTES", 200)
        for name, run in _backings(runs):
            d = _resample.design(run, role, "test")
            new, n_new = _resample.streamed_sums(run, d, cluster)
            old, n_old = _lazy_sums(run, d, cluster)
            np.testing.assert_array_equal(n_new, n_old)
            assert new["A"].chunks is None
            for var in ("A", "S2", "SAT", "T", "STT"):
                np.testing.assert_array_equal(
                    new[var].values, old[var].transpose(*new[var].dims).values, err_msg=name
                )


def _reported(
    run: xr.Dataset, cluster: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[_resample.LanguageSums, int]], int, xr.Dataset, Any]:
    """``streamed_sums`` with each reported language and the tiles read when it was reported,
    the number of tiles, the sums and the clusters."""
    d = _resample.design(run, "response", "test")
    seen: list[tuple[_resample.LanguageSums, int]] = []
    tiles = [0]

    def report(s: _resample.LanguageSums) -> None:  # copies: rows read later must not change
        seen.append((s._replace(A=s.A.copy(), S2=s.S2.copy(), SAT=s.SAT.copy()), tiles[0]))

    real = _resample.Reader._read_tiles

    def counted(self: Any, **kw: Any) -> Any:
        for tile in real(self, **kw):
            tiles[0] += 1
            yield tile

    with monkeypatch.context() as m:
        m.setattr(_resample.Reader, "_read_tiles", counted)
        sums, n = _resample.streamed_sums(run, d, cluster, on_language=report)
    return seen, tiles[0], sums, n


def test_each_language_reported_once_with_its_final_sums(
    runs: dict[str, xr.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``on_language`` sees every language once, with the sums ``streamed_sums`` returns; with
    sequences in tiles smaller than a language, the first is reported before the last tile."""
    for tiles in (None, 300):
        if tiles:
            monkeypatch.setattr(_resample, "TILE_BYTES", tiles)
        for cluster in ("sequence", "item"):
            seen, n_tiles, sums, n = _reported(runs["store"], cluster, monkeypatch)
            assert sorted(s.language for s, _ in seen) == list(range(len(LANGS)))
            for s, _ in seen:
                j = s.language
                np.testing.assert_array_equal(s.A, sums["A"].values[j].ravel())
                np.testing.assert_array_equal(s.S2, sums["S2"].values[j].ravel())
                np.testing.assert_array_equal(s.SAT, sums["SAT"].values[j].ravel())
                assert (s.T, s.STT, s.n) == (sums["T"].values[j], sums["STT"].values[j], n[j])
            if tiles and cluster == "sequence":
                assert seen[0][1] < n_tiles  # reported while later tiles were still unread


def test_results_identical_to_the_lazy_path(
    runs: dict[str, xr.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = [
        lambda run: language_preference_tests(run, method="cluster"),
        lambda run: language_preference_tests(run, method="cluster", role="all", min_effect=0.01),
        lambda run: activation_probability(run, method="cluster"),
        lambda run: activation_probability(run, method="cluster", role="all", cluster="sequence"),
    ]
    for run in runs.values():
        new = [call(run).compute() for call in calls]
        with monkeypatch.context() as m:
            m.setattr("langneurons.analysis.neuron_tests.streamed_sums", _lazy_sums)
            m.setattr("langneurons.analysis.uncertainty.streamed_sums", _lazy_sums)
            old = [call(run).compute() for call in calls]
        for a, b in zip(new, old, strict=True):
            xr.testing.assert_identical(a, b)


@pytest.mark.parametrize("ci", [0.95, 0.99])
def test_interval_matches_the_xarray_formula(runs: dict[str, xr.Dataset], ci: float) -> None:
    """The numpy interval (streamed: per language in threads as languages are read; dask-backed:
    one task per language) gives what the xarray formula gave, on every backing."""
    for name, run in runs.items():
        res = activation_probability(run, method="cluster", ci=ci).compute()
        d = _resample.design(run, "response", "test")
        unit = res.attrs["cluster"]
        sums, n = _lazy_sums(run, d, unit)
        ref = bench_stats.old_cluster(sums, n, ci)  # the formula as it was before session 8
        for var in ("p", "lower", "upper", "se", "design_effect_floor"):
            np.testing.assert_allclose(
                res[var].values,
                ref[var].transpose(*res[var].dims).values,
                rtol=1e-13,
                atol=0,
                err_msg=f"{name} {var}",
            )


def test_a_handful_of_dask_computes(
    runs: dict[str, xr.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store-backed run is read chunk by chunk through zarr without dask (the interval of the
    probabilities is then numpy, per language in threads); a dask-backed one computes once for
    the token totals, once for the run's counts (the tests check them and compare them with
    the per-sequence sums) and once per tile of about TILE_BYTES."""
    for call, expected in ((language_preference_tests, 0), (activation_probability, 0)):
        with Computes() as computes:
            call(runs["store"], method="cluster")
        assert computes.n == expected, call
    with Computes() as computes:
        language_preference_tests(runs["dask"], method="cluster")
    assert computes.n == 3
    d = _resample.design(runs["dask"], "response", "test")
    reader = _resample.Reader(runs["dask"], d)
    per_sequence = reader.n_roles * reader.n_layers * reader.n_neurons * reader.itemsize
    monkeypatch.setattr(_resample, "TILE_BYTES", 8 * per_sequence)  # one stored chunk a tile
    expected_tiles = len(list(reader._read_tiles(all_sequences=False)))
    assert expected_tiles == -(-runs["dask"].sizes["sequence"] // 8) > 1  # chunks of 8
    with Computes() as computes:
        language_preference_tests(runs["dask"], method="cluster", cluster="sequence")
    assert computes.n == 2 + expected_tiles


def test_probability_stays_lazy_on_dask(runs: dict[str, xr.Dataset]) -> None:
    with Computes() as computes:
        out = activation_probability(runs["dask"], method="cluster")
    assert computes.n == 1 and out["p"].chunks is not None  # the token totals alone


def test_cluster_items_need_two_items_one_message(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr")
    store.create_run("m/base", n_layers=3, n_neurons=40, sequences=True, counts=_counts(1, 3))
    run = store.open_run("m/base")
    message = "language 'en' has 1 item (seq_id); clustering on items needs at least 2"
    for call in (language_preference_tests, activation_probability):
        with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
            call(run, method="cluster", cluster="item")
