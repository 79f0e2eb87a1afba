"""Figures of language-neuron results, drawn with matplotlib.

Every function takes results computed by :mod:`langneurons.analysis` (xarray Datasets, fresh
or opened from a store with :meth:`~langneurons.store.ActivationStore.open_result`) and an
optional ``ax`` to draw on, and returns the :class:`matplotlib.figure.Figure`. Nothing here
computes a new statistic: counts, intervals and tests come from the analysis functions; the
figures only arrange them.

Figures are built with :class:`matplotlib.figure.Figure`, never ``pyplot``: no global figure
registry, no backend is selected, and nothing changes ``matplotlib.rcParams`` (the house
style is applied inside :func:`matplotlib.rc_context`), so they are safe on a headless Agg
machine, in notebooks and inside other programs. Neuron types have one colour-blind-safe
colour each throughout (Okabe & Ito 2008): :data:`TYPE_COLORS`.

Conventions a reviewer can rely on: general neurons (counted over all neurons) get their own
panel, never the axis of the specific and related ones (counted over the selected neurons);
legends sit outside the axes; heatmap cells read three significant digits; SVG text stays text
(``svg.fonttype`` ``"none"``, set only while a figure is drawn and saved).

References
----------
Okabe & Ito (2008), "Color Universal Design (CUD): how to make figures and presentations that
are friendly to colorblind people", https://jfly.uni-koeln.de/color/.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, ParamSpec, TypeVar, cast

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.rcsetup import cycler
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory
from numpy.typing import NDArray

from langneurons._format import significant
from langneurons.analysis.compare import language_overlap
from langneurons.analysis.deactivation import deactivation_effects
from langneurons.analysis.distributions import type_table
from langneurons.errors import InputFormatError, ParameterError

#: The Okabe-Ito palette (colour-blind safe), by name.
OKABE_ITO: Final[Mapping[str, str]] = MappingProxyType(
    {
        "black": "#000000",
        "orange": "#E69F00",
        "sky blue": "#56B4E9",
        "bluish green": "#009E73",
        "yellow": "#F0E442",
        "blue": "#0072B2",
        "vermillion": "#D55E00",
        "reddish purple": "#CC79A7",
    }
)
#: One colour per neuron type, used by every figure.
TYPE_COLORS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "specific": OKABE_ITO["vermillion"],
        "related": OKABE_ITO["blue"],
        "general": OKABE_ITO["bluish green"],
        "unassigned": "#999999",
        "none": "#DDDDDD",
    }
)
#: One marker per neuron type (the figures stay readable in greyscale).
TYPE_MARKERS: Final[Mapping[str, str]] = MappingProxyType(
    {"specific": "o", "related": "s", "general": "^", "unassigned": "D", "none": "."}
)
#: Colours of runs (base, aligned, ...) where runs are compared side by side.
RUN_COLORS: Final[tuple[str, ...]] = (
    OKABE_ITO["sky blue"],
    OKABE_ITO["orange"],
    OKABE_ITO["reddish purple"],
    OKABE_ITO["black"],
    OKABE_ITO["yellow"],
)
#: Types drawn by :func:`layer_types` unless told otherwise.
LAYER_TYPES: Final[tuple[str, ...]] = ("specific", "related", "general")
#: Output formats :func:`save` writes.
FORMATS: Final[tuple[str, ...]] = ("svg", "png", "pdf")

# The house style, applied with rc_context while a figure is built (rcParams stay untouched).
_STYLE: Final[dict[str, Any]] = {
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "legend.fontsize": 8.0,
    "legend.frameon": False,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "axes.prop_cycle": cycler(color=list(RUN_COLORS)),
    "figure.dpi": 100.0,
    "svg.hashsalt": "langneurons",
    "svg.fonttype": "none",
}
_GRID: Final[dict[str, Any]] = {"color": "#000000", "alpha": 0.12, "linewidth": 0.6}
_NAN_COLOR: Final = "#EEEEEE"
_MAX_ANNOTATED: Final = 400  # heatmap cells up to which values are written in the cells
_IDENTIFICATION_VARS: Final = ("neuron_type", "general")
#: What "none" and "unassigned" mean, for captions and legends.
TYPE_NOTE: Final = (
    "none: not selected by the rule; unassigned: selected, but above tau in no language"
)
_GENERAL_LABEL: Final = "general neurons\n(of all neurons)"
#: Legend entries: what each type counts.
_TYPE_LABELS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "specific": "specific (selected, 1 language)",
        "related": "related (selected, 2..K-1 languages)",
        "general": "general (any neuron, all K languages)",
        "unassigned": "unassigned (selected, no language)",
        "none": "none (not selected)",
    }
)

P = ParamSpec("P")
R = TypeVar("R")
AxesArg = Axes | Sequence[Axes] | None


def _styled(func: Callable[P, R]) -> Callable[P, R]:
    """Run a figure function inside the house style's ``rc_context``."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with mpl.rc_context(cast(Any, _STYLE)):
            return func(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- input helpers


def _figure_of(ax: Axes) -> Figure:
    """The top-level Figure an Axes belongs to."""
    fig = ax.get_figure(root=True)
    if not isinstance(fig, Figure):
        raise ParameterError("ax must be a matplotlib Axes placed on a Figure")
    return fig


def _axes(
    ax: AxesArg,
    n: int | Sequence[int],
    *,
    figsize: tuple[float, float],
    ncols: int | None = None,
    sharey: bool = False,
    width_ratios: Sequence[float] | None = None,
) -> tuple[Figure, list[Axes], bool]:
    """Axes to draw on: new ones (``n`` panels) or the caller's; and whether they are new.

    ``n`` may list the panel counts a figure accepts from the caller (e.g. ``(2, 1)``: the full
    figure, or its main panel only); a new figure always has the first.
    """
    counts = [n] if isinstance(n, int) else list(n)
    if ax is None:
        total = counts[0]
        cols = total if ncols is None else ncols
        rows = math.ceil(total / cols)
        fig = Figure(figsize=figsize, layout="constrained")
        grid = fig.subplots(
            rows, cols, squeeze=False, sharey=sharey, gridspec_kw={"width_ratios": width_ratios}
        )
        axes = [a for a in np.asarray(grid).ravel()]
        for extra in axes[total:]:
            extra.remove()
        return fig, axes[:total], True
    given = [ax] if isinstance(ax, Axes) else list(ax)
    if len(given) not in counts or not all(isinstance(a, Axes) for a in given):
        want = " or ".join(str(c) for c in counts)
        raise ParameterError(f"ax must be {want} matplotlib Axes for this figure, got {ax!r}")
    return _figure_of(given[0]), given, False


def _require(ds: object, name: str, variables: Sequence[str], what: str) -> xr.Dataset:
    """``ds`` after checking it is a Dataset holding ``variables`` (InputFormatError if not)."""
    if not isinstance(ds, xr.Dataset):
        raise InputFormatError(
            f"{name} must be {what} (an xarray.Dataset), got {type(ds).__name__}"
        )
    missing = [v for v in variables if v not in ds.variables]
    if missing:
        raise InputFormatError(f"{name} must be {what}; it lacks variables {missing}")
    return ds


def _named(
    results: object, labels: Sequence[str] | None, name: str, variables: Sequence[str], what: str
) -> list[tuple[str, xr.Dataset]]:
    """Results as (label, Dataset) pairs from a Dataset, a sequence or a mapping."""
    if isinstance(results, xr.Dataset):
        items: list[tuple[str | None, object]] = [(None, results)]
    elif isinstance(results, Mapping):
        items = [(str(k), v) for k, v in results.items()]
    elif isinstance(results, Sequence) and not isinstance(results, str):
        items = [(None, v) for v in results]
    else:
        raise InputFormatError(
            f"{name} must be {what}, a sequence or a mapping of them, got {type(results).__name__}"
        )
    if not items:
        raise ParameterError(f"{name} is empty; give at least one result")
    if labels is not None:
        if isinstance(labels, str) or len(labels) != len(items):
            raise ParameterError(
                f"labels must be {len(items)} names (one per result), got {labels!r}"
            )
        items = [(str(lab), v) for lab, (_, v) in zip(labels, items, strict=True)]
    out = []
    for i, (label, ds) in enumerate(items):
        where = name if len(items) == 1 else f"{name}[{i}]"
        checked = _require(ds, where, variables, what)
        default = "" if len(items) == 1 else f"result {i + 1}"
        out.append((default if label is None else label, checked))
    return out


def _values(da: xr.DataArray) -> NDArray[Any]:
    """The (computed) values of a DataArray."""
    return np.asarray(da.values)


def _labels(ds: xr.Dataset | xr.DataArray, dim: str) -> list[str]:
    """A dimension's coordinate values as strings (positions when it has none)."""
    if dim in ds.coords:
        return [str(x) for x in np.asarray(ds[dim].values).ravel()]
    return [str(i) for i in range(ds.sizes[dim])]


def _style_axes(ax: Axes, grid: Literal["x", "y", "both"] | None = "y") -> None:
    """Light grid behind the data and no top/right spines (also on caller-made axes)."""
    ax.spines[["top", "right"]].set_visible(False)
    if grid is not None:
        ax.grid(True, axis=grid, **_GRID)


def _title(ax: Axes, text: str) -> None:
    if text:
        ax.set_title(text, loc="left")


def _cmap(name: str) -> Colormap:
    """A named colormap with NaN cells drawn light grey."""
    return mpl.colormaps[name].with_extremes(bad=_NAN_COLOR)


def _heatmap(
    ax: Axes,
    values: NDArray[Any],
    rows: Sequence[str],
    cols: Sequence[str],
    *,
    cmap: str,
    norm: Normalize,
    text: NDArray[Any] | None,
    colorbar: str | None,
    row_label: str,
    col_label: str,
) -> None:
    """A labelled heatmap; ``text`` (same shape) is written in the cells when not too many."""
    image = ax.imshow(
        np.ma.masked_invalid(values.astype(np.float64)),
        cmap=_cmap(cmap),
        norm=norm,
        aspect="auto",
        interpolation="nearest",
    )
    # labels side by side need room: long or many labels are slanted, so they never overlap
    slanted = len(cols) > 6 or max((len(str(c)) for c in cols), default=0) > 8
    ax.set_xticks(
        range(len(cols)),
        labels=list(cols),
        rotation=35 if slanted else 0,
        ha="right" if slanted else "center",
        rotation_mode="anchor",
    )
    ax.set_yticks(range(len(rows)), labels=list(rows))
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.spines[:].set_visible(False)
    ax.tick_params(length=0)
    if text is not None and values.size <= _MAX_ANNOTATED:
        for (i, j), label in np.ndenumerate(text):
            v = values[i, j]
            if np.isfinite(v):
                r, g, b, _ = image.cmap(image.norm(v))
                color = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
            else:
                color = "#555555"
            ax.text(j, i, str(label), ha="center", va="center", fontsize=7, color=color)
    if colorbar is not None:
        _figure_of(ax).colorbar(image, ax=ax, shrink=0.85, label=colorbar)


def _fmt(value: float) -> str:
    """A float for a cell annotation: three significant digits ("–" for NaN)."""
    return significant(value)


def _legend_outside(
    fig: Figure,
    ax: Axes,
    handles: Sequence[Any],
    new: bool,
    *,
    where: Literal["upper", "lower"] = "upper",
    x: float = 1.02,
    **kwargs: Any,
) -> None:
    """A legend that never covers data: right of the figure's axes (new) or right of ``ax``."""
    if new:
        fig.legend(handles=list(handles), loc=cast(Any, f"outside right {where}"), **kwargs)
    else:
        ax.legend(
            handles=list(handles),
            loc=cast(Any, f"{where} left"),
            bbox_to_anchor=(x, 1.0 if where == "upper" else 0.0),
            borderaxespad=0,
            **kwargs,
        )


# --------------------------------------------------------------------------- layer types


def _stage_bands(ax: Axes, stages: xr.Dataset, *, labels: bool = True) -> list[str]:
    """Shade alternate stages; with ``labels``, number them and draw boundary intervals on top."""
    st = _require(stages, "stages", ("start", "end"), "a stages result (bootstrap_stages)")
    names = _labels(st, "stage") if "stage" in st.dims else []
    starts = _values(st["start"]).astype(np.float64)
    ends = _values(st["end"]).astype(np.float64)
    low = _values(st["start_low"]).astype(np.float64) if "start_low" in st else None
    high = _values(st["start_high"]).astype(np.float64) if "start_high" in st else None
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
    return _figure_of(given[0]), pairs, False


@_styled
def layer_types(
    results: xr.Dataset | Sequence[xr.Dataset] | Mapping[str, xr.Dataset],
    labels: Sequence[str] | None = None,
    stages: xr.Dataset | Sequence[xr.Dataset | None] | None = None,
    ax: AxesArg = None,
    *,
    types: Sequence[str] = LAYER_TYPES,
) -> Figure:
    """Layer-wise counts of language-specific, -related and general neurons, one column per run.

    The counts are :func:`langneurons.analysis.type_table` of each result (Zhang et al. 2025,
    the layer-wise distribution of neuron types). Specific, related and unassigned neurons are
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
    named = _named(results, labels, "results", _IDENTIFICATION_VARS, "an identification result")
    panel_stages = _per_panel(stages, len(named), "stages")
    selected_types = [t for t in types if t != "general"]
    has_general = "general" in types
    split = has_general and bool(selected_types)
    fig, pairs, new = _run_panels(ax, len(named), split)
    stage_names: list[str] = []
    top_max, general_max, headroom = 0.0, 0.0, 1.1
    for (label, result), st, (a, g) in zip(named, panel_stages, pairs, strict=True):
        table = type_table(result, types=types).compute()
        layers = _values(table["layer"])
        for t in types:
            target = g if (t == "general" and g is not None) else a
            values = _values(table.sel(type=t))
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
        _style_axes(a)
        _title(a, label)
        if g is not None and new:
            _style_axes(g)
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
            first_general.set_ylabel(_GENERAL_LABEL)
        for _, g in pairs:
            if g is not None and not new:
                g.set_ylabel(_GENERAL_LABEL, color=TYPE_COLORS["general"])
                g.spines["right"].set_visible(True)
    handles = [
        Line2D([], [], color=TYPE_COLORS[t], marker=TYPE_MARKERS[t], ms=4, label=_TYPE_LABELS[t])
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
        _legend_outside(fig, pairs[-1][0], handles + stage_handles, False, x=1.25 if twin else 1.02)
    return fig


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
            x, _values(sel["change_low"]), _values(sel["change_high"]), color=TYPE_COLORS[t], lw=1.6
        )
        a.plot(
            x,
            _values(sel["change"]),
            ls="none",
            marker=TYPE_MARKERS[t],
            ms=4,
            color=TYPE_COLORS[t],
            label=t,
        )
    a.axhline(0, color="#000000", lw=0.8)
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    _style_axes(a)


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
    _style_axes(b)


@_styled
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
    ds = _require(
        change_result,
        "change_result",
        ("change", "change_low", "change_high"),
        "a type_change result",
    )
    types_ = _labels(ds, "type") if types is None else [str(t) for t in types]
    unknown = [t for t in types_ if t not in _labels(ds, "type")]
    if unknown:
        raise ParameterError(f"types {unknown} are not in the result ({_labels(ds, 'type')})")
    if labels is not None and (isinstance(labels, str) or len(labels) != 2):
        raise ParameterError(f"labels must be 2 names (first run, second run), got {labels!r}")
    first, second = (str(x) for x in labels) if labels is not None else ("base", "aligned")
    has_total = all(v in ds for v in ("total_change", "total_change_low", "total_change_high"))
    selected = [t for t in types_ if t != "general"]
    split = ax is None and "general" in types_ and bool(selected)
    layers = _values(ds["layer"]).astype(np.float64)
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
        fig, axes, new = _axes(
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
            _title(
                a,
                f"Change {second} − {first}, per layer"
                if split
                else f"Change per layer ({interval})",
            )
        if b is not None:
            _total_panel(b, ds, row_types)
            if i == 0:
                _title(b, "All layers")
    handles = [
        Line2D(
            [],
            [],
            color=TYPE_COLORS[t],
            marker=TYPE_MARKERS[t],
            ls="none",
            ms=4,
            label=_TYPE_LABELS.get(t, t),
        )
        for t in types_
    ]
    last = rows[0][1] if rows[0][1] is not None else rows[0][0]
    _legend_outside(fig, last, handles, new, title="neuron type")
    return fig


def _shared_counts(
    results: object, labels: Sequence[str] | None
) -> tuple[list[str], NDArray[np.float64], xr.Dataset | None]:
    """Shared-by-N counts ``[run, N]`` from identification results or a shared_by_change."""
    if isinstance(results, xr.Dataset) and "n_shared" in results.dims:
        ds = _require(results, "results", ("base", "aligned"), "a shared_by_change result")
        names = list(labels) if labels is not None else ["base", "aligned"]
        if len(names) != 2:
            raise ParameterError(f"labels must be 2 names (base, aligned), got {labels!r}")
        counts = np.stack([_values(ds["base"]), _values(ds["aligned"])]).astype(np.float64)
        return names, counts, ds
    named = _named(results, labels, "results", (), "an identification result")
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


@_styled
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
    fig, axes, new = _axes(ax, (2, 1) if has_change else (1,), figsize=(8.0, 3.2))
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
    _title(a, "All neurons by the number of languages N with P > tau")
    _style_axes(a)
    if len(names) > 1 or names[0]:
        _legend_outside(fig, axes[-1], a.get_legend_handles_labels()[0], new)
    if has_change and len(axes) > 1 and change is not None:
        b = axes[1]
        b.vlines(
            bins,
            _values(change["change_low"]),
            _values(change["change_high"]),
            color=OKABE_ITO["black"],
            lw=1.6,
        )
        b.plot(bins, _values(change["change"]), "o", color=OKABE_ITO["black"], ms=4)
        b.axhline(0, color="#000000", lw=0.8)
        b.set_xticks(bins)
        b.set_xlabel("N")
        b.set_ylabel("change in fraction")
        level = change.attrs.get("ci")
        _title(b, f"{names[1]} − {names[0]}" + (f" ({float(level) * 100:g}% CI)" if level else ""))
        _style_axes(b)
    return fig


# --------------------------------------------------------------------------- per language


@_styled
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
    ds = _require(result, "result", (), "an identification result")
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
    fig, axes, new = _axes(ax, 1, figsize=(max(4.0, 0.55 * len(langs) + 3.5), 3.2))
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
    _title(a, "Selected neurons per language" + (f" ({method})" if method else ""))
    _style_axes(a)
    _legend_outside(fig, a, a.get_legend_handles_labels()[0], new)
    return fig


# --------------------------------------------------------------------------- overlap


def _run_jaccard(
    named: list[tuple[str, xr.Dataset]], neuron_set: str, language: str | None
) -> xr.DataArray:
    """Jaccard index of one neuron set between every pair of runs (analysis.overlap)."""
    from langneurons.analysis.compare import overlap

    n = len(named)
    out = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i, n):
            ov = overlap(named[i][1], named[j][1])
            if language is None:
                if neuron_set not in _labels(ov, "type"):
                    raise ParameterError(
                        f"neuron_set {neuron_set!r} is not a type set ({_labels(ov, 'type')}); "
                        "per-language sets need language="
                    )
                value = float(ov["type_jaccard"].sel(type=neuron_set).values)
            else:
                if language not in _labels(ov, "language"):
                    raise ParameterError(f"language {language!r} is not in both results")
                if neuron_set not in _labels(ov, "set"):
                    raise ParameterError(
                        f"neuron_set {neuron_set!r} is not a per-language set "
                        f"({_labels(ov, 'set')})"
                    )
                value = float(ov["jaccard"].sel(language=language, set=neuron_set).values)
            out[i, j] = out[j, i] = value
    names = [label for label, _ in named]
    return xr.DataArray(
        out, dims=("run", "other"), coords={"run": names, "other": names}, name="jaccard"
    )


@_styled
def overlap_matrix(
    matrix_or_results: xr.DataArray | xr.Dataset | Sequence[xr.Dataset] | Mapping[str, xr.Dataset],
    labels: Sequence[str] | None = None,
    ax: AxesArg = None,
    *,
    neuron_set: str | None = None,
    language: str | None = None,
    title: str | None = None,
) -> Figure:
    r"""Overlap heatmap (Jaccard index): between runs, between languages, or a given matrix.

    - A sequence or mapping of identification results: the Jaccard index of ``neuron_set``
      between every pair of runs, from :func:`langneurons.analysis.overlap` (``neuron_set``
      "selected" (default), "specific", "related", "general", "unassigned"; with
      ``language``, that language's "mask" (default), "specific" or "related" set).
    - One identification result: between its languages,
      :math:`J_{ij} = |M_i \cap M_j| / |M_i \cup M_j|` of the masks ``mask[language]``.
    - An :func:`~langneurons.analysis.overlap` result: its ``jaccard[language, set]``.
    - A 2-D DataArray: drawn as it is (e.g. a precomputed matrix).

    Cells where both sets are empty are NaN (grey).

    Parameters
    ----------
    matrix_or_results : DataArray, Dataset, sequence or mapping of Datasets
        What to draw (see above).
    labels : sequence of str, optional
        Run names for a sequence of results.
    ax : Axes, optional
        The Axes to draw on; default: a new figure.
    neuron_set, language : str, optional
        The set compared between runs.
    title : str, optional
        Panel title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    obj = matrix_or_results
    default_title = ""
    if isinstance(obj, xr.DataArray):
        if obj.ndim != 2:
            raise InputFormatError(f"a matrix must be 2-D, got dims {tuple(obj.dims)}")
        matrix = obj
    elif isinstance(obj, xr.Dataset) and "jaccard" in obj and "set" in obj["jaccard"].dims:
        matrix = obj["jaccard"].transpose("language", "set")
        default_title = "Jaccard index between the two runs' sets"
    elif isinstance(obj, xr.Dataset):
        ds = _require(obj, "matrix_or_results", ("mask",), "an identification result")
        matrix = language_overlap(ds)
        default_title = "Jaccard index between languages' masks"
    else:
        named = _named(
            obj, labels, "matrix_or_results", _IDENTIFICATION_VARS, "an identification result"
        )
        if len(named) < 2:
            raise ParameterError("give at least 2 results to compare runs")
        chosen = neuron_set or ("selected" if language is None else "mask")
        matrix = _run_jaccard(named, chosen, language)
        default_title = f"Jaccard index between runs: {chosen}" + (
            f" ({language})" if language else ""
        )
    values = _values(matrix).astype(np.float64)
    rows, cols = _labels(matrix, str(matrix.dims[0])), _labels(matrix, str(matrix.dims[1]))
    side = max(len(rows), len(cols))
    longest = max((len(x) for x in rows + cols), default=0)  # room for long labels (run names)
    width = max(4.2, 0.5 * side + 2.4 + 0.06 * longest, 0.075 * len(title or default_title) + 1.6)
    height = max(3.0, 0.42 * side + 1.6 + 0.05 * longest)
    fig, axes, _ = _axes(ax, 1, figsize=(width, height))
    a = axes[0]
    text = np.vectorize(_fmt, otypes=[object])(values)
    same = matrix.dims[1] == "other"
    _heatmap(
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
    _title(a, title if title is not None else default_title)
    return fig


@_styled
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
    ds = _require(transition_result, "transition_result", ("count",), "a transition table")
    if labels is not None and (isinstance(labels, str) or len(labels) != 2):
        raise ParameterError(f"labels must be 2 names (rows' run, columns' run), got {labels!r}")
    first, second = (str(x) for x in labels) if labels is not None else ("run a", "run b")
    count = ds["count"].transpose("from_type", "to_type")
    counts = _values(count).astype(np.float64)
    if "fraction" in ds:
        frac = _values(ds["fraction"].transpose("from_type", "to_type")).astype(np.float64)
    else:
        total = counts.sum(axis=1, keepdims=True)
        frac = np.where(total > 0, counts / np.where(total > 0, total, 1), np.nan)
    fig, axes, _ = _axes(ax, 1, figsize=(5.6, 4.4))
    _heatmap(
        axes[0],
        frac,
        _labels(count, "from_type"),
        _labels(count, "to_type"),
        cmap="viridis",
        norm=Normalize(0.0, 1.0),
        text=counts.astype(np.int64),
        colorbar="fraction of the row's neurons",
        row_label=f"type in {first}",
        col_label=f"type in {second}\n\n" + TYPE_NOTE.replace("; ", "\n"),
    )
    _title(axes[0], "Type transitions (cells: neurons)")
    return fig


# --------------------------------------------------------------------------- deactivation


@_styled
def deactivation_heatmap(
    ablation: xr.Dataset, ax: AxesArg = None, *, n_perm: int = 1000, seed: int = 0
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
    ablation : Dataset
        An ablation result (``nll[deactivated, evaluated]``, ``control_nll``), passed to
        ``deactivation_effects``, or that function's result (``damage``, ``dominance``).
    ax : Axes or sequence of 2 Axes, optional
        One Axes (the heatmap only) or two; default: a new figure with both.
    n_perm, seed : int
        Passed to ``deactivation_effects`` for an ablation result (its label permutation
        test; the figure does not show it).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(ablation, xr.Dataset):
        raise InputFormatError(
            f"ablation must be an ablation or deactivation_effects result, got "
            f"{type(ablation).__name__}"
        )
    if "damage" in ablation and "dominance" in ablation:
        effects = ablation
    else:
        effects = deactivation_effects(ablation, n_perm=n_perm, seed=seed)
    damage_da = effects["damage"].transpose("deactivated", "evaluated")
    rows, cols = _labels(damage_da, "deactivated"), _labels(damage_da, "evaluated")
    damage = _values(damage_da).astype(np.float64)
    ratio = (
        _values(effects["ppl_ratio"].transpose("deactivated", "evaluated")).astype(np.float64)
        if "ppl_ratio" in effects
        else np.exp(damage)
    )
    control = None
    if "control_damage" in effects and effects.sizes.get("control", 0) > 0:
        cd = _values(effects["control_damage"].transpose("deactivated", "evaluated", "control"))
        finite = np.isfinite(cd).any(axis=-1)
        control = np.full(damage.shape, np.nan)
        control[finite] = np.exp(np.nanmean(cd[finite], axis=-1))
    fig, axes, new = _axes(
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
    _heatmap(
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
    _title(a, "Perplexity change vs no deactivation (cells: %; ctrl: random sets)")
    if len(axes) > 1:
        b = axes[1]
        dom = _values(effects["dominance"]).astype(np.float64)
        y = np.arange(len(rows))
        if "control_dominance" in effects and effects.sizes.get("control", 0) > 0:
            cdom = _values(effects["control_dominance"].transpose("deactivated", "control"))
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
            pvalues = _values(effects["pvalue_control"]).astype(np.float64)
            ticks = [
                f"{d}\np={p:.2g}" if np.isfinite(p) else d
                for d, p in zip(rows, pvalues, strict=True)
            ]
        b.axvline(0, color="#000000", lw=0.8)
        b.set_yticks(y, labels=ticks)
        b.set_ylim(len(rows) - 0.5, -0.5)
        b.set_xlabel("diagonal dominance (Δ NLL)")
        _title(b, "Own-language damage")
        _style_axes(b, grid="x")
        _legend_outside(fig, b, b.get_legend_handles_labels()[0], new, where="lower", fontsize=7)
    return fig


# --------------------------------------------------------------------------- uncertainty


@_styled
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
    ds = _require(
        stability_result,
        "stability_result",
        ("selection_frequency", "jaccard"),
        "a bootstrap_identification result",
    )
    fig, axes, _ = _axes(ax, 2, figsize=(8.0, 3.2))
    a, b = axes
    freq = _values(ds["selection_frequency"]).astype(np.float64).ravel()
    freq = freq[np.isfinite(freq)]
    never = int((freq == 0).sum())
    a.hist(freq[freq > 0], bins=np.linspace(0, 1, 21).tolist(), color=OKABE_ITO["blue"], alpha=0.85)
    a.set_xlim(0, 1)
    a.set_xlabel(f"selection frequency\n({never} of {freq.size} neurons never selected, not shown)")
    a.set_ylabel("neurons selected at least once")
    boots = ds.attrs.get("n_ok", ds.attrs.get("n_boot"))
    _title(a, f"Selected in ≥1 of {boots} replicates" if boots else "Selection frequency")
    _style_axes(a)
    jac = ds["jaccard"].transpose("replicate", "language")
    values = _values(jac).astype(np.float64)
    if "ok" in ds:
        values = values[_values(ds["ok"]).astype(bool)]
    langs = _labels(jac, "language")
    data = [col[np.isfinite(col)] for col in values.T]
    b.boxplot(
        data,
        tick_labels=langs,
        widths=0.6,
        medianprops={"color": "#000000"},
        flierprops={"marker": ".", "markersize": 3},
    )
    means = (
        _values(ds["jaccard_mean"]).astype(np.float64)
        if "jaccard_mean" in ds
        else np.array([d.mean() if d.size else np.nan for d in data])
    )
    b.plot(np.arange(1, len(langs) + 1), means, "D", color=TYPE_COLORS["specific"], ms=4)
    b.set_ylim(0, 1.05)
    b.set_xlabel("language (box: replicates; diamond: mean)")
    b.set_ylabel("Jaccard with full-data mask")
    _title(b, "Mask stability per language")
    if len(langs) > 8:
        b.tick_params(axis="x", rotation=45)
    _style_axes(b)
    return fig


@_styled
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
    ds = _require(
        tests_result, "tests_result", ("q", "significant"), "a language_preference_tests result"
    )
    fig, axes, new = _axes(ax, 2, figsize=(9.0, 3.3))
    a, b = axes
    bins = np.linspace(0, 1, 21).tolist()
    if "p" in ds:
        p = _values(ds["p"]).astype(np.float64).ravel()
        a.hist(p[np.isfinite(p)], bins=bins, color=OKABE_ITO["sky blue"], alpha=0.7, label="p")
    q = _values(ds["q"]).astype(np.float64).ravel()
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
    _title(a, "p and q values" + (f" ({correction})" if correction else ""))
    _style_axes(a)
    per = ds.attrs.get("n_significant_per_language")
    if isinstance(per, Mapping) and per:
        langs = [str(k) for k in per]
        counts = np.array([int(v) for v in per.values()])
    else:
        sig = ds["significant"]
        other = [d for d in sig.dims if d != "language"]
        total = sig.sum(other)
        langs = _labels(total, "language")
        counts = _values(total).astype(np.int64)
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
    _title(b, "Significant per language")
    _style_axes(b)
    handles = a.get_legend_handles_labels()[0]
    if new:  # below both panels: it explains the left one, and covers neither
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    else:
        _legend_outside(fig, a, handles, new)
    return fig


# --------------------------------------------------------------------------- saving


def save(
    fig: Figure,
    path: str | Path,
    formats: Sequence[str] = ("svg", "png"),
    *,
    dpi: float = 150,
) -> list[Path]:
    """Write a figure in each format, as ``path`` plus the format's suffix.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or Path
        Output path without suffix (parent folders are created).
    formats : sequence of {"svg", "png", "pdf"}
        Formats to write (default SVG and PNG).
    dpi : float
        Resolution of raster formats.

    Returns
    -------
    list of Path
        The files written, in the order of ``formats``.
    """
    if not isinstance(fig, Figure):
        raise ParameterError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if isinstance(formats, str) or not formats:
        raise ParameterError(f"formats must be a non-empty sequence of names, got {formats!r}")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ParameterError(f"formats must be among {', '.join(FORMATS)}, got {bad}")
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, dict[str, Any]] = {
        "svg": {"Date": None},
        "png": {"Software": None},
        "pdf": {"CreationDate": None},
    }
    out = []
    with mpl.rc_context({"svg.hashsalt": "langneurons", "svg.fonttype": "none"}):
        for fmt in formats:
            target = base.with_name(f"{base.name}.{fmt}")
            fig.savefig(target, format=fmt, dpi=dpi, metadata=metadata[fmt], facecolor="white")
            out.append(target)
    return out


__all__ = [
    "FORMATS",
    "LAYER_TYPES",
    "OKABE_ITO",
    "RUN_COLORS",
    "TYPE_COLORS",
    "TYPE_MARKERS",
    "deactivation_heatmap",
    "layer_types",
    "overlap_matrix",
    "per_language",
    "qvalues",
    "save",
    "shared_by",
    "stability",
    "transitions",
    "type_change",
]
