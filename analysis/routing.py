"""Language experts: how a mixture-of-experts router shares a language's tokens among experts.

One level up from language neurons (``docs/design/moe.md``, issue 17 item 4):

- :func:`language_experts`: per language, layer and expert the routing share ``n_routed /
  n_tokens`` (the fraction of the language's tokens sent to the expert; over the routed experts
  of a layer it sums to ``top_k``), each expert's specificity (one minus the normalised entropy
  of its share profile over languages) and its type by routing (specific / related / general),
  with percentile intervals over items from the per-sequence routing counts
  (``seq_n_routed``).
- :func:`routing_change`: base versus aligned (two runs of the same items, paired by
  ``seq_id``): the change in routing share per cell, a paired label-swap permutation test over
  items, and Benjamini-Hochberg q-values within each layer.

Without per-sequence counts both are descriptive (``attrs["inference"] == "descriptive"``):
point values, no interval or p-value. Resampling goes through the one engine of the room
(:mod:`._resample`): the unit of replication is the sequence within its language, or the item
when one item has several sequences in a language — never the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons.analysis._kernels import percentile_interval
from langneurons.analysis._resample import (
    Design,
    choose_cluster,
    draw_swaps,
    draw_weights,
    replicate_seeds,
    resampling_note,
    units,
)
from langneurons.analysis._validate import (
    CORRUPT,
    as_labels,
    check_choice,
    check_int,
    check_n_boot,
    check_open_unit,
    check_seed,
    require_variable,
    stored_roles,
)
from langneurons.errors import ParameterError, StoreValidationError
from langneurons.names import (
    EXPERT,
    EXPERT_SHARED,
    LANGUAGE,
    LAYER,
    ROLE,
    SEQ_ID,
    SEQ_LANGUAGE,
    SEQ_N_ROUTED,
    SEQ_N_TOKENS,
    SEQUENCE,
)

from .moe import moe_counts

#: Expert types by routing, in report order.
EXPERT_TYPES: tuple[str, ...] = ("specific", "related", "general", "shared", "unrouted")
BLOCK = 200  # replicates computed at once
#: Fewer sequences (items) than this in some language: the share intervals are descriptive
#: (coverage 0.922 at 95 % with 8 strongly differing sequences per language; 0.935-0.955 with
#: 16 and more, calibration suite, family routing).
MIN_CLUSTERS = 16

SPECIFICITY_REASON = (
    "the percentile bootstrap of an entropy undercovers (biased towards specificity, and a "
    "language-neutral expert's true 0 lies on the boundary): see docs/calibration.md, "
    "family routing"
)
DESCRIPTIVE_REASON = (
    "the run has no per-sequence routing counts (seq_n_routed), so nothing can be resampled "
    "over items; extract with --per-sequence for intervals and tests"
)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Routing:
    """The routing counts of one run for a role."""

    languages: list[str]
    routed: NDArray[np.int64]  # [language, layer, expert]
    tokens: NDArray[np.int64]  # [language]
    shared: NDArray[np.bool_]  # [expert]
    seq_routed: NDArray[np.float64] | None  # [sequence, layer, expert]
    seq_tokens: NDArray[np.float64] | None  # [sequence]
    design: Design | None


def _routing(run: object, role: str, name: str) -> _Routing:
    """Validated routing counts of ``run`` and, when it has them, its per-sequence ones."""
    _, routed, tokens, languages = moe_counts(run, role)
    assert isinstance(run, xr.Dataset)
    empty = np.flatnonzero(tokens == 0)
    if empty.size:
        raise ParameterError(
            f"n_tokens is 0 for language {languages[int(empty[0])]!r} with role={role!r} in "
            f"{name}, so its routing shares are undefined; choose another role or drop the "
            "language with run.sel(language=...)"
        )
    n_exp = run.sizes[EXPERT]
    shared = (
        np.asarray(run[EXPERT_SHARED].values, dtype=bool)
        if EXPERT_SHARED in run.coords
        else np.zeros(n_exp, dtype=bool)
    )
    if SEQ_N_ROUTED not in run.data_vars:
        return _Routing(languages, routed, tokens, shared, None, None, None)
    roles = stored_roles(role)
    require_variable(run, SEQ_N_ROUTED, (SEQUENCE, ROLE, LAYER, EXPERT), "iu")
    require_variable(run, SEQ_N_TOKENS, (SEQUENCE, ROLE), "iu")
    if SEQ_LANGUAGE not in run.variables:
        raise StoreValidationError(
            f"{name} has seq_n_routed but no seq_language[sequence]; the run breaks the schema"
        )
    seq = run[SEQ_N_ROUTED].sel({ROLE: list(roles)}).transpose(SEQUENCE, ROLE, LAYER, EXPERT)
    tok = run[SEQ_N_TOKENS].sel({ROLE: list(roles)}).transpose(SEQUENCE, ROLE)
    seq_routed = np.asarray(seq.values, dtype=np.float64).sum(axis=1)
    seq_tokens = np.asarray(tok.values, dtype=np.float64).sum(axis=1)
    labels = as_labels(run[SEQ_LANGUAGE])
    members = tuple(np.flatnonzero(labels == lang).astype(np.intp) for lang in languages)
    language_of = np.full(labels.size, -1, dtype=np.intp)
    for k, m in enumerate(members):
        language_of[m] = k
        if not (
            np.array_equal(seq_routed[m].sum(axis=0), routed[k])
            and seq_tokens[m].sum() == tokens[k]
        ):
            raise StoreValidationError(
                f"{name}'s per-sequence routing counts of language {languages[k]!r} do not add "
                f"up to its n_routed / n_tokens; {CORRUPT}"
            )
        if m.size < 2:
            raise ParameterError(
                f"language {languages[k]!r} has {m.size} sequence(s) in {name}; intervals over "
                "items need at least 2 per language"
            )
    design = Design(name, languages, roles, members, language_of)
    return _Routing(languages, routed, tokens, shared, seq_routed, seq_tokens, design)


def _shares(routed: NDArray[Any], tokens: NDArray[Any]) -> NDArray[np.float64]:
    """``routed / tokens`` broadcast over ``[..., language, layer, expert]``."""
    return np.asarray(routed / tokens[..., None, None], dtype=np.float64)


def _specificity(share: NDArray[np.float64], routed_experts: NDArray[np.bool_]) -> Any:
    """``1 - H(q)`` with ``q = share / sum_k share`` over languages (axis -3), H normalised by
    log K; NaN for shared experts and experts no language routes to."""
    k = share.shape[-3]
    total = share.sum(axis=-3, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = share / total
        terms = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    h = -terms.sum(axis=-3) / np.log(k)
    out = 1.0 - h
    return np.where((total[..., 0, :, :] > 0) & routed_experts, out, np.nan)


def _replicate_shares(r: _Routing, weights: NDArray[np.int64]) -> NDArray[np.float64]:
    """Shares ``[replicate, language, layer, expert]`` of weighted sequences."""
    routed, tokens = _weighted(r, weights)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(routed / tokens[..., None, None], dtype=np.float64)


def _share_interval(
    r: _Routing, run: xr.Dataset, cluster: str, ci: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, int]]:
    """Student-t interval of each share from its delete-one-cluster jackknife standard error.

    Per language, the clusters are its sequences (``cluster="sequence"``) or its items (the
    sequences sharing a ``seq_id`` added up); with cluster totals ``a_i`` (routed) and ``t_i``
    (tokens), ``s = sum a / sum t``, ``s_(i) = (sum a - a_i) / (sum t - t_i)``,
    ``var = (n - 1) / n * sum (s_(i) - mean s_(.))^2``, and the interval
    ``s +- t_{n-1} sqrt(var)`` on the logit scale (delta method, back-transformed: shares are
    skewed proportions), on the share scale clipped to [0, 1] where ``s`` is 0 or 1."""
    from scipy import special

    assert r.seq_routed is not None and r.seq_tokens is not None and r.design is not None
    ids = as_labels(run[SEQ_ID]) if cluster == "item" else None
    _, n_layers, n_exp = r.routed.shape
    low = np.empty(r.routed.shape)
    high = np.empty(r.routed.shape)
    level = (1.0 + ci) / 2.0
    clusters: dict[str, int] = {}
    for k, m in enumerate(r.design.members):
        a = r.seq_routed[m].reshape(m.size, -1)
        t = r.seq_tokens[m]
        if ids is not None:
            _, inverse = np.unique(ids[m], return_inverse=True)
            a = np.stack([a[inverse == g].sum(axis=0) for g in range(inverse.max() + 1)])
            t = np.bincount(inverse, weights=t)
        n = t.size
        clusters[r.languages[k]] = int(n)
        if n < 2:
            raise ParameterError(
                f"language {r.languages[k]!r} has {n} {cluster}; intervals need at least 2"
            )
        total = t.sum()
        share = a.sum(axis=0) / total
        # delete-one-cluster jackknife of the ratio (more conservative than the linearised
        # se with few clusters: docs/calibration.md, family routing)
        loo = (a.sum(axis=0)[None, :] - a) / (total - t)[:, None]
        dev = loo - loo.mean(axis=0, keepdims=True)
        se = np.sqrt((n - 1.0) / n * (dev * dev).sum(axis=0))
        half = float(special.stdtrit(n - 1.0, level)) * se
        inside = (share > 0) & (share < 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            logit = np.log(share / (1 - share))
            width = half / (share * (1 - share))
        lo = np.where(inside, special.expit(logit - width), np.maximum(share - half, 0.0))
        hi = np.where(inside, special.expit(logit + width), np.minimum(share + half, 1.0))
        low[k] = lo.reshape(n_layers, n_exp)
        high[k] = hi.reshape(n_layers, n_exp)
    return low, high, clusters


# --------------------------------------------------------------------------- language experts


def language_experts(
    run: xr.Dataset,
    *,
    role: str = "response",
    ratio: float = 1.5,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    cluster: str = "auto",
) -> xr.Dataset:
    r"""Routing shares per language and expert, and which experts are language experts.

    ``share[k, l, e] = n_routed[k, l, e] / n_tokens[k]``: the fraction of language k's tokens
    the router of layer l sends to expert e (summed over the routed experts of a layer it is
    ``top_k``; a shared expert's is 1). For each routed expert, with
    :math:`q_k = s_k / \sum_j s_j` its share profile over the K languages:

    - ``specificity = 1 - H(q) / log K`` (0: routed alike in every language; 1: one language);
    - ``preferred[l, e, k]``: :math:`s_k > \text{ratio} \cdot \bar s` (the mean share over
      languages), the ternary idea one level up; ``expert_type`` is ``"specific"`` (one
      preferred language), ``"related"`` (2 to K-1), ``"general"`` (none), ``"shared"`` (a
      shared expert) or ``"unrouted"`` (no token of any language).

    Intervals, from the per-sequence routing counts ``seq_n_routed``, with the sequence (the
    item when an item has several sequences in a language, ``cluster="auto"``) as the unit:
    ``share``: Student t on the logit scale with the delete-one-cluster jackknife standard
    error (coverage 0.935-0.955 at 95 % with 16 and 32 sequences per language in the
    calibration suite, family ``routing``; with fewer than 16 in some language, 0.922 when
    sequences differ strongly, so the result is then labelled descriptive); ``specificity``:
    percentile bootstrap over ``n_boot`` replicates, labelled descriptive
    (``attrs["specificity_inference"]``: it undercovers, 0.33-0.93). Without per-sequence
    counts the result is descriptive (``attrs["inference"]``, no intervals).

    Parameters
    ----------
    run : xarray.Dataset
        A MoE run (``n_routed[language, role, layer, expert]``, ``n_tokens``; optionally
        ``seq_n_routed[sequence, role, layer, expert]``, ``seq_n_tokens``, ``seq_language``).
    role : {"response", "prompt", "all"}
    ratio : float > 1
        A language is preferred by an expert whose share in it exceeds ``ratio`` times the
        expert's mean share over languages.
    n_boot : int >= 0
        Bootstrap replicates of the specificity intervals (0: none; the share intervals need
        no replicates).
    ci : float in (0, 1)
    seed : int >= 0
    cluster : {"auto", "sequence", "item"}

    Returns
    -------
    xarray.Dataset
        ``share``, ``share_low``, ``share_high`` on ``[language, layer, expert]``;
        ``specificity`` (+ ``_low``, ``_high``), ``expert_type``, ``top_language`` on
        ``[layer, expert]``; ``preferred[layer, expert, language]``. ``attrs``: parameters,
        ``inference`` (``"valid"`` or ``"descriptive"``), ``type_counts``, ``per_language``
        (specific experts per language) and ``per_layer`` counts.
    """
    check_choice("role", role, ("response", "prompt", "all"))
    if not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and ratio > 1):
        raise ParameterError(f"ratio must be a number > 1, got {ratio!r}")
    n_boot = check_n_boot(n_boot)
    ci = check_open_unit("ci", ci)
    seed = check_seed(seed)
    r = _routing(run, role, "run")
    assert isinstance(run, xr.Dataset)
    if len(r.languages) < 2:
        raise ParameterError(
            f"language experts need at least 2 languages, the run has {len(r.languages)}"
        )
    routed_experts = ~r.shared
    share = _shares(r.routed, r.tokens)
    spec = _specificity(share, routed_experts)
    mean = share.mean(axis=0)
    with np.errstate(invalid="ignore"):
        preferred = (share > ratio * mean[None]) & routed_experts[None, None, :]
    m = preferred.sum(axis=0)
    unrouted = (r.routed.sum(axis=0) == 0) & routed_experts[None, :]
    table = np.array(["general", "specific"] + ["related"] * max(0, len(r.languages) - 1))
    types = table[m]
    types = np.where(unrouted, "unrouted", types)
    types = np.where(r.shared[None, :], "shared", types).astype(f"U{max(map(len, EXPERT_TYPES))}")
    labels = as_labels(run[LANGUAGE])
    top = labels[np.argmax(share, axis=0)]
    top = np.where(types == "specific", labels[np.argmax(preferred, axis=0)], top)
    attrs: dict[str, Any] = {
        "role": role,
        "ratio": float(ratio),
        "n_boot": n_boot,
        "ci": ci,
        "seed": seed,
        "statistic": "share = n_routed / n_tokens; specificity = 1 - H(share profile) / log K",
    }
    data: dict[str, Any] = {
        "share": ((LANGUAGE, LAYER, EXPERT), share),
        "specificity": ((LAYER, EXPERT), spec),
        "preferred": ((LAYER, EXPERT, LANGUAGE), np.moveaxis(preferred, 0, -1)),
        "expert_type": ((LAYER, EXPERT), types),
        "top_language": ((LAYER, EXPERT), top),
    }
    if r.design is None:
        attrs.update(inference="descriptive", inference_reason=DESCRIPTIVE_REASON, cluster=None)
    else:
        used = choose_cluster(run, r.design, cluster)
        low, high, clusters = _share_interval(r, run, used, ci)
        data.update(
            share_low=((LANGUAGE, LAYER, EXPERT), low),
            share_high=((LANGUAGE, LAYER, EXPERT), high),
        )
        if n_boot:
            plan = units(run, r.design, used)
            seeds = replicate_seeds(seed, n_boot)
            boot = np.empty((n_boot, *share.shape))
            for b0 in range(0, n_boot, BLOCK):
                (w,) = draw_weights([plan], seeds[b0 : b0 + BLOCK])
                boot[b0 : b0 + w.shape[0]] = _replicate_shares(r, w)
            s_low, s_high = percentile_interval(_specificity(boot, routed_experts), ci)
            data.update(
                specificity_low=((LAYER, EXPERT), s_low),
                specificity_high=((LAYER, EXPERT), s_high),
            )
            attrs["resampling"] = resampling_note(used)
        few = min(clusters.values()) < MIN_CLUSTERS
        attrs.update(
            inference="descriptive" if few else "valid",
            interval="share: Student t on the logit scale with the delete-one-cluster "
            "jackknife se"
            + (
                "; specificity: percentile bootstrap"
                if n_boot
                else "; specificity: none (n_boot=0)"
            ),
            specificity_inference="descriptive",
            specificity_reason=SPECIFICITY_REASON,
            cluster=used,
            unit="item" if used == "item" else "sequence",
            n_clusters=clusters,
        )
        if few:
            attrs["inference_reason"] = (
                f"fewer than {MIN_CLUSTERS} {used}s in some language ({min(clusters.values())}): "
                "the share intervals undercover when sequences differ strongly "
                "(docs/calibration.md, family routing)"
            )
    attrs["type_counts"] = {t: int((types == t).sum()) for t in EXPERT_TYPES}
    attrs["per_language"] = {
        str(lang): int(((types == "specific") & preferred[k]).sum())
        for k, lang in enumerate(r.languages)
    }
    attrs["per_layer"] = {
        t: [int(c) for c in (types == t).sum(axis=1)] for t in ("specific", "related", "general")
    }
    coords: dict[str, Any] = {
        LANGUAGE: labels,
        LAYER: run[LAYER].values,
        EXPERT: run[EXPERT].values,
    }
    coords[EXPERT_SHARED] = (EXPERT, r.shared)
    return xr.Dataset(data, coords=coords, attrs=attrs)


# --------------------------------------------------------------------------- base vs aligned


def _bh_by_layer(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Benjamini-Hochberg q-values ``[language, layer, expert]`` within each layer (NaN kept)."""
    q = np.full(p.shape, np.nan)
    for li in range(p.shape[1]):
        layer = p[:, li].reshape(-1)
        ok = np.flatnonzero(~np.isnan(layer))
        if ok.size == 0:
            continue
        order = ok[np.argsort(layer[ok], kind="stable")]
        n = ok.size
        ranked = layer[order] * n / np.arange(1, n + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        out = np.full(layer.shape, np.nan)
        out[order] = np.minimum(ranked, 1.0)
        q[:, li] = out.reshape(p.shape[0], p.shape[2])
    return q


def routing_change(
    base_run: xr.Dataset,
    aligned_run: xr.Dataset,
    *,
    role: str = "response",
    n_perm: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> xr.Dataset:
    r"""Does alignment shift routing? The change in routing share, base to aligned, per cell.

    ``change[k, l, e] = share_aligned - share_base`` (shares as in :func:`language_experts`).
    With per-sequence routing counts in both runs and the same items (``seq_id``) in both,
    each cell gets a two-sided paired label-swap permutation p-value: in each of ``n_perm``
    permutations every item's sequences are swapped between the runs with probability 1/2
    (the null: the runs are exchangeable item by item), and
    :math:`p = (1 + \#\{|T^*| \ge |T|\}) / (1 + n_{perm})`. ``q`` are Benjamini-Hochberg
    q-values within each layer (stratified by layer: the (language, expert) cells of a layer
    form one family); ``significant`` is ``q <= alpha``. Without per-sequence counts the
    result is descriptive: the change only.

    Parameters
    ----------
    base_run, aligned_run : xarray.Dataset
        Two MoE runs with the same languages, layers and experts.
    role : {"response", "prompt", "all"}
    n_perm : int >= 0
        Permutations (0: the change only, descriptive).
    seed : int >= 0
    alpha : float in (0, 1)
        FDR level of ``significant``.

    Returns
    -------
    xarray.Dataset
        ``base_share``, ``aligned_share``, ``change`` and (tested) ``pvalue``, ``q``,
        ``significant`` on ``[language, layer, expert]``; ``attrs`` with ``inference``,
        ``n_significant``, ``per_layer`` significant counts and the largest changes.
    """
    check_choice("role", role, ("response", "prompt", "all"))
    n_perm = check_int("n_perm", n_perm, 0)
    seed = check_seed(seed)
    alpha = check_open_unit("alpha", alpha)
    a = _routing(base_run, role, "base_run")
    b = _routing(aligned_run, role, "aligned_run")
    assert isinstance(base_run, xr.Dataset) and isinstance(aligned_run, xr.Dataset)
    if a.languages != b.languages or a.routed.shape != b.routed.shape:
        raise ParameterError(
            f"base_run and aligned_run must hold the same languages, layers and experts "
            f"(languages {a.languages} vs {b.languages}, [language, layer, expert] "
            f"{list(a.routed.shape)} vs {list(b.routed.shape)})"
        )
    sa, sb = _shares(a.routed, a.tokens), _shares(b.routed, b.tokens)
    change = sb - sa
    routed_experts = ~a.shared
    change = np.where(routed_experts[None, None, :], change, np.nan)
    dims = (LANGUAGE, LAYER, EXPERT)
    data: dict[str, Any] = {
        "base_share": (dims, sa),
        "aligned_share": (dims, sb),
        "change": (dims, change),
    }
    attrs: dict[str, Any] = {"role": role, "n_perm": n_perm, "seed": seed, "alpha": alpha}
    no_ids = [n for n, r in (("base_run", base_run), ("aligned_run", aligned_run))
              if SEQ_ID not in r.variables]  # fmt: skip
    if a.design is None or b.design is None or n_perm == 0 or no_ids:
        reason = DESCRIPTIVE_REASON if a.design is None or b.design is None else (
            "n_perm=0: the change only" if n_perm == 0 else
            f"{no_ids[0]} has no seq_id, so the items of the two runs cannot be paired"
        )  # fmt: skip
        attrs.update(inference="descriptive", inference_reason=reason)
    else:
        pvalue = _swap_pvalues(base_run, aligned_run, a, b, change, n_perm, seed)
        pvalue = np.where(routed_experts[None, None, :], pvalue, np.nan)
        q = _bh_by_layer(pvalue)
        significant = q <= alpha
        data.update(pvalue=(dims, pvalue), q=(dims, q), significant=(dims, significant))
        attrs.update(
            inference="valid",
            test="two-sided paired label-swap permutation over items (seq_id)",
            correction="fdr_bh within each layer",
            min_pvalue=1.0 / (1 + n_perm),
            n_significant=int(significant.sum()),
            per_layer=[int(c) for c in significant.sum(axis=(0, 2))],
            unit="item",
        )
    coords: dict[str, Any] = {
        LANGUAGE: as_labels(base_run[LANGUAGE]),
        LAYER: base_run[LAYER].values,
        EXPERT: base_run[EXPERT].values,
        EXPERT_SHARED: (EXPERT, a.shared),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _swap_pvalues(
    base_run: xr.Dataset,
    aligned_run: xr.Dataset,
    a: _Routing,
    b: _Routing,
    observed: NDArray[np.float64],
    n_perm: int,
    seed: int,
) -> NDArray[np.float64]:
    """Label-swap permutation p-values of the share change, items swapped between the runs."""
    assert a.design is not None and b.design is not None
    plan_a = units(base_run, a.design, "item")
    plan_b = units(aligned_run, b.design, "item")
    only_a = sorted({k for _, k in plan_a.keys} - {k for _, k in plan_b.keys})
    only_b = sorted({k for _, k in plan_b.keys} - {k for _, k in plan_a.keys})
    if only_a or only_b:
        raise ParameterError(
            f"base_run and aligned_run must hold the same items (seq_id) to be compared item "
            f"by item; only in base_run: {only_a[:3]}, only in aligned_run: {only_b[:3]} "
            "(run both models on the same corpus)"
        )
    plan_b = plan_b.onto(plan_a, ("base_run", "aligned_run"))
    seeds = replicate_seeds(seed, n_perm)
    hits = np.zeros(observed.shape)
    valid = np.zeros(observed.shape)
    total = a.routed + b.routed
    tokens = a.tokens + b.tokens
    for b0 in range(0, n_perm, BLOCK):
        wa, wb = draw_swaps([plan_a, plan_b], seeds[b0 : b0 + BLOCK])
        routed, tok = _weighted(a, wa)
        r2, t2 = _weighted(b, wb)
        routed += r2
        tok += t2
        with np.errstate(divide="ignore", invalid="ignore"):
            first = routed / tok[..., None, None]
            second = (total[None] - routed) / (tokens[None] - tok)[..., None, None]
        stat = second - first
        ok = np.isfinite(stat)
        valid += ok.sum(axis=0)
        extreme = np.abs(np.where(ok, stat, 0.0)) >= np.abs(observed) - 1e-12
        hits += (ok & extreme).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid > 0, (1.0 + hits) / (1.0 + valid), np.nan)


def _weighted(r: _Routing, weights: NDArray[np.int64]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Weighted routing ``[replicate, language, layer, expert]`` and tokens ``[replicate,
    language]`` of a run's sequences."""
    assert r.seq_routed is not None and r.seq_tokens is not None and r.design is not None
    n_rep = weights.shape[0]
    _, n_layers, n_exp = r.routed.shape
    flat = r.seq_routed.reshape(r.seq_routed.shape[0], -1)
    routed = np.empty((n_rep, len(r.languages), n_layers, n_exp))
    tokens = np.empty((n_rep, len(r.languages)))
    w = weights.astype(np.float64)
    for k, m in enumerate(r.design.members):
        routed[:, k] = (w[:, m] @ flat[m]).reshape(n_rep, n_layers, n_exp)
        tokens[:, k] = w[:, m] @ r.seq_tokens[m]
    return routed, tokens


__all__ = ["EXPERT_TYPES", "language_experts", "routing_change"]
