"""Numpy kernels of the identification rules (private; see ``identify.py`` for the contract).

Per-neuron kernels take activation probabilities ``p`` with the language on the LAST axis,
``[..., K]`` (e.g. ``[layer, neuron, language]`` or a flat ``[M, K]``), and return arrays shaped
``p.shape[:-1]``. Internally they work on C-contiguous language rows ``[K, M]`` (a free view when
``p`` is a transposed language-major array, as ``identify`` passes it), so every step is one
vectorised operation over all M neurons and the only Python loops run over the K languages.

Arithmetic is float64 and follows the order of the formulas in the normative spec
(``shared/spec/identification.md``) operation by operation, so scores equal the reference bit for
bit and selections match exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

#: Neuron type codes; ``TYPE_NAMES[code]`` is the name stored in results.
NONE, UNASSIGNED, SPECIFIC, RELATED, GENERAL = 0, 1, 2, 3, 4
TYPE_NAMES: tuple[str, ...] = ("none", "unassigned", "specific", "related", "general")

Q_FLOOR = 1e-12  # rule 1: shares are clamped below at this value, then renormalised
LOG_OFFSET = 1e-30  # rule 1: entropy uses log(q + LOG_OFFSET)


def language_rows(p: ArrayLike) -> FloatArray:
    """Return ``p[..., K]`` as C-contiguous float64 rows ``[K, M]`` (copies only when needed)."""
    arr = np.asarray(p, dtype=np.float64)
    k = arr.shape[-1]
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0).reshape(k, -1))


def quantile_rank(m: int, q: float) -> int:
    """1-indexed rank of ``tau(q)`` among ``m`` values: ``round(m * q)`` (half to even)."""
    return round(m * q)


def quantile_thresholds(p: ArrayLike, qs: Sequence[float]) -> list[float]:
    """``tau(q)`` for each ``q``: the value at 1-indexed rank ``round(M*q)`` of all of ``p`` sorted.

    One ``np.partition`` over all M = L*N*K values serves every requested quantile.
    Raises ``ValueError`` when a rank falls outside ``1..M`` (callers check this first).
    """
    flat = np.asarray(p, dtype=np.float64).reshape(-1)
    m = flat.size
    ranks = [quantile_rank(m, q) for q in qs]
    for q, r in zip(qs, ranks, strict=True):
        if not 1 <= r <= m:
            raise ValueError(f"quantile {q} of {m} values has rank {r}, outside 1..{m}")
    return [float(v) for v in _values_at_ranks(flat, ranks)]


def _values_at_ranks(flat: FloatArray, ranks: list[int]) -> list[np.float64]:
    """The values at 1-indexed ``ranks`` of ``flat`` sorted, as ``np.partition`` orders them.

    Without copying all of ``flat``: a strided sample gives a bound ``low`` below the smallest
    rank; with ``b = #{flat < low}`` (one comparison pass, which also picks the values kept),
    the value at rank ``r`` is the one at rank ``r - b`` among the few values not below
    ``low``, which alone are copied and partitioned. Exact; falls back to partitioning a full
    copy when the bound misses or ``flat`` holds NaN (a NaN is never below ``low``, so it
    would be among the values kept).
    """
    m = flat.size
    first = min(ranks)
    if m >= 1 << 16 and first > 1:
        step = 64
        sample = flat[::step].copy()
        ns = sample.size
        at = int(ns * (first - 1) / m) - int(6 * math.sqrt(ns)) - 1
        if at >= 0:
            low = np.partition(sample, at)[at]
            below_low = flat < low
            below = int(np.count_nonzero(below_low))
            if below < first:
                kept = flat[~below_low]
                if not np.isnan(kept).any():
                    kth = sorted({r - 1 - below for r in ranks})
                    part = np.partition(kept, kth)
                    return [part[r - 1 - below] for r in ranks]
    kth = sorted({r - 1 for r in ranks})
    part = np.partition(flat, kth)
    return [part[r - 1] for r in ranks]


def count_above(p: ArrayLike, tau: float) -> IntArray:
    """Number of languages with ``P > tau`` per neuron (strict), shaped ``p.shape[:-1]``."""
    arr = np.asarray(p)
    rows = language_rows(arr)
    out = np.zeros(rows.shape[1], dtype=np.int64)
    for row in rows:
        out += row > tau
    return out.reshape(arr.shape[:-1])


def norm_max(k: int) -> float:
    """Rule 1 normaliser ``(sum_{j=1..K} 1/j) / K``."""
    return sum(1 / j for j in range(1, k + 1)) / k


#: Neurons per block of the fused kernels: the K rows of a block and their shares stay in cache
#: (16384 x K float64 values; measured fastest of 2**11..2**16 at K = 10 in benchmarks/identify.py).
BLOCK = 1 << 14


def ternary_parts(p: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Rule 1 lambda-free parts per neuron: normalised entropy ``H`` and ``max_k P``.

    ``s = sum_k P``; ``q = P / s`` (``1/K`` everywhere where ``s == 0``); ``q = max(q, 1e-12)``;
    ``q = q / sum_k q``; ``H = -sum_k q * log(q + 1e-30) / log(K)``. Sums run over k in order.
    """
    h, maxp, _ = ternary_fused(p, None)
    return h, maxp


def ternary_fused(
    p: ArrayLike, tau: float | None
) -> tuple[FloatArray, FloatArray, IntArray | None]:
    """:func:`ternary_parts` and, when ``tau`` is given, :func:`count_above` in one pass.

    The neurons are taken in blocks of :data:`BLOCK`: every step of the formula runs over one
    block's K rows while they are in cache, instead of K passes over all neurons per step. Each
    value goes through exactly the operations of the formula, in the same order, so the results
    equal the unblocked formula bit for bit.
    """
    arr = np.asarray(p)
    rows = language_rows(arr)
    k, m = rows.shape
    h = np.empty(m)
    maxp = np.empty(m)
    above = np.zeros(m, dtype=np.int64) if tau is not None else None
    b = max(1, min(BLOCK, m))
    # a block's count above tau in int8 (cheaper to add booleans to) when K fits in it
    small = np.empty(b, dtype=np.int8) if k <= np.iinfo(np.int8).max else None
    s, total, term, acc = (np.empty(b) for _ in range(4))
    q = np.empty((k, b))
    positive = np.empty(b, dtype=np.bool_)
    hit = np.empty(b, dtype=np.bool_)
    uniform = 1.0 / k
    log_k = math.log(k)
    for start in range(0, m, b):
        stop = min(start + b, m)
        n = stop - start
        block = rows[:, start:stop]
        s_, total_, term_, acc_ = s[:n], total[:n], term[:n], acc[:n]
        positive_, hit_ = positive[:n], hit[:n]
        maxp_ = maxp[start:stop]
        np.copyto(s_, block[0])
        np.copyto(maxp_, block[0])
        for row in block[1:]:
            s_ += row
            np.maximum(maxp_, row, out=maxp_)
        if above is not None and tau is not None:
            above_ = above[start:stop]
            count = above_ if small is None else small[:n]
            np.greater(block[0], tau, out=hit_)
            np.copyto(count, hit_)
            for row in block[1:]:
                np.greater(row, tau, out=hit_)
                np.add(count, hit_, out=count, casting="unsafe")
            if small is not None:
                np.copyto(above_, count)
        np.greater(s_, 0, out=positive_)
        everywhere = bool(positive_.all())
        for j in range(k):
            qj = q[j, :n]
            if everywhere:
                np.divide(block[j], s_, out=qj)
            else:
                qj.fill(uniform)
                np.divide(block[j], s_, out=qj, where=positive_)
            np.maximum(qj, Q_FLOOR, out=qj)
            if j == 0:
                np.copyto(total_, qj)
            else:
                total_ += qj
        for j in range(k):
            qj = q[j, :n]
            qj /= total_
            np.add(qj, LOG_OFFSET, out=term_)
            np.log(term_, out=term_)
            term_ *= qj
            if j == 0:
                np.copyto(acc_, term_)
            else:
                acc_ += term_
        np.negative(acc_, out=acc_)
        np.divide(acc_, log_k, out=h[start:stop])
    shape = arr.shape[:-1]
    return (
        h.reshape(shape),
        maxp.reshape(shape),
        None if above is None else above.reshape(shape),
    )


def ternary_score(
    h: FloatArray,
    maxp: FloatArray,
    lam: float,
    normaliser: float,
    out: FloatArray | None = None,
) -> FloatArray:
    """Rule 1 score ``H - lam * maxP / norm_max`` (evaluated in that order); lower = more bound."""
    if out is None:
        out = np.empty_like(h)
    np.multiply(maxp, lam, out=out)
    np.divide(out, normaliser, out=out)
    np.subtract(h, out, out=out)
    return out


def lape_entropy(p: ArrayLike, tau_filter: float) -> FloatArray:
    """Rule 2 entropy ``E = -sum_{q>0} q * log(q)`` with ``q = P / sum_k P`` (0 where the sum is 0).

    Neurons with no language above ``tau_filter`` (strict) get ``E = +inf``.
    """
    arr = np.asarray(p)
    rows = language_rows(arr)
    m = rows.shape[1]
    s = np.zeros(m)
    for row in rows:
        s += row
    positive = s > 0
    q = np.empty(m)
    logq = np.empty(m)
    acc = np.zeros(m)
    kept = np.zeros(m, dtype=np.bool_)
    for row in rows:
        q.fill(0.0)
        np.divide(row, s, out=q, where=positive)
        logq.fill(0.0)
        np.log(q, out=logq, where=q > 0)
        logq *= q
        acc += logq
        kept |= row > tau_filter
    entropy = -acc
    entropy[~kept] = np.inf
    return entropy.reshape(arr.shape[:-1])


def select_smallest(score: FloatArray, k: int) -> BoolArray:
    """Mask of the ``k`` smallest scores; ties go to the lowest C-order (layer-major) flat index.

    Equivalent to taking the first ``k`` of a stable ascending argsort, in O(M): one
    ``np.partition`` finds the k-th value ``v``; everything strictly below ``v`` is selected and the
    remaining places go to the lowest flat indices whose score equals ``v``.
    """
    flat = score.reshape(-1)
    n = flat.size
    if k <= 0:
        return np.zeros(score.shape, dtype=np.bool_)
    if k >= n:
        return np.ones(score.shape, dtype=np.bool_)
    v = np.partition(flat, k - 1)[k - 1]
    chosen = flat < v
    missing = k - int(np.count_nonzero(chosen))
    if missing > 0:
        chosen[np.flatnonzero(flat == v)[:missing]] = True
    return chosen.reshape(score.shape)


def lambda_condition(
    h: FloatArray,
    maxp: FloatArray,
    all_k: BoolArray,
    k: int,
    normaliser: float,
) -> Callable[[float], bool]:
    """The automatic-lambda condition ``ok(lam)``, its arrays flattened and its buffer made once.

    ``ok(lam)``: none of the ``k`` lowest-score neurons is above tau in all K languages
    (``all_k``). Equal to ``not select_smallest(score, k)[all_k].any()`` without selecting:
    the watched neuron first in (score, index) order has rank ``#{score < s} + #{score == s
    before it}``, and none is selected exactly when that rank is at least ``k`` (one comparison
    pass instead of a partition per lambda).
    """
    flat_h = h.reshape(-1)
    flat_maxp = maxp.reshape(-1)
    watched = np.flatnonzero(all_k.reshape(-1))
    buf = np.empty_like(flat_h)
    n = flat_h.size

    def ok(lam: float) -> bool:
        if k <= 0 or watched.size == 0:
            return True
        if k >= n:
            return False
        score = ternary_score(flat_h, flat_maxp, lam, normaliser, out=buf)
        mine = score[watched]
        first = int(np.argmin(mine))  # the lowest index among equal minima; NaN if any is NaN
        s = mine[first]
        if np.isnan(s):
            return not bool(select_smallest(score, k)[watched].any())
        rank = np.count_nonzero(score < s)
        rank += np.count_nonzero(score[: watched[first]] == s)
        return bool(rank >= k)

    return ok


def search_lambda(
    holds: Callable[[float], bool], lo: float, hi: float, eps: float
) -> tuple[float | None, list[tuple[float, bool]]]:
    """Rule 1 automatic lambda: the spec's bisection, returning ``(best, trace)``.

    ``holds`` is :func:`lambda_condition`. ``hi`` being ok does not stop the loop (reference
    behaviour). ``best`` is None when no evaluated lambda is ok. ``trace`` lists ``(lam, ok)`` in
    evaluation order.
    """
    trace: list[tuple[float, bool]] = []

    def ok(lam: float) -> bool:
        good = holds(lam)
        trace.append((lam, good))
        return good

    best: float | None = None
    if ok(lo):
        best = lo
    if ok(hi):
        best = hi
    while hi - lo > eps:
        mid = (lo + hi) / 2
        if ok(mid):
            best, lo = mid, mid
        else:
            hi = mid
    return best, trace


def assign_rows(rows: FloatArray, selected: BoolArray, tau: float) -> BoolArray:
    """Per-language masks ``[K, M]``: selected neurons with ``P > tau``, from ``language_rows``."""
    flat_sel = selected.reshape(-1)
    out = np.empty(rows.shape, dtype=np.bool_)
    for row, dest in zip(rows, out, strict=True):
        np.greater(row, tau, out=dest)
        dest &= flat_sel
    return out


def classify(n_above: IntArray, selected: BoolArray, k: int) -> NDArray[np.int8]:
    """Type code per neuron from ``m`` (languages above tau) and selection, for ``k >= 2``.

    Not selected: NONE. Selected: m == 0 UNASSIGNED, m == 1 SPECIFIC, 2 <= m <= K-1 RELATED,
    m == K GENERAL.
    """
    table = np.full(k + 1, RELATED, dtype=np.int8)
    table[0], table[1], table[k] = UNASSIGNED, SPECIFIC, GENERAL
    return np.where(selected, table[n_above], np.int8(NONE)).astype(np.int8)


def histogram(values: IntArray, k: int) -> list[int]:
    """Counts of each value 0..K, as a list of Python ints of length K + 1."""
    return [int(c) for c in np.bincount(values.reshape(-1), minlength=k + 1)]


# --------------------------------------------------------------------------- bootstrap summaries


def percentile_interval(boot: NDArray[np.float64], ci: float) -> tuple[NDArray[Any], NDArray[Any]]:
    """Percentile interval over axis 0, ignoring failed (NaN) replicates; NaN when none."""
    shape = boot.shape[1:]
    valid = ~np.isnan(boot).all(axis=0) if boot.shape[0] else np.zeros(shape, dtype=bool)
    low = np.full(shape, np.nan)
    high = np.full(shape, np.nan)
    if valid.any():
        q = np.nanpercentile(boot[:, valid], [50 * (1 - ci), 50 * (1 + ci)], axis=0)
        low[valid], high[valid] = q[0], q[1]
    return low, high


def centred_pvalue(boot: NDArray[np.float64], point: NDArray[Any]) -> NDArray[np.float64]:
    """Two-sided bootstrap p-value of ``point == 0`` by centring (Hall & Wilson 1991).

    ``p = (1 + #{|t*_b - t| >= |t|}) / (1 + B)`` over the B valid replicates; NaN when B = 0.
    """
    point = np.asarray(point, dtype=np.float64)
    ok = ~np.isnan(boot)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore"):
        extreme = ((np.abs(boot - point) >= np.abs(point) - 1e-12) & ok).sum(axis=0)
    return np.where(n > 0, (1.0 + extreme) / (1.0 + n), np.nan)


def bootstrap_se(boot: NDArray[np.float64]) -> NDArray[np.float64]:
    """Bootstrap standard error (sample SD over valid replicates); NaN with fewer than 2."""
    ok = ~np.isnan(boot)
    n = ok.sum(axis=0)
    filled = np.where(ok, boot, 0.0)
    mean = filled.sum(axis=0) / np.maximum(n, 1)
    ss = (np.where(ok, boot - mean, 0.0) ** 2).sum(axis=0)
    return np.where(n > 1, np.sqrt(ss / np.maximum(n - 1, 1)), np.nan)


def upper_tail(
    effect: FloatArray, var: FloatArray, df: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """``z = effect / sqrt(var)`` and the one-sided p-value: ``1 - Phi(z)``, or the Student t
    upper tail with ``df`` degrees of freedom when given (``effect``: the difference minus the
    margin).

    Where the variance is 0 the data cannot vary under the model: p = 0 if the effect is
    positive, else 1 (z is +-inf or 0 accordingly).
    """
    from scipy import special

    with np.errstate(divide="ignore", invalid="ignore"):
        z = effect / np.sqrt(var)
    degenerate = ~(var > 0)
    z[degenerate] = np.where(effect[degenerate] > 0, np.inf, 0.0)
    if df is None:
        p = special.ndtr(-z)
    else:
        p = special.stdtr(np.where(degenerate, 1.0, df), -z)
    p[degenerate] = np.where(effect[degenerate] > 0, 0.0, 1.0)
    return z, p


def conditional_tail(x: FloatArray, n: FloatArray, pooled: FloatArray, deff: float) -> FloatArray:
    """Upper tail of language k's count given the neuron's total, on effective counts.

    Given the total ``X`` over languages, ``x_k`` is hypergeometric under H0 (mean ``X pi``,
    variance ``X pi (1 - pi)(1 - p)`` with ``pi = n_k / N`` and the pooled ``p``), its
    variance inflated by ``D``. Dividing counts by ``D (1 - p)`` matches both moments with a
    binomial ``Bin(X', pi)``; the tail ``P(Bin(X', pi) >= x_k') = I_pi(x_k', X' - x_k' + 1)``
    (the regularised incomplete beta, continuous in the effective counts) keeps the skew of
    sparse counts that the normal tail ignores. ``x`` on ``[language, ...]``; 1 where the
    neuron never fires in the language or always fires.
    """
    from scipy import special  # imported where used: scipy costs start-up time

    scale = deff * (1.0 - pooled)  # [...]
    pi = (n / n.sum())[(slice(None),) + (None,) * (x.ndim - 1)]
    total = x.sum(axis=0)
    live = (x > 0) & (scale > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(live, x / scale, 1.0)
        rest = np.where(live, (total - x) / scale + 1.0, 1.0)
        p = np.where(live, special.betainc(k, rest, np.broadcast_to(pi, x.shape)), 1.0)
    return np.asarray(p, dtype=np.float64)
