"""Neuron-level type switches between two paired runs, tested by label-swap permutation.

:func:`~langneurons.analysis.membership.membership_change` tabulates how neurons switch types
between two results and runs Bowker's and the Stuart-Maxwell tests on the table; those treat
neurons as independent units and do not hold their level (docs/calibration.md), so they are
descriptive. Here the units are the items the runs share: under the null that the runs are
exchangeable item by item, swapping each item's sequences between the runs at random and
re-identifying both pseudo-runs gives pairs with the distribution of the real one. Two
questions are asked of the transition table ``T[from, to]``:

- do more neurons change type than exchangeable runs would make change (``changed``, the
  off-diagonal total; one-sided: resampled runs of one model also switch some neurons);
- is the table asymmetric (``T[s, t] - T[t, s]`` for each pair of types, two-sided): do
  neurons move from ``s`` to ``t`` more than back, as Bowker asks, with items as the units.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._resample import Cluster

from .bootstrap import swap_pvalue, swap_statistic
from .compare import transition_table
from .distributions import Paired, paired_swap_inputs
from .membership import FROM, TO, TRANSITION_TYPES
from .params import IdentifyParams, Method

PERMUTATION = "permutation"


def _statistics(a: xr.Dataset, b: xr.Dataset) -> NDArray[np.float64]:
    """``[changed, T - T.T (flattened)]`` of one pair of results."""
    table = np.asarray(transition_table(a, b)["count"].values, dtype=np.int64)
    changed = table.sum() - np.trace(table)
    return np.concatenate([[changed], (table - table.T).reshape(-1)]).astype(np.float64)


def type_switches(
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
    r"""How many neurons switch type from a base to an aligned run, and in which direction,
    against label-swapped pseudo-runs over the shared items.

    Both runs are identified with ``params``; :math:`T_{s,t}` counts the neurons of type s in
    the base and t in the aligned result (types as in
    :func:`~langneurons.analysis.compare.transition_table`). In each of ``n_perm``
    permutations every unit's sequences (items with ``cluster="item"``) trade places between
    the runs with probability 1/2 and both pseudo-runs are identified again. Then

    - ``changed`` :math:`= \sum_{s \ne t} T_{s,t}`, with the one-sided
      :math:`p = (1 + \#\{C^* \ge C\}) / (1 + P)`; ``expected_changed`` is the mean of
      :math:`C^*`, the switching that sampling alone produces;
    - ``asymmetry`` :math:`= T_{s,t} - T_{t,s}` (s before t), with two-sided swap p-values.

    Needs paired runs (the same seq_ids) with per-sequence counts; the smallest attainable
    p-value is ``1 / (1 + n_perm)``.

    Returns
    -------
    xarray.Dataset
        ``count[from_type, to_type]``, ``changed``, ``expected_changed``,
        ``changed_pvalue_swap``, ``asymmetry[from_type, to_type]`` and
        ``asymmetry_pvalue_swap[from_type, to_type]`` (NaN on and below the diagonal), the null
        ``swap_changed[permutation]``; ``attrs`` as for
        :func:`~langneurons.analysis.distributions.mask_change`.
    """
    setup = paired_swap_inputs(
        base_run, aligned_run, method, params, n_perm, seed, cluster, paired, "type_switches"
    )
    res_b, res_a = setup.base_result, setup.aligned_result
    observed = _statistics(res_b, res_a)
    null, n_failed = swap_statistic(
        setup.samplers,
        setup.params,
        setup.seed,
        setup.n_perm,
        None,
        observed.shape,
        pair_statistic=_statistics,
    )
    t = len(TRANSITION_TYPES)
    finite = np.isfinite(null[:, 0])
    changed_null = null[finite, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        p_changed = (1.0 + (changed_null >= observed[0] - 1e-9).sum()) / (1.0 + finite.sum())
    upper = np.triu(np.ones((t, t), dtype=bool), k=1)
    asym = observed[1:].reshape(t, t)
    p_asym = swap_pvalue(null[:, 1:], observed[1:]).reshape(t, t)
    attrs = setup.attrs(
        n_failed,
        pvalue_changed="one-sided: more neurons switch type than exchangeable runs make switch",
    )
    ft = (FROM, TO)
    return xr.Dataset(
        {
            "count": (ft, transition_table(res_b, res_a)["count"].values),
            "changed": ((), int(observed[0])),
            "expected_changed": ((), float(changed_null.mean()) if finite.any() else np.nan),
            "changed_pvalue_swap": ((), float(p_changed) if finite.any() else np.nan),
            "asymmetry": (ft, np.where(upper, asym, np.nan)),
            "asymmetry_pvalue_swap": (ft, np.where(upper, p_asym, np.nan)),
            "swap_changed": ((PERMUTATION,), null[:, 0]),
        },
        coords={
            FROM: list(TRANSITION_TYPES),
            TO: list(TRANSITION_TYPES),
            PERMUTATION: np.arange(setup.n_perm),
        },
        attrs=attrs,
    )


__all__ = ["type_switches"]
