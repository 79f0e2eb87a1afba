"""Partition the layers into contiguous processing stages from their neuron-type profile.

Multilingual LLMs are described as processing in four stages over depth: multilingual
understanding, shared semantic reasoning, multilingual output transformation and vocabulary
output (Zhang et al. 2025; cf. Zhao et al. 2024 and Wendler et al. 2024). Where the layer-wise
distribution of language-specific, -related and general neurons changes, the stage changes.
:func:`segment_stages` finds the optimal split of a per-layer profile into contiguous stages by
exact dynamic programming (least-squares segmentation, Bellman 1961); :func:`stage_profile` builds
the default profile from an identification result; :func:`bootstrap_stages` puts bootstrap
intervals on the boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._resample import Cluster
from langneurons.analysis._validate import (
    check_dataset,
    check_int,
    check_open_unit,
    check_seed,
    check_types,
    require_result,
)
from langneurons.errors import ParameterError
from langneurons.names import LAYER, NEURON

from .bootstrap import bootstrap_attrs, bootstrap_runs, identification_attrs
from .identify import identify
from .params import IdentifyParams, Method, resolve_params
from .type_tables import type_counts

STAGE, FEATURE, N_STAGES, TYPE, REPLICATE = "stage", "feature", "n_stages", "type", "replicate"

#: Names of the four stages, in layer order.
FOUR_STAGES: tuple[str, ...] = (
    "multilingual understanding",
    "shared semantic reasoning",
    "multilingual output transformation",
    "vocabulary output",
)
#: Default profile features of :func:`stage_profile`.
PROFILE_TYPES: tuple[str, ...] = ("specific", "related", "general")

Normalize = Literal["type", "layer", "neurons", "none"]


def stage_names(n_stages: int) -> list[str]:
    """Default stage names: the four named stages for 4, ``"stage 1"``.. otherwise."""
    if n_stages == 4:
        return list(FOUR_STAGES)
    return [f"stage {i + 1}" for i in range(n_stages)]


# --------------------------------------------------------------------------- dynamic programme


def _segment(x: NDArray[np.float64], n_stages: int) -> tuple[list[int], NDArray[np.float64]]:
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


def _check_profile(profile: object, dim: str) -> tuple[xr.DataArray, str | None]:
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


def segment_stages(
    profile: xr.DataArray,
    n_stages: int = 4,
    *,
    dim: str = LAYER,
    names: Sequence[str] | None = None,
) -> xr.Dataset:
    r"""Split the layers into contiguous stages with the least within-stage variation.

    With :math:`x_l \in \mathbb{R}^F` the profile of layer l (in the order of ``dim``) and a
    partition of the layers :math:`0..L-1` into S contiguous, non-empty stages
    :math:`[b_s, b_{s+1})` with :math:`0 = b_0 < b_1 < \dots < b_S = L`, the objective is the
    within-stage sum of squared (Euclidean) deviations from the stage means,

    .. math::

        J(b) = \sum_{s=0}^{S-1} \sum_{l=b_s}^{b_{s+1}-1} \lVert x_l - \bar x_{s} \rVert_2^2,
        \qquad \bar x_s = \frac{1}{b_{s+1}-b_s} \sum_{l=b_s}^{b_{s+1}-1} x_l,

    minimised exactly by dynamic programming (Bellman 1961; Fisher 1958): with prefix sums
    :math:`P_j = \sum_{l<j} x_l` and :math:`Q_j = \sum_{l<j} \lVert x_l \rVert^2`, the cost of
    stage :math:`[i, j)` is :math:`Q_j - Q_i - \lVert P_j - P_i \rVert^2 / (j - i)` (O(1) after
    O(L F) preprocessing), and :math:`D_s(j) = \min_{i<j} D_{s-1}(i) + \mathrm{cost}(i, j)` is
    filled in :math:`O(S L^2)`. Among equal-cost partitions the one whose later stages start
    earliest is returned (the first minimum of each step of the recursion); a profile that is
    piecewise constant over S stages with distinct adjacent values is recovered exactly.

    Parameters
    ----------
    profile : xarray.DataArray
        ``[layer]`` or ``[layer, feature]`` (any feature dimension name), e.g. from
        :func:`stage_profile`. Numeric and finite; dask-backed profiles are computed.
    n_stages : int
        Number of stages, ``1 <= n_stages <= L``.
    dim : str
        The layer dimension of ``profile``.
    names : sequence of str, optional
        Stage names, in order. Default: for 4 stages "multilingual understanding", "shared
        semantic reasoning", "multilingual output transformation", "vocabulary output";
        otherwise "stage 1", "stage 2", ...

    Returns
    -------
    xarray.Dataset
        On ``stage`` (coordinate: the names): ``start`` and ``end`` (the ``dim`` coordinate of
        the first and last layer of each stage; ``start`` are the boundaries), ``start_index``
        (position), ``length``, ``within`` (the stage's sum of squared deviations) and
        ``stage_mean[stage, feature]``; on ``dim``: ``stage_label`` (the stage name of each
        layer) and ``stage_number`` (0-based); ``objective`` (:math:`J`); ``objective_path``
        on ``n_stages`` = 1..S (the optimal :math:`J` for each number of stages, for choosing
        S). ``attrs`` record ``n_stages``, ``dim`` and the objective.

    Raises
    ------
    ParameterError
        ``n_stages`` is not an integer in ``1..L``, ``names`` has the wrong length, or the
        profile is not a finite numeric ``[layer(, feature)]`` DataArray.

    References
    ----------
    Bellman (1961), "On the approximation of curves by line segments using dynamic
    programming", CACM 4; Fisher (1958), "On grouping for maximum homogeneity", JASA 53.
    """
    if not isinstance(dim, str):
        raise ParameterError(f"dim must be a dimension name (str), got {dim!r}")
    prof, feature = _check_profile(profile, dim)
    n_layers = prof.sizes[dim]
    n_stages = check_int("n_stages", n_stages, 1)
    if n_stages > n_layers:
        raise ParameterError(
            f"n_stages={n_stages} is larger than the number of layers ({n_layers}); every stage "
            f"needs at least one layer"
        )
    labels = stage_names(n_stages) if names is None else [str(x) for x in names]
    if len(labels) != n_stages or len(set(labels)) != n_stages:
        raise ParameterError(f"names must be {n_stages} distinct stage names, got {list(labels)!r}")
    x = np.asarray(prof.values, dtype=np.float64).reshape(n_layers, -1)
    starts, path = _segment(x, n_stages)
    bounds = [*starts, n_layers]
    number = np.repeat(np.arange(n_stages), np.diff(bounds))
    means = np.stack([x[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    within = np.array(
        [
            ((x[a:b] - means[s]) ** 2).sum()
            for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        ]
    )
    coord = prof[dim].values if dim in prof.coords else np.arange(n_layers)
    fdim = feature or FEATURE
    fcoord = (
        prof[feature].values
        if feature is not None and feature in prof.coords
        else np.arange(x.shape[1])
    )
    return xr.Dataset(
        {
            "start": ((STAGE,), coord[starts]),
            "end": ((STAGE,), coord[np.asarray(bounds[1:]) - 1]),
            "start_index": ((STAGE,), np.asarray(starts, dtype=np.int64)),
            "length": ((STAGE,), np.diff(bounds).astype(np.int64)),
            "within": ((STAGE,), within),
            "stage_mean": ((STAGE, fdim), means),
            "stage_label": ((dim,), np.asarray(labels, dtype=str)[number]),
            "stage_number": ((dim,), number.astype(np.int64)),
            "objective": ((), float(within.sum())),
            "objective_path": ((N_STAGES,), path),
        },
        coords={
            STAGE: labels,
            dim: coord,
            fdim: fcoord,
            N_STAGES: np.arange(1, n_stages + 1),
        },
        attrs={
            "n_stages": n_stages,
            "dim": dim,
            "objective": (
                "sum over stages of the squared Euclidean deviations of each layer's profile "
                "from its stage mean"
            ),
            "algorithm": "exact dynamic programming over contiguous segments, O(S L^2)",
        },
    )


# --------------------------------------------------------------------------- profile


def _normalise(counts: NDArray[np.float64], normalize: str, n_neurons: int) -> NDArray[np.float64]:
    """Normalise a ``[layer, type]`` count table (zero totals give zeros)."""
    if normalize == "none":
        return counts
    if normalize == "neurons":
        return counts / n_neurons
    axis = 0 if normalize == "type" else 1
    total = counts.sum(axis=axis, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def stage_profile(
    identification: xr.Dataset,
    *,
    types: Sequence[str] = PROFILE_TYPES,
    normalize: Normalize = "type",
) -> xr.DataArray:
    r"""The default per-layer profile for :func:`segment_stages`: neuron-type fractions.

    With :math:`c_{l,t}` the number of neurons of type t in layer l (see
    :func:`~langneurons.analysis.distributions.type_table`):

    - ``"type"`` (default): :math:`c_{l,t} / \sum_{l'} c_{l',t}`, the layer-wise distribution
      of each type, so every type weighs the same in the objective whatever its total;
    - ``"layer"``: :math:`c_{l,t} / \sum_{t'} c_{l,t'}`, the type composition of each layer;
    - ``"neurons"``: :math:`c_{l,t} / N`, the fraction of the layer's N neurons;
    - ``"none"``: the raw counts.

    Zero totals give zeros.

    Parameters
    ----------
    identification : xarray.Dataset
        An identification result.
    types : sequence of str
        Features of the profile (default specific, related, general).
    normalize : {"type", "layer", "neurons", "none"}
        How counts become fractions.

    Returns
    -------
    xarray.DataArray
        ``profile[layer, type]`` (float64), ``attrs`` recording ``types`` and ``normalize``.
    """
    if normalize not in ("type", "layer", "neurons", "none"):
        raise ParameterError(
            f"normalize must be one of 'type', 'layer', 'neurons', 'none', got {normalize!r}"
        )
    types_ = check_types(types)
    ds = require_result(identification, "identification", ("neuron_type", "general"))
    counts = type_counts(ds, types_).astype(np.float64)
    values = _normalise(counts, normalize, ds.sizes[NEURON])
    return xr.DataArray(
        values,
        dims=(LAYER, TYPE),
        coords={LAYER: ds[LAYER].values, TYPE: list(types_)},
        name="profile",
        attrs={"types": list(types_), "normalize": normalize},
    )


# --------------------------------------------------------------------------- bootstrap


def _mode(values: NDArray[np.float64]) -> tuple[float, float]:
    """Most frequent value (smallest among ties) and its frequency, ignoring NaN."""
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return math.nan, math.nan
    uniq, counts = np.unique(ok, return_counts=True)
    i = int(np.argmax(counts))
    return float(uniq[i]), float(counts[i] / ok.size)


def bootstrap_stages(
    run: xr.Dataset,
    *,
    n_stages: int = 4,
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    method: Method | None = None,
    params: IdentifyParams | None = None,
    types: Sequence[str] = PROFILE_TYPES,
    normalize: Normalize = "type",
    names: Sequence[str] | None = None,
    cluster: Cluster = "sequence",
    **identify_kwargs: Any,
) -> xr.Dataset:
    r"""Stage boundaries of a run with bootstrap intervals.

    The point estimate is ``segment_stages(stage_profile(identify(run, method,
    **params.keywords())), n_stages)``. Each of ``n_boot`` replicates resamples the run's
    sequences with replacement within each language, re-runs the identification on the summed
    counts, rebuilds the profile and re-segments it. Intervals are percentiles of the
    replicate boundaries taken as observed values (the inverted empirical CDF, so they are
    layers); the mode is the most frequent boundary (smallest on ties).

    Parameters
    ----------
    run : xarray.Dataset
        A run with per-sequence counts (``seq_n_active``, ``seq_n_tokens``, ``seq_language``)
        when ``n_boot > 0``.
    n_stages : int
        Number of stages (``<=`` the number of layers).
    n_boot : int >= 0
        Bootstrap replicates (0: point estimate only).
    seed : int >= 0
        Seed of the resampling.
    ci : float in (0, 1)
        Level of the percentile intervals.
    method : {"ternary", "lape"}, optional
        Identification rule (default: ``params.method``).
    params : IdentifyParams, optional
        The identification's parameters (default ``IdentifyParams()``).
    types, normalize
        Passed to :func:`stage_profile`.
    names : sequence of str, optional
        Passed to :func:`segment_stages`.
    cluster : {"sequence", "item"}
        What a replicate draws: sequences within each language, or items (``seq_id``).
    **identify_kwargs
        Deprecated: the loose identification keywords (use ``params=``).

    Returns
    -------
    xarray.Dataset
        The point segmentation (as :func:`segment_stages`), plus on ``stage``:
        ``start_low``, ``start_high`` (percentile interval of the boundary), ``start_mode``,
        ``start_mode_fraction``; ``boot_start[replicate, stage]`` (NaN where a replicate
        found no valid lambda); ``stage_probability[layer, stage]`` (fraction of replicates
        putting the layer in each stage) and ``agreement[layer]`` (fraction agreeing with the
        point estimate). ``attrs`` add the method, ``identify_params``, ``n_boot``, ``seed``,
        ``ci``, the profile's parameters and ``n_failed``.

    Raises
    ------
    ParameterError
        Bad parameters, ``n_stages`` above the number of layers, or ``n_boot > 0`` without
        per-sequence counts.
    NoValidLambdaError
        The identification of the run (or of every replicate) finds no valid lambda.

    References
    ----------
    Efron & Tibshirani (1993), An Introduction to the Bootstrap; Bellman (1961).
    """
    params_ = resolve_params(params, identify_kwargs, method=method, where="bootstrap_stages")
    run = check_dataset(run, "run")
    n_boot = check_int("n_boot", n_boot, 0)
    seed = check_seed(seed)
    ci = check_open_unit("ci", ci)
    n_stages = check_int("n_stages", n_stages, 1)
    if n_stages > run.sizes.get(LAYER, 0):
        raise ParameterError(
            f"n_stages={n_stages} is larger than the number of layers "
            f"({run.sizes.get(LAYER, 0)}); every stage needs at least one layer"
        )
    result = identify(run, params_.method, **params_.keywords())
    point = segment_stages(
        stage_profile(result, types=types, normalize=normalize), n_stages, names=names
    )
    n_layers = run.sizes[LAYER]

    def stat(replicate: xr.Dataset) -> NDArray[np.int64]:
        seg = segment_stages(
            stage_profile(replicate, types=types, normalize=normalize), n_stages, names=names
        )
        return np.asarray(seg["start_index"].values, dtype=np.int64)

    ((boot, failed),) = bootstrap_runs(
        [(run, "run")],
        params_,
        seed,
        n_boot,
        stat,
        (n_stages,),
        what="bootstrap_stages with n_boot > 0",
        cluster=cluster,
    )
    coord = np.asarray(point[LAYER].values)
    alpha = (1 - ci) / 2
    low = np.full(n_stages, np.nan)
    high = np.full(n_stages, np.nan)
    mode = np.full(n_stages, np.nan)
    mode_frac = np.full(n_stages, np.nan)
    ok = ~np.isnan(boot).any(axis=1)
    valid = boot[ok].astype(np.int64)
    boot_start = np.full(boot.shape, np.nan)
    if valid.size:
        values = coord[valid].astype(np.float64)  # boundaries as layer coordinates
        boot_start[ok] = values
        low = np.quantile(values, alpha, axis=0, method="inverted_cdf")
        high = np.quantile(values, 1 - alpha, axis=0, method="inverted_cdf")
        for s in range(n_stages):
            mode[s], mode_frac[s] = _mode(values[:, s])
    prob = np.zeros((n_layers, n_stages))
    for starts in valid:
        number = np.repeat(np.arange(n_stages), np.diff([*starts, n_layers]))
        prob[np.arange(n_layers), number] += 1
    if valid.shape[0]:
        prob /= valid.shape[0]
    else:
        prob[:] = np.nan
    point_number = np.asarray(point["stage_number"].values)
    agreement = prob[np.arange(n_layers), point_number]
    out = point.assign(
        start_low=((STAGE,), low),
        start_high=((STAGE,), high),
        start_mode=((STAGE,), mode),
        start_mode_fraction=((STAGE,), mode_frac),
        boot_start=((REPLICATE, STAGE), boot_start),
        stage_probability=((LAYER, STAGE), prob),
        agreement=((LAYER,), agreement),
    ).assign_coords({REPLICATE: np.arange(n_boot)})
    out.attrs.update(bootstrap_attrs(params_, n_boot, seed, ci, cluster, False))
    out.attrs.update(
        interval="percentile (inverted empirical CDF)",
        profile_types=list(check_types(types)),
        normalize=normalize,
        n_failed=failed,
        **identification_attrs(result, "run"),
    )
    return out


__all__ = [
    "FOUR_STAGES",
    "stage_names",
    "segment_stages",
    "stage_profile",
    "bootstrap_stages",
]
