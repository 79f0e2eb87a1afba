"""The figure of accuracy-based deactivation: one heatmap of accuracy drops per panel.

It draws a :func:`~langneurons.analysis.accuracy_effects` result (saved by ``langneurons stats
accuracy``, or derived by the report from the saved accuracy ablation); it runs no test.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from langneurons._format import num
from langneurons.errors import InputFormatError
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


@styled
def accuracy_heatmap(effects: xr.Dataset, ax: AxesArg = None) -> Figure:
    r"""Accuracy drop when each language's neurons are off, one heatmap per panel.

    Cells: :math:`\delta_{p,d,e} = a_e - a_{p,d,e}` in percentage points, the baseline
    accuracy on evaluated language e (columns) minus the accuracy with panel p's set of
    language d (rows, with the set's size) switched off, and below it the mean drop over the
    random controls. Own-language cells are outlined; column labels carry the baseline
    accuracy and item count; each panel's title gives the smallest attainable control p.

    Parameters
    ----------
    effects : Dataset
        An ``accuracy_effects`` result (``drop``, ``baseline``). An accuracy ablation is
        refused: pass ``langneurons.analysis.accuracy_effects(ablation)``.
    ax : Axes or sequence of Axes, optional
        One Axes per panel; default: a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(effects, xr.Dataset) and "correct" in effects and "drop" not in effects:
        raise InputFormatError(
            "effects is an accuracy ablation; pass its effects: accuracy_heatmap("
            "langneurons.analysis.accuracy_effects(ablation)) or the result saved by "
            "`langneurons stats accuracy`"
        )
    effects = require(
        effects,
        "effects",
        ("drop", "baseline", "n_items"),
        "an accuracy_effects result (langneurons.analysis.accuracy_effects)",
    )
    panels = labels_of(effects["drop"], "panel")
    rows = labels_of(effects["drop"], "deactivated")
    cols = labels_of(effects["drop"], "evaluated")
    base = as_array(effects["baseline"]).astype(np.float64)
    items = as_array(effects["n_items"])
    col_labels = [
        f"{c}\nbase {num(100 * float(b), 3)}% (n={int(n)})"
        for c, b, n in zip(cols, base, items, strict=True)
    ]
    fig, axes, _ = new_axes(
        ax,
        len(panels),
        figsize=(max(4.0, 1.3 * len(cols) + 2.2) * len(panels), max(3.0, 0.6 * len(rows) + 2.0)),
    )
    norm = Normalize(-100, 100)
    min_p = effects.attrs.get("min_pvalue_control")
    for k, (a, panel) in enumerate(zip(axes, panels, strict=False)):
        drop = 100 * as_array(effects["drop"].sel(panel=panel)).astype(np.float64)
        control = None
        if "control_drop" in effects and effects.sizes.get("control", 0) > 0:
            cd = as_array(effects["control_drop"].sel(panel=panel)).astype(np.float64)
            control = 100 * cd.mean(axis=-1)
        text = np.empty(drop.shape, dtype=object)
        for (i, j), v in np.ndenumerate(drop):
            cell = f"{v:+.0f} pp" if np.isfinite(v) else "–"
            if control is not None and np.isfinite(control[i, j]):
                cell += f"\nctrl {control[i, j]:+.0f}"
            text[i, j] = cell
        row_labels = rows
        size = "n_experts" if "n_experts" in effects else "n_neurons"  # MoE: whole experts
        if size in effects:
            sizes = as_array(effects[size].sel(panel=panel))
            row_labels = [f"{d} ({int(n):,} off)" for d, n in zip(rows, sizes, strict=True)]
        heatmap(
            a,
            drop,
            row_labels,
            col_labels,
            cmap="PuOr_r",
            norm=norm,
            text=text,
            colorbar="accuracy drop (pp)" if k == len(panels) - 1 else None,
            row_label=f"deactivated {size[2:]} of" if k == 0 else "",
            col_label="evaluated language",
        )
        for i, d in enumerate(rows):
            if d in cols:
                a.add_patch(
                    Rectangle(
                        (cols.index(d) - 0.5, i - 0.5), 1, 1, fill=False, ec="#000000", lw=1.5
                    )
                )
        title = panel
        if min_p is not None:
            title += f" (smallest control p {num(float(min_p), 2)})"
        set_title(a, title)
    return fig


__all__ = ["accuracy_heatmap"]
