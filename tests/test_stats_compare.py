"""Tests of the statistics and comparison modules: distributions, compare, stages, deactivation."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import dask.array
import numpy as np
import pytest
import scipy.stats
import xarray as xr
from scipy.stats.contingency import association
from statsmodels.stats.contingency_tables import Table, cochrans_q
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from langneurons.analysis import IdentifyParams as P
from langneurons.analysis.compare import (
    cochran_q,
    mcnemar,
    overlap,
    spontaneous_alignment,
    trajectories,
    transition_table,
)
from langneurons.analysis.deactivation import deactivation_effects
from langneurons.analysis.distributions import (
    compare_type_distributions,
    shared_by_change,
    type_change,
    type_table,
)
from langneurons.analysis.identify import identify, masks_from_lists, masks_to_lists
from langneurons.analysis.stages import (
    FOUR_STAGES,
    bootstrap_stages,
    segment_stages,
    stage_profile,
)
from langneurons.errors import InputFormatError, ParameterError
from langneurons.store import create_store, open_store

from .conftest import make_counts

# --------------------------------------------------------------------------- helpers


@contextmanager
def raise_if_dask_computes() -> Iterator[None]:
    """Fail if anything is computed by dask inside the block."""

    def scheduler(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        raise AssertionError("a dask compute happened on a lazy path")

    with dask.config.set(scheduler=scheduler):
        yield


def assert_json_attrs(ds: xr.Dataset | xr.DataArray) -> None:
    """Attributes serialise to strict JSON (no NaN, no numpy types)."""
    json.dumps(ds.attrs, allow_nan=False)


def chunked(ds: xr.Dataset) -> xr.Dataset:
    """A dask-backed copy with small chunks."""
    return ds.chunk({dim: 2 for dim in ds.dims})


def fake_result(
    types: Sequence[Sequence[str]],
    mask: Any,
    languages: Sequence[str] = ("en", "de"),
    *,
    general: Any = None,
    shared_by: Any = None,
    tau: float = 0.5,
    lam: float | None = 0.1,
) -> xr.Dataset:
    """A hand-made identification result: ``types[layer][neuron]``, ``mask[language, l, n]``."""
    kind = np.asarray(types, dtype=str)
    mask = np.asarray(mask, dtype=bool)
    selected = kind != "none"
    n_assigned = np.where(selected, mask.sum(axis=0), 0).astype(np.int64)
    general = kind == "general" if general is None else np.asarray(general, dtype=bool)
    shared = n_assigned if shared_by is None else np.asarray(shared_by, dtype=np.int64)
    attrs: dict[str, Any] = {"method": "ternary", "tau": tau}
    if lam is not None:
        attrs["lambda"] = lam
    lnd = ("layer", "neuron")
    return xr.Dataset(
        {
            "selected": (lnd, selected),
            "neuron_type": (lnd, kind),
            "mask": (("language", "layer", "neuron"), mask),
            "assigned": (("layer", "neuron", "language"), np.moveaxis(mask, 0, -1)),
            "general": (lnd, general),
            "shared_by": (lnd, shared),
            "n_assigned": (lnd, n_assigned),
        },
        coords={
            "language": list(languages),
            "layer": np.arange(kind.shape[0]),
            "neuron": np.arange(kind.shape[1]),
        },
        attrs=attrs,
    )


def random_fake(seed: int, layers: int = 3, neurons: int = 20, k: int = 3) -> xr.Dataset:
    """A random but consistent fake result (types follow the mask)."""
    rng = np.random.default_rng(seed)
    mask = rng.random((k, layers, neurons)) < 0.2
    selected = rng.random((layers, neurons)) < 0.5
    mask &= selected
    m = mask.sum(axis=0)
    kind = np.where(m == 1, "specific", np.where(m >= 2, "related", "unassigned"))
    kind = np.where(m == k, "general", kind)
    kind = np.where(selected, kind, "none")
    langs = [f"l{i}" for i in range(k)]
    return fake_result(kind.tolist(), mask, langs, shared_by=m)


def seq_run(p: Any, *, sequences: int = 16, tokens: int = 40, seed: int = 0) -> xr.Dataset:
    """An in-memory run with per-sequence counts drawn as Binomial(tokens, p[language, l, n])."""
    p = np.asarray(p, dtype=np.float64)
    rng = np.random.default_rng(seed)
    k, n_layers, n_neurons = p.shape
    langs = [f"l{i}" for i in range(k)]
    s = k * sequences
    seq_tokens = np.full((s, 2), tokens, dtype=np.int64)
    response = rng.binomial(tokens, np.repeat(p, sequences, axis=0))
    prompt = rng.binomial(tokens, np.full((s, n_layers, n_neurons), 0.3))
    seq_active = np.stack([prompt, response], axis=1).astype(np.uint16)
    active = seq_active.reshape(k, sequences, 2, n_layers, n_neurons).sum(axis=1)
    return xr.Dataset(
        {
            "n_active": (("language", "role", "layer", "neuron"), active.astype(np.int64)),
            "n_tokens": (("language", "role"), seq_tokens.reshape(k, sequences, 2).sum(axis=1)),
            "seq_n_active": (("sequence", "role", "layer", "neuron"), seq_active),
            "seq_n_tokens": (("sequence", "role"), seq_tokens),
        },
        coords={
            "language": langs,
            "role": ["prompt", "response"],
            "layer": np.arange(n_layers),
            "neuron": np.arange(n_neurons),
            "seq_language": ("sequence", np.repeat(langs, sequences)),
            "seq_id": ("sequence", [f"s{i % sequences}" for i in range(s)]),
        },
    )


class Planter:
    """Build activation probabilities with planted language-bound neurons."""

    def __init__(self, k: int, layers: int, neurons: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.p = rng.uniform(0.05, 0.25, (1, layers, neurons)).repeat(k, axis=0)
        self.p += rng.uniform(-0.02, 0.02, (k, layers, neurons))
        self.neurons = neurons
        self.next = [0] * layers
        self.count = 0

    def plant(self, languages: Sequence[int], layer: int | None = None) -> None:
        """One neuron with P = 0.6 in these languages only, in ``layer`` or the emptiest layer."""
        if layer is None:
            layer = int(np.argmin(self.next))
        n = self.next[layer]
        self.next[layer] += 1
        self.p[:, layer, n] = 0.01
        self.p[list(languages), layer, n] = 0.6
        self.count += 1


def alignment_runs(alike: bool, k: int = 10, trained: Sequence[int] = (0, 1, 2)) -> tuple:
    """Base and aligned runs: trained languages gain specific neurons, or all languages alike."""
    runs = []
    for aligned in (False, True):
        pl = Planter(k, 4, 50)
        for lang in range(k):
            for _ in range(3):
                pl.plant([lang])
        if alike:
            for lang in range(k):
                pl.plant([lang] if aligned else [lang, (lang + 1) % k])
        else:
            for i, t in enumerate(trained):
                for _ in range(3):
                    partner = trained[(i + 1) % len(trained)]
                    pl.plant([t] if aligned else [t, partner])
        runs.append(seq_run(pl.p, seed=1 + aligned))
    return runs[0], runs[1], pl.count / (4 * 50)


# --------------------------------------------------------------------------- stages


def planted_profile(
    lengths: Sequence[int], rng: np.random.Generator, features: int = 3
) -> tuple[xr.DataArray, list[int]]:
    """A noise-free piecewise-constant profile with distinct adjacent stage values."""
    values = [rng.uniform(0, 1, features)]
    for _ in lengths[1:]:
        v = rng.uniform(0, 1, features)
        while np.abs(v - values[-1]).max() < 0.1:
            v = rng.uniform(0, 1, features)
        values.append(v)
    rows = np.concatenate([np.tile(v, (n, 1)) for v, n in zip(values, lengths, strict=True)])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
    profile = xr.DataArray(rows, dims=("layer", "feature"), coords={"layer": np.arange(len(rows))})
    return profile, starts


def random_lengths(n_layers: int, n_stages: int, rng: np.random.Generator) -> list[int]:
    """Stage lengths >= 1 summing to n_layers (cut points drawn uniformly)."""
    cuts = np.sort(rng.choice(np.arange(1, n_layers), size=n_stages - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [n_layers]])).tolist()


def test_segmentation_recovers_planted_boundaries_for_many_layer_counts() -> None:
    rng = np.random.default_rng(0)
    for n_layers in range(4, 41):
        for n_stages in (1, 2, 3, 4, 5, 6):
            if n_stages > n_layers:
                continue
            for _ in range(3):
                lengths = random_lengths(n_layers, n_stages, rng)
                profile, starts = planted_profile(lengths, rng)
                seg = segment_stages(profile, n_stages)
                assert seg["start_index"].values.tolist() == starts, (n_layers, lengths)
                assert seg["length"].values.tolist() == lengths
                assert seg["objective"].item() == pytest.approx(0.0, abs=1e-9)
                number = np.repeat(np.arange(n_stages), lengths)
                assert seg["stage_number"].values.tolist() == number.tolist()


@pytest.mark.parametrize(
    "lengths",
    [
        [1, 1, 1, 1],  # as many stages as layers
        [1, 10, 10, 1],  # one-layer stages at both ends
        [1, 1, 1, 30],
        [30, 1, 1, 1],
        [5, 1, 5, 1],
        [2, 2],
        [7],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
)
def test_segmentation_degenerate_stage_lengths(lengths: list[int]) -> None:
    profile, starts = planted_profile(lengths, np.random.default_rng(len(lengths)))
    seg = segment_stages(profile, len(lengths))
    assert seg["start_index"].values.tolist() == starts
    assert seg["objective"].item() == pytest.approx(0.0, abs=1e-9)
    assert seg["start"].values.tolist() == starts
    assert seg["end"].values.tolist() == (np.cumsum(lengths) - 1).tolist()


def brute_force(x: np.ndarray, n_stages: int) -> float:
    """Smallest within-stage sum of squares over every contiguous partition."""
    n = x.shape[0]
    best = math.inf
    for cuts in itertools.combinations(range(1, n), n_stages - 1):
        bounds = [0, *cuts, n]
        cost = sum(
            ((x[a:b] - x[a:b].mean(axis=0)) ** 2).sum() for a, b in itertools.pairwise(bounds)
        )
        best = min(best, cost)
    return best


def test_segmentation_is_optimal_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    for n_layers in range(1, 10):
        for n_stages in range(1, n_layers + 1):
            x = rng.normal(size=(n_layers, 2))
            seg = segment_stages(xr.DataArray(x, dims=("layer", "f")), n_stages)
            assert seg["objective"].item() == pytest.approx(brute_force(x, n_stages), abs=1e-9)
            path = seg["objective_path"].values
            expected = [brute_force(x, s) for s in range(1, n_stages + 1)]
            np.testing.assert_allclose(path, expected, atol=1e-9)


def test_segmentation_names_coords_and_ties() -> None:
    profile, _ = planted_profile([3, 3, 3, 3], np.random.default_rng(2))
    seg = segment_stages(profile)
    assert seg["stage"].values.tolist() == list(FOUR_STAGES)
    assert seg["stage_label"].values.tolist()[:4] == [FOUR_STAGES[0]] * 3 + [FOUR_STAGES[1]]
    three = segment_stages(profile, 3)
    assert three["stage"].values.tolist() == ["stage 1", "stage 2", "stage 3"]
    named = segment_stages(profile, 2, names=["early", "late"])
    assert named["stage"].values.tolist() == ["early", "late"]
    # 1-D profile with layer coordinates 10..19: boundaries reported as layer coordinates
    one_d = xr.DataArray([0.0] * 4 + [1.0] * 6, dims="layer", coords={"layer": np.arange(10, 20)})
    seg1 = segment_stages(one_d, 2)
    assert seg1["start"].values.tolist() == [10, 14]
    assert seg1["start_index"].values.tolist() == [0, 4]
    # constant profile: every partition costs 0; the later stages start as early as possible
    flat = xr.DataArray(np.ones((10, 2)), dims=("layer", "f"))
    segc = segment_stages(flat, 4)
    assert segc["objective"].item() == 0.0
    assert segc["start_index"].values.tolist() == [0, 1, 2, 3]
    # other dimension name
    renamed = segment_stages(profile.rename(layer="depth"), 4, dim="depth")
    assert renamed["start_index"].values.tolist() == [0, 3, 6, 9]
    assert_json_attrs(seg)


def test_segmentation_numpy_and_dask_agree() -> None:
    profile, _ = planted_profile([2, 5, 4, 3], np.random.default_rng(3))
    noisy = profile + np.random.default_rng(4).normal(0, 0.05, profile.shape)
    xr.testing.assert_identical(segment_stages(noisy), segment_stages(noisy.chunk({"layer": 3})))


def test_segmentation_bad_inputs() -> None:
    profile, _ = planted_profile([1, 1, 1], np.random.default_rng(5))
    with pytest.raises(
        ParameterError,
        match=r"^n_stages=4 is larger than the number of layers \(3\); every stage needs at "
        r"least one layer$",
    ):
        segment_stages(profile, 4)
    with pytest.raises(ParameterError, match=r"^n_stages must be an integer >= 1, got 0$"):
        segment_stages(profile, 0)
    with pytest.raises(ParameterError, match=r"^profile has no dimension 'layer'"):
        segment_stages(profile.rename(layer="depth"))
    bad = profile.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ParameterError, match="profile holds NaN or infinite values"):
        segment_stages(bad, 2)
    with pytest.raises(ParameterError, match=r"^names must be 2 distinct stage names"):
        segment_stages(profile, 2, names=["a"])
    with pytest.raises(ParameterError, match=r"^profile must have dims \('layer',\) or"):
        segment_stages(profile.expand_dims(x=2), 2)


# --------------------------------------------------------------------------- type tables


def small_run(seed: int = 0, layers: int = 4, neurons: int = 30) -> xr.Dataset:
    """A run with sequences from the shared conftest helper, built in memory."""
    c = make_counts(["en", "de", "fr"], layers=layers, neurons=neurons, seed=seed, sequences=5)
    return xr.Dataset(
        {
            "n_active": (("language", "role", "layer", "neuron"), c.n_active),
            "n_tokens": (("language", "role"), c.n_tokens),
            "seq_n_active": (("sequence", "role", "layer", "neuron"), c.seq_n_active),
            "seq_n_tokens": (("sequence", "role"), c.seq_n_tokens),
        },
        coords={
            "language": ["en", "de", "fr"],
            "role": ["prompt", "response"],
            "layer": np.arange(layers),
            "neuron": np.arange(neurons),
            "seq_language": ("sequence", list(c.seq_language or [])),
            "seq_id": ("sequence", list(c.seq_id or [])),
        },
    )


def test_type_table_matches_identification_attrs_and_stays_lazy() -> None:
    for seed in range(3):
        result = identify(small_run(seed), top_rate=0.1)
        table = type_table(result)
        assert table.dims == ("layer", "type")
        for t in ("specific", "related", "general", "unassigned"):
            assert table.sel(type=t).values.tolist() == result.attrs["per_layer"][t]
        lazy = chunked(result)
        with raise_if_dask_computes():
            lazy_table = type_table(lazy)
        assert isinstance(lazy_table.data, dask.array.Array)
        xr.testing.assert_identical(lazy_table.compute(), table)
    with pytest.raises(ParameterError, match="lacks variables"):
        type_table(xr.Dataset())
    with pytest.raises(ParameterError, match=r"^types must be distinct names among"):
        type_table(result, types=["specific", "bogus"])


def tables(base: Any, aligned: Any) -> tuple[xr.DataArray, xr.DataArray]:
    """Two ``count[layer, type]`` tables."""
    types = ["specific", "related", "general", "unassigned"][: np.shape(base)[1]]
    coords = {"layer": np.arange(np.shape(base)[0]), "type": types}
    return (
        xr.DataArray(np.asarray(base), dims=("layer", "type"), coords=coords),
        xr.DataArray(np.asarray(aligned), dims=("layer", "type"), coords=coords),
    )


def test_chi_square_and_cramers_v_against_scipy() -> None:
    base, aligned = tables([[10, 3, 0], [4, 8, 2], [1, 0, 9]], [[4, 9, 0], [6, 5, 3], [2, 1, 12]])
    out = compare_type_distributions(base, aligned)
    full = np.stack([base.values.ravel(), aligned.values.ravel()])
    obs = full[:, full.sum(axis=0) > 0]  # the all-zero cell (layer 0, general) is dropped
    ref = scipy.stats.chi2_contingency(obs, correction=False)
    assert out["statistic"].item() == pytest.approx(ref.statistic, rel=1e-12)
    assert out["pvalue"].item() == pytest.approx(ref.pvalue, rel=1e-12)
    assert out["dof"].item() == ref.dof == 7
    assert out["cramers_v"].item() == pytest.approx(association(obs, method="cramer"), rel=1e-12)
    resid = out["residual"].values.reshape(2, -1)[:, full.sum(axis=0) > 0]
    np.testing.assert_allclose(resid, Table(obs, shift_zeros=False).standardized_resids, rtol=1e-10)
    assert np.isnan(out["residual"].sel(layer=0, type="general")).all()
    np.testing.assert_allclose(out["expected"].values.reshape(2, -1)[:, 1], ref.expected_freq[:, 1])
    for layer in range(3):
        rows = np.stack([base.values[layer], aligned.values[layer]])
        rows = rows[:, rows.sum(axis=0) > 0]
        lref = scipy.stats.chi2_contingency(rows, correction=False)
        assert out["layer_statistic"].values[layer] == pytest.approx(lref.statistic)
        assert out["layer_pvalue"].values[layer] == pytest.approx(lref.pvalue)
    assert (out["layer_pvalue_holm"].values >= out["layer_pvalue"].values - 1e-15).all()
    assert out["n"].item() == int(full.sum())
    assert_json_attrs(out)


def test_chi_square_degenerate_tables() -> None:
    same = compare_type_distributions(*tables([[5, 5], [5, 5]], [[5, 5], [5, 5]]))
    assert same["statistic"].item() == 0.0 and same["pvalue"].item() == pytest.approx(1.0)
    empty = compare_type_distributions(*tables([[0, 0], [0, 0]], [[1, 2], [3, 4]]))
    assert (
        np.isnan(empty["statistic"].item())
        and empty.attrs["note"] == "a run has no counted neurons"
    )
    one_cell = compare_type_distributions(*tables([[3, 0], [0, 0]], [[7, 0], [0, 0]]))
    assert np.isnan(one_cell["pvalue"].item()) and "one cell" in one_cell.attrs["note"]
    assert_json_attrs(empty)


def test_compare_type_distributions_from_results_numpy_and_dask() -> None:
    a, b = identify(small_run(0), top_rate=0.1), identify(small_run(1), top_rate=0.1)
    out = compare_type_distributions(a, b)
    assert (
        out.attrs["inference"] == "descriptive" and "type_change" in out.attrs["inference_reason"]
    )
    xr.testing.assert_identical(out, compare_type_distributions(chunked(a), chunked(b)))
    xr.testing.assert_identical(out, compare_type_distributions(type_table(a), type_table(b)))
    with pytest.raises(
        ParameterError,
        match=r"^base and aligned must have the same layers; base has 4, aligned has 3",
    ):
        compare_type_distributions(a, identify(small_run(1, layers=3), top_rate=0.1))


# --------------------------------------------------------------------------- bootstrap changes


def layered_run(specific_layer0: int, seed: int) -> xr.Dataset:
    """4 languages x 4 layers x 30 neurons; ``specific_layer0`` specific neurons in layer 0."""
    pl = Planter(4, 4, 30, seed=0)
    for i in range(specific_layer0):
        pl.plant([i % 4], layer=0)
    for i in range(8 - specific_layer0):
        pl.plant([i % 4, (i + 1) % 4], layer=0)
    for i in range(4):
        pl.plant([i], layer=2)
    return seq_run(pl.p, seed=seed)


def test_type_change_detects_planted_change_and_is_zero_for_identical_runs() -> None:
    base, aligned = layered_run(2, seed=1), layered_run(7, seed=2)
    out = type_change(base, aligned, n_boot=25, seed=3, params=P(top_rate=12 / 120))
    assert out["change"].sel(layer=0, type="specific").item() == 5
    assert out["change"].sel(layer=0, type="related").item() == -5
    assert out["change_low"].sel(layer=0, type="specific").item() > 0
    assert out["change_high"].sel(layer=0, type="related").item() < 0
    assert out["change"].sel(layer=2).values.tolist() == [0, 0, 0, 0]
    assert out["total_change"].sel(type="specific").item() == 5
    assert out["boot_change"].shape == (25, 4, 4)
    assert out.attrs["seed"] == 3 and out.attrs["n_boot"] == 25
    assert out.attrs["identify_params"] == P(top_rate=0.1).to_attrs()
    assert out.attrs["cluster"] == "sequence" and out.attrs["paired"] is True  # same seq_ids
    assert out.attrs["paired_requested"] == "auto"
    assert_json_attrs(out)
    same = type_change(base, base, n_boot=10, params=P(top_rate=12 / 120))
    assert (same["change"].values == 0).all()
    assert (same["change_pvalue"].values == 1.0).all()
    assert (same["change_low"].values <= 0).all() and (same["change_high"].values >= 0).all()


def test_shared_by_change_planted_and_null() -> None:
    pl_b, pl_a = Planter(4, 4, 50), Planter(4, 4, 50)
    for i in range(20):
        pl_b.plant([i % 4])
        pl_a.plant([i % 4, (i + 1) % 4, (i + 2) % 4])
    base, aligned = seq_run(pl_b.p, seed=1), seq_run(pl_a.p, seed=2)
    out = shared_by_change(base, aligned, n_boot=30, params=P(bar=0.9, top_rate=0.05))
    assert out["n_shared"].values.tolist() == [0, 1, 2, 3, 4]
    assert out["base"].sum().item() == out["aligned"].sum().item() == 200
    assert out["change"].sel(n_shared=3).item() > 0
    assert out["tvd_pvalue"].item() < 0.05
    assert out["change_low"].sel(n_shared=3).item() > 0
    assert out["change_high"].sel(n_shared=1).item() < 0
    assert_json_attrs(out)
    null = shared_by_change(base, base, n_boot=10, params=P(bar=0.9, top_rate=0.05))
    assert null["tvd"].item() == 0.0 and null["tvd_pvalue"].item() == 1.0


def test_bootstrap_changes_numpy_and_dask_and_store_agree(tmp_path: Path) -> None:
    base, aligned = layered_run(2, seed=1), layered_run(7, seed=2)
    kw: dict[str, Any] = dict(n_boot=4, seed=5, params=P(top_rate=0.1))
    xr.testing.assert_identical(
        type_change(base, aligned, **kw), type_change(chunked(base), chunked(aligned), **kw)
    )
    xr.testing.assert_identical(
        shared_by_change(base, aligned, **kw),
        shared_by_change(chunked(base), chunked(aligned), **kw),
    )
    # through the store: lazy runs opened from Zarr give the same answer, and results save
    store = create_store(tmp_path / "s.zarr")
    for name, run in (("m/base", base), ("m/aligned", aligned)):
        from langneurons.store import Counts

        store.create_run(
            name,
            n_layers=4,
            n_neurons=30,
            sequences=True,
            counts=Counts(
                run["language"].values.tolist(),
                run["n_active"].values,
                run["n_tokens"].values,
                seq_n_active=run["seq_n_active"].values,
                seq_n_tokens=run["seq_n_tokens"].values,
                seq_language=run["seq_language"].values.tolist(),
                seq_id=run["seq_id"].values.tolist(),
            ),
        )
    opened = open_store(tmp_path / "s.zarr", mode="r+")
    lazy_b, lazy_a = opened.open_run("m/base"), opened.open_run("m/aligned")
    result = type_change(lazy_b, lazy_a, **kw)
    xr.testing.assert_identical(result, type_change(base, aligned, **kw))
    opened.save_result("m/aligned", "compare", "type-change", result)
    back = opened.open_result("m/aligned", "compare", "type-change")
    assert {k: v for k, v in back.attrs.items() if not k.startswith("result_")} == result.attrs
    assert back.attrs["result_kind"] == "compare"
    xr.testing.assert_allclose(back.compute(), result)


def test_bootstrap_needs_sequences() -> None:
    base = small_run(0).drop_vars(["seq_n_active", "seq_n_tokens", "seq_language", "seq_id"])
    msg = (
        r"^type_change with n_boot > 0 needs per-sequence counts \(seq_n_active\), which "
        r"base_run lacks; extract with --per-sequence \(create_run\(\.\.\., sequences=True\)\) "
        r"or pass n_boot=0 for point estimates only$"
    )
    with pytest.raises(ParameterError, match=msg):
        type_change(base, base, n_boot=2, params=P(top_rate=0.1))
    point = type_change(base, base, n_boot=0, params=P(top_rate=0.1))
    assert np.isnan(point["change_low"].values).all() and point.sizes["replicate"] == 0
    run = small_run(0)
    no_fr = run.isel(sequence=np.flatnonzero(run["seq_language"].values != "fr"))
    with pytest.raises(
        ParameterError,
        match=r"^language 'fr' has 0 sequences; type_change with n_boot > 0 needs at least 1 per ",
    ):
        type_change(no_fr, run, n_boot=2, params=P(top_rate=0.1), paired=False)


def test_two_run_bad_inputs() -> None:
    a, b = small_run(0), small_run(1, layers=5)
    with pytest.raises(
        ParameterError,
        match=r"^base_run and aligned_run must have the same layer x neuron shape; base_run has "
        r"4 x 30, aligned_run has 5 x 30$",
    ):
        type_change(a, b, n_boot=0)
    other = small_run(1).assign_coords(language=["en", "de", "es"])
    with pytest.raises(
        ParameterError,
        match=r"^base_run and aligned_run must have the same languages; only in base_run: "
        r"\['fr'\], only in aligned_run: \['es'\]$",
    ):
        shared_by_change(a, other, n_boot=0)
    with pytest.raises(ParameterError, match=r"^n_boot must be an integer >= 0, got -1$"):
        type_change(a, a, n_boot=-1)
    with pytest.raises(ParameterError, match=r"^ci must be a number in \(0, 1\), got 1.5$"):
        type_change(a, a, n_boot=0, ci=1.5)
    with pytest.raises(ParameterError, match=r"^base_run must be an xarray.Dataset"):
        type_change("run", a)


# --------------------------------------------------------------------------- overlap & friends


def grid_results() -> tuple[xr.Dataset, xr.Dataset]:
    """Two hand-made 2 x 5 results (M = 10) over en, de."""
    types_a = [
        ["specific", "specific", "related", "related", "none"],
        ["general", "none", "none", "none", "unassigned"],
    ]
    mask_a = np.zeros((2, 2, 5), dtype=bool)
    mask_a[0, 0, [0, 2, 3]] = True  # en: specific 0; related 2, 3
    mask_a[1, 0, [1, 2, 3]] = True  # de: specific 1; related 2, 3
    mask_a[:, 1, 0] = True  # general (selected, both languages)
    types_b = [
        ["none", "specific", "specific", "related", "related"],
        ["general", "specific", "none", "none", "none"],
    ]
    mask_b = np.zeros((2, 2, 5), dtype=bool)
    mask_b[0, 0, [2, 3, 4]] = True
    mask_b[1, 0, [1, 3, 4]] = True
    mask_b[:, 1, 0] = True
    mask_b[0, 1, 1] = True
    return fake_result(types_a, mask_a), fake_result(types_b, mask_b)


def test_overlap_on_hand_made_sets() -> None:
    a, b = grid_results()
    out = overlap(a, b)
    en = out.sel(language="en", set="mask")
    # A = {(0,0), (0,2), (0,3), (1,0)}, B = {(0,2), (0,3), (0,4), (1,0), (1,1)}
    assert (en["n_a"].item(), en["n_b"].item(), en["n_both"].item(), en["n_union"].item()) == (
        4,
        5,
        3,
        6,
    )
    assert en["jaccard"].item() == pytest.approx(0.5)
    assert en["overlap_coefficient"].item() == pytest.approx(0.75)
    # the layer-stratified null (default): A has 3 + 1, B 3 + 2 neurons in layers 0 and 1 of 5
    assert out.attrs["null"] == "layer"
    assert en["expected"].item() == pytest.approx(3 * 3 / 5 + 1 * 2 / 5)
    # X = X0 + X1, X0 ~ Hypergeom(5, 3, 3) on 1..3 (.3, .6, .1), X1 ~ Hypergeom(5, 1, 2) (.6, .4)
    assert en["pvalue"].item() == pytest.approx(0.1 + 0.6 * 0.4)
    uniform = overlap(a, b, null="uniform").sel(language="en", set="mask")
    assert uniform["expected"].item() == pytest.approx(2.0)
    assert uniform["enrichment"].item() == pytest.approx(1.5)
    # P(X >= 3), X ~ Hypergeom(M=10, 4 successes, 5 draws) = (C(4,3)C(6,2) + C(4,4)C(6,1)) / C(10,5)
    assert uniform["pvalue"].item() == pytest.approx((4 * 15 + 6) / 252)
    assert uniform["pvalue"].item() == pytest.approx(scipy.stats.hypergeom.sf(2, 10, 4, 5))
    spec_en = out.sel(language="en", set="specific")  # {(0,0)} vs {(0,2), (1,1)}
    assert (spec_en["n_a"].item(), spec_en["n_b"].item(), spec_en["n_both"].item()) == (1, 2, 0)
    assert spec_en["jaccard"].item() == 0.0 and spec_en["pvalue"].item() == 1.0
    rel_de = out.sel(language="de", set="related")  # {(0,2), (0,3)} vs {(0,3), (0,4)}
    assert rel_de["n_both"].item() == 1 and rel_de["jaccard"].item() == pytest.approx(1 / 3)
    sel = out.sel(type="selected")
    assert (sel["type_n_a"].item(), sel["type_n_b"].item(), sel["type_n_both"].item()) == (6, 6, 4)
    gen = out.sel(type="general")
    assert gen["type_jaccard"].item() == 1.0
    unassigned = out.sel(type="unassigned")  # {(1,4)} vs {}
    assert np.isnan(unassigned["type_overlap_coefficient"].item())
    assert unassigned["type_jaccard"].item() == 0.0
    none_both = overlap(a, a).sel(language="en", set="mask")
    assert none_both["jaccard"].item() == 1.0
    assert_json_attrs(out)
    xr.testing.assert_identical(out, overlap(chunked(a), chunked(b)))


def test_transition_table() -> None:
    a, b = grid_results()
    out = transition_table(a, b)
    count = out["count"]
    assert count.sel(from_type="specific", to_type="none").item() == 1
    assert count.sel(from_type="specific", to_type="specific").item() == 1
    assert count.sel(from_type="related", to_type="specific").item() == 1
    assert count.sel(from_type="related", to_type="related").item() == 1
    assert count.sel(from_type="none", to_type="related").item() == 1
    assert count.sel(from_type="none", to_type="specific").item() == 1
    assert count.sel(from_type="none", to_type="none").item() == 2
    assert count.sel(from_type="unassigned", to_type="none").item() == 1
    assert count.sel(from_type="general", to_type="general").item() == 1
    assert count.sum().item() == 10
    assert out["stayed"].item() == 5 and out["changed"].item() == 5
    assert out["count_by_layer"].sum("layer").equals(count)
    assert out["fraction"].sel(from_type="specific").sum().item() == pytest.approx(1.0)
    assert out["fraction"].sel(from_type="none", to_type="none").item() == 0.5
    assert out["from_type"].values.tolist() == [
        "none",
        "unassigned",
        "specific",
        "related",
        "general",
    ]
    xr.testing.assert_identical(out, transition_table(chunked(a), chunked(b)))


def membership_results(xa: np.ndarray, xb: np.ndarray) -> tuple[xr.Dataset, xr.Dataset]:
    """Fake results whose selection (and en mask) is the given flat membership (4 x 25 grid)."""
    out = []
    for x in (xa, xb):
        x = x.reshape(4, 25)
        kind = np.where(x, "specific", "none")
        mask = np.stack([x, np.zeros_like(x)])
        out.append(fake_result(kind.tolist(), mask))
    return out[0], out[1]


@pytest.mark.parametrize("n10,n01", [(3, 9), (0, 4), (20, 35), (30, 30), (1, 0)])
def test_mcnemar_against_statsmodels(n10: int, n01: int) -> None:
    rng = np.random.default_rng(n10 * 100 + n01)
    n11 = 7
    assert n10 + n01 + n11 <= 100
    xa = np.zeros(100, dtype=bool)
    xb = np.zeros(100, dtype=bool)
    order = rng.permutation(100)
    both, a_only, b_only = np.split(order[: n11 + n10 + n01], [n11, n11 + n10])
    xa[both] = xb[both] = True
    xa[a_only] = True
    xb[b_only] = True
    a, b = membership_results(xa, xb)
    table = np.array([[n11, n10], [n01, 100 - n11 - n10 - n01]])
    for language in (None, "en"):
        out = mcnemar(a, b, language)
        exact = n10 + n01 < 25
        ref = sm_mcnemar(table, exact=exact, correction=True)
        assert out["table"].values.tolist() == table.tolist()
        assert out.attrs["exact"] is exact
        assert out["statistic"].item() == pytest.approx(float(ref.statistic))
        assert out["pvalue"].item() == pytest.approx(float(ref.pvalue))
    masks = [masks_from_lists(masks_to_lists(r), ["en", "de"], 4, 25) for r in (a, b)]
    xr.testing.assert_identical(mcnemar(*masks, "en"), mcnemar(a, b, "en"))
    forced = mcnemar(a, b, exact=False, correction=False)
    ref = sm_mcnemar(table, exact=False, correction=False)
    assert forced["pvalue"].item() == pytest.approx(float(ref.pvalue))
    assert_json_attrs(forced)


def test_mcnemar_edge_cases_and_errors() -> None:
    a, _ = grid_results()
    same = mcnemar(a, a)
    assert same["statistic"].item() == 0.0 and same["pvalue"].item() == 1.0
    with pytest.raises(
        ParameterError, match=r"^language 'fr' is not a language of a \(languages: en, de\)$"
    ):
        mcnemar(a, a, "fr")
    with pytest.raises(
        ParameterError,
        match=r"^a and b must have the same layer x neuron shape; a has 2 x 5, b has 2 x 4$",
    ):
        mcnemar(a, a.isel(neuron=slice(0, 4)))
    with pytest.raises(ParameterError, match=r"^exact must be True, False or 'auto'"):
        mcnemar(a, a, exact="yes")
    with pytest.raises(ParameterError, match=r"^b must be an identification result"):
        overlap(a, xr.Dataset({"selected": a["selected"]}))


def test_cochran_q_against_statsmodels() -> None:
    rng = np.random.default_rng(7)
    x = rng.random((100, 4)) < np.array([0.2, 0.3, 0.35, 0.5])
    x[:10] = True  # constant rows do not change Q
    x[10:20] = False
    results = []
    for t in range(4):
        kind = np.where(x[:, t].reshape(4, 25), "specific", "none")
        results.append(fake_result(kind.tolist(), np.stack([x[:, t].reshape(4, 25)] * 2)))
    out = cochran_q(results, labels=["s0", "s1", "s2", "s3"])
    ref = cochrans_q(x.astype(int))
    assert out["statistic"].item() == pytest.approx(ref.statistic, rel=1e-10)
    assert out["pvalue"].item() == pytest.approx(ref.pvalue, rel=1e-10)
    assert out["df"].item() == 3
    assert out["count"].values.tolist() == x.sum(axis=0).tolist()
    assert out["checkpoint"].values.tolist() == ["s0", "s1", "s2", "s3"]
    assert cochran_q(results, language="de")["statistic"].item() == pytest.approx(ref.statistic)
    # T = 2: McNemar without continuity correction
    two = cochran_q(results[:2])
    mc = mcnemar(results[0], results[1], exact=False, correction=False)
    assert two["statistic"].item() == pytest.approx(mc["statistic"].item())
    xr.testing.assert_identical(
        out, cochran_q([chunked(r) for r in results], labels=["s0", "s1", "s2", "s3"])
    )
    still = cochran_q([results[0], results[0]])
    assert still["statistic"].item() == 0.0 and still["pvalue"].item() == 1.0
    with pytest.raises(
        ParameterError, match=r"^results must hold at least 2 identification results, got 1$"
    ):
        cochran_q(results[:1])
    with pytest.raises(ParameterError, match=r"^labels must be 4 distinct names"):
        cochran_q(results, labels=["a", "a", "b", "c"])


def test_trajectories_shape_and_values() -> None:
    runs = [small_run(seed) for seed in range(3)]
    results = [
        identify(runs[0], top_rate=0.1),
        identify(runs[1], "lape", top_rate=0.1),
        identify(runs[2], top_rate=0.15),
    ]
    out = trajectories(results, ["step0", "step1", "step2"])
    assert out.sizes == {
        "checkpoint": 3,
        "language": 3,
        "layer": 4,
        "type": 4,
        "n_assigned": 4,
        "n_shared": 4,
    }
    for i, r in enumerate(results):
        cp = out.isel(checkpoint=i)
        assert cp["n_selected"].item() == r.attrs["n_selected"]
        assert cp["tau"].item() == r.attrs["tau"]
        assert cp["appear"].values.tolist() == r.attrs["appear"]
        assert cp["shared_by_n"].values.tolist() == r.attrs["shared_by_n"]
        for lang in ("en", "de", "fr"):
            per = r.attrs["per_language"][lang]
            assert cp["n_specific"].sel(language=lang).item() == per["specific"]
            assert cp["n_related"].sel(language=lang).item() == per["related"]
            assert cp["n_mask"].sel(language=lang).item() == per["mask"]
        for t in ("specific", "related", "general", "unassigned"):
            assert cp["layer_types"].sel(type=t).values.tolist() == r.attrs["per_layer"][t]
    assert (
        np.isnan(out["lambda"].values[1]) and out["lambda"].values[0] == results[0].attrs["lambda"]
    )
    assert out["method"].values.tolist() == ["ternary", "lape", "ternary"]
    assert_json_attrs(out)
    xr.testing.assert_identical(
        out, trajectories([chunked(r) for r in results], ["step0", "step1", "step2"])
    )
    default = trajectories(results[:1])
    assert default["checkpoint"].values.tolist() == ["0"]
    with pytest.raises(
        ParameterError, match=r"^results must be a sequence of identification results"
    ):
        trajectories(results[0])


# --------------------------------------------------------------------------- spontaneous alignment


def test_spontaneous_alignment_detects_trained_only_gain() -> None:
    base, aligned, rate = alignment_runs(alike=False)
    out = spontaneous_alignment(
        base, aligned, ["l0", "l1", "l2"], n_boot=20, params=P(top_rate=rate)
    )
    assert out["change"].sel(count="specific").values.tolist() == [3] * 3 + [0] * 7
    assert out["change"].sel(count="related").values.tolist() == [-6] * 3 + [0] * 7
    assert out["trained"].values.tolist() == [True] * 3 + [False] * 7
    assert out["difference"].sel(count="specific").item() == 3.0
    assert out["mean_change"].sel(group="untrained", count="specific").item() == 0.0
    # exact enumeration of the C(10, 3) = 120 label assignments: only the true one is as extreme
    assert out.attrs["permutation"] == "exact" and out.attrs["n_assignments"] == 120
    assert out["perm_pvalue"].sel(count="specific").item() == pytest.approx(1 / 120)
    assert out["boot_pvalue"].sel(count="specific").item() < 0.05
    assert out["difference_low"].sel(count="specific").item() > 0
    assert out.attrs["untrained_languages"] == [f"l{i}" for i in range(3, 10)]
    assert_json_attrs(out)


def test_spontaneous_alignment_all_languages_alike() -> None:
    base, aligned, rate = alignment_runs(alike=True)
    out = spontaneous_alignment(
        base, aligned, ["l0", "l1", "l2"], n_boot=20, params=P(top_rate=rate)
    )
    assert out["change"].sel(count="specific").values.tolist() == [1] * 10
    assert out["difference"].values.tolist() == [0.0, 0.0]
    assert out["perm_pvalue"].values.tolist() == [1.0, 1.0]
    assert out["boot_pvalue"].sel(count="specific").item() > 0.5
    assert out["mean_change"].sel(group="untrained", count="specific").item() == 1.0
    # random label assignments when there are more than n_perm
    rand = spontaneous_alignment(
        base, aligned, ["l0", "l1", "l2"], n_boot=0, n_perm=50, params=P(top_rate=rate)
    )
    assert rand.attrs["permutation"] == "random" and rand.attrs["n_assignments"] == 50
    assert rand["perm_pvalue"].values.tolist() == [1.0, 1.0]


def test_spontaneous_alignment_numpy_and_dask_agree_and_errors() -> None:
    base, aligned, rate = alignment_runs(alike=False)
    kw: dict[str, Any] = dict(n_boot=3, seed=2, params=P(top_rate=rate))
    xr.testing.assert_identical(
        spontaneous_alignment(base, aligned, ["l0"], **kw),
        spontaneous_alignment(chunked(base), chunked(aligned), ["l0"], **kw),
    )
    langs = ", ".join(f"l{i}" for i in range(10))
    with pytest.raises(
        ParameterError,
        match=rf"^trained_languages has 'xx', which is not a language of the runs "
        rf"\(languages: {langs}\)$",
    ):
        spontaneous_alignment(base, aligned, ["l0", "xx"], n_boot=0)
    with pytest.raises(
        ParameterError,
        match=r"^every language of the runs is in trained_languages; spontaneous alignment needs "
        r"at least one untrained language$",
    ):
        spontaneous_alignment(base, aligned, [f"l{i}" for i in range(10)], n_boot=0)
    with pytest.raises(ParameterError, match=r"^trained_languages is empty"):
        spontaneous_alignment(base, aligned, [], n_boot=0)
    with pytest.raises(ParameterError, match=r"^trained_languages names 'l1' more than once$"):
        spontaneous_alignment(base, aligned, ["l1", "l1"], n_boot=0)


# --------------------------------------------------------------------------- stages from runs


def staged_run(seed: int) -> tuple[xr.Dataset, float]:
    """8 layers: specific in 0-1, related in 2-4, nothing in 5-6, both in 7."""
    pl = Planter(4, 8, 30)
    for layer in (0, 1):
        for i in range(3):
            pl.plant([i], layer=layer)
    for layer in (2, 3, 4):
        for i in range(3):
            pl.plant([i, i + 1], layer=layer)
    for i in range(2):
        pl.plant([i], layer=7)
        pl.plant([i, i + 2], layer=7)
    return seq_run(pl.p, seed=seed), pl.count / 240


def test_stage_profile_normalisations() -> None:
    result = identify(small_run(0), top_rate=0.2)
    counts = type_table(result, types=["specific", "related", "general"]).values.astype(float)
    by_type = stage_profile(result)
    np.testing.assert_allclose(
        by_type.values, counts / np.where(counts.sum(0) > 0, counts.sum(0), 1)
    )
    by_layer = stage_profile(result, normalize="layer")
    totals = counts.sum(1, keepdims=True)
    np.testing.assert_allclose(
        by_layer.values, np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    )
    np.testing.assert_allclose(stage_profile(result, normalize="neurons").values, counts / 30)
    np.testing.assert_allclose(stage_profile(result, normalize="none").values, counts)
    with pytest.raises(ParameterError, match=r"^normalize must be one of"):
        stage_profile(result, normalize="rows")


def test_bootstrap_stages_on_planted_run() -> None:
    run, rate = staged_run(1)
    kw: dict[str, Any] = dict(types=["specific", "related"], params=P(top_rate=rate))
    out = bootstrap_stages(run, n_boot=12, seed=1, **kw)
    assert out["start_index"].values.tolist() == [0, 2, 5, 7]
    assert out["stage"].values.tolist() == list(FOUR_STAGES)
    assert out["start_mode"].values.tolist() == [0, 2, 5, 7]
    assert out["start_low"].values.tolist() == [0, 2, 5, 7]
    assert out["start_high"].values.tolist() == [0, 2, 5, 7]
    assert (out["agreement"].values == 1.0).all()
    assert out["stage_probability"].sum("stage").values.tolist() == [1.0] * 8
    assert out.attrs["n_boot"] == 12 and out.attrs["seed"] == 1 and out.attrs["n_failed"] == 0
    assert_json_attrs(out)
    small: dict[str, Any] = dict(n_boot=3, seed=4, **kw)
    xr.testing.assert_identical(
        bootstrap_stages(run, **small), bootstrap_stages(chunked(run), **small)
    )
    with pytest.raises(
        ParameterError, match=r"^n_stages=9 is larger than the number of layers \(8\)"
    ):
        bootstrap_stages(run, n_stages=9, n_boot=0)


# --------------------------------------------------------------------------- deactivation


def ablation(k: int, diagonal: float, *, controls: int = 40, seed: int = 0) -> xr.Dataset:
    """Synthetic ablation: off-diagonal damage ~0.05, own-language damage ``diagonal``."""
    rng = np.random.default_rng(seed)
    langs = [f"l{i}" for i in range(k)]
    base = rng.uniform(1.5, 2.5, k)
    damage = 0.05 + rng.normal(0, 0.01, (k, k))
    damage[np.arange(k), np.arange(k)] += diagonal
    nll = np.vstack([base, base + damage])
    control = base[None, :, None] + 0.05 + rng.normal(0, 0.01, (k, k, controls))
    control = np.concatenate([np.full((1, k, controls), np.nan), control])
    return xr.Dataset(
        {
            "nll": (("deactivated", "evaluated"), nll),
            "ppl": (("deactivated", "evaluated"), np.exp(nll)),
            "control_nll": (("deactivated", "evaluated", "control"), control),
            "n_neurons": (("deactivated",), np.array([0] + [50] * k)),
        },
        coords={
            "deactivated": ["none", *langs],
            "evaluated": langs,
            "control": np.arange(controls),
        },
    )


def test_deactivation_planted_diagonal_gives_small_p() -> None:
    out = deactivation_effects(ablation(6, 1.0), seed=3)
    assert out["deactivated"].values.tolist() == [f"l{i}" for i in range(6)]
    assert (out["dominance"].values > 0.9).all()
    np.testing.assert_allclose(out["pvalue_control"].values, 1 / 41)
    assert out["pvalue_control_mean"].item() == pytest.approx(1 / 41)
    assert out.attrs["permutation"] == "exact" and out.attrs["n_permutations"] == 720
    assert out["pvalue_permutation"].item() == pytest.approx(1 / 720)
    np.testing.assert_allclose(out["rank_pvalue"].values, 1 / 6)
    assert (out["z"].values > 10).all()
    np.testing.assert_allclose(out["ppl_ratio"].values, np.exp(out["damage"].values))
    assert out.attrs["seed"] == 3 and out.attrs["n_perm"] == 10000
    assert out["n_neurons"].values.tolist() == [50] * 6
    assert_json_attrs(out)
    # more than 8 evaluated languages: random permutations
    big = deactivation_effects(ablation(10, 1.0), n_perm=500, seed=1)
    assert big.attrs["permutation"] == "random"
    assert big["pvalue_permutation"].item() == pytest.approx(1 / 501)


def test_deactivation_without_diagonal_gives_large_p() -> None:
    flat = ablation(6, 0.0)
    flat["nll"][1:] = flat["nll"][0].values + 0.3  # the same damage on every language
    out = deactivation_effects(flat)
    np.testing.assert_allclose(out["dominance"].values, 0.0, atol=1e-12)
    assert out["pvalue_permutation"].item() == 1.0
    assert out["pvalue_control_mean"].item() > 0.2
    noisy = deactivation_effects(ablation(6, 0.0, seed=4))
    assert noisy["pvalue_permutation"].item() > 0.05
    assert noisy["pvalue_control_mean"].item() > 0.05


def test_deactivation_numpy_and_dask_agree_and_missing_controls() -> None:
    abl = ablation(5, 0.5)
    out = deactivation_effects(abl)
    xr.testing.assert_identical(out, deactivation_effects(abl.chunk({"control": 7})))
    holes = abl.copy(deep=True)
    holes["control_nll"][1, :, :10] = np.nan  # ten controls missing for l0
    part = deactivation_effects(holes)
    assert part["n_controls"].values.tolist() == [30, 40, 40, 40, 40]
    assert part["pvalue_control"].sel(deactivated="l0").item() == pytest.approx(1 / 31)


def test_deactivation_bad_inputs() -> None:
    abl = ablation(3, 1.0)
    with pytest.raises(InputFormatError, match=r"^ablation.deactivated has no 'none' row"):
        deactivation_effects(abl.sel(deactivated=["l0", "l1"]))
    with pytest.raises(
        InputFormatError,
        match=r"^deactivated language 'l2' is not among the evaluated languages \['l0', 'l1'\]; "
        r"its own-language damage is undefined$",
    ):
        deactivation_effects(abl.sel(evaluated=["l0", "l1"]))
    with pytest.raises(InputFormatError, match=r"^ablation has no variable 'control_nll'"):
        deactivation_effects(abl.drop_vars("control_nll"))
    bad = abl.copy(deep=True)
    bad["nll"][2, 1] = np.nan
    with pytest.raises(
        InputFormatError, match=r"^ablation.nll is not finite at deactivated='l1', evaluated='l1'$"
    ):
        deactivation_effects(bad)
    with pytest.raises(ParameterError, match=r"^n_perm must be an integer >= 1, got 0$"):
        deactivation_effects(abl, n_perm=0)


def test_an_unfinished_ablation_is_named_as_such() -> None:
    import xarray as xr

    from langneurons.analysis.deactivation import deactivation_effects
    from langneurons.errors import InputFormatError

    partial = xr.Dataset(
        {"unit_done": (("deactivated", "evaluated", "variant"), [[[True, False]]])},
        attrs={"result_name": "ternary", "units_done": 1, "units_total": 2, "status": "partial"},
    )
    with pytest.raises(InputFormatError) as info:
        deactivation_effects(partial)
    assert str(info.value) == (
        "ablation 'ternary' is unfinished (1 of 2 units); complete it with `langneurons ablate "
        "... --resume` first"
    )
