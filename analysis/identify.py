"""Identify language neurons from a run's activation counts.

Two rules, both exactly as defined in ``shared/spec/identification.md``:

- ``"ternary"``: entropy minus a lambda-weighted activation term, with an automatic lambda
  (Zhang et al. 2025).
- ``"lape"``: language activation probability entropy, the baseline (Tang et al. 2024,
  "Language-Specific Neurons: The Key to Multilingual Capabilities in Large Language Models").

The public functions take and return xarray objects with named dimensions; the arithmetic lives
in :mod:`langneurons.analysis._kernels`. :func:`identify` also takes a
:class:`~langneurons.plain.PlainDataset` (numpy arrays with dims) and then returns one, with
exactly the content it returns for the same run as an :class:`xarray.Dataset` (one code path:
the rules compute on numpy either way, only the final wrapping differs). This module imports
xarray only on the xarray paths, so the command line's ``identify`` can run without importing
xarray, pandas or dask (about half a second of its start-up).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import numpy as np
from numpy.typing import NDArray

from langneurons.analysis._validate import as_labels as _as_labels
from langneurons.analysis._validate import (
    check_tokens,
    checked_role_sums,
    coordinate,
    coordinate_values,
    is_dataset,
    require_roles,
    require_variable,
    run_languages,
    stored_roles,
)
from langneurons.errors import (
    LambdaAtBoundWarning,
    LangneuronsWarning,
    NoValidLambdaError,
    ParameterError,
)
from langneurons.names import EXPERT, LANGUAGE, LAYER, N_ACTIVE, N_TOKENS, NEURON, ROLE
from langneurons.plain import PlainDataset, PlainVariable

from . import _kernels as kern
from .masks import masks_from_lists, masks_to_lists
from .moe import RuleOutcome, identify_experts
from .params import DEFAULTS, IdentifyParams, Method, lambda_bound_message, params_of

if TYPE_CHECKING:
    import xarray as xr

Role = Literal["response", "prompt", "all"]

#: Keys of :func:`summary`, in order.
SUMMARY_KEYS: tuple[str, ...] = (
    "method",
    "lambda",
    "tau",
    "selected",
    "appear",
    "per_language",
    "per_layer",
    "shared_by_n",
)

# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Inputs:
    """Activation probabilities ``[language, layer, neuron]`` and their coordinates."""

    p: NDArray[np.float64]  # dims (language, layer, neuron)
    languages: list[str]
    #: the result's coordinates: language labels (``<U``), layer and neuron values
    coords: dict[str, NDArray[Any]] = field(default_factory=dict)


def _probabilities(given: object, role: str) -> _Inputs:
    """Validate the run (a Dataset or a PlainDataset) and return ``P = n_active / n_tokens``
    for the role, in memory."""
    if not (isinstance(given, PlainDataset) or is_dataset(given)):
        raise ParameterError(f"run must be an xarray.Dataset, got {type(given).__name__}")
    run = cast("xr.Dataset | PlainDataset", given)
    require_variable(run, N_ACTIVE, (LANGUAGE, ROLE, LAYER, NEURON))
    require_variable(run, N_TOKENS, (LANGUAGE, ROLE))
    languages = run_languages(run)
    labels = _as_labels(coordinate(run, LANGUAGE))
    if not languages:
        raise ParameterError(
            "the run has no languages (its language dimension is empty); "
            "identification needs at least 2"
        )
    if len(languages) < 2:
        raise ParameterError(
            f"identification needs at least 2 languages, the run has 1 ({languages[0]!r})"
        )
    if run.sizes[LAYER] * run.sizes[NEURON] == 0:
        raise ParameterError(
            f"the run has no neurons (layer={run.sizes[LAYER]}, neuron={run.sizes[NEURON]})"
        )
    roles = stored_roles(role)
    require_roles(run, roles)
    n_active, n_tokens = checked_role_sums(run, languages, roles)
    check_tokens(n_tokens, languages, roles)
    p = np.divide(n_active, n_tokens[:, None, None], dtype=np.float64)
    coords = {
        LANGUAGE: labels,
        LAYER: coordinate_values(run, LAYER),
        NEURON: coordinate_values(run, NEURON),
    }
    return _Inputs(p, languages, coords)


def _over_language(
    func: Callable[..., Any], p: NDArray[np.float64], *args: Any, n_out: int = 1
) -> tuple[NDArray[Any], ...]:
    """Apply a per-neuron kernel to ``p[language, layer, neuron]`` over the language axis.

    The kernels take the language last: they get the view ``p[layer, neuron, language]``, as
    ``xr.apply_ufunc`` with the language as core dimension gives it, and return ``[layer,
    neuron]`` arrays (``n_out`` of them).
    """
    out = func(np.moveaxis(p, 0, -1), *args)
    results = out if isinstance(out, tuple) else (out,)
    if len(results) != n_out:
        raise AssertionError(f"{func.__name__} returned {len(results)} arrays, not {n_out}")
    return tuple(np.asarray(r) for r in results)


def _tau(p: NDArray[np.float64], rates: Sequence[tuple[str, float]]) -> list[float]:
    """``tau(q)`` for each named rate, with a ParameterError when a rank rounds to 0."""
    m = int(p.size)
    for param, q in rates:
        rank = kern.quantile_rank(m, q)
        if rank < 1:
            raise ParameterError(
                f"{param}={q!r} puts tau at rank round({m} * {q!r}) = 0 of the {m} activation "
                f"probabilities, which is undefined; use {param} > {0.5 / m!r}"
            )
    return kern.quantile_thresholds(p, [q for _, q in rates])


# --------------------------------------------------------------------------- rules


@dataclass
class _Selection:
    """What a rule decides: the score, the selection, tau and its own attributes."""

    score: NDArray[np.float64]  # [layer, neuron]
    selected: NDArray[np.bool_]  # [layer, neuron]
    tau: float
    shared_by: NDArray[np.int64]  # [layer, neuron]: languages with P > tau
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Saved:
    """What a saved identification gives a re-selection: its score ``[layer, neuron]``."""

    score: NDArray[np.float64]


def _n_top(n_neurons: int, top_rate: float) -> int:
    """``round(L*N*top_rate)``, the number of neurons a rule selects."""
    return round(n_neurons * top_rate)


def _ternary(inputs: _Inputs, params: IdentifyParams, saved: _Saved | None) -> _Selection:
    """Rule 1 (Zhang et al. 2025): ternary score with entropy and lambda."""
    p = inputs.p
    k_lang = len(inputs.languages)
    (tau,) = _tau(p, [("bar", params.bar)])
    h, maxp, shared_by = _over_language(kern.ternary_fused, p, tau, n_out=3)
    normaliser = kern.norm_max(k_lang)
    k = _n_top(h.size, params.top_rate)
    trace: list[tuple[float, bool]] = []
    bound: dict[str, Any] = {}
    if params.auto_lambda:
        lo, hi = params.lam_range
        holds = kern.lambda_condition(h, maxp, shared_by == k_lang, k, normaliser)
        # lam_widen: while the condition still holds at the top of the range, double the top
        # (the spec's search on the range the user gave is kept when lam_widen is 0)
        widened = 0
        while widened < params.lam_widen and hi > 0 and holds(hi):
            hi, widened = hi * 2, widened + 1
        best, trace = kern.search_lambda(holds, lo, hi, params.eps)
        # the condition held at the top of the range searched (the spec evaluates it second):
        # the largest lambda may lie above the range
        at_bound = best is not None and len(trace) > 1 and trace[1] == (hi, True)
        bound = {
            "lam_widen": params.lam_widen,
            "lambda_widened": widened,
            "lam_range_searched": [float(lo), float(hi)],
            "lambda_at_bound": bool(at_bound),
        }
        if best is None:
            raise NoValidLambdaError(
                f"no lambda in [{lo!r}, {hi!r}] (eps {params.eps!r}) leaves every selected "
                f"neuron short of all {k_lang} languages; widen lam_range (--lambda-range) "
                f"or lower top_rate (--top-rate)"
            )
        lam = best
    else:
        lam = float(params.lam)
    # a fixed lambda's score does not depend on top_rate or bar: a saved one is reused as is
    score = saved.score if saved is not None else kern.ternary_score(h, maxp, lam, normaliser)
    selected = kern.select_smallest(score, k)
    attrs: dict[str, Any] = {
        "lam_requested": params.lam,
        "lam_range": list(params.lam_range),
        "eps": params.eps,
        "lambda": float(lam),
        "lambda_search": [[float(x), bool(ok)] for x, ok in trace],
        **bound,
        "n_top": k,
    }
    return _Selection(score, selected, tau, shared_by, attrs)


def _lape(inputs: _Inputs, params: IdentifyParams, saved: _Saved | None) -> _Selection:
    """Rule 2 (Tang et al. 2024): LAPE entropy, filtered neurons never selected."""
    p = inputs.p
    tau_filter, tau = _tau(p, [("filter_rate", params.filter_rate), ("bar", params.bar)])
    if saved is not None:  # the score depends on filter_rate only, which select() keeps
        entropy = saved.score
    else:
        (entropy,) = _over_language(kern.lape_entropy, p, tau_filter)
    (shared_by,) = _over_language(kern.count_above, p, tau)
    k = _n_top(entropy.size, params.top_rate)
    finite = int(np.count_nonzero(np.isfinite(entropy)))
    selected = kern.select_smallest(entropy, min(k, finite))
    attrs: dict[str, Any] = {
        "filter_rate": params.filter_rate,
        "tau_filter": float(tau_filter),
        "n_top": k,
    }
    return _Selection(entropy, selected, tau, shared_by, attrs)


_RULES: dict[str, Callable[[_Inputs, IdentifyParams, _Saved | None], _Selection]] = {
    "ternary": _ternary,
    "lape": _lape,
}


def apply_rule(p: xr.DataArray, params: IdentifyParams) -> RuleOutcome:
    """The rule of :func:`identify` on ``P[language, layer, neuron]`` already computed (the MoE
    identification stacks its units into such arrays: one implementation of each rule)."""
    labels = _as_labels(p[LANGUAGE])
    values = np.asarray(p.transpose(LANGUAGE, LAYER, NEURON).values, dtype=np.float64)
    c = _RULES[params.method](_Inputs(values, labels.tolist()), params, None)
    return RuleOutcome(c.score, c.selected, c.tau, c.shared_by, dict(c.attrs))


# --------------------------------------------------------------------------- public API


@overload
def identify(
    run: PlainDataset,
    method: Method = ...,
    *,
    role: Role = ...,
    top_rate: float = ...,
    bar: float = ...,
    filter_rate: float = ...,
    lam: float | Literal["auto"] = ...,
    lam_range: tuple[float, float] = ...,
    eps: float = ...,
    lam_widen: int = ...,
    rank: str | None = ...,
    min_routed: int = ...,
) -> PlainDataset: ...


@overload
def identify(
    run: xr.Dataset,
    method: Method = ...,
    *,
    role: Role = ...,
    top_rate: float = ...,
    bar: float = ...,
    filter_rate: float = ...,
    lam: float | Literal["auto"] = ...,
    lam_range: tuple[float, float] = ...,
    eps: float = ...,
    lam_widen: int = ...,
    rank: str | None = ...,
    min_routed: int = ...,
) -> xr.Dataset: ...


def identify(
    run: xr.Dataset | PlainDataset,
    method: Method = DEFAULTS.method,
    *,
    role: Role = DEFAULTS.role,
    top_rate: float = DEFAULTS.top_rate,
    bar: float = DEFAULTS.bar,
    filter_rate: float = DEFAULTS.filter_rate,
    lam: float | Literal["auto"] = DEFAULTS.lam,
    lam_range: tuple[float, float] = DEFAULTS.lam_range,
    eps: float = DEFAULTS.eps,
    lam_widen: int = DEFAULTS.lam_widen,
    rank: str | None = None,
    min_routed: int = 1,
) -> xr.Dataset | PlainDataset:
    r"""Identify language neurons with the ternary rule or LAPE.

    With activation probabilities :math:`P_{l,n,k} = n^{active}_{l,n,k} / n^{tokens}_k` and the
    quantile threshold :math:`\tau(q)` (the value at 1-indexed rank ``round(M q)`` of all
    :math:`M = LNK` probabilities sorted ascending):

    - ``"ternary"`` (Zhang et al. 2025): shares :math:`q = P / \sum_k P` (uniform where the sum
      is 0), clamped below at 1e-12 and renormalised;
      :math:`H = -\sum_k q \log(q + 10^{-30}) / \log K`;
      :math:`\mathrm{score} = H - \lambda \max_k P / \mathrm{norm}_{max}` with
      :math:`\mathrm{norm}_{max} = \frac{1}{K}\sum_{j=1}^{K} 1/j`. With ``lam="auto"``,
      :math:`\lambda` is found by bisection on ``lam_range`` down to ``eps`` as the largest
      tried value for which no selected neuron is above :math:`\tau` in all K languages.
    - ``"lape"`` (Tang et al. 2024): :math:`E = -\sum_{q>0} q \log q` with
      :math:`q = P / \sum_k P`; neurons with no language above :math:`\tau(\text{filter\_rate})`
      get :math:`E = +\infty` and are never selected.

    Both select the ``round(L N top_rate)`` neurons with the smallest score (ties: lowest
    layer-major index) and assign each selected neuron to every language with
    :math:`P > \tau(\text{bar})`.

    Parameters
    ----------
    run : xarray.Dataset or PlainDataset
        A run with ``n_active[language, role, layer, neuron]`` and ``n_tokens[language, role]``
        (numpy- or dask-backed; both give identical results). A
        :class:`~langneurons.plain.PlainDataset` gives a PlainDataset whose ``to_xarray()`` is
        identical to the result for ``run.to_xarray()``; a dense one is computed without
        importing xarray.
    method : {"ternary", "lape"}
        The rule.
    role : {"response", "prompt", "all"}
        Which counted tokens to use; ``"all"`` sums both roles.
    top_rate : float in (0, 1]
        Fraction of all neurons to select.
    bar : float in (0, 1]
        Quantile of :math:`\tau` for the language assignment.
    filter_rate : float in (0, 1]
        LAPE only: quantile of the filter threshold.
    lam : float >= 0 or "auto"
        Ternary only: the lambda, or ``"auto"`` for the bisection search.
    lam_range : (float, float)
        Ternary, automatic lambda: the search interval ``(lo, hi)``.
    eps : float > 0
        Ternary, automatic lambda: the bisection stops when ``hi - lo <= eps``.
    lam_widen : int, 0 to 10
        Ternary, automatic lambda: while the condition still holds at the top of ``lam_range``,
        double the top, at most this many times, before the search (0, the default, searches
        ``lam_range`` exactly as the spec does). When the condition holds at the top of the
        range finally searched, the largest lambda may lie above it: ``attrs["lambda_at_bound"]``
        is True and a :class:`~langneurons.errors.LambdaAtBoundWarning` says what to do.
    rank, min_routed : {"model", "layer", "expert"} (None: "model"), int >= 1
        Mixture-of-experts runs only (an ``expert`` dimension; dense runs accept the defaults
        only): see :func:`~langneurons.analysis.moe.identify_experts`, which such runs go to.

    Returns
    -------
    xarray.Dataset (a PlainDataset for a PlainDataset run)
        ``score``, ``selected``, ``neuron_type`` ("specific", "related", "general",
        "unassigned" for selected neurons, "none" otherwise), ``n_assigned`` (m, 0 when not
        selected), ``general`` and ``shared_by`` (over all neurons) on ``[layer, neuron]``;
        ``assigned[layer, neuron, language]`` and ``mask[language, layer, neuron]`` (selected
        and :math:`P > \tau`); ``probability[language, layer, neuron]`` (:math:`P`, kept so
        that :func:`select` can re-select without the counts). The parameters, ``tau``,
        ``lambda`` and all counts are in ``attrs`` (JSON-serialisable; see :func:`summary`).

    Raises
    ------
    ParameterError
        A parameter is outside its allowed values, the run has fewer than 2 languages, or a
        language has no tokens for the role.
    StoreValidationError
        The run breaks the schema: missing variables or roles, NaN or negative counts, or
        ``n_active`` above ``n_tokens``.
    NoValidLambdaError
        ``lam="auto"`` and no lambda in ``lam_range`` leaves every selected neuron short of
        all K languages.

    References
    ----------
    Tang et al. (2024), "Language-Specific Neurons: The Key to Multilingual Capabilities in
    Large Language Models", ACL. Zhang et al. (2025), the ternary rule with entropy and lambda.
    """
    params = IdentifyParams(
        method, role, top_rate, bar, filter_rate, lam, lam_range, eps, lam_widen
    )
    if (isinstance(run, PlainDataset) or is_dataset(run)) and EXPERT in run.sizes:
        moe_rank = "model" if rank is None else rank
        if isinstance(run, PlainDataset):  # the MoE path is xarray's: convert in and out
            moe = identify_experts(
                run.to_xarray(), apply_rule, params, rank=moe_rank, min_routed=min_routed
            )
            return PlainDataset.from_xarray(moe)
        return identify_experts(run, apply_rule, params, rank=moe_rank, min_routed=min_routed)
    if rank not in (None, "model") or min_routed != 1:
        raise ParameterError(
            "rank and min_routed apply to mixture-of-experts runs only (a run with an 'expert' "
            "dimension); drop them (--rank, --min-routed) for this dense run"
        )
    parts = _identify(_probabilities(run, params.role), params, None)
    return _as_plain(parts) if isinstance(run, PlainDataset) else _as_xarray(parts)


#: A result's content: data variables (name -> (dims, values)), coordinates and attributes.
_Variables = dict[str, tuple[tuple[str, ...], NDArray[Any]]]
_Parts = tuple[_Variables, dict[str, NDArray[Any]], dict[str, Any]]


def _identify(inputs: _Inputs, params: IdentifyParams, saved: _Saved | None) -> _Parts:
    """Score and select with one rule; warn when the automatic lambda ended at its bound."""
    chosen = _RULES[params.method](inputs, params, saved)
    parts = _result(inputs, params, chosen)
    attrs = parts[2]
    n = int(inputs.p.shape[1] * inputs.p.shape[2])
    if attrs.get("n_top") == 0:  # (the lambda condition then holds trivially: no bound to warn)
        warnings.warn(
            LangneuronsWarning(
                f"top_rate={params.top_rate:g} selects round({n} x {params.top_rate:g}) = 0 of "
                f"the run's {n} neurons, so nothing is selected; raise top_rate (--top-rate) "
                f"above {0.5 / n:.3g}"
            ),
            stacklevel=3,
        )
    elif attrs.get("lambda_at_bound"):
        warnings.warn(LambdaAtBoundWarning(lambda_bound_message(attrs)), stacklevel=3)
    return parts


def _as_xarray(parts: _Parts) -> xr.Dataset:
    """The result as an xarray.Dataset."""
    import xarray as xr

    data, coords, attrs = parts
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _as_plain(parts: _Parts) -> PlainDataset:
    """The result as a PlainDataset: ``to_xarray()`` gives exactly :func:`_as_xarray`."""
    data, coords, attrs = parts
    return PlainDataset(
        {name: PlainVariable(dims, values) for name, (dims, values) in data.items()},
        {name: PlainVariable((name,), values) for name, values in coords.items()},
        attrs,
    )


def select(
    identification: xr.Dataset,
    *,
    top_rate: float | None = None,
    bar: float | None = None,
) -> xr.Dataset:
    r"""Select again from a saved identification, at another ``top_rate`` or ``bar``.

    Score, then select: the rule's score and the activation probabilities are kept in the
    result (``score``, ``probability``), so a new selection reads no counts. The result is
    exactly ``identify(run, method, top_rate=top_rate, bar=bar, ...)`` with the other
    parameters of the saved identification. With a fixed ``lam`` (ternary) or LAPE, the saved
    score is reused and only the selection, :math:`\tau` and the assignment change; with
    ``lam="auto"`` the largest valid lambda depends on ``top_rate``, so it is searched again
    from the saved probabilities.

    Parameters
    ----------
    identification : xarray.Dataset
        A result of :func:`identify` (or :func:`select`), in memory, dask-backed or opened from
        a store; it must hold ``probability`` (results saved before it was recorded do not:
        run :func:`identify` again).
    top_rate, bar : float in (0, 1], optional
        The new parameters (None: the saved ones).

    Returns
    -------
    xarray.Dataset
        As :func:`identify`.
    """
    base = params_of(identification)
    if EXPERT in identification.dims:
        raise ParameterError(
            "select() re-selects dense identifications only; for a mixture-of-experts one, run "
            "identify() on the run again with the new top_rate or bar"
        )
    missing = [v for v in ("probability", "score") if v not in identification.variables]
    if missing:
        raise ParameterError(
            f"identification lacks {missing}, so it cannot be re-selected (it was saved before "
            "identify() recorded its probabilities); run identify() on the run again"
        )
    changes = {k: v for k, v in (("top_rate", top_rate), ("bar", bar)) if v is not None}
    params = base.replace(**changes)
    prob = identification["probability"].transpose(LANGUAGE, LAYER, NEURON)
    p = np.ascontiguousarray(np.asarray(prob.values, dtype=np.float64))
    labels = _as_labels(prob[LANGUAGE])
    coords = {LANGUAGE: labels, LAYER: prob[LAYER].values, NEURON: prob[NEURON].values}
    inputs = _Inputs(p, labels.tolist(), coords)
    saved = None
    if not params.auto_lambda or params.method == "lape":
        score = identification["score"].transpose(LAYER, NEURON).values
        saved = _Saved(np.asarray(score, dtype=np.float64))
    return _as_xarray(_identify(inputs, params, saved))


def _result(inputs: _Inputs, params: IdentifyParams, chosen: _Selection) -> _Parts:
    """Assemble the result's content: assignment, types, counts and attributes."""
    p = inputs.p
    languages = inputs.languages
    k_lang = len(languages)
    n_layers, n_neurons = chosen.selected.shape
    rows = p.reshape(k_lang, -1)
    mask = kern.assign_rows(rows, chosen.selected, chosen.tau).reshape(k_lang, n_layers, n_neurons)
    m = np.where(chosen.selected, chosen.shared_by, 0)
    codes = kern.classify(chosen.shared_by, chosen.selected, k_lang)
    general = chosen.shared_by == k_lang

    flat_mask = mask.reshape(k_lang, -1)
    flat_codes = codes.reshape(-1)
    specific = np.count_nonzero(flat_mask[:, flat_codes == kern.SPECIFIC], axis=1)
    related = np.count_nonzero(flat_mask[:, flat_codes == kern.RELATED], axis=1)
    in_mask = np.count_nonzero(flat_mask, axis=1)
    per_language = {
        lang: {"specific": int(specific[i]), "related": int(related[i]), "mask": int(in_mask[i])}
        for i, lang in enumerate(languages)
    }
    per_layer = {
        "specific": _per_layer(codes == kern.SPECIFIC),
        "related": _per_layer(codes == kern.RELATED),
        "general": _per_layer(general),
        "unassigned": _per_layer(codes == kern.UNASSIGNED),
    }
    attrs: dict[str, Any] = {
        "method": params.method,
        "role": params.role,
        "top_rate": params.top_rate,
        "bar": params.bar,
        **chosen.attrs,
        "tau": float(chosen.tau),
        "n_selected": int(np.count_nonzero(chosen.selected)),
        "appear": kern.histogram(m[chosen.selected], k_lang),
        "per_language": per_language,
        "per_layer": per_layer,
        "shared_by_n": kern.histogram(chosen.shared_by, k_lang),
        "languages": list(languages),
    }
    names = np.array(kern.TYPE_NAMES)
    lnd = (LAYER, NEURON)
    data: _Variables = {
        "score": (lnd, chosen.score),
        "selected": (lnd, chosen.selected),
        "assigned": ((LAYER, NEURON, LANGUAGE), np.moveaxis(mask, 0, -1)),
        "mask": ((LANGUAGE, LAYER, NEURON), mask),
        "neuron_type": (lnd, np.take(names, codes)),  # twice as fast as names[codes]
        "n_assigned": (lnd, m.astype(np.int64, copy=False)),
        "general": (lnd, general),
        "shared_by": (lnd, chosen.shared_by),
        "probability": ((LANGUAGE, LAYER, NEURON), p),
    }
    return data, {c: inputs.coords[c] for c in (LANGUAGE, LAYER, NEURON)}, attrs


def _per_layer(flags: NDArray[np.bool_]) -> list[int]:
    """Count true flags in each layer of a ``[layer, neuron]`` array."""
    return [int(c) for c in np.count_nonzero(flags, axis=1)]


def summary(result: xr.Dataset) -> dict[str, Any]:
    """The JSON summary of an :func:`identify` result.

    Parameters
    ----------
    result : xarray.Dataset or PlainDataset
        A result of :func:`identify` (it reads the attributes only).

    Returns
    -------
    dict
        Exactly the keys ``method``, ``lambda`` (None for LAPE), ``tau``, ``selected`` (the
        number of selected neurons), ``appear`` (histogram of m over selected neurons, m =
        0..K), ``per_language`` ({language: {"specific", "related", "mask"}}), ``per_layer``
        ({"specific", "related", "general", "unassigned"}: one count per layer) and
        ``shared_by_n`` (histogram over all neurons of the number of languages above tau).
    """
    needed = ("method", "tau", "n_selected", "appear", "per_language", "per_layer", "shared_by_n")
    attrs = getattr(result, "attrs", None)
    missing = [key for key in needed if attrs is None or key not in attrs]
    if missing:
        raise ParameterError(
            f"result must be a Dataset returned by identify(); it lacks attrs {missing}"
        )
    assert attrs is not None
    out = {
        "method": attrs["method"],
        "lambda": attrs.get("lambda"),
        "tau": attrs["tau"],
        "selected": attrs["n_selected"],
        "appear": attrs["appear"],
        "per_language": attrs["per_language"],
        "per_layer": attrs["per_layer"],
        "shared_by_n": attrs["shared_by_n"],
    }
    return copy.deepcopy(out)


__all__ = [
    "identify",
    "apply_rule",
    "select",
    "params_of",
    "lambda_bound_message",
    "summary",
    "masks_to_lists",
    "masks_from_lists",
    "IdentifyParams",
    "Method",
    "Role",
]
