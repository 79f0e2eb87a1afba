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


def test_fused_keeps_the_leading_shape() -> None:
    p = np.random.default_rng(0).random((3, 4, 6))
    h, maxp, above = kern.ternary_fused(p, None)
    assert h.shape == maxp.shape == (3, 4) and above is None
