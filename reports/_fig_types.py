"""Figures of one or more identifications: neuron types per layer, per language, shared by N.

Each reads what :func:`langneurons.analysis.identify` records in its result's attributes
(``per_layer``, ``per_language``, ``shared_by_n``), or a
:func:`~langneurons.analysis.shared_by_change` result; nothing is recounted from the masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory
from numpy.typing import NDArray

from langneurons.errors import InputFormatError, ParameterError
from langneurons.names import LAYER
from langneurons.reports._fig_base import (
    GENERAL_LABEL,
    IDENTIFICATION_VARS,
    LAYER_TYPES,
    OKABE_ITO,
    RUN_COLORS,
    TYPE_COLORS,
    TYPE_LABELS,
    TYPE_MARKERS,
    AxesArg,
    as_array,
    figure_of,
    labels_of,
    legend_outside,
    named_results,
    new_axes,
    require,
    set_title,
    style_axes,
    styled,
)

# --------------------------------------------------------------------------- layer types


def _stage_bands(ax: Axes, stages: xr.Dataset, *, labels: bool = True) -> list[str]:
    """Shade alternate stages; with ``labels``, number them and draw boundary intervals on top."""
    st = require(stages, "stages", ("start", "end"), "a stages result (bootstrap_stages)")
    names = labels_of(st, "stage") if "stage" in st.dims else []
    starts = as_array(st["start"]).astype(np.float64)
    ends = as_array(st["end"]).astype(np.float64)
    low = as_array(st["start_low"]).astype(np.float64) if "start_low" in st else None
    high = as_array(st["start_high"]).astype(np.float64) if "start_high" in st else None
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        if i % 2 == 0:
            ax.axvspan(s - 0.5, e + 0.5, color="#000000", alpha=0.06, lw=0, zorder=0)
        if i > 0:
            ax.axvline(s - 0.5, color="#666666", lw=0.8, ls=":", zorder=1)
        if not labels:
            continue
        ax.text((s + e) / 2, 0.98, str(i + 1), transform=trans, ha="center", va="top", fontsize=8)
        if i > 0 and low is not None and high is not None and np.isfinite([low[i], high[i]]).all():
            y = 0.88 - 0.05 * ((i - 1) % 2)  # staggered, so neighbouring intervals stay apart
            ax.plot(
                [low[i] - 0.5, high[i] - 0.5],
                [y, y],
                transform=trans,
                color="#444444",
                lw=1.2,
                marker="|",
                ms=6,
            )
    return names or [f"stage {i + 1}" for i in range(len(starts))]


def _per_panel(value: object, n: int, name: str) -> list[xr.Dataset | None]:
    """One optional Dataset per panel: None, one for all panels, or a sequence of n."""
    if value is None or isinstance(value, xr.Dataset):
        return [value] * n
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == n:
        if all(v is None or isinstance(v, xr.Dataset) for v in value):
            return list(value)
    raise ParameterError(f"{name} must be None, one Dataset, or {n} Datasets/None (one per panel)")


def _run_panels(
    ax: AxesArg, n: int, split: bool
) -> tuple[Figure, list[tuple[Axes, Axes | None]], bool]:
    """Per run: the panel of selected types and the panel of general neurons (or None)."""
    if ax is None:
        ncols = min(n, 3)
        nrows = math.ceil(n / ncols)
        rows = 2 if split else 1
        fig = Figure(
            figsize=(3.6 * ncols + 2.6, (4.3 if split else 3.0) * nrows + 0.4), layout="constrained"
        )
        grid = np.asarray(
            fig.subplots(
                nrows * rows,
                ncols,
                squeeze=False,
                sharex="col",
                sharey="row",
                gridspec_kw={"height_ratios": [2.2, 1.0] * nrows if split else None},
            )
        )
        pairs: list[tuple[Axes, Axes | None]] = []
        for i in range(nrows * ncols):
            r, c = divmod(i, ncols)
            top, bottom = grid[r * rows, c], (grid[r * rows + 1, c] if split else None)
            if i < n:
                pairs.append((top, bottom))
            else:
                top.remove()
                if bottom is not None:
                    bottom.remove()
        return fig, pairs, True
    given = [ax] if isinstance(ax, Axes) else list(ax)
    if not all(isinstance(a, Axes) for a in given) or len(given) not in {n, 2 * n}:
        raise ParameterError(
            f"ax must be {n} or {2 * n} matplotlib Axes for this figure (one per result, or "
            f"two per result: selected types, then general), got {ax!r}"
        )
    if len(given) == 2 * n and split:
        pairs = [(given[2 * i], given[2 * i + 1]) for i in range(n)]
    elif split:  # one Axes per result: general neurons on a second y axis at the right
        pairs = [(a, a.twinx()) for a in given]
    else:
        pairs = [(a, None) for a in given[:n]]
    return figure_of(given[0]), pairs, False


def _layer_counts(
    result: xr.Dataset, label: str, types: Sequence[str]
) -> tuple[NDArray[np.float64], dict[str, NDArray[np.float64]]]:
    """Layer labels and per-layer counts of ``types``, read from ``attrs["per_layer"]``."""
    where = f"result {label!r}" if label else "result"
    per_layer = result.attrs.get("per_layer")
    if not isinstance(per_layer, Mapping) or not per_layer:
        raise InputFormatError(
            f"{where} has no attrs['per_layer'] (the per-layer counts identify() records); pass "
            "an identification result of langneurons.analysis.identify (`langneurons identify`)"
        )
    missing = [t for t in types if t not in per_layer]
    if missing:
        raise ParameterError(
            f"types {missing} are not counted in attrs['per_layer'] ({', '.join(per_layer)}); "
            "count them with langneurons.analysis.type_table(result, types=...)"
        )
    counts = {t: np.asarray(per_layer[t], dtype=np.float64) for t in types}
    n = len(next(iter(counts.values())))
    if LAYER in result.coords and result.sizes[LAYER] == n:
        layers = as_array(result[LAYER]).astype(np.float64)
    else:
        layers = np.arange(n, dtype=np.float64)
    return layers, counts


@styled
def layer_types(
    results: xr.Dataset | Sequence[xr.Dataset] | Mapping[str, xr.Dataset],
    labels: Sequence[str] | None = None,
    stages: xr.Dataset | Sequence[xr.Dataset | None] | None = None,
    ax: AxesArg = None,
    *,
    types: Sequence[str] = LAYER_TYPES,
) -> Figure:
    """Layer-wise counts of language-specific, -related and general neurons, one column per run.

    The counts are read from each result's ``attrs["per_layer"]``, which ``identify`` records
    and which equals :func:`langneurons.analysis.type_table` (Zhang et al. 2025, the layer-wise
    distribution of neuron types). Specific, related and unassigned neurons are
    counted among the rule's selected neurons (a few per layer); general neurons are counted
    over **all** neurons (above tau in every language; often many more), so they get their own
    panel below, with its own y axis, instead of flattening the others.

    Parameters
    ----------
    results : Dataset, sequence or mapping of Datasets
        Identification results (:func:`langneurons.identify`); a mapping's keys are labels.
    labels : sequence of str, optional
        Panel titles, one per result (e.g. the run names).
    stages : Dataset or sequence of Dataset/None, optional
        A :func:`~langneurons.analysis.bootstrap_stages` (or ``segment_stages``) result for
        every panel, or one per panel: alternate stages are shaded and numbered, and the
        bootstrap interval of each boundary is drawn at the top.
    ax : Axes or sequence of Axes, optional
        Two Axes per result (selected types, then general), or one per result (general
        neurons then use a second y axis on its right); default: a new figure.
    types : sequence of str
        Types to draw (default specific, related, general; "unassigned" is also allowed).

    Returns
    -------
    matplotlib.figure.Figure
    """
    named = named_results(
        results, labels, "results", IDENTIFICATION_VARS, "an identification result"
    )
    panel_stages = _per_panel(stages, len(named), "stages")
    selected_types = [t for t in types if t != "general"]
    has_general = "general" in types
    split = has_general and bool(selected_types)
    fig, pairs, new = _run_panels(ax, len(named), split)
    stage_names: list[str] = []
    top_max, general_max, headroom = 0.0, 0.0, 1.1
    for (label, result), st, (a, g) in zip(named, panel_stages, pairs, strict=True):
        layers, counts = _layer_counts(result, label, types)
        for t in types:
            target = g if (t == "general" and g is not None) else a
            values = counts[t]
            target.plot(
                layers,
                values,
                color=TYPE_COLORS[t],
                marker=TYPE_MARKERS[t],
                ms=3.5,
                lw=1.4,
                label=t,
            )
            if target is g:
                general_max = max(general_max, float(np.nanmax(values, initial=0.0)))
            else:
                top_max = max(top_max, float(np.nanmax(values, initial=0.0)))
        if st is not None:
            stage_names = _stage_bands(a, st)
            if g is not None and g is not a and new:
                _stage_bands(g, st, labels=False)
            headroom = 1.5  # room for stage numbers and intervals
        for panel in (a, g):
            if panel is None:
                continue
            panel.yaxis.set_major_locator(MaxNLocator(integer=True))
            panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        style_axes(a)
        set_title(a, label)
        if g is not None and new:
            style_axes(g)
            g.set_xlabel("layer")
        else:
            a.set_xlabel("layer")
    for a, g in pairs:  # panels of a row share y: one limit that fits every panel
        a.set_ylim(0, max(top_max, 1.0) * headroom)
        if g is not None:
            g.set_ylim(0, max(general_max, 1.0) * 1.15)
    first_top, first_general = pairs[0]
    first_top.set_ylabel("selected neurons" if split else "neurons")
    if first_general is not None:
        if new:
            first_general.set_ylabel(GENERAL_LABEL)
        for _, g in pairs:
            if g is not None and not new:
                g.set_ylabel(GENERAL_LABEL, color=TYPE_COLORS["general"])
                g.spines["right"].set_visible(True)
    handles = [
        Line2D([], [], color=TYPE_COLORS[t], marker=TYPE_MARKERS[t], ms=4, label=TYPE_LABELS[t])
        for t in types
    ]
    stage_handles = [
        Patch(facecolor="none", edgecolor="none", label=f"{i + 1}  {name}")
        for i, name in enumerate(stage_names)
    ]
    if new:
        fig.legend(handles=handles, loc="outside right upper", title="neuron type")
        if stage_handles:
            fig.legend(
                handles=stage_handles, loc="outside right lower", title="stage", handlelength=0
            )
    else:
        twin = pairs[-1][1] is not None
        legend_outside(fig, pairs[-1][0], handles + stage_handles, False, x=1.25 if twin else 1.02)
    return fig


def _shared_counts(
    results: object, labels: Sequence[str] | None
) -> tuple[list[str], NDArray[np.float64], xr.Dataset | None]:
    """Shared-by-N counts ``[run, N]`` from identification results or a shared_by_change."""
    if isinstance(results, xr.Dataset) and "n_shared" in results.dims:
        ds = require(results, "results", ("base", "aligned"), "a shared_by_change result")
        names = list(labels) if labels is not None else ["base", "aligned"]
        if len(names) != 2:
            raise ParameterError(f"labels must be 2 names (base, aligned), got {labels!r}")
        counts = np.stack([as_array(ds["base"]), as_array(ds["aligned"])]).astype(np.float64)
        return names, counts, ds
    named = named_results(results, labels, "results", (), "an identification result")
    rows = []
    for i, (_, res) in enumerate(named):
        hist = res.attrs.get("shared_by_n")
        if not isinstance(hist, Sequence) or isinstance(hist, str):
            raise InputFormatError(
                f"results[{i}] has no attrs['shared_by_n'] (the histogram identify() records); "
                "pass identification results or a shared_by_change result"
            )
        rows.append(np.asarray(hist, dtype=np.float64))
    if len({r.size for r in rows}) != 1:
        raise InputFormatError(
            "results have different numbers of languages (shared_by_n lengths differ); compare "
            "results over the same languages"
        )
    names = [lab or f"result {i + 1}" for i, (lab, _) in enumerate(named)]
    return names, np.stack(rows), None


@styled
def shared_by(
    results_before_after: xr.Dataset | Sequence[xr.Dataset] | Mapping[str, xr.Dataset],
    labels: Sequence[str] | None = None,
    ax: AxesArg = None,
    *,
    fraction: bool = True,
    log: bool | Literal["auto"] = "auto",
) -> Figure:
    """Shared-by-N histogram (neurons above tau in exactly N languages), before and after.

    Parameters
    ----------
    results_before_after : Dataset, sequence or mapping of Datasets
        Identification results (their ``attrs["shared_by_n"]``, over all neurons), e.g. of a
        base and an aligned run; or one :func:`~langneurons.analysis.shared_by_change` result,
        whose change and bootstrap interval are drawn in a second panel.
    labels : sequence of str, optional
        Names of the results (default: mapping keys, "base"/"aligned" for a change result).
    ax : Axes or sequence of Axes, optional
        One Axes (histogram), or two for a change result (histogram, change).
    fraction : bool
        Plot the fraction of all neurons (default) instead of counts.
    log : bool or "auto"
        Logarithmic y axis; "auto" when the bars span more than two orders of magnitude.

    Returns
    -------
    matplotlib.figure.Figure
    """
    names, counts, change = _shared_counts(results_before_after, labels)
    has_change = change is not None and all(
        v in change for v in ("change", "change_low", "change_high")
    )
    fig, axes, new = new_axes(ax, (2, 1) if has_change else (1,), figsize=(8.0, 3.2))
    a = axes[0]
    totals = counts.sum(axis=1, keepdims=True)
    heights = counts / np.where(totals > 0, totals, 1) if fraction else counts
    bins = np.arange(counts.shape[1])
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        a.bar(
            bins + (i - (len(names) - 1) / 2) * width,
            heights[i],
            width=width,
            color=RUN_COLORS[i % len(RUN_COLORS)],
            label=name,
        )
    positive = heights[heights > 0]
    use_log = (
        bool(positive.size and positive.max() / positive.min() > 100) if log == "auto" else log
    )
    if use_log:
        a.set_yscale("log")
    a.set_xticks(bins)
    a.set_xlabel("N (languages with P > tau)")
    a.set_ylabel("fraction of all neurons" if fraction else "neurons (of all)")
    set_title(a, "All neurons by the number of languages N with P > tau")
    style_axes(a)
    if len(names) > 1 or names[0]:
        legend_outside(fig, axes[-1], a.get_legend_handles_labels()[0], new)
    if has_change and len(axes) > 1 and change is not None:
        b = axes[1]
        b.vlines(
            bins,
            as_array(change["change_low"]),
            as_array(change["change_high"]),
            color=OKABE_ITO["black"],
            lw=1.6,
        )
        b.plot(bins, as_array(change["change"]), "o", color=OKABE_ITO["black"], ms=4)
        b.axhline(0, color="#000000", lw=0.8)
        b.set_xticks(bins)
        b.set_xlabel("N")
        b.set_ylabel("change in fraction")
        level = change.attrs.get("ci")
        set_title(
            b, f"{names[1]} − {names[0]}" + (f" ({float(level) * 100:g}% CI)" if level else "")
        )
        style_axes(b)
    return fig


# --------------------------------------------------------------------------- per language


@styled
def per_language(result: xr.Dataset, ax: AxesArg = None) -> Figure:
    """Language-specific and -related neurons of each language (stacked), and its mask size.

    Parameters
    ----------
    result : Dataset
        An identification result (its ``attrs["per_language"]``).
    ax : Axes, optional
        The Axes to draw on; default: a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ds = require(result, "result", (), "an identification result")
    per = ds.attrs.get("per_language")
    if not isinstance(per, Mapping) or not per:
        raise InputFormatError(
            "result has no attrs['per_language'] (the counts identify() records); pass an "
            "identification result"
        )
    langs = [str(k) for k in per]
    spec = np.array([int(per[k].get("specific", 0)) for k in per], dtype=np.float64)
    rel = np.array([int(per[k].get("related", 0)) for k in per], dtype=np.float64)
    mask = np.array([int(per[k].get("mask", 0)) for k in per], dtype=np.float64)
    fig, axes, new = new_axes(ax, 1, figsize=(max(4.0, 0.55 * len(langs) + 3.5), 3.2))
    a = axes[0]
    x = np.arange(len(langs))
    a.bar(x, spec, color=TYPE_COLORS["specific"], label="specific", width=0.7)
    a.bar(x, rel, bottom=spec, color=TYPE_COLORS["related"], label="related", width=0.7)
    mask_label = "mask (selected, P > tau)"
    a.plot(x, mask, ls="none", marker="_", ms=14, mew=2, color="#000000", label=mask_label)
    a.set_xticks(x, labels=langs, rotation=45 if len(langs) > 8 else 0)
    a.set_xlabel("language")
    a.set_ylabel("neurons")
    a.margins(y=0.1)
    a.yaxis.set_major_locator(MaxNLocator(integer=True))
    method = ds.attrs.get("method")
    set_title(a, "Selected neurons per language" + (f" ({method})" if method else ""))
    style_axes(a)
    legend_outside(fig, a, a.get_legend_handles_labels()[0], new)
    return fig


__all__ = ["layer_types", "per_language", "shared_by"]
