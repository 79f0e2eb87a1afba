"""What every figure shares: the palette, the house style, axes, input checks, heatmaps, saving.

The figure modules (:mod:`~langneurons.reports._fig_types`, ``_fig_compare``, ``_fig_stats``)
import these names; users reach them through :mod:`langneurons.reports.figures`.
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
from matplotlib.rcsetup import cycler
from numpy.typing import NDArray

from langneurons._format import significant
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
IDENTIFICATION_VARS: Final = ("neuron_type", "general")
#: What "none" and "unassigned" mean, for captions and legends.
TYPE_NOTE: Final = (
    "none: not selected by the rule; unassigned: selected, but above tau in no language"
)
GENERAL_LABEL: Final = "general neurons\n(of all neurons)"
#: Legend entries: what each type counts.
TYPE_LABELS: Final[Mapping[str, str]] = MappingProxyType(
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


def styled(func: Callable[P, R]) -> Callable[P, R]:
    """Run a figure function inside the house style's ``rc_context``."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with mpl.rc_context(cast(Any, _STYLE)):
            return func(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- input helpers


def figure_of(ax: Axes) -> Figure:
    """The top-level Figure an Axes belongs to."""
    fig = ax.get_figure(root=True)
    if not isinstance(fig, Figure):
        raise ParameterError("ax must be a matplotlib Axes placed on a Figure")
    return fig


def new_axes(
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
    return figure_of(given[0]), given, False


def require(ds: object, name: str, variables: Sequence[str], what: str) -> xr.Dataset:
    """``ds`` after checking it is a Dataset holding ``variables`` (InputFormatError if not)."""
    if not isinstance(ds, xr.Dataset):
        raise InputFormatError(
            f"{name} must be {what} (an xarray.Dataset), got {type(ds).__name__}"
        )
    missing = [v for v in variables if v not in ds.variables]
    if missing:
        raise InputFormatError(f"{name} must be {what}; it lacks variables {missing}")
    return ds


def named_results(
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
        checked = require(ds, where, variables, what)
        default = "" if len(items) == 1 else f"result {i + 1}"
        out.append((default if label is None else label, checked))
    return out


def as_array(da: xr.DataArray) -> NDArray[Any]:
    """The (computed) values of a DataArray."""
    return np.asarray(da.values)


def labels_of(ds: xr.Dataset | xr.DataArray, dim: str) -> list[str]:
    """A dimension's coordinate values as strings (positions when it has none)."""
    if dim in ds.coords:
        return [str(x) for x in np.asarray(ds[dim].values).ravel()]
    return [str(i) for i in range(ds.sizes[dim])]


def style_axes(ax: Axes, grid: Literal["x", "y", "both"] | None = "y") -> None:
    """Light grid behind the data and no top/right spines (also on caller-made axes)."""
    ax.spines[["top", "right"]].set_visible(False)
    if grid is not None:
        ax.grid(True, axis=grid, **_GRID)


def set_title(ax: Axes, text: str) -> None:
    if text:
        ax.set_title(text, loc="left")


def _cmap(name: str) -> Colormap:
    """A named colormap with NaN cells drawn light grey."""
    return mpl.colormaps[name].with_extremes(bad=_NAN_COLOR)


def heatmap(
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
        figure_of(ax).colorbar(image, ax=ax, shrink=0.85, label=colorbar)


def legend_outside(
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
    "GENERAL_LABEL",
    "IDENTIFICATION_VARS",
    "LAYER_TYPES",
    "OKABE_ITO",
    "RUN_COLORS",
    "TYPE_COLORS",
    "TYPE_LABELS",
    "TYPE_MARKERS",
    "TYPE_NOTE",
    "AxesArg",
    "as_array",
    "figure_of",
    "heatmap",
    "labels_of",
    "legend_outside",
    "named_results",
    "new_axes",
    "require",
    "save",
    "set_title",
    "significant",
    "style_axes",
    "styled",
]
