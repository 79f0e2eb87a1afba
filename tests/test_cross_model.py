"""compare_models and ``compare models``: models of different depth, width and language sets."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from langneurons.analysis import compare_models, identify
from langneurons.analysis.cross_model import depth_bin_of, jaccard_matrix, mantel
from langneurons.errors import ParameterError
from langneurons.store import Counts, create_store

from .conftest import run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _simulate import Shape, make_truth, simulate  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:the automatic lambda")

LANGS = ["en", "de", "fr", "zh"]


def _model(layers: int, neurons: int, seed: int, length: int = 64, langs=LANGS) -> xr.Dataset:
    shape = Shape(languages=len(langs), layers=layers, neurons=neurons, sequences=12,
                  length=length, effect_fraction=0.15, effect=2.0)  # fmt: skip
    run = simulate(make_truth(shape, seed), np.random.default_rng(seed))
    labels = dict(zip([f"l{i}" for i in range(len(langs))], langs, strict=True))
    run = run.assign_coords(language=list(langs))
    return run.assign(
        seq_language=run["seq_language"].copy(data=[labels[x] for x in run["seq_language"].values])
    )


def _ident(run: xr.Dataset, method: str = "ternary") -> xr.Dataset:
    return identify(run, method, top_rate=0.05, role="response")


@pytest.fixture(scope="module")
def pair() -> tuple[list[xr.Dataset], list[xr.Dataset]]:
    runs = [_model(6, 40, 1), _model(9, 24, 2, length=96)]
    return runs, [_ident(r) for r in runs]


# --------------------------------------------------------------------------- pieces


def test_jaccard_matrix_counts_overlaps() -> None:
    masks = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    j = jaccard_matrix(masks)
    assert j[0, 1] == pytest.approx(1 / 3) and j[0, 0] == 1.0
    assert j[2, 2] == 1.0 and j[0, 2] == 0.0


def test_mantel_is_exact_with_few_languages_and_floors_at_one_over_k_factorial() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 4))
    a = (x + x.T) / 2
    r, p, floor, exact = mantel(a, a, n_perm=1000, seed=0)
    assert exact and r == pytest.approx(1.0)
    assert floor == pytest.approx(1 / math.factorial(4))
    # the identity and any permutation giving the same off-diagonal values attain r = 1
    same = sum(np.allclose(a[np.ix_(q, q)], a) for q in itertools.permutations(range(4)))
    assert p == pytest.approx(same / 24)
    assert math.isnan(mantel(a[:2, :2], a[:2, :2], 100, 0)[0])  # K < 3: undefined


def test_depth_bins_put_first_and_last_layer_in_the_end_bins() -> None:
    assert depth_bin_of(8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert depth_bin_of(12, 4)[[0, -1]].tolist() == [0, 3]


# --------------------------------------------------------------------------- compare_models


def test_compare_models_on_two_shapes(pair) -> None:
    runs, results = pair
    out = compare_models(runs, results, names=["small", "deep"], bins=3, n_boot=20, n_perm=200)
    assert out["n_layers"].values.tolist() == [6, 9]
    assert out["n_neurons"].values.tolist() == [40, 24]
    assert out.attrs["languages"] == LANGS
    # shares of the selected set: specific + related + unassigned + selected general = 1
    sel = out["type_share_selected"].sum("type").values
    np.testing.assert_allclose(sel, 1.0)
    # shares of all neurons agree with the identification's own counts
    for i, res in enumerate(results):
        total = res.sizes["layer"] * res.sizes["neuron"]
        per_layer = res.attrs["per_layer"]
        assert out["type_share"].isel(model=i).sel(type="specific").item() == pytest.approx(
            sum(per_layer["specific"]) / total
        )
        np.testing.assert_allclose(out["shared_by_n"].isel(model=i).sum().item(), 1.0)
    assert out.sizes["depth_bin"] == 3 and (out["layer_share"] >= 0).all()
    # intervals hold their estimates' order; the first model's difference is zero
    assert (out["type_share_lower"] <= out["type_share_upper"]).all()
    assert (out["type_share_difference"].isel(model=0) == 0).all()
    # the same items through different tokenizers: paired by seq_id, token totals reported
    assert out.attrs["paired"] is True and out.attrs["cluster"] == "item"
    assert out["token_ratio"].values[1] == pytest.approx(96 / 64)
    assert "never by token" in out.attrs["tokens_note"]
    assert out.attrs["inference"] == "descriptive"
    assert out.attrs["mantel_inference"] == "valid"  # K = 4: 1/24 < 0.05
    np.testing.assert_allclose(np.diagonal(out["jaccard"].values, axis1=1, axis2=2), 1.0)
    # stage boundaries in relative depth, with intervals from the same replicates
    starts = out["stage_start"].values
    assert starts.shape == (2, 3) and ((starts > 0) & (starts <= 1)).all()
    assert (np.diff(starts, axis=1) > 0).all()
    assert (out["stage_start_lower"] <= out["stage_start_upper"]).all()


def test_without_per_sequence_counts_everything_is_descriptive(pair) -> None:
    _, results = pair
    out = compare_models(None, results, bins=2, n_boot=10)
    assert "type_share_lower" not in out and out.attrs["inference"] == "descriptive"
    assert "per-sequence" in out.attrs["inference_reason"]


def test_language_sets_are_intersected_and_three_languages_are_descriptive() -> None:
    a = _model(4, 30, 3)
    b = _model(5, 20, 4, langs=["en", "de", "ja", "zh"])
    out = compare_models([a, b], [_ident(a), _ident(b)], bins=2, n_boot=0)
    assert out.attrs["languages"] == ["en", "de", "zh"]
    assert out.attrs["languages_by_model"]["model1"] == ["en", "de", "ja", "zh"]
    assert out.attrs["mantel_inference"] == "descriptive"
    assert "1/K! = 0.167" in out.attrs["mantel_reason"]


def test_bad_inputs_are_refused_with_one_clear_line(pair) -> None:
    runs, results = pair
    other = _model(4, 30, 5, langs=["ja", "ru", "bn", "th"])
    with pytest.raises(ParameterError, match="no language in common"):
        compare_models(None, [results[0], _ident(other)], bins=2)
    with pytest.raises(ParameterError, match=r"bins=7 is finer than the shallowest model"):
        compare_models(None, results, bins=7)
    with pytest.raises(ParameterError, match=r"n_stages=7 needs at least as many layers"):
        compare_models(None, results, bins=2, n_stages=7)
    lape = _ident(runs[1], "lape")
    with pytest.raises(ParameterError, match="different methods or parameters.*allow_mixed"):
        compare_models(None, [results[0], lape], bins=2)
    out = compare_models(None, [results[0], lape], bins=2, allow_mixed=True)
    assert "method" in out.attrs["mixed_parameters"]
    with pytest.raises(ParameterError, match="at least two"):
        compare_models(None, results[:1])
    with pytest.raises(ParameterError, match="neurons but its result"):
        compare_models(runs[::-1], results, bins=2)


# --------------------------------------------------------------------------- the command line


def _write(store, name: str, run: xr.Dataset) -> None:
    counts = Counts(
        languages=[str(x) for x in run["language"].values],
        n_active=run["n_active"].values,
        n_tokens=run["n_tokens"].values,
        seq_n_active=run["seq_n_active"].values,
        seq_n_tokens=run["seq_n_tokens"].values,
        seq_language=[str(x) for x in run["seq_language"].values],
        seq_id=[str(x) for x in run["seq_id"].values],
    )
    store.create_run(
        name, n_layers=run.sizes["layer"], n_neurons=run.sizes["neuron"], sequences=True,
        counts=counts,
    )  # fmt: skip


@pytest.fixture()
def store_path(tmp_path: Path, pair) -> Path:
    runs, _ = pair
    path = tmp_path / "s.zarr"
    store = create_store(path)
    _write(store, "a/base", runs[0])
    _write(store, "b/base", runs[1])
    return path


def test_cli_compare_models_prints_its_headline_and_saves(capsys, store_path: Path) -> None:
    for run in ("a/base", "b/base"):
        code, _, err = run_cli(capsys, "identify", store_path, "--run", run, "--top-rate", "0.05")
        assert code == 0, err
    code, out, err = run_cli(
        capsys, "compare", "models", store_path, "a/base", "b/base", "--bins", "3",
        "--n-boot", "10", "--n-perm", "100",
    )  # fmt: skip
    assert code == 0, err
    assert "common languages (4): en, de, fr, zh" in out
    assert "specific" in out and "Mantel r" in out and "paired by" not in err
    assert "stage boundaries in relative depth" in out
    # the between-model difference is descriptive (calibration family `models`): no p-value
    assert "descriptive, no p-value" in out and "boot p" not in out
    assert "saved at" in out
    code, out, _ = run_cli(
        capsys, "compare", "models", store_path, "a/base", "b/base", "--bins", "3",
        "--n-boot", "0", "--no-save", "--json",
    )  # fmt: skip
    assert code == 0 and '"models"' in out


def test_cli_bad_inputs(capsys, store_path: Path) -> None:
    code, _, err = run_cli(capsys, "compare", "models", store_path, "a/base", "b/base")
    assert code != 0 and "has no saved identification 'ternary'" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        capsys, "compare", "models", store_path, "a/base", "b/base", "--identify",
        "--top-rate", "0.05", "--bins", "12", "--no-save",
    )  # fmt: skip
    assert code != 0 and "finer than the shallowest model" in err
    run_cli(capsys, "identify", store_path, "--run", "a/base", "--top-rate", "0.05")
    run_cli(capsys, "identify", store_path, "--run", "b/base", "--top-rate", "0.05",
            "--method", "lape", "--name", "ternary")  # fmt: skip
    code, _, err = run_cli(capsys, "compare", "models", store_path, "a/base", "b/base", "--no-save")
    assert code != 0 and "--allow-mixed" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(
        capsys, "compare", "models", store_path, "a/base", "b/base", "--no-save",
        "--allow-mixed", "--n-boot", "0", "--bins", "2",
    )  # fmt: skip
    assert code == 0, err
    assert "mixed parameters (allowed)" in out
    code, _, err = run_cli(capsys, "compare", "models", store_path, "a/base")
    assert code != 0 and "at least two runs" in err
    other = _model(4, 30, 5, langs=["ja", "ru", "bn", "th"])
    _write(create_store(store_path, exist_ok=True), "c/base", other)
    code, _, err = run_cli(
        capsys, "compare", "models", store_path, "a/base", "c/base", "--identify",
        "--top-rate", "0.05", "--bins", "2", "--no-save",
    )  # fmt: skip
    assert code != 0 and "no language in common" in err and len(err.strip().splitlines()) == 1
    assert "a/base: en, de, fr, zh; c/base: ja, ru, bn, th" in err


def test_report_gains_a_cross_model_section(capsys, store_path: Path, tmp_path: Path) -> None:
    from langneurons.reports import write_report
    from langneurons.store import open_store

    code, _, err = run_cli(
        capsys, "compare", "models", store_path, "a/base", "b/base", "--identify",
        "--top-rate", "0.05", "--bins", "3", "--n-boot", "5", "--n-perm", "50",
    )  # fmt: skip
    assert code == 0, err
    html = write_report(open_store(store_path), tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Cross-model comparison: a/base, b/base" in md
    assert "Layer profiles on relative depth" in md and "Mantel r" in md
    assert "relative depth layer/(L-1)" in md  # the caption says what is counted
    figs = sorted(p.name for p in (tmp_path / "report" / "figures").glob("*.png"))
    assert sum("profiles" in f or "relative-depth" in f for f in figs) >= 1, figs
    assert html.exists()


# --------------------------------------------------------------------------- replicate runs


def test_model_groups_test_against_run_to_run_variance() -> None:
    """Four replicate runs of each of two models of different shape: the permutation across
    runs is exact (70 splits, smallest p 2/70) and Welch's t runs; a planted difference in the
    specific share is found, and one run per model is descriptive."""
    from langneurons.analysis import IdentifyParams, compare_model_groups

    a = [_model(6, 40, 100 + i) for i in range(4)]
    b = [_model(9, 24, 200 + i, langs=[*LANGS[:3], "ja"]) for i in range(4)]
    params = IdentifyParams(top_rate=0.05)
    out = compare_model_groups({"A": a, "B": b}, params, bins=3)
    assert out.attrs["languages"] == LANGS[:3]  # the common ones
    assert out.attrs["permutation"] == "exact" and out.attrs["n_splits"] == 70
    assert out.attrs["min_pvalue"] == pytest.approx(2 / 70)
    assert out.attrs["tests"] == ["permutation", "welch"] and out.attrs["inference"] == "valid"
    assert out.sizes == {"run": 8, "group": 2, "type": 4, "language": 3, "depth_bin": 3}
    np.testing.assert_allclose(
        out["type_share_difference"],
        out["type_share"][:4].mean("run") - out["type_share"][4:].mean("run"),
    )
    # each run's shares are those compare_models gives for that run
    single = compare_models(None, [_ident(a[0]), _ident(b[0])], bins=3, n_boot=0)
    np.testing.assert_allclose(out["type_share"][0], single["type_share"][0])
    np.testing.assert_allclose(out["type_share"][4], single["type_share"][1])
    p = out["type_share_perm_pvalue"].values
    assert ((p >= 2 / 70 - 1e-12) & (p <= 1)).all()
    # one run per model: nothing estimates run-to-run variance
    one = compare_model_groups({"A": a[:1], "B": b[:1]}, params, bins=3)
    assert one.attrs["inference"] == "descriptive" and one.attrs["tests"] == []
    assert np.isnan(one["type_share_perm_pvalue"]).all()
    with pytest.raises(ParameterError, match=r"^group 'A' has 1 run; Welch's t needs"):
        compare_model_groups({"A": a[:1], "B": b}, params, test="welch")
    with pytest.raises(
        ParameterError,
        match=r"^models 'A' and 'B' have 1 run each; a permutation across runs needs at least 3 "
        r"runs in all \(with 1 vs 1 its only p-value is 1\): add runs$",
    ):
        compare_model_groups({"A": a[:1], "B": b[:1]}, params, test="permutation")
    with pytest.raises(ParameterError, match=r"must have the same layer x neuron shape"):
        compare_model_groups({"A": [a[0], b[1]], "B": b[2:]}, params)
    with pytest.raises(ParameterError, match=r"^bins=7 is finer than the shallowest model"):
        compare_model_groups({"A": a, "B": b}, params, bins=7)


def test_cli_compare_models_with_groups(capsys, tmp_path: Path) -> None:
    path = tmp_path / "g.zarr"
    store = create_store(path)
    for i in range(2):
        _write(store, f"a/r{i}", _model(6, 40, 300 + i))
        _write(store, f"b/r{i}", _model(9, 24, 400 + i))
    code, out, err = run_cli(
        capsys, "compare", "models", path, "--group", "A=a/r0,a/r1", "--group", "B=b/r0,b/r1",
        "--identify", "--top-rate", "0.05", "--bins", "3",
    )  # fmt: skip
    assert code == 0, err
    assert "model_groups: saved at a/r0/compare/models-groups-A-vs-B/model_groups" in out
    assert "  type        A (2 runs)  B (2 runs)  difference  perm p  Welch p" in out
    assert "smallest attainable permutation p-value is 0.333" in out
    code, _, err = run_cli(
        capsys, "compare", "models", path, "a/r0", "--group", "A=a/r0", "--group", "B=b/r0",
    )  # fmt: skip
    assert (code, err) == (
        1,
        "langneurons: error: give either RUN RUN ... or two --group options, not both\n",
    )
