"""Compare identification results across runs and checkpoints.

- :func:`overlap`: how much two runs' neuron sets (per language and per type) overlap, against
  the hypergeometric chance expectation.
- :func:`transition_table`: how neurons change type between two runs.
- :func:`mcnemar`, :func:`cochran_q`: paired tests of per-neuron membership between two runs, or
  over an ordered series of checkpoints.
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
import scipy.stats
import xarray as xr
from numpy.typing import NDArray
from statsmodels.stats.contingency_tables import cochrans_q as _sm_cochrans_q
from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar

from langneurons.analysis._validate import as_labels as _as_labels
from langneurons.analysis._validate import languages_of as _languages
from langneurons.analysis._validate import require_result, same_grid
from langneurons.errors import ParameterError
from langneurons.names import LANGUAGE, LAYER, NEURON, TYPES

from . import _kernels as kern
from .alignment import spontaneous_alignment
from .type_tables import mask_rows as _mask_rows
from .type_tables import neuron_types as _types
from .type_tables import type_counts

CHECKPOINT, SET, FROM, TO = "checkpoint", "set", "from_type", "to_type"
TYPE, N_SHARED, N_ASSIGNED = "type", "n_shared", "n_assigned"

#: Per-language neuron sets compared by :func:`overlap`.
LANGUAGE_SETS: tuple[str, ...] = ("mask", "specific", "related")
#: Language-independent neuron sets compared by :func:`overlap`.
TYPE_SETS: tuple[str, ...] = ("selected", "specific", "related", "general", "unassigned")
#: Type names in the order of :func:`transition_table` (not selected first).
TRANSITION_TYPES: tuple[str, ...] = kern.TYPE_NAMES

_RESULT_VARS = ("selected", "mask", "neuron_type", "general")


# --------------------------------------------------------------------------- helpers


def _load(result: object, name: str, variables: Sequence[str] = _RESULT_VARS) -> xr.Dataset:
    """Validate an identification result and bring the needed variables into memory."""
    ds = require_result(result, name, variables)
    return ds[list(variables)].compute().assign_attrs(ds.attrs)


def _pair(a: object, b: object, variables: Sequence[str] = _RESULT_VARS) -> tuple[xr.Dataset, ...]:
    """Two validated in-memory results on the same layer x neuron grid."""
    da, db = _load(a, "a", variables), _load(b, "b", variables)
    same_grid(da, db, ("a", "b"))
    return da, db


def _flat(arr: xr.DataArray) -> NDArray[Any]:
    """A ``[layer, neuron]`` variable flattened layer-major."""
    return np.asarray(arr.transpose(LAYER, NEURON).values).reshape(-1)


def _check_language(language: object, available: Sequence[str], where: str) -> str:
    """Validate one language name."""
    if not isinstance(language, str) or language not in available:
        raise ParameterError(
            f"language {language!r} is not a language of {where} (languages: "
            f"{', '.join(available)})"
        )
    return language


def _results_list(
    results: object,
    minimum: int,
    variables: Sequence[str] = (*_RESULT_VARS, "shared_by", "n_assigned"),
) -> list[xr.Dataset]:
    """Validate a sequence of results on one grid; return them in memory."""
    if isinstance(results, (str, xr.Dataset)) or not isinstance(results, Sequence):
        raise ParameterError(
            f"results must be a sequence of identification results, got {type(results).__name__}"
        )
    if len(results) < minimum:
        raise ParameterError(
            f"results must hold at least {minimum} identification results, got {len(results)}"
        )
    loaded = [_load(r, f"results[{i}]", variables) for i, r in enumerate(results)]
    for i, r in enumerate(loaded[1:], start=1):
        same_grid(loaded[0], r, ("results[0]", f"results[{i}]"))
    return loaded


def _labels(labels: object, n: int) -> list[str]:
    """Checkpoint labels: distinct strings, one per result (default "0".."n-1")."""
    if labels is None:
        return [str(i) for i in range(n)]
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise ParameterError(f"labels must be a sequence of {n} strings, got {labels!r}")
    out = [str(x) for x in labels]
    if len(out) != n or len(set(out)) != n:
        raise ParameterError(f"labels must be {n} distinct names (one per result), got {out!r}")
    return out


def _ratio(num: NDArray[Any], den: NDArray[Any]) -> NDArray[np.float64]:
    """``num / den`` with NaN where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


# --------------------------------------------------------------------------- overlap


def _set_stats(a: NDArray[np.bool_], b: NDArray[np.bool_], m: int) -> dict[str, NDArray[Any]]:
    """Overlap statistics of boolean sets ``[..., M]`` against the hypergeometric null."""
    n_a = a.sum(axis=-1).astype(np.int64)
    n_b = b.sum(axis=-1).astype(np.int64)
    n_both = (a & b).sum(axis=-1).astype(np.int64)
    n_union = n_a + n_b - n_both
    expected = n_a * n_b / m
    return {
        "n_a": n_a,
        "n_b": n_b,
        "n_both": n_both,
        "n_union": n_union,
        "jaccard": _ratio(n_both, n_union),
        "overlap_coefficient": _ratio(n_both, np.minimum(n_a, n_b)),
        "expected": expected,
        "enrichment": _ratio(n_both, expected),
        "pvalue": np.asarray(scipy.stats.hypergeom.sf(n_both - 1, m, n_a, n_b), dtype=np.float64),
    }


def overlap(a: xr.Dataset, b: xr.Dataset) -> xr.Dataset:
    r"""Overlap of the neuron sets of two identification results, per language and per type.

    For neuron sets A (from ``a``) and B (from ``b``) among the M = L x N neurons of one grid:

    - Jaccard index :math:`|A \cap B| / |A \cup B|` (NaN when both are empty);
    - overlap coefficient :math:`|A \cap B| / \min(|A|, |B|)` (NaN when either is empty);
    - chance expectation :math:`E = |A||B| / M` and enrichment :math:`|A \cap B| / E`;
    - one-sided hypergeometric p-value of over-representation,
      :math:`P(X \ge |A \cap B|)` for :math:`X \sim \mathrm{Hypergeom}(M, |A|, |B|)`, i.e. the
      probability that a random set of :math:`|B|` neurons shares at least that many with A
      (Fisher's exact test; Rivals et al. 2007).

    Parameters
    ----------
    a, b : xarray.Dataset
        Identification results of two runs with the same layer x neuron grid (e.g. a base and
        an aligned model, or two checkpoints).

    Returns
    -------
    xarray.Dataset
        ``n_a``, ``n_b``, ``n_both``, ``n_union``, ``jaccard``, ``overlap_coefficient``,
        ``expected``, ``enrichment``, ``pvalue`` on ``[language, set]`` with ``set`` in
        ("mask", "specific", "related"): the language's mask, and its specific / related
        neurons. The same statistics prefixed ``type_`` on ``[type]`` for the
        language-independent sets ("selected", "specific", "related", "general" (the general
        flag over all neurons), "unassigned"). Languages are those of both results (in ``a``'s
        order); ``attrs`` list any held by one side only.

    Raises
    ------
    ParameterError
        An input is not an identification result, or the grids differ.

    References
    ----------
    Rivals et al. (2007), "Enrichment or depletion of a GO category within a class of genes:
    which test?", Bioinformatics 23.
    """
    da, db = _pair(a, b)
    m = int(da.sizes[LAYER] * da.sizes[NEURON])
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
    per_lang = _set_stats(per_lang_a, per_lang_b, m)
    glob = _set_stats(glob_a, glob_b, m)
    data: dict[str, Any] = {k: ((LANGUAGE, SET), v) for k, v in per_lang.items()}
    data.update({f"type_{k}": ((TYPE,), v) for k, v in glob.items()})
    attrs: dict[str, Any] = {
        "n_neurons": m,
        "pvalue": "one-sided hypergeometric P(X >= n_both), X ~ Hypergeom(M, n_a, n_b)",
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


def _type_codes(result: xr.Dataset, name: str) -> NDArray[np.int64]:
    """``neuron_type`` as codes into :data:`TRANSITION_TYPES`, shaped ``[layer, neuron]``."""
    names = _as_labels(result["neuron_type"].transpose(LAYER, NEURON))
    codes = np.full(names.shape, -1, dtype=np.int64)
    for i, t in enumerate(TRANSITION_TYPES):
        codes[names == t] = i
    if (codes < 0).any():
        bad = sorted(set(names[codes < 0].tolist()))
        raise ParameterError(
            f"{name}.neuron_type holds unknown types {bad}; expected {list(TRANSITION_TYPES)}"
        )
    return codes


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
    ca, cb = _type_codes(da, "a"), _type_codes(db, "b")
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


# --------------------------------------------------------------------------- paired tests


def _membership_vars(language: str | None) -> tuple[str, ...]:
    """The variables a membership needs: ``selected``, or ``mask`` for one language."""
    return ("selected",) if language is None else ("mask",)


def _membership(result: xr.Dataset, language: str | None, name: str) -> NDArray[np.bool_]:
    """Per-neuron membership: selection, or one language's mask (flat, layer-major)."""
    if language is None:
        return _flat(result["selected"]).astype(bool)
    _check_language(language, _languages(result), name)
    return _mask_rows(result, [language])[0]


def mcnemar(
    a: xr.Dataset,
    b: xr.Dataset,
    language: str | None = None,
    *,
    exact: bool | Literal["auto"] = "auto",
    correction: bool = True,
) -> xr.Dataset:
    r"""McNemar's test of per-neuron membership between two runs.

    Each neuron is a matched pair: in or out of the set in run ``a`` and in run ``b``. With
    :math:`n_{10}` neurons in ``a`` only and :math:`n_{01}` in ``b`` only, under the null of
    equal marginal proportions the discordant neurons split 1:1:

    - exact: :math:`p = \min(1, 2\,F_{\mathrm{Bin}(n_{10}+n_{01}, 1/2)}(\min(n_{10}, n_{01})))`;
    - asymptotic: :math:`\chi^2 = (|n_{10} - n_{01}| - c)^2 / (n_{10} + n_{01})` on 1 degree of
      freedom, :math:`c = 1` with the continuity correction (Edwards 1948), else 0.

    Computed with :func:`statsmodels.stats.contingency_tables.mcnemar`.

    Parameters
    ----------
    a, b : xarray.Dataset
        Identification results on the same layer x neuron grid (with ``language``, any
        Dataset with ``mask[language, layer, neuron]`` works, e.g. an imported LAPE mask file
        from :func:`~langneurons.analysis.identify.masks_from_lists`).
    language : str, optional
        None: the set is the selected neurons; a language: that language's mask.
    exact : bool or "auto"
        Binomial test; ``"auto"`` uses it when :math:`n_{10} + n_{01} < 25`.
    correction : bool
        Continuity correction of the asymptotic test.

    Returns
    -------
    xarray.Dataset
        ``table[in_a, in_b]`` (coords ``True``, ``False``), ``statistic`` (``min(n10, n01)``
        for the exact test, :math:`\chi^2` otherwise), ``pvalue``, ``n_a_only``, ``n_b_only``,
        ``n_both``, ``n_neither``; ``attrs`` record the set, ``exact`` (as used) and
        ``correction``. Without discordant neurons the statistic is 0 and p = 1.

    Raises
    ------
    ParameterError
        Bad inputs, different grids, or a language missing from either result.

    References
    ----------
    McNemar (1947), Psychometrika 12; Edwards (1948), Psychometrika 13.
    """
    if not (exact == "auto" or isinstance(exact, bool)):
        raise ParameterError(f"exact must be True, False or 'auto', got {exact!r}")
    if not isinstance(correction, bool):
        raise ParameterError(f"correction must be True or False, got {correction!r}")
    da, db = _pair(a, b, _membership_vars(language))
    xa, xb = _membership(da, language, "a"), _membership(db, language, "b")
    table = np.array(
        [[np.sum(xa & xb), np.sum(xa & ~xb)], [np.sum(~xa & xb), np.sum(~xa & ~xb)]],
        dtype=np.int64,
    )
    n10, n01 = int(table[0, 1]), int(table[1, 0])
    use_exact = (n10 + n01 < 25) if exact == "auto" else bool(exact)
    if n10 + n01 == 0:
        stat, p = 0.0, 1.0
    else:
        res = _sm_mcnemar(table, exact=use_exact, correction=correction)
        stat, p = float(res.statistic), float(res.pvalue)
    flag = ["True", "False"]
    return xr.Dataset(
        {
            "table": (("in_a", "in_b"), table),
            "statistic": ((), stat),
            "pvalue": ((), p),
            "n_a_only": ((), n10),
            "n_b_only": ((), n01),
            "n_both": ((), int(table[0, 0])),
            "n_neither": ((), int(table[1, 1])),
        },
        coords={"in_a": flag, "in_b": flag},
        attrs={
            "test": "McNemar",
            "set": "selected" if language is None else f"mask:{language}",
            "exact": use_exact,
            "exact_requested": exact,
            "correction": correction,
        },
    )


def cochran_q(
    results: Sequence[xr.Dataset],
    *,
    language: str | None = None,
    labels: Sequence[str] | None = None,
) -> xr.Dataset:
    r"""Cochran's Q test of per-neuron membership over an ordered series of checkpoints.

    With T checkpoints, :math:`x_{i,t} \in \{0, 1\}` the membership of neuron i at checkpoint
    t, column totals :math:`C_t`, row totals :math:`R_i` and :math:`N = \sum_t C_t`:

    .. math:: Q = (T - 1) \frac{T \sum_t C_t^2 - N^2}{T N - \sum_i R_i^2}

    is asymptotically :math:`\chi^2_{T-1}` under the null that the membership probability is
    the same at every checkpoint. Neurons with the same membership at every checkpoint do not
    change Q and are left out before calling
    :func:`statsmodels.stats.contingency_tables.cochrans_q`. For T = 2, Q is McNemar's
    statistic without continuity correction.

    Parameters
    ----------
    results : sequence of xarray.Dataset
        At least 2 identification results on the same grid, in checkpoint order (with
        ``language``, mask-only Datasets work too, as in :func:`mcnemar`).
    language : str, optional
        None: membership = selected; a language: that language's mask.
    labels : sequence of str, optional
        Checkpoint names (default "0", "1", ...).

    Returns
    -------
    xarray.Dataset
        ``statistic``, ``pvalue``, ``df``, ``n_discordant`` (neurons whose membership changes
        at least once), ``count[checkpoint]`` and ``proportion[checkpoint]``. Without
        discordant neurons Q is 0 and p = 1.

    References
    ----------
    Cochran (1950), "The comparison of percentages in matched samples", Biometrika 37.
    """
    loaded = _results_list(results, 2, _membership_vars(language))
    names = _labels(labels, len(loaded))
    x = np.stack([_membership(r, language, f"results[{i}]") for i, r in enumerate(loaded)], axis=1)
    t = x.shape[1]
    rows = x.sum(axis=1)
    discordant = (rows > 0) & (rows < t)
    n_disc = int(discordant.sum())
    if n_disc == 0:
        stat, p = 0.0, 1.0
    else:
        res = _sm_cochrans_q(x[discordant].astype(np.int64))
        stat, p = float(res.statistic), float(res.pvalue)
    count = x.sum(axis=0).astype(np.int64)
    return xr.Dataset(
        {
            "statistic": ((), stat),
            "pvalue": ((), p),
            "df": ((), t - 1),
            "n_discordant": ((), n_disc),
            "count": ((CHECKPOINT,), count),
            "proportion": ((CHECKPOINT,), count / x.shape[0]),
        },
        coords={CHECKPOINT: names},
        attrs={
            "test": "Cochran's Q",
            "set": "selected" if language is None else f"mask:{language}",
            "n_neurons": int(x.shape[0]),
        },
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
    loaded = _results_list(results, 1)
    names = _labels(labels, len(loaded))
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
