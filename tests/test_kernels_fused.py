"""The fused, blocked ternary kernel equals the formula computed over all neurons at once."""

from __future__ import annotations

import math

import numpy as np
import pytest

from langneurons.analysis import _kernels as kern


def reference_parts(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rule 1's H and max P, one whole-array step per operation (the unblocked formula)."""
    rows = np.ascontiguousarray(np.moveaxis(p, -1, 0).reshape(p.shape[-1], -1))
    k, m = rows.shape
    s = np.zeros(m)
    for row in rows:
        s += row
    q = np.where(s > 0, rows / np.where(s > 0, s, 1.0), 1.0 / k)
    q = np.maximum(q, kern.Q_FLOOR)
    total = np.zeros(m)
    for row in q:
        total += row
    acc = np.zeros(m)
    for row in q:
        qk = row / total
        acc += qk * np.log(qk + kern.LOG_OFFSET)
    h = -acc / math.log(k)
    return h.reshape(p.shape[:-1]), rows.max(axis=0).reshape(p.shape[:-1])


@pytest.mark.parametrize("m", [1, 7, kern.BLOCK - 1, kern.BLOCK, 2 * kern.BLOCK + 5])
def test_fused_equals_reference_bit_for_bit(m: int) -> None:
    rng = np.random.default_rng(m)
    p = rng.beta(1.5, 6.0, size=(m, 5))
    p[rng.random(m) < 0.05] = 0.0  # silent neurons: uniform shares, in some blocks only
    p[rng.random((m, 5)) < 0.1] = 0.0
    h, maxp, above = kern.ternary_fused(p, 0.3)
    ref_h, ref_max = reference_parts(p)
    np.testing.assert_array_equal(h, ref_h)
    np.testing.assert_array_equal(maxp, ref_max)
    np.testing.assert_array_equal(above, (p > 0.3).sum(axis=-1))
    h2, max2 = kern.ternary_parts(p)
    np.testing.assert_array_equal(h2, ref_h)
    np.testing.assert_array_equal(max2, ref_max)


@pytest.mark.parametrize("k", [2, 127, 128, 300])
def test_count_above_tau_for_any_number_of_languages(k: int) -> None:
    """The count above tau is kept in int8 per block while K fits in it, in int64 beyond."""
    p = np.random.default_rng(k).random((kern.BLOCK + 3, k))
    h, maxp, above = kern.ternary_fused(p, 0.5)
    assert above is not None and above.dtype == np.int64
    np.testing.assert_array_equal(above, (p > 0.5).sum(axis=-1))
    np.testing.assert_array_equal(h, reference_parts(p)[0])


def test_fused_keeps_the_leading_shape() -> None:
    p = np.random.default_rng(0).random((3, 4, 6))
    h, maxp, above = kern.ternary_fused(p, None)
    assert h.shape == maxp.shape == (3, 4) and above is None


@pytest.mark.parametrize("seed", range(6))
def test_lambda_condition_equals_selecting(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = 500
    # few distinct values: many ties, at the k-th place too
    h = rng.integers(0, 6, size=m).astype(np.float64) / 5
    maxp = rng.integers(0, 4, size=m).astype(np.float64) / 3
    all_k = rng.random(m) < (0.0 if seed == 0 else 0.05)
    for k in (0, 1, 7, 60, 250, m - 1, m):
        holds = kern.lambda_condition(h, maxp, all_k, k, 0.3)
        for lam in (0.0, 0.05, 0.2, 1.0, 3.0):
            score = kern.ternary_score(h, maxp, lam, 0.3)
            expected = not bool(kern.select_smallest(score, k)[all_k].any())
            assert holds(lam) == expected, (k, lam)


@pytest.mark.parametrize("seed", range(4))
def test_quantile_thresholds_equal_a_full_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = 70_001 + seed * 9_999
    flat = rng.beta(1.5, 6.0, size=m)
    if seed == 1:
        flat[rng.random(m) < 0.5] = 0.0  # heavy ties at the bottom
    if seed == 2:
        flat = np.round(flat, 2)  # ties everywhere
    ordered = np.sort(flat)
    qs = [0.5, 0.9, 0.95, 0.999, 1.0]
    got = kern.quantile_thresholds(flat, qs)
    assert got == [float(ordered[kern.quantile_rank(m, q) - 1]) for q in qs]
    with_nan = flat.copy()
    with_nan[::7] = np.nan  # the fallback keeps np.partition's order (NaN last)
    expected = np.partition(with_nan, kern.quantile_rank(m, 0.95) - 1)
    got_nan = kern.quantile_thresholds(with_nan, [0.95])[0]
    np.testing.assert_equal(got_nan, expected[kern.quantile_rank(m, 0.95) - 1])
    one_nan = flat.copy()
    one_nan[1] = np.nan  # outside the strided sample: only the values kept show it
    expected = np.partition(one_nan, kern.quantile_rank(m, 0.95) - 1)
    got_one = kern.quantile_thresholds(one_nan, [0.95])[0]
    np.testing.assert_equal(got_one, expected[kern.quantile_rank(m, 0.95) - 1])
