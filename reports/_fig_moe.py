"""Figures of mixture-of-experts runs: routing shares per language, language neurons per expert.

Both draw results of :mod:`langneurons.analysis` as they are: ``routing_shares`` a
``language_experts`` result (``langneurons stats experts``), ``expert_neurons`` a MoE
identification (``langneurons identify`` on a MoE run).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from langneurons.errors import InputFormatError, ParameterError
from langneurons.reports._fig_base import (
    AxesArg,
    as_array,
    heatmap,
    labels_of,
    new_axes,
    require,
    set_title,
    styled,
)


def _languages(ds: xr.Dataset, language: object) -> list[str]:
    """The languages to draw (all, or the one asked for)."""
    labels = labels_of(ds, "language")
    if language is None:
        return labels
    if not isinstance(language, str) or language not in labels:
        raise ParameterError(f"language must be one of {labels}, got {language!r}")
    return [language]


@styled
def routing_shares(
    experts: xr.Dataset, ax: AxesArg = None, *, language: str | None = None
) -> Figure:
    """Expert x layer heatmaps of the routing share per language.

    One panel per language (or the one ``language``): the cell of expert e (column) and layer l
    (row) reads ``share = n_routed / n_tokens``, the fraction of the language's tokens the
    router sends to the expert (summed over a layer's routed experts it is top_k). Experts the
    result types as language-specific for that language are outlined. Shared experts (share 1)
    are left out.

    Parameters
    ----------
    experts : Dataset
        A ``language_experts`` result (``langneurons.analysis.language_experts``, or the one
        ``langneurons stats experts`` saves).
    ax : Axes or sequence of Axes, optional
        One Axes per language drawn; default: a new figure.
    language : str, optional
        Draw this language only.
    """
    experts = require(
        experts,
        "experts",
        ("share", "expert_type", "preferred"),
        "a language_experts result (langneurons.analysis.language_experts)",
    )
    langs = _languages(experts, language)
    shared = np.asarray(experts["expert_shared"].values, dtype=bool)
    routed = experts.isel(expert=np.flatnonzero(~shared))
    share = routed["share"].transpose("language", "layer", "expert")
    n_layers, n_exp = share.shape[1:]
    width = min(4.0 + 0.35 * n_exp, 14.0)
    fig, axes, _ = new_axes(
        ax, len(langs), figsize=(width, 0.9 + (0.3 * n_layers + 1.2) * len(langs)), ncols=1
    )
    top = float(np.nanmax(as_array(share))) if share.size else 1.0
    norm = Normalize(0.0, top if top > 0 else 1.0)
    rows = labels_of(share, "layer")
    cols = labels_of(share, "expert")
    for a, lang in zip(axes, langs, strict=True):
        values = as_array(share.sel(language=lang)).astype(np.float64)
        text = np.vectorize(lambda v: f"{v:.2f}")(values)
        heatmap(
            a,
            values,
            rows,
            cols,
            cmap="viridis",
            norm=norm,
            text=text,
            colorbar="routing share",
            row_label="layer",
            col_label="expert",
        )
        mine = as_array(
            (routed["expert_type"] == "specific")
            & routed["preferred"].sel(language=lang).transpose("layer", "expert")
        )
        for i, j in np.argwhere(mine):
            a.add_patch(_outline(j, i))
        set_title(a, f"{lang}: share of its tokens routed to each expert")
    return fig


def _outline(x: float, y: float) -> Rectangle:

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="#D55E00", linewidth=2)


@styled
def expert_neurons(identification: xr.Dataset, ax: AxesArg = None) -> Figure:
    """Language neurons per expert: an expert x layer heatmap per language.

    The cell of expert e and layer l reads the size of language k's mask there (selected
    neurons with P above tau, the neurons a deactivation switches off), from a
    mixture-of-experts identification. Undefined cells (an expert that received too few tokens
    of some language, ``defined`` False) are grey.

    Parameters
    ----------
    identification : Dataset
        An ``identify`` result of a MoE run (``n_language_neurons[language, layer, expert]``).
    ax : Axes or sequence of Axes, optional
        One Axes per language; default: a new figure.
    """
    if isinstance(identification, xr.Dataset) and "expert" not in identification.dims:
        raise InputFormatError(
            "identification is dense (no expert dimension); expert_neurons draws the "
            "identification of a mixture-of-experts run (use figures.layer_types for dense runs)"
        )
    identification = require(
        identification,
        "identification",
        ("n_language_neurons", "defined"),
        "a mixture-of-experts identification (langneurons.analysis.identify on a MoE run)",
    )
    counts = identification["n_language_neurons"].transpose("language", "layer", "expert")
    defined = as_array(identification["defined"].transpose("language", "layer", "expert"))
    cell_ok = defined.all(axis=0)
    langs = labels_of(counts, "language")
    n_layers, n_exp = counts.shape[1:]
    width = min(4.0 + 0.35 * n_exp, 14.0)
    fig, axes, _ = new_axes(
        ax, len(langs), figsize=(width, 0.9 + (0.3 * n_layers + 1.2) * len(langs)), ncols=1
    )
    top = int(as_array(counts).max()) if counts.size else 1
    shared = (
        np.asarray(identification["expert_shared"].values, dtype=bool)
        if "expert_shared" in identification.coords
        else np.zeros(n_exp, dtype=bool)
    )
    cols = [
        f"{c} (shared)" if s else c
        for c, s in zip(labels_of(counts, "expert"), shared, strict=True)
    ]
    norm = Normalize(0.0, max(top, 1))
    for a, lang in zip(axes, langs, strict=True):
        values = as_array(counts.sel(language=lang)).astype(np.float64)
        values[~cell_ok] = np.nan
        text = np.where(np.isnan(values), "", np.nan_to_num(values).astype(int).astype(str))
        heatmap(
            a,
            values,
            labels_of(counts, "layer"),
            cols,
            cmap="magma_r",
            norm=norm,
            text=text,
            colorbar="language neurons",
            row_label="layer",
            col_label="expert",
        )
        rank = identification.attrs.get("rank", "model")
        set_title(a, f"{lang}: language neurons per expert (ranked within the {rank})")
    return fig
