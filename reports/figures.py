"""Figures of language-neuron results, drawn with matplotlib.

Every function takes results computed by :mod:`langneurons.analysis` (xarray Datasets, fresh
or opened from a store with :meth:`~langneurons.store.ActivationStore.open_result`) and an
optional ``ax`` to draw on, and returns the :class:`matplotlib.figure.Figure`. Nothing here
computes a new statistic: counts, overlaps, intervals and tests come from the analysis
functions, and a figure handed what a statistic is computed from (an ablation, an
identification's masks) refuses it with the function that makes what it draws; the figures
only arrange results.

The figures live by subject in private modules: identifications
(:mod:`~langneurons.reports._fig_types`), comparisons (``_fig_compare``), models of different
shapes (``_fig_models``), statistics (``_fig_stats``) and mixture-of-experts runs
(``_fig_moe``), over one shared base (``_fig_base``:
palette, style, saving).

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

from langneurons._format import significant as _significant
from langneurons.reports._fig_accuracy import accuracy_heatmap
from langneurons.reports._fig_base import (
    FORMATS,
    LAYER_TYPES,
    OKABE_ITO,
    RUN_COLORS,
    TYPE_COLORS,
    TYPE_MARKERS,
    TYPE_NOTE,
    save,
)
from langneurons.reports._fig_compare import overlap_matrix, transitions, type_change
from langneurons.reports._fig_models import (
    model_jaccard,
    model_profiles,
    model_shares,
    models_overview,
)
from langneurons.reports._fig_moe import expert_neurons, routing_shares
from langneurons.reports._fig_stats import deactivation_heatmap, qvalues, stability
from langneurons.reports._fig_types import layer_types, per_language, shared_by


def __getattr__(name: str) -> object:
    """``figures.significant`` moved to ``langneurons._format.significant`` (deprecated here)."""
    if name == "significant":
        import warnings

        warnings.warn(
            "langneurons.reports.figures.significant is deprecated; use "
            "langneurons._format.significant",
            DeprecationWarning,
            stacklevel=2,
        )
        return _significant
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FORMATS",
    "LAYER_TYPES",
    "OKABE_ITO",
    "RUN_COLORS",
    "TYPE_COLORS",
    "TYPE_MARKERS",
    "TYPE_NOTE",
    "accuracy_heatmap",
    "deactivation_heatmap",
    "expert_neurons",
    "layer_types",
    "model_jaccard",
    "model_profiles",
    "model_shares",
    "models_overview",
    "overlap_matrix",
    "per_language",
    "qvalues",
    "routing_shares",
    "save",
    "shared_by",
    "stability",
    "transitions",
    "type_change",
]
