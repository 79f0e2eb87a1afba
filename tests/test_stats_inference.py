"""Tests of ``analysis.uncertainty``, ``analysis.neuron_tests`` and ``analysis.stability``.

Simulation oracles use per-sequence counts with sequence-level random effects: sequence ``i`` of
language ``k`` has ``t_i`` tokens and its own rate ``pi_i ~ Beta(P phi, (1 - P) phi)`` (mean ``P``,
intra-sequence correlation ``1 / (phi + 1)``), and ``a_i ~ Binomial(t_i, pi_i)``; the ratio
estimand ``E[a] / E[t]`` is exactly ``P``. Tolerances are stated where they are used.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from langneurons.analysis import IdentifyParams, _resample
from langneurons.analysis.identify import identify
from langneurons.analysis.neuron_tests import (
    compare_with_identification,
    language_preference_tests,
)
from langneurons.analysis.stability import bootstrap_identification
from langneurons.analysis.uncertainty import activation_probability
from langneurons.errors import ParameterError, StoreValidationError
from langneurons.store import create_store, open_store

from .conftest import make_counts

LANGS = ["en", "de", "fr"]
#: the identification parameters of the bootstrap tests
P = IdentifyParams(top_rate=0.1, lam_range=(0, 2))
NO_SEQ_FIX = (
    "needs per-sequence counts (seq_n_active), which this run lacks; extract with "
    "--per-sequence (per-sequence counts make the sequence the sampled unit)"
)


# --------------------------------------------------------------------------- helpers


class _CountingScheduler:
    """A dask scheduler that raises once more than ``max_computes`` computes happen (flox)."""

    def __init__(self, max_computes: int = 0) -> None:
        self.total = 0
        self.max_computes = max_computes

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        self.total += 1
        if self.total > self.max_computes:
            raise RuntimeError(f"too many dask computes: {self.total} > {self.max_computes}")
        return dask.get(dsk, keys, **kwargs)


def raise_if_dask_computes(max_computes: int = 0) -> Any:
    """Context manager: fail when dask computes more than ``max_computes`` times."""
    return dask.config.set(scheduler=_CountingScheduler(max_computes))


def simulate(
    rng: np.random.Generator,
    rates: np.ndarray,
    *,
    n_seq: int = 30,
    phi: float = 5.0,
    tokens: tuple[int, int] = (20, 80),
) -> xr.Dataset:
    """A numpy-backed run with per-sequence counts; ``rates[k, layer, neuron]`` is the true P.

    Response role only carries tokens (the prompt role is all zeros).
    """
    k, n_layers, n_neurons = rates.shape
    langs = [f"l{i}" for i in range(k)]
    n_total = k * n_seq
    t = rng.integers(tokens[0], tokens[1] + 1, size=n_total)
    p = np.repeat(rates, n_seq, axis=0)  # [sequence, layer, neuron]
    pi = rng.beta(p * phi, (1.0 - p) * phi)
    a = rng.binomial(t[:, None, None], pi).astype(np.uint16)
    seq_active = np.zeros((n_total, 2, n_layers, n_neurons), dtype=np.uint16)
    seq_active[:, 1] = a
    seq_tokens = np.zeros((n_total, 2), dtype=np.int64)
    seq_tokens[:, 1] = t
    lang_of = np.repeat(np.arange(k), n_seq)
    n_active = np.zeros((k, 2, n_layers, n_neurons), dtype=np.int64)
    n_tokens = np.zeros((k, 2), dtype=np.int64)
    for j in range(k):
        n_active[j] = seq_active[lang_of == j].sum(axis=0, dtype=np.int64)
        n_tokens[j] = seq_tokens[lang_of == j].sum(axis=0)
    return xr.Dataset(
        {
            "n_active": (("language", "role", "layer", "neuron"), n_active),
            "n_tokens": (("language", "role"), n_tokens),
            "seq_n_active": (("sequence", "role", "layer", "neuron"), seq_active),
            "seq_n_tokens": (("sequence", "role"), seq_tokens),
        },
        coords={
            "language": langs,
            "role": ["prompt", "response"],
            "layer": np.arange(n_layers),
            "neuron": np.arange(n_neurons),
            "seq_language": ("sequence", [langs[j] for j in lang_of]),
            "seq_id": ("sequence", [f"item{i % n_seq}" for i in range(n_total)]),
        },
    )


def without_sequences(run: xr.Dataset) -> xr.Dataset:
    """The same run without its per-sequence arrays."""
    return run.drop_vars(["seq_n_active", "seq_n_tokens", "seq_language", "seq_id"])


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One per-sequence run three ways: lazily read (store), dask-backed, in memory."""
    path = tmp_path_factory.mktemp("stats") / "s.zarr"
    counts = make_counts(LANGS, layers=3, neurons=40, seed=3, sequences=12)
    create_store(path).create_run("m/base", n_layers=3, n_neurons=40, sequences=True, counts=counts)
    lazy = open_store(path).open_run("m/base")
    chunked = open_store(path).open_run("m/base", chunks={})
    assert chunked["seq_n_active"].chunks is not None
    loaded = lazy.load()
    odd = loaded.chunk({"sequence": 5, "layer": 2, "neuron": 7, "language": 2})
    return {"store": lazy, "dask": chunked, "numpy": loaded, "rechunked": odd, "path": path}


BACKINGS = ("store", "dask", "numpy", "rechunked")


def backings(stored: dict[str, Any]) -> Iterator[tuple[str, xr.Dataset]]:
    """The stored run lazily read, dask-backed (store chunks and odd chunks), in memory."""
    for name in BACKINGS:
        yield name, stored[name]


def assert_all_identical(fn: Callable[[xr.Dataset], xr.Dataset], stored: dict[str, Any]) -> None:
    results = {name: fn(run).compute() for name, run in backings(stored)}
    for name in BACKINGS[1:]:
        xr.testing.assert_identical(results["store"], results[name])


# --------------------------------------------------------------------------- (a) inference


def test_null_fdr_control_and_calibration() -> None:
    """Languages exchangeable by construction (same P everywhere, clustered sequences).

    100 simulations of 4 languages x 200 neurons (800 tests each). Under this global null the
    FDR equals P(any discovery), nominally <= 0.05; the tolerance is 0.10 (more than two
    binomial standard deviations above 0.05 for 100 simulations; 200 simulations with another
    seed gave 0.035). Calibration: the share of raw p < 0.05 over the 80 000 tests must be in
    [0.035, 0.065]. The binomial test, which assumes independent tokens, fails here.
    """
    rng = np.random.default_rng(11)
    any_discovery, raw_hits, n_tests, binomial_discoveries = 0, 0, 0, 0
    for sim in range(100):
        base = rng.uniform(0.05, 0.6, size=(1, 1, 200))
        run = simulate(rng, np.repeat(base, 4, axis=0), n_seq=30, phi=5.0)
        res = language_preference_tests(run)
        assert res.attrs["method"] == "cluster"
        any_discovery += int(res["significant"].any())
        raw_hits += int((res["p"] < 0.05).sum())
        n_tests += res["p"].size
        if sim < 10:
            naive = language_preference_tests(without_sequences(run))
            binomial_discoveries += int(naive["significant"].sum())
    assert any_discovery <= 10
    assert 0.035 <= raw_hits / n_tests <= 0.065
    assert binomial_discoveries > 10 * 10  # independent-token p-values are far too small


def test_planted_language_neurons_recovered() -> None:
    """20 planted neurons (P = 0.35 in one language, 0.15 elsewhere): recall >= 0.9 over 5
    simulations, and the share of false discoveries among all discoveries <= 0.1."""
    rng = np.random.default_rng(5)
    found, planted, false = 0, 0, 0
    total = 0
    for _ in range(5):
        rates = np.repeat(rng.uniform(0.05, 0.5, size=(1, 1, 200)), 4, axis=0)
        owners = np.arange(20) % 4
        rates[:, 0, :20] = 0.15
        rates[owners, 0, np.arange(20)] = 0.35
        res = language_preference_tests(simulate(rng, rates, n_seq=40, phi=10.0))
        sig = res["significant"].values[0]  # [neuron, language]
        truth = np.zeros_like(sig)
        truth[np.arange(20), owners] = True
        found += int((sig & truth).sum())
        planted += int(truth.sum())
        false += int((sig & ~truth).sum())
        total += int(sig.sum())
    assert found / planted >= 0.9
    assert false / max(total, 1) <= 0.1


def test_interval_coverage_by_simulation() -> None:
    """Coverage of 95% intervals over 200 simulations x 2 languages x 4 neurons (1600 each).

    Cluster and bootstrap must cover within [0.90, 0.99]; Wilson, which treats the clustered
    tokens as independent, covers far less (< 0.8).
    """
    rng = np.random.default_rng(2024)
    truth = np.array([[[0.1, 0.3, 0.5, 0.7]], [[0.2, 0.4, 0.6, 0.8]]])
    covered: dict[str, int] = {"cluster": 0, "bootstrap": 0, "wilson": 0}
    n = 0
    for sim in range(200):
        run = simulate(rng, truth, n_seq=30, phi=8.0)
        for method in covered:
            res = activation_probability(run, method=method, n_boot=200, seed=sim)
            p = truth.transpose(1, 2, 0)  # [layer, neuron, language]
            covered[method] += int(((res["lower"] <= p) & (p <= res["upper"])).sum())
        n += truth.size
    coverage = {m: c / n for m, c in covered.items()}
    assert 0.90 <= coverage["cluster"] <= 0.99, coverage
    assert 0.90 <= coverage["bootstrap"] <= 0.99, coverage
    assert coverage["wilson"] < 0.8, coverage


# --------------------------------------------------------------------------- (b) formulas


def test_wilson_path_matches_statsmodels_and_is_labelled() -> None:
    run = without_sequences(simulate(np.random.default_rng(1), np.full((3, 2, 5), 0.3)))
    res = activation_probability(run, ci=0.9)
    assert res.attrs["method"] == "wilson" and res.attrs["method_requested"] == "auto"
    assert res.attrs["assumption"] == "independent tokens"
    assert res["p"].dims == ("layer", "neuron", "language")
    x = run["n_active"].sel(role="response").transpose("layer", "neuron", "language").values
    n = run["n_tokens"].sel(role="response").values
    low, high = proportion_confint(x, np.broadcast_to(n, x.shape), alpha=0.1, method="wilson")
    np.testing.assert_allclose(res["lower"].values, low, rtol=1e-12)
    np.testing.assert_allclose(res["upper"].values, high, rtol=1e-12)
    np.testing.assert_allclose(res["se"].values, np.sqrt(x / n * (1 - x / n) / n))


def test_binomial_tests_match_statsmodels_and_are_labelled() -> None:
    run = without_sequences(simulate(np.random.default_rng(2), np.full((3, 1, 6), 0.3)))
    res = language_preference_tests(run, role="response")
    assert res.attrs["method"] == "binomial"
    assert res.attrs["assumption"] == "independent tokens"
    x = run["n_active"].sel(role="response").values[:, 0]  # [language, neuron]
    n = run["n_tokens"].sel(role="response").values
    for k in range(3):
        for j in range(6):
            stat, p = proportions_ztest(
                [x[k, j], x[:, j].sum() - x[k, j]], [n[k], n.sum() - n[k]], alternative="larger"
            )
            assert res["statistic"].values[0, j, k] == pytest.approx(stat, rel=1e-10)
            assert res["p"].values[0, j, k] == pytest.approx(p, rel=1e-9, abs=1e-300)


def test_cluster_estimates_match_direct_formulas() -> None:
    rng = np.random.default_rng(3)
    run = simulate(rng, rng.uniform(0.1, 0.7, size=(3, 2, 4)), n_seq=9)
    res = activation_probability(run, method="cluster")
    tests = language_preference_tests(run, method="cluster")
    a = run["seq_n_active"].sel(role="response").values.astype(float)  # [sequence, layer, neuron]
    t = run["seq_n_tokens"].sel(role="response").values.astype(float)
    lang = run["seq_language"].values
    rate, var = {}, {}
    for k, name in enumerate(run["language"].values):
        ai, ti = a[lang == name], t[lang == name]
        rate[k] = ai.sum(axis=0) / ti.sum()
        d = ai - rate[k] * ti[:, None, None]
        var[k] = len(ti) / (len(ti) - 1) * (d**2).sum(axis=0) / ti.sum() ** 2
        np.testing.assert_allclose(res["p"].values[..., k], rate[k], rtol=1e-12)
        np.testing.assert_allclose(res["se"].values[..., k], np.sqrt(var[k]), rtol=1e-9)
    for k, name in enumerate(run["language"].values):
        rest = lang != name
        r = a[rest].sum(axis=0) / t[rest].sum()
        v = np.zeros_like(r)
        for other in set(lang[rest]):
            d = a[lang == other] - r * t[lang == other][:, None, None]
            n_j = d.shape[0]
            v += n_j / (n_j - 1) * ((d - d.mean(axis=0)) ** 2).sum(axis=0)
        v /= t[rest].sum() ** 2
        np.testing.assert_allclose(tests["rate_rest"].values[..., k], r, rtol=1e-12)
        np.testing.assert_allclose(tests["effect"].values[..., k], rate[k] - r, rtol=1e-9)
        np.testing.assert_allclose(tests["se"].values[..., k], np.sqrt(var[k] + v), rtol=1e-7)


def test_fdr_corrections_and_role_all(stored: dict[str, Any]) -> None:
    run = stored["numpy"]
    bh = language_preference_tests(run, correction="fdr_bh", role="all")
    by = language_preference_tests(run, correction="fdr_by", role="all", alpha=0.2)
    np.testing.assert_array_equal(bh["p"].values, by["p"].values)
    assert (by["q"].values >= bh["q"].values).all()
    assert by.attrs["correction"] == "fdr_by" and by.attrs["alpha"] == 0.2
    assert bh.attrs["n_tests"] == 3 * 40 * 3
    np.testing.assert_array_equal(bh["significant"].values, bh["q"].values <= 0.05)
    total = run["n_active"].sum("role") / run["n_tokens"].sum("role")
    np.testing.assert_allclose(
        bh["rate"].values, total.transpose("layer", "neuron", "language").values, rtol=1e-12
    )
    ap = activation_probability(run, role="all", method="bootstrap", n_boot=50)
    np.testing.assert_allclose(
        ap["p"].values, total.transpose("layer", "neuron", "language").values, rtol=1e-12
    )


def test_language_subsets_use_only_their_sequences(stored: dict[str, Any]) -> None:
    """run.sel(language=...) keeps every sequence; the dropped languages' ones are ignored."""
    run = stored["numpy"]
    sub = run.sel(language=["fr", "en"])
    keep = np.isin(run["seq_language"].values, ["fr", "en"])
    alone = sub.isel(sequence=np.flatnonzero(keep))
    for fn in (
        partial(activation_probability, method="cluster"),
        partial(activation_probability, method="bootstrap", n_boot=20),
        partial(language_preference_tests, method="cluster"),
        partial(bootstrap_identification, n_boot=4, params=P),
    ):
        xr.testing.assert_identical(fn(sub), fn(alone))
        xr.testing.assert_identical(fn(stored["dask"].sel(language=["fr", "en"])), fn(alone))


def test_compare_with_identification_counts() -> None:
    coords = {"layer": [0], "neuron": [0, 1, 2, 3], "language": ["a", "b"]}
    sig = np.array([[[1, 0], [1, 0], [0, 0], [0, 1]]], dtype=bool)  # a: n0, n1; b: n3
    rule = np.array([[[1, 0], [0, 0], [1, 0], [0, 0]]], dtype=bool)  # a: n0, n2; b: none
    dims = ("layer", "neuron", "language")
    tests = xr.Dataset({"significant": (dims, sig)}, coords=coords, attrs={"role": "response"})
    mask = xr.Dataset(
        {"mask": (("language", "layer", "neuron"), np.moveaxis(rule, -1, 0))},
        coords=coords,
        attrs={"method": "lape", "role": "response"},
    )
    out = compare_with_identification(tests, mask)
    np.testing.assert_array_equal(out["n_significant"].values, [2, 1])
    np.testing.assert_array_equal(out["n_rule"].values, [2, 0])
    np.testing.assert_array_equal(out["overlap"].values, [1, 0])
    np.testing.assert_allclose(out["jaccard"].values, [1 / 3, 0.0])
    np.testing.assert_allclose(out["precision"].values, [0.5, np.nan])
    np.testing.assert_allclose(out["recall"].values, [0.5, 0.0])
    assert int(out["overlap_all"]) == 1 and float(out["jaccard_all"]) == pytest.approx(0.25)
    assert float(out["precision_all"]) == 0.5 and float(out["recall_all"]) == pytest.approx(1 / 3)
    assert out.attrs["identification_method"] == "lape"
    empty = compare_with_identification(tests.assign(significant=tests.significant & False), mask)
    assert float(empty["jaccard"].sel(language="b")) == 1.0  # both empty


def test_compare_with_identify_result(stored: dict[str, Any]) -> None:
    run = stored["numpy"]
    tests = language_preference_tests(run, method="binomial")
    ident = identify(run, top_rate=0.1, lam_range=(0, 2))
    out = compare_with_identification(tests, ident.isel(language=[2, 0, 1]))
    assert int(out["n_rule_all"]) == int(ident["assigned"].sum())
    assert int(out["n_significant_all"]) == tests.attrs["n_significant"]
    assert list(out["language"].values) == LANGS


# --------------------------------------------------------------------------- (c) bootstrap


def test_bootstrap_replicate_is_identify_on_resampled_counts(stored: dict[str, Any]) -> None:
    """Replicate b equals identify() on counts rebuilt by hand from its multinomial weights."""
    run = stored["numpy"]
    kwargs: dict[str, Any] = dict(top_rate=0.1, lam_range=(0, 2), role="all")
    res = bootstrap_identification(
        run, "ternary", n_boot=6, seed=9, params=IdentifyParams(**kwargs)
    )
    design = _resample.design(run, "all", "test")
    seeds = np.random.SeedSequence(9).spawn(6)
    seq = run["seq_n_active"].sum("role").values.astype(np.int64)
    tok = run["seq_n_tokens"].sum("role").values.astype(np.int64)
    full = identify(run, "ternary", **kwargs)
    for b in (0, 5):
        rng = np.random.default_rng(seeds[b])
        w = np.zeros(seq.shape[0], dtype=np.int64)
        for members in design.members:
            w[members] = rng.multinomial(members.size, np.full(members.size, 1 / members.size))
        active = np.stack([np.einsum("s,slm->lm", w[m], seq[m]) for m in design.members])
        tokens = np.array([w[m] @ tok[m] for m in design.members])
        rep = xr.Dataset(
            {
                "n_active": (("language", "role", "layer", "neuron"), active[:, None]),
                "n_tokens": (("language", "role"), tokens[:, None]),
            },
            coords={"language": LANGS, "role": ["all"], "layer": run.layer, "neuron": run.neuron},
        )
        rep = rep.assign_coords(role=["response"])
        expected = identify(rep, "ternary", **{**kwargs, "role": "response"})
        got = res.isel(replicate=b)
        assert float(got["lambda"]) == expected.attrs["lambda"]
        assert float(got["tau"]) == expected.attrs["tau"]
        assert list(got["appear"].values) == expected.attrs["appear"]
        mask, full_mask = expected["mask"].values, full["mask"].values
        inter = (mask & full_mask).sum(axis=(1, 2))
        union = (mask | full_mask).sum(axis=(1, 2))
        np.testing.assert_allclose(got["jaccard"].values, np.where(union, inter / union, 1.0))
    assert res.attrs["estimate"]["lambda"] == full.attrs["lambda"]
    assert float(res["n_selected_estimate"]) == full.attrs["n_selected"]


def test_bootstrap_result_contents(stored: dict[str, Any]) -> None:
    res = bootstrap_identification(
        stored["numpy"], "lape", n_boot=10, params=IdentifyParams(top_rate=0.1), ci=0.8
    )
    assert res.sizes["replicate"] == 10 and "lambda" not in res
    assert res["selection_frequency"].dims == ("layer", "neuron")
    assert res["mask_frequency"].dims == ("language", "layer", "neuron")
    assert res["jaccard"].dims == ("replicate", "language")
    assert ((0 <= res["selection_frequency"]) & (res["selection_frequency"] <= 1)).all()
    for name in ("n_selected", "tau", "appear", "specific", "related", "mask_size",
                 "layer_specific", "layer_related", "layer_general", "layer_unassigned",
                 "shared_by_n"):  # fmt: skip
        assert name in res and f"{name}_estimate" in res
        assert (res[f"{name}_lower"] <= res[f"{name}_upper"]).all()
    np.testing.assert_allclose(res["tau_lower"], np.quantile(res["tau"].values, 0.1), rtol=1e-12)
    np.testing.assert_allclose(res["jaccard_mean"], res["jaccard"].mean("replicate"))
    # every replicate selects round(L * N * top_rate) neurons, so selection frequencies sum to it
    assert float(res["selection_frequency"].sum()) == pytest.approx(12)
    assert res.attrs["n_ok"] == 10 and res.attrs["ci"] == 0.8
    assert res.attrs["method"] == "lape" and res.attrs["filter_rate"] == 0.95


def test_bootstrap_seed_reproducible_independent_of_block(stored: dict[str, Any]) -> None:
    run = stored["numpy"]
    kwargs: dict[str, Any] = dict(n_boot=7, seed=3, params=P)
    first = bootstrap_identification(run, **kwargs, block=1)
    for block in (3, 7, None):
        xr.testing.assert_identical(first, bootstrap_identification(run, **kwargs, block=block))
    other = bootstrap_identification(run, **{**kwargs, "seed": 4})
    assert not np.array_equal(first["jaccard"].values, other["jaccard"].values)
    a = activation_probability(run, method="bootstrap", n_boot=20, seed=1)
    xr.testing.assert_identical(
        a, activation_probability(run, method="bootstrap", n_boot=20, seed=1)
    )


def test_float64_fallback_gives_the_same_counts(
    stored: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weighted counts use float32 only below 2**24; forcing float64 changes nothing."""
    run = stored["numpy"]
    kwargs: dict[str, Any] = dict(n_boot=5, seed=2, params=P)
    fast = bootstrap_identification(run, **kwargs)
    boot = activation_probability(run, method="bootstrap", n_boot=30)
    assert _resample.exact_dtype(2**24 - 1) is np.float32
    monkeypatch.setattr(_resample, "EXACT_FLOAT32", 1)
    assert _resample.exact_dtype(2) is np.float64
    xr.testing.assert_identical(fast, bootstrap_identification(run, **kwargs))
    xr.testing.assert_identical(boot, activation_probability(run, method="bootstrap", n_boot=30))


def test_tiny_tiles_give_the_same_results(
    stored: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiles split below the store's chunks and narrow products change nothing (exact sums)."""
    kwargs: dict[str, Any] = dict(n_boot=5, seed=2, params=P)
    expected = {
        name: (
            bootstrap_identification(run, **kwargs),
            activation_probability(run, method="bootstrap", n_boot=30),
        )
        for name, run in backings(stored)
    }
    monkeypatch.setattr(_resample, "TILE_BYTES", 300)
    monkeypatch.setattr(_resample, "WORK_BYTES", 200)
    assert len(_resample._groups([0, 8, 12], 3)) == 5
    for name, run in backings(stored):
        boot, ap = expected[name]
        xr.testing.assert_identical(boot, bootstrap_identification(run, **kwargs))
        xr.testing.assert_identical(ap, activation_probability(run, method="bootstrap", n_boot=30))


def test_failed_replicates_are_recorded_and_left_out(
    stored: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from langneurons.analysis import bootstrap
    from langneurons.errors import NoValidLambdaError

    calls = {"n": 0}
    lock = threading.Lock()

    def flaky(run: xr.Dataset, *args: Any, **kwargs: Any) -> xr.Dataset:
        with lock:  # replicates are identified two at a time in threads
            calls["n"] += 1
            fail = calls["n"] == 2  # a replicate (the first call is the point estimate)
        if fail:
            raise NoValidLambdaError("no lambda")
        return identify(run, *args, **kwargs)

    monkeypatch.setattr(bootstrap, "identify", flaky)
    kwargs: dict[str, Any] = dict(n_boot=4, seed=1, params=P)
    res = bootstrap_identification(stored["numpy"], **kwargs)
    # which replicate's identification runs second depends on the threads' timing
    failed = np.flatnonzero(~res["ok"].values)
    assert len(failed) == 1
    i = int(failed[0])
    assert res.attrs["n_failed"] == 1 and res.attrs["failures"] == {"no valid lambda": 1}
    assert np.isnan(res["tau"].values[i]) and np.isnan(res["jaccard"].values[i]).all()
    ok = res.isel(replicate=[r for r in range(4) if r != i])
    np.testing.assert_allclose(res["jaccard_mean"], ok["jaccard"].mean("replicate"))
    np.testing.assert_allclose(res["tau_upper"], np.quantile(ok["tau"].values, 0.975))
    assert float(res["selection_frequency"].sum()) == pytest.approx(12)

    def broken(run: xr.Dataset, *args: Any, **kwargs: Any) -> xr.Dataset:
        raise NoValidLambdaError("no lambda")

    monkeypatch.setattr(bootstrap, "identify", broken)
    with pytest.raises(NoValidLambdaError) as info:
        bootstrap_identification(stored["numpy"], **kwargs)
    assert str(info.value) == (
        "all 4 bootstrap replicates failed ({'no valid lambda': 4}); widen lam_range "
        "(--lambda-range) or lower top_rate (--top-rate)"
    )


def test_bootstrap_memory_does_not_grow_with_replicates() -> None:
    """tracemalloc peak of B = 50 within 1.5x the peak of B = 5 (same block of 5)."""
    rates = np.random.default_rng(0).uniform(0.05, 0.6, size=(3, 4, 1500))
    run = simulate(np.random.default_rng(1), rates, n_seq=10)

    def peak(n_boot: int) -> int:
        tracemalloc.start()
        bootstrap_identification(
            run, "lape", n_boot=n_boot, block=5, params=IdentifyParams(top_rate=0.05)
        )
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    small, large = peak(5), peak(50)
    assert large < 1.5 * small, (small, large)


# --------------------------------------------------------------------------- (d) dask


def test_numpy_dask_and_store_backed_identical(stored: dict[str, Any]) -> None:
    for method in ("wilson", "cluster", "bootstrap"):
        assert_all_identical(
            partial(activation_probability, method=method, n_boot=40, role="all"), stored
        )
    for method in ("cluster", "binomial"):
        assert_all_identical(partial(language_preference_tests, method=method), stored)
    for rule in ("ternary", "lape"):
        assert_all_identical(
            partial(
                bootstrap_identification,
                method=rule,
                n_boot=6,
                block=4,
                params=P,
            ),
            stored,
        )
    ident = identify(stored["numpy"], top_rate=0.1, lam_range=(0, 2))

    def compare(run: xr.Dataset) -> xr.Dataset:
        return compare_with_identification(language_preference_tests(run), ident)

    assert_all_identical(compare, stored)


def test_lazy_functions_stay_lazy(stored: dict[str, Any]) -> None:
    """activation_probability with wilson/cluster/auto computes only the token totals on a
    dask-backed run (a language without tokens is refused);
    language_preference_tests reads the per-sequence counts in one compute per tile of the
    chunked reader (one here), the token totals in one more, and the run's counts (checked,
    and compared with the per-sequence sums) in a third."""
    run = stored["dask"]
    for method in ("auto", "cluster", "wilson"):
        with raise_if_dask_computes(max_computes=1):
            out = activation_probability(run, method=method, role="all")
        assert all(out[v].chunks is not None for v in ("p", "lower", "upper", "se"))
    expected = activation_probability(stored["numpy"], method="cluster", role="all")
    xr.testing.assert_identical(
        activation_probability(run, method="cluster", role="all").compute(), expected
    )
    with raise_if_dask_computes(max_computes=3):
        language_preference_tests(run, method="cluster")
    boot = activation_probability(run, method="bootstrap", n_boot=10)  # documented to compute
    assert boot["p"].chunks is None


def test_results_save_to_the_store(stored: dict[str, Any]) -> None:
    path = stored["path"]
    run = stored["numpy"]
    store = open_store(path, mode="r+")
    results = {
        "probability": activation_probability(run),
        "tests": language_preference_tests(run),
        "boot": bootstrap_identification(run, n_boot=4, params=P),
    }
    results["comparison"] = compare_with_identification(
        results["tests"], identify(run, top_rate=0.1, lam_range=(0, 2))
    )
    for name, ds in results.items():
        store.save_result("m/base", "stats", name, ds)
        back = open_store(path).open_result("m/base", "stats", name)
        assert {k: v for k, v in back.attrs.items() if not k.startswith("result_")} == ds.attrs
        assert (back.attrs["result_kind"], back.attrs["result_name"]) == ("stats", name)
        xr.testing.assert_equal(back.load(), ds.compute())


# --------------------------------------------------------------------------- (e) validation


def test_methods_needing_sequences_name_the_fix(stored: dict[str, Any]) -> None:
    run = without_sequences(stored["numpy"])
    for method in ("bootstrap", "cluster"):
        with pytest.raises(ParameterError) as info:
            activation_probability(run, method=method)
        assert str(info.value) == (
            f"method={method!r} {NO_SEQ_FIX}, or use method='wilson' (assumes independent tokens)"
        )
    with pytest.raises(ParameterError) as info:
        language_preference_tests(run, method="cluster")
    assert str(info.value) == (
        f"method='cluster' {NO_SEQ_FIX}, or use method='binomial' (assumes independent tokens)"
    )
    with pytest.raises(ParameterError) as info:
        bootstrap_identification(run)
    assert str(info.value) == f"bootstrap_identification {NO_SEQ_FIX}"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: activation_probability(r, ci=1.0), "ci must be a number in (0, 1), got 1.0"),
        (lambda r: activation_probability(r, n_boot=1), "n_boot must be an integer >= 2, got 1"),
        (lambda r: activation_probability(r, seed=-1), "seed must be an integer >= 0, got -1"),
        (
            lambda r: activation_probability(r, method="exact"),
            "method must be one of 'auto', 'bootstrap', 'cluster', 'wilson', got 'exact'",
        ),
        (
            lambda r: activation_probability(r, role="answer"),
            "role must be one of 'response', 'prompt', 'all', got 'answer'",
        ),
        (
            lambda r: language_preference_tests(r, correction="bonferroni"),
            "correction must be one of 'fdr_bh', 'fdr_by', got 'bonferroni'",
        ),
        (
            lambda r: language_preference_tests(r, method="wilson"),
            "method must be one of 'auto', 'cluster', 'binomial', got 'wilson'",
        ),
        (
            lambda r: language_preference_tests(r, alpha=0),
            "alpha must be a number in (0, 1), got 0",
        ),
        (
            lambda r: language_preference_tests(r.isel(language=[0])),
            "this needs at least 2 languages, the run has 1",
        ),
        (lambda r: bootstrap_identification(r, block=0), "block must be an integer >= 1, got 0"),
        (
            lambda r: bootstrap_identification(r, n_boot=True),
            "n_boot must be an integer >= 2, got True",
        ),
        (
            lambda r: bootstrap_identification(r, params={"top_rate": 0.1}),
            "bootstrap_identification takes params=IdentifyParams(...), got dict",
        ),
        (
            lambda r: bootstrap_identification(r, params=IdentifyParams(bar=2)),
            "bar must be in (0, 1], got 2",
        ),
        (
            lambda r: bootstrap_identification(r, method="entropy"),
            "method must be one of 'ternary', 'lape', got 'entropy'",
        ),
        (
            lambda r: compare_with_identification(r, r),
            "tests must be a Dataset returned by language_preference_tests() (with significant)",
        ),
    ],
)
def test_parameter_errors_pinned(
    stored: dict[str, Any], call: Callable[[xr.Dataset], Any], message: str
) -> None:
    with pytest.raises(ParameterError) as info:
        call(stored["numpy"])
    assert str(info.value) == message


def test_too_few_sequences_and_bad_stores(stored: dict[str, Any]) -> None:
    run = stored["numpy"]
    one = run.isel(sequence=np.flatnonzero(run["seq_language"].values != "de")[:-10])
    one = xr.concat(
        [one, run.isel(sequence=[int(np.flatnonzero(run["seq_language"].values == "de")[0])])],
        dim="sequence",
        data_vars="minimal",
    )
    with pytest.raises(ParameterError) as info:
        activation_probability(one, method="cluster")
    assert str(info.value) == (
        "language 'de' has 1 sequence; method='cluster' needs at least 2 per language "
        "(sequences are the sampled unit)"
    )
    stray = run.assign_coords(seq_language=("sequence", ["xx"] * run.sizes["sequence"]))
    with pytest.raises(ParameterError, match="language 'en' has 0 sequences"):
        language_preference_tests(stray)
    skewed = run.assign(seq_n_tokens=run["seq_n_tokens"] + 1)
    with pytest.raises(StoreValidationError, match="seq_n_tokens of language 'en' sum to"):
        bootstrap_identification(skewed, n_boot=2, params=P)
    with pytest.raises(ParameterError, match="tests and identification cover different layers"):
        compare_with_identification(
            language_preference_tests(run), identify(run.isel(layer=[0, 1]), top_rate=0.2)
        )
