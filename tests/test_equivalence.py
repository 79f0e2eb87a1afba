"""Spontaneous alignment: the equivalence test (TOST) of "untrained languages change like
trained ones" and the smallest p the permutation test over language labels can give."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _simulate as sim  # noqa: E402

from langneurons.analysis import IdentifyParams as P  # noqa: E402
from langneurons.analysis.alignment import min_pvalue  # noqa: E402
from langneurons.analysis.compare import spontaneous_alignment  # noqa: E402
from langneurons.cli._tables import spontaneous  # noqa: E402
from langneurons.errors import ParameterError  # noqa: E402
from langneurons.store import create_store, open_store  # noqa: E402

from .conftest import make_counts, run_cli  # noqa: E402
from .test_stats_compare import alignment_runs  # noqa: E402

IDENTIFY: dict[str, Any] = {"top_rate": 0.05, "lam_widen": 10}
TRAINED = ["l0", "l1"]
SHAPE = sim.Shape(languages=6, layers=4, neurons=64, sequences=128)


def _runs(trained_shift: float, seed: int, shape: sim.Shape = SHAPE) -> tuple[Any, Any, Any]:
    """Base and aligned runs; the aligned truth moves 10% of neurons in l0 and l1 only."""
    truth = sim.make_truth(shape, 0)
    aligned = sim.shifted(truth, 0.1, trained_shift, 1, languages=(0, 1))
    base_run, aligned_run = sim.simulate_pair(truth, aligned, np.random.default_rng(seed))
    return truth, aligned, (base_run, aligned_run)


def _true_difference(truth: Any, aligned: Any) -> np.ndarray:
    """D of the population (no sampling error): the estimand."""
    out = spontaneous_alignment(
        sim.population(truth), sim.population(aligned), TRAINED, n_boot=0, params=P(**IDENTIFY)
    )
    return np.asarray(out["difference"].values)


# --------------------------------------------------------------------------- min p
def test_min_pvalue_counts_distinct_assignments() -> None:
    assert min_pvalue(6, 2, True, 15) == pytest.approx(1 / 15)
    assert min_pvalue(10, 3, True, 120) == pytest.approx(1 / 120)
    # an even split: the complement of the trained set gives -D, as extreme as D
    assert min_pvalue(4, 2, True, 6) == pytest.approx(2 / 6)
    assert min_pvalue(40, 3, False, 999) == pytest.approx(1 / 1000)


@pytest.mark.parametrize(("k", "expected"), [(6, 1 / 15), (4, 1 / 3)])
def test_min_pvalue_is_what_the_permutation_test_reaches(k: int, expected: float) -> None:
    """The most extreme labelling (only the trained languages move) reaches min_pvalue."""
    base, aligned, rate = alignment_runs(alike=False, k=k, trained=(0, 1))
    out = spontaneous_alignment(base, aligned, TRAINED, n_boot=0, params=P(top_rate=rate))
    assert out.attrs["n_assignments"] == math.comb(k, 2)
    assert out.attrs["min_pvalue"] == pytest.approx(expected)
    assert out["perm_pvalue"].sel(count="specific").item() == pytest.approx(expected)
    text = "\n".join(spontaneous(out))
    assert f"smallest attainable p {expected:.4g}" in text
    assert f"the permutation test cannot reach 0.05 with {k} languages" in text


def test_min_pvalue_below_005_is_not_flagged() -> None:
    base, aligned, rate = alignment_runs(alike=False)
    out = spontaneous_alignment(
        base, aligned, ["l0", "l1", "l2"], n_boot=0, params=P(top_rate=rate)
    )
    assert out.attrs["min_pvalue"] == pytest.approx(1 / 120)
    assert "cannot reach" not in "\n".join(spontaneous(out))


# --------------------------------------------------------------------------- the TOST
def test_equivalence_claimed_when_all_languages_change_alike() -> None:
    truth, aligned, (base_run, aligned_run) = _runs(0.0, seed=3)
    assert _true_difference(truth, aligned).tolist() == [0.0, 0.0]
    out = spontaneous_alignment(
        base_run,
        aligned_run,
        TRAINED,
        n_boot=100,
        seed=1,
        equivalence_margin=4.0,
        params=P(**IDENTIFY),
    )
    assert out.attrs["equivalence"] == "tost"
    assert out["equivalent"].values.tolist() == [True, True]
    p = out["equivalence_pvalue"].values
    assert (p < 0.05).all()
    np.testing.assert_array_equal(
        p, np.maximum(out["equivalence_pvalue_lower"], out["equivalence_pvalue_upper"])
    )
    # the 90% interval lies inside the margins
    assert (out["equivalence_low"].values > -4).all() and (out["equivalence_high"].values < 4).all()
    assert out.attrs["equivalence_verdict"] == {
        "specific": "equivalent within +-4",
        "related": "equivalent within +-4",
    }
    text = "\n".join(spontaneous(out))
    assert "equivalence (two one-sided tests, margin +-4, alpha 0.05)" in text
    assert "equivalent within +-4" in text
    assert "  caution: identified-count differences shrink toward 0 under sampling noise" in text


def test_equivalence_not_claimed_when_trained_languages_move_beyond_the_margin() -> None:
    truth, aligned, (base_run, aligned_run) = _runs(1.0, seed=3)
    true = _true_difference(truth, aligned)
    assert true[1] >= 6  # related: trained languages gain shared neurons, untrained do not
    out = spontaneous_alignment(
        base_run,
        aligned_run,
        TRAINED,
        n_boot=100,
        seed=1,
        equivalence_margin=2.0,
        params=P(**IDENTIFY),
    )
    assert not out["equivalent"].sel(count="related").item()
    assert out["equivalence_pvalue"].sel(count="related").item() > 0.5
    assert out.attrs["equivalence_verdict"]["related"] == "not shown equivalent within +-2"


@pytest.mark.slow
@pytest.mark.parametrize("sequences", [64, 128])
def test_tost_size_at_the_margin(sequences: int) -> None:
    """True D exactly at the margin: equivalence is claimed at most about alpha of the time
    where the result says valid (128 sequences per language); with 64 it is liberal (identified
    count differences shrink toward 0 under sampling noise: mean D 6.2-6.7 for a true 8, which
    the bootstrap does not see; 0.17 +- 0.045 over 70 replicates) and says descriptive.

    20 replicates (B = 100): with a true rate of 0.05 the Monte-Carlo SE is 0.049, so the
    bound 0.10 (two claims of 20) separates 0.03 from 0.17 only roughly.
    """
    shape = sim.Shape(languages=6, layers=4, neurons=64, sequences=sequences)
    truth = sim.make_truth(shape, 0)
    aligned = sim.shifted(truth, 0.1, 1.0, 1, languages=(0, 1))
    margin = float(abs(_true_difference(truth, aligned)[1]))
    assert margin == 8.0
    claimed, labels = [], set()
    for r in range(20):
        pair = sim.simulate_pair(truth, aligned, np.random.default_rng(100 + r))
        out = spontaneous_alignment(
            *pair, TRAINED, n_boot=100, seed=r, equivalence_margin=margin, params=P(**IDENTIFY)
        )
        claimed.append(bool(out["equivalent"].sel(count="related").item()))
        labels.add(out.attrs["equivalence_inference"])
    if sequences >= 128:
        assert labels == {"valid"}
        assert np.mean(claimed) <= 0.10
    else:
        assert labels == {"descriptive"}
        assert np.mean(claimed) > 0.10  # the label is earned


def test_few_sequences_make_the_equivalence_test_descriptive() -> None:
    shape = sim.Shape(languages=6, layers=4, neurons=64, sequences=32, responses=2)
    truth = sim.make_truth(shape, 0)
    pair = sim.simulate_pair(truth, truth, np.random.default_rng(1))
    out = spontaneous_alignment(
        *pair, TRAINED, n_boot=5, cluster="item", equivalence_margin=4.0, params=P(**IDENTIFY)
    )
    assert out.attrs["equivalence_inference"] == "descriptive"
    reason = out.attrs["equivalence_inference_reason"]
    assert reason.startswith("the smallest language has 16 items, fewer than 128: ")
    text = "\n".join(spontaneous(out))
    assert "  equivalence descriptive: the smallest language has 16 items" in text
    assert "caution:" not in text


# --------------------------------------------------------------------------- not run / n.a.
def test_no_margin_no_test_and_the_output_says_how_to_ask() -> None:
    base, aligned, rate = alignment_runs(alike=True, k=6, trained=(0, 1))
    out = spontaneous_alignment(base, aligned, TRAINED, n_boot=5, params=P(top_rate=rate))
    assert out.attrs["equivalence"] == "not run"
    assert "equivalence_pvalue" not in out and "equivalent" not in out
    text = "\n".join(spontaneous(out))
    assert "equivalence not run: no equivalence test without a margin; give " in text
    assert "--equivalence-margin DELTA" in text
    assert "a large p is not evidence that untrained languages change like trained ones" in text


def test_without_bootstrap_the_test_is_descriptive() -> None:
    base, aligned, rate = alignment_runs(alike=True, k=6, trained=(0, 1))
    out = spontaneous_alignment(
        base, aligned, TRAINED, n_boot=0, params=P(top_rate=rate), equivalence_margin=1.0
    )
    assert out.attrs["equivalence"] == "not available"
    assert out.attrs["equivalence_margin"] == 1.0
    assert "equivalence_pvalue" not in out
    text = "\n".join(spontaneous(out))
    assert "equivalence not available: descriptive: the equivalence test needs bootstrap " in text
    assert "TOST p" not in text


# --------------------------------------------------------------------------- bad inputs
MARGIN_MESSAGE = (
    r"^equivalence_margin must be a positive number of neurons \(the largest difference of "
    r"mean change, trained minus untrained, that counts as equivalent\), got {}$"
)


@pytest.mark.parametrize(
    ("margin", "shown"),
    [(0, "0"), (-1.5, r"-1\.5"), (math.nan, "nan"), (math.inf, "inf"), ("2", "'2'"),
     (True, "True")],
)  # fmt: skip
def test_bad_margin(margin: object, shown: str) -> None:
    base, aligned, rate = alignment_runs(alike=True, k=4, trained=(0, 1))
    with pytest.raises(ParameterError, match=MARGIN_MESSAGE.format(shown)):
        spontaneous_alignment(
            base, aligned, TRAINED, n_boot=0, params=P(top_rate=rate), equivalence_margin=margin
        )


def test_bad_alpha() -> None:
    base, aligned, rate = alignment_runs(alike=True, k=4, trained=(0, 1))
    with pytest.raises(ParameterError, match=r"^equivalence_alpha must be below 0\.5, got 0\.5$"):
        spontaneous_alignment(base, aligned, TRAINED, n_boot=0, equivalence_alpha=0.5)
    with pytest.raises(
        ParameterError, match=r"^equivalence_alpha must be a number in \(0, 1\), got 0$"
    ):
        spontaneous_alignment(base, aligned, TRAINED, n_boot=0, equivalence_alpha=0)


# --------------------------------------------------------------------------- the CLI
LANGS = ["en", "de", "fr", "zh"]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "s.zarr"
    store = create_store(path)
    for run, seed in (("m/base", 2), ("m/aligned", 3)):
        counts = make_counts(LANGS, layers=4, neurons=30, seed=seed, sequences=6)
        store.create_run(run, n_layers=4, n_neurons=30, sequences=True, counts=counts)
    return path


def _compare(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        capsys, "compare", "runs", path, "--base", "m/base", "--aligned", "m/aligned",
        "--top-rate", "0.1", "--n-boot", "5", *extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "--equivalence-margin must be a positive number of neurons, got 'abc'"),
        ("0", "--equivalence-margin must be a positive number of neurons, got '0'"),
        ("-2", "--equivalence-margin must be a positive number of neurons, got '-2'"),
        ("nan", "--equivalence-margin must be a positive number of neurons, got 'nan'"),
    ],
)
def test_cli_bad_margin_exits_nonzero_and_saves_nothing(
    store_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    code, out, err = _compare(
        capsys, store_path, "--trained-languages", "en,de", "--equivalence-margin", value
    )
    assert code != 0
    assert message in err
    assert len([x for x in err.splitlines() if x.strip()]) == 1
    assert open_store(store_path).results("m/aligned", "compare") == []


def test_cli_margin_needs_trained_languages(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _compare(capsys, store_path, "--equivalence-margin", "2")
    assert code != 0
    assert "--equivalence-margin tests spontaneous alignment; give --trained-languages too" in err
    assert open_store(store_path).results("m/aligned", "compare") == []


def test_cli_headline_and_saved_result(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _compare(capsys, store_path, "--trained-languages", "en,de")
    assert code == 0, err
    assert "smallest attainable p 0.3333" in out
    assert "the permutation test cannot reach 0.05 with 4 languages" in out
    assert "equivalence not run" in out and "--equivalence-margin DELTA" in out
    code, out, err = _compare(
        capsys, store_path, "--trained-languages", "en,de", "--equivalence-margin", "3",
        "--name", "eq",
    )  # fmt: skip
    assert code == 0, err
    assert "equivalence (two one-sided tests, margin +-3, alpha 0.05)" in out
    assert "TOST p" in out
    saved = open_store(store_path).open_result("m/aligned", "compare", "eq/spontaneous")
    assert isinstance(saved, xr.Dataset)
    assert saved.attrs["equivalence_margin"] == 3.0 and "equivalence_pvalue" in saved
