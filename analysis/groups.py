"""Two groups of replicate runs (e.g. three aligned and three base trainings), compared with
run-to-run variance as the error term.

A bootstrap over sequences (:func:`~langneurons.analysis.distributions.type_change`) measures
how much a count moves when the *text* is resampled; it says nothing of how much it moves when
the *model* is trained again. With several runs per arm, :func:`group_comparison` tests the
difference of the arms' mean counts against the variation between runs: a permutation of the
runs between the groups (exact over every split when there are few) and Welch's t on the
run-level counts. The resolution of the permutation test is limited by the number of runs: its
smallest attainable p-value is reported beside every p-value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._validate import check_choice, check_int, check_seed, same_grid
from langneurons.analysis._validate import languages_of as _languages
from langneurons.errors import ParameterError
from langneurons.names import LAYER, TYPES

from .identify import identify
from .params import IdentifyParams
from .type_tables import fixed_selection, type_counts

RUN, GROUP, TYPE, COUNT = "run", "group", "type", "count"
#: The headline counts of :func:`group_comparison` (over all layers).
HEADLINE: tuple[str, ...] = ("selected", *TYPES)
#: The tests :func:`group_comparison` offers.
GROUP_TESTS: tuple[str, ...] = ("auto", "permutation", "welch")
ONE_RUN_NOTE = (
    "one run per group: nothing here estimates training (run-to-run) variance, so the "
    "difference is descriptive; a bootstrap over sequences of these two runs measures "
    "text-sampling noise only, not training variance"
)


def check_groups(groups: object) -> list[tuple[str, list[xr.Dataset]]]:
    """Exactly two named, non-empty groups of Datasets."""
    if not isinstance(groups, Mapping):
        raise ParameterError(
            f"groups must map two group names to sequences of runs, got {type(groups).__name__}"
        )
    if len(groups) != 2:
        raise ParameterError(
            f"groups must hold exactly two groups, got {len(groups)}: {list(groups)}"
        )
    out = []
    for name, members in groups.items():
        if not isinstance(name, str) or not name:
            raise ParameterError(f"group names must be non-empty strings, got {name!r}")
        if isinstance(members, (str, xr.Dataset)) or not isinstance(members, Sequence):
            raise ParameterError(
                f"group {name!r} must be a sequence of runs or identification results, got "
                f"{type(members).__name__}"
            )
        if not members:
            raise ParameterError(f"group {name!r} is empty; give it at least one run")
        for i, m in enumerate(members):
            if not isinstance(m, xr.Dataset):
                raise ParameterError(
                    f"group {name!r}[{i}] must be a run or an identification result (an "
                    f"xarray.Dataset), got {type(m).__name__}"
                )
        out.append((name, list(members)))
    return out


def group_run_names(groups: list[tuple[str, list[xr.Dataset]]], names: object) -> list[str]:
    """One distinct label per run: ``names[group]`` or ``GROUP/i``."""
    if names is not None and not isinstance(names, Mapping):
        raise ParameterError(f"names must map group names to run names, got {names!r}")
    out: list[str] = []
    for group, members in groups:
        given = None if names is None else names.get(group)
        if given is None:
            out += [f"{group}/{i}" for i in range(len(members))]
        elif isinstance(given, str) or len(given) != len(members):
            raise ParameterError(
                f"names[{group!r}] must hold {len(members)} run names, got {given!r}"
            )
        else:
            out += [str(x) for x in given]
    if len(set(out)) != len(out):
        twice = sorted({x for x in out if out.count(x) > 1})
        raise ParameterError(f"run {twice[0]!r} is named twice; every run may be used once")
    return out


def identified(run: xr.Dataset, params: IdentifyParams) -> xr.Dataset:
    """An identification result as is; a run identified with ``params``."""
    if "neuron_type" in run.variables and "general" in run.variables:
        return run
    return identify(run, params.method, **params.keywords())


def _splits(
    n: int, n1: int, n_perm: int, rng: np.random.Generator
) -> tuple[NDArray[np.bool_], bool]:
    """Every way to put ``n1`` of ``n`` runs in the first group (exact), or ``n_perm`` random."""
    total = math.comb(n, n1)
    if total <= n_perm:
        rows = np.zeros((total, n), dtype=bool)
        for i, chosen in enumerate(itertools.combinations(range(n), n1)):
            rows[i, list(chosen)] = True
        return rows, True
    rows = np.zeros((n_perm, n), dtype=bool)
    for i in range(n_perm):
        rows[i, rng.permutation(n)[:n1]] = True
    return rows, False


def _welch(x0: NDArray[np.float64], x1: NDArray[np.float64]) -> tuple[NDArray[Any], ...]:
    """Welch's t, df and two-sided p-value along the first axis (NaN where both are constant)."""
    import scipy.stats

    n0, n1 = x0.shape[0], x1.shape[0]
    v0, v1 = x0.var(axis=0, ddof=1) / n0, x1.var(axis=0, ddof=1) / n1
    se2 = v0 + v1
    ok = se2 > 0
    diff = x0.mean(axis=0) - x1.mean(axis=0)
    t = np.full(diff.shape, np.nan)
    df = np.full(diff.shape, np.nan)
    np.divide(diff, np.sqrt(se2), out=t, where=ok)
    den = v0**2 / (n0 - 1) + v1**2 / (n1 - 1)
    np.divide(se2**2, den, out=df, where=ok)
    p = np.full(diff.shape, np.nan)
    p[ok] = 2.0 * scipy.stats.t.sf(np.abs(t[ok]), df[ok])
    return t, df, p


def check_group_sizes(
    test: str, first: tuple[str, int], second: tuple[str, int], noun: str
) -> None:
    """ParameterError when the named ``test`` needs more runs than the two groups hold
    (``noun`` names the groups in the message: "groups", "models")."""
    (ga, na), (gb, nb) = first, second
    if test == "welch" and min(na, nb) < 2:
        raise ParameterError(
            f"group {ga if na < 2 else gb!r} has 1 run; Welch's t needs at least 2 runs per "
            "group: add runs or pass test='permutation'"
        )
    if test == "permutation" and na == nb == 1:
        raise ParameterError(
            f"{noun} {ga!r} and {gb!r} have 1 run each; a permutation across runs needs at "
            "least 3 runs in all (with 1 vs 1 its only p-value is 1): add runs"
        )


def run_level_tests(
    x: NDArray[np.float64], na: int, nb: int, test: str, n_perm: int, seed: int
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any], list[str], dict[str, Any]]:
    """The permutation test across runs and Welch's t of run-level statistics ``x[run, stat]``
    (the first ``na`` runs in the first group): ``(perm_p, welch_t, welch_df, welch_p, tests,
    attrs)``, NaN for a test the group sizes do not support (see :func:`group_comparison`)."""
    n = na + nb
    first = np.arange(n) < na
    diff = x[first].mean(axis=0) - x[~first].mean(axis=0)
    perm_p = np.full(diff.shape, np.nan)
    wt, wdf, wp = (np.full(diff.shape, np.nan) for _ in range(3))
    tests: list[str] = []
    attrs: dict[str, Any] = {}
    if n >= 3 and test in ("auto", "permutation"):
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        splits, exact = _splits(n, na, n_perm, rng)
        a = splits.astype(np.float64)
        d_perm = a @ x / na - (1.0 - a) @ x / nb
        extreme = (np.abs(d_perm) >= np.abs(diff) - 1e-9).sum(axis=0)
        n_splits = splits.shape[0]
        perm_p = extreme / n_splits if exact else (1.0 + extreme) / (1.0 + n_splits)
        min_p = (2.0 if na == nb else 1.0) / n_splits if exact else 1.0 / (1.0 + n_splits)
        tests.append("permutation")
        attrs.update(
            permutation="exact" if exact else "random",
            n_splits=int(n_splits),
            min_pvalue=float(min_p),
        )
    if min(na, nb) >= 2 and test in ("auto", "welch"):
        with np.errstate(invalid="ignore", divide="ignore"):
            wt, wdf, wp = _welch(x[first], x[~first])
        tests.append("welch")
    return perm_p, wt, wdf, wp, tests, attrs


def group_comparison(
    groups: Mapping[str, Sequence[xr.Dataset]],
    params: IdentifyParams | None = None,
    *,
    test: Literal["auto", "permutation", "welch"] = "auto",
    n_perm: int = 10000,
    seed: int = 0,
    names: Mapping[str, Sequence[str]] | None = None,
) -> xr.Dataset:
    r"""Do two groups of replicate runs differ in their type counts, beyond run-to-run variance?

    Each run r gives its :func:`~langneurons.analysis.type_tables.type_table` counts
    :math:`c_{r,l,t}` and headline counts (selected, and each type over all layers). With
    groups A (the first) and B of :math:`n_A`, :math:`n_B` runs, the statistic is the
    difference of group means :math:`D = \bar c_A - \bar c_B`, tested with run-to-run
    variation as its error term:

    - permutation across runs: under the null that the runs are exchangeable between the
      groups, every split of the :math:`n = n_A + n_B` runs into groups of :math:`n_A` and
      :math:`n_B` is equally likely; :math:`p = \#\{|D_\pi| \ge |D|\} / \binom{n}{n_A}` over
      all splits when there are at most ``n_perm`` (exact), else
      :math:`(1 + \#\{\cdot\}) / (1 + n_{perm})` over random ones. Its smallest attainable
      value is :math:`1/\binom{n}{n_A}` (:math:`2/\binom{n}{n_A}` when :math:`n_A = n_B`: a
      split and its mirror give :math:`\pm D`), e.g. 0.1 for 3 vs 3 runs: ``min_pvalue``;
    - Welch's t on the run-level counts (each group needs at least 2 runs):
      :math:`t = D / \sqrt{s_A^2/n_A + s_B^2/n_B}` with Welch-Satterthwaite df (NaN where
      every run of both groups has the same count).

    With one run per group nothing estimates run-to-run variance: the result is descriptive
    (``attrs["inference"]``) and says so (``attrs["note"]``).

    Parameters
    ----------
    groups : mapping of str to sequence of xarray.Dataset
        Exactly two named groups of runs (identified with ``params``) or identification
        results, all on one layer x neuron grid with the same languages.
    params : IdentifyParams, optional
        Identification of the runs (default ``IdentifyParams()``; results are used as given).
    test : {"auto", "permutation", "welch"}
        ``"auto"``: the permutation test when there are at least 3 runs, Welch's t too when
        each group has at least 2; one run per group: descriptive. A named test that the
        groups cannot support is a ParameterError.
    n_perm : int >= 1
        Most splits of the permutation test (exact when there are no more).
    seed : int >= 0
        Seed of the random splits.
    names : mapping of str to sequence of str, optional
        Run names per group (default ``GROUP/0``, ``GROUP/1``, ...).

    Returns
    -------
    xarray.Dataset
        ``layer_counts[run, layer, type]``, ``counts[run, count]`` (coordinate ``group[run]``);
        ``mean[group, layer, type]``, ``total_mean[group, count]``; ``difference[layer,
        type]``, ``total_difference[count]`` (first group minus second); ``perm_pvalue``,
        ``welch_t``, ``welch_df``, ``welch_pvalue`` on ``[layer, type]`` and the same with
        ``total_`` on ``[count]`` (NaN for a test not run). ``attrs``: the groups and their
        runs, ``tests`` run, ``permutation`` ("exact"/"random"), ``n_splits``,
        ``min_pvalue``, ``inference``, ``note``, ``identify_params``; ``fixed_counts`` and
        ``reason`` when every run selects as many neurons by construction (one ``top_rate``):
        the selected count is then not tested (NaN p-values).

    Raises
    ------
    ParameterError
        Not exactly two groups, an empty group, a run named twice, runs of different grids or
        languages, or a test the group sizes cannot support (Welch with a one-run group, any
        test with one run per group).

    References
    ----------
    Good (2005), Permutation, Parametric and Bootstrap Tests of Hypotheses; Welch (1947),
    Biometrika 34.
    """
    checked = check_groups(groups)
    check_choice("test", test, GROUP_TESTS)
    n_perm = check_int("n_perm", n_perm, 1)
    seed = check_seed(seed)
    params_ = IdentifyParams() if params is None else params
    run_names = group_run_names(checked, names)
    (ga, na), (gb, nb) = ((g, len(m)) for g, m in checked)
    check_group_sizes(test, (ga, na), (gb, nb), "groups")
    inputs = [r for _, members in checked for r in members]
    langs = _languages(inputs[0])
    for name, r in zip(run_names[1:], inputs[1:], strict=True):  # before identifying any
        same_grid(inputs[0], r, (run_names[0], name))
        if set(_languages(r)) != set(langs):
            raise ParameterError(
                f"{run_names[0]} and {name} must have the same languages; got {langs} and "
                f"{_languages(r)}"
            )
    results = [identified(r, params_) for r in inputs]
    layer_counts = np.stack([type_counts(r, TYPES) for r in results]).astype(np.int64)
    selected = np.array([int(np.asarray(r["selected"].values).sum()) for r in results])
    counts = np.concatenate([selected[:, None], layer_counts.sum(axis=1)], axis=1)
    n = na + nb
    n_layers, n_types = layer_counts.shape[1:]
    split = n_layers * n_types
    x = np.concatenate([layer_counts.reshape(n, -1), counts], axis=1).astype(np.float64)
    first = np.arange(n) < na
    diff = x[first].mean(axis=0) - x[~first].mean(axis=0)
    perm_p, wt, wdf, wp, tests, attrs = run_level_tests(x, na, nb, test, n_perm, seed)
    reason = fixed_selection(results)
    if reason is not None:  # the selected count is the same in every run: nothing to test
        where = split + HEADLINE.index("selected")
        perm_p[where] = wt[where] = wdf[where] = wp[where] = np.nan
        attrs.update(fixed_counts=["selected"], reason=reason)
    one_each = na == nb == 1
    attrs.update(
        groups={ga: run_names[:na], gb: run_names[na:]},
        n_runs={g: len(m) for g, m in checked},
        difference=f"{ga} minus {gb} (means of the run-level counts)",
        tests=tests,
        test_requested=test,
        n_perm=n_perm,
        seed=seed,
        identify_params=params_.to_attrs(),
        inference="descriptive" if not tests else "inference (runs are the replicated unit)",
        pvalue="two-sided, uncorrected for the number of layers and types",
    )
    if one_each:
        attrs["note"] = ONE_RUN_NOTE
    elif "permutation" in tests:
        attrs["note"] = (
            f"{n} runs give {attrs['n_splits']} splits: the smallest attainable permutation "
            f"p-value is {attrs['min_pvalue']:.3g}"
        )

    def parts(v: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        return v[..., :split].reshape(*v.shape[:-1], n_layers, n_types), v[..., split:]

    lt, lc = (LAYER, TYPE), (COUNT,)
    data: dict[str, Any] = {
        "layer_counts": ((RUN, LAYER, TYPE), layer_counts),
        "counts": ((RUN, COUNT), counts.astype(np.int64)),
    }
    means = np.stack([x[first].mean(axis=0), x[~first].mean(axis=0)])
    m_layer, m_total = parts(means)
    data["mean"] = ((GROUP, LAYER, TYPE), m_layer)
    data["total_mean"] = ((GROUP, COUNT), m_total)
    for name, values in (
        ("difference", diff),
        ("perm_pvalue", perm_p),
        ("welch_t", wt),
        ("welch_df", wdf),
        ("welch_pvalue", wp),
    ):
        per_layer, total = parts(np.asarray(values, dtype=np.float64))
        data[name] = (lt, per_layer)
        data[f"total_{name}"] = (lc, total)
    return xr.Dataset(
        data,
        coords={
            RUN: run_names,
            GROUP: [ga, gb],
            "run_group": ((RUN,), [ga] * na + [gb] * nb),
            LAYER: results[0][LAYER].values,
            TYPE: list(TYPES),
            COUNT: list(HEADLINE),
        },
        attrs=attrs,
    )


__all__ = ["group_comparison", "HEADLINE", "GROUP_TESTS", "ONE_RUN_NOTE"]
