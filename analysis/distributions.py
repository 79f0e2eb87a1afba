"""Neuron-type distributions over layers, and how they change between two runs.

The layer x type table of an identification result (:func:`type_table`) is the layer-wise
distribution of language-specific, language-related, general and unassigned neurons
(``shared/spec/identification.md``, "Counts every result must expose"). This module compares
two such tables with a chi-square test of homogeneity (:func:`compare_type_distributions`) and
puts bootstrap intervals on the change between a base run and an aligned run
(:func:`type_change`, :func:`shared_by_change`) by resampling each run's sequences and
re-running :func:`langneurons.analysis.identify.identify` on every replicate.

It also holds the private resampling helpers shared by :mod:`~langneurons.analysis.compare` and
:mod:`~langneurons.analysis.stages`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats
import xarray as xr
from numpy.typing import NDArray
from statsmodels.stats.multitest import multipletests

from langneurons._progress import progress
from langneurons.analysis._validate import as_labels as _as_labels
from langneurons.analysis._validate import check_int as _check_int
from langneurons.analysis._validate import check_open_unit
from langneurons.errors import NoValidLambdaError, ParameterError

from .identify import STORED_ROLES, Method, identify

log = logging.getLogger(__name__)

LANGUAGE, ROLE, LAYER, NEURON, SEQUENCE = "language", "role", "layer", "neuron", "sequence"
TYPE, REPLICATE, RUN, N_SHARED = "type", "replicate", "run", "n_shared"

#: Neuron types counted per layer by :func:`type_table` (disjoint categories, see its docstring).
TYPES: tuple[str, ...] = ("specific", "related", "general", "unassigned")
#: Every type name :func:`type_table` accepts ("none": not selected).
ALL_TYPES: tuple[str, ...] = ("specific", "related", "general", "unassigned", "none")

_BLOCK = 1 << 22  # elements of per-sequence counts converted to float64 at once

RESAMPLING = (
    "sequences resampled with replacement within each language (stratified), each run "
    "independently; identify() re-run on every replicate"
)


# --------------------------------------------------------------------------- validation helpers


def _check_ci(ci: object) -> float:
    """Validate a confidence level in (0, 1)."""
    return check_open_unit("ci", ci)


def _check_seed(seed: object) -> int:
    """Validate a random seed (an integer >= 0, recorded with the result)."""
    return _check_int("seed", seed, 0)


def _jsonable(value: Any) -> Any:
    """``value`` with tuples as lists and numpy scalars as Python scalars (for attrs)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _require_result(obj: object, name: str, variables: Sequence[str]) -> xr.Dataset:
    """Return ``obj`` after checking it is an identification result with these variables."""
    if not isinstance(obj, xr.Dataset):
        raise ParameterError(
            f"{name} must be an identification result (the Dataset returned by identify()), "
            f"got {type(obj).__name__}"
        )
    missing = [v for v in variables if v not in obj.variables]
    if missing:
        raise ParameterError(
            f"{name} must be an identification result (the Dataset returned by identify()); "
            f"it lacks variables {missing}"
        )
    return obj


def _same_grid(a: xr.Dataset, b: xr.Dataset, names: tuple[str, str]) -> None:
    """Raise ParameterError unless ``a`` and ``b`` have the same layer x neuron grid."""
    na, nb = names
    shape_a = (a.sizes.get(LAYER, 0), a.sizes.get(NEURON, 0))
    shape_b = (b.sizes.get(LAYER, 0), b.sizes.get(NEURON, 0))
    if shape_a != shape_b:
        raise ParameterError(
            f"{na} and {nb} must have the same layer x neuron shape; {na} has "
            f"{shape_a[0]} x {shape_a[1]}, {nb} has {shape_b[0]} x {shape_b[1]}"
        )
    for dim in (LAYER, NEURON):
        if dim in a.coords and dim in b.coords:
            if not np.array_equal(np.asarray(a[dim].values), np.asarray(b[dim].values)):
                raise ParameterError(
                    f"{na} and {nb} must cover the same {dim}s; their {dim} coordinates differ"
                )


def _languages(ds: xr.Dataset) -> list[str]:
    """Language labels of a run or result, in order."""
    return _as_labels(ds[LANGUAGE]).tolist() if LANGUAGE in ds.coords else []


def _same_languages(a: xr.Dataset, b: xr.Dataset, names: tuple[str, str]) -> None:
    """Raise ParameterError unless ``a`` and ``b`` hold the same set of languages."""
    la, lb = _languages(a), _languages(b)
    if set(la) != set(lb):
        only_a = [x for x in la if x not in lb]
        only_b = [x for x in lb if x not in la]
        raise ParameterError(
            f"{names[0]} and {names[1]} must have the same languages; only in {names[0]}: "
            f"{only_a}, only in {names[1]}: {only_b}"
        )


def _check_runs(base: object, aligned: object) -> tuple[xr.Dataset, xr.Dataset]:
    """Validate a (base, aligned) pair of runs: Datasets on one grid with the same languages."""
    for name, run in (("base_run", base), ("aligned_run", aligned)):
        if not isinstance(run, xr.Dataset):
            raise ParameterError(
                f"{name} must be an xarray.Dataset (a run), got {type(run).__name__}"
            )
    assert isinstance(base, xr.Dataset) and isinstance(aligned, xr.Dataset)
    _same_grid(base, aligned, ("base_run", "aligned_run"))
    _same_languages(base, aligned, ("base_run", "aligned_run"))
    return base, aligned


# --------------------------------------------------------------------------- bootstrap helpers


def _interval(boot: NDArray[np.float64], ci: float) -> tuple[NDArray[Any], NDArray[Any]]:
    """Percentile interval over axis 0, ignoring failed (NaN) replicates; NaN when none."""
    shape = boot.shape[1:]
    valid = ~np.isnan(boot).all(axis=0) if boot.shape[0] else np.zeros(shape, dtype=bool)
    low = np.full(shape, np.nan)
    high = np.full(shape, np.nan)
    if valid.any():
        q = np.nanpercentile(boot[:, valid], [50 * (1 - ci), 50 * (1 + ci)], axis=0)
        low[valid], high[valid] = q[0], q[1]
    return low, high


def _centred_pvalue(boot: NDArray[np.float64], point: NDArray[Any]) -> NDArray[np.float64]:
    """Two-sided bootstrap p-value of ``point == 0`` by centring (Hall & Wilson 1991).

    ``p = (1 + #{|t*_b - t| >= |t|}) / (1 + B)`` over the B valid replicates; NaN when B = 0.
    """
    point = np.asarray(point, dtype=np.float64)
    ok = ~np.isnan(boot)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore"):
        extreme = ((np.abs(boot - point) >= np.abs(point) - 1e-12) & ok).sum(axis=0)
    return np.where(n > 0, (1.0 + extreme) / (1.0 + n), np.nan)


def _se(boot: NDArray[np.float64]) -> NDArray[np.float64]:
    """Bootstrap standard error (sample SD over valid replicates); NaN with fewer than 2."""
    ok = ~np.isnan(boot)
    n = ok.sum(axis=0)
    filled = np.where(ok, boot, 0.0)
    mean = filled.sum(axis=0) / np.maximum(n, 1)
    ss = (np.where(ok, boot - mean, 0.0) ** 2).sum(axis=0)
    return np.where(n > 1, np.sqrt(ss / np.maximum(n - 1, 1)), np.nan)


def _weighted_rows(weights: NDArray[np.float64], rows: NDArray[Any]) -> NDArray[np.float64]:
    """``weights @ rows`` in float64 (exact for integer counts), converting blocks of columns."""
    n, f = rows.shape
    out = np.empty(f, dtype=np.float64)
    step = max(1, _BLOCK // max(n, 1))
    for start in range(0, f, step):
        out[start : start + step] = weights @ rows[:, start : start + step].astype(np.float64)
    return out


class _SequenceBootstrap:
    """Resample a run's sequences within each language and rebuild its additive counts.

    The per-sequence counts of the needed roles are loaded into memory once (in their stored
    integer dtype); each replicate draws, for every language with ``n_k`` sequences, ``n_k``
    sequences with replacement and sums their counts (``n_active`` and ``n_tokens``).
    """

    def __init__(self, run: xr.Dataset, name: str, roles: Sequence[str]) -> None:
        missing = [v for v in ("seq_n_active", "seq_n_tokens") if v not in run.variables]
        if missing or "seq_language" not in run.variables:
            raise ParameterError(
                f"{name} has no per-sequence counts (seq_n_active, seq_n_tokens, seq_language), "
                f"so its sequences cannot be resampled for the bootstrap; record them at "
                f"extraction (create_run(..., sequences=True)) or pass n_boot=0 for point "
                f"estimates only"
            )
        self.languages = _languages(run)
        self.roles = list(roles)
        stored = _as_labels(run[ROLE]).tolist()
        absent = [r for r in self.roles if r not in stored]
        if absent:
            raise ParameterError(f"{name} has no role {absent[0]!r} (roles: {stored})")
        seq_language = _as_labels(run["seq_language"])
        groups = [np.flatnonzero(seq_language == lang) for lang in self.languages]
        empty = [lang for lang, g in zip(self.languages, groups, strict=True) if g.size == 0]
        if empty:
            raise ParameterError(
                f"{name} has no per-sequence counts for language {empty[0]!r}, so it cannot be "
                f"resampled; every language needs at least one recorded sequence"
            )
        order = np.concatenate(groups)
        self.offsets = np.cumsum([0] + [g.size for g in groups])
        seq = (
            run[["seq_n_active", "seq_n_tokens"]]
            .sel({ROLE: self.roles})
            .isel({SEQUENCE: order})
            .compute()
        )
        active = np.asarray(seq["seq_n_active"].transpose(SEQUENCE, ROLE, LAYER, NEURON).values)
        self.shape = active.shape[1:]
        self.active = active.reshape(active.shape[0], -1)
        self.tokens = np.asarray(seq["seq_n_tokens"].transpose(SEQUENCE, ROLE).values)
        self.coords = {
            LANGUAGE: np.asarray(self.languages),
            ROLE: np.asarray(self.roles),
            LAYER: run[LAYER].values,
            NEURON: run[NEURON].values,
        }
        totals = self._counts([np.ones(g.size) for g in groups])
        stored_totals = (
            run["n_active"].sel({ROLE: self.roles}).transpose(LANGUAGE, ROLE, LAYER, NEURON)
        )
        if not np.array_equal(totals["n_active"].values, np.asarray(stored_totals.values)):
            log.warning(
                "%s: per-sequence counts do not sum to n_active; bootstrap replicates resample "
                "the recorded sequences only",
                name,
            )

    def _counts(self, weights: Sequence[NDArray[np.float64]]) -> xr.Dataset:
        """The run's counts with sequence i of language k counted ``weights[k][i]`` times."""
        k = len(self.languages)
        active = np.empty((k, self.active.shape[1]), dtype=np.float64)
        tokens = np.empty((k, self.tokens.shape[1]), dtype=np.float64)
        for i, w in enumerate(weights):
            lo, hi = self.offsets[i], self.offsets[i + 1]
            used = np.flatnonzero(w)
            active[i] = _weighted_rows(w[used], self.active[lo:hi][used])
            tokens[i] = w[used] @ self.tokens[lo:hi][used].astype(np.float64)
        return xr.Dataset(
            {
                "n_active": (
                    (LANGUAGE, ROLE, LAYER, NEURON),
                    np.rint(active).astype(np.int64).reshape((k, *self.shape)),
                ),
                "n_tokens": ((LANGUAGE, ROLE), np.rint(tokens).astype(np.int64)),
            },
            coords=self.coords,
        )

    def sample(self, rng: np.random.Generator) -> xr.Dataset:
        """One bootstrap replicate of the run (counts only)."""
        weights = []
        for i in range(len(self.languages)):
            n = int(self.offsets[i + 1] - self.offsets[i])
            weights.append(np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64))
        return self._counts(weights)


def _roles_for(identify_kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The stored roles an identification with these arguments reads."""
    role = identify_kwargs.get("role", "response")
    return STORED_ROLES if role == "all" else (str(role),)


def _bootstrap(
    run: xr.Dataset,
    *,
    name: str,
    n_boot: int,
    rng: np.random.Generator,
    method: Method,
    identify_kwargs: Mapping[str, Any],
    statistic: Callable[[xr.Dataset], NDArray[Any]],
    shape: tuple[int, ...],
) -> tuple[NDArray[np.float64], int]:
    """``statistic(identify(replicate))`` for ``n_boot`` resampled replicates of ``run``.

    Returns the replicates ``[n_boot, *shape]`` (NaN where identification found no valid lambda)
    and the number of such failed replicates.
    """
    out = np.full((n_boot, *shape), np.nan)
    if n_boot == 0:
        return out, 0
    sampler = _SequenceBootstrap(run, name, _roles_for(identify_kwargs))
    failed = 0
    with progress(f"bootstrap {name}", total=n_boot, unit="replicate") as task:
        for b in range(n_boot):
            replicate = sampler.sample(rng)
            task.update()
            try:
                result = identify(replicate, method, **identify_kwargs)
            except NoValidLambdaError:
                failed += 1
                continue
            out[b] = statistic(result)
    if failed:
        log.info("%s: %d of %d bootstrap replicates found no valid lambda", name, failed, n_boot)
    if failed == n_boot:
        raise NoValidLambdaError(
            f"identification found no valid lambda in any of the {n_boot} bootstrap replicates "
            f"of {name}; widen lam_range or lower top_rate"
        )
    return out, failed


def _bootstrap_pair(
    base_run: xr.Dataset,
    aligned_run: xr.Dataset,
    n_boot: int,
    rngs: tuple[np.random.Generator, np.random.Generator],
    method: Method,
    identify_kwargs: Mapping[str, Any],
    statistic: Callable[[xr.Dataset], NDArray[Any]],
    shape: tuple[int, ...],
) -> tuple[NDArray[np.float64], int, NDArray[np.float64], int]:
    """:func:`_bootstrap` of a base run and an aligned run, each with its own generator."""
    out: list[Any] = []
    for run, name, rng in ((base_run, "base_run", rngs[0]), (aligned_run, "aligned_run", rngs[1])):
        boot, failed = _bootstrap(
            run,
            name=name,
            n_boot=n_boot,
            rng=rng,
            method=method,
            identify_kwargs=identify_kwargs,
            statistic=statistic,
            shape=shape,
        )
        out += [boot, failed]
    return out[0], out[1], out[2], out[3]


def _spawn(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators from one recorded seed."""
    return list(np.random.default_rng(seed).spawn(n))


def _identification_attrs(result: xr.Dataset, prefix: str) -> dict[str, Any]:
    """tau and lambda of one identification, keyed with a prefix (lambda omitted for LAPE)."""
    out: dict[str, Any] = {f"{prefix}_tau": float(result.attrs["tau"])}
    if "lambda" in result.attrs:
        out[f"{prefix}_lambda"] = float(result.attrs["lambda"])
    return out


# --------------------------------------------------------------------------- type tables


def _check_types(types: object) -> tuple[str, ...]:
    """Validate a sequence of distinct type names."""
    if isinstance(types, str) or not isinstance(types, Sequence) or not types:
        raise ParameterError(f"types must be a non-empty sequence of type names, got {types!r}")
    out = tuple(types)
    bad = [t for t in out if t not in ALL_TYPES]
    if bad or len(set(out)) != len(out):
        allowed = ", ".join(repr(t) for t in ALL_TYPES)
        raise ParameterError(f"types must be distinct names among {allowed}, got {list(out)!r}")
    return out


def _type_counts(result: xr.Dataset, types: Sequence[str]) -> NDArray[np.int64]:
    """``[layer, type]`` counts of an in-memory identification result."""
    kind = _as_labels(result["neuron_type"].transpose(LAYER, NEURON))
    general = np.asarray(result["general"].transpose(LAYER, NEURON).values, dtype=bool)
    cols = [(general if t == "general" else kind == t).sum(axis=1) for t in types]
    return np.stack(cols, axis=1).astype(np.int64)


def _is_type(neuron_type: xr.DataArray, name: str) -> xr.DataArray:
    """``neuron_type == name`` whatever the labels' string dtype (lazy when dask-backed)."""
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
    types_ = _check_types(types)
    ds = _require_result(identification, "identification", ("neuron_type", "general"))
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
            table = table.sel({TYPE: list(_check_types(types))})
        return table.compute()
    ds = _require_result(obj, name, ("neuron_type", "general"))
    return type_table(ds, types=TYPES if types is None else types).compute()


def _chi2_homogeneity(
    table: NDArray[np.float64],
) -> tuple[float, float, int, float, NDArray[np.float64], NDArray[np.float64], str]:
    """Chi-square test of a rows x cells table, dropping all-zero cells.

    Returns statistic, p, dof, Cramer's V, expected and adjusted residuals (NaN for dropped
    cells), and a note ("" when the test is defined).
    """
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
        counted neurons or every counted neuron falls in one cell.

    Raises
    ------
    ParameterError
        Inputs are not results/tables, or their layers or types differ.

    References
    ----------
    Pearson (1900); Haberman (1973), "The analysis of residuals in cross-classified tables",
    Biometrics 29; Cramer (1946), Mathematical Methods of Statistics.
    """
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


# --------------------------------------------------------------------------- bootstrap changes


def _common_attrs(
    method: str, n_boot: int, seed: int, ci: float, identify_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Parameters every two-run bootstrap result records."""
    return {
        "method": method,
        "identify_kwargs": _jsonable(dict(identify_kwargs)),
        "n_boot": n_boot,
        "seed": seed,
        "ci": ci,
        "interval": "percentile",
        "resampling": RESAMPLING,
    }


def type_change(
    base_run: xr.Dataset,
    aligned_run: xr.Dataset,
    method: Method = "ternary",
    *,
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    types: Sequence[str] = TYPES,
    **identify_kwargs: Any,
) -> xr.Dataset:
    r"""Per-layer change of each neuron type from a base run to an aligned run, with intervals.

    :math:`\Delta_{l,t} = c^{aligned}_{l,t} - c^{base}_{l,t}` where :math:`c_{l,t}` is the
    :func:`type_table` count of type ``t`` in layer ``l`` of
    ``identify(run, method, **identify_kwargs)``.

    Uncertainty comes from the sequences: each bootstrap replicate resamples, independently
    for each run and within each language, as many sequences as the language has (with
    replacement), sums their per-sequence counts into ``n_active`` / ``n_tokens``, re-runs the
    whole identification (tau, lambda, selection) and recomputes :math:`\Delta`. Intervals are
    bootstrap percentiles (Efron & Tibshirani 1993); p-values of :math:`\Delta = 0` are
    two-sided by centring the bootstrap distribution (Hall & Wilson 1991), uncorrected for
    multiple testing.

    Parameters
    ----------
    base_run, aligned_run : xarray.Dataset
        Runs (numpy- or dask-backed) with the same layer x neuron shape and languages. With
        ``n_boot > 0`` both need per-sequence counts (``seq_n_active``, ``seq_n_tokens``,
        ``seq_language``).
    method : {"ternary", "lape"}
        Identification rule.
    n_boot : int >= 0
        Bootstrap replicates per run (0: point estimates, intervals NaN).
    seed : int >= 0
        Seed of the resampling; the two runs use independent streams spawned from it.
    ci : float in (0, 1)
        Level of the percentile intervals.
    types : sequence of str
        Types to count (see :func:`type_table`).
    **identify_kwargs
        Passed to :func:`~langneurons.analysis.identify.identify` (``role``, ``top_rate``,
        ``bar``, ``lam``, ...) for the point estimate and every replicate.

    Returns
    -------
    xarray.Dataset
        ``base``, ``aligned``, ``change`` (``[layer, type]``, int64), ``change_low``,
        ``change_high``, ``change_se``, ``change_pvalue`` (``[layer, type]``),
        ``boot_change[replicate, layer, type]`` (NaN for replicates where identification found
        no valid lambda), and over all layers ``total_base``, ``total_aligned``,
        ``total_change``, ``total_change_low``, ``total_change_high`` (``[type]``). ``attrs``
        record the method, ``identify_kwargs``, ``n_boot``, ``seed``, ``ci``, the failed
        replicate counts and each run's tau / lambda.

    Raises
    ------
    ParameterError
        Bad parameters, runs of different shapes or languages, or ``n_boot > 0`` without
        per-sequence counts.
    NoValidLambdaError
        The point identification, or every replicate of a run, finds no valid lambda.

    Notes
    -----
    The per-sequence counts of the roles the identification reads are loaded into memory once
    per run, in their stored dtype (S sequences x L x N values; e.g. 2 GB for 4,000 uint16
    sequences of a 32 x 14336 model); each replicate costs one weighted sum over them plus one
    identification. With ``lam="auto"`` every replicate re-searches lambda, so the intervals
    include the uncertainty of that choice; replicates where no lambda is valid are NaN and
    counted in ``attrs``. If the per-sequence counts do not sum to ``n_active`` (sequences
    recorded for part of the corpus only), a warning is logged: the replicates then resample
    the recorded sequences only.

    References
    ----------
    Efron & Tibshirani (1993), An Introduction to the Bootstrap; Hall & Wilson (1991), "Two
    guidelines for bootstrap hypothesis testing", Biometrics 47.
    """
    base_run, aligned_run = _check_runs(base_run, aligned_run)
    n_boot = _check_int("n_boot", n_boot, 0)
    seed = _check_seed(seed)
    ci = _check_ci(ci)
    types_ = _check_types(types)
    res_b = identify(base_run, method, **identify_kwargs)
    res_a = identify(aligned_run, method, **identify_kwargs)
    cb, ca = _type_counts(res_b, types_), _type_counts(res_a, types_)
    change = ca - cb
    shape = change.shape
    rng_b, rng_a = _spawn(seed, 2)

    def stat(result: xr.Dataset) -> NDArray[np.int64]:
        return _type_counts(result, types_)

    boot_b, fail_b, boot_a, fail_a = _bootstrap_pair(
        base_run, aligned_run, n_boot, (rng_b, rng_a), method, identify_kwargs, stat, shape
    )
    boot = boot_a - boot_b
    low, high = _interval(boot, ci)
    total_boot = boot.sum(axis=1)
    total_low, total_high = _interval(total_boot, ci)
    lt = (LAYER, TYPE)
    attrs = _common_attrs(str(res_b.attrs["method"]), n_boot, seed, ci, identify_kwargs)
    attrs.update(
        n_failed_base=fail_b,
        n_failed_aligned=fail_a,
        types=list(types_),
        pvalue="two-sided bootstrap p-value of change == 0 by centring, uncorrected",
        **_identification_attrs(res_b, "base"),
        **_identification_attrs(res_a, "aligned"),
    )
    return xr.Dataset(
        {
            "base": (lt, cb),
            "aligned": (lt, ca),
            "change": (lt, change),
            "change_low": (lt, low),
            "change_high": (lt, high),
            "change_se": (lt, _se(boot)),
            "change_pvalue": (lt, _centred_pvalue(boot, change)),
            "boot_change": ((REPLICATE, LAYER, TYPE), boot),
            "total_base": ((TYPE,), cb.sum(axis=0)),
            "total_aligned": ((TYPE,), ca.sum(axis=0)),
            "total_change": ((TYPE,), change.sum(axis=0)),
            "total_change_low": ((TYPE,), total_low),
            "total_change_high": ((TYPE,), total_high),
        },
        coords={
            LAYER: base_run[LAYER].values,
            TYPE: list(types_),
            REPLICATE: np.arange(n_boot),
        },
        attrs=attrs,
    )


def _shared_hist(result: xr.Dataset, k: int) -> NDArray[np.int64]:
    """Histogram over all neurons of the number of languages above tau (bins 0..K)."""
    shared = np.asarray(result["shared_by"].values).reshape(-1).astype(np.int64)
    return np.bincount(shared, minlength=k + 1)[: k + 1].astype(np.int64)


def shared_by_change(
    base_run: xr.Dataset,
    aligned_run: xr.Dataset,
    method: Method = "ternary",
    *,
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    **identify_kwargs: Any,
) -> xr.Dataset:
    r"""Change of the shared-by-N histogram from a base run to an aligned run.

    For each run, :math:`h_N` counts the neurons (all of them, selected or not) that are above
    :math:`\tau` in exactly N languages (N = 0..K), and :math:`f_N = h_N / M` with M = L x N
    neurons. The change is :math:`\Delta_N = f^{aligned}_N - f^{base}_N`, summarised by

    the total variation distance :math:`T = \frac12 \sum_N |\Delta_N|`. (The mean number of
    languages per neuron, :math:`\sum_N N f_N`, is not compared: it counts the probabilities
    above the quantile :math:`\tau`, which is fixed at about :math:`(1 - \text{bar}) K` by
    construction.)

    Intervals are bootstrap percentiles over sequences resampled within each language of each
    run independently, with identification re-run per replicate (see :func:`type_change`).
    p-values are two-sided bootstrap tests by centring (Hall & Wilson 1991): for the histogram,
    :math:`p = (1 + \#\{T^*_b \ge T\}) / (1 + B)` with
    :math:`T^*_b = \frac12 \sum_N |\Delta^*_{b,N} - \Delta_N|`; per bin,
    :math:`p = (1 + \#\{|\Delta^*_b - \Delta| \ge |\Delta|\}) / (1 + B)`.

    Parameters
    ----------
    base_run, aligned_run : xarray.Dataset
        Runs with the same layer x neuron shape and languages (per-sequence counts needed when
        ``n_boot > 0``).
    method : {"ternary", "lape"}
        Identification rule (``shared_by`` depends only on ``bar``, but tau is recomputed
        exactly as the rule does).
    n_boot, seed, ci, **identify_kwargs
        As in :func:`type_change`.

    Returns
    -------
    xarray.Dataset
        On ``n_shared`` = 0..K: ``base``, ``aligned`` (counts), ``base_fraction``,
        ``aligned_fraction``, ``change`` (fraction), ``change_low``, ``change_high``,
        ``change_pvalue``; ``boot_change[replicate, n_shared]``; scalars ``tvd`` and
        ``tvd_pvalue``. ``attrs`` as in :func:`type_change`.

    References
    ----------
    Hall & Wilson (1991), Biometrics 47; Efron & Tibshirani (1993).
    """
    base_run, aligned_run = _check_runs(base_run, aligned_run)
    n_boot = _check_int("n_boot", n_boot, 0)
    seed = _check_seed(seed)
    ci = _check_ci(ci)
    k = len(_languages(base_run))
    m = base_run.sizes[LAYER] * base_run.sizes[NEURON]
    res_b = identify(base_run, method, **identify_kwargs)
    res_a = identify(aligned_run, method, **identify_kwargs)
    hb, ha = _shared_hist(res_b, k), _shared_hist(res_a, k)
    fb, fa = hb / m, ha / m
    change = fa - fb
    bins = np.arange(k + 1)
    rng_b, rng_a = _spawn(seed, 2)

    def stat(result: xr.Dataset) -> NDArray[np.float64]:
        return _shared_hist(result, k) / m

    boot_b, fail_b, boot_a, fail_a = _bootstrap_pair(
        base_run, aligned_run, n_boot, (rng_b, rng_a), method, identify_kwargs, stat, (k + 1,)
    )
    boot = boot_a - boot_b
    low, high = _interval(boot, ci)
    tvd = 0.5 * float(np.abs(change).sum())
    ok = ~np.isnan(boot).any(axis=1)
    tvd_star = 0.5 * np.abs(boot[ok] - change).sum(axis=1)
    tvd_p = (
        (1.0 + float((tvd_star >= tvd - 1e-12).sum())) / (1.0 + ok.sum()) if ok.any() else math.nan
    )
    attrs = _common_attrs(str(res_b.attrs["method"]), n_boot, seed, ci, identify_kwargs)
    attrs.update(
        n_failed_base=fail_b,
        n_failed_aligned=fail_a,
        n_neurons=m,
        statistic="total variation distance between the shared-by-N fractions",
        pvalue="two-sided bootstrap p-values by centring (Hall & Wilson 1991), uncorrected",
        **_identification_attrs(res_b, "base"),
        **_identification_attrs(res_a, "aligned"),
    )
    return xr.Dataset(
        {
            "base": ((N_SHARED,), hb),
            "aligned": ((N_SHARED,), ha),
            "base_fraction": ((N_SHARED,), fb),
            "aligned_fraction": ((N_SHARED,), fa),
            "change": ((N_SHARED,), change),
            "change_low": ((N_SHARED,), low),
            "change_high": ((N_SHARED,), high),
            "change_pvalue": ((N_SHARED,), _centred_pvalue(boot, change)),
            "boot_change": ((REPLICATE, N_SHARED), boot),
            "tvd": ((), tvd),
            "tvd_pvalue": ((), tvd_p),
        },
        coords={N_SHARED: bins, REPLICATE: np.arange(n_boot)},
        attrs=attrs,
    )


__all__ = [
    "TYPES",
    "type_table",
    "compare_type_distributions",
    "type_change",
    "shared_by_change",
]
