"""Figures that compare: change of types between two runs, overlaps, type transitions.

Each draws a computed comparison (:func:`~langneurons.analysis.type_change`,
:func:`~langneurons.analysis.language_overlap`, :func:`~langneurons.analysis.overlap`,
:func:`~langneurons.analysis.transition_table`, or a run-by-run matrix of
:func:`langneurons.reports.derived.run_overlap`); none computes an overlap or a fraction.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from langneurons.errors import InputFormatError, ParameterError
from langneurons.names import LANGUAGE, LAYER
from langneurons.reports._fig_base import (
    TYPE_COLORS,
    TYPE_LABELS,
    TYPE_MARKERS,
    TYPE_NOTE,
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

# --------------------------------------------------------------------------- two-run changes


def _change_panel(
    a: Axes, ds: xr.Dataset, types_: Sequence[str], layers: NDArray[np.float64]
) -> None:
    """Per-layer change of ``types_`` with interval bars, dodged around each layer."""
    width = 0.6 / max(len(types_), 1)
    for i, t in enumerate(types_):
        x = layers + (i - (len(types_) - 1) / 2) * width
        sel = ds.sel(type=t)
        a.vlines(
            x,
            as_array(sel["change_low"]),
            as_array(sel["change_high"]),
            color=TYPE_COLORS[t],
            lw=1.6,
        )
        a.plot(
            x,
            as_array(sel["change"]),
            ls="none",
            marker=TYPE_MARKERS[t],
            ms=4,
            color=TYPE_COLORS[t],
            label=t,
        )
    a.axhline(0, color="#000000", lw=0.8)
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    style_axes(a)


def _total_panel(b: Axes, ds: xr.Dataset, types_: Sequence[str]) -> None:
    """Change over all layers of ``types_`` with its interval."""
    for i, t in enumerate(types_):
        sel = ds.sel(type=t)
        b.vlines(
            i,
            float(sel["total_change_low"].values),
            float(sel["total_change_high"].values),
            color=TYPE_COLORS[t],
            lw=2.0,
        )
        b.plot(
            i, float(sel["total_change"].values), marker=TYPE_MARKERS[t], ms=6, color=TYPE_COLORS[t]
        )
    b.axhline(0, color="#000000", lw=0.8)
    b.set_xticks(range(len(types_)), labels=list(types_), rotation=90 if len(types_) > 1 else 0)
    b.set_xlim(-0.6, len(types_) - 0.4)
    style_axes(b)


@styled
def type_change(
    change_result: xr.Dataset,
    ax: AxesArg = None,
    *,
    types: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> Figure:
    """Per-layer change of each neuron type between two runs, with bootstrap intervals.

    Draws ``change[layer, type]`` of :func:`langneurons.analysis.type_change` (second run minus
    first) with its percentile interval ``change_low .. change_high`` as a vertical bar at each
    layer, and, in a narrower panel, the change over all layers (``total_change`` with its
    interval). Specific, related and unassigned neurons are counted among the selected neurons;
    general neurons over all neurons, so on a new figure they get their own row of panels (their
    changes are often much larger). Percentile intervals need not contain the point estimate;
    they are drawn as they are.

    Parameters
    ----------
    change_result : Dataset
        A :func:`~langneurons.analysis.type_change` result.
    ax : Axes or sequence of 2 Axes, optional
        One Axes (per-layer panel only) or two (per layer, total), all types together; default:
        a new figure (general neurons in a row of their own).
    types : sequence of str, optional
        Types to draw (default: all of the result's).
    labels : sequence of 2 str, optional
        Names of the two runs (first, second), e.g. the run names; default "base", "aligned".

    Returns
    -------
    matplotlib.figure.Figure
    """
    ds = require(
        change_result,
        "change_result",
        ("change", "change_low", "change_high"),
        "a type_change result",
    )
    types_ = labels_of(ds, "type") if types is None else [str(t) for t in types]
    unknown = [t for t in types_ if t not in labels_of(ds, "type")]
    if unknown:
        raise ParameterError(f"types {unknown} are not in the result ({labels_of(ds, 'type')})")
    if labels is not None and (isinstance(labels, str) or len(labels) != 2):
        raise ParameterError(f"labels must be 2 names (first run, second run), got {labels!r}")
    first, second = (str(x) for x in labels) if labels is not None else ("base", "aligned")
    has_total = all(v in ds for v in ("total_change", "total_change_low", "total_change_high"))
    selected = [t for t in types_ if t != "general"]
    split = ax is None and "general" in types_ and bool(selected)
    layers = as_array(ds[LAYER]).astype(np.float64)
    if split:
        fig = Figure(figsize=(9.2, 5.2), layout="constrained")
        grid = np.asarray(
            fig.subplots(
                2,
                2 if has_total else 1,
                squeeze=False,
                gridspec_kw={
                    "height_ratios": [2.0, 1.0],
                    "width_ratios": [3, 1] if has_total else None,
                },
            )
        )
        grid[1, 0].sharex(grid[0, 0])
        grid[0, 0].tick_params(labelbottom=False)
        rows = [(grid[0, 0], grid[0, 1] if has_total else None, selected)]
        rows.append((grid[1, 0], grid[1, 1] if has_total else None, ["general"]))
        new = True
    else:
        counts = (2, 1) if has_total else (1,)
        fig, axes, new = new_axes(
            ax, counts, figsize=(8.0, 3.4), width_ratios=[3, 1] if has_total else None
        )
        rows = [(axes[0], axes[1] if len(axes) > 1 else None, types_)]
    level = ds.attrs.get("ci")
    boots = ds.attrs.get("n_boot")
    interval = (
        f"{float(level) * 100:g}% bootstrap interval, {boots} replicates"
        if level is not None
        else "interval"
    )
    for i, (a, b, row_types) in enumerate(rows):
        _change_panel(a, ds, row_types, layers)
        if split:
            general = row_types == ["general"]
            a.set_ylabel("general neurons\n(of all)" if general else "selected neurons")
        else:
            a.set_ylabel(f"change in neurons\n({second} − {first})")
        if i == len(rows) - 1:
            a.set_xlabel(f"layer (bars: {interval})" if split else "layer")
        if i == 0:
            set_title(
                a,
                f"Change {second} − {first}, per layer"
                if split
                else f"Change per layer ({interval})",
            )
        if b is not None:
            _total_panel(b, ds, row_types)
            if i == 0:
                set_title(b, "All layers")
    handles = [
        Line2D(
            [],
            [],
            color=TYPE_COLORS[t],
            marker=TYPE_MARKERS[t],
            ls="none",
            ms=4,
            label=TYPE_LABELS.get(t, t),
        )
        for t in types_
    ]
    last = rows[0][1] if rows[0][1] is not None else rows[0][0]
    legend_outside(fig, last, handles, new, title="neuron type")
    return fig


# --------------------------------------------------------------------------- overlap


def _refuse_raw(obj: object) -> None:
    """Name the function that makes an overlap when handed what it is computed from."""
    if isinstance(obj, xr.Dataset) and "mask" in obj and "jaccard" not in obj:
        raise InputFormatError(
            "matrix_or_result is an identification result; pass the Jaccard index of its "
            "languages' masks: overlap_matrix(langneurons.analysis.language_overlap(result))"
        )
    if isinstance(obj, (Sequence, Mapping)) and not isinstance(obj, (str, xr.Dataset)):
        raise ParameterError(
            "matrix_or_result is a collection of results; pass their run-by-run Jaccard matrix: "
            "overlap_matrix(langneurons.reports.derived.run_overlap(results, labels))"
        )


def _matrix_title(matrix: xr.DataArray) -> str:
    """The default title of a Jaccard matrix, by what it compares."""
    if matrix.dims == (LANGUAGE, "other"):
        return "Jaccard index between languages' masks"
    if matrix.dims == ("run", "other") and "neuron_set" in matrix.attrs:
        language = matrix.attrs.get("language")
        return f"Jaccard index between runs: {matrix.attrs['neuron_set']}" + (
            f" ({language})" if language else ""
        )
    return ""


@styled
def overlap_matrix(
    matrix_or_result: xr.DataArray | xr.Dataset,
    labels: Sequence[str] | None = None,
    ax: AxesArg = None,
    *,
    neuron_set: str | None = None,
    language: str | None = None,
    title: str | None = None,
) -> Figure:
    r"""Overlap heatmap (Jaccard index) of a computed overlap: between languages, sets or runs.

    - A :func:`langneurons.analysis.language_overlap` result (``jaccard[language, other]``):
      :math:`J_{ij} = |M_i \cap M_j| / |M_i \cup M_j|` between one identification's
      languages' masks.
    - An :func:`~langneurons.analysis.overlap` result: its ``jaccard[language, set]`` between
      two runs' per-language sets.
    - A :func:`langneurons.reports.derived.run_overlap` result (``jaccard[run, other]``): one
      neuron set between every pair of runs.
    - Any other 2-D DataArray: drawn as it is.

    Cells where both sets are empty are NaN (grey). The figure computes no overlap itself: an
    identification result, or a sequence of them, is refused with the function that makes
    what it needs.

    Parameters
    ----------
    matrix_or_result : DataArray or Dataset
        What to draw (see above).
    labels, neuron_set, language
        Deprecated and ignored: they belong to ``run_overlap``, which makes the matrix.
    ax : Axes, optional
        The Axes to draw on; default: a new figure.
    title : str, optional
        Panel title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    obj = matrix_or_result
    _refuse_raw(obj)
    given = [
        n
        for n, v in (("labels", labels), ("neuron_set", neuron_set), ("language", language))
        if v is not None
    ]
    if given:
        warnings.warn(
            f"overlap_matrix ignores {', '.join(given)}: they now belong to "
            "langneurons.reports.derived.run_overlap, which makes the run-by-run matrix",
            DeprecationWarning,
            stacklevel=3,
        )
    if isinstance(obj, xr.Dataset) and "jaccard" in obj and "set" in obj["jaccard"].dims:
        matrix = obj["jaccard"].transpose(LANGUAGE, "set")
        default_title = "Jaccard index between the two runs' sets"
    elif isinstance(obj, xr.DataArray) and obj.ndim == 2:
        matrix = obj
        default_title = _matrix_title(obj)
    elif isinstance(obj, xr.DataArray):
        raise InputFormatError(f"a matrix must be 2-D, got dims {tuple(obj.dims)}")
    else:
        raise InputFormatError(
            "matrix_or_result must be a 2-D Jaccard matrix (DataArray) or an overlap result, got "
            + type(obj).__name__
        )
    values = as_array(matrix).astype(np.float64)
    rows, cols = labels_of(matrix, str(matrix.dims[0])), labels_of(matrix, str(matrix.dims[1]))
    side = max(len(rows), len(cols))
    longest = max((len(x) for x in rows + cols), default=0)  # room for long labels (run names)
    width = max(4.2, 0.5 * side + 2.4 + 0.06 * longest, 0.075 * len(title or default_title) + 1.6)
    height = max(3.0, 0.42 * side + 1.6 + 0.05 * longest)
    fig, axes, _ = new_axes(ax, 1, figsize=(width, height))
    a = axes[0]
    text = np.vectorize(significant, otypes=[object])(values)
    same = matrix.dims[1] == "other"
    heatmap(
        a,
        values,
        rows,
        cols,
        cmap="viridis",
        norm=Normalize(0.0, 1.0),
        text=text,
        colorbar="Jaccard index",
        row_label=str(matrix.dims[0]),
        col_label=str(matrix.dims[0]) if same else str(matrix.dims[1]),
    )
    set_title(a, title if title is not None else default_title)
    return fig


@styled
def transitions(
    transition_result: xr.Dataset, ax: AxesArg = None, *, labels: Sequence[str] | None = None
) -> Figure:
    """How neurons change type between two runs (:func:`~langneurons.analysis.transition_table`).

    Cells are coloured by the row fraction (share of the neurons of each type in the first run
    that have each type in the second) and labelled with the counts of neurons. Every neuron
    has one type in each run: "none" (not selected by the rule), "unassigned" (selected, but
    above tau in no language), or specific, related, general.

    Parameters
    ----------
    transition_result : Dataset
        A transition table result (``count``, ``fraction`` on ``[from_type, to_type]``).
    ax : Axes, optional
        The Axes to draw on; default: a new figure.
    labels : sequence of 2 str, optional
        Names of the two runs (rows, columns), e.g. the run names; default "run a", "run b".

    Returns
    -------
    matplotlib.figure.Figure
    """
    ds = require(
        transition_result,
        "transition_result",
        ("count", "fraction"),
        "a transition_table result (langneurons.analysis.transition_table)",
    )
    if labels is not None and (isinstance(labels, str) or len(labels) != 2):
        raise ParameterError(f"labels must be 2 names (rows' run, columns' run), got {labels!r}")
    first, second = (str(x) for x in labels) if labels is not None else ("run a", "run b")
    count = ds["count"].transpose("from_type", "to_type")
    counts = as_array(count).astype(np.float64)
    frac = as_array(ds["fraction"].transpose("from_type", "to_type")).astype(np.float64)
    fig, axes, _ = new_axes(ax, 1, figsize=(5.6, 4.4))
    heatmap(
        axes[0],
        frac,
        labels_of(count, "from_type"),
        labels_of(count, "to_type"),
        cmap="viridis",
        norm=Normalize(0.0, 1.0),
        text=counts.astype(np.int64),
        colorbar="fraction of the row's neurons",
        row_label=f"type in {first}",
        col_label=f"type in {second}\n\n" + TYPE_NOTE.replace("; ", "\n"),
    )
    set_title(axes[0], "Type transitions (cells: neurons)")
    return fig


__all__ = ["overlap_matrix", "transitions", "type_change"]
