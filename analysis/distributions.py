"""How neuron types change from a base run to an aligned run, with bootstrap intervals.

:func:`type_change` (per layer and type) and :func:`shared_by_change` (the shared-by-N histogram)
put bootstrap intervals on the change by resampling each run's sequences
(:mod:`~langneurons.analysis._resample`) and re-running
:func:`~langneurons.analysis.identify.identify` on every replicate. The type tables and their
chi-square test are in :mod:`~langneurons.analysis.type_tables`, re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._kernels import bootstrap_se, centred_pvalue, percentile_interval
from langneurons.analysis._resample import CLUSTERS, Cluster, Resampler
from langneurons.analysis._validate import (
    as_labels,
    check_choice,
    check_int,
    check_n_boot,
    check_open_unit,
    check_runs,
    check_seed,
    check_types,
    languages_of,
)
from langneurons.errors import ParameterError
from langneurons.names import LANGUAGE, LAYER, NEURON, SEQ_ID, SEQ_LANGUAGE, TYPES

from .bootstrap import (
    bootstrap_attrs,
    bootstrap_runs,
    bootstrap_statistic,
    identification_attrs,
    swap_pvalue,
    swap_statistic,
)
from .identify import identify
from .params import IdentifyParams, Method, resolve_params
from .type_tables import ALL_TYPES, compare_type_distributions, type_counts, type_table

TYPE, REPLICATE, N_SHARED, PERMUTATION = "type", "replicate", "n_shared", "permutation"

#: What the label-swap p-value of :func:`type_change` tests.
SWAP_NULL = (
    "two-sided label-swap permutation p: null = the runs are exchangeable unit by unit (each "
    "unit's counts could have come from either model); each pseudo-run is re-identified with "
    "the same rule, so changes forced by a fixed selection are in the null distribution"
)

Paired = bool | Literal["auto"]


def _unit_keys(run: xr.Dataset, cluster: str) -> list[str] | None:
    """The seq_id keys of the resampled units of ``run`` (None without ``seq_id``).

    ``cluster="item"``: one key per seq_id; ``"sequence"``: ``language/seq_id`` per sequence
    (repeats kept, so a seq_id used by several sequences of one language shows as a repeat).
    """
    if SEQ_ID not in run.variables or SEQ_LANGUAGE not in run.variables:
        return None
    ids = as_labels(run[SEQ_ID]).reshape(-1)
    langs = as_labels(run[SEQ_LANGUAGE]).reshape(-1)
    used = np.isin(langs, as_labels(run[LANGUAGE])) if LANGUAGE in run.coords else langs == langs
    if cluster == "item":
        return sorted(set(ids[used].tolist()))
    return [f"{lang}/{i}" for lang, i in zip(langs[used].tolist(), ids[used].tolist(), strict=True)]


def resolve_paired(
    base_run: xr.Dataset, aligned_run: xr.Dataset, paired: object, cluster: str, n_boot: int
) -> bool:
    """Whether two runs are resampled together: ``paired="auto"`` decides from their seq_ids.

    Auto: paired when both runs hold exactly the same resampled units (the same seq_ids; with
    ``cluster="sequence"`` the same seq_id in the same language, each once), unpaired when
    they share none (or a run has no ``seq_id``); a partial overlap is a ParameterError (pass
    ``paired=False`` to resample them independently). ``paired=True`` requires the same units.
    Nothing is resampled when ``n_boot`` is 0, so the answer is then False.
    """
    if not (paired == "auto" or isinstance(paired, bool)):
        raise ParameterError(f"paired must be True, False or 'auto', got {paired!r}")
    check_choice("cluster", cluster, CLUSTERS)
    if paired is False or n_boot == 0:
        return False
    ka, kb = _unit_keys(base_run, cluster), _unit_keys(aligned_run, cluster)
    if ka is None or kb is None:
        if paired is True:
            raise ParameterError(
                "paired=True needs seq_id[sequence] in both runs to match their sequences; "
                "pass paired=False (or 'auto')"
            )
        return False
    sa, sb = set(ka), set(kb)
    unit = "item" if cluster == "item" else "sequence (language/seq_id)"
    if cluster == "sequence" and (len(sa) < len(ka) or len(sb) < len(kb)):
        if paired is True or sa & sb:
            raise ParameterError(
                "seq_ids repeat within a language, so sequences cannot be paired one to one; "
                "pass cluster='item' (pairs the items) or paired=False"
            )
        return False
    if sa == sb:
        return True
    shared = len(sa & sb)
    if shared == 0 and paired == "auto":
        return False
    raise ParameterError(
        f"base_run and aligned_run share {shared} of their {len(sa | sb)} {unit} keys; a "
        "paired resampling needs the same ones in both (the same corpus): pass paired=False "
        "to resample each run on its own"
    )


def _points(
    base_run: xr.Dataset, aligned_run: xr.Dataset, params: IdentifyParams
) -> tuple[xr.Dataset, xr.Dataset]:
    """The two point identifications."""
    kw = params.keywords()
    return identify(base_run, params.method, **kw), identify(aligned_run, params.method, **kw)


def _samplers(
    base_run: xr.Dataset, aligned_run: xr.Dataset, role: str, what: str, cluster: str
) -> list[Resampler]:
    """The samplers of the base and the aligned run, for their bootstrap or label swaps."""
    return [
        Resampler(run, role, what, name=name, minimum=1, cluster=cluster)
        for run, name in ((base_run, "base_run"), (aligned_run, "aligned_run"))
    ]


def type_change(
    base_run: xr.Dataset,
    aligned_run: xr.Dataset,
    method: Method | None = None,
    *,
    params: IdentifyParams | None = None,
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    types: Sequence[str] = TYPES,
    cluster: Cluster = "sequence",
    paired: Paired = "auto",
    n_perm: int = 0,
    **identify_kwargs: Any,
) -> xr.Dataset:
    r"""Per-layer change of each neuron type from a base run to an aligned run, with intervals.

    :math:`\Delta_{l,t} = c^{aligned}_{l,t} - c^{base}_{l,t}` where :math:`c_{l,t}` is the
    :func:`type_table` count of type ``t`` in layer ``l`` of
    ``identify(run, method, **params.keywords())``.

    Uncertainty comes from the sequences: each bootstrap replicate resamples, within each
    language, as many sequences as the language has (with replacement) -- the same seq_ids in
    both runs when they share their corpus (paired), each run on its own otherwise -- sums
    their per-sequence counts into ``n_active`` / ``n_tokens``, re-runs the whole
    identification (tau, lambda, selection) and recomputes :math:`\Delta`. Intervals are
    bootstrap percentiles (Efron & Tibshirani 1993); p-values of :math:`\Delta = 0` are
    two-sided by centring the bootstrap distribution (Hall & Wilson 1991), uncorrected for
    multiple testing.

    With ``n_perm > 0`` (paired runs only) a label-swap permutation test is added: in each
    permutation every unit's sequences (items with ``cluster="item"``) trade places between the
    runs with probability 1/2, both pseudo-runs are identified with the same rule, and the
    change is recomputed; the p-value is :math:`(1 + \#\{|\Delta^*| \ge |\Delta|\}) /
    (1 + P)`. Its null is that the two runs are exchangeable unit by unit (what the aligned
    model does on an item, the base model could have done). It respects a fixed selection:
    every pseudo-run selects its own ``top_rate`` and its own tau, so a change that the cap
    forces on one type when another moves is part of the null distribution too; the
    bootstrap p-value above does not know this. The chi-square of
    :func:`compare_type_distributions` treats neurons as independent draws and is
    descriptive only.

    Parameters
    ----------
    base_run, aligned_run : xarray.Dataset
        Runs (numpy- or dask-backed) with the same layer x neuron shape and languages. With
        ``n_boot > 0`` both need per-sequence counts (``seq_n_active``, ``seq_n_tokens``,
        ``seq_language``).
    method : {"ternary", "lape"}
        Identification rule.
    n_boot : int >= 0
        Bootstrap replicates per run (0: point estimates, intervals NaN).
    seed : int >= 0
        Seed of the resampling: replicate b draws from SeedSequence(seed).spawn(n_boot)[b],
        the base run first, then the aligned run (the same draw for both when paired).
    ci : float in (0, 1)
        Level of the percentile intervals.
    types : sequence of str
        Types to count (see :func:`type_table`).
    params : IdentifyParams, optional
        The identification's parameters (``role``, ``top_rate``, ``bar``, ``lam``, ...) for the
        point estimate and every replicate; default ``IdentifyParams()``.
    cluster : {"sequence", "item"}
        What a replicate draws: sequences within each language (default), or items (every
        sequence of a ``seq_id``, in all languages at once).
    paired : bool or "auto"
        Draw the same units for both runs (a paired bootstrap: items shared by the runs move
        together, so what they have in common cancels from the change). ``"auto"`` (default)
        pairs when both runs hold the same ``seq_id``\ s (the same corpus), resamples each run
        on its own when they share none, and is an error when they share some (pass
        ``paired=False``); see :func:`resolve_paired`. ``attrs["paired"]`` records the choice.
    n_perm : int >= 0
        Label-swap permutations (0: none). Needs paired runs; the permutations draw from
        ``SeedSequence(seed + 1)``, independent of the bootstrap.
    **identify_kwargs
        Deprecated: the loose identification keywords (use ``params=``).

    Returns
    -------
    xarray.Dataset
        With ``n_perm > 0`` also ``change_pvalue_swap[layer, type]``,
        ``total_change_pvalue_swap[type]`` and the null ``swap_total_change[permutation,
        type]``; ``attrs["pvalue_swap"]`` states the null.
        ``base``, ``aligned``, ``change`` (``[layer, type]``, int64), ``change_low``,
        ``change_high``, ``change_se``, ``change_pvalue`` (``[layer, type]``),
        ``boot_change[replicate, layer, type]`` (NaN for replicates where identification found
        no valid lambda), and over all layers ``total_base``, ``total_aligned``,
        ``total_change``, ``total_change_low``, ``total_change_high`` (``[type]``). ``attrs``
        record the method, ``identify_params``, ``n_boot``, ``seed``, ``ci``, the failed
        replicate counts and each run's tau / lambda.

    Raises
    ------
    ParameterError
        Bad parameters, runs of different shapes or languages, or ``n_boot > 0`` without
        per-sequence counts.
    NoValidLambdaError
        The point identification, or every replicate of a run, finds no valid lambda.

    Notes
    -----
    The per-sequence counts of the roles the identification reads are loaded into memory once
    per run, in their stored dtype (S sequences x L x N values; e.g. 2 GB for 4,000 uint16
    sequences of a 32 x 14336 model); each replicate costs one weighted sum over them plus one
    identification. With ``lam="auto"`` every replicate re-searches lambda, so the intervals
    include the uncertainty of that choice; replicates where no lambda is valid are NaN and
    counted in ``attrs``. Per-sequence counts that do not sum to ``n_tokens`` / ``n_active``
    are a StoreValidationError (run ``langneurons validate``).

    References
    ----------
    Efron & Tibshirani (1993), An Introduction to the Bootstrap; Hall & Wilson (1991), "Two
    guidelines for bootstrap hypothesis testing", Biometrics 47.
    """
    params_ = resolve_params(params, identify_kwargs, method=method, where="type_change")
    base_run, aligned_run = check_runs(base_run, aligned_run)
    n_boot = check_n_boot(n_boot)
    n_perm = check_int("n_perm", n_perm, 0)
    paired_ = resolve_paired(base_run, aligned_run, paired, cluster, max(n_boot, n_perm))
    if n_perm and not paired_:
        raise ParameterError(
            "n_perm > 0 swaps items between the runs, so both need the same seq_ids (the same "
            "corpus, paired); pass n_perm=0 for runs on different corpora"
        )
    seed = check_seed(seed)
    ci = check_open_unit("ci", ci)
    types_ = check_types(types)
    res_b, res_a = _points(base_run, aligned_run, params_)
    cb, ca = type_counts(res_b, types_), type_counts(res_a, types_)
    change = ca - cb
    shape = change.shape

    def stat(result: xr.Dataset) -> NDArray[np.int64]:
        return type_counts(result, types_)

    # one sampler per run, for the bootstrap and the label swaps alike (none read without them)
    what = f"type_change with {'n_boot' if n_boot else 'n_perm'} > 0"
    samplers = (
        _samplers(base_run, aligned_run, params_.role, what, cluster) if n_boot or n_perm else []
    )
    (boot_b, fail_b), (boot_a, fail_a) = (
        bootstrap_statistic(samplers, params_, seed, n_boot, stat, shape, paired=paired_)
        if samplers
        else [(np.full((0, *shape), np.nan), 0)] * 2
    )
    boot = boot_a - boot_b
    low, high = percentile_interval(boot, ci)
    total_boot = boot.sum(axis=1)
    total_low, total_high = percentile_interval(total_boot, ci)
    lt = (LAYER, TYPE)
    attrs = bootstrap_attrs(params_, n_boot, seed, ci, cluster, paired_)
    attrs.update(
        paired_requested=paired,
        n_failed_base=fail_b,
        n_failed_aligned=fail_a,
        types=list(types_),
        pvalue="two-sided bootstrap p-value of change == 0 by centring, uncorrected",
        **identification_attrs(res_b, "base"),
        **identification_attrs(res_a, "aligned"),
    )
    swap: dict[str, Any] = {}
    if n_perm:
        null, n_failed = swap_statistic(samplers, params_, seed + 1, n_perm, stat, shape)
        swap = {
            "change_pvalue_swap": (lt, swap_pvalue(null, change)),
            "total_change_pvalue_swap": ((TYPE,), swap_pvalue(null.sum(axis=1), change.sum(0))),
            "swap_total_change": ((PERMUTATION, TYPE), null.sum(axis=1)),
        }
        attrs.update(
            n_perm=n_perm,
            n_failed_swap=n_failed,
            pvalue_swap=SWAP_NULL,
            min_pvalue_swap=1.0 / (1 + n_perm),
        )
    return xr.Dataset(
        {
            **swap,
            "base": (lt, cb),
            "aligned": (lt, ca),
            "change": (lt, change),
            "change_low": (lt, low),
            "change_high": (lt, high),
            "change_se": (lt, bootstrap_se(boot)),
            "change_pvalue": (lt, centred_pvalue(boot, change)),
            "boot_change": ((REPLICATE, LAYER, TYPE), boot),
            "total_base": ((TYPE,), cb.sum(axis=0)),
            "total_aligned": ((TYPE,), ca.sum(axis=0)),
            "total_change": ((TYPE,), change.sum(axis=0)),
            "total_change_low": ((TYPE,), total_low),
            "total_change_high": ((TYPE,), total_high),
        },
        coords={
            LAYER: base_run[LAYER].values,
            TYPE: list(types_),
            REPLICATE: np.arange(n_boot),
            **({PERMUTATION: np.arange(n_perm)} if n_perm else {}),
        },
        attrs=attrs,
    )


@dataclasses.dataclass(frozen=True)
class PairedSwap:
    """What every label-swap test of two paired runs starts from (:func:`paired_swap_inputs`)."""

    params: IdentifyParams
    n_perm: int
    seed: int
    cluster: str
    paired: Paired
    base_result: xr.Dataset
    aligned_result: xr.Dataset
    samplers: list[Resampler]

    def attrs(self, n_failed: int, **extra: Any) -> dict[str, Any]:
        """The attributes every label-swap test records (``extra`` after the common ones)."""
        return {
            "method": self.params.method,
            "identify_params": self.params.to_attrs(),
            "n_perm": self.n_perm,
            "seed": self.seed,
            "cluster": self.cluster,
            "paired": True,
            "paired_requested": self.paired,
            "n_failed_swap": n_failed,
            "pvalue_swap": SWAP_NULL,
            "min_pvalue_swap": 1.0 / (1 + self.n_perm),
            **extra,
            "inference": "valid",
            "unit": "item" if self.cluster == "item" else "sequence",
            **identification_attrs(self.base_result, "base"),
            **identification_attrs(self.aligned_result, "aligned"),
        }


def paired_swap_inputs(
    base_run: xr.Dataset,
    aligned_run: xr.Dataset,
    method: Method | None,
    params: IdentifyParams | None,
    n_perm: int,
    seed: int,
    cluster: Cluster,
    paired: Paired,
    where: str,
) -> PairedSwap:
    """Check the arguments of the label-swap test ``where``, identify both runs and make their
    samplers (ParameterError when the runs are not paired: the test swaps their items)."""
    base_run, aligned_run = check_runs(base_run, aligned_run)
    params_ = resolve_params(params, {}, method=method, where=where)
    n_perm = check_int("n_perm", n_perm, 1)
    seed = check_seed(seed)
    if not resolve_paired(base_run, aligned_run, paired, cluster, n_perm):
        raise ParameterError(
            f"{where} swaps items between the runs, so both need the same seq_ids (the same "
            "corpus through both models, with per-sequence counts)"
        )
    res_b, res_a = _points(base_run, aligned_run, params_)
    samplers = _samplers(base_run, aligned_run, params_.role, where, cluster)
    return PairedSwap(params_, n_perm, seed, cluster, paired, res_b, res_a, samplers)


def mask_sizes(result: xr.Dataset) -> NDArray[np.int64]:
    """Neurons in each language's mask (``[language]``, in the result's language order)."""
    mask = result["mask"].transpose(LANGUAGE, LAYER, NEURON)
    return np.asarray(mask.values, dtype=bool).reshape(mask.shape[0], -1).sum(axis=1)


def mask_change(
    base_run: xr.Dataset,
    aligned_run: xr.Dataset,
    method: Method | None = None,
    *,
    params: IdentifyParams | None = None,
    n_perm: int = 99,
    seed: int = 0,
    cluster: Cluster = "sequence",
    paired: Paired = "auto",
) -> xr.Dataset:
    r"""Change of each language's mask size from a base run to an aligned run, with a label-swap
    permutation test over the shared items.

    :math:`\Delta_k = m^{aligned}_k - m^{base}_k`, where :math:`m_k` counts the neurons in
    language k's mask of ``identify(run, method, **params.keywords())``. Mask sizes, unlike the
    selection's, are free to move under a fixed ``top_rate``; but a fixed selection still ties
    them together (a neuron gained by one language's mask is often lost by another's), so no
    closed-form test applies. The test permutes what is exchangeable under the null: in each of
    ``n_perm`` permutations every unit's sequences (items with ``cluster="item"``) trade places
    between the runs with probability 1/2, both pseudo-runs are identified with the same rule,
    and :math:`\Delta^*` is recomputed. Per language,
    :math:`p_k = (1 + \#\{|\Delta^*_k| \ge |\Delta_k|\}) / (1 + P)`; the familywise
    (single-step max-T, Westfall & Young 1993) p-value over the K languages is
    :math:`(1 + \#\{\max_j |\Delta^*_j| \ge |\Delta_k|\}) / (1 + P)`.

    Needs paired runs (the same seq_ids: the same corpus through both models) with per-sequence
    counts; the smallest attainable p-value is ``1 / (1 + n_perm)`` (``attrs``).

    Returns
    -------
    xarray.Dataset
        ``base``, ``aligned``, ``change``, ``change_pvalue_swap``, ``change_pvalue_maxt``
        (``[language]``) and the null ``swap_change[permutation, language]``; ``attrs`` hold
        the parameters, ``pvalue_swap`` (the null), ``min_pvalue_swap``, ``n_failed_swap``
        (pseudo-runs with no valid lambda, left out), ``inference`` and ``paired``.
    """
    setup = paired_swap_inputs(
        base_run, aligned_run, method, params, n_perm, seed, cluster, paired, "mask_change"
    )
    params_, n_perm, seed = setup.params, setup.n_perm, setup.seed
    res_b, res_a = setup.base_result, setup.aligned_result
    langs = languages_of(res_b)
    if langs != languages_of(res_a):
        raise ParameterError(
            f"base and aligned identify different languages ({langs} vs "
            f"{languages_of(res_a)}); compare runs over the same languages"
        )
    mb, ma = mask_sizes(res_b), mask_sizes(res_a)
    change = ma - mb
    null, n_failed = swap_statistic(
        setup.samplers, params_, seed, n_perm, mask_sizes, (len(langs),)
    )
    finite = np.isfinite(null).all(axis=1)
    top = np.abs(null[finite]).max(axis=1, initial=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        maxt = (1.0 + (top[:, None] >= np.abs(change)[None, :] - 1e-9).sum(axis=0)) / (
            1.0 + finite.sum()
        )
    attrs = setup.attrs(
        n_failed, pvalue_maxt="single-step max-T over languages: familywise error controlled"
    )
    return xr.Dataset(
        {
            "base": ((LANGUAGE,), mb),
            "aligned": ((LANGUAGE,), ma),
            "change": ((LANGUAGE,), change),
            "change_pvalue_swap": ((LANGUAGE,), swap_pvalue(null, change)),
            "change_pvalue_maxt": ((LANGUAGE,), np.where(finite.any(), maxt, np.nan)),
            "swap_change": ((PERMUTATION, LANGUAGE), null),
        },
        coords={LANGUAGE: langs, PERMUTATION: np.arange(n_perm)},
        attrs=attrs,
    )


def _shared_hist(result: xr.Dataset, k: int) -> NDArray[np.int64]:
    """Histogram over all neurons of the number of languages above tau (bins 0..K)."""
    shared = np.asarray(result["shared_by"].values).reshape(-1).astype(np.int64)
    return np.bincount(shared, minlength=k + 1)[: k + 1].astype(np.int64)


def shared_by_change(
    base_run: xr.Dataset,
    aligned_run: xr.Dataset,
    method: Method | None = None,
    *,
    params: IdentifyParams | None = None,
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    cluster: Cluster = "sequence",
    paired: Paired = "auto",
    **identify_kwargs: Any,
) -> xr.Dataset:
    r"""Change of the shared-by-N histogram from a base run to an aligned run.

    For each run, :math:`h_N` counts the neurons (all of them, selected or not) that are above
    :math:`\tau` in exactly N languages (N = 0..K), and :math:`f_N = h_N / M` with M = L x N
    neurons. The change is :math:`\Delta_N = f^{aligned}_N - f^{base}_N`, summarised by

    the total variation distance :math:`T = \frac12 \sum_N |\Delta_N|`. (The mean number of
    languages per neuron, :math:`\sum_N N f_N`, is not compared: it counts the probabilities
    above the quantile :math:`\tau`, which is fixed at about :math:`(1 - \text{bar}) K` by
    construction.)

    Intervals are bootstrap percentiles over sequences resampled within each language (paired
    across the runs when they share their seq_ids), with identification re-run per replicate
    (see :func:`type_change`).
    p-values are two-sided bootstrap tests by centring (Hall & Wilson 1991): for the histogram,
    :math:`p = (1 + \#\{T^*_b \ge T\}) / (1 + B)` with
    :math:`T^*_b = \frac12 \sum_N |\Delta^*_{b,N} - \Delta_N|`; per bin,
    :math:`p = (1 + \#\{|\Delta^*_b - \Delta| \ge |\Delta|\}) / (1 + B)`.

    Parameters
    ----------
    base_run, aligned_run : xarray.Dataset
        Runs with the same layer x neuron shape and languages (per-sequence counts needed when
        ``n_boot > 0``).
    method : {"ternary", "lape"}
        Identification rule (``shared_by`` depends only on ``bar``, but tau is recomputed
        exactly as the rule does).
    n_boot, seed, ci, params, cluster, paired, **identify_kwargs
        As in :func:`type_change`.

    Returns
    -------
    xarray.Dataset
        On ``n_shared`` = 0..K: ``base``, ``aligned`` (counts), ``base_fraction``,
        ``aligned_fraction``, ``change`` (fraction), ``change_low``, ``change_high``,
        ``change_pvalue``; ``boot_change[replicate, n_shared]``; scalars ``tvd`` and
        ``tvd_pvalue``. ``attrs`` as in :func:`type_change`.

    References
    ----------
    Hall & Wilson (1991), Biometrics 47; Efron & Tibshirani (1993).
    """
    params_ = resolve_params(params, identify_kwargs, method=method, where="shared_by_change")
    base_run, aligned_run = check_runs(base_run, aligned_run)
    n_boot = check_n_boot(n_boot)
    paired_ = resolve_paired(base_run, aligned_run, paired, cluster, n_boot)
    seed = check_seed(seed)
    ci = check_open_unit("ci", ci)
    k = len(languages_of(base_run))
    m = base_run.sizes[LAYER] * base_run.sizes[NEURON]
    res_b, res_a = _points(base_run, aligned_run, params_)
    hb, ha = _shared_hist(res_b, k), _shared_hist(res_a, k)
    fb, fa = hb / m, ha / m
    change = fa - fb
    bins = np.arange(k + 1)

    def stat(result: xr.Dataset) -> NDArray[np.float64]:
        return _shared_hist(result, k) / m

    (boot_b, fail_b), (boot_a, fail_a) = bootstrap_runs(
        [(base_run, "base_run"), (aligned_run, "aligned_run")],
        params_,
        seed,
        n_boot,
        stat,
        (k + 1,),
        what="shared_by_change with n_boot > 0",
        cluster=cluster,
        paired=paired_,
    )
    boot = boot_a - boot_b
    low, high = percentile_interval(boot, ci)
    tvd = 0.5 * float(np.abs(change).sum())
    ok = ~np.isnan(boot).any(axis=1)
    tvd_star = 0.5 * np.abs(boot[ok] - change).sum(axis=1)
    tvd_p = (
        (1.0 + float((tvd_star >= tvd - 1e-12).sum())) / (1.0 + ok.sum()) if ok.any() else math.nan
    )
    attrs = bootstrap_attrs(params_, n_boot, seed, ci, cluster, paired_)
    attrs.update(
        paired_requested=paired,
        n_failed_base=fail_b,
        n_failed_aligned=fail_a,
        n_neurons=m,
        statistic="total variation distance between the shared-by-N fractions",
        pvalue="two-sided bootstrap p-values by centring (Hall & Wilson 1991), uncorrected",
        **identification_attrs(res_b, "base"),
        **identification_attrs(res_a, "aligned"),
    )
    return xr.Dataset(
        {
            "base": ((N_SHARED,), hb),
            "aligned": ((N_SHARED,), ha),
            "base_fraction": ((N_SHARED,), fb),
            "aligned_fraction": ((N_SHARED,), fa),
            "change": ((N_SHARED,), change),
            "change_low": ((N_SHARED,), low),
            "change_high": ((N_SHARED,), high),
            "change_pvalue": ((N_SHARED,), centred_pvalue(boot, change)),
            "boot_change": ((REPLICATE, N_SHARED), boot),
            "tvd": ((), tvd),
            "tvd_pvalue": ((), tvd_p),
        },
        coords={N_SHARED: bins, REPLICATE: np.arange(n_boot)},
        attrs=attrs,
    )


__all__ = [
    "TYPES",
    "ALL_TYPES",
    "type_table",
    "compare_type_distributions",
    "type_change",
    "mask_change",
    "shared_by_change",
]
