"""The fast inverse of the regularised incomplete Beta function behind the cluster interval of
``activation_probability`` (Korn-Graubard: Clopper-Pearson bounds at an effective sample size)
matches ``scipy.special.betaincinv`` to 1e-12 relative over a dense grid of events ``x`` and
trials ``n`` (fractional, as effective sample sizes are), from ``0 < x < 1`` to ``n = 1e7``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from langneurons.analysis import uncertainty


def _grid() -> tuple[np.ndarray, np.ndarray]:
    xs = np.concatenate(
        [np.geomspace(1e-6, 1.0, 40), np.linspace(1.0, 20.0, 120), np.geomspace(20.0, 1e7, 300)]
    )
    ns = np.geomspace(1.0, 1e7, 400)
    x, n = (v.ravel() for v in np.meshgrid(xs, ns))
    near = n - np.geomspace(1e-6, 30.0, n.size)  # events close to the trials (p near 1)
    x, n = np.concatenate([x, near[near > 0]]), np.concatenate([n, n[near > 0]])
    keep = x < n
    return x[keep], n[keep]


@pytest.mark.parametrize("level", [0.975, 0.995])
def test_bounds_match_scipy(level: float) -> None:
    x, n = _grid()
    for a, b, q in ((x, n - x + 1.0, 1.0 - level), (x + 1.0, n - x, level)):
        got = uncertainty._beta_quantile(a, b, q)
        ref = special.betaincinv(a, b, q)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        ok = ~np.isnan(ref)
        np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-12, atol=0)
        fast = ok & (a >= 5) & (b >= 5)
        assert (got[fast] != ref[fast]).any()  # the Halley path ran (scipy elsewhere)


def test_edges_and_broadcasting() -> None:
    a = np.array([[0.5, 5.0, 1e6, np.nan, 7.0]])
    b = np.array([[3.0], [5.0], [2e6]])
    got = uncertainty._beta_quantile(a, b, 0.025)
    ref = special.betaincinv(a, b, 0.025)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)  # NaN where scipy gives NaN
