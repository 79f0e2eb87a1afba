"""Compare identification results across runs and checkpoints.

- :func:`overlap`: how much two runs' neuron sets (per language and per type) overlap, against
  the overlap of random sets with the same per-layer sizes (or, on request, any sizes).
- :func:`transition_table`: how neurons change type between two runs.
- :func:`mcnemar`, :func:`cochran_q`, :func:`membership_change` (in
  :mod:`~langneurons.analysis.membership`, re-exported here): paired tests of per-neuron
  membership between two runs, or over an ordered series of checkpoints.
- :func:`group_comparison` (in :mod:`~langneurons.analysis.groups`, re-exported here): two
  groups of replicate runs, with run-to-run variance as the error term.
- :func:`trajectories`: every count of a series of results on a ``checkpoint`` dimension.
- :func:`spontaneous_alignment` (in :mod:`~langneurons.analysis.alignment`, re-exported here): do
  languages that were not trained in multilingual alignment gain language neurons like the
  trained ones?

All functions take identification results (Datasets returned by
:func:`~langneurons.analysis.identify.identify`, numpy- or dask-backed; results saved in the
store work too) or runs, and return xarray Datasets with JSON-serialisable ``attrs``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._validate import as_labels as _as_labels
from langneurons.analysis._validate import check_choice
from langneurons.analysis._validate import languages_of as _languages
from langneurons.errors import ParameterError
from langneurons.names import LANGUAGE, LAYER, NEURON, TYPES

from .alignment import spontaneous_alignment
from .groups import group_comparison
from .membership import (
    TRANSITION_TYPES,
    checkpoint_labels,
    cochran_q,
    mcnemar,
    membership_change,
    type_codes,
)
from .type_tables import flat as _flat
from .type_tables import load_pair as _pair
from .type_tables import load_series, type_counts
from .type_tables import mask_rows as _mask_rows
from .type_tables import neuron_types as _types

CHECKPOINT, SET, FROM, TO = "checkpoint", "set", "from_type", "to_type"
TYPE, N_SHARED, N_ASSIGNED = "type", "n_shared", "n_assigned"

#: Per-language neuron sets compared by :func:`overlap`.
LANGUAGE_SETS: tuple[str, ...] = ("mask", "specific", "related")
#: Language-independent neuron sets compared by :func:`overlap`.
TYPE_SETS: tuple[str, ...] = ("selected", "specific", "related", "general", "unassigned")
#: Nulls of :func:`overlap`: random sets with the observed per-layer sizes, or any sizes.
OVERLAP_NULLS: tuple[str, ...] = ("layer", "uniform")


# --------------------------------------------------------------------------- helpers


def _ratio(num: NDArray[Any], den: NDArray[Any]) -> NDArray[np.float64]:
    """``num / den`` with NaN where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


# --------------------------------------------------------------------------- overlap


def _stratified_null(
    a: NDArray[np.bool_], b: NDArray[np.bool_], n_layers: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Expected overlap and ``P(X >= observed)`` of sets ``[..., M]`` (layer-major) under the
    layer-stratified null: ``X = sum_l X_l``, ``X_l ~ Hypergeom(N, |A_l|, |B_l|)`` independent."""
    import scipy.stats

    lead = a.shape[:-1]
    a3 = a.reshape(*lead, n_layers, -1)
    b3 = b.reshape(*lead, n_layers, -1)
    n = a3.shape[-1]
    na = a3.sum(axis=-1).reshape(-1, n_layers)
    nb = b3.sum(axis=-1).reshape(-1, n_layers)
    both = (a3 & b3).sum(axis=(-1, -2)).reshape(-1)
    expected = (na * nb).sum(axis=1) / n
    pvalue = np.empty(both.size)
    for r in range(both.size):
        pmf = np.ones(1)
        for la, lb in zip(na[r].tolist(), nb[r].tolist(), strict=True):
            if la and lb:
                pmf = np.convolve(
                    pmf, scipy.stats.hypergeom.pmf(np.arange(min(la, lb) + 1), n, la, lb)
                )
        pvalue[r] = min(1.0, float(pmf[int(both[r]) :].sum()))
    return expected.reshape(lead), pvalue.reshape(lead)


def _set_stats(
    a: NDArray[np.bool_], b: NDArray[np.bool_], m: int, null: str, n_layers: int
) -> dict[str, NDArray[Any]]:
    """Overlap statistics of boolean sets ``[..., M]`` against the null's chance expectation."""
    import scipy.stats

    n_a = a.sum(axis=-1).astype(np.int64)
    n_b = b.sum(axis=-1).astype(np.int64)
    n_both = (a & b).sum(axis=-1).astype(np.int64)
    n_union = n_a + n_b - n_both
    if null == "layer":
        expected, pvalue = _stratified_null(a, b, n_layers)
    else:
        expected = n_a * n_b / m
        pvalue = np.asarray(scipy.stats.hypergeom.sf(n_both - 1, m, n_a, n_b), dtype=np.float64)
    return {
        "n_a": n_a,
        "n_b": n_b,
        "n_both": n_both,
        "n_union": n_union,
        "jaccard": _ratio(n_both, n_union),
        "overlap_coefficient": _ratio(n_both, np.minimum(n_a, n_b)),
        "expected": np.asarray(expected, dtype=np.float64),
        "enrichment": _ratio(n_both, expected),
        "pvalue": np.asarray(pvalue, dtype=np.float64),
    }


_PVALUE_TEXT = {
    "layer": "one-sided P(X >= n_both), X = sum over layers of Hypergeom(N, n_a in layer, n_b in "
    "layer): random sets with the observed per-layer sizes",
    "uniform": "one-sided hypergeometric P(X >= n_both), X ~ Hypergeom(M, n_a, n_b): random "
    "sets anywhere in the model",
}


#: Why the uniform null's p-values are labelled descriptive.
UNIFORM_NULL_REASON = (
    "null='uniform' ignores the layer profile that every identified set has: on independent "
    "sets it rejected 0.085-0.31 of the time at 0.05 in docs/calibration.md; the enrichment "
    "is a description, use null='layer' for a p-value"
)


def overlap(
    a: xr.Dataset, b: xr.Dataset, *, null: Literal["layer", "uniform"] = "layer"
) -> xr.Dataset:
    r"""Overlap of the neuron sets of two identification results, per language and per type.

    For neuron sets A (from ``a``) and B (from ``b``) among the M = L x N neurons of one grid:

    - Jaccard index :math:`|A \cap B| / |A \cup B|` (NaN when both are empty);
    - overlap coefficient :math:`|A \cap B| / \min(|A|, |B|)` (NaN when either is empty);
    - the overlap expected by chance :math:`E` and enrichment :math:`|A \cap B| / E`;
    - a one-sided p-value of over-representation, :math:`P(X \ge |A \cap B|)`.

    Chance is a null of random sets. ``null="layer"`` (default): random sets with the
    observed sizes in every layer, :math:`X = \sum_l X_l`,
    :math:`X_l \sim \mathrm{Hypergeom}(N, |A_l|, |B_l|)` independent,
    :math:`E = \sum_l |A_l||B_l| / N`, and the exact distribution of X is the convolution of
    the per-layer ones. Language neurons concentrate in the first and last layers in every
    model, so two unrelated sets overlap more than sets drawn anywhere would: the uniform null
    ``null="uniform"`` (:math:`X \sim \mathrm{Hypergeom}(M, |A|, |B|)`, :math:`E =
    |A||B|/M`; Fisher's exact test, Rivals et al. 2007) reports that layer profile as
    enrichment, and its false-positive rate on independent sets is far above the level:
    ``benchmarks/calibration.py`` draws two independent sets of 5 % of the neurons, each
    with about 60 % of its neurons in the first and last two of 8 layers; at alpha = 0.05 the
    layer null rejects 0.024 (128 neurons per layer) and 0.031 (1,024) of the time, the
    uniform null 0.085 and 0.31 (0.11 at alpha = 0.001).

    Parameters
    ----------
    a, b : xarray.Dataset
        Identification results of two runs with the same layer x neuron grid (e.g. a base and
        an aligned model, or two checkpoints).
    null : {"layer", "uniform"}
        The chance model of the expectation and p-value.

    Returns
    -------
    xarray.Dataset
        ``n_a``, ``n_b``, ``n_both``, ``n_union``, ``jaccard``, ``overlap_coefficient``,
        ``expected`` (the overlap expected under the null, beside the observed ``n_both``),
        ``enrichment``, ``pvalue`` on ``[language, set]`` with ``set`` in
        ("mask", "specific", "related"): the language's mask, and its specific / related
        neurons. The same statistics prefixed ``type_`` on ``[type]`` for the
        language-independent sets ("selected", "specific", "related", "general" (the general
        flag over all neurons), "unassigned"). Languages are those of both results (in ``a``'s
        order); ``attrs`` record the ``null``, ``inference`` (``"valid"`` for the layer
        null, ``"descriptive"`` with ``inference_reason`` for the uniform one) and list any
        language held by one side only.

    Raises
    ------
    ParameterError
        An input is not an identification result, the grids differ, or an unknown null.

    References
    ----------
    Rivals et al. (2007), "Enrichment or depletion of a GO category within a class of genes:
    which test?", Bioinformatics 23.
    """
    check_choice("null", null, OVERLAP_NULLS)
    da, db = _pair(a, b)
    n_layers = int(da.sizes[LAYER])
    m = int(n_layers * da.sizes[NEURON])
    la, lb = _languages(da), _languages(db)
    common = [x for x in la if x in lb]
    ta, tb = _types(da), _types(db)
    ma, mb = _mask_rows(da, common), _mask_rows(db, common)
    per_lang_a = np.stack([ma, ma & (ta == "specific"), ma & (ta == "related")], axis=1)
    per_lang_b = np.stack([mb, mb & (tb == "specific"), mb & (tb == "related")], axis=1)
    ga, gb = _flat(da["general"]).astype(bool), _flat(db["general"]).astype(bool)
    sa, sb = _flat(da["selected"]).astype(bool), _flat(db["selected"]).astype(bool)
    glob_a = np.stack([sa, ta == "specific", ta == "related", ga, ta == "unassigned"])
    glob_b = np.stack([sb, tb == "specific", tb == "related", gb, tb == "unassigned"])
    per_lang = _set_stats(per_lang_a, per_lang_b, m, null, n_layers)
    glob = _set_stats(glob_a, glob_b, m, null, n_layers)
    data: dict[str, Any] = {k: ((LANGUAGE, SET), v) for k, v in per_lang.items()}
    data.update({f"type_{k}": ((TYPE,), v) for k, v in glob.items()})
    attrs: dict[str, Any] = {
        "n_neurons": m,
        "null": null,
        "pvalue": _PVALUE_TEXT[null],
        "inference": "valid" if null == "layer" else "descriptive",
        **({"inference_reason": UNIFORM_NULL_REASON} if null == "uniform" else {}),
        "languages_only_in_a": [x for x in la if x not in lb],
        "languages_only_in_b": [x for x in lb if x not in la],
    }
    return xr.Dataset(
        data,
        coords={
            LANGUAGE: np.asarray(common, dtype=str),
            SET: list(LANGUAGE_SETS),
            TYPE: list(TYPE_SETS),
        },
        attrs=attrs,
    )


# --------------------------------------------------------------------------- transitions


def transition_table(a: xr.Dataset, b: xr.Dataset) -> xr.Dataset:
    r"""How neurons change type from result ``a`` to result ``b``.

    :math:`T_{s,t} = \#\{(l, n) : \mathrm{type}_a(l, n) = s, \mathrm{type}_b(l, n) = t\}` over
    the ``neuron_type`` of every neuron ("none" = not selected, "unassigned", "specific",
    "related", "general" = selected with all K languages; a general neuron that is not
    selected is "none" here).

    Parameters
    ----------
    a, b : xarray.Dataset
        Identification results on the same layer x neuron grid.

    Returns
    -------
    xarray.Dataset
        ``count[from_type, to_type]``, ``fraction[from_type, to_type]`` (each row divided by
        its total; NaN for empty rows), ``count_by_layer[layer, from_type, to_type]``, and
        ``stayed`` / ``changed`` (neurons whose type is the same / differs).
    """
    da, db = _pair(a, b, ("neuron_type",))
    ca, cb = type_codes(da, "a"), type_codes(db, "b")
    t = len(TRANSITION_TYPES)
    pair = ca * t + cb
    by_layer = np.stack([np.bincount(row, minlength=t * t) for row in pair]).reshape(-1, t, t)
    count = by_layer.sum(axis=0)
    fraction = _ratio(count, count.sum(axis=1, keepdims=True))
    stayed = int(np.trace(count))
    return xr.Dataset(
        {
            "count": ((FROM, TO), count.astype(np.int64)),
            "fraction": ((FROM, TO), fraction),
            "count_by_layer": ((LAYER, FROM, TO), by_layer.astype(np.int64)),
            "stayed": ((), stayed),
            "changed": ((), int(count.sum()) - stayed),
        },
        coords={
            LAYER: da[LAYER].values,
            FROM: list(TRANSITION_TYPES),
            TO: list(TRANSITION_TYPES),
        },
        attrs={"types": list(TRANSITION_TYPES), "rows": "type in a", "columns": "type in b"},
    )


# --------------------------------------------------------------------------- trajectories


def trajectories(results: Sequence[xr.Dataset], labels: Sequence[str] | None = None) -> xr.Dataset:
    r"""Every count of a series of identification results, on a ``checkpoint`` dimension.

    Counts are recomputed from the result variables (so layer-subset results stay consistent)
    and equal the result's ``attrs`` (``n_selected``, ``per_language``, ``per_layer``,
    ``appear``, ``shared_by_n``) for whole results.

    Parameters
    ----------
    results : sequence of xarray.Dataset
        Identification results on the same grid with the same languages, in checkpoint order
        (e.g. training steps).
    labels : sequence of str, optional
        Checkpoint names (default "0", "1", ...).

    Returns
    -------
    xarray.Dataset
        ``n_selected``, ``tau``, ``lambda`` (NaN for LAPE) on ``[checkpoint]``; ``n_specific``,
        ``n_related``, ``n_mask`` on ``[checkpoint, language]`` (per-language specific,
        related and mask sizes); ``types[checkpoint, type]`` and
        ``layer_types[checkpoint, layer, type]`` (type counts, see
        :func:`~langneurons.analysis.distributions.type_table`); ``appear[checkpoint,
        n_assigned]`` (histogram of m over selected neurons) and
        ``shared_by_n[checkpoint, n_shared]`` (histogram over all neurons). The coordinate
        ``method[checkpoint]`` holds each rule.

    Raises
    ------
    ParameterError
        Fewer than one result, different grids or languages, or bad labels.
    """
    loaded = load_series(
        results, 1, ("selected", "mask", "neuron_type", "general", "shared_by", "n_assigned")
    )
    names = checkpoint_labels(labels, len(loaded))
    langs = _languages(loaded[0])
    for i, r in enumerate(loaded[1:], start=1):
        if set(_languages(r)) != set(langs):
            raise ParameterError(
                f"results[0] and results[{i}] must have the same languages; got {langs} and "
                f"{_languages(r)}"
            )
    k = len(langs)
    n_sel, tau, lam, methods = [], [], [], []
    spec, rel, msk, layer_types, appear, shared = [], [], [], [], [], []
    for r in loaded:
        kinds = _types(r)
        rows = _mask_rows(r, langs)
        selected = _flat(r["selected"]).astype(bool)
        n_sel.append(int(selected.sum()))
        tau.append(float(r.attrs.get("tau", math.nan)))
        lam.append(float(r.attrs.get("lambda", math.nan)))
        methods.append(str(r.attrs.get("method", "")))
        spec.append((rows & (kinds == "specific")).sum(axis=1))
        rel.append((rows & (kinds == "related")).sum(axis=1))
        msk.append(rows.sum(axis=1))
        layer_types.append(type_counts(r, TYPES))
        m = _flat(r["n_assigned"]).astype(np.int64)[selected]
        appear.append(np.bincount(m, minlength=k + 1)[: k + 1])
        s = _flat(r["shared_by"]).astype(np.int64)
        shared.append(np.bincount(s, minlength=k + 1)[: k + 1])
    lt = np.stack(layer_types).astype(np.int64)
    cl = (CHECKPOINT, LANGUAGE)
    return xr.Dataset(
        {
            "n_selected": ((CHECKPOINT,), np.asarray(n_sel, dtype=np.int64)),
            "tau": ((CHECKPOINT,), np.asarray(tau)),
            "lambda": ((CHECKPOINT,), np.asarray(lam)),
            "n_specific": (cl, np.stack(spec).astype(np.int64)),
            "n_related": (cl, np.stack(rel).astype(np.int64)),
            "n_mask": (cl, np.stack(msk).astype(np.int64)),
            "types": ((CHECKPOINT, TYPE), lt.sum(axis=1)),
            "layer_types": ((CHECKPOINT, LAYER, TYPE), lt),
            "appear": ((CHECKPOINT, N_ASSIGNED), np.stack(appear).astype(np.int64)),
            "shared_by_n": ((CHECKPOINT, N_SHARED), np.stack(shared).astype(np.int64)),
        },
        coords={
            CHECKPOINT: names,
            "method": ((CHECKPOINT,), np.asarray(methods, dtype=str)),
            LANGUAGE: np.asarray(langs, dtype=str),
            LAYER: loaded[0][LAYER].values,
            TYPE: list(TYPES),
            N_ASSIGNED: np.arange(k + 1),
            N_SHARED: np.arange(k + 1),
        },
        attrs={"checkpoints": names},
    )


__all__ = [
    "language_overlap",
    "overlap",
    "transition_table",
    "mcnemar",
    "cochran_q",
    "membership_change",
    "group_comparison",
    "trajectories",
    "spontaneous_alignment",
]


def language_overlap(result: xr.Dataset) -> xr.DataArray:
    r"""Jaccard index :math:`|M_i \cap M_j| / |M_i \cup M_j|` between the languages' masks.

    Parameters
    ----------
    result : Dataset
        An identification (or imported mask) result with ``mask[language, layer, neuron]``.

    Returns
    -------
    DataArray
        ``jaccard[language, other]``; NaN where both masks are empty.
    """
    mask = result["mask"].transpose(LANGUAGE, ...)
    langs = _as_labels(mask[LANGUAGE]).tolist()
    rows = np.asarray(mask.values).reshape(len(langs), -1).astype(np.int64)
    both = rows @ rows.T
    size = rows.sum(axis=1)
    union = size[:, None] + size[None, :] - both
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = np.where(union > 0, both / np.where(union > 0, union, 1), np.nan)
    return xr.DataArray(
        jac,
        dims=(LANGUAGE, "other"),
        coords={LANGUAGE: langs, "other": langs},
        name="jaccard",
    )
