"""Neuron-type distributions over layers, and a test of whether two runs' distributions differ.

The layer x type table of an identification result (:func:`type_table`) is the layer-wise
distribution of language-specific, language-related, general and unassigned neurons
(``shared/spec/identification.md``, "Counts every result must expose"). This module compares
two such tables with a chi-square test of homogeneity (:func:`compare_type_distributions`).
Bootstrap intervals on the change between two runs are in
:mod:`~langneurons.analysis.distributions`, which re-exports these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons._type_codes import FLAG_MEANINGS, FLAG_VALUES, is_coded
from langneurons.analysis._validate import as_labels as _as_labels
from langneurons.analysis._validate import check_types, require_result, same_grid
from langneurons.errors import ParameterError
from langneurons.names import ALL_TYPES, EXPERT, LANGUAGE, LAYER, NEURON, TYPES

TYPE, RUN = "type", "run"


def type_counts(result: xr.Dataset, types: Sequence[str]) -> NDArray[np.int64]:
    """``[layer, type]`` counts of an in-memory identification result."""
    kind = _as_labels(result["neuron_type"].transpose(LAYER, NEURON))
    general = np.asarray(result["general"].transpose(LAYER, NEURON).values, dtype=bool)
    cols = [(general if t == "general" else kind == t).sum(axis=1) for t in types]
    return np.stack(cols, axis=1).astype(np.int64)


def neuron_types(result: xr.Dataset) -> NDArray[np.str_]:
    """``neuron_type`` flattened layer-major, as a numpy string array."""
    return _as_labels(result["neuron_type"].transpose(LAYER, NEURON)).reshape(-1)


def mask_rows(result: xr.Dataset, languages: Sequence[str]) -> NDArray[np.bool_]:
    """``mask`` rows ``[language, M]`` for these languages, layer-major."""
    mask = result["mask"].transpose(LANGUAGE, LAYER, NEURON).sel({LANGUAGE: list(languages)})
    return np.asarray(mask.values, dtype=bool).reshape(len(languages), -1)


# --------------------------------------------------------------------------- results in memory

#: The variables most comparisons of two identification results read.
RESULT_VARS: tuple[str, ...] = ("selected", "mask", "neuron_type", "general")


def load_result(result: object, name: str, variables: Sequence[str] = RESULT_VARS) -> xr.Dataset:
    """Validate an identification result and bring the needed variables into memory."""
    ds = require_result(result, name, variables)
    if EXPERT in ds.dims:
        # the layer null and the type tables count the neurons of a layer x neuron grid; a MoE
        # result's analysed units (padding and undefined cells left out) are not such a grid
        raise ParameterError(
            f"{name} is an identification of a mixture-of-experts run (it has an expert "
            "dimension); comparisons between identifications take dense runs only, so compare "
            "MoE runs' routing with `stats experts --compare` (docs/design/moe.md)"
        )
    return ds[list(variables)].compute().assign_attrs(ds.attrs)


def load_pair(
    a: object,
    b: object,
    variables: Sequence[str] = RESULT_VARS,
    names: tuple[str, str] = ("a", "b"),
) -> tuple[xr.Dataset, xr.Dataset]:
    """Two validated in-memory results on the same layer x neuron grid."""
    da, db = load_result(a, names[0], variables), load_result(b, names[1], variables)
    same_grid(da, db, names)
    return da, db


def load_series(
    results: object, minimum: int, variables: Sequence[str], name: str = "results"
) -> list[xr.Dataset]:
    """Validate a sequence of at least ``minimum`` results on one grid; return them in memory."""
    if isinstance(results, (str, xr.Dataset)) or not isinstance(results, Sequence):
        raise ParameterError(
            f"{name} must be a sequence of identification results, got {type(results).__name__}"
        )
    if len(results) < minimum:
        raise ParameterError(
            f"{name} must hold at least {minimum} identification results, got {len(results)}"
        )
    loaded = [load_result(r, f"{name}[{i}]", variables) for i, r in enumerate(results)]
    for i, r in enumerate(loaded[1:], start=1):
        same_grid(loaded[0], r, (f"{name}[0]", f"{name}[{i}]"))
    return loaded


def flat(arr: xr.DataArray) -> NDArray[Any]:
    """A ``[layer, neuron]`` variable flattened layer-major."""
    return np.asarray(arr.transpose(LAYER, NEURON).values).reshape(-1)


def check_language(language: object, available: Sequence[str], where: str) -> str:
    """Validate one language name."""
    if not isinstance(language, str) or language not in available:
        raise ParameterError(
            f"language {language!r} is not a language of {where} (languages: "
            f"{', '.join(available)})"
        )
    return language


def fixed_selection(results: Sequence[xr.Dataset]) -> str | None:
    """Why the selected sets of these results have one size by construction, or None.

    An identification selects ``round(L N top_rate)`` neurons, so results made with one
    ``top_rate`` on one grid select as many neurons each: a test of the selection's size
    (McNemar's discordant counts, Cochran's column totals) is then fixed, not measured.
    """
    rates = {repr(r.attrs.get("top_rate")) for r in results}
    sizes = {repr(r.attrs.get("n_selected")) for r in results}
    if len(rates) != 1 or len(sizes) != 1 or "None" in rates or "None" in sizes:
        return None
    return (
        f"every result selects round(L*N*top_rate) = {sizes.pop()} neurons (top_rate="
        f"{rates.pop()}), so the selection's size is equal by construction and its discordant "
        "counts always balance: not tested (the per-language and per-type membership tests "
        "can change)"
    )


def _is_type(neuron_type: xr.DataArray, name: str) -> xr.DataArray:
    """``neuron_type == name`` whatever the labels' dtype or coding (lazy when dask-backed)."""
    if is_coded(neuron_type.attrs, neuron_type.dtype):
        meanings = str(neuron_type.attrs[FLAG_MEANINGS]).split()
        values = np.asarray(neuron_type.attrs[FLAG_VALUES]).reshape(-1)
        if name not in meanings:
            return xr.zeros_like(neuron_type, dtype=np.bool_)
        return neuron_type == int(values[meanings.index(name)])
    return xr.apply_ufunc(
        lambda labels: _as_labels(labels) == name,
        neuron_type,
        dask="parallelized",
        output_dtypes=[np.bool_],
    )


def type_table(identification: xr.Dataset, *, types: Sequence[str] = TYPES) -> xr.DataArray:
    """Count neurons of each type in each layer.

    Parameters
    ----------
    identification : xarray.Dataset
        A result of :func:`~langneurons.analysis.identify.identify` (numpy- or dask-backed; a
        dask-backed result gives a lazy table).
    types : sequence of str
        Which types to count, among ``"specific"``, ``"related"``, ``"general"``,
        ``"unassigned"`` and ``"none"``. Default: the first four.

    Returns
    -------
    xarray.DataArray
        ``count[layer, type]`` (int64). ``specific``, ``related``, ``unassigned`` and ``none``
        count ``neuron_type``; ``general`` counts the ``general`` flag over **all** neurons
        (selected or not; :math:`P > \\tau` in every language), exactly as the result's
        ``attrs["per_layer"]``. The default four types are disjoint: specific, related and
        unassigned neurons are selected with fewer than K assigned languages, general ones are
        above :math:`\\tau` in all K.

    References
    ----------
    Zhang et al. (2025), the layer-wise distribution of language-specific, -related and general
    neurons; Tang et al. (2024), ACL.
    """
    types_ = check_types(types)
    ds = require_result(identification, "identification", ("neuron_type", "general"))
    cols = []
    for t in types_:
        flag = ds["general"].astype(bool) if t == "general" else _is_type(ds["neuron_type"], t)
        cols.append(flag.sum(NEURON, dtype=np.int64).rename(None))
    table = xr.concat(cols, dim=TYPE, coords="minimal", compat="override", join="exact")
    table = table.assign_coords({TYPE: list(types_)}).transpose(LAYER, TYPE)
    table.name = "count"
    table.attrs = {"method": str(ds.attrs["method"])} if "method" in ds.attrs else {}
    return table


def _as_table(obj: object, name: str, types: Sequence[str] | None) -> xr.DataArray:
    """A ``count[layer, type]`` table from an identification result or a table."""
    if isinstance(obj, xr.DataArray):
        if set(obj.dims) != {LAYER, TYPE}:
            raise ParameterError(
                f"{name} must be an identification result or a count[layer, type] table, got a "
                f"DataArray with dims {tuple(obj.dims)}"
            )
        table = obj.transpose(LAYER, TYPE)
        if types is not None:
            table = table.sel({TYPE: list(check_types(types))})
        return table.compute()
    ds = require_result(obj, name, ("neuron_type", "general"))
    return type_table(ds, types=TYPES if types is None else types).compute()


def _chi2_homogeneity(
    table: NDArray[np.float64],
) -> tuple[float, float, int, float, NDArray[np.float64], NDArray[np.float64], str]:
    """Chi-square test of a rows x cells table, dropping all-zero cells.

    Returns statistic, p, dof, Cramer's V, expected and adjusted residuals (NaN for dropped
    cells), and a note ("" when the test is defined).
    """
    import scipy.stats

    expected = np.full(table.shape, np.nan)
    resid = np.full(table.shape, np.nan)
    keep = table.sum(axis=0) > 0
    if (table.sum(axis=1) == 0).any():
        return math.nan, math.nan, 0, math.nan, expected, resid, "a run has no counted neurons"
    if keep.sum() < 2:
        note = "all counted neurons fall in one cell; the test is undefined"
        return math.nan, math.nan, 0, math.nan, expected, resid, note
    obs = table[:, keep]
    res = scipy.stats.chi2_contingency(obs, correction=False)
    exp = np.asarray(res.expected_freq, dtype=np.float64)
    n = obs.sum()
    rows = obs.sum(axis=1, keepdims=True) / n
    cols = obs.sum(axis=0, keepdims=True) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        adj = (obs - exp) / np.sqrt(exp * (1 - rows) * (1 - cols))
    expected[:, keep] = exp
    resid[:, keep] = adj
    r, c = obs.shape
    v = math.sqrt(float(res.statistic) / (n * (min(r, c) - 1)))
    return float(res.statistic), float(res.pvalue), int(res.dof), v, expected, resid, ""


def compare_type_distributions(
    base: xr.Dataset | xr.DataArray,
    aligned: xr.Dataset | xr.DataArray,
    *,
    types: Sequence[str] | None = None,
) -> xr.Dataset:
    r"""Chi-square test of homogeneity of the layer x type tables of two runs.

    The two ``count[layer, type]`` tables are flattened into a 2 x (L T) contingency table
    (rows: ``base``, ``aligned``; columns: the (layer, type) cells). Cells empty in both runs
    are dropped (their expected frequency is 0). With observed :math:`O_{ij}`, row totals
    :math:`R_i`, column totals :math:`C_j` and :math:`n = \sum O`:

    - expected :math:`E_{ij} = R_i C_j / n`; Pearson :math:`\chi^2 = \sum (O-E)^2/E` on
      :math:`(r-1)(c-1)` degrees of freedom (no continuity correction);
    - adjusted (standardised) residuals
      :math:`(O_{ij}-E_{ij}) / \sqrt{E_{ij}(1-R_i/n)(1-C_j/n)}` (Haberman 1973), roughly
      N(0, 1) under homogeneity: :math:`|r| > 2` marks the cells that differ;
    - Cramer's :math:`V = \sqrt{\chi^2 / (n (\min(r, c) - 1))}`.

    The same test is also run within each layer (2 x T tables), with Holm-adjusted p-values.

    Parameters
    ----------
    base, aligned : xarray.Dataset or xarray.DataArray
        Identification results (see :func:`type_table`) or ``count[layer, type]`` tables, on
        the same layers.
    types : sequence of str, optional
        Types to compare (default: specific, related, general, unassigned; for tables, all
        of their types).

    Returns
    -------
    xarray.Dataset
        ``count[run, layer, type]``, ``expected[run, layer, type]`` and
        ``residual[run, layer, type]`` (adjusted residuals; NaN for cells empty in both runs);
        scalars ``statistic``, ``pvalue``, ``dof``, ``cramers_v``, ``n``; per layer
        ``layer_statistic``, ``layer_pvalue``, ``layer_pvalue_holm``, ``layer_cramers_v``,
        ``layer_dof``. The test is undefined (NaN, with ``attrs["note"]``) when a run has no
        counted neurons or every counted neuron falls in one cell. ``attrs["inference"]`` is
        ``"descriptive"``: the statistic describes how far apart the tables are, its p-value is
        not a test of sampling noise (see :func:`type_change` for one).

    Raises
    ------
    ParameterError
        Inputs are not results/tables, or their layers or types differ.

    References
    ----------
    Pearson (1900); Haberman (1973), "The analysis of residuals in cross-classified tables",
    Biometrics 29; Cramer (1946), Mathematical Methods of Statistics.
    """
    from statsmodels.stats.multitest import multipletests

    tb = _as_table(base, "base", types)
    ta = _as_table(aligned, "aligned", types)
    if tb.sizes[LAYER] != ta.sizes[LAYER] or not np.array_equal(tb[LAYER].values, ta[LAYER].values):
        raise ParameterError(
            f"base and aligned must have the same layers; base has {tb.sizes[LAYER]}, aligned "
            f"has {ta.sizes[LAYER]} (or their layer coordinates differ)"
        )
    type_labels = _as_labels(tb[TYPE]).tolist()
    if type_labels != _as_labels(ta[TYPE]).tolist():
        raise ParameterError(
            f"base and aligned must count the same types; got {type_labels} and "
            f"{_as_labels(ta[TYPE]).tolist()}"
        )
    counts = np.stack([tb.values, ta.values]).astype(np.float64)  # [run, layer, type]
    n_layers, n_types = counts.shape[1:]
    stat, p, dof, v, exp, resid, note = _chi2_homogeneity(counts.reshape(2, -1))
    layer_stat = np.full(n_layers, np.nan)
    layer_p = np.full(n_layers, np.nan)
    layer_v = np.full(n_layers, np.nan)
    layer_dof = np.zeros(n_layers, dtype=np.int64)
    for i in range(n_layers):
        s, pv, d, vv, *_ = _chi2_homogeneity(counts[:, i, :])
        layer_stat[i], layer_p[i], layer_dof[i], layer_v[i] = s, pv, d, vv
    holm = np.full(n_layers, np.nan)
    defined = ~np.isnan(layer_p)
    if defined.any():
        holm[defined] = multipletests(layer_p[defined], method="holm")[1]
    dims3 = (RUN, LAYER, TYPE)
    attrs: dict[str, Any] = {
        "test": "chi-square test of homogeneity (Pearson, no continuity correction)",
        "residuals": "adjusted standardised residuals (Haberman 1973)",
        "types": type_labels,
        "n_cells_used": int((counts.reshape(2, -1).sum(axis=0) > 0).sum()),
        # the same neurons in both runs, counted under a fixed cap: the p-value does not
        # measure sampling noise (on fresh samples of one model it never rejected)
        "inference": "descriptive",
        "inference_reason": (
            "neurons are counted as independent draws, but both runs hold the same neurons "
            "and the top_rate cap fixes the total; for sampling noise use type_change "
            "(a bootstrap over items, and for paired runs its label-swap test, which respects "
            "the cap)"
        ),
    }
    if note:
        attrs["note"] = note
    return xr.Dataset(
        {
            "count": (dims3, counts.astype(np.int64)),
            "expected": (dims3, exp.reshape(2, n_layers, n_types)),
            "residual": (dims3, resid.reshape(2, n_layers, n_types)),
            "statistic": ((), stat),
            "pvalue": ((), p),
            "dof": ((), dof),
            "cramers_v": ((), v),
            "n": ((), int(counts.sum())),
            "layer_statistic": ((LAYER,), layer_stat),
            "layer_pvalue": ((LAYER,), layer_p),
            "layer_pvalue_holm": ((LAYER,), holm),
            "layer_cramers_v": ((LAYER,), layer_v),
            "layer_dof": ((LAYER,), layer_dof),
        },
        coords={RUN: ["base", "aligned"], LAYER: tb[LAYER].values, TYPE: type_labels},
        attrs=attrs,
    )


__all__ = [
    "TYPES",
    "ALL_TYPES",
    "type_counts",
    "neuron_types",
    "mask_rows",
    "RESULT_VARS",
    "load_result",
    "load_pair",
    "load_series",
    "flat",
    "check_language",
    "fixed_selection",
    "type_table",
    "compare_type_distributions",
]
