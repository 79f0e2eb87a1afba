"""Figures of models of different shapes side by side (a :func:`compare_models` result).

Each draws what :func:`~langneurons.analysis.compare_models` computed: layer profiles on
relative depth, type shares, and the Jaccard matrices of the languages' masks. Nothing is
computed here beyond arranging the result's variables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from langneurons.errors import ParameterError
from langneurons.reports._fig_base import (
    RUN_COLORS,
    TYPE_COLORS,
    AxesArg,
    as_array,
    heatmap,
    labels_of,
    legend_outside,
    new_axes,
    require,
    set_title,
    style_axes,
    styled,
)

_WHAT = "a compare_models result"
_MARKERS = ("o", "s", "^", "D", "v")
PROFILE_TYPES: tuple[str, ...] = ("specific", "related", "general", "unassigned")


def _checked(ds: object) -> xr.Dataset:
    return require(ds, "models_result", ("type_share", "layer_share", "jaccard"), _WHAT)


def _model_handles(names: Sequence[str]) -> list[Line2D]:
    return [
        Line2D([], [], color=RUN_COLORS[i % len(RUN_COLORS)], marker=_MARKERS[i % 5], label=n)
        for i, n in enumerate(names)
    ]


def _shape_label(ds: xr.Dataset, model: str) -> str:
    layers = int(ds["n_layers"].sel(model=model))
    neurons = int(ds["n_neurons"].sel(model=model))
    return f"{model} ({layers} x {neurons})"


@styled
def model_profiles(
    models_result: xr.Dataset, ax: AxesArg = None, *, types: Sequence[str] = PROFILE_TYPES
) -> Figure:
    """Layer profiles on relative depth, one panel per type, the models overlaid.

    Draws ``layer_share[model, depth_bin, type]``: in each bin of relative depth
    ``layer / (L - 1)``, the fraction of the model's neurons there that are of the type, with
    the item-bootstrap percentile band (``layer_share_lower .. _upper``) when present; dotted
    lines: where each model's stages begin (``stage_start``).

    Parameters
    ----------
    models_result : Dataset
        A :func:`~langneurons.analysis.compare_models` result.
    ax : sequence of Axes, optional
        One Axes per type; default: a new figure.
    types : sequence of str
        Types to draw, one panel each.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ds = _checked(models_result)
    types_ = [str(t) for t in types]
    unknown = [t for t in types_ if t not in labels_of(ds, "type")]
    if unknown:
        raise ParameterError(f"types {unknown} are not in the result ({labels_of(ds, 'type')})")
    fig, axes, new = new_axes(ax, len(types_), figsize=(2.6 * len(types_) + 1.6, 2.9))
    names = labels_of(ds, "model")
    x = as_array(ds["depth_bin"]).astype(np.float64)
    band = "layer_share_lower" in ds
    for a, t in zip(axes, types_, strict=True):
        for i, m in enumerate(names):
            color = RUN_COLORS[i % len(RUN_COLORS)]
            sel = ds.sel(model=m, type=t)
            if band:
                a.fill_between(
                    x,
                    as_array(sel["layer_share_lower"]),
                    as_array(sel["layer_share_upper"]),
                    color=color,
                    alpha=0.18,
                    lw=0,
                )
            a.plot(x, as_array(sel["layer_share"]), marker=_MARKERS[i % 5], ms=4, color=color)
            if "stage_start" in ds:
                for start in as_array(ds["stage_start"].sel(model=m)):
                    a.axvline(float(start), color=color, lw=0.8, ls=":")
        a.set_xlim(0, 1)
        a.set_xlabel("relative depth layer/(L-1)")
        set_title(a, t)
        a.title.set_color(TYPE_COLORS.get(t, "#000000"))
        style_axes(a)
    axes[0].set_ylabel("share of the bin's neurons")
    handles = [
        Line2D([], [], color=h.get_color(), marker=h.get_marker(), label=_shape_label(ds, m))
        for h, m in zip(_model_handles(names), names, strict=True)
    ]
    if band:
        handles.append(
            Line2D([], [], color="#999999", lw=6, alpha=0.3, label=f"{ds.attrs['ci']:g} band")
        )
    if "stage_start" in ds:
        handles.append(Line2D([], [], color="#555555", lw=0.8, ls=":", label="stage starts"))
    legend_outside(fig, axes[-1], handles, new, title="model (layers x neurons)")
    return fig


@styled
def model_shares(models_result: xr.Dataset, ax: AxesArg = None) -> Figure:
    """Type shares of every model side by side: of all neurons, and of the selected set.

    Draws ``type_share[model, type]`` (left: the fraction of all the model's neurons) and
    ``type_share_selected`` (right: the fraction of its selected set; general counts the
    selected general neurons), with item-bootstrap intervals when present.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ds = _checked(models_result)
    fig, axes, new = new_axes(ax, 2, figsize=(8.4, 2.9))
    names = labels_of(ds, "model")
    types_ = labels_of(ds, "type")
    width = 0.8 / max(len(names), 1)
    for a, var, label in (
        (axes[0], "type_share", "share of all neurons"),
        (axes[1], "type_share_selected", "share of the selected set"),
    ):
        for i, m in enumerate(names):
            x = np.arange(len(types_)) + (i - (len(names) - 1) / 2) * width
            est = as_array(ds[var].sel(model=m))
            a.bar(x, est, width=width * 0.92, color=RUN_COLORS[i % len(RUN_COLORS)], label=m)
            if f"{var}_lower" in ds:
                a.vlines(
                    x,
                    as_array(ds[f"{var}_lower"].sel(model=m)),
                    as_array(ds[f"{var}_upper"].sel(model=m)),
                    color="#000000",
                    lw=1.0,
                )
        a.set_xticks(range(len(types_)), labels=types_)
        a.set_ylabel(label)
        style_axes(a)
    set_title(axes[0], "Neuron types, of all neurons")
    set_title(axes[1], "Of the selected set")
    handles = [
        Line2D([], [], color=RUN_COLORS[i % len(RUN_COLORS)], lw=6, label=_shape_label(ds, m))
        for i, m in enumerate(names)
    ]
    legend_outside(fig, axes[-1], handles, new, title="model (layers x neurons)")
    return fig


@styled
def model_jaccard(models_result: xr.Dataset, ax: AxesArg = None) -> Figure:
    """The Jaccard matrices of the languages' masks, one per model, on one colour scale.

    Cell (k, l): ``|M_k & M_l| / |M_k | M_l|`` of the model's masks over the common languages;
    the title of each pair after the first states the Mantel agreement with the first model.

    Returns
    -------
    matplotlib.figure.Figure
    """
    ds = _checked(models_result)
    names = labels_of(ds, "model")
    fig, axes, _ = new_axes(ax, len(names), figsize=(3.3 * len(names) + 0.6, 3.2))
    langs = labels_of(ds, "language")
    values = as_array(ds["jaccard"]).astype(np.float64)
    off = values[:, ~np.eye(len(langs), dtype=bool)]
    top = float(np.nanmax(off)) if off.size and np.isfinite(off).any() else 1.0
    norm = Normalize(0.0, max(top, 1e-9))
    pairs = labels_of(ds, "pair")
    for i, (a, m) in enumerate(zip(axes, names, strict=True)):
        mat = values[i].copy()
        np.fill_diagonal(mat, np.nan)  # 1 by definition; left out of the colour scale
        text = np.vectorize(lambda v: "" if not np.isfinite(v) else f"{v:.2f}")(mat)
        heatmap(
            a,
            mat,
            langs,
            langs,
            cmap="viridis",
            norm=norm,
            text=text,
            colorbar="Jaccard of masks" if i == len(names) - 1 else None,
            row_label="language" if i == 0 else "",
            col_label="language",
        )
        title = _shape_label(ds, m)
        if i > 0:
            key = f"{names[0]} ~ {m}"
            if key in pairs:
                j = pairs.index(key)
                r, p = float(ds["mantel_r"].values[j]), float(ds["mantel_pvalue"].values[j])
                title += (
                    f"\nMantel r={r:.2f}, p={p:.3g} vs {names[0]}"
                    if np.isfinite(r)
                    else f"\nMantel vs {names[0]}: undefined (a constant matrix)"
                )
        set_title(a, title)
    return fig


@styled
def models_overview(models_result: xr.Dataset) -> Figure:
    """The three figures of a :func:`compare_models` result stacked in one figure."""
    ds = _checked(models_result)
    n_models = ds.sizes["model"]
    fig = Figure(figsize=(max(12.0, 3.3 * n_models + 0.6), 9.6), layout="constrained")
    top, middle, bottom = np.asarray(
        fig.subfigures(3, 1, height_ratios=[1.0, 1.0, 1.15]), dtype=object
    ).ravel()
    model_profiles(ds, list(np.asarray(top.subplots(1, 4)).ravel()))
    model_shares(ds, list(np.asarray(middle.subplots(1, 2)).ravel()))
    model_jaccard(ds, list(np.asarray(bottom.subplots(1, n_models)).ravel()))
    languages = ", ".join(ds.attrs.get("languages", []))
    fig.suptitle(
        f"Models side by side on their common languages ({languages}); types from each "
        "model's own identification",
        x=0.01,
        ha="left",
        fontsize=10,
    )
    return fig


__all__ = ["PROFILE_TYPES", "model_jaccard", "model_profiles", "model_shares", "models_overview"]
