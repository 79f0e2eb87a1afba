"""Figures of statistics: deactivation effects, identification stability, p and q values.

Each draws one computed result (:func:`~langneurons.analysis.deactivation_effects`,
:func:`~langneurons.analysis.bootstrap_identification`,
:func:`~langneurons.analysis.language_preference_tests`); none runs a test or a resampling.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import xarray as xr
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from langneurons.errors import InputFormatError
from langneurons.names import LANGUAGE
from langneurons.reports._fig_base import (
    OKABE_ITO,
    TYPE_COLORS,
    AxesArg,
    as_array,
    heatmap,
    labels_of,
    legend_outside,
    new_axes,
    require,
    set_title,
    significant,
    style_axes,
    styled,
)

# --------------------------------------------------------------------------- deactivation


@styled
def deactivation_heatmap(
    effects: xr.Dataset,
    ax: AxesArg = None,
    *,
    n_perm: int | None = None,
    seed: int | None = None,
) -> Figure:
    r"""Damage of deactivating each language's neurons on every language, against random sets.

    Left: :math:`\delta_{d,e} = \ell_{d,e} - \ell_{none,e}` (change of mean NLL per response
    token, the log perplexity ratio) for deactivated set d (rows) and evaluated language e
    (columns); each cell reads the perplexity change in percent, :math:`e^{\delta} - 1`, and
    below it the mean over the random controls (same size, same layers). Own-language cells
    are outlined. Right: the diagonal dominance of each set (own-language damage minus the
    mean on the others, diamond) against the same statistic of each random control (dots),
    with the one-sided control p-value. Everything comes from
    :func:`langneurons.analysis.deactivation_effects` (Tang et al. 2024, Fig. 3).

    Parameters
    ----------
    effects : Dataset
        A ``deactivation_effects`` result (``damage``, ``dominance``; saved by
        ``langneurons stats deactivation``). An ablation result is refused: the figure does not
        run the permutation test.
    ax : Axes or sequence of 2 Axes, optional
        One Axes (the heatmap only) or two; default: a new figure with both.
    n_perm, seed : int, optional
        Deprecated and ignored: pass them to ``deactivation_effects``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if n_perm is not None or seed is not None:
        warnings.warn(
            "deactivation_heatmap ignores n_perm and seed: pass them to "
            "langneurons.analysis.deactivation_effects, whose result it draws",
            DeprecationWarning,
            stacklevel=3,
        )
    if isinstance(effects, xr.Dataset) and "nll" in effects and "damage" not in effects:
        raise InputFormatError(
            "effects is an ablation result; pass its effects: deactivation_heatmap("
            "langneurons.analysis.deactivation_effects(ablation)) or the result saved by "
            "`langneurons stats deactivation`"
        )
    effects = require(
        effects,
        "effects",
        ("damage", "dominance"),
        "a deactivation_effects result (langneurons.analysis.deactivation_effects)",
    )
    damage_da = effects["damage"].transpose("deactivated", "evaluated")
    rows, cols = labels_of(damage_da, "deactivated"), labels_of(damage_da, "evaluated")
    damage = as_array(damage_da).astype(np.float64)
    ratio = (
        as_array(effects["ppl_ratio"].transpose("deactivated", "evaluated")).astype(np.float64)
        if "ppl_ratio" in effects
        else np.exp(damage)
    )
    control = None
    if "control_damage" in effects and effects.sizes.get("control", 0) > 0:
        cd = as_array(effects["control_damage"].transpose("deactivated", "evaluated", "control"))
        finite = np.isfinite(cd).any(axis=-1)
        control = np.full(damage.shape, np.nan)
        control[finite] = np.exp(np.nanmean(cd[finite], axis=-1))
    fig, axes, new = new_axes(
        ax,
        (2, 1),
        figsize=(max(8.5, 0.85 * len(cols) + 6.0), max(3.4, 0.5 * len(rows) + 1.8)),
        width_ratios=[max(len(cols), 2), 2],
    )
    a = axes[0]
    lim = float(np.nanmax(np.abs(damage))) if np.isfinite(damage).any() else 1.0
    lim = lim if lim > 0 else 1.0
    text = np.empty(damage.shape, dtype=object)
    for (i, j), r in np.ndenumerate(ratio):
        cell = f"{significant((float(r) - 1) * 100, sign=True)}%" if np.isfinite(r) else "–"
        if control is not None and np.isfinite(control[i, j]):
            cell += f"\nctrl {significant((float(control[i, j]) - 1) * 100, sign=True)}%"
        text[i, j] = cell
    heatmap(
        a,
        damage,
        rows,
        cols,
        cmap="PuOr_r",
        norm=Normalize(-lim, lim),
        text=text,
        colorbar="Δ NLL per token (log PPL ratio)",
        row_label="deactivated neurons of",
        col_label="evaluated language",
    )
    for i, d in enumerate(rows):
        if d in cols:
            a.add_patch(
                Rectangle((cols.index(d) - 0.5, i - 0.5), 1, 1, fill=False, ec="#000000", lw=1.5)
            )
    set_title(a, "Perplexity change vs no deactivation (cells: %; ctrl: random sets)")
    if len(axes) > 1:
        b = axes[1]
        dom = as_array(effects["dominance"]).astype(np.float64)
        y = np.arange(len(rows))
        if "control_dominance" in effects and effects.sizes.get("control", 0) > 0:
            cdom = as_array(effects["control_dominance"].transpose("deactivated", "control"))
            jitter = np.linspace(-0.25, 0.25, cdom.shape[1]) if cdom.shape[1] > 1 else [0.0]
            for i in range(len(rows)):
                b.plot(
                    cdom[i],
                    y[i] + np.asarray(jitter),
                    ls="none",
                    marker=".",
                    ms=3,
                    color="#999999",
                    label="random controls" if i == 0 else None,
                )
        b.plot(
            dom,
            y,
            ls="none",
            marker="D",
            ms=6,
            color=TYPE_COLORS["specific"],
            label="language neurons",
        )
        ticks = list(rows)
        if "pvalue_control" in effects:
            pvalues = as_array(effects["pvalue_control"]).astype(np.float64)
            ticks = [
                f"{d}\np={p:.2g}" if np.isfinite(p) else d
                for d, p in zip(rows, pvalues, strict=True)
            ]
        b.axvline(0, color="#000000", lw=0.8)
        b.set_yticks(y, labels=ticks)
        b.set_ylim(len(rows) - 0.5, -0.5)
        b.set_xlabel("diagonal dominance (Δ NLL)")
        set_title(b, "Own-language damage")
        style_axes(b, grid="x")
        legend_outside(fig, b, b.get_legend_handles_labels()[0], new, where="lower", fontsize=7)
    return fig


# --------------------------------------------------------------------------- uncertainty


@styled
def stability(stability_result: xr.Dataset, ax: AxesArg = None) -> Figure:
    """How stable an identification is under resampling of the sequences.

    Left: histogram of the selection frequency of every neuron selected in at least one
    bootstrap replicate. Right: Jaccard index of each language's replicate mask with the
    full-data mask (box per language, mean as a diamond). From
    ``langneurons.analysis.stability.bootstrap_identification``.

    Parameters
    ----------
    stability_result : Dataset
        A ``bootstrap_identification`` result (``selection_frequency``, ``jaccard``).
    ax : Axes or sequence of 2 Axes, optional
        The two Axes to draw on; default: a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ds = require(
        stability_result,
        "stability_result",
        ("selection_frequency", "jaccard", "jaccard_mean"),
        "a bootstrap_identification result",
    )
    fig, axes, _ = new_axes(ax, 2, figsize=(8.0, 3.2))
    a, b = axes
    freq = as_array(ds["selection_frequency"]).astype(np.float64).ravel()
    freq = freq[np.isfinite(freq)]
    never = int((freq == 0).sum())
    a.hist(freq[freq > 0], bins=np.linspace(0, 1, 21).tolist(), color=OKABE_ITO["blue"], alpha=0.85)
    a.set_xlim(0, 1)
    a.set_xlabel(f"selection frequency\n({never} of {freq.size} neurons never selected, not shown)")
    a.set_ylabel("neurons selected at least once")
    boots = ds.attrs.get("n_ok", ds.attrs.get("n_boot"))
    set_title(a, f"Selected in ≥1 of {boots} replicates" if boots else "Selection frequency")
    style_axes(a)
    jac = ds["jaccard"].transpose("replicate", LANGUAGE)
    values = as_array(jac).astype(np.float64)
    if "ok" in ds:
        values = values[as_array(ds["ok"]).astype(bool)]
    langs = labels_of(jac, LANGUAGE)
    data = [col[np.isfinite(col)] for col in values.T]
    b.boxplot(
        data,
        tick_labels=langs,
        widths=0.6,
        medianprops={"color": "#000000"},
        flierprops={"marker": ".", "markersize": 3},
    )
    means = as_array(ds["jaccard_mean"]).astype(np.float64)  # on jac's language order
    b.plot(np.arange(1, len(langs) + 1), means, "D", color=TYPE_COLORS["specific"], ms=4)
    b.set_ylim(0, 1.05)
    b.set_xlabel("language (box: replicates; diamond: mean)")
    b.set_ylabel("Jaccard with full-data mask")
    set_title(b, "Mask stability per language")
    if len(langs) > 8:
        b.tick_params(axis="x", rotation=45)
    style_axes(b)
    return fig


@styled
def qvalues(tests_result: xr.Dataset, ax: AxesArg = None) -> Figure:
    """Distribution of p- and FDR q-values, and significant neurons per language.

    From ``langneurons.analysis.neuron_tests.language_preference_tests``: left, histograms
    of ``p`` and ``q`` over all (neuron, language) tests with the FDR level ``alpha``; right,
    the number of significant neurons of each language.

    Parameters
    ----------
    tests_result : Dataset
        A ``language_preference_tests`` result (``q``, ``significant``; ``p`` optional).
    ax : Axes or sequence of 2 Axes, optional
        The two Axes to draw on; default: a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ds = require(
        tests_result, "tests_result", ("q", "significant"), "a language_preference_tests result"
    )
    fig, axes, new = new_axes(ax, 2, figsize=(9.0, 3.3))
    a, b = axes
    bins = np.linspace(0, 1, 21).tolist()
    if "p" in ds:
        p = as_array(ds["p"]).astype(np.float64).ravel()
        a.hist(p[np.isfinite(p)], bins=bins, color=OKABE_ITO["sky blue"], alpha=0.7, label="p")
    q = as_array(ds["q"]).astype(np.float64).ravel()
    a.hist(
        q[np.isfinite(q)],
        bins=bins,
        histtype="step",
        lw=1.6,
        color=OKABE_ITO["blue"],
        label="q (FDR-adjusted)",
    )
    alpha = ds.attrs.get("alpha")
    if alpha is not None:
        a.axvline(float(alpha), color="#000000", ls="--", lw=1, label=f"alpha = {float(alpha):g}")
    a.set_yscale("log")
    a.set_xlim(0, 1)
    a.set_xlabel("value")
    a.set_ylabel("tests (neuron × language)")
    correction = ds.attrs.get("correction")
    set_title(a, "p and q values" + (f" ({correction})" if correction else ""))
    style_axes(a)
    per = ds.attrs.get("n_significant_per_language")
    if not isinstance(per, Mapping) or not per:
        raise InputFormatError(
            "tests_result has no attrs['n_significant_per_language'] (the counts "
            "langneurons.analysis.language_preference_tests records); pass its result"
        )
    langs = [str(k) for k in per]
    counts = np.array([int(v) for v in per.values()])
    bars = b.bar(range(len(langs)), counts, color=OKABE_ITO["bluish green"], width=0.7)
    # labels side by side need about 0.6 em per character: turn them upright when crowded
    widest = max((len(f"{c:d}") for c in counts.tolist()), default=1)
    crowded = len(langs) * (widest + 1) * 0.6 * 7 / 72 > 3.2
    b.bar_label(bars, fontsize=7, rotation=90 if crowded else 0, padding=2)
    b.yaxis.set_major_locator(MaxNLocator(integer=True))
    b.set_xticks(range(len(langs)), labels=langs, rotation=45 if len(langs) > 8 else 0)
    b.set_xlabel("language")
    b.set_ylabel("neurons significant for the language")
    b.margins(y=0.25 if crowded else 0.15)
    set_title(b, "Significant per language")
    style_axes(b)
    handles = a.get_legend_handles_labels()[0]
    if new:  # below both panels: it explains the left one, and covers neither
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    else:
        legend_outside(fig, a, handles, new)
    return fig


__all__ = ["deactivation_heatmap", "qvalues", "stability"]
