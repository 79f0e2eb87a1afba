"""Identify language neurons inside the experts of a mixture-of-experts (MoE) run.

A neuron of a MoE model lives in one expert and sees only the tokens routed to that expert, so
its activation probability is ``P = n_active / n_routed`` (``docs/design/moe.md``), per language,
with the expert's own token count as denominator. Both rules of :mod:`.identify` then run
unchanged: the analysed (layer, expert, neuron) units are stacked, in layer-major order, into
the ``P[language, layer, neuron]`` array :func:`~langneurons.analysis.identify.apply_rule` takes,
one array per ranking scope, so there is one implementation of each rule.

Undefined probabilities. An expert that received fewer than ``min_routed`` (default 1) tokens
of some language in a layer has no (or no usable) ``P`` there. Such a (layer, expert) cell is
*undefined*: its neurons are left out of the thresholds and of the selection (never a silent
0/0), their ``neuron_type`` is ``"undefined"``, ``probability`` is NaN for the languages
without tokens, and the cells are counted and listed in ``attrs``. Padding neurons
(``neuron >= expert_neurons[expert]``) are never analysed: ``neuron_type`` ``"padding"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from langneurons.analysis._validate import (
    CORRUPT,
    as_labels,
    check_choice,
    check_dataset,
    check_int,
    require_roles,
    require_variable,
    run_languages,
    stored_roles,
)
from langneurons.errors import NoValidLambdaError, ParameterError, StoreValidationError
from langneurons.names import (
    EXPERT,
    EXPERT_NEURONS,
    EXPERT_SHARED,
    LANGUAGE,
    LAYER,
    N_ACTIVE,
    N_ROUTED,
    N_TOKENS,
    NEURON,
    ROLE,
)

from . import _kernels as kern
from .params import IdentifyParams

if TYPE_CHECKING:  # xarray is imported where a function builds xarray objects, so that
    import xarray as xr  # `identify` (which imports this module) runs on numpy without it


@dataclass(frozen=True)
class RuleOutcome:
    """What one rule decides on a ``P[language, layer, neuron]`` array (``identify.apply_rule``)."""

    score: NDArray[np.float64]  # [layer, neuron]
    selected: NDArray[np.bool_]  # [layer, neuron]
    tau: float
    shared_by: NDArray[np.int64]  # [layer, neuron]: languages with P > tau
    attrs: dict[str, Any]


#: ``identify.apply_rule``: the dense rules on ``P[language, layer, neuron]``, passed in by
#: ``identify`` (this module does not import it, so the two import no cycle).
Rule = Callable[["xr.DataArray", IdentifyParams], RuleOutcome]

#: Where the thresholds and the top-rate selection are computed.
RANKS: tuple[str, ...] = ("model", "layer", "expert")
#: ``neuron_type`` of the neurons of an undefined (layer, expert) cell, and of padding neurons.
UNDEFINED, PADDING = "undefined", "padding"


def expert_neuron_counts(run: xr.Dataset) -> NDArray[np.int64]:
    """Neurons each expert has (``expert_neurons``; every neuron when the coord is absent)."""
    if EXPERT_NEURONS in run.coords:
        counts = np.asarray(run[EXPERT_NEURONS].values, dtype=np.int64)
        if counts.shape != (run.sizes[EXPERT],) or (counts < 0).any():
            raise StoreValidationError(
                f"expert_neurons must hold one count >= 0 per expert; {CORRUPT}"
            )
        return counts
    return np.full(run.sizes[EXPERT], run.sizes[NEURON], dtype=np.int64)


def real_neurons(run: xr.Dataset) -> NDArray[np.bool_]:
    """``[expert, neuron]``: True for a neuron the expert has, False for padding."""
    counts = expert_neuron_counts(run)
    return np.arange(run.sizes[NEURON])[None, :] < counts[:, None]


def moe_counts(
    given: object, role: str
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], list[str]]:
    """Validated ``n_active[language, layer, expert, neuron]``, ``n_routed[language, layer,
    expert]`` and ``n_tokens[language]`` of a MoE run for ``role`` (``"all"`` sums both roles),
    and the language labels."""
    run: xr.Dataset = check_dataset(given, "run")
    if EXPERT not in run.dims:
        raise ParameterError(
            "this analysis needs a mixture-of-experts run (an 'expert' dimension, "
            "docs/design/moe.md); the run is dense"
        )
    require_variable(run, N_ACTIVE, (LANGUAGE, ROLE, LAYER, EXPERT, NEURON))
    require_variable(run, N_ROUTED, (LANGUAGE, ROLE, LAYER, EXPERT))
    require_variable(run, N_TOKENS, (LANGUAGE, ROLE))
    languages = run_languages(run)
    roles = stored_roles(role)
    require_roles(run, roles)
    active = routed = tokens = None
    for r in roles:
        a = run[N_ACTIVE].sel({ROLE: r}, drop=True).transpose(LANGUAGE, LAYER, EXPERT, NEURON)
        n = run[N_ROUTED].sel({ROLE: r}, drop=True).transpose(LANGUAGE, LAYER, EXPERT)
        t = run[N_TOKENS].sel({ROLE: r}, drop=True)
        av, nv, tv = (np.asarray(x.values) for x in (a, n, t))
        for name, v in ((N_ACTIVE, av), (N_ROUTED, nv), (N_TOKENS, tv)):
            if v.dtype.kind == "f" and np.isnan(v).any():
                raise StoreValidationError(f"{name} has NaN for role {r!r}; {CORRUPT}")
            if (v < 0).any():
                raise StoreValidationError(f"{name} is negative for role {r!r}; {CORRUPT}")
        if (av > nv[..., None]).any():
            where = np.argwhere(av > nv[..., None])[0]
            raise StoreValidationError(
                f"n_active exceeds n_routed for language {languages[where[0]]!r} role {r!r} "
                f"(layer {int(where[1])}, expert {int(where[2])}); {CORRUPT}"
            )
        av, nv, tv = av.astype(np.int64), nv.astype(np.int64), tv.astype(np.int64)
        active = av if active is None else active + av
        routed = nv if routed is None else routed + nv
        tokens = tv if tokens is None else tokens + tv
    assert active is not None and routed is not None and tokens is not None
    pad = ~real_neurons(run)
    if (active[:, :, pad] != 0).any():
        raise StoreValidationError(
            f"padding neurons (neuron >= expert_neurons) hold nonzero n_active; {CORRUPT}"
        )
    return active, routed, tokens, languages


def _groups(rank: str, unit_layer: NDArray[np.intp], unit_expert: NDArray[np.intp]) -> list[Any]:
    """Units of each ranking scope, as index arrays into the stacked units (in order)."""
    n = unit_layer.size
    if rank == "model":
        return [("model", np.arange(n))]
    if rank == "layer":
        return [((int(v),), np.flatnonzero(unit_layer == v)) for v in np.unique(unit_layer)]
    keys = unit_layer.astype(np.int64) * (int(unit_expert.max(initial=0)) + 1) + unit_expert
    return [
        ((int(unit_layer[idx[0]]), int(unit_expert[idx[0]])), idx)
        for idx in (np.flatnonzero(keys == v) for v in np.unique(keys))
    ]


def identify_experts(
    run: xr.Dataset,
    rule: Rule,
    params: IdentifyParams,
    *,
    rank: str = "model",
    min_routed: int = 1,
) -> xr.Dataset:
    r"""Identify language neurons in a mixture-of-experts run, per expert.

    ``P[k, l, e, n] = n_active[k, l, e, n] / n_routed[k, l, e]`` (the tokens of language k
    routed to expert e of layer l). The analysed units are the real neurons (``neuron <
    expert_neurons[e]``) of the (layer, expert) cells that received at least ``min_routed``
    tokens in every language. Within each ranking scope the rule of ``params.method`` (ternary
    or LAPE, exactly as for dense runs, :func:`~langneurons.analysis.identify.identify`) is
    applied to the scope's units in (layer, expert, neuron) order: the quantile thresholds
    :math:`\tau` are taken over the scope's probabilities, ``round(M_scope * top_rate)`` units
    are selected, and the automatic lambda is searched per scope.

    Parameters
    ----------
    run : xarray.Dataset
        A MoE run: ``n_active[language, role, layer, expert, neuron]``,
        ``n_routed[language, role, layer, expert]``, ``n_tokens[language, role]``, and
        optionally the coordinate ``expert_neurons[expert]``.
    rule : callable
        ``langneurons.analysis.identify.apply_rule`` (``identify`` passes it; call
        ``identify(run, ..., rank=...)`` rather than this function).
    params : IdentifyParams
        The rule and its parameters.
    rank : {"model", "layer", "expert"}
        ``"model"``: one threshold and one selection over all analysed units; ``"layer"``: per
        layer; ``"expert"``: per (layer, expert) cell. Stated in ``attrs["rank"]``.
    min_routed : int >= 1
        A (layer, expert) cell with fewer routed tokens than this in some language is
        undefined: left out of thresholds and selection, ``neuron_type == "undefined"``,
        counted in ``attrs["n_undefined_cells"]`` and listed in ``attrs["undefined_cells"]``.

    Returns
    -------
    xarray.Dataset
        On ``[layer, expert, neuron]``: ``score`` (NaN where not analysed), ``selected``,
        ``neuron_type`` (as dense, plus ``"undefined"`` and ``"padding"``), ``n_assigned``,
        ``general``, ``shared_by``, ``analysed``; ``assigned[layer, expert, neuron,
        language]``, ``mask[language, layer, expert, neuron]``, ``probability[language,
        layer, expert, neuron]`` (NaN where undefined or padding), ``defined[language, layer,
        expert]`` (``n_routed >= min_routed``) and ``n_language_neurons[language, layer,
        expert]`` (mask size per expert). ``tau`` (and ``lambda`` for the ternary rule) per
        scope: a scalar (model), ``[layer]`` or ``[layer, expert]``. ``attrs`` hold what
        :func:`~langneurons.analysis.identify.summary` reads (``tau`` and ``lambda`` are
        numbers only with ``rank="model"``, else None: see the variables), ``rank``,
        ``min_routed`` and the counts of analysed, padding and undefined units.

    Raises
    ------
    ParameterError
        Bad parameters, a dense run, fewer than 2 languages, or no analysable unit.
    StoreValidationError
        Counts that break the MoE layout (``n_active > n_routed``, nonzero padding, NaN).
    NoValidLambdaError
        An automatic lambda has no valid value in some scope (its scope is named).
    """
    import xarray as xr

    if not isinstance(params, IdentifyParams):
        raise ParameterError(f"params must be an IdentifyParams, got {type(params).__name__}")
    check_choice("rank", rank, RANKS)
    min_routed = check_int("min_routed", min_routed, 1)
    active, routed, _tokens, languages = moe_counts(run, params.role)
    k_lang = len(languages)
    if k_lang < 2:
        raise ParameterError(f"identification needs at least 2 languages, the run has {k_lang}")
    n_lang, n_layers, n_experts, n_neurons = active.shape
    real = real_neurons(run)  # [expert, neuron]
    defined = routed >= min_routed  # [language, layer, expert]
    cell_ok: NDArray[np.bool_] = np.asarray(defined.all(axis=0))  # [layer, expert]
    analysed = cell_ok[:, :, None] & real[None, :, :]  # [layer, expert, neuron]
    with np.errstate(divide="ignore", invalid="ignore"):
        prob = np.where(
            defined[..., None] & real[None, None], active / routed[..., None], np.nan
        ).astype(np.float64)
    units = np.flatnonzero(analysed.reshape(-1))
    if units.size == 0:
        raise ParameterError(
            f"no expert received at least min_routed={min_routed} tokens in every language in "
            "any layer, so no activation probability is defined; lower min_routed or count "
            "more tokens"
        )
    unit_layer, unit_expert, _ = np.unravel_index(units, analysed.shape)
    p_units = prob.reshape(n_lang, -1)[:, units]  # [language, unit]

    flat = n_layers * n_experts * n_neurons
    score = np.full(flat, np.nan)
    selected = np.zeros(flat, dtype=np.bool_)
    shared_by = np.zeros(flat, dtype=np.int64)
    unit_tau = np.empty(units.size)
    group_shape = {"model": (), "layer": (n_layers,), "expert": (n_layers, n_experts)}[rank]
    tau_var = np.full(group_shape, np.nan)
    lam_var = np.full(group_shape, np.nan)
    n_top = 0
    at_bound = False
    lambdas: list[float] = []
    labels = as_labels(run[LANGUAGE])
    for key, idx in _groups(rank, unit_layer, unit_expert):
        p = xr.DataArray(
            np.ascontiguousarray(p_units[:, idx][:, None, :]),
            dims=(LANGUAGE, LAYER, NEURON),
            coords={LANGUAGE: labels},
        )
        try:
            out = rule(p, params)
        except NoValidLambdaError as err:
            where = "" if key == "model" else f" in {_scope_name(rank, key)}"
            raise NoValidLambdaError(f"{err}{where} (rank={rank!r})") from None
        except ParameterError as err:
            where = "" if key == "model" else f" in {_scope_name(rank, key)} (rank={rank!r})"
            raise ParameterError(f"{err}{where}") from None
        target = units[idx]
        score[target] = out.score.reshape(-1)
        selected[target] = out.selected.reshape(-1)
        shared_by[target] = out.shared_by.reshape(-1)
        unit_tau[idx] = out.tau
        at = () if key == "model" else key
        tau_var[at] = out.tau
        n_top += int(out.attrs.get("n_top", 0))
        if "lambda" in out.attrs:
            lam_var[at] = out.attrs["lambda"]
            lambdas.append(float(out.attrs["lambda"]))
            at_bound = at_bound or bool(out.attrs.get("lambda_at_bound"))

    shape3 = (n_layers, n_experts, n_neurons)
    # per-language masks: selected units above their scope's tau
    mask_units = (p_units > unit_tau[None, :]) & selected[units][None, :]
    mask = np.zeros((n_lang, flat), dtype=np.bool_)
    mask[:, units] = mask_units
    mask = mask.reshape((n_lang, *shape3))
    selected = selected.reshape(shape3)
    shared_by = shared_by.reshape(shape3)
    codes = kern.classify(shared_by, selected, k_lang)
    names = np.array([*kern.TYPE_NAMES, UNDEFINED, PADDING])
    codes = np.where(real[None] & ~analysed, len(kern.TYPE_NAMES), codes)
    codes = np.where(~real[None], len(kern.TYPE_NAMES) + 1, codes)
    general = (shared_by == k_lang) & analysed
    m = np.where(selected, shared_by, 0)
    attrs = _attrs(
        params, rank, min_routed, languages, mask, codes, general, selected, m, shared_by
    )
    undefined_cells = [
        {
            "layer": int(run[LAYER].values[li]),
            "expert": int(run[EXPERT].values[ei]),
            "languages": [languages[k] for k in np.flatnonzero(~defined[:, li, ei])],
        }
        for li, ei in np.argwhere(~cell_ok)
    ]
    lam_attr: float | None = None
    if rank == "model" and lambdas:
        lam_attr = lambdas[0]
    elif lambdas and len(set(lambdas)) == 1 and not params.auto_lambda:
        lam_attr = lambdas[0]
    attrs.update(
        {
            "tau": float(tau_var) if rank == "model" else None,
            "lambda": lam_attr,
            "lambda_at_bound": at_bound,
            "n_top": n_top,
            "identify_params": params.to_attrs(),
            "rank": rank,
            "min_routed": min_routed,
            "n_units": int(units.size),
            "n_padding": int((~real).sum()) * n_layers,
            "n_undefined_cells": len(undefined_cells),
            "n_undefined_neurons": int((real[None] & ~analysed).sum()),
            "undefined_cells": undefined_cells,
        }
    )
    if params.method == "lape":
        attrs["filter_rate"] = params.filter_rate
    else:
        attrs.update(
            {"lam_requested": params.lam, "lam_range": list(params.lam_range), "eps": params.eps}
        )
        attrs["lam_widen"] = params.lam_widen
    lend = (LAYER, EXPERT, NEURON)
    scope_dims = {"model": (), "layer": (LAYER,), "expert": (LAYER, EXPERT)}[rank]
    data: dict[str, Any] = {
        "score": (lend, score.reshape(shape3)),
        "selected": (lend, selected),
        "assigned": ((*lend, LANGUAGE), np.moveaxis(mask, 0, -1)),
        "mask": ((LANGUAGE, *lend), mask),
        "neuron_type": (lend, names[codes]),
        "n_assigned": (lend, m.astype(np.int64)),
        "general": (lend, general),
        "shared_by": (lend, shared_by),
        "analysed": (lend, analysed),
        "probability": ((LANGUAGE, *lend), prob),
        "defined": ((LANGUAGE, LAYER, EXPERT), defined),
        "n_language_neurons": ((LANGUAGE, LAYER, EXPERT), mask.sum(axis=-1).astype(np.int64)),
        "tau": (scope_dims, tau_var),
    }
    if params.method == "ternary":
        data["lambda"] = (scope_dims, lam_var)
    coords: dict[str, Any] = {c: run[c].values for c in (LAYER, EXPERT, NEURON)}
    coords[LANGUAGE] = labels
    for c in (EXPERT_SHARED, EXPERT_NEURONS):
        if c in run.coords:
            coords[c] = (EXPERT, np.asarray(run[c].values))
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _scope_name(rank: str, key: tuple[int, ...]) -> str:
    """``layer 3`` or ``layer 3 expert 5`` (positions)."""
    return f"layer {key[0]}" if rank == "layer" else f"layer {key[0]} expert {key[1]}"


def _attrs(
    params: IdentifyParams,
    rank: str,
    min_routed: int,
    languages: list[str],
    mask: NDArray[np.bool_],
    codes: NDArray[Any],
    general: NDArray[np.bool_],
    selected: NDArray[np.bool_],
    m: NDArray[np.int64],
    shared_by: NDArray[np.int64],
) -> dict[str, Any]:
    """The counts every identification exposes (as :func:`identify`), plus per expert."""
    k_lang = len(languages)
    flat_mask = mask.reshape(k_lang, -1)
    flat_codes = codes.reshape(-1)
    specific = np.count_nonzero(flat_mask[:, flat_codes == kern.SPECIFIC], axis=1)
    related = np.count_nonzero(flat_mask[:, flat_codes == kern.RELATED], axis=1)
    in_mask = np.count_nonzero(flat_mask, axis=1)

    def per(flags: NDArray[np.bool_], axis: tuple[int, ...]) -> list[int]:
        return [int(c) for c in np.count_nonzero(flags, axis=axis)]

    kinds = {
        "specific": codes == kern.SPECIFIC,
        "related": codes == kern.RELATED,
        "general": general,
        "unassigned": codes == kern.UNASSIGNED,
    }
    defined_shared = shared_by[codes < len(kern.TYPE_NAMES)]
    return {
        "method": params.method,
        "role": params.role,
        "top_rate": params.top_rate,
        "bar": params.bar,
        "n_selected": int(np.count_nonzero(selected)),
        "appear": kern.histogram(m[selected], k_lang),
        "per_language": {
            lang: {
                "specific": int(specific[i]),
                "related": int(related[i]),
                "mask": int(in_mask[i]),
            }
            for i, lang in enumerate(languages)
        },
        "per_layer": {name: per(f, (1, 2)) for name, f in kinds.items()},
        "per_expert": {name: per(f, (0, 2)) for name, f in kinds.items()},
        "shared_by_n": kern.histogram(defined_shared, k_lang),
        "languages": list(languages),
    }


__all__ = [
    "RuleOutcome",
    "Rule",
    "identify_experts",
    "moe_counts",
    "real_neurons",
    "expert_neuron_counts",
    "RANKS",
]
