"""Uncertainty of activation probabilities: confidence intervals and standard errors.

The activation probability of neuron ``n`` in layer ``l`` for language ``k`` is the ratio
estimator :math:`\\hat P_{l,n,k} = A_{l,n,k} / T_k` with :math:`A = \\sum_i a_i` (tokens on which
the neuron fired) and :math:`T = \\sum_i t_i` (tokens counted), summed over the sequences ``i`` of
language ``k``. Tokens of one sequence are not independent (topic, register and length are shared),
so the *sequence* is the sampled unit whenever per-sequence counts (``seq_n_active``) exist:

- ``"cluster"``: cluster-robust delta-method (linearisation) variance of a ratio estimator;
- ``"bootstrap"``: percentile intervals from resampling sequences with replacement within
  each language (a stratified cluster bootstrap);
- ``"wilson"``: Wilson score intervals on the token counts, which assume independent tokens
  (the only choice without per-sequence counts): ``attrs["inference"] == "descriptive"``
  unless a design effect is stated.

When an item (``seq_id``) has several sequences in a language, the item is the sampled unit
(``cluster="auto"``).

The sequence design, the per-language cluster sums, the chunked reader and the replicate
weights are the resampling engine's (:mod:`~langneurons.analysis._resample`).

Why this module is long: it holds the three interval methods of one call and their shared
checks; the cluster one keeps its numpy kernel (streamed per language in threads, or one dask
task per language) and its fast exact Beta quantile beside the formula they implement.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from numbers import Real
from typing import Any, Literal, get_args

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._resample import (
    Design,
    LanguageSums,
    Resampler,
    choose_cluster,
    cluster_sums,
    column_step,
    contiguous,
    design,
    draw_weights,
    exact_dtype,
    has_sequences,
    item_sums,
    repeated_items,
    replicate_seeds,
    seq_tokens,
    streamed_sums,
    summed,
)
from langneurons.analysis._validate import (
    as_labels,
    check_choice,
    check_counts,
    check_dataset,
    check_int,
    check_open_unit,
    check_tokens,
    require_roles,
    require_variable,
    run_languages,
    stored_roles,
)
from langneurons.errors import ParameterError
from langneurons.names import LANGUAGE, LAYER, N_ACTIVE, N_TOKENS, NEURON, ROLE

log = logging.getLogger(__name__)

#: Threads computing the intervals (scipy's inverse Beta releases the GIL).
THREADS = max(1, os.cpu_count() or 1)
#: Pieces of one language's cells, computed in separate tasks (no thread idles at the end).
BOUND_PIECES = 4
#: The largest last Halley step (relative) that :func:`_beta_quantile` accepts.
HALLEY_TOLERANCE = 1e-12

ProbabilityMethod = Literal["auto", "bootstrap", "cluster", "wilson"]
Role = Literal["response", "prompt", "all"]
ClusterChoice = Literal["auto", "item", "sequence"]

#: The ``assumption`` attribute of results that treat every token as an independent draw.
INDEPENDENT_TOKENS = "independent tokens"
#: The ``assumption`` attribute of results that treat sequences as the sampled unit.
INDEPENDENT_SEQUENCES = (
    "independent sequences within each language (tokens of one sequence may be dependent)"
)


def check_count_run(run: object, role: str, *, min_languages: int = 1) -> list[str]:
    """Check the per-language counts structurally (no data is read); return the languages."""
    ds = check_dataset(run, "run")
    require_variable(ds, N_ACTIVE, (LANGUAGE, ROLE, LAYER, NEURON))
    require_variable(ds, N_TOKENS, (LANGUAGE, ROLE))
    require_roles(ds, stored_roles(role))
    languages = run_languages(ds)
    if len(languages) < min_languages:
        raise ParameterError(
            f"this needs at least {min_languages} languages, the run has {len(languages)}"
        )
    if ds.sizes[LAYER] * ds.sizes[NEURON] == 0:
        raise ParameterError(
            f"the run has no neurons (layer={ds.sizes[LAYER]}, neuron={ds.sizes[NEURON]})"
        )
    return languages


def check_design_effect(value: object, used: str, requested: str, token: str) -> float | None:
    """``design_effect``: None, or a finite number >= 1 for the token-level method ``token``."""
    if value is None:
        return None
    if not (
        isinstance(value, Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
        and float(value) >= 1.0
    ):
        raise ParameterError(
            f"design_effect must be a number >= 1 (the variance inflation of token counts; "
            f"effective n = n / D), got {value!r}"
        )
    if used != token:
        raise ParameterError(
            f"design_effect applies to the token-level method {token!r}; method={requested!r} "
            f"uses {used!r}, which estimates the dependence from per-sequence counts; drop "
            f"design_effect or pass method={token!r}"
        )
    return float(value)


def token_level_cluster(run: xr.Dataset, cluster: str, used: str) -> None:
    """ParameterError when a cluster is asked of a token-level method (there are none)."""
    check_choice("cluster", cluster, get_args(ClusterChoice))
    if cluster == "auto":
        return
    if not has_sequences(run):
        raise ParameterError(
            f"cluster={cluster!r} needs per-sequence counts (seq_n_active), which this run "
            "lacks; extract with --per-sequence, or leave cluster='auto'"
        )
    raise ParameterError(
        f"cluster={cluster!r} applies to the per-sequence methods; method={used!r} counts "
        "tokens; pass method='auto' or leave cluster='auto'"
    )


def inference_label(token_level: bool, design_effect: float | None) -> str:
    """The ``inference`` attribute: ``"valid"`` (sampled units are clusters), ``"descriptive"``
    (token counts as if tokens were independent) or ``"design-effect adjusted (D=...)"``."""
    if not token_level:
        return "valid"
    if design_effect is None:
        return "descriptive"
    return f"design-effect adjusted (D={design_effect:g})"


#: Why sequence-clustered results are labelled descriptive when items repeat within a language.
SEQUENCES_OF_ITEMS = (
    "cluster='sequence' while seq_ids repeat within a language: the sequences of one item are "
    "not independent, and these intervals covered 0.75-0.93 and the tests rejected up to 0.16 "
    "of true nulls at 0.05 in docs/calibration.md; use cluster='item' (or 'auto')"
)

#: Why percentile-bootstrap probability intervals are labelled descriptive.
BOOTSTRAP_REASON = (
    "percentile bootstrap intervals of an activation probability undercover on sparse neurons "
    "(within bounds in 2 of 35 cells of docs/calibration.md); method='cluster' gives valid "
    "(Korn-Graubard) intervals"
)

#: The CLI's warning for token-level results without a design effect.
DESCRIPTIVE_WARNING = (
    "token-level p-values and intervals assume independent tokens and are not valid inference "
    "(tokens of one sequence are dependent); extract with --per-sequence for valid ones, or "
    "pass --design-effect D"
)


# --------------------------------------------------------------------------- estimators


def _wilson(run: xr.Dataset, roles: tuple[str, ...], z: float, deff: float = 1.0) -> xr.Dataset:
    """Wilson score interval and binomial standard error on token counts (lazy when dask);
    with a design effect ``D`` the effective sample size is ``n / D``."""
    x = run["n_active"].sel({ROLE: list(roles)}).sum(ROLE).astype(np.float64)
    n = run["n_tokens"].sel({ROLE: list(roles)}).sum(ROLE).astype(np.float64)
    if deff != 1.0:
        x, n = x / deff, n / deff
    p = x / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z * np.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    se = np.sqrt(p * (1.0 - p) / n)
    lower = np.maximum(center - half, 0.0)
    upper = np.minimum(center + half, 1.0)
    return xr.Dataset({"p": p, "lower": lower, "upper": upper, "se": se})


def _interval(
    sums: LanguageSums, level: float, z: float
) -> tuple[dict[str, NDArray[np.float64]], float, tuple[NDArray[np.float64], ...]]:
    """One language's ratio estimate, cluster-robust delta-method se, design-effect floor and
    the Korn-Graubard interval's Beta parameters (see :func:`_cluster`); numpy, any shape.

    Returns ``({"p", "se"}, floor, (x, n_eff))``; :func:`_korn_graubard` turns ``x`` and
    ``n_eff`` into the interval's bounds.
    """
    from scipy import special

    n, t_sum = float(sums.n), sums.T
    t = float(special.stdtrit(n - 1.0, level))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = sums.A / t_sum
        resid = sums.S2 - 2.0 * p * sums.SAT + p * p * sums.STT
        var = (n / (n - 1.0)) * np.maximum(resid, 0.0) / (t_sum * t_sum)
        pq = p * (1.0 - p)
        known = (var > 0) & (pq > 0)
        deff = np.where(known, var * t_sum / pq, np.nan)
    # one neuron's variance from 8-32 clusters is often too small where few clusters are
    # non-zero; the language's typical design effect is a floor (docs/calibration.md)
    median = float(np.nanquantile(deff, 0.5)) if known.any() else math.nan
    floor = max(1.0 if math.isnan(median) else median, 1.0)
    n_eff = t_sum / np.maximum(np.where(np.isnan(deff), 1.0, deff), floor)
    n_eff = n_eff * (z / t) ** 2
    return {"p": p, "se": np.sqrt(var)}, floor, (p * n_eff, n_eff)


def _beta_quantile(a: NDArray[np.float64], b: NDArray[np.float64], q: float) -> NDArray[np.float64]:
    """``scipy.special.betaincinv(a, b, q)`` in about half the time, to ~1e-13 relative.

    Where ``a, b >= 5``: the start of Abramowitz and Stegun 26.5.22 (a normal deviate with a
    skewness term, within ~1% here) and two Halley steps on ``betainc`` (cubic convergence),
    kept only where the second step moved the quantile by at most ``1e-12`` of it (so the one
    before was already that close); every other element (small parameters, slow convergence,
    non-finite) is scipy's own inverse. tests/test_beta_quantile.py checks a dense grid.
    """
    from scipy import special

    out = np.empty(np.broadcast(a, b).shape)
    a, b = np.broadcast_to(a, out.shape), np.broadcast_to(b, out.shape)
    fast = (a >= 5.0) & (b >= 5.0)
    if fast.any():
        aa, bb = a[fast], b[fast]
        y = special.ndtri(1.0 - q)  # the upper-tail normal deviate of q
        lam = (y * y - 3.0) / 6.0
        r, s = 1.0 / (2.0 * aa - 1.0), 1.0 / (2.0 * bb - 1.0)
        h = 2.0 / (r + s)
        w = y * np.sqrt(h + lam) / h - (s - r) * (lam + 5.0 / 6.0 - 2.0 / (3.0 * h))
        with np.errstate(all="ignore"):  # a start of 0 or 1 fails the check below
            x = aa / (aa + bb * np.exp(2.0 * w))
            log_beta = special.betaln(aa, bb)
            for _ in range(2):
                log_density = (aa - 1.0) * np.log(x) + (bb - 1.0) * np.log1p(-x) - log_beta
                step = (special.betainc(aa, bb, x) - q) / np.exp(log_density)
                x = x - step / (1.0 - 0.5 * step * ((aa - 1.0) / x - (bb - 1.0) / (1.0 - x)))
            done = (np.abs(step) <= HALLEY_TOLERANCE * x) & (x > 0.0) & (x < 1.0)
        out[fast] = x
        fast[fast] = done
    rest = ~fast
    if rest.any():
        out[rest] = special.betaincinv(a[rest], b[rest], q)
    return out


def _korn_graubard(
    x: NDArray[np.float64], n_eff: NDArray[np.float64], level: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Clopper-Pearson bounds of ``x`` events in ``n_eff`` trials (0 and 1 at the edges)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = np.where(x > 0, _beta_quantile(x, n_eff - x + 1.0, 1.0 - level), 0.0)
        upper = np.where(x < n_eff, _beta_quantile(x + 1.0, n_eff - x, level), 1.0)
    return lower, upper


def _per_language(block: Any, *, level: float, z: float) -> Any:
    """:func:`_interval` and :func:`_korn_graubard` over a ``[language, cells...]`` block of
    stacked sums ``A, S2, SAT, T, STT, n`` (``T, STT, n`` broadcast over the cells)."""
    out = np.empty((5, *block.shape[1:]))
    for j in range(block.shape[1]):
        a, s2, sat, t, stt, n = block[:, j]
        rows = LanguageSums(j, a, s2, sat, float(t.flat[0]), float(stt.flat[0]), int(n.flat[0]))
        est, floor, (x, n_eff) = _interval(rows, level, z)
        out[0, j], out[3, j], out[4, j] = est["p"], est["se"], floor
        out[1, j], out[2, j] = _korn_graubard(x, n_eff, level)
    return out


def _cluster(sums: xr.Dataset, counts: NDArray[np.int64], ci: float) -> xr.Dataset:
    """Ratio estimate, cluster-robust delta-method se, and the Korn-Graubard interval.

    The Clopper-Pearson interval of ``x = p n*`` events in ``n*`` trials, with the effective
    sample size ``n* = T / max(D, D_floor, 1)``, where ``D = var T / (p (1 - p))`` is the
    neuron's estimated design effect (1 where ``var`` or ``p (1 - p)`` is 0) and ``D_floor``
    the median of ``D`` over the language's neurons with positive variance, scaled by
    ``(z / t_{clusters - 1})^2`` for the few clusters. Returns ``design_effect_floor`` per
    language beside the interval.

    Lazy sums (a dask-backed run) stay lazy: one task per language.
    """
    from scipy import special

    level = (1.0 + ci) / 2.0
    z = float(special.ndtri(level))
    cube = sums["A"].transpose(LANGUAGE, ...)
    n = xr.DataArray(counts.astype(np.float64), dims=(LANGUAGE,))
    parts = [sums[v].transpose(*cube.dims) for v in ("A", "S2", "SAT")]
    parts += [xr.broadcast(v, cube)[0].transpose(*cube.dims) for v in (sums["T"], sums["STT"], n)]
    stacked = xr.concat(parts, dim="_sum")
    if stacked.chunks is not None:
        stacked = stacked.chunk({d: -1 for d in stacked.dims if d != LANGUAGE})
    data = stacked.data
    if stacked.chunks is not None:
        out = data.map_blocks(
            _per_language, level=level, z=z, chunks=(5, *data.chunks[1:]), dtype=np.float64
        )
    else:
        out = _per_language(data, level=level, z=z)
    dims = cube.dims
    floor = out[4][(slice(None),) + (0,) * (len(dims) - 1)]
    return xr.Dataset(
        {
            "p": (dims, out[0]),
            "lower": (dims, out[1]),
            "upper": (dims, out[2]),
            "se": (dims, out[3]),
            "design_effect_floor": ((LANGUAGE,), floor),
        },
        coords={c: cube.coords[c] for c in cube.coords},
    )


def _streamed_cluster(
    run: xr.Dataset, d: Design, unit: str, ci: float
) -> tuple[xr.Dataset, NDArray[np.int64]]:
    """:func:`_cluster` on the sums of one pass of the chunked reader, numpy throughout: each
    language's interval is computed in threads (scipy releases the GIL) as soon as its sums are
    final, while the next languages are read. Returns the result and the clusters per
    language."""
    from scipy import special

    level = (1.0 + ci) / 2.0
    z = float(special.ndtri(level))
    k = len(d.languages)
    results: list[Any] = [None] * k
    futures: list[Future[Any]] = []

    def bounds(j: int, cols: slice, x: NDArray[np.float64], n_eff: NDArray[np.float64]) -> None:
        results[j][1][cols], results[j][2][cols] = _korn_graubard(x[cols], n_eff[cols], level)

    def language(sums: LanguageSums) -> None:
        est, floor, (x, n_eff) = _interval(sums, level, z)
        results[sums.language] = (est, np.empty_like(x), np.empty_like(x), floor)
        step = max(1, -(-x.size // BOUND_PIECES))
        for c0 in range(0, x.size, step):
            cols = slice(c0, c0 + step)
            futures.append(pool.submit(bounds, sums.language, cols, x, n_eff))

    with ThreadPoolExecutor(THREADS, thread_name_prefix="interval") as pool:
        sums, n_clusters = streamed_sums(run, d, unit, on_language=language)
        cube = sums["A"].transpose(LANGUAGE, ...)
        for j in range(k):  # languages not reported while reading
            if results[j] is None:
                rows = [sums[v].transpose(*cube.dims).values[j].ravel() for v in ("A", "S2", "SAT")]
                t, stt = float(sums["T"].values[j]), float(sums["STT"].values[j])
                language(LanguageSums(j, *rows, t, stt, int(n_clusters[j])))
        for future in futures:
            future.result()
    shape = cube.shape
    dims = cube.dims

    def stack(i: int, name: str = "") -> NDArray[np.float64]:
        return np.stack([r[0][name] if name else r[i] for r in results]).reshape(shape)

    out = xr.Dataset(
        {
            "p": (dims, stack(0, "p")),
            "lower": (dims, stack(1)),
            "upper": (dims, stack(2)),
            "se": (dims, stack(0, "se")),
            "design_effect_floor": ((LANGUAGE,), np.array([r[3] for r in results])),
        },
        coords={c: cube.coords[c] for c in cube.coords},
    )
    return out, n_clusters


def _bootstrap(
    run: xr.Dataset, role: str, n_boot: int, seed: int, ci: float, cluster: str = "sequence"
) -> xr.Dataset:
    """Percentile intervals from resampling sequences within languages, or items (computes)."""
    sampler = Resampler(run, role, "method='bootstrap'", fix=_FIX, cluster=cluster)
    d, reader = sampler.design, sampler.reader
    (weights,) = draw_weights([sampler.units], replicate_seeds(seed, n_boot))
    rep_tokens = sampler.replicate_tokens(weights)
    totals = sampler.totals
    dtype = exact_dtype(int(max(rep_tokens.max(initial=0), totals.max(initial=0))))
    k_lang = len(d.languages)
    shape = (k_lang, reader.n_layers * reader.n_neurons)
    out = {name: np.full(shape, np.nan) for name in ("p", "lower", "upper", "se")}
    active = np.zeros(shape, dtype=np.int64)  # checked against n_active at the end
    levels = [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0]
    for _, layers, block in reader.tiles(all_sequences=True):
        offset = layers.start * reader.n_neurons
        n_cols = block.shape[2]
        for k, members in enumerate(d.members):
            rows = contiguous(members)
            w: NDArray[Any] = weights[:, members].astype(dtype)
            t_rep = rep_tokens[:, k].astype(np.float64)
            step = column_step(n_cols, max(n_boot, members.size))
            for c0 in range(0, n_cols, step):
                cols = slice(c0, min(c0 + step, n_cols))
                x = summed(block, rows, cols, dtype)
                dest = slice(offset + cols.start, offset + cols.stop)
                total = x.sum(axis=0, dtype=np.float64)
                active[k, dest] = np.rint(total).astype(np.int64)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out["p"][k, dest] = total / totals[k]
                    # [cell, replicate], replicates contiguous: reductions over them then do
                    # not depend on how many cells a product holds (same result for any tiling)
                    rep = np.ascontiguousarray((w @ x).T, dtype=np.float64) / t_rep
                quantile = np.nanquantile if np.isnan(rep).any() else np.quantile
                low, high = quantile(rep, levels, axis=1)
                out["lower"][k, dest] = low
                out["upper"][k, dest] = high
                out["se"][k, dest] = np.nanstd(rep, axis=1, ddof=1)
        del block, x, rep  # free this tile before the next one is read
    sampler.check_active(active)
    dims = (LANGUAGE, LAYER, NEURON)
    full = (k_lang, reader.n_layers, reader.n_neurons)
    return xr.Dataset({name: (dims, arr.reshape(full)) for name, arr in out.items()})


_FIX = "extract with --per-sequence (per-sequence counts make the sequence the sampled unit)"


_ASSUMPTIONS: dict[str, str] = {
    "wilson": INDEPENDENT_TOKENS,
    "cluster": INDEPENDENT_SEQUENCES + "; Korn-Graubard effective sample size with t df",
    "bootstrap": INDEPENDENT_SEQUENCES + "; percentile bootstrap over sequences",
}
_INTERVALS: dict[str, str] = {
    "wilson": "Wilson score interval on token counts",
    "cluster": "Korn-Graubard: Clopper-Pearson at the effective sample size T / max(D, D_floor, 1) "
    "(D = se^2 T / (p(1-p)) from the cluster-robust delta-method se; D_floor: the language's "
    "median D), scaled by (z / t_{clusters-1})^2",
    "bootstrap": "percentile interval of sequence-resampled ratio estimates",
}


def activation_probability(
    run: xr.Dataset,
    *,
    role: Role = "response",
    method: ProbabilityMethod = "auto",
    ci: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    cluster: ClusterChoice = "auto",
    design_effect: float | None = None,
) -> xr.Dataset:
    r"""Activation probabilities with confidence intervals and standard errors.

    For language :math:`k` with sequences :math:`i = 1..n_k`, :math:`a_i` tokens on which the
    neuron fired and :math:`t_i` counted tokens, the estimate is the ratio
    :math:`\hat P = A / T` with :math:`A = \sum_i a_i`, :math:`T = \sum_i t_i`.

    - ``"cluster"`` (sequences, or items, as clusters): the delta-method (linearisation)
      variance of a ratio estimator,

      .. math:: \widehat{\mathrm{Var}}(\hat P) = \frac{n_k}{n_k - 1}
                \frac{\sum_i (a_i - \hat P t_i)^2}{T^2},

      computed from the exact sums :math:`\sum a^2`, :math:`\sum a t`, :math:`\sum t^2`
      (:math:`n_k` clusters; with items, :math:`a_i, t_i` are item totals). The interval is
      Korn and Graubard's: Clopper-Pearson for :math:`x = \hat P n^*` events in :math:`n^*`
      trials, with the effective sample size :math:`n^* = T / \max(D, \tilde D, 1) \cdot
      (z_{(1+ci)/2} / t_{n_k - 1, (1+ci)/2})^2`, where :math:`D = \widehat{\mathrm{Var}}\,
      T / (\hat P (1 - \hat P))` is the neuron's design effect (1 where the variance or
      :math:`\hat P (1 - \hat P)` is 0) and :math:`\tilde D` the median of :math:`D` over
      the language's neurons (``design_effect_floor[language]`` in the result). The floor
      matters for sparse neurons: from 8-32 clusters, few of them non-zero, a neuron's own
      variance is often too small, and without it the interval covered 0.88-0.93 on sparse
      beta-binomial data in the calibration suite (0.95-0.98 with it, 5-9 % wider; data of
      independent tokens are unchanged, :math:`\tilde D \approx 1`). It is asymmetric near
      0, where sparse neurons live; the symmetric :math:`\hat P \pm t\,\mathrm{se}`
      covered 0.79-0.91 on sparse neurons with 8-16 clusters.
    - ``"bootstrap"``: ``n_boot`` replicates resample the :math:`n_k` sequences of each
      language with replacement (weights :math:`w \sim \mathrm{Multinomial}(n_k; 1/n_k)`),
      :math:`\hat P^*_b = \sum_i w_{bi} a_i / \sum_i w_{bi} t_i`; the interval is the
      :math:`(1 \mp ci)/2` percentiles of :math:`\hat P^*`, the ``se`` their standard
      deviation.
    - ``"wilson"`` (independent tokens): with :math:`x = A / D`, :math:`n = T / D` (design
      effect :math:`D`, 1 unless given),
      :math:`\hat p = x/n`, the score interval
      :math:`\frac{\hat p + z^2/2n}{1 + z^2/n} \pm \frac{z}{1 + z^2/n}
      \sqrt{\hat p(1-\hat p)/n + z^2/4n^2}` and :math:`\mathrm{se} = \sqrt{\hat p(1-\hat p)/n}`.

    **Which statistics are valid for which data.** The sampled unit is the sequence, or the
    item (``seq_id``) when an item has several sequences in a language; tokens of one
    sequence are dependent. With per-sequence counts, ``"cluster"`` and ``"bootstrap"``
    resample that unit (``cluster="auto"`` picks the item when items repeat). ``"cluster"``
    is ``attrs["inference"] == "valid"``; the percentile ``"bootstrap"`` undercovers on sparse
    neurons at every sample size the suite tried, so its intervals are labelled
    ``"descriptive"`` (``attrs["inference_reason"]`` says why). With token counts only,
    ``"wilson"`` is exact for independent tokens but ``"descriptive"`` for real text (it
    covered 0.53-0.81 on heterogeneous data in the suite); a known or bounded design effect
    ``D`` makes it inference under that assumption (``"design-effect adjusted (D=...)"``).

    Parameters
    ----------
    run : xarray.Dataset
        A run (numpy- or dask-backed; both give identical results).
    role : {"response", "prompt", "all"}
        Which counted tokens to use; ``"all"`` sums both roles (per sequence for the
        per-sequence methods).
    method : {"auto", "bootstrap", "cluster", "wilson"}
        ``"auto"`` is ``"cluster"`` when the run has per-sequence counts, else ``"wilson"``.
    ci : float in (0, 1)
        Confidence level of ``lower`` and ``upper``.
    n_boot : int >= 2
        Bootstrap replicates (``"bootstrap"`` only; recorded for every method).
    seed : int >= 0
        Seed of the bootstrap; replicate ``b`` draws from ``SeedSequence(seed).spawn(n_boot)[b]``.
    cluster : {"auto", "item", "sequence"}
        The unit of replication of ``"cluster"`` and ``"bootstrap"``: ``"auto"`` (default)
        is the item (``seq_id``) whenever an item has more than one sequence in a language,
        else the sequence. The bootstrap draws items in every language at once.
    design_effect : float >= 1, optional
        For ``"wilson"`` only: the variance inflation of token counts (effective sample size
        ``T / D``). Default: none (descriptive).

    Returns
    -------
    xarray.Dataset
        ``p`` (the estimate), ``lower``, ``upper`` and ``se`` on ``[layer, neuron, language]``
        (float64). ``attrs``: ``method`` (the one used), ``method_requested``, ``role``,
        ``ci``, ``n_boot``, ``seed``, ``assumption`` (``"independent tokens"`` for Wilson),
        ``interval``, ``inference`` (``"valid"``, ``"descriptive"`` or ``"design-effect
        adjusted (D=...)"``), ``cluster`` (``"item"``, ``"sequence"`` or ``"token"``),
        ``cluster_requested``, ``design_effect`` (when given) and, for the per-sequence
        methods, ``n_sequences`` (and ``n_items``) per language.
        ``"wilson"`` and ``"cluster"`` are lazy on a dask-backed run (only the token totals
        are read, to refuse a language without tokens; the rest is computed when the result
        is); ``"bootstrap"`` computes, streaming the per-sequence counts in tiles, and
        returns numpy-backed arrays. The token totals are checked here; the counts
        themselves are not (``identify``, ``language_preference_tests`` and ``langneurons
        validate`` do).

    Raises
    ------
    ParameterError
        A parameter is out of range; a language without tokens for the role;
        ``"bootstrap"``/``"cluster"`` on a run without per-sequence counts (extract with
        ``--per-sequence``); a language with fewer than 2 sequences (items);
        ``cluster="item"`` without ``seq_id`` or per-sequence counts; ``design_effect < 1``
        or with a per-sequence method.
    StoreValidationError
        The run breaks the schema (missing variables, roles or sequence labels), or its token
        totals are NaN or negative.

    References
    ----------
    Wilson (1927), "Probable inference, the law of succession, and statistical inference",
    JASA 22. Brown, Cai & DasGupta (2001), "Interval estimation for a binomial proportion",
    Statistical Science 16. Cochran (1977), *Sampling Techniques*, 3rd ed., ch. 6 (ratio
    estimators). Cameron & Miller (2015), "A practitioner's guide to cluster-robust
    inference", J. Human Resources 50. Davison & Hinkley (1997), *Bootstrap Methods and
    their Application*, sec. 3.8 (resampling clustered and stratified data). Korn & Graubard
    (1998), "Confidence intervals for proportions with small expected number of positive
    counts estimated from survey data", Survey Methodology 24. Kish (1965), *Survey
    Sampling* (design effect).
    """
    from scipy import special

    role_ = check_choice("role", role, get_args(Role))
    method_ = check_choice("method", method, get_args(ProbabilityMethod))
    ci_ = check_open_unit("ci", ci)
    n_boot_ = check_int("n_boot", n_boot, 2)
    seed_ = check_int("seed", seed, 0)
    languages = check_count_run(run, role_)
    check_choice("cluster", cluster, get_args(ClusterChoice))
    used = method_
    if method_ == "auto":
        used = "cluster" if has_sequences(run) else "wilson"
    deff = check_design_effect(design_effect, used, method_, "wilson")
    z = float(special.ndtri((1.0 + ci_) / 2.0))
    attrs: dict[str, Any] = {
        "method": used,
        "method_requested": method_,
        "role": role_,
        "ci": ci_,
        "n_boot": n_boot_,
        "seed": seed_,
        "assumption": _ASSUMPTIONS[used],
        "interval": _INTERVALS[used],
        "inference": "descriptive"
        if used == "bootstrap"
        else inference_label(used == "wilson", deff),
        "cluster": "token",
        "cluster_requested": cluster,
    }
    if used == "bootstrap":
        attrs["inference_reason"] = BOOTSTRAP_REASON
    if deff is not None:
        attrs["design_effect"] = deff
        attrs["assumption"] = f"token counts with design effect D={deff:g} (effective n = n / D)"
    if used == "wilson":
        token_level_cluster(run, cluster, used)
        roles = stored_roles(role_)
        # the token totals alone are read (one small compute on dask)
        by_role = run[N_TOKENS].sel({ROLE: list(roles)}).transpose(ROLE, LANGUAGE).values
        totals = np.zeros(len(languages))
        for r, tokens in zip(roles, np.asarray(by_role), strict=True):
            # no counts given: check_counts checks the token totals alone
            check_counts(np.zeros((len(languages), 0, 0)), tokens, languages, r)
            totals = totals + tokens
        check_tokens(totals, languages, roles)
        out = _wilson(run, roles, z, 1.0 if deff is None else deff)
    else:
        what = f"method={used!r}"
        d = design(
            run, role_, what, fix=_FIX + ", or use method='wilson' (assumes independent tokens)"
        )
        # the sequences' token totals alone are read (one small compute on dask)
        per_sequence = seq_tokens(run, d)
        per_language = np.array([per_sequence[m].sum() for m in d.members])
        check_tokens(per_language, d.languages, d.roles)
        attrs["n_sequences"] = d.n_per_language()
        unit = choose_cluster(run, d, cluster)
        attrs["cluster"] = unit
        if unit == "sequence" and repeated_items(run, d):
            attrs["inference"] = "descriptive"
            attrs["inference_reason"] = SEQUENCES_OF_ITEMS
        if unit == "item":
            attrs["assumption"] = attrs["assumption"].replace(
                "independent sequences", "independent items (seq_id; all their sequences)"
            )
        if used == "cluster":
            lazy = run["seq_n_active"].chunks is not None
            if lazy:  # a dask graph, computed when the result is
                if unit == "item":
                    sums, n_clusters = item_sums(run, d)
                else:
                    sums, n_clusters = cluster_sums(run, d), d.counts
            else:  # one pass of the chunked reader; the interval per language in threads
                out, n_clusters = _streamed_cluster(run, d, unit, ci_)
            if unit == "item":
                attrs["n_items"] = {
                    lang: int(g) for lang, g in zip(d.languages, n_clusters, strict=True)
                }
            if lazy:
                out = _cluster(sums, n_clusters, ci_)
        else:
            out = _bootstrap(run, role_, n_boot_, seed_, ci_, unit)
    out = out.assign_coords(
        {LANGUAGE: as_labels(run[LANGUAGE]), LAYER: run[LAYER].values, NEURON: run[NEURON].values}
    )
    out = out.transpose(LAYER, NEURON, LANGUAGE)
    out.attrs = attrs
    return out


__all__ = [
    "SEQUENCES_OF_ITEMS",
    "activation_probability",
    "check_count_run",
    "has_sequences",
    "ProbabilityMethod",
    "Role",
    "ClusterChoice",
    "check_design_effect",
    "token_level_cluster",
    "inference_label",
    "DESCRIPTIVE_WARNING",
    "INDEPENDENT_TOKENS",
    "INDEPENDENT_SEQUENCES",
]
