"""Spontaneous multilingual alignment: do untrained languages gain neurons like trained ones?

:func:`spontaneous_alignment` compares the change of each language's specific and related
neuron counts from a base run to an aligned run between the languages the alignment was trained
on and the others, with bootstrap intervals over sequences (:mod:`~.analysis._resample`) and a
permutation test over the language labels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._kernels import centred_pvalue, percentile_interval
from langneurons.analysis._resample import Cluster
from langneurons.analysis._validate import (
    check_int,
    check_n_boot,
    check_open_unit,
    check_runs,
    check_seed,
    languages_of,
)
from langneurons.errors import ParameterError
from langneurons.names import LANGUAGE

from .bootstrap import bootstrap_attrs, bootstrap_runs, identification_attrs
from .distributions import resolve_paired
from .identify import identify
from .params import IdentifyParams, Method, resolve_params
from .type_tables import mask_rows, neuron_types

COUNT, GROUP, REPLICATE = "count", "group", "replicate"
#: Counts per language followed by :func:`spontaneous_alignment`.
ALIGNMENT_COUNTS: tuple[str, ...] = ("specific", "related")


def _language_counts(result: xr.Dataset, languages: Sequence[str]) -> NDArray[np.int64]:
    """``[language, count]``: specific and related neurons of each language."""
    kinds = neuron_types(result)
    rows = mask_rows(result, languages)
    return np.stack([(rows & (kinds == c)).sum(axis=1) for c in ALIGNMENT_COUNTS], axis=1).astype(
        np.int64
    )


def check_trained(trained: object, languages: Sequence[str]) -> list[str]:
    """Validate the trained languages against the runs' languages."""
    names = [trained] if isinstance(trained, str) else trained
    if not isinstance(names, Sequence) or not all(isinstance(x, str) for x in names):
        raise ParameterError(
            f"trained_languages must be a sequence of language names, got {trained!r}"
        )
    if not names:
        raise ParameterError("trained_languages is empty; name at least one trained language")
    out = list(names)
    dup = sorted({x for x in out if out.count(x) > 1})
    if dup:
        raise ParameterError(f"trained_languages names {dup[0]!r} more than once")
    unknown = [x for x in out if x not in languages]
    if unknown:
        raise ParameterError(
            f"trained_languages has {unknown[0]!r}, which is not a language of the runs "
            f"(languages: {', '.join(languages)})"
        )
    if len(out) == len(languages):
        raise ParameterError(
            "every language of the runs is in trained_languages; spontaneous alignment needs at "
            "least one untrained language"
        )
    return out


def _label_sets(
    k: int, n_trained: int, n_perm: int, rng: np.random.Generator
) -> tuple[NDArray[np.bool_], bool]:
    """Trained-label assignments: all of them when there are at most ``n_perm``, else random."""
    total = math.comb(k, n_trained)
    if total <= n_perm:
        out = np.zeros((total, k), dtype=bool)
        for i, combo in enumerate(itertools.combinations(range(k), n_trained)):
            out[i, list(combo)] = True
        return out, True
    picks = np.argsort(rng.random((n_perm, k)), axis=1)[:, :n_trained]
    out = np.zeros((n_perm, k), dtype=bool)
    np.put_along_axis(out, picks, True, axis=1)
    return out, False


#: What the calibration found (tests/test_equivalence.py, true D at the margin).
EQUIVALENCE_CAVEAT = (
    "identified-count differences shrink toward 0 under sampling noise, which the bootstrap "
    "does not see: in simulation at the margin (6 languages, 2 trained) equivalence was claimed "
    "0.17 of the time at alpha 0.05 with 64 sequences per language, 0.03 with 128"
)

#: Sampled units per language (in each run) from which the TOST held its level in simulation.
EQUIVALENCE_UNITS = 128


def _fewest_units(runs: Sequence[xr.Dataset], cluster: str) -> int | None:
    """The fewest sampled units (sequences, or distinct ``seq_id``s for items) of any language
    in any run; None without per-sequence language labels."""
    fewest: int | None = None
    for run in runs:
        if "seq_language" not in run.variables:
            return None
        labels = np.asarray(run["seq_language"].values).astype(str)
        ids = (
            np.asarray(run["seq_id"].values).astype(str)
            if cluster == "item" and "seq_id" in run.variables
            else None
        )
        for lang in np.asarray(run[LANGUAGE].values).astype(str):
            on = labels == lang
            n = int(np.unique(ids[on]).size) if ids is not None else int(on.sum())
            fewest = n if fewest is None else min(fewest, n)
    return fewest


def _equivalence_label(fewest: int | None, cluster: str) -> dict[str, str]:
    """``equivalence_inference`` and why, from the fewest units per language."""
    unit = "items" if cluster == "item" else "sequences"
    if fewest is not None and fewest >= EQUIVALENCE_UNITS:
        return {"equivalence_inference": "valid"}
    have = f"{fewest} {unit}" if fewest is not None else "an unknown number of units"
    return {
        "equivalence_inference": "descriptive",
        "equivalence_inference_reason": (
            f"the smallest language has {have}, fewer than {EQUIVALENCE_UNITS}: "
            f"{EQUIVALENCE_CAVEAT}; read the verdict as a description"
        ),
    }


def _check_margin(margin: object) -> float | None:
    """``equivalence_margin``: None, or a finite number > 0 (neurons)."""
    if margin is None:
        return None
    ok = isinstance(margin, (int, float, np.integer, np.floating)) and not isinstance(
        margin, (bool, np.bool_)
    )
    if not ok or not math.isfinite(float(margin)) or float(margin) <= 0:  # type: ignore[arg-type]
        raise ParameterError(
            "equivalence_margin must be a positive number of neurons (the largest difference of "
            f"mean change, trained minus untrained, that counts as equivalent), got {margin!r}"
        )
    return float(margin)  # type: ignore[arg-type]


def min_pvalue(k: int, n_trained: int, exact: bool, n_assign: int) -> float:
    """Smallest p the permutation test can give.

    Exact: the observed assignment always counts, and when ``2 |T| = K`` so does its complement
    (it gives ``-D``), so ``1 / C(K, |T|)``, or ``2 / C(K, |T|)`` for an even split. Random:
    ``1 / (1 + n_assignments)``.

    >>> min_pvalue(6, 2, True, 15), min_pvalue(4, 2, True, 6)
    (0.06666666666666667, 0.3333333333333333)
    """
    if not exact:
        return 1.0 / (1.0 + n_assign)
    return (2.0 if 2 * n_trained == k else 1.0) / math.comb(k, n_trained)


def _equivalence(
    boot_diff: NDArray[np.float64], margin: float | None, alpha: float, n_boot: int
) -> tuple[dict[str, Any], dict[str, tuple[tuple[str, ...], NDArray[Any]]]]:
    """Two one-sided tests of ``|D| < margin`` from the bootstrap replicates of D.

    ``p_lower = (1 + #{D* <= -margin}) / (1 + B)`` (H0: D <= -margin) and ``p_upper`` alike;
    ``equivalence_pvalue`` is their maximum and equivalence is claimed when it is below
    ``alpha``, which puts the ``1 - 2 alpha`` percentile interval inside the margins.
    """
    if margin is None:
        return {
            "equivalence": "not run",
            "equivalence_note": "no equivalence test without a margin; give equivalence_margin="
            "DELTA (CLI: --equivalence-margin DELTA), the largest difference of mean change in "
            "neurons that counts as 'untrained languages change like trained ones'",
        }, {}
    ok = ~np.isnan(boot_diff)
    n = ok.sum(axis=0)
    if n_boot == 0 or not n.all():
        return {
            "equivalence": "not available",
            "equivalence_margin": margin,
            "equivalence_note": "descriptive: the equivalence test needs bootstrap replicates "
            "(per-sequence counts and n_boot > 0); no p-value",
        }, {}
    with np.errstate(invalid="ignore"):
        p_lo = (1.0 + ((boot_diff <= -margin) & ok).sum(axis=0)) / (1.0 + n)
        p_hi = (1.0 + ((boot_diff >= margin) & ok).sum(axis=0)) / (1.0 + n)
    p = np.maximum(p_lo, p_hi)
    low, high = percentile_interval(boot_diff, 1.0 - 2.0 * alpha)
    equivalent = p < alpha
    verdict = {
        c: (f"equivalent within +-{margin:g}" if e else f"not shown equivalent within +-{margin:g}")
        for c, e in zip(ALIGNMENT_COUNTS, equivalent.tolist(), strict=True)
    }
    attrs = {
        "equivalence": "tost",
        "equivalence_margin": margin,
        "equivalence_alpha": alpha,
        "equivalence_verdict": verdict,
        "equivalence_note": f"two one-sided bootstrap tests: equivalent when the "
        f"{1 - 2 * alpha:g} interval of the difference lies inside [-{margin:g}, {margin:g}]",
        "equivalence_caveat": EQUIVALENCE_CAVEAT,
    }
    c = (COUNT,)
    return attrs, {
        "equivalence_pvalue": (c, p),
        "equivalence_pvalue_lower": (c, p_lo),
        "equivalence_pvalue_upper": (c, p_hi),
        "equivalence_low": (c, low),
        "equivalence_high": (c, high),
        "equivalent": (c, equivalent),
    }


def _group_difference(
    change: NDArray[np.float64], trained: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Mean change of trained minus untrained languages: ``change[..., language, count]``.

    ``trained`` is ``[language]`` or ``[assignment, language]`` (then the result gains a
    leading assignment axis).
    """
    t = trained.astype(np.float64)
    u = 1.0 - t
    mean_t = np.einsum("...l,lc->...c", t / t.sum(axis=-1, keepdims=True), change)
    mean_u = np.einsum("...l,lc->...c", u / u.sum(axis=-1, keepdims=True), change)
    return np.asarray(mean_t - mean_u)


def spontaneous_alignment(
    base_run: xr.Dataset,
    aligned_run: xr.Dataset,
    trained_languages: Sequence[str],
    *,
    method: Method | None = None,
    params: IdentifyParams | None = None,
    n_boot: int = 200,
    n_perm: int = 10000,
    seed: int = 0,
    ci: float = 0.95,
    cluster: Cluster = "sequence",
    paired: bool | Literal["auto"] = "auto",
    equivalence_margin: float | None = None,
    equivalence_alpha: float = 0.05,
    **identify_kwargs: Any,
) -> xr.Dataset:
    r"""Do untrained languages gain language neurons like the trained ones after alignment?

    For each language k, the change of its specific and related neuron counts from the base
    run to the aligned run (multilingual alignment trained on ``trained_languages`` only),
    :math:`\Delta_{k,c} = c^{aligned}_k - c^{base}_k`. With trained set :math:`\mathcal{T}`
    and untrained set :math:`\mathcal{U}`, the statistic is the difference of mean changes

    .. math:: D_c = \bar\Delta_{\mathcal{T},c} - \bar\Delta_{\mathcal{U},c}.

    "Spontaneous multilingual alignment" (untrained languages moving like trained ones) means
    :math:`D \approx 0` with :math:`\bar\Delta_{\mathcal{U}} \neq 0`.

    - Intervals: bootstrap percentiles of every :math:`\Delta_k`, group mean and :math:`D`,
      resampling each run's sequences within language (paired when the runs share their
      seq_ids) and re-running the
      identification per replicate (as in
      :func:`~langneurons.analysis.distributions.type_change`); ``boot_pvalue`` is the
      two-sided bootstrap test of :math:`D = 0` by centring (Hall & Wilson 1991).
    - Permutation test over the language labels (``perm_pvalue``): under the null that the
      trained / untrained labels are exchangeable, every assignment of
      :math:`|\mathcal{T}|` of the K languages as "trained" is equally likely;
      :math:`p = \#\{|D_\pi| \ge |D|\} / \binom{K}{|\mathcal{T}|}` over all assignments when
      there are at most ``n_perm`` (exact), else
      :math:`(1 + \#\{|D_\pi| \ge |D|\}) / (1 + n_{perm})` over random ones. Its resolution is
      limited by K: the smallest possible exact p is :math:`1 / \binom{K}{|\mathcal{T}|}`.

    A small p means untrained languages do **not** move like the trained ones; a large p is
    not evidence that they do (with K = 6 and 2 trained languages no p is below 1/15).
    That claim is an equivalence test: with ``equivalence_margin`` :math:`\delta`, two
    one-sided bootstrap tests of :math:`H_0: D \le -\delta` and :math:`H_0: D \ge \delta`
    (Schuirmann 1987), :math:`p_- = (1 + \#\{D^*_b \le -\delta\}) / (1 + B)` and
    :math:`p_+` alike; ``equivalence_pvalue`` :math:`= \max(p_-, p_+)`, and equivalence is
    claimed when it is below ``equivalence_alpha`` (the :math:`1 - 2\alpha` percentile
    interval of D inside :math:`[-\delta, \delta]`). Without bootstrap replicates it is not
    available (descriptive); without a margin it is not run (there is no default margin).
    Calibration (true D at the margin, 6 languages, 2 trained, B = 100, alpha 0.05): claimed
    0.17 +- 0.045 of the time with 64 sequences per language (70 replicates; liberal: the
    identified-count D shrinks toward 0 under sampling noise, mean 6.2-6.7 for a true 8, and
    the bootstrap does not see it), 0.03 +- 0.03 with 128 (30 replicates).

    Parameters
    ----------
    base_run, aligned_run : xarray.Dataset
        Runs with the same grid and languages (per-sequence counts needed when ``n_boot > 0``).
    trained_languages : sequence of str
        Languages used in the alignment training (a single name is accepted).
    method : {"ternary", "lape"}, optional
        Identification rule (default: ``params.method``).
    params : IdentifyParams, optional
        The identification's parameters (default ``IdentifyParams()``).
    n_boot : int >= 0
        Bootstrap replicates per run.
    n_perm : int >= 1
        Most label assignments of the permutation test.
    seed : int >= 0
        Seed; the base bootstrap, aligned bootstrap and permutations use independent streams.
    ci : float in (0, 1)
        Level of the percentile intervals.
    cluster, paired
        What a replicate draws, and whether both runs draw together (default ``"auto"``:
        paired when they hold the same seq_ids; see
        :func:`~langneurons.analysis.distributions.type_change`).
    equivalence_margin : float > 0, optional
        The largest difference of mean change (neurons, trained minus untrained) that counts
        as "untrained languages change like trained ones"; no equivalence test without it.
    equivalence_alpha : float in (0, 0.5)
        Level of each one-sided test.
    **identify_kwargs
        Deprecated: the loose identification keywords (use ``params=``).

    Returns
    -------
    xarray.Dataset
        On ``[language, count]`` (count: "specific", "related"): ``base``, ``aligned``,
        ``change``, ``change_low``, ``change_high``; ``boot_change[replicate, language,
        count]``; ``trained[language]``; ``mean_change``, ``mean_change_low``,
        ``mean_change_high`` on ``[group, count]`` (group: "trained", "untrained");
        ``difference``, ``difference_low``, ``difference_high``, ``perm_pvalue``,
        ``boot_pvalue`` on ``[count]``. ``attrs``: trained and untrained languages, method,
        ``identify_params``, ``n_boot``, ``n_perm``, ``n_assignments``, ``permutation``
        ("exact" or "random"), ``min_pvalue`` (the smallest p the permutation test can
        give), ``seed``, ``ci``, failed replicate counts, tau / lambda; ``equivalence``
        ("tost", "not available" or "not run") and ``equivalence_note``. With the TOST also
        ``equivalence_pvalue``, ``equivalence_pvalue_lower``, ``equivalence_pvalue_upper``,
        ``equivalence_low``, ``equivalence_high`` (the ``1 - 2 alpha`` interval) and
        ``equivalent`` on ``[count]``, and attrs ``equivalence_margin``,
        ``equivalence_alpha``, ``equivalence_verdict`` (per count), ``equivalence_caveat``
        and ``equivalence_inference``: ``"valid"`` with at least 128 sampled units
        (sequences, or items) in every language of both runs, else ``"descriptive"`` with
        ``equivalence_inference_reason`` (at the margin the test claimed equivalence 0.17 of
        the time at alpha 0.05 with 64 sequences per language, 0.03 with 128).

    Raises
    ------
    ParameterError
        Trained languages empty, repeated or not in the runs; no untrained language; runs of
        different shapes or languages; bad parameters; ``n_boot > 0`` without per-sequence
        counts; ``equivalence_margin`` not a positive finite number.

    References
    ----------
    Zhang et al. (2025), spontaneous multilingual alignment of untrained languages; Good
    (2005), Permutation, Parametric and Bootstrap Tests of Hypotheses; Hall & Wilson (1991);
    Schuirmann (1987), two one-sided tests of equivalence.
    """
    params_ = resolve_params(params, identify_kwargs, method=method, where="spontaneous_alignment")
    base_run, aligned_run = check_runs(base_run, aligned_run)
    langs = languages_of(base_run)
    trained = check_trained(trained_languages, langs)
    n_boot = check_n_boot(n_boot)
    n_perm = check_int("n_perm", n_perm, 1)
    paired_ = resolve_paired(base_run, aligned_run, paired, cluster, n_boot)
    seed = check_seed(seed)
    ci = check_open_unit("ci", ci)
    margin = _check_margin(equivalence_margin)
    alpha = check_open_unit("equivalence_alpha", equivalence_alpha)
    if alpha >= 0.5:
        raise ParameterError(f"equivalence_alpha must be below 0.5, got {alpha!r}")
    kw = params_.keywords()
    res_b = identify(base_run, params_.method, **kw)
    res_a = identify(aligned_run, params_.method, **kw)
    cb, ca = _language_counts(res_b, langs), _language_counts(res_a, langs)
    change = (ca - cb).astype(np.float64)
    is_trained = np.array([x in trained for x in langs])
    # the permutations draw from a stream of their own, apart from the replicates'
    rng_p = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**32 - 1,)))

    def stat(result: xr.Dataset) -> NDArray[np.int64]:
        return _language_counts(result, langs)

    shape = (len(langs), len(ALIGNMENT_COUNTS))
    (boot_b, fail_b), (boot_a, fail_a) = bootstrap_runs(
        [(base_run, "base_run"), (aligned_run, "aligned_run")],
        params_,
        seed,
        n_boot,
        stat,
        shape,
        what="spontaneous_alignment with n_boot > 0",
        cluster=cluster,
        paired=paired_,
    )
    boot = boot_a - boot_b
    low, high = percentile_interval(boot, ci)
    mean = np.stack([change[is_trained].mean(axis=0), change[~is_trained].mean(axis=0)])
    boot_mean = np.stack(
        [boot[:, is_trained].mean(axis=1), boot[:, ~is_trained].mean(axis=1)], axis=1
    )  # [replicate, group, count]
    mean_low, mean_high = percentile_interval(boot_mean, ci)
    diff = mean[0] - mean[1]
    boot_diff = boot_mean[:, 0] - boot_mean[:, 1]
    diff_low, diff_high = percentile_interval(boot_diff, ci)
    assignments, exact = _label_sets(len(langs), len(trained), n_perm, rng_p)
    perm = _group_difference(change, assignments)  # [assignment, count]
    extreme = (np.abs(perm) >= np.abs(diff) - 1e-9).sum(axis=0)
    n_assign = assignments.shape[0]
    perm_p = extreme / n_assign if exact else (1.0 + extreme) / (1.0 + n_assign)
    eq_attrs, eq_vars = _equivalence(boot_diff, margin, alpha, n_boot)
    if eq_attrs.get("equivalence") == "tost":
        eq_attrs.update(
            _equivalence_label(_fewest_units([base_run, aligned_run], cluster), cluster)
        )
    attrs = bootstrap_attrs(params_, n_boot, seed, ci, cluster, paired_)
    attrs.update(
        paired_requested=paired,
        trained_languages=trained,
        untrained_languages=[x for x in langs if x not in trained],
        n_perm=n_perm,
        n_assignments=int(n_assign),
        permutation="exact" if exact else "random",
        min_pvalue=min_pvalue(len(langs), len(trained), exact, int(n_assign)),
        statistic="difference of mean change (aligned minus base), trained minus untrained",
        n_failed_base=fail_b,
        n_failed_aligned=fail_a,
        **identification_attrs(res_b, "base"),
        **identification_attrs(res_a, "aligned"),
        **eq_attrs,
    )
    lc, gc = (LANGUAGE, COUNT), (GROUP, COUNT)
    return xr.Dataset(
        {
            "base": (lc, cb),
            "aligned": (lc, ca),
            "change": (lc, (ca - cb).astype(np.int64)),
            "change_low": (lc, low),
            "change_high": (lc, high),
            "boot_change": ((REPLICATE, LANGUAGE, COUNT), boot),
            "trained": ((LANGUAGE,), is_trained),
            "mean_change": (gc, mean),
            "mean_change_low": (gc, mean_low),
            "mean_change_high": (gc, mean_high),
            "difference": ((COUNT,), diff),
            "difference_low": ((COUNT,), diff_low),
            "difference_high": ((COUNT,), diff_high),
            "perm_pvalue": ((COUNT,), perm_p.astype(np.float64)),
            "boot_pvalue": ((COUNT,), centred_pvalue(boot_diff, diff)),
            **eq_vars,
        },
        coords={
            LANGUAGE: np.asarray(langs, dtype=str),
            COUNT: list(ALIGNMENT_COUNTS),
            GROUP: ["trained", "untrained"],
            REPLICATE: np.arange(n_boot),
        },
        attrs=attrs,
    )


__all__ = ["spontaneous_alignment", "min_pvalue", "ALIGNMENT_COUNTS"]
