"""Derived results: what a report draws that no command saves today, made in one place.

A figure draws a computed result and never computes one itself. Most results a report shows
are saved in the store by the commands that make them; the few that are not are obtained here,
each by calling a public :mod:`langneurons.analysis` function once per saved input (the report
caches them):

- ``accuracy_effects(ablation)``: the effects of a saved accuracy ablation (saved by
  ``langneurons stats accuracy``);
- ``deactivation_effects(ablation, alpha=None, n_perm=1000)``: the effects of a saved ablation
  (the CLI saves them only with ``langneurons stats deactivation``); ``alpha=None`` so that an
  ablation with fewer random controls than a test at 0.05 needs (3, the old default) is still
  drawn, its control comparison labelled descriptive;
- ``language_overlap(identification)``: the Jaccard index between one identification's
  languages' masks;
- :func:`run_overlap`: the Jaccard index of one neuron set between every pair of runs, read
  from :func:`langneurons.analysis.overlap` of each pair.

The report's Jupyter and Quarto sources write the same calls, so they draw the same figures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import xarray as xr

from langneurons.analysis.accuracy import accuracy_effects
from langneurons.analysis.compare import language_overlap, overlap
from langneurons.analysis.deactivation import deactivation_effects
from langneurons.errors import InputFormatError, ParameterError
from langneurons.names import LANGUAGE

#: Permutations of the label test when a report derives the effects of an ablation.
DEACTIVATION_N_PERM: Final = 1000


def _labels(obj: xr.Dataset, dim: str) -> list[str]:
    """A dimension's coordinate values as strings."""
    return [str(x) for x in np.asarray(obj[dim].values).ravel()]


def run_overlap(
    results: Sequence[xr.Dataset] | Mapping[str, xr.Dataset],
    labels: Sequence[str] | None = None,
    *,
    neuron_set: str | None = None,
    language: str | None = None,
) -> xr.DataArray:
    """Jaccard index of one neuron set between every pair of runs' identifications.

    Each cell is read from :func:`langneurons.analysis.overlap` of the pair (its
    ``type_jaccard`` for a type set, or ``jaccard`` of one language's set), called once per
    pair; this function only arranges them, for :func:`langneurons.reports.figures.overlap_matrix`.

    Parameters
    ----------
    results : sequence or mapping of Datasets
        Identification results of the same neurons and languages (a mapping's keys are labels).
    labels : sequence of str, optional
        One name per result (default: the mapping's keys, or "result 1", "result 2", ...).
    neuron_set : str, optional
        "selected" (default), "specific", "related", "general" or "unassigned"; with
        ``language``, that language's "mask" (default), "specific" or "related".
    language : str, optional
        Compare one language's set instead of a type set.

    Returns
    -------
    xarray.DataArray
        ``jaccard[run, other]`` (symmetric); ``attrs``: ``neuron_set`` and ``language``.

    Raises
    ------
    ParameterError
        Fewer than 2 results, wrong number of labels, or an unknown set or language.
    """
    if isinstance(results, Mapping):
        items = [(str(k), v) for k, v in results.items()]
    elif isinstance(results, Sequence) and not isinstance(results, (str, xr.Dataset)):
        items = [(f"result {i + 1}", v) for i, v in enumerate(results)]
    else:
        raise InputFormatError(
            f"results must be a sequence or mapping of identification results, got "
            f"{type(results).__name__}"
        )
    if len(items) < 2:
        raise ParameterError("give at least 2 results to compare runs")
    if labels is not None:
        if isinstance(labels, str) or len(labels) != len(items):
            raise ParameterError(
                f"labels must be {len(items)} names (one per result), got {labels!r}"
            )
        items = [(str(lab), ds) for lab, (_, ds) in zip(labels, items, strict=True)]
    chosen = neuron_set or ("selected" if language is None else "mask")
    n = len(items)
    out = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i, n):
            out[i, j] = out[j, i] = _jaccard(overlap(items[i][1], items[j][1]), chosen, language)
    names = [label for label, _ in items]
    return xr.DataArray(
        out,
        dims=("run", "other"),
        coords={"run": names, "other": names},
        name="jaccard",
        attrs={"neuron_set": chosen, "language": language or ""},
    )


def _jaccard(ov: xr.Dataset, neuron_set: str, language: str | None) -> float:
    """One set's Jaccard index, read from an ``overlap`` result."""
    if language is None:
        if neuron_set not in _labels(ov, "type"):
            raise ParameterError(
                f"neuron_set {neuron_set!r} is not a type set ({_labels(ov, 'type')}); "
                "per-language sets need language="
            )
        return float(ov["type_jaccard"].sel(type=neuron_set).values)
    if language not in _labels(ov, LANGUAGE):
        raise ParameterError(f"language {language!r} is not in both results")
    if neuron_set not in _labels(ov, "set"):
        raise ParameterError(
            f"neuron_set {neuron_set!r} is not a per-language set ({_labels(ov, 'set')})"
        )
    return float(ov["jaccard"].sel(language=language, set=neuron_set).values)


#: Derivations a report may ask for, by the name its sources call them with.
DERIVATIONS: Final[Mapping[str, Callable[..., Any]]] = MappingProxyType(
    {
        "deactivation_effects": deactivation_effects,
        "accuracy_effects": accuracy_effects,
        "language_overlap": language_overlap,
        "derived.run_overlap": run_overlap,
    }
)

__all__ = ["DEACTIVATION_N_PERM", "DERIVATIONS", "run_overlap"]
