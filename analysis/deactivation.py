"""Statistics of deactivation (ablation) experiments: is the damage language-specific?

An ablation result holds, for each deactivated language mask (and "none"), the mean negative
log-likelihood per response token on each evaluated language, plus the same evaluation with
random neuron sets of the same size in the same layers switched off ("controls"). Switching off
the neurons of language d should hurt language d much more than the others (Tang et al. 2024,
Fig. 3; Zhang et al. 2025); :func:`deactivation_effects` measures this "diagonal dominance" and
tests it against the random controls and against a permutation of the language labels.
The same statistics apply to a mixture of experts, whose units are neurons inside experts
(controls: the same count per layer and expert) or whole experts masked in the router
(``n_experts``; controls: the same count of experts per layer); ``attrs["moe_unit"]`` says which.

Ablation schema (built by the extraction code)::

    deactivated[deactivated]                  "none", then each language whose mask was removed
    evaluated[evaluated]                      evaluated languages
    control[control]                          repeat index of the random controls
    nll[deactivated, evaluated]               mean NLL per response token
    ppl[deactivated, evaluated]               exp(nll)
    control_nll[deactivated, evaluated, control]   same with a random set ("none" row: NaN)
    n_neurons[deactivated]                    size of each mask (n_experts: masked experts)
    item_nll[deactivated, item]               summed response NLL of each evaluation record
    control_item_nll[deactivated, item, control]   same with each random set
    item_tokens[item]                         scored response tokens of each record
    item_language[item], item_id[item]        coordinates: the record's language and id

The per-item variables (ablations made since per-item NLL is stored) give intervals over items;
without them the intervals are NaN and ``attrs["intervals"]`` says why.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._validate import as_labels as _as_labels
from langneurons.analysis._validate import check_int as _check_int
from langneurons.analysis._validate import check_open_unit as _check_open_unit
from langneurons.analysis._validate import check_seed as _check_seed
from langneurons.errors import InputFormatError, ParameterError

DEACTIVATED, EVALUATED, CONTROL, PERMUTATION = "deactivated", "evaluated", "control", "permutation"
NONE = "none"

_EXACT_LIMIT = 8  # evaluated languages up to which all K! label permutations are enumerated
ITEM = "item"
_ITEM_VARS = ("item_nll", "item_tokens")
NO_ITEMS = "no per-item values (ablated before per-item NLL was stored): intervals unavailable"


def _check_ablation(ablation: object) -> xr.Dataset:
    """Validate the ablation schema; return the needed variables in memory."""
    if not isinstance(ablation, xr.Dataset):
        raise InputFormatError(
            f"ablation must be an xarray.Dataset (deactivation results), got "
            f"{type(ablation).__name__}"
        )
    if "unit_done" in ablation.data_vars and "nll" not in ablation.data_vars:
        a = ablation.attrs
        raise InputFormatError(
            f"ablation {a.get('result_name', '')!r} is unfinished ({a.get('units_done', '?')} "
            f"of {a.get('units_total', '?')} units); complete it with `langneurons ablate ... "
            "--resume` first"
        )
    expected = {
        "nll": (DEACTIVATED, EVALUATED),
        "control_nll": (DEACTIVATED, EVALUATED, CONTROL),
    }
    for name, dims in expected.items():
        if name not in ablation.data_vars:
            raise InputFormatError(
                f"ablation has no variable {name!r}; expected {name}[{', '.join(dims)}]"
            )
        if set(ablation[name].dims) != set(dims):
            raise InputFormatError(
                f"ablation.{name} has dims {tuple(ablation[name].dims)}, expected "
                f"{name}[{', '.join(dims)}]"
            )
    for dim in (DEACTIVATED, EVALUATED):
        if dim not in ablation.coords:
            raise InputFormatError(f"ablation has no {dim!r} coordinate (language labels)")
    deactivated = _as_labels(ablation[DEACTIVATED]).tolist()
    evaluated = _as_labels(ablation[EVALUATED]).tolist()
    if NONE not in deactivated:
        raise InputFormatError(
            f"ablation.deactivated has no {NONE!r} row (the unablated baseline); got {deactivated}"
        )
    if len(evaluated) < 2:
        raise InputFormatError(
            f"ablation needs at least 2 evaluated languages for a diagonal dominance, got "
            f"{evaluated}"
        )
    langs = [d for d in deactivated if d != NONE]
    if not langs:
        raise InputFormatError("ablation has no deactivated language besides 'none'")
    missing = [d for d in langs if d not in evaluated]
    if missing:
        raise InputFormatError(
            f"deactivated language {missing[0]!r} is not among the evaluated languages "
            f"{evaluated}; its own-language damage is undefined"
        )
    for name, seq in (("deactivated", deactivated), ("evaluated", evaluated)):
        if len(set(seq)) != len(seq):
            raise InputFormatError(f"ablation.{name} labels must be distinct, got {seq}")
    names = ["nll", "control_nll"]
    if all(v in ablation.data_vars for v in _ITEM_VARS):
        names += list(_ITEM_VARS)
        for coord in ("item_language", "item_id"):
            if coord not in ablation.coords or ablation[coord].dims != (ITEM,):
                raise InputFormatError(
                    f"ablation has per-item NLL but no {coord}[item] coordinate; expected "
                    "item_language[item] and item_id[item]"
                )
    ds = ablation[names].compute()
    nll = np.asarray(ds["nll"].transpose(DEACTIVATED, EVALUATED).values, dtype=np.float64)
    bad = ~np.isfinite(nll)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InputFormatError(
            f"ablation.nll is not finite at deactivated={deactivated[i]!r}, "
            f"evaluated={evaluated[j]!r}"
        )
    return ds


def _dominance(damage: NDArray[np.float64], own: NDArray[np.int64]) -> NDArray[np.float64]:
    """Own-language damage minus mean damage on the others.

    ``damage[d, e]`` or ``damage[d, e, control]``; ``own[..., d]`` is the column of each row's own
    language (a leading axis of ``own`` gives a leading axis of the result).
    """
    k = damage.shape[1]
    rows = np.arange(damage.shape[0])
    diag = damage[rows, own]
    return np.asarray(diag - (damage.sum(axis=1) - diag) / (k - 1))


def _ratio_variance(
    a: NDArray[np.float64], b: NDArray[np.float64], t: NDArray[np.float64], ids: NDArray[np.str_]
) -> tuple[float, int]:
    """HC3 variance of (sum a - sum b) / sum t over paired items clustered by id, and the
    number of clusters (NaN when fewer than 2 clusters or a value is missing).

    The linearised residuals ``z_i = d_i - R t_i`` are divided by ``1 - h_i`` with the ratio
    estimator's leverage ``h_i = t_i / T`` (MacKinnon & White 1985): with 8 items the plain
    ``n/(n-1)`` form covered 0.914 for 95 %, this one 0.93 (docs/calibration.md).
    """
    _, inv = np.unique(ids, return_inverse=True)
    n = int(inv.max()) + 1 if inv.size else 0
    if n < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan, n
    diff = np.bincount(inv, weights=a - b, minlength=n)
    tokens = np.bincount(inv, weights=t, minlength=n)
    total = float(tokens.sum())
    if total <= 0:
        return math.nan, n
    z = (diff - diff.sum() / total * tokens) / (1.0 - tokens / total)
    return float(np.sum(z * z) / total**2), n


def _item_variances(
    ds: xr.Dataset, langs: list[str], evaluated: list[str]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Variance of each damage ``[d, e]`` over the items of language e, and their clusters."""
    nll = np.asarray(ds["item_nll"].transpose(DEACTIVATED, ITEM).values, dtype=np.float64)
    deactivated = _as_labels(ds[DEACTIVATED]).tolist()
    tokens = np.asarray(ds["item_tokens"].values, dtype=np.float64)
    language = _as_labels(ds["item_language"])
    ids = _as_labels(ds["item_id"])
    base = nll[deactivated.index(NONE)]
    var = np.full((len(langs), len(evaluated)), np.nan)
    n = np.zeros(var.shape, dtype=np.int64)
    for j, e in enumerate(evaluated):
        on = language == e
        for i, d in enumerate(langs):
            row = nll[deactivated.index(d)]
            var[i, j], n[i, j] = _ratio_variance(row[on], base[on], tokens[on], ids[on])
    return var, n


#: Why the item intervals of a deactivation are labelled descriptive.
INTERVAL_REASON = (
    "Student-t intervals over skewed items undercover: the damage interval covered 0.93 with 8 "
    "items per language and 0.94 with 32, the dominance interval 0.943 and 0.949, and with "
    "heavy-tailed items 0.84-0.88 and 0.91-0.92 (docs/calibration.md); read them as "
    "approximate (the control test and the item t-test hold their level)"
)


def _interval_labels(items: bool) -> tuple[str, str]:
    """``inference`` of the item intervals (damage and dominance alike), and why."""
    if not items:
        return "none", NO_ITEMS
    return "descriptive", INTERVAL_REASON


def _check_controls(
    ablation: xr.Dataset, n_ctrl: NDArray[np.int64], langs: list[str], alpha: float
) -> None:
    """Refuse a control test that cannot reach ``alpha`` for some language."""
    worst = int(np.argmin(n_ctrl))
    c = int(n_ctrl[worst])
    floor = 1.0 / (c + 1)
    if floor <= alpha:
        return
    name = ablation.attrs.get("result_name") or ablation.attrs.get("identification")
    what = f"ablation {name!r}" if name else "the ablation"
    has = (
        f"has {c} random controls per language"
        if (n_ctrl == c).all()
        else f"has as few as {c} usable random controls (language {langs[worst]!r})"
    )
    needed = math.ceil(1.0 / alpha - 1.0 - 1e-9)
    raise ParameterError(
        f"{what} {has}: its smallest control p-value is 1/({c}+1) = {floor:.3g}, above alpha "
        f"{alpha:g}; ablate with --controls {needed} or more, or pass alpha=None (--alpha none) "
        "to report the control comparison as descriptive"
    )


def deactivation_effects(
    ablation: xr.Dataset,
    *,
    alpha: float | None = 0.05,
    n_perm: int = 10000,
    seed: int = 0,
) -> xr.Dataset:
    r"""Damage of deactivating each language's neurons, and whether it is language-specific.

    With :math:`\ell_{d,e}` the mean NLL per response token on language e when the mask of d
    is switched off (``d = none``: nothing switched off):

    - damage :math:`\delta_{d,e} = \ell_{d,e} - \ell_{none,e}` (log perplexity ratio);
    - diagonal dominance :math:`\Delta_d = \delta_{d,d} - \frac{1}{K-1}\sum_{e \ne d}
      \delta_{d,e}` over the K evaluated languages; its mean :math:`\bar\Delta` over the
      deactivated languages;
    - the same for each random control c (same size, same layers):
      :math:`\delta^{c}_{d,e} = \ell^{c}_{d,e} - \ell_{none,e}` and :math:`\Delta^c_d`.

    Tests (one-sided, "larger than chance"):

    (a) against random controls, :math:`p_d = (1 + \#\{c : \Delta^c_d \ge \Delta_d\}) /
        (1 + C)` over the C finite controls (Phipson & Smyth 2010), and the same for
        :math:`\bar\Delta` against :math:`\bar\Delta^c`; also
        :math:`z_d = (\Delta_d - \mathrm{mean}_c \Delta^c_d) / \mathrm{sd}_c \Delta^c_d`;
    (b) a permutation test over the evaluated-language labels (is the diagonal special?):
        permuting which evaluated language counts as each deactivated language's own,
        :math:`\bar\Delta_\pi = \mathrm{mean}_d [\delta_{d,\pi(d)} - \frac{1}{K-1}\sum_{e \ne
        \pi(d)} \delta_{d,e}]`, :math:`p = \#\{\pi : \bar\Delta_\pi \ge \bar\Delta\} / K!` over
        all K! permutations when K <= 8 (exact, identity included), else
        :math:`(1 + \#) / (1 + n_{perm})` over random ones. Per language, ``rank_pvalue`` is
        the fraction of evaluated languages whose damage is at least the own-language damage
        (smallest possible 1/K);
    (c) over items, when the ablation holds per-item NLL: a one-sided t-test of
        :math:`\Delta_d > 0` (``pvalue_items``).

    The two per-language tests answer different nulls. The control test (a) asks whether
    language d's set hurts d (relative to the others) more than random sets of the same size in
    the same layers do: its null is "d's set is exchangeable with a random set", and its p-value
    cannot go below :math:`1/(C+1)` (``min_pvalue_control``), so ``alpha`` needs
    :math:`C \ge 1/\alpha - 1` controls (19 at 0.05). The item test (c) asks whether the
    deactivation hurts its own language no more than the others, averaged over these items: its
    null is :math:`\Delta_d \le 0` in the population the evaluation items are drawn from, with
    the model, the neurons and the sets fixed; it says nothing about random sets.

    Intervals over items. The damage :math:`\delta_{d,e} = (\sum_i a_i - \sum_i b_i) / \sum_i
    t_i` over the items i of language e (a: summed NLL with d's set off, b: with nothing off,
    t: scored tokens; records sharing an ``item_id`` within a language are summed into one
    cluster first) is a ratio estimator over n paired clusters: with :math:`z_i = (a_i - b_i) -
    \delta t_i` and the leverage :math:`h_i = t_i / \sum_j t_j`, the HC3 variance
    :math:`\widehat{var} = \sum_i (z_i / (1 - h_i))^2 / (\sum_i t_i)^2` (MacKinnon & White
    1985; larger than Cochran's :math:`\frac{n}{n-1}` form, which undercovered more with 8
    items), and a Student-t interval with n - 1 degrees of freedom (Cochran 1977, ch. 6). The
    dominance combines the languages' items as independent samples:
    :math:`var(\Delta_d) = var(\delta_{d,d}) + \sum_{e \ne d} var(\delta_{d,e}) / (K-1)^2`,
    with Welch-Satterthwaite degrees of freedom; its interval and ``pvalue_items`` use that t
    distribution. Items of a parallel corpus that share an id across languages are treated as
    independent across languages.
    The coverage and sizes are measured by simulation in ``docs/calibration.md``: the tests
    hold their level; the item intervals undercover on skewed items (damage: 0.93 with 8
    items per language, 0.94 with 32; dominance: 0.943 with 8, 0.92 with 32 heavy-tailed
    items) and are labelled descriptive (``attrs["interval_inference"]``).

    Parameters
    ----------
    ablation : xarray.Dataset
        ``nll[deactivated, evaluated]`` and ``control_nll[deactivated, evaluated, control]``
        with a ``"none"`` row, every deactivated language also evaluated, K >= 2 evaluated
        languages (see the module docstring for the full schema). ``n_neurons`` (or
        ``n_experts``, when whole experts of a mixture of experts were masked) and
        ``attrs["moe_unit"]`` are carried over when present. Control entries may be NaN
        (missing); they are left out. With
        ``item_nll[deactivated, item]``, ``item_tokens[item]`` and the coordinates
        ``item_language`` and ``item_id``, intervals over items are computed.
    alpha : float in (0, 1) or None
        Level of the tests: intervals have level 1 - alpha. A language whose finite controls C
        give :math:`1/(C+1) > \alpha` is refused (the control test could never reject).
        ``None`` skips that check, reports the control comparison as descriptive
        (``attrs["inference"]``) and gives 95% intervals.
    n_perm : int >= 1
        Random permutations of the label test when K > 8.
    seed : int >= 0
        Seed of the random permutations.

    Returns
    -------
    xarray.Dataset
        ``damage[deactivated, evaluated]`` and ``ppl_ratio`` (:math:`e^{\delta}`),
        ``control_damage[deactivated, evaluated, control]``, ``dominance[deactivated]``,
        ``control_dominance[deactivated, control]``, ``control_mean``, ``control_sd``,
        ``z``, ``pvalue_control``, ``min_pvalue_control`` (:math:`1/(C+1)`), ``rank_pvalue``,
        ``n_controls``, ``dominance_se``, ``dominance_low``, ``dominance_high``,
        ``dominance_df``, ``pvalue_items`` on ``deactivated``; ``damage_low`` and
        ``damage_high`` on ``[deactivated, evaluated]``, ``n_items[deactivated, evaluated]``
        (clusters);
        scalars ``mean_dominance``, ``pvalue_control_mean``, ``pvalue_permutation``;
        ``control_mean_dominance[control]`` and ``permutation_dominance[permutation]`` (the
        null distributions). ``deactivated`` excludes "none". ``attrs``: ``n_perm``, ``seed``,
        ``permutation`` ("exact" / "random"), ``n_permutations``, ``n_evaluated``, ``alpha``
        ("none" when None), ``level``, ``inference`` and ``inference_reason`` (of the tests),
        ``intervals`` (how they were made, or why there are none),
        ``interval_inference`` (``"descriptive"``, or ``"none"`` without items) with
        ``interval_inference_reason``, and the ablation's ``heldout`` and ``heldout_note``.

    Raises
    ------
    InputFormatError
        The ablation breaks the schema (missing variables or dims, no "none" row, a
        deactivated language that is not evaluated, non-finite ``nll``).
    ParameterError
        ``n_perm``, ``seed`` or ``alpha`` is invalid, or a language has too few controls to
        reach ``alpha``.

    References
    ----------
    Tang et al. (2024), "Language-Specific Neurons: The Key to Multilingual Capabilities in
    Large Language Models", ACL; Phipson & Smyth (2010), "Permutation P-values should never be
    zero", SAGMB 9; Good (2005), Permutation, Parametric and Bootstrap Tests of Hypotheses;
    Cochran (1977), Sampling Techniques, 3rd ed., ch. 6 (ratio estimators); Satterthwaite
    (1946), Biometrics Bulletin 2.
    """
    import scipy.stats

    if alpha is not None:
        alpha = _check_open_unit("alpha", alpha)
    n_perm = _check_int("n_perm", n_perm, 1)
    seed = _check_seed(seed)
    ds = _check_ablation(ablation)
    deactivated = _as_labels(ds[DEACTIVATED]).tolist()
    evaluated = _as_labels(ds[EVALUATED]).tolist()
    langs = [d for d in deactivated if d != NONE]
    k = len(evaluated)
    nll = ds["nll"].transpose(DEACTIVATED, EVALUATED)
    base = np.asarray(nll.sel({DEACTIVATED: NONE}).values, dtype=np.float64)  # [evaluated]
    real = np.asarray(nll.sel({DEACTIVATED: langs}).values, dtype=np.float64)
    damage = real - base
    ctrl = ds["control_nll"].transpose(DEACTIVATED, EVALUATED, CONTROL).sel({DEACTIVATED: langs})
    cdamage = np.asarray(ctrl.values, dtype=np.float64) - base[None, :, None]
    own = np.array([evaluated.index(d) for d in langs], dtype=np.int64)
    dom = _dominance(damage, own)  # [d]
    cdom = _dominance(cdamage, own)  # [d, control]

    finite = np.isfinite(cdom)
    n_ctrl = finite.sum(axis=1)
    with np.errstate(invalid="ignore"):
        ge = (np.where(finite, cdom, -np.inf) >= dom[:, None] - 1e-12).sum(axis=1)
    p_ctrl = np.where(n_ctrl > 0, (1.0 + ge) / (1.0 + n_ctrl), np.nan)
    if alpha is not None:
        _check_controls(ablation, n_ctrl, langs, alpha)
    c_mean = np.array([cdom[i, f].mean() if f.any() else np.nan for i, f in enumerate(finite)])
    c_sd = np.array(
        [cdom[i, f].std(ddof=1) if f.sum() > 1 else np.nan for i, f in enumerate(finite)]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(c_sd > 0, (dom - c_mean) / c_sd, np.nan)

    mean_dom = float(dom.mean())
    complete = finite.all(axis=0)  # controls finite for every deactivated language
    c_mean_dom = np.where(complete, np.where(finite, cdom, 0.0).mean(axis=0), np.nan)
    n_complete = int(complete.sum())
    p_ctrl_mean = (
        (1.0 + float((c_mean_dom[complete] >= mean_dom - 1e-12).sum())) / (1.0 + n_complete)
        if n_complete
        else math.nan
    )

    exact = k <= _EXACT_LIMIT
    if exact:
        perms = np.array(list(itertools.permutations(range(k))), dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((n_perm, k)), axis=1)
    perm_dom = _dominance(damage, perms[:, own]).mean(axis=1)  # [permutation]
    hits = float((perm_dom >= mean_dom - 1e-12).sum())
    p_perm = hits / perms.shape[0] if exact else (1.0 + hits) / (1.0 + perms.shape[0])
    rank_p = (damage >= damage[np.arange(len(langs)), own][:, None] - 1e-12).sum(axis=1) / k

    level = 1.0 - alpha if alpha is not None else 0.95
    items = all(v in ds.data_vars for v in _ITEM_VARS)
    if items:
        var, n_items = _item_variances(ds, langs, evaluated)
    else:
        var = np.full(damage.shape, np.nan)
        n_items = np.zeros(damage.shape, dtype=np.int64)
    q = (1.0 + level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(var)
        half = scipy.stats.t.ppf(q, np.where(n_items > 1, n_items - 1, np.nan)) * se
        rows = np.arange(len(langs))
        weights = np.full(damage.shape, 1.0 / (k - 1) ** 2)
        weights[rows, own] = 1.0
        parts = weights * var  # each language's share of var(dominance)
        dom_var = parts.sum(axis=1)
        dom_df = dom_var**2 / (parts**2 / (n_items - 1.0)).sum(axis=1)
        # an empty set changes nothing: zero variance, a degenerate interval, no p-value
        dom_df = np.where(dom_var == 0.0, np.inf, dom_df)
        dom_se = np.sqrt(dom_var)
        dom_half = scipy.stats.t.ppf(q, dom_df) * dom_se
        p_items = scipy.stats.t.sf(dom / dom_se, dom_df)
    interval_label, interval_reason = _interval_labels(items)
    if alpha is None:
        c_min = int(n_ctrl.min())
        inference = "descriptive"
        reason = (
            f"alpha=None: the control comparison is descriptive ({c_min} random controls per "
            f"language give a smallest control p-value of {1.0 / (c_min + 1):.3g})"
        )
    else:
        inference = "valid"
        reason = (
            "control p-values are exact rank tests against random sets; item intervals are "
            "t intervals over items"
        )

    data: dict[str, Any] = {
        "damage": ((DEACTIVATED, EVALUATED), damage),
        "ppl_ratio": ((DEACTIVATED, EVALUATED), np.exp(damage)),
        "control_damage": ((DEACTIVATED, EVALUATED, CONTROL), cdamage),
        "dominance": ((DEACTIVATED,), dom),
        "control_dominance": ((DEACTIVATED, CONTROL), cdom),
        "control_mean": ((DEACTIVATED,), c_mean),
        "control_sd": ((DEACTIVATED,), c_sd),
        "z": ((DEACTIVATED,), z),
        "pvalue_control": ((DEACTIVATED,), p_ctrl),
        "min_pvalue_control": ((DEACTIVATED,), 1.0 / (1.0 + n_ctrl)),
        "damage_low": ((DEACTIVATED, EVALUATED), damage - half),
        "damage_high": ((DEACTIVATED, EVALUATED), damage + half),
        "n_items": ((DEACTIVATED, EVALUATED), n_items),
        "dominance_se": ((DEACTIVATED,), dom_se),
        "dominance_low": ((DEACTIVATED,), dom - dom_half),
        "dominance_high": ((DEACTIVATED,), dom + dom_half),
        "dominance_df": ((DEACTIVATED,), dom_df),
        "pvalue_items": ((DEACTIVATED,), p_items),
        "rank_pvalue": ((DEACTIVATED,), rank_p),
        "n_controls": ((DEACTIVATED,), n_ctrl.astype(np.int64)),
        "mean_dominance": ((), mean_dom),
        "control_mean_dominance": ((CONTROL,), c_mean_dom),
        "pvalue_control_mean": ((), p_ctrl_mean),
        "permutation_dominance": ((PERMUTATION,), perm_dom),
        "pvalue_permutation": ((), p_perm),
    }
    for size in ("n_neurons", "n_experts"):  # neurons (dense or in experts), or whole experts
        if size in ablation.data_vars and DEACTIVATED in ablation[size].dims:
            data[size] = ablation[size].sel({DEACTIVATED: langs}).compute().variable
    control_coord = ds[CONTROL].values if CONTROL in ds.coords else np.arange(cdamage.shape[-1])
    return xr.Dataset(
        data,
        coords={
            DEACTIVATED: np.asarray(langs, dtype=str),
            EVALUATED: np.asarray(evaluated, dtype=str),
            CONTROL: control_coord,
            PERMUTATION: np.arange(perms.shape[0]),
        },
        attrs={
            "n_perm": n_perm,
            "seed": seed,
            "permutation": "exact" if exact else "random",
            "n_permutations": int(perms.shape[0]),
            "n_evaluated": k,
            "statistic": (
                "diagonal dominance: own-language damage minus mean damage on the other "
                "evaluated languages (damage = nll - nll[none])"
            ),
            "alternative": "greater",
            "alpha": alpha if alpha is not None else "none",
            "level": level,
            "inference": inference,
            "inference_reason": reason,
            "intervals": (
                "Student-t over items (ratio estimator, clustered by item_id within a language; "
                "dominance: Welch-Satterthwaite over the languages)"
                if items
                else NO_ITEMS
            ),
            "interval_inference": interval_label,
            "interval_inference_reason": interval_reason,
            "pvalue_items_null": (
                "the deactivation hurts its own language no more than the others, averaged over "
                "these items"
            ),
            "pvalue_control_null": (
                "the language's set hurts its own language (relative to the others) no more than "
                "random sets of the same size in the same layers"
            ),
            "heldout": str(ablation.attrs.get("heldout", "unknown")),
            **(
                {"moe_unit": str(ablation.attrs["moe_unit"])}
                if "moe_unit" in ablation.attrs
                else {}
            ),
            "heldout_note": str(
                ablation.attrs.get("heldout_note", "ablated before the held-out check was recorded")
            ),
        },
    )


__all__ = ["deactivation_effects"]
