"""The numerics behind :mod:`~langneurons.analysis.stages`: the segmentation programme, the
choice of the number of stages, the names of stages from their type signature, and the checks
of the stage arguments.

The numerics work on arrays (``x[layer, feature]``); the public functions and their xarray
results live in :mod:`~langneurons.analysis.stages`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._validate import check_int, check_types, require_result
from langneurons.errors import ParameterError
from langneurons.names import LAYER, NEURON

from .type_tables import type_counts

TYPE = "type"

#: Names of the four stages of Zhang et al. (2025), in layer order.
FOUR_STAGES: tuple[str, ...] = (
    "multilingual understanding",
    "shared semantic reasoning",
    "multilingual output transformation",
    "vocabulary output",
)
UNDERSTANDING, SHARED, TRANSFORMATION, VOCABULARY = FOUR_STAGES

#: Rules that choose the number of stages.
CRITERIA: tuple[str, ...] = ("permutation", "bic")

#: Thresholds of the signature names (see :func:`signature_names`).
HIGH_SPECIFIC = 1.25  # specific neurons per layer >= 1.25 x the model's average per layer
LOW_SPECIFIC = 0.25  # specific neurons per layer <= a quarter of the model's average
GENERAL_DOMINANT = 0.5  # general neurons >= half of the stage's typed neurons
VOCABULARY_SHARE = 0.25  # a vocabulary-output stage covers at most a quarter of the layers
THRESHOLDS = {
    "high_specific": HIGH_SPECIFIC,
    "low_specific": LOW_SPECIFIC,
    "general_dominant": GENERAL_DOMINANT,
    "vocabulary_share": VOCABULARY_SHARE,
}


def positional_names(n_stages: int) -> list[str]:
    """Names by position: the four named stages for 4, ``"stage 1"``.. otherwise."""
    if n_stages == 4:
        return list(FOUR_STAGES)
    return [f"stage {i + 1}" for i in range(n_stages)]


# --------------------------------------------------------------------------- dynamic programme


def segment_dp(x: NDArray[np.float64], n_stages: int) -> tuple[list[int], NDArray[np.float64]]:
    """Optimal start positions of ``n_stages`` contiguous segments of the rows of ``x``.

    Returns the starts and the optimal objective for every segment count 1..n_stages.
    """
    n_layers = x.shape[0]
    xc = x - x.mean(axis=0)  # centring keeps the prefix sums small (less cancellation)
    s1 = np.vstack([np.zeros((1, xc.shape[1])), np.cumsum(xc, axis=0)])  # [L+1, F]
    s2 = np.concatenate([[0.0], np.cumsum((xc**2).sum(axis=1))])  # [L+1]
    i = np.arange(n_layers + 1)
    length = i[None, :] - i[:, None]  # [i, j] = j - i
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = s1[None, :, :] - s1[:, None, :]
        cost = (s2[None, :] - s2[:, None]) - (diff**2).sum(axis=2) / length
    cost = np.where(length > 0, np.maximum(cost, 0.0), np.inf)  # cost[i, j]: segment [i, j)
    best = np.full((n_stages + 1, n_layers + 1), np.inf)
    arg = np.zeros((n_stages + 1, n_layers + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for s in range(1, n_stages + 1):
        total = best[s - 1][:, None] + cost  # [i, j]
        arg[s] = np.argmin(total, axis=0)  # first minimum: the earliest start of the last stage
        best[s] = total[arg[s], i]
    starts = [0] * n_stages
    j = n_layers
    for s in range(n_stages, 0, -1):
        j = int(arg[s, j])
        starts[s - 1] = j
    return starts, best[1:, n_layers]


def stage_moments(
    x: NDArray[np.float64], starts: Sequence[int]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each row's stage mean and stage sd (per feature, population sd)."""
    bounds = [*starts, x.shape[0]]
    mean, sd = np.empty_like(x), np.empty_like(x)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        mean[a:b] = x[a:b].mean(axis=0)
        sd[a:b] = x[a:b].std(axis=0)
    return mean, sd


# --------------------------------------------------------------------------- number of stages


def noise_variance(x: NDArray[np.float64]) -> float:
    """Per-value noise variance from successive differences, robust to a few jumps.

    Per feature ``(MAD(diff) / (0.6745 sqrt 2))^2`` (the MAD of first differences, as in
    Fryzlewicz 2014), or ``mean(diff^2) / 2`` where the MAD is 0; averaged over features.
    """
    if x.shape[0] < 2:
        return 0.0
    d = np.diff(x, axis=0)
    mad = np.median(np.abs(d - np.median(d, axis=0)), axis=0) / (0.6745 * math.sqrt(2))
    var = np.where(mad > 0, mad**2, (d**2).mean(axis=0) / 2)
    return float(var.mean())


def bic_curve(cost: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
    r"""Penalised cost of the k-stage fits: :math:`J_k / \hat\sigma^2 + (kF + k - 1) \log n`.

    ``n = L F`` values; :math:`\hat\sigma^2` from :func:`noise_variance` (a Schwarz criterion
    with the noise variance plugged in, Yao 1988). A profile with no variation at all gives 0
    for every k (so one stage is chosen).
    """
    n_layers, n_features = x.shape
    n = n_layers * n_features
    k = np.arange(1, cost.size + 1)
    penalty = (k * n_features + (k - 1)) * math.log(max(n, 2))
    var = noise_variance(x)
    if var <= 0.0:
        return np.asarray(np.where(cost > 0, np.inf, 0.0) + penalty)
    return np.asarray(cost / var + penalty)


def _gain(path: NDArray[np.float64], k: int, m: int | None = None) -> float:
    """Relative drop of the cost from k to m (default k + 1) stages (0 when k fit exactly)."""
    before, after = float(path[k - 1]), float(path[(k + 1 if m is None else m) - 1])
    return 0.0 if before <= 0.0 else (before - after) / before


def _exact_at(path: NDArray[np.float64]) -> int:
    """The fewest stages that fit exactly (cost 0), or len(path) + 1: breaks ties at gain 1."""
    zero = np.flatnonzero(path <= 1e-12 * max(float(path[0]), 1e-300))
    return int(zero[0]) + 1 if zero.size else path.size + 1


def alternative(k: int, k_max: int, n_layers: int) -> int:
    """The number of stages the test of k stages compares with: up to ``max(k + 1, L // 2)``."""
    return min(k_max, n_layers, max(k + 1, n_layers // 2))


@dataclass(frozen=True)
class Choice:
    """The number of stages a rule chose, and what it saw."""

    n_stages: int
    cost: NDArray[np.float64]  # [K] optimal cost of k = 1..K stages
    bic: NDArray[np.float64]  # [K]
    pvalue: NDArray[np.float64]  # [K] p-value of k stages against more; NaN: not tested
    gain: NDArray[np.float64]  # [K] relative drop of the cost from k to k + 1 stages
    n_bic: int  # the number of stages the BIC would choose
    n_permutation: int  # the number of stages the permutation rule would choose (0: not run)


def sequential_permutation(
    x: NDArray[np.float64],
    k_max: int,
    n_perm: int,
    alpha: float,
    rng: np.random.Generator,
) -> tuple[int, NDArray[np.float64]]:
    """Sequential permutation tests of k stages against more (Kim et al. 2000), k = 1, 2, ...

    Step k compares k stages with m = :func:`alternative` stages by the relative drop
    ``(J_k - J_m) / J_k``, against ``n_perm`` profiles made of the k-stage fit plus its
    standardised residuals (residual / its stage's sd, per feature) in a random layer order,
    rescaled by the sd of the stage they land in (ties, as between profiles that m stages
    fit exactly, go to the one fitted exactly by fewer stages); the first k not rejected at
    ``alpha`` is chosen. Returns it and the p-value of each test run.
    """
    pvalue = np.full(k_max, np.nan)
    n_layers = x.shape[0]
    k = 1
    tol = 1e-9
    while k < min(k_max, n_layers):
        m = alternative(k, k_max, n_layers)
        _, path = segment_dp(x, m)
        observed = _gain(path, k, m)
        if path[k - 1] <= 1e-12 * max(float(path[0]), 1e-300) or observed <= 0.0:
            pvalue[k - 1] = 1.0  # k stages already fit exactly: nothing left to find
            break
        exact = _exact_at(path)
        mean, scale = stage_moments(x, segment_dp(x, k)[0])
        z = np.divide(x - mean, scale, out=np.zeros_like(x), where=scale > 0)
        hits = 0
        for _ in range(n_perm):
            _, p_path = segment_dp(mean + scale * z[rng.permutation(n_layers)], m)
            gain = _gain(p_path, k, m)
            tie = abs(gain - observed) <= tol * observed
            hits += gain > observed + tol * observed or (tie and _exact_at(p_path) <= exact)
        pvalue[k - 1] = (1 + hits) / (n_perm + 1)
        if pvalue[k - 1] > alpha:
            break
        k += 1
    return k, pvalue


def choose_n_stages(
    x: NDArray[np.float64],
    k_max: int,
    *,
    criterion: str,
    n_perm: int,
    alpha: float,
    seed: int,
) -> Choice:
    """The cost curve up to ``k_max`` stages and the number each rule chooses."""
    k_max = min(k_max, x.shape[0])
    _, cost = segment_dp(x, k_max)
    bic = bic_curve(cost, x)
    gain = np.array([_gain(cost, k) if k < k_max else np.nan for k in range(1, k_max + 1)])
    n_bic = int(np.argmin(bic)) + 1
    if n_perm > 0:
        n_perm_k, pvalue = sequential_permutation(
            x, k_max, n_perm, alpha, np.random.default_rng([seed, 7])
        )
    else:
        n_perm_k, pvalue = 0, np.full(k_max, np.nan)
    chosen = n_bic if criterion == "bic" else n_perm_k
    return Choice(chosen, cost, bic, pvalue, gain, n_bic, n_perm_k)


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class Signature:
    """Per stage: specific neurons per layer relative to the model's, and the general share."""

    specific_density: NDArray[np.float64]  # [S]
    general_share: NDArray[np.float64]  # [S]


def signature(
    counts: NDArray[np.float64], types: Sequence[str], starts: Sequence[int]
) -> Signature:
    """The type signature of each stage from ``counts[layer, type]``."""
    n_layers = counts.shape[0]
    bounds = [*starts, n_layers]
    spec = counts[:, list(types).index("specific")]
    gen = counts[:, list(types).index("general")]
    overall = spec.mean()
    density, share = [], []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        density.append(spec[a:b].mean() / overall if overall > 0 else math.nan)
        total = counts[a:b].sum()
        share.append(gen[a:b].sum() / total if total > 0 else 0.0)
    return Signature(np.asarray(density), np.asarray(share))


def signature_names(sig: Signature, lengths: Sequence[int]) -> list[str]:
    """Names from the signature, in layer order (each name used once; else ``"stage k"``; one
    stage is always ``"stage 1"``).

    - first stage, specific density >= HIGH_SPECIFIC: multilingual understanding;
    - specific density <= LOW_SPECIFIC and general share >= GENERAL_DOMINANT: shared semantic
      reasoning;
    - after a shared stage, specific density >= HIGH_SPECIFIC: multilingual output
      transformation;
    - the last stage, after an output-transformation stage, covering at most VOCABULARY_SHARE
      of the layers: vocabulary output.
    """
    n = len(lengths)
    n_layers = sum(lengths)
    names: list[str] = []
    for s in range(n):
        d, g = float(sig.specific_density[s]), float(sig.general_share[s])
        name = f"stage {s + 1}"
        if math.isnan(d) or n == 1:  # one stage: nothing to contrast a signature with
            names.append(name)
            continue
        last_short = s == n - 1 and s > 0 and lengths[s] <= VOCABULARY_SHARE * n_layers
        if s == 0 and d >= HIGH_SPECIFIC:
            name = UNDERSTANDING
        elif d <= LOW_SPECIFIC and g >= GENERAL_DOMINANT and SHARED not in names:
            name = SHARED
        elif TRANSFORMATION in names and last_short:
            name = VOCABULARY
        elif SHARED in names and d >= HIGH_SPECIFIC and TRANSFORMATION not in names:
            name = TRANSFORMATION
        names.append(name)
    return names


# --------------------------------------------------------------------------- checks and words


def check_profile(profile: object, dim: str) -> tuple[xr.DataArray, str | None]:
    """Validate a ``[dim]`` / ``[dim, feature]`` profile; return it loaded, and its feature dim."""
    if not isinstance(profile, xr.DataArray):
        raise ParameterError(
            f"profile must be an xarray.DataArray [{dim}, feature], got {type(profile).__name__}"
        )
    if dim not in profile.dims:
        raise ParameterError(f"profile has no dimension {dim!r} (dims: {tuple(profile.dims)})")
    others = [d for d in profile.dims if d != dim]
    if len(others) > 1:
        raise ParameterError(
            f"profile must have dims ({dim!r},) or ({dim!r}, feature), got {tuple(profile.dims)}"
        )
    if profile.dtype.kind not in "iuf":
        raise ParameterError(f"profile must be numeric, got dtype {profile.dtype}")
    feature = str(others[0]) if others else None
    loaded = profile.transpose(dim, *others).compute()
    if not np.isfinite(np.asarray(loaded.values, dtype=np.float64)).all():
        raise ParameterError("profile holds NaN or infinite values; fill or drop those layers")
    return loaded, feature


def check_n_stages(n_stages: object, n_layers: int) -> int | None:
    """``n_stages`` as an int in 1..L, or None for ``"auto"``."""
    if isinstance(n_stages, str):
        if n_stages != "auto":
            raise ParameterError(f"n_stages must be an integer >= 1 or 'auto', got {n_stages!r}")
        return None
    k = check_int("n_stages", n_stages, 1)
    if k > n_layers:
        raise ParameterError(
            f"n_stages={k} is larger than the number of layers ({n_layers}); every stage "
            f"needs at least one layer"
        )
    return k


def check_counts(
    counts: object, dim: str, n_layers: int
) -> tuple[NDArray[np.float64], list[str]] | None:
    """A ``[dim, type]`` count table naming ``specific`` and ``general``, or None."""
    if counts is None:
        return None
    if not isinstance(counts, xr.DataArray) or counts.ndim != 2 or dim not in counts.dims:
        raise ParameterError(
            f"counts must be an xarray.DataArray [{dim}, type] of neuron counts (e.g. "
            f"type_table(result)), got {type(counts).__name__}"
        )
    tdim = next(d for d in counts.dims if d != dim)
    types = (
        [str(t) for t in np.asarray(counts[tdim].values).tolist()] if tdim in counts.coords else []
    )
    if not {"specific", "general"} <= set(types):
        raise ParameterError(
            f"counts must have 'specific' and 'general' on its {tdim!r} coordinate to name "
            f"stages by signature, got {types!r}"
        )
    values = np.asarray(counts.transpose(dim, tdim).values, dtype=np.float64)
    if values.shape[0] != n_layers or not np.isfinite(values).all() or (values < 0).any():
        raise ParameterError(
            f"counts must hold finite non-negative counts for the profile's {n_layers} layers"
        )
    return values, types


def criterion_text(rule: str, n_perm: int, alpha: float) -> str:
    """The rule that set the number of stages, in words."""
    if rule == "fixed":
        return "fixed by the caller"
    if rule == "bic":
        return "minimum of the penalised cost J_k / sigma^2 + (k F + k - 1) log n (BIC)"
    return (
        f"sequential permutation tests of k stages against up to max(k + 1, L // 2) (after "
        f"Kim et al. 2000), {n_perm} shuffles of the stage-standardised residuals each, "
        f"stop at the first p > {alpha}"
    )


#: Why the BIC's number of stages is labelled descriptive.
BIC_REASON = (
    "the BIC over-splits identified profiles: it chose more than one stage on 0.20-0.31 of "
    "runs without depth structure in docs/calibration.md (the permutation rule: 0.02-0.05); "
    "use criterion='permutation' for a tested number"
)


def count_inference(
    rule: str, n_layers: int = 0, n_perm: int = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """``n_stages_inference`` (and why): whether the number of stages was tested, and, for
    the permutation rule, whether its p-value could reach ``alpha`` at all: it is at least
    ``1 / (n_perm + 1)``, and the layers' order has only ``n_layers!`` arrangements."""
    if rule == "permutation":
        floor = max(1.0 / (n_perm + 1), 1.0 / math.factorial(n_layers))
        out: dict[str, Any] = {"n_stages_inference": "valid", "n_stages_min_pvalue": floor}
        if floor > alpha:
            out["n_stages_inference"] = "descriptive"
            out["n_stages_inference_reason"] = (
                f"the permutation test cannot reach alpha={alpha:g}: its p-value is at least "
                f"{floor:.3g} ({n_layers} layers have {math.factorial(n_layers)} orders; "
                f"n_perm={n_perm})"
            )
        return out
    if rule == "bic":
        return {"n_stages_inference": "descriptive", "n_stages_inference_reason": BIC_REASON}
    return {
        "n_stages_inference": "descriptive",
        "n_stages_inference_reason": "the number of stages was given, not tested",
    }


def naming_text(given: bool, signed: bool) -> str:
    """How the stages got their names."""
    if given:
        return "given by the caller"
    if signed:
        return "type signature (specific density, general share); 'stage k' where none fits"
    return "positional (no counts with specific and general types to read a signature from)"


def normalise(counts: NDArray[np.float64], normalize: str, n_neurons: int) -> NDArray[np.float64]:
    """Normalise a ``[layer, type]`` count table (zero totals and constant columns give zeros)."""
    if normalize == "none":
        return counts
    if normalize == "neurons":
        return counts / n_neurons
    if normalize == "zscore":
        sd = counts.std(axis=0, keepdims=True)
        centred = counts - counts.mean(axis=0, keepdims=True)
        return np.divide(centred, sd, out=np.zeros_like(counts), where=sd > 0)
    axis = 0 if normalize == "type" else 1
    total = counts.sum(axis=axis, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def mode_of(values: NDArray[np.float64]) -> tuple[float, float]:
    """Most frequent value (smallest among ties) and its frequency, ignoring NaN."""
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return math.nan, math.nan
    uniq, counts = np.unique(ok, return_counts=True)
    i = int(np.argmax(counts))
    return float(uniq[i]), float(counts[i] / ok.size)


def count_table(identification: xr.Dataset, types: Sequence[str]) -> xr.DataArray:
    """``counts[layer, type]`` of an identification result (float64)."""
    types_ = check_types(types)
    ds = require_result(identification, "identification", ("neuron_type", "general"))
    return xr.DataArray(
        type_counts(ds, types_).astype(np.float64),
        dims=(LAYER, TYPE),
        coords={LAYER: ds[LAYER].values, TYPE: list(types_)},
        name="counts",
        attrs={"n_neurons": int(ds.sizes[NEURON])},
    )


def profile_of(counts: xr.DataArray, normalize: str) -> xr.DataArray:
    """The profile of a count table from :func:`count_table`."""
    values = normalise(counts.values, normalize, int(counts.attrs["n_neurons"]))
    types = [str(t) for t in counts[TYPE].values.tolist()]
    return counts.copy(data=values).rename("profile").assign_attrs(types=types, normalize=normalize)


def inference_attrs(n_boot: int, cluster: str, n_stages: int) -> dict[str, str]:
    """Whether the boundaries carry bootstrap intervals or are descriptive, and on what."""
    if n_boot == 0:
        return {
            "inference": "descriptive",
            "assumption": "no bootstrap (n_boot=0): the boundaries describe this run, "
            "without intervals",
        }
    return {
        "inference": "bootstrap",
        "assumption": f"{cluster}s exchangeable within each language; intervals conditional "
        f"on {n_stages} stages",
    }


__all__ = [
    "check_profile",
    "check_n_stages",
    "check_counts",
    "criterion_text",
    "naming_text",
    "normalise",
    "mode_of",
    "FOUR_STAGES",
    "CRITERIA",
    "HIGH_SPECIFIC",
    "LOW_SPECIFIC",
    "GENERAL_DOMINANT",
    "VOCABULARY_SHARE",
    "THRESHOLDS",
    "inference_attrs",
    "count_inference",
    "BIC_REASON",
    "Choice",
    "Signature",
    "positional_names",
    "segment_dp",
    "stage_moments",
    "count_table",
    "profile_of",
    "noise_variance",
    "bic_curve",
    "alternative",
    "sequential_permutation",
    "choose_n_stages",
    "signature",
    "signature_names",
]
