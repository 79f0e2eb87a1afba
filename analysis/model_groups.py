"""Two models compared with run-to-run variance as the error term (replicate runs per model).

:func:`~langneurons.analysis.cross_model.compare_models` puts models of any shape side by side
and bootstraps items: that measures how much a share moves when the *text* is resampled, not
when the *model* is trained again. With replicate runs of each model (trainings with different
seeds, or one checkpoint on several corpora), :func:`compare_model_groups` tests the models'
shape-free statistics against the variation between runs, with the permutation and Welch tests
of :func:`~langneurons.analysis.groups.group_comparison`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from langneurons.analysis._validate import check_choice, check_int, check_seed, same_grid
from langneurons.names import LANGUAGE, LAYER, TYPES

from .cross_model import (
    DEPTH,
    TYPE,
    check_bins,
    check_params,
    common_languages,
    depth_edges,
    model_statistics,
)
from .groups import (
    GROUP_TESTS,
    ONE_RUN_NOTE,
    check_group_sizes,
    check_groups,
    group_run_names,
    identified,
    run_level_tests,
)
from .identify import params_of
from .params import IdentifyParams

GROUP_RUN, GROUP_DIM = "run", "group"

#: The run-level statistics :func:`compare_model_groups` tests, in the order of its vector.
GROUP_STATISTICS: tuple[str, ...] = (
    "type_share",
    "type_share_selected",
    "mask_share",
    "layer_share",
)


def compare_model_groups(
    groups: Mapping[str, Sequence[xr.Dataset]],
    params: IdentifyParams | None = None,
    *,
    bins: int = 5,
    test: Literal["auto", "permutation", "welch"] = "auto",
    n_perm: int = 10000,
    seed: int = 0,
    names: Mapping[str, Sequence[str]] | None = None,
) -> xr.Dataset:
    r"""Do two models differ in their shape-free statistics, beyond run-to-run variance?

    Each group holds replicate runs of one model (trainings with different seeds, or runs of
    one checkpoint on different corpora): runs or identification results on one grid within a
    group, while the two groups may differ in depth, width and languages (their common
    languages are used). Every run r gives the shape-free statistics of
    :func:`compare_models` -- ``type_share`` and ``type_share_selected`` per type,
    ``mask_share`` per common language and ``layer_share`` per relative-depth bin and type --
    and each is compared between the groups by the difference of group means, with the
    variation between runs as its error term, as :func:`~langneurons.analysis.groups.
    group_comparison` does for runs of one shape: an exact (or random) permutation of the runs
    between the groups, with its smallest attainable p-value, and Welch's t when each group
    has at least 2 runs. These are the tests that answer "do the models differ?" rather than
    "do these two runs differ?": with one run per model nothing estimates run-to-run variance,
    and the result says so (``inference: descriptive``); the item bootstrap of
    :func:`compare_models` measures text-sampling noise only.

    Parameters
    ----------
    groups : mapping of str to sequence of xarray.Dataset
        Exactly two named groups (models) of runs (identified here with ``params``) or
        identification results.
    params : IdentifyParams, optional
        Identification of the runs (default ``IdentifyParams()``; results are used as given,
        and must all have been made with one method and parameters).
    bins : int >= 1
        Bins of relative depth ``layer / (L - 1)``; at most the shallowest model's layers.
    test, n_perm, seed, names
        As for :func:`~langneurons.analysis.groups.group_comparison`.

    Returns
    -------
    xarray.Dataset
        For each statistic ``v`` of :data:`GROUP_STATISTICS`: the run-level values ``v[run,
        ...]``, ``v_mean[group, ...]``, ``v_difference`` (first group minus second),
        ``v_perm_pvalue``, ``v_welch_t``, ``v_welch_pvalue`` (NaN for a test not run).
        ``attrs``: the groups and their runs, ``languages`` (common), ``bins``, ``tests``,
        ``permutation``, ``n_splits``, ``min_pvalue``, ``inference``, ``note``,
        ``identify_params``.

    Raises
    ------
    ParameterError
        Not exactly two groups, an empty group, runs of one group on different grids, no
        language in common, ``bins`` finer than the shallowest model, identifications made
        with different parameters, or a test the group sizes cannot support.
    """
    checked = check_groups(groups)
    check_choice("test", test, GROUP_TESTS)
    n_perm = check_int("n_perm", n_perm, 1)
    seed = check_seed(seed)
    params_ = IdentifyParams() if params is None else params
    run_names = group_run_names(checked, names)
    (ga, members_a), (gb, members_b) = checked
    na, nb = len(members_a), len(members_b)
    check_group_sizes(test, (ga, na), (gb, nb), "models")
    inputs = [*members_a, *members_b]
    for members, offset in ((members_a, 0), (members_b, na)):
        for i, r in enumerate(members[1:], start=1):
            same_grid(members[0], r, (run_names[offset], run_names[offset + i]))
    langs = common_languages(inputs, run_names)
    bins = check_bins(bins, [int(members_a[0].sizes[LAYER]), int(members_b[0].sizes[LAYER])],
                      [ga, gb])  # fmt: skip
    results = [identified(r, params_) for r in inputs]
    check_params([params_of(r) for r in results], run_names, False)
    stats = [model_statistics(r, langs, bins) for r in results]
    shapes = {v: stats[0][v].shape for v in GROUP_STATISTICS}
    x = np.stack([np.concatenate([st[v].ravel() for v in GROUP_STATISTICS]) for st in stats])
    first = np.arange(na + nb) < na
    means = np.stack([x[first].mean(axis=0), x[~first].mean(axis=0)])
    perm_p, wt, _, wp, tests, attrs = run_level_tests(x, na, nb, test, n_perm, seed)
    dims = {
        "type_share": (TYPE,),
        "type_share_selected": (TYPE,),
        "mask_share": (LANGUAGE,),
        "layer_share": (DEPTH, TYPE),
    }
    data: dict[str, Any] = {}
    start = 0
    for v in GROUP_STATISTICS:
        size = int(np.prod(shapes[v]))
        cut = slice(start, start + size)
        start += size
        data[v] = ((GROUP_RUN, *dims[v]), x[:, cut].reshape(len(inputs), *shapes[v]))
        data[f"{v}_mean"] = ((GROUP_DIM, *dims[v]), means[:, cut].reshape(2, *shapes[v]))
        for suffix, values in (
            ("difference", means[0] - means[1]),
            ("perm_pvalue", perm_p),
            ("welch_t", wt),
            ("welch_pvalue", wp),
        ):
            data[f"{v}_{suffix}"] = (dims[v], np.asarray(values, float)[cut].reshape(shapes[v]))
    edges = depth_edges(bins)
    attrs.update(
        groups={ga: run_names[:na], gb: run_names[na:]},
        n_runs={ga: na, gb: nb},
        languages=list(langs),
        bins=bins,
        difference=f"{ga} minus {gb} (means of the run-level shares)",
        tests=tests,
        test_requested=test,
        n_perm=n_perm,
        seed=seed,
        identify_params=params_.to_attrs(),
        inference="valid" if tests else "descriptive",
        unit="run",
        pvalue="two-sided, uncorrected for the number of statistics",
    )
    if not tests:
        attrs["note"] = ONE_RUN_NOTE
        attrs["inference_reason"] = "one run per model: no run-to-run variance"
    elif "permutation" in tests:
        attrs["note"] = (
            f"{na + nb} runs give {attrs['n_splits']} splits: the smallest attainable "
            f"permutation p-value is {attrs['min_pvalue']:.3g}"
        )
    return xr.Dataset(
        data,
        coords={
            GROUP_RUN: run_names,
            GROUP_DIM: [ga, gb],
            "run_group": ((GROUP_RUN,), [ga] * na + [gb] * nb),
            TYPE: list(TYPES),
            LANGUAGE: list(langs),
            DEPTH: np.arange(bins),
            "depth_lower": ((DEPTH,), edges[:-1]),
            "depth_upper": ((DEPTH,), edges[1:]),
        },
        attrs=attrs,
    )


__all__ = ["GROUP_STATISTICS", "compare_model_groups"]
