r"""Statistics of accuracy-based deactivation: how much does switching neurons off cost, where?

An accuracy ablation (``attrs["kind"] == "accuracy"``, built by
:func:`langneurons.extract.accuracy.ablate_accuracy`) holds per-item correctness::

    correct[panel, deactivated, variant, item]   bool; variant 0: the panel's set of the
                                                 deactivated language, c + 1: random control c
    baseline_correct[item]                       bool; nothing switched off
    item_language[item]                          the language each item is asked in

Items are the unit of inference: each item's answer with the set off is paired with its
baseline answer. For panel p, deactivated language d and evaluated language e (items
:math:`I_e`, :math:`n_e = |I_e|`):

- accuracy :math:`a_{p,d,e} = \frac{1}{n_e}\sum_{i \in I_e} y_{p,d,i}` with a Wilson score
  interval; baseline :math:`a_e`;
- drop :math:`\delta_{p,d,e} = a_e - a_{p,d,e}` with Agresti and Min's (2005) interval for
  a paired difference of proportions (1/2 added to each cell of the paired table), and the
  exact one-sided McNemar test over the discordant items (b lost, c gained):
  :math:`p = P(\mathrm{Bin}(b + c, 1/2) \ge b)`;
- diagonal dominance :math:`\Delta_{p,d} = \delta_{p,d,d} - \frac{1}{K-1}\sum_{e \ne d}
  \delta_{p,d,e}`, the same :math:`\Delta^c_{p,d}` for each control c, and
  :math:`p^{ctrl}_{p,d} = (1 + \#\{c : \Delta^c_{p,d} \ge \Delta_{p,d}\}) / (1 + C)`, whose
  smallest attainable value is :math:`1/(C+1)`. With fewer than :math:`1/\alpha - 1` controls
  the control comparison cannot reach :math:`\alpha` and is labelled descriptive.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._validate import as_labels as _as_labels
from langneurons.errors import InputFormatError, ParameterError

PANEL, DEACTIVATED, EVALUATED, VARIANT, ITEM, CONTROL = (
    "panel",
    "deactivated",
    "evaluated",
    "variant",
    "item",
    "control",
)
KIND = "accuracy"


def wilson(k: NDArray[Any], n: NDArray[Any], alpha: float) -> tuple[NDArray[Any], NDArray[Any]]:
    """Wilson score interval of k successes in n trials (NaN where n == 0)."""
    from scipy import stats

    z = stats.norm.ppf(1 - alpha / 2)
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def paired_drop(
    base: NDArray[np.bool_], after: NDArray[np.bool_], alpha: float
) -> tuple[float, float, float, float]:
    """Drop ``mean(base) - mean(after)`` over paired items: estimate, Agresti-Min interval, and
    the exact one-sided McNemar p-value (larger than chance: more items lost than gained).

    The interval adds 1/2 to each cell of the paired 2 x 2 table (Agresti & Min 2005):
    ``d = (b - c) / (n + 2)`` with ``b, c`` the lost and gained items plus 1/2, ``se =
    sqrt((b + c) - (b - c)^2 / (n + 2)) / (n + 2)``, clipped to [-1, 1]. With 8 items per
    language Newcombe's method 10 covered 0.89 for 95 %, this one 0.96 (docs/calibration.md).
    """
    from scipy import stats

    n = base.size
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    b = int(np.sum(base & ~after))  # lost
    c = int(np.sum(~base & after))  # gained
    z = float(stats.norm.ppf(1 - alpha / 2))
    bt, ct, nt = b + 0.5, c + 0.5, n + 2.0
    centre = (bt - ct) / nt
    half = z * math.sqrt(max((bt + ct) - (bt - ct) ** 2 / nt, 0.0)) / nt
    p = float(stats.binom.sf(b - 1, b + c, 0.5)) if b + c else 1.0
    return (b - c) / n, max(centre - half, -1.0), min(centre + half, 1.0), p


def _check(ablation: object) -> xr.Dataset:
    if not isinstance(ablation, xr.Dataset):
        raise InputFormatError(
            f"ablation must be an xarray.Dataset (an accuracy ablation), got "
            f"{type(ablation).__name__}"
        )
    a = ablation.attrs
    if "unit_done" in ablation.data_vars:
        raise InputFormatError(
            f"accuracy ablation {a.get('result_name', '')!r} is unfinished "
            f"({a.get('units_done', '?')} of {a.get('units_total', '?')} units); complete it "
            "with `langneurons ablate-accuracy ... --resume` first"
        )
    if a.get("kind") != KIND:
        raise InputFormatError(
            f"ablation is not an accuracy ablation (attrs kind {a.get('kind')!r}); make one "
            "with `langneurons ablate-accuracy`"
        )
    for name in ("correct", "baseline_correct", "item_language"):
        if name not in ablation.variables:
            raise InputFormatError(f"accuracy ablation has no variable {name!r}")
    return ablation


def accuracy_effects(ablation: xr.Dataset, *, alpha: float = 0.05) -> xr.Dataset:
    r"""Accuracy, its drop against the baseline, and whether the drop is language-specific.

    See the module docstring for the formulas (Wilson and Agresti-Min intervals, exact McNemar
    test over items, diagonal dominance against random controls).

    Parameters
    ----------
    ablation : xarray.Dataset
        An accuracy ablation (``attrs["kind"] == "accuracy"``).
    alpha : float in (0, 1)
        Level of the intervals (1 - alpha) and of the reachability check of the control test.

    Returns
    -------
    xarray.Dataset
        ``accuracy``, ``accuracy_low``, ``accuracy_high``, ``drop``, ``drop_low``,
        ``drop_high``, ``pvalue_item`` on ``[panel, deactivated, evaluated]``;
        ``control_accuracy`` and ``control_drop`` on ``[panel, deactivated, evaluated,
        control]``; ``dominance``, ``pvalue_control`` on ``[panel, deactivated]`` and
        ``control_dominance`` on ``[panel, deactivated, control]``; ``baseline``,
        ``baseline_low``, ``baseline_high``, ``n_items`` on ``[evaluated]``. ``attrs``:
        ``kind``, ``alpha``, ``controls``, ``min_pvalue_control`` (1 / (C + 1)),
        ``inference`` and ``inference_reason``, ``assumption``. The set sizes
        ``n_neurons[panel, deactivated]`` (``n_experts`` when whole experts of a mixture of
        experts were masked) and ``attrs["moe_unit"]`` are carried over when present.

    Raises
    ------
    InputFormatError
        Not a finished accuracy ablation.
    ParameterError
        ``alpha`` is not in (0, 1).

    References
    ----------
    Zhang et al. (2025), language neurons and alignment; Wilson (1927); Agresti & Min (2005),
    "Simple improved confidence intervals for comparing matched proportions", Stat. Med. 24;
    McNemar (1947); Phipson & Smyth (2010).
    """
    if not isinstance(alpha, float | int) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ParameterError(f"alpha must be in (0, 1), got {alpha!r}")
    ds = _check(ablation)
    panels = _as_labels(ds[PANEL]).tolist()
    rows = _as_labels(ds[DEACTIVATED]).tolist()
    item_lang = _as_labels(ds["item_language"])
    evaluated = list(dict.fromkeys(item_lang.tolist()))
    correct = np.asarray(ds["correct"].transpose(PANEL, DEACTIVATED, VARIANT, ITEM).values, bool)
    base = np.asarray(ds["baseline_correct"].values, bool)
    n_ctrl = correct.shape[2] - 1
    groups = [np.flatnonzero(item_lang == e) for e in evaluated]
    n_items = np.array([len(g) for g in groups])
    base_acc = np.array([base[g].mean() for g in groups])
    acc = np.stack([correct[..., g].mean(axis=-1) for g in groups], axis=-1)  # [p, d, v, e]
    k = correct[..., 0, :]
    shape = (len(panels), len(rows), len(evaluated))
    drop, lo, hi, p_item = (np.full(shape, np.nan) for _ in range(4))
    for i in range(shape[0]):
        for j in range(shape[1]):
            for e, g in enumerate(groups):
                drop[i, j, e], lo[i, j, e], hi[i, j, e], p_item[i, j, e] = paired_drop(
                    base[g], k[i, j, g], alpha
                )
    counts = np.stack([correct[..., g].sum(axis=-1) for g in groups], axis=-1)[:, :, 0]
    acc_lo, acc_hi = wilson(counts, n_items, alpha)
    b_lo, b_hi = wilson(np.array([base[g].sum() for g in groups]), n_items, alpha)
    cdrop = base_acc - acc[:, :, 1:, :]  # [p, d, c, e]
    own = np.array([evaluated.index(d) if d in evaluated else -1 for d in rows])
    kk = len(evaluated)

    def dominance(x: NDArray[Any]) -> NDArray[Any]:  # x[..., d, e] -> [..., d]
        diag = np.take_along_axis(x, own.reshape((1,) * (x.ndim - 2) + (-1, 1)), -1)[..., 0]
        rest = (x.sum(axis=-1) - diag) / max(kk - 1, 1)
        return np.where(own >= 0, diag - rest, np.nan) if kk > 1 else np.full(diag.shape, np.nan)

    dom = dominance(drop)  # [p, d]
    cdom = dominance(np.moveaxis(cdrop, 2, 0))  # [c, p, d]
    cdom = np.moveaxis(cdom, 0, -1)  # [p, d, c]
    with np.errstate(invalid="ignore"):
        ge = (cdom >= dom[..., None] - 1e-12).sum(axis=-1)
    p_ctrl = np.where(n_ctrl > 0, (1.0 + ge) / (1.0 + n_ctrl), np.nan)
    min_p = 1.0 / (n_ctrl + 1)
    if n_ctrl == 0:
        inference, reason = "descriptive", "no random controls: the control comparison is absent"
    elif min_p > alpha:
        inference = "descriptive"
        reason = (
            f"with {n_ctrl} random control(s) the smallest attainable control p is "
            f"{min_p:.3g} > alpha {alpha:g}: the control comparison cannot reject; it "
            "describes where the real set ranks among the controls"
        )
    else:
        inference, reason = "valid", f"{n_ctrl} controls reach p = {min_p:.3g} <= alpha {alpha:g}"
    cell = (PANEL, DEACTIVATED, EVALUATED)
    data: dict[str, Any] = {
        "accuracy": (cell, acc[:, :, 0, :]),
        "accuracy_low": (cell, acc_lo),
        "accuracy_high": (cell, acc_hi),
        "drop": (cell, drop),
        "drop_low": (cell, lo),
        "drop_high": (cell, hi),
        "pvalue_item": (cell, p_item),
        "control_accuracy": ((*cell, CONTROL), np.moveaxis(acc[:, :, 1:, :], 2, -1)),
        "control_drop": ((*cell, CONTROL), np.moveaxis(cdrop, 2, -1)),
        "dominance": ((PANEL, DEACTIVATED), dom),
        "control_dominance": ((PANEL, DEACTIVATED, CONTROL), cdom),
        "pvalue_control": ((PANEL, DEACTIVATED), p_ctrl),
        "baseline": ((EVALUATED,), base_acc),
        "baseline_low": ((EVALUATED,), b_lo),
        "baseline_high": ((EVALUATED,), b_hi),
        "n_items": ((EVALUATED,), n_items.astype(np.int64)),
    }
    for size in ("n_neurons", "n_experts"):  # neurons (dense or in experts), or whole experts
        if size in ds:
            data[size] = ((PANEL, DEACTIVATED), np.asarray(ds[size].values)[:, :, 0])
    return xr.Dataset(
        data,
        coords={
            PANEL: np.asarray(panels, dtype=str),
            DEACTIVATED: np.asarray(rows, dtype=str),
            EVALUATED: np.asarray(evaluated, dtype=str),
            CONTROL: np.arange(n_ctrl),
        },
        attrs={
            "kind": KIND,
            "alpha": float(alpha),
            "controls": int(n_ctrl),
            "min_pvalue_control": float(min_p),
            "inference": inference,
            "inference_reason": reason,
            "assumption": "items are the unit: each item's answer with the set off is paired "
            "with its baseline answer (exact McNemar; Agresti-Min interval)",
            "statistic": "drop = baseline accuracy - accuracy with the set off; dominance = "
            "own-language drop minus mean drop on the other evaluated languages",
            "alternative": "greater",
            **({"moe_unit": str(ds.attrs["moe_unit"])} if "moe_unit" in ds.attrs else {}),
        },
    )


__all__ = ["accuracy_effects", "paired_drop", "wilson"]
