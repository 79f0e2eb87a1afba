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

import itertools
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._resample import Cluster
from langneurons.analysis._validate import (
    check_choice,
    check_dataset,
    check_int,
    check_n_boot,
    check_open_unit,
    check_seed,
    check_types,
)
from langneurons.errors import ParameterError
from langneurons.names import LAYER

from ._stages_rules import (
    CRITERIA,
    FOUR_STAGES,
    THRESHOLDS,
    check_counts,
    check_n_stages,
    check_profile,
    choose_n_stages,
    count_inference,
    count_table,
    criterion_text,
    inference_attrs,
    mode_of,
    naming_text,
    positional_names,
    profile_of,
    segment_dp,
    signature,
    signature_names,
)
from .bootstrap import bootstrap_attrs, bootstrap_runs, identification_attrs
from .identify import identify
from .params import IdentifyParams, Method, resolve_params

STAGE, FEATURE, N_STAGES, TYPE, REPLICATE = "stage", "feature", "n_stages", "type", "replicate"
K, NORMALIZATION = "k", "normalization"

#: Default profile features of :func:`stage_profile`.
PROFILE_TYPES: tuple[str, ...] = ("specific", "related", "general")
#: Normalisations of :func:`stage_profile`.
NORMALIZATIONS: tuple[str, ...] = ("type", "layer", "neurons", "none", "zscore")
#: Default largest number of stages the automatic choice considers.
MAX_STAGES = 8

Normalize = Literal["type", "layer", "neurons", "none", "zscore"]
Criterion = Literal["permutation", "bic"]


stage_names = positional_names  # the positional names (public name kept)


# --------------------------------------------------------------------------- segmentation


def segment_stages(
    profile: xr.DataArray,
    n_stages: int | Literal["auto"] = 4,
    *,
    dim: str = LAYER,
    names: Sequence[str] | None = None,
    counts: xr.DataArray | None = None,
    max_stages: int = MAX_STAGES,
    criterion: Criterion = "permutation",
    n_perm: int | None = None,
    alpha: float = 0.05,
    seed: int = 0,
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

    **Number of stages.** The cost curve :math:`J_k` (the optimum for k = 1..K stages,
    ``K = min(max(max_stages, n_stages), L)``) is always reported, with two rules on it:

    - ``"permutation"`` (default of ``"auto"``): sequential permutation tests of k stages
      against more (after Kim et al. 2000, the joinpoint rule). For k = 1, 2, ... the
      statistic is the relative drop :math:`G_{k,m} = (J_k - J_m) / J_k` to
      :math:`m = \min(K, \max(k + 1, \lfloor L/2 \rfloor))` stages (so that several
      boundaries missing at once are seen, not only one); its null distribution comes from
      ``n_perm`` profiles made of the k-stage fit plus its residuals, each divided by its
      stage's sd (per feature), in a random layer order and multiplied by the sd of the
      stage they land in (for k = 1: the rows shuffled, a profile with no depth structure).
      The first k whose p-value :math:`(1 + \#\{G^* \ge G\}) / (n_{perm} + 1)` exceeds
      ``alpha`` is chosen (ties, as between profiles that m stages fit exactly, count
      against the data unless the shuffled profile needs more stages to fit exactly). On a
      profile without structure (exchangeable rows) more than one stage is chosen with
      probability at most ``alpha`` (an exact permutation test); for k >= 2 the shuffle is
      conditional on the fitted stages (approximate; the rescaling keeps each stage's
      spread: a plain residual shuffle across stages over-split count profiles, whose
      spread grows with the count). Stages of one or two layers look like outlying layers
      under this null and are found only when they stand far out. A
      one-layer stage at an end of the profile looks like one outlying layer under this null
      and is found only with many layers.
    - ``"bic"``: the minimum of the penalised cost
      :math:`J_k / \hat\sigma^2 + (kF + k - 1) \log n`, with n = L F values, k F stage means
      and k - 1 boundaries as parameters (Schwarz's criterion with the noise variance plugged
      in, Yao 1988); :math:`\hat\sigma^2` is the squared MAD of successive differences over
      :math:`0.6745 \sqrt 2`, per feature, averaged (Fryzlewicz 2014). Asymptotic, with no
      stated error rate: on identified simulated runs without depth structure it chose more
      than one stage in 20-31 % of runs (``benchmarks/calibration.py``; the permutation rule:
      2-5 %). Reported for comparison; prefer the permutation rule.

    ``n_stages="auto"`` takes the number the ``criterion`` chooses (at most ``max_stages``);
    an integer is used as given (default 4, the paper's analysis), with the BIC's choice (and,
    when ``n_perm > 0``, the permutation rule's) reported beside it.

    **Names.** With ``counts`` (a ``[layer, type]`` count table with ``specific`` and
    ``general``), the stages are named from their type signature: the specific density (the
    stage's specific neurons per layer over the model's) and the general share (general over
    the stage's counted neurons): a first stage with density >= 1.25 is "multilingual
    understanding"; a stage with density <= 0.25 and general share >= 0.5 is "shared semantic
    reasoning"; after it, a stage with density >= 1.25 is "multilingual output transformation";
    the last stage after that, covering at most a quarter of the layers, is "vocabulary
    output"; any other stage is "stage k" (each name is given once, in layer order; a single
    stage is "stage 1": there is nothing to contrast its signature with). Without
    ``counts`` the names are positional (four stages: the four names in order, else
    "stage k"), as they are always in ``positional_name``.

    Parameters
    ----------
    profile : xarray.DataArray
        ``[layer]`` or ``[layer, feature]`` (any feature dimension name), e.g. from
        :func:`stage_profile`. Numeric and finite; dask-backed profiles are computed.
    n_stages : int or "auto"
        Number of stages, ``1 <= n_stages <= L``, or ``"auto"`` (chosen by ``criterion``).
    dim : str
        The layer dimension of ``profile``.
    names : sequence of str, optional
        Stage names, in order (overrides the signature and positional names).
    counts : xarray.DataArray, optional
        ``[layer, type]`` neuron counts (e.g. ``type_table(result)``) to name stages by
        their signature.
    max_stages : int >= 1
        The largest number of stages of the cost curve and of the automatic choice.
    criterion : {"permutation", "bic"}
        The rule of ``n_stages="auto"``.
    n_perm : int >= 0, optional
        Permutations of each test of the permutation rule (0: not run). Default: 199 with
        ``n_stages="auto"``, 0 (not run) with a fixed number.
    alpha : float in (0, 1)
        Level of each test of the permutation rule.
    seed : int >= 0
        Seed of the permutations.

    Returns
    -------
    xarray.Dataset
        On ``stage`` (coordinate: the names): ``start`` and ``end`` (the ``dim`` coordinate of
        the first and last layer of each stage; ``start`` are the boundaries), ``start_index``
        (position), ``length``, ``within`` (the stage's sum of squared deviations),
        ``stage_mean[stage, feature]``, ``positional_name``, and with ``counts``
        ``specific_density`` and ``general_share``; on ``dim``: ``stage_label`` (the stage
        name of each layer) and ``stage_number`` (0-based); ``objective`` (:math:`J`);
        ``objective_path`` on ``n_stages`` = 1..S; on ``k`` = 1..K: ``cost`` (:math:`J_k`),
        ``bic``, ``gain`` (:math:`G_{k,k+1}`) and ``pvalue_more`` (p-value of k stages
        against more; NaN where not tested). ``attrs`` record ``n_stages`` (the number used),
        ``n_stages_rule`` ("fixed", "permutation" or "bic"), ``n_stages_permutation`` and
        ``n_stages_bic`` (what each rule chooses), ``n_stages_inference`` (``"valid"``
        for the permutation rule when its p-value can reach ``alpha``, its floor
        ``n_stages_min_pvalue`` being ``max(1 / (n_perm + 1), 1 / L!)``; ``"descriptive"``
        otherwise, for the BIC, which over-splits, and for a given number, with
        ``n_stages_inference_reason``), ``criterion`` (the rule in words),
        ``cost_curve``, ``naming`` and its thresholds.

    Raises
    ------
    ParameterError
        ``n_stages`` is not ``"auto"`` or an integer in ``1..L``, ``names`` has the wrong
        length, ``counts`` is not a count table of the profile's layers, an option is out of
        range, or the profile is not a finite numeric ``[layer(, feature)]`` DataArray.

    References
    ----------
    Bellman (1961), "On the approximation of curves by line segments using dynamic
    programming", CACM 4; Fisher (1958), "On grouping for maximum homogeneity", JASA 53;
    Kim, Fay, Feuer & Midthune (2000), "Permutation tests for joinpoint regression with
    applications to cancer rates", Stat Med 19; Yao (1988), "Estimating the number of
    change-points via Schwarz' criterion", Stat Probab Lett 6; Zhang et al. (2025) for the
    four stages.
    """
    if not isinstance(dim, str):
        raise ParameterError(f"dim must be a dimension name (str), got {dim!r}")
    prof, feature = check_profile(profile, dim)
    n_layers = prof.sizes[dim]
    fixed = check_n_stages(n_stages, n_layers)
    max_stages = check_int("max_stages", max_stages, 1)
    check_choice("criterion", criterion, CRITERIA)
    n_perm = check_int("n_perm", (199 if fixed is None else 0) if n_perm is None else n_perm, 0)
    alpha = check_open_unit("alpha", alpha)
    seed = check_seed(seed)
    if fixed is None and criterion == "permutation" and n_perm == 0:
        raise ParameterError(
            "n_stages='auto' with criterion='permutation' needs n_perm >= 1; pass n_perm or "
            "criterion='bic'"
        )
    table = check_counts(counts, dim, n_layers)
    x = np.asarray(prof.values, dtype=np.float64).reshape(n_layers, -1)
    choice = choose_n_stages(
        x,
        max(max_stages, fixed or 1),
        criterion=criterion,
        n_perm=n_perm,
        alpha=alpha,
        seed=seed,
    )
    k = fixed if fixed is not None else choice.n_stages
    if names is not None:
        labels = [str(x) for x in names]
        if len(labels) != k or len(set(labels)) != k:
            raise ParameterError(f"names must be {k} distinct stage names, got {labels!r}")
    starts, path = segment_dp(x, k)
    bounds = [*starts, n_layers]
    lengths = np.diff(bounds).astype(np.int64)
    positional = positional_names(k)
    sig = None if table is None else signature(table[0], table[1], starts)
    if names is None:
        labels = positional if sig is None else signature_names(sig, lengths.tolist())
    number = np.repeat(np.arange(k), lengths)
    means = np.stack([x[a:b].mean(axis=0) for a, b in itertools.pairwise(bounds)])
    within = np.array(
        [((x[a:b] - means[s]) ** 2).sum() for s, (a, b) in enumerate(itertools.pairwise(bounds))]
    )
    coord = prof[dim].values if dim in prof.coords else np.arange(n_layers)
    fdim = feature or FEATURE
    fcoord = (
        prof[feature].values
        if feature is not None and feature in prof.coords
        else np.arange(x.shape[1])
    )
    data: dict[str, Any] = {
        "start": ((STAGE,), coord[starts]),
        "end": ((STAGE,), coord[np.asarray(bounds[1:]) - 1]),
        "start_index": ((STAGE,), np.asarray(starts, dtype=np.int64)),
        "length": ((STAGE,), lengths),
        "within": ((STAGE,), within),
        "stage_mean": ((STAGE, fdim), means),
        "positional_name": ((STAGE,), np.asarray(positional, dtype=str)),
        "stage_label": ((dim,), np.asarray(labels, dtype=str)[number]),
        "stage_number": ((dim,), number.astype(np.int64)),
        "objective": ((), float(within.sum())),
        "objective_path": ((N_STAGES,), path),
        "cost": ((K,), choice.cost),
        "bic": ((K,), choice.bic),
        "gain": ((K,), choice.gain),
        "pvalue_more": ((K,), choice.pvalue),
    }
    if sig is not None:
        data["specific_density"] = ((STAGE,), sig.specific_density)
        data["general_share"] = ((STAGE,), sig.general_share)
    rule = "fixed" if fixed is not None else criterion
    return xr.Dataset(
        data,
        coords={
            STAGE: labels,
            dim: coord,
            fdim: fcoord,
            N_STAGES: np.arange(1, k + 1),
            K: np.arange(1, choice.cost.size + 1),
        },
        attrs={
            "n_stages": k,
            "n_stages_rule": rule,
            "n_stages_permutation": choice.n_permutation,
            "n_stages_bic": choice.n_bic,
            **count_inference(rule, n_layers, n_perm, alpha),
            "criterion": criterion_text(rule, n_perm, alpha),
            "max_stages": max_stages,
            "n_perm": n_perm,
            "alpha": alpha,
            "perm_seed": seed,
            "cost_curve": [float(c) for c in choice.cost],
            "naming": naming_text(names is not None, sig is not None),
            "naming_thresholds": dict(THRESHOLDS),
            "dim": dim,
            "objective": (
                "sum over stages of the squared Euclidean deviations of each layer's profile "
                "from its stage mean"
            ),
            "algorithm": "exact dynamic programming over contiguous segments, O(S L^2)",
        },
    )


# --------------------------------------------------------------------------- profile


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
    - ``"none"``: the raw counts (the same segmentation as ``"neurons"``: a common scale
      does not move a least-squares optimum);
    - ``"zscore"``: :math:`(c_{l,t} - \bar c_t) / s_t`, each type's counts standardised over
      the layers (population sd), so every type weighs the same by its spread.

    Zero totals and constant columns give zeros.

    Parameters
    ----------
    identification : xarray.Dataset
        An identification result.
    types : sequence of str
        Features of the profile (default specific, related, general).
    normalize : {"type", "layer", "neurons", "none", "zscore"}
        How counts become the profile.

    Returns
    -------
    xarray.DataArray
        ``profile[layer, type]`` (float64), ``attrs`` recording ``types`` and ``normalize``.
    """
    check_choice("normalize", normalize, NORMALIZATIONS)
    return profile_of(count_table(identification, types), normalize)


def normalization_sensitivity(
    identification: xr.Dataset,
    n_stages: int,
    *,
    types: Sequence[str] = PROFILE_TYPES,
    normalizations: Sequence[str] = ("type", "layer", "neurons", "zscore"),
) -> xr.Dataset:
    """Stage boundaries of one identification under each profile normalisation.

    The same ``n_stages`` are fitted by :func:`segment_stages` to :func:`stage_profile` of
    each normalisation (``"none"`` is left out by default: it gives the partition of
    ``"neurons"``). A boundary that moves between normalisations is a property of the
    weighting of the types, not of the model.

    Returns
    -------
    xarray.Dataset
        ``start[normalization, stage]`` (the ``layer`` coordinate of each stage's first
        layer; the stage coordinate is 1..S), ``start_min`` / ``start_max`` / ``start_range``
        on ``stage``; ``attrs``: ``boundaries`` (per normalisation, the boundaries as a list),
        ``max_range`` (the largest range of an inner boundary, in layers).
    """
    norms = [check_choice("normalizations", n, NORMALIZATIONS) for n in normalizations]
    if not norms:
        raise ParameterError("normalizations is empty; name at least one of " + str(NORMALIZATIONS))
    counts = count_table(identification, types)
    n_layers = counts.sizes[LAYER]
    k = check_n_stages(n_stages, n_layers)
    if k is None:
        raise ParameterError("normalization_sensitivity needs an integer n_stages, got 'auto'")
    starts = np.stack(
        [segment_stages(profile_of(counts, n), k, n_perm=0)["start"].values for n in norms]
    ).astype(np.int64)
    span = starts.max(axis=0) - starts.min(axis=0)
    return xr.Dataset(
        {
            "start": ((NORMALIZATION, STAGE), starts),
            "start_min": ((STAGE,), starts.min(axis=0)),
            "start_max": ((STAGE,), starts.max(axis=0)),
            "start_range": ((STAGE,), span),
        },
        coords={NORMALIZATION: norms, STAGE: np.arange(1, k + 1)},
        attrs={
            "boundaries": {n: [int(v) for v in row] for n, row in zip(norms, starts, strict=True)},
            "max_range": int(span[1:].max()) if k > 1 else 0,
        },
    )


# --------------------------------------------------------------------------- bootstrap


def bootstrap_stages(
    run: xr.Dataset,
    *,
    n_stages: int | Literal["auto"] = 4,
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    method: Method | None = None,
    params: IdentifyParams | None = None,
    types: Sequence[str] = PROFILE_TYPES,
    normalize: Normalize = "type",
    names: Sequence[str] | None = None,
    cluster: Cluster = "sequence",
    max_stages: int = MAX_STAGES,
    criterion: Criterion = "permutation",
    n_perm: int | None = None,
    alpha: float = 0.05,
    **identify_kwargs: Any,
) -> xr.Dataset:
    r"""Stage boundaries of a run, their sensitivity to the normalisation, and bootstrap intervals.

    The point estimate is ``segment_stages(stage_profile(identify(run, method,
    **params.keywords())), n_stages, counts=...)``, with the stages named by their type
    signature when ``types`` include specific and general (see :func:`segment_stages`; the
    choice of ``n_stages="auto"`` and the cost curve are reported as there). The same number
    of stages is fitted to the profile under every other normalisation
    (:func:`normalization_sensitivity`). Each of ``n_boot`` replicates resamples the run's
    sequences with replacement within each language, re-runs the identification on the summed
    counts, rebuilds the profile and re-segments it with the point estimate's number of
    stages (the intervals are conditional on that number). Intervals are percentiles of the
    replicate boundaries taken as observed values (the inverted empirical CDF, so they are
    layers); the mode is the most frequent boundary (smallest on ties). With ``n_boot=0``
    (a run without per-sequence counts) the boundaries are descriptive:
    ``attrs["inference"] == "descriptive"``.

    Parameters
    ----------
    run : xarray.Dataset
        A run with per-sequence counts (``seq_n_active``, ``seq_n_tokens``, ``seq_language``)
        when ``n_boot > 0``.
    n_stages : int or "auto"
        Number of stages (``<=`` the number of layers), or ``"auto"``.
    n_boot : int >= 0
        Bootstrap replicates (0: point estimate only, descriptive).
    seed : int >= 0
        Seed of the resampling and of the permutations.
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
    max_stages, criterion, n_perm, alpha
        The choice of the number of stages, passed to :func:`segment_stages`.
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
        point estimate); ``normalization_start[normalization, stage]`` with
        ``normalization_min`` / ``normalization_max`` on ``stage``. ``attrs`` add the method,
        ``identify_params``, ``n_boot``, ``seed``, ``ci``, the profile's parameters,
        ``n_failed``, ``inference`` ("bootstrap" or "descriptive"),
        ``normalization_boundaries`` and ``normalization_max_range``.

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
    n_boot = check_n_boot(n_boot)
    seed = check_seed(seed)
    ci = check_open_unit("ci", ci)
    check_choice("normalize", normalize, NORMALIZATIONS)
    check_n_stages(n_stages, run.sizes.get(LAYER, 0))
    result = identify(run, params_.method, **params_.keywords())
    counts = count_table(result, types)
    signed = {"specific", "general"} <= set(check_types(types))
    point = segment_stages(
        profile_of(counts, normalize),
        n_stages,
        names=names,
        counts=counts if signed else None,
        max_stages=max_stages,
        criterion=criterion,
        n_perm=n_perm,
        alpha=alpha,
        seed=seed,
    )
    k = int(point.attrs["n_stages"])
    n_layers = run.sizes[LAYER]

    def stat(replicate: xr.Dataset) -> NDArray[np.int64]:
        profile = stage_profile(replicate, types=types, normalize=normalize)
        x = np.asarray(profile.values, dtype=np.float64).reshape(n_layers, -1)
        return np.asarray(segment_dp(x, k)[0], dtype=np.int64)

    ((boot, failed),) = bootstrap_runs(
        [(run, "run")],
        params_,
        seed,
        n_boot,
        stat,
        (k,),
        what="bootstrap_stages with n_boot > 0",
        cluster=cluster,
    )
    coord = np.asarray(point[LAYER].values)
    alpha_ci = (1 - ci) / 2
    low, high, mode, mode_frac = (np.full(k, np.nan) for _ in range(4))
    ok = ~np.isnan(boot).any(axis=1)
    valid = boot[ok].astype(np.int64)
    boot_start = np.full(boot.shape, np.nan)
    if valid.size:
        values = coord[valid].astype(np.float64)  # boundaries as layer coordinates
        boot_start[ok] = values
        low = np.quantile(values, alpha_ci, axis=0, method="inverted_cdf")
        high = np.quantile(values, 1 - alpha_ci, axis=0, method="inverted_cdf")
        for s in range(k):
            mode[s], mode_frac[s] = mode_of(values[:, s])
    prob = np.zeros((n_layers, k))
    for starts in valid:
        number = np.repeat(np.arange(k), np.diff([*starts, n_layers]))
        prob[np.arange(n_layers), number] += 1
    if valid.shape[0]:
        prob /= valid.shape[0]
    else:
        prob[:] = np.nan
    point_number = np.asarray(point["stage_number"].values)
    agreement = prob[np.arange(n_layers), point_number]
    sens = normalization_sensitivity(result, k, types=types)  # "none" partitions as "neurons"
    out = point.assign(
        start_low=((STAGE,), low),
        start_high=((STAGE,), high),
        start_mode=((STAGE,), mode),
        start_mode_fraction=((STAGE,), mode_frac),
        boot_start=((REPLICATE, STAGE), boot_start),
        stage_probability=((LAYER, STAGE), prob),
        agreement=((LAYER,), agreement),
        normalization_start=((NORMALIZATION, STAGE), sens["start"].values),
        normalization_min=((STAGE,), sens["start_min"].values),
        normalization_max=((STAGE,), sens["start_max"].values),
    ).assign_coords({REPLICATE: np.arange(n_boot), NORMALIZATION: sens[NORMALIZATION].values})
    out.attrs.update(bootstrap_attrs(params_, n_boot, seed, ci, cluster, False))
    out.attrs.update(
        interval="percentile (inverted empirical CDF)",
        profile_types=list(check_types(types)),
        normalize=normalize,
        n_failed=failed,
        normalization_boundaries=sens.attrs["boundaries"],
        normalization_max_range=sens.attrs["max_range"],
        **identification_attrs(result, "run"),
    )
    out.attrs.update(inference_attrs(n_boot, cluster, k))
    return out


__all__ = [
    "FOUR_STAGES",
    "NORMALIZATIONS",
    "stage_names",
    "segment_stages",
    "stage_profile",
    "normalization_sensitivity",
    "bootstrap_stages",
]
