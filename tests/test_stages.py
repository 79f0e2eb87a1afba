"""Stages: the choice of the number of stages (power and false-positive rate on simulated
profiles), signature names, sensitivity to the normalisation, 'descriptive' without a
bootstrap, the command line, and bad inputs with pinned messages."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from langneurons.analysis.params import IdentifyParams
from langneurons.analysis.stages import (
    FOUR_STAGES,
    bootstrap_stages,
    normalization_sensitivity,
    segment_stages,
    stage_profile,
)
from langneurons.cli._tables import stages as stages_table
from langneurons.errors import ParameterError
from langneurons.reports._summary import stages_line
from langneurons.store import create_store

from .conftest import make_counts, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _simulate as sim  # noqa: E402

TYPES = ["specific", "related", "general"]


def _rate_bound(rate: float, reps: int) -> float:
    """Nominal rate + 3 binomial standard errors."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / reps)


def noisy_steps(
    lengths: list[int], rng: np.random.Generator, sd: float = 0.1, features: int = 3
) -> xr.DataArray:
    """Piecewise-constant stage means (adjacent stages >= 0.5 apart in one feature) + noise."""
    values = [rng.uniform(0, 1, features)]
    for _ in lengths[1:]:
        v = rng.uniform(0, 1, features)
        while np.abs(v - values[-1]).max() < 0.5:
            v = rng.uniform(0, 1, features)
        values.append(v)
    rows = np.repeat(np.stack(values), lengths, axis=0)
    rows = rows + rng.normal(0, sd, rows.shape)
    return xr.DataArray(rows, dims=("layer", "feature"))


# --------------------------------------------------------------------------- number of stages


@pytest.mark.parametrize("lengths", [[10, 22], [3, 14, 10, 5], [4, 6, 8, 6, 8]])
def test_auto_recovers_a_planted_number_of_stages(lengths: list[int]) -> None:
    """Power: 32 layers, noise sd 0.1, adjacent stage means >= 0.5 apart in one feature."""
    rng = np.random.default_rng(len(lengths))
    reps, hits, hits_bic = 25, 0, 0
    for r in range(reps):
        profile = noisy_steps(lengths, rng)
        seg = segment_stages(profile, "auto", n_perm=99, seed=r)
        hits += seg.attrs["n_stages"] == len(lengths)
        hits_bic += seg.attrs["n_stages_bic"] == len(lengths)
        assert seg.attrs["n_stages_rule"] == "permutation"
    assert hits / reps >= 0.8, hits  # measured: 23/25, 24/25, 25/25 (seeds as here)
    assert hits_bic / reps >= 0.8, hits_bic


def test_auto_on_a_noise_free_profile_is_exact() -> None:
    rng = np.random.default_rng(7)
    for lengths in ([5, 5, 5], [4, 8, 4], [4, 6, 4, 6]):
        profile = noisy_steps(lengths, rng, sd=0.0)
        seg = segment_stages(profile, "auto", n_perm=49)
        assert seg.attrs["n_stages"] == len(lengths), lengths
        assert seg["length"].values.tolist() == lengths
    # the BIC's noise variance comes from successive differences: with a jump every other
    # layer it takes the jumps for noise (asymptotic, documented), so only long stages here
    for lengths in ([5, 5, 5], [4, 8, 4]):
        seg = segment_stages(noisy_steps(lengths, rng, sd=0.0), "auto", criterion="bic")
        assert seg.attrs["n_stages"] == len(lengths), lengths
    # only the permutation rule's number is tested; the BIC's over-splits (docs/calibration.md)
    assert seg.attrs["n_stages_inference"] == "descriptive"
    assert seg.attrs["n_stages_inference_reason"].startswith("the BIC over-splits")
    assert "it over-splits" in stages_line(seg)
    assert segment_stages(profile, "auto", n_perm=19).attrs["n_stages_inference"] == "valid"
    fixed = segment_stages(profile, 3).attrs
    assert fixed["n_stages_inference"] == "descriptive"
    assert fixed["n_stages_inference_reason"] == "the number of stages was given, not tested"


@pytest.mark.parametrize(
    "null",
    [
        pytest.param(lambda rng: rng.normal(size=(32, 3)), id="normal-32"),
        pytest.param(lambda rng: rng.normal(size=(8, 3)), id="normal-8"),
        pytest.param(lambda rng: rng.poisson(0.5, size=(32, 3)).astype(float), id="sparse-counts"),
    ],
)
def test_auto_adds_no_stage_to_a_structureless_profile_beyond_alpha(null: Any) -> None:
    """FPR: rows exchangeable (no depth structure); more than one stage at most alpha = 0.05."""
    rng = np.random.default_rng(11)
    reps = 200
    chosen = np.array(
        [
            segment_stages(
                xr.DataArray(null(rng), dims=("layer", "f")), "auto", n_perm=99, seed=r
            ).attrs["n_stages"]
            for r in range(reps)
        ]
    )
    fpr = float(np.mean(chosen > 1))
    assert fpr <= _rate_bound(0.05, reps), fpr  # measured 0.03-0.05


def test_cost_curve_and_rule_are_reported() -> None:
    profile = noisy_steps([3, 14, 10, 5], np.random.default_rng(2))
    seg = segment_stages(profile, "auto", n_perm=49, max_stages=6)
    cost = seg["cost"].values
    assert seg["k"].values.tolist() == [1, 2, 3, 4, 5, 6]
    assert (np.diff(cost) <= 1e-12).all()  # more stages never cost more
    assert seg.attrs["cost_curve"] == pytest.approx(cost.tolist())
    assert seg["objective"].item() == pytest.approx(cost[seg.attrs["n_stages"] - 1])
    p = seg["pvalue_more"].values
    k = seg.attrs["n_stages"]
    assert (p[: k - 1] <= 0.05).all() and p[k - 1] > 0.05 and np.isnan(p[k:]).all()
    assert "sequential permutation tests" in seg.attrs["criterion"]
    fixed = segment_stages(profile, 4)  # fixed: the permutation rule is not run by default
    assert fixed.attrs["n_stages_rule"] == "fixed" and fixed.attrs["n_stages_permutation"] == 0
    assert np.isnan(fixed["pvalue_more"].values).all()
    assert fixed.sizes["k"] == 8 and fixed.attrs["n_stages_bic"] == 4
    many = segment_stages(profile, 10, max_stages=3)  # the curve reaches the number asked
    assert many.sizes["k"] == 10


# --------------------------------------------------------------------------- names


def counts_table(blocks: list[tuple[int, tuple[int, int, int]]]) -> xr.DataArray:
    """``counts[layer, type]``: (layers, (specific, related, general)) blocks in order."""
    rows = np.concatenate([np.tile(np.asarray(c, float), (n, 1)) for n, c in blocks])
    return xr.DataArray(rows, dims=("layer", "type"), coords={"type": TYPES})


def by_type(counts: xr.DataArray) -> xr.DataArray:
    return counts / counts.sum("layer")


PAPER = [(3, (12, 2, 1)), (5, (0, 1, 10)), (3, (12, 2, 2)), (1, (4, 8, 2))]


def test_names_follow_the_type_signature() -> None:
    counts = counts_table(PAPER)
    seg = segment_stages(by_type(counts), 4, counts=counts)
    assert seg["start_index"].values.tolist() == [0, 3, 8, 11]
    assert seg["stage"].values.tolist() == list(FOUR_STAGES)
    assert seg["positional_name"].values.tolist() == list(FOUR_STAGES)
    np.testing.assert_allclose(seg["specific_density"].values, [12, 0, 12, 4] / np.float64(76 / 12))
    assert seg["general_share"].values[1] == pytest.approx(10 / 11)
    assert seg.attrs["naming"].startswith("type signature")
    # the case: specific neurons crowd a middle stage the paper calls shared
    crowded = counts_table([(3, (12, 2, 1)), (5, (0, 1, 10)), (4, (14, 3, 2)), (5, (1, 1, 12))])
    seg = segment_stages(by_type(crowded), 4, counts=crowded)
    assert seg["positional_name"].values.tolist()[2] == "multilingual output transformation"
    assert seg["stage"].values.tolist() == [
        "multilingual understanding",
        "shared semantic reasoning",
        "multilingual output transformation",
        "stage 4",  # general-dominated, but the shared name is taken; not short enough either
    ]
    flipped = counts_table([(4, (0, 2, 12)), (4, (12, 2, 0)), (4, (0, 2, 12))])
    seg = segment_stages(by_type(flipped), 3, counts=flipped)
    # general first: not understanding; specific after the shared stage: output transformation
    assert seg["stage"].values.tolist() == [
        "shared semantic reasoning",
        "multilingual output transformation",
        "stage 3",
    ]
    assert seg["stage_label"].values.tolist()[4] == "multilingual output transformation"


def test_names_fall_back_when_no_signature_can_be_read() -> None:
    counts = counts_table(PAPER)
    one = segment_stages(by_type(counts), 1, counts=counts)
    assert one["stage"].values.tolist() == ["stage 1"]  # nothing to contrast one stage with
    none = counts_table([(6, (0, 3, 1)), (6, (0, 1, 3))])  # no specific neurons anywhere
    assert segment_stages(none / 40, 2, counts=none)["stage"].values.tolist() == [
        "stage 1",
        "stage 2",
    ]
    plain = segment_stages(by_type(counts), 4)  # no counts: positional, as before
    assert plain["stage"].values.tolist() == list(FOUR_STAGES)
    assert plain.attrs["naming"].startswith("positional")
    given = segment_stages(by_type(counts), 2, names=["a", "b"], counts=counts)
    assert given["stage"].values.tolist() == ["a", "b"]
    assert given["positional_name"].values.tolist() == ["stage 1", "stage 2"]


# --------------------------------------------------------------------------- from identifications


def identification(counts: xr.DataArray, n_neurons: int = 40) -> xr.Dataset:
    """A minimal identification result with these per-layer type counts."""
    c = counts.values.astype(int)
    kind = np.full((c.shape[0], n_neurons), "none", dtype="<U8")
    general = np.zeros((c.shape[0], n_neurons), dtype=bool)
    for layer, (spec, rel, gen) in enumerate(c):
        kind[layer, :spec] = "specific"
        kind[layer, spec : spec + rel] = "related"
        general[layer, spec + rel : spec + rel + gen] = True
    dims = ("layer", "neuron")
    return xr.Dataset(
        {"neuron_type": (dims, kind), "general": (dims, general)},
        coords={"layer": np.arange(c.shape[0])},
    )


def test_normalization_sensitivity_reports_every_normalisation() -> None:
    stable = normalization_sensitivity(identification(counts_table(PAPER)), 4)
    assert stable["normalization"].values.tolist() == ["type", "layer", "neurons", "zscore"]
    assert stable.attrs["max_range"] == 0
    assert stable.attrs["boundaries"]["layer"] == [0, 3, 8, 11]
    # the composition never changes but the totals jump at 6: 'layer' does not see it
    moving = counts_table([(6, (1, 1, 1)), (6, (4, 4, 4))])
    out = normalization_sensitivity(identification(moving), 2)
    starts = out.attrs["boundaries"]
    assert starts["layer"] == [0, 1] and starts["neurons"] == [0, 6]  # 'layer': any split, 0
    assert out["start_range"].values.tolist() == [0, 5] and out.attrs["max_range"] == 5
    np.testing.assert_array_equal(out["start_min"], out["start"].min("normalization"))
    zs = stage_profile(identification(moving), normalize="zscore")
    np.testing.assert_allclose(zs.mean("layer"), 0, atol=1e-12)
    np.testing.assert_allclose(zs.std("layer"), 1)


def simulated_run(seed: int = 0) -> xr.Dataset:
    shape = sim.Shape(heterogeneity="logit-normal", sequences=16, base_rate=0.01, sd=1.0)
    return sim.simulate(sim.make_truth(shape, seed), np.random.default_rng(seed + 1))


PARAMS = IdentifyParams(top_rate=0.05, lam_widen=10)


def test_bootstrap_stages_says_descriptive_without_a_bootstrap() -> None:
    run = simulated_run()
    point = bootstrap_stages(run, n_stages="auto", n_boot=0, params=PARAMS, n_perm=49)
    assert point.attrs["inference"] == "descriptive"
    assert point.attrs["n_stages_rule"] == "permutation"
    k = point.attrs["n_stages"]
    assert point.sizes["stage"] == k and point.sizes["replicate"] == 0
    assert set(point.attrs["normalization_boundaries"]) == {"type", "layer", "neurons", "zscore"}
    assert point["normalization_start"].shape == (4, k)
    lines = stages_table(point)
    assert any("inference: descriptive" in line for line in lines)
    assert any("chosen by sequential permutation tests" in line for line in lines)
    assert any(line.strip().startswith("cost J_k for k = 1..8") for line in lines)
    boot = bootstrap_stages(run, n_stages=3, n_boot=4, seed=2, params=PARAMS)
    assert boot.attrs["inference"] == "bootstrap" and boot.sizes["replicate"] == 4
    assert "intervals conditional on 3 stages" in boot.attrs["assumption"]
    assert np.isfinite(boot["start_low"].values).all()


# --------------------------------------------------------------------------- command line


def _cli_store(tmp: Path, sequences: int) -> Path:
    path = tmp / f"s{sequences}.zarr"
    counts = make_counts(["en", "zh", "sw"], layers=6, neurons=30, seed=4, sequences=sequences)
    create_store(path).create_run(
        "m/r", n_layers=6, n_neurons=30, sequences=bool(sequences), counts=counts
    )
    return path


def test_cli_stages_auto_and_descriptive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _cli_store(tmp_path, 0)  # no per-sequence counts: no bootstrap, said so
    args = ["--run", "m/r", "--n-stages", "auto", "--n-perm", "19", "--top-rate", "0.2"]
    code, out, err = run_cli(capsys, "stats", "stages", store, *args, "--no-save")
    assert code == 0, err
    assert "(chosen by sequential permutation tests at 0.05" in out
    assert "inference: descriptive" in out
    assert "boundaries under each normalisation" in out and "zscore" in out
    store = _cli_store(tmp_path, 5)
    code, out, err = run_cli(capsys, "stats", "stages", store, "--run", "m/r", "--n-stages", "3",
                             "--n-boot", "2", "--top-rate", "0.2", "--no-save")  # fmt: skip
    assert code == 0, err
    assert "3 stages over 6 layers (fixed; the permutation rule chooses" in out
    assert "inference: bootstrap" in out


def test_cli_stages_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _cli_store(tmp_path, 0)
    base = ["stats", "stages", store, "--run", "m/r", "--no-save", "--top-rate", "0.2"]
    code, _, err = run_cli(capsys, *base, "--n-stages", "some")
    assert code == 2 and "must be 'auto' or an integer >= 1, got 'some'" in err
    code, _, err = run_cli(capsys, *base, "--n-stages", "0")
    assert code == 1 and "n_stages must be an integer >= 1, got 0" in err
    code, _, err = run_cli(capsys, *base, "--n-stages", "7")
    assert code == 1 and "n_stages=7 is larger than the number of layers (6)" in err
    code, _, err = run_cli(capsys, *base, "--normalize", "rows")
    assert code == 2 and "'rows' is not one of" in err
    code, _, err = run_cli(capsys, *base, "--n-boot", "3")
    assert code == 1 and "needs per-sequence counts (seq_n_active)" in err


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_have_pinned_messages() -> None:
    counts = counts_table(PAPER)
    profile = by_type(counts)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"n_stages": 0}, r"^n_stages must be an integer >= 1, got 0$"),
        ({"n_stages": 13}, r"^n_stages=13 is larger than the number of layers \(12\); every"),
        ({"n_stages": "many"}, r"^n_stages must be an integer >= 1 or 'auto', got 'many'$"),
        ({"criterion": "aic"}, r"^criterion must be one of 'permutation', 'bic', got 'aic'$"),
        ({"n_perm": -1}, r"^n_perm must be an integer >= 0, got -1$"),
        ({"alpha": 1.5}, r"^alpha must be a number in \(0, 1\), got 1.5$"),
        ({"max_stages": 0}, r"^max_stages must be an integer >= 1, got 0$"),
        (
            {"n_stages": "auto", "n_perm": 0},
            r"^n_stages='auto' with criterion='permutation' needs n_perm >= 1; pass n_perm or "
            r"criterion='bic'$",
        ),
        (
            {"counts": counts.sel(type=["specific", "related"])},
            r"^counts must have 'specific' and 'general' on its 'type' coordinate",
        ),
        (
            {"counts": counts.isel(layer=slice(0, 5))},
            r"^counts must hold finite non-negative counts for the profile's 12 layers$",
        ),
        ({"counts": counts.values}, r"^counts must be an xarray.DataArray \[layer, type\]"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ParameterError, match=message):
            segment_stages(profile, **kwargs)
    ident = identification(counts)
    with pytest.raises(
        ParameterError,
        match=r"^normalize must be one of 'type', 'layer', 'neurons', 'none', 'zscore', "
        r"got 'rows'$",
    ):
        stage_profile(ident, normalize="rows")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"^normalizations must be one of .*got 'rows'$"):
        normalization_sensitivity(ident, 2, normalizations=["type", "rows"])
    with pytest.raises(ParameterError, match=r"needs an integer n_stages, got 'auto'$"):
        normalization_sensitivity(ident, "auto")  # type: ignore[arg-type]
    run = simulated_run()
    with pytest.raises(ParameterError, match=r"^normalize must be one of .*got 'rows'$"):
        bootstrap_stages(run, normalize="rows", n_boot=0, params=PARAMS)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"^n_stages=9 is larger than the number of layers"):
        bootstrap_stages(run, n_stages=9, n_boot=0, params=PARAMS)


@pytest.mark.parametrize(
    ("n_layers", "n_perm", "label", "floor"),
    [(3, 199, "descriptive", 1 / 6), (12, 9, "descriptive", 0.1), (12, 199, "valid", 0.005)],
)
def test_a_stage_count_the_permutation_test_cannot_reject_is_descriptive(
    n_layers: int, n_perm: int, label: str, floor: float
) -> None:
    """The permutation p-value is at least 1 / (n_perm + 1), and with L layers at least 1 / L!
    (their orders): a test that cannot reach alpha is not called valid."""
    step = np.r_[np.zeros(n_layers // 2), np.ones(n_layers - n_layers // 2)]
    noise = np.random.default_rng(0).normal(0, 0.01, n_layers)
    profile = xr.DataArray((step * 100 + noise)[:, None], dims=("layer", "feature"))
    result = segment_stages(profile, "auto", n_perm=n_perm)
    assert result.attrs["n_stages_inference"] == label
    assert result.attrs["n_stages_min_pvalue"] == pytest.approx(floor)
    reason = result.attrs.get("n_stages_inference_reason", "")
    assert ("cannot reach alpha=0.05" in reason) == (label == "descriptive")
