"""Statistics of accuracy ablations: intervals, the paired item test, controls, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from langneurons.analysis.accuracy import accuracy_effects, paired_drop
from langneurons.errors import InputFormatError, ParameterError

from ._accuracy_data import accuracy_ablation as _ablation


# --------------------------------------------------------------------------- statistics
def test_paired_drop_matches_mcnemar_and_agresti_min() -> None:
    base = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
    after = np.array([0, 0, 0, 1, 1, 1, 0, 1], bool)
    drop, lo, hi, p = paired_drop(base, after, 0.05)
    assert drop == pytest.approx(0.25)
    assert p == pytest.approx(5 / 16)  # b = 3 lost, c = 1 gained: P(Bin(4, 1/2) >= 3)
    assert lo < drop < hi
    # Agresti-Min: (3.5 - 1.5) / 10 +- 1.96 sqrt(5 - 2^2 / 10) / 10
    assert (lo, hi) == pytest.approx((0.2 - 0.420375, 0.2 + 0.420375), abs=1e-5)


def test_a_planted_own_language_drop_is_found_and_controls_bound_p() -> None:
    langs, n, c = ["en", "de"], 20, 19
    base = np.ones(2 * n, bool)
    correct = np.ones((1, 2, c + 1, 2 * n), bool)
    correct[0, 0, 0, :n] = False  # en's set off: every en item wrong
    correct[0, 1, 0, n:] = False
    ef = accuracy_effects(_ablation(correct, base, langs))
    assert ef["drop"].sel(panel="specific").values.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert ef["pvalue_item"].values[0, 0, 0] == pytest.approx(0.5**n)
    assert ef["dominance"].values[0].tolist() == [1.0, 1.0]
    assert ef["pvalue_control"].values[0].tolist() == pytest.approx([1 / 20, 1 / 20])
    assert ef.attrs["min_pvalue_control"] == pytest.approx(1 / 20)
    assert ef.attrs["inference"] == "valid"


def test_few_controls_are_labelled_descriptive_with_the_smallest_p() -> None:
    correct = np.ones((1, 2, 2, 8), bool)
    ef = accuracy_effects(_ablation(correct, np.ones(8, bool), ["en", "de"]))
    assert ef.attrs["inference"] == "descriptive"
    assert ef.attrs["min_pvalue_control"] == 0.5
    assert "smallest attainable control p is 0.5 > alpha 0.05" in ef.attrs["inference_reason"]


def test_not_an_accuracy_ablation_is_refused() -> None:
    ds = _ablation(np.ones((1, 2, 2, 4), bool), np.ones(4, bool), ["en", "de"])
    with pytest.raises(InputFormatError, match="not an accuracy ablation"):
        accuracy_effects(ds.assign_attrs(kind=None))
    with pytest.raises(ParameterError, match="alpha must be in"):
        accuracy_effects(ds, alpha=1.5)
