"""Simulated mixture-of-experts routing with known truth, for the ``routing`` calibration family.

Each sequence (item ``i`` of language ``k``, 20-80 tokens) routes its tokens in layer ``l``
with its own probabilities ``p_ikl ~ Dirichlet(c * p_kl)`` around the language's truth ``p_kl``
over E routed experts (sequences that differ; ``c = inf``: every sequence routes with
``p_kl``), top-k as k multinomial picks per token. The truth share is ``top_k * p_kl`` and the
truth specificity follows from it. Some experts prefer one language (probability x3).

A second, "aligned" run routes the same items (same seq_ids, same lengths) with the same
per-item probabilities, multiplied by ``shift`` in the planted (language, layer, expert)
cells and renormalised (``shift = 1``: the null for every cell). Cells whose true share does
not change are the nulls of the routing-change test; the shifted ones its alternatives.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import xarray as xr

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
    ROLES,
    SEQ_ID,
    SEQ_LANGUAGE,
    SEQ_N_ROUTED,
    SEQ_N_TOKENS,
    SEQUENCE,
)


@dataclasses.dataclass(frozen=True)
class RoutingShape:
    """A simulated MoE routing design (see the module docstring)."""

    languages: int = 3
    items: int = 16  # sequences per language (one per item, the same items in every language)
    layers: int = 2
    experts: int = 8
    top_k: int = 2
    concentration: float = math.inf  # Dirichlet c of per-sequence routing (inf: none)
    shift: float = 2.0  # aligned-run factor of the planted cells (1: all null)

    def label(self) -> str:
        """A short description of the cell for tables."""
        het = (
            "multinomial"
            if math.isinf(self.concentration)
            else f"Dirichlet c={self.concentration:g}"
        )
        return (
            f"routing K={self.languages}, n={self.items}/lang, E={self.experts}, "
            f"top-{self.top_k}, {het}, shift x{self.shift:g}"
        )


def truth(shape: RoutingShape, seed: int) -> np.ndarray:
    """Routing probabilities ``p[language, layer, expert]``: random around uniform, and in each
    layer one expert per language routed three times as often in that language."""
    rng = np.random.default_rng([seed, 7])
    base = rng.dirichlet(np.full(shape.experts, 20.0), size=(shape.layers,))
    p = np.repeat(base[None], shape.languages, axis=0)
    for k in range(shape.languages):
        p[k, :, k % shape.experts] *= 3.0
    return p / p.sum(axis=-1, keepdims=True)


def planted(shape: RoutingShape) -> np.ndarray:
    """``[language, layer, expert]``: the cells the aligned run shifts (layer 0, the last
    expert, in the first language)."""
    cells = np.zeros((shape.languages, shape.layers, shape.experts), dtype=bool)
    cells[0, 0, shape.experts - 1] = True
    return cells


def _route(
    rng: np.random.Generator, tokens: np.ndarray, probs: np.ndarray, top_k: int
) -> np.ndarray:
    """Routed counts ``[sequence, layer, expert]``: ``top_k`` picks per token."""
    out = np.empty(probs.shape, dtype=np.int64)
    for s in range(probs.shape[0]):
        for li in range(probs.shape[1]):
            out[s, li] = rng.multinomial(int(tokens[s]) * top_k, probs[s, li])
    return out


def _run(
    shape: RoutingShape, routed: np.ndarray, tokens: np.ndarray, langs: list[str]
) -> xr.Dataset:
    """A MoE run (docs/design/moe.md) with per-sequence routing (response role only)."""
    k = shape.languages
    n = shape.items
    seq_language = np.repeat(langs, n)
    per_lang = routed.reshape(k, n, shape.layers, shape.experts).sum(axis=1)
    tok_lang = tokens.reshape(k, n).sum(axis=1)
    zeros = np.zeros_like(per_lang)
    both = np.stack([zeros, per_lang], axis=1)
    seq = np.stack([np.zeros_like(routed), routed], axis=1)
    return xr.Dataset(
        {
            N_ACTIVE: (
                (LANGUAGE, ROLE, LAYER, EXPERT, NEURON),
                np.zeros((*both.shape, 1), dtype=np.int64),
            ),
            N_ROUTED: ((LANGUAGE, ROLE, LAYER, EXPERT), both),
            N_TOKENS: ((LANGUAGE, ROLE), np.stack([np.zeros_like(tok_lang), tok_lang], axis=1)),
            SEQ_N_ROUTED: ((SEQUENCE, ROLE, LAYER, EXPERT), seq),
            SEQ_N_TOKENS: ((SEQUENCE, ROLE), np.stack([np.zeros_like(tokens), tokens], axis=1)),
            SEQ_LANGUAGE: ((SEQUENCE,), seq_language),
            SEQ_ID: ((SEQUENCE,), np.array([f"item{i}" for _ in langs for i in range(n)])),
        },
        coords={
            LANGUAGE: langs,
            ROLE: list(ROLES),
            LAYER: np.arange(shape.layers),
            EXPERT: np.arange(shape.experts),
            NEURON: [0],
            EXPERT_SHARED: (EXPERT, np.zeros(shape.experts, dtype=bool)),
            EXPERT_NEURONS: (EXPERT, np.ones(shape.experts, dtype=np.int64)),
        },
    )


def simulate_routing_pair(
    shape: RoutingShape, p: np.ndarray, rng: np.random.Generator
) -> tuple[xr.Dataset, xr.Dataset]:
    """A base run and its aligned run over the same items (see the module docstring)."""
    k, n = shape.languages, shape.items
    langs = [f"l{i}" for i in range(k)]
    tokens = rng.integers(20, 81, size=k * n)
    probs = np.repeat(p, n, axis=0)  # [sequence, layer, expert]
    if not math.isinf(shape.concentration):
        alpha = shape.concentration * probs
        g = rng.gamma(alpha)
        probs = g / g.sum(axis=-1, keepdims=True)
    factor = np.where(planted(shape), shape.shift, 1.0)
    shifted = probs * np.repeat(factor, n, axis=0)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    base = _run(shape, _route(rng, tokens, probs, shape.top_k), tokens, langs)
    aligned = _run(shape, _route(rng, tokens, shifted, shape.top_k), tokens, langs)
    return base, aligned


def true_values(shape: RoutingShape, p: np.ndarray) -> dict[str, np.ndarray]:
    """The estimands: shares (base and aligned) and the base specificity.

    With per-sequence Dirichlet routing, the share estimand is the token-weighted mean
    routing probability, ``top_k * p`` (lengths are independent of routing); the aligned share
    is the expected share after the shift, computed from the same per-sequence model by
    Monte Carlo when sequences differ."""
    share = shape.top_k * p
    cells = planted(shape)
    factor = np.where(cells, shape.shift, 1.0)
    rows = cells.any(axis=-1)  # (language, layer) rows whose shares the shift moves
    aligned = share.copy()
    if math.isinf(shape.concentration):
        q = p * factor
        moved = shape.top_k * q / q.sum(axis=-1, keepdims=True)
    else:  # the mean of the renormalised per-sequence probabilities, by Monte Carlo
        rng = np.random.default_rng(12345)
        g = rng.gamma(shape.concentration * np.repeat(p[None], 20000, axis=0))
        draws = g / g.sum(axis=-1, keepdims=True)
        q = draws * factor
        moved = shape.top_k * (q / q.sum(axis=-1, keepdims=True)).mean(axis=0)
    aligned[rows] = moved[rows]
    prof = share / share.sum(axis=0, keepdims=True)
    h = -(prof * np.log(prof)).sum(axis=0) / np.log(shape.languages)
    return {"share": share, "aligned": aligned, "specificity": 1.0 - h}


def routing_replicate(
    shape: RoutingShape, rng: np.random.Generator, n_boot: int, n_perm: int, seed: int
) -> dict[str, dict[str, float]]:
    """One replicate: coverage of the share and specificity intervals of ``language_experts``
    and FPR / FDR / power of ``routing_change`` at q = 0.05 (BH within each layer)."""
    from langneurons.analysis import language_experts, routing_change

    p = truth(shape, seed)
    truths = true_values(shape, p)
    base, aligned = simulate_routing_pair(shape, p, rng)
    run_seed = int(rng.integers(0, 2**31))
    experts = language_experts(base, n_boot=n_boot, seed=run_seed)
    out: dict[str, dict[str, float]] = {}

    def cover(name: str, truth_value: np.ndarray) -> float:
        low = experts[f"{name}_low"].values
        high = experts[f"{name}_high"].values
        return float(np.mean((low <= truth_value + 1e-12) & (truth_value - 1e-12 <= high)))

    desc = float(experts.attrs["inference"] == "descriptive")
    out["language_experts share"] = {
        "coverage": cover("share", truths["share"]),
        "descriptive": desc,
    }
    spec_desc = experts.attrs.get("specificity_inference") == "descriptive"
    out["language_experts specificity"] = {
        "coverage": cover("specificity", truths["specificity"]),
        "descriptive": max(desc, float(spec_desc)),
    }
    change = routing_change(base, aligned, n_perm=n_perm, seed=run_seed)
    alt = np.abs(truths["aligned"] - truths["share"]) > 1e-9
    pvalue = change["pvalue"].values
    sig = change["significant"].values
    levels = {"fpr_05": 0.05, "fpr_01": 0.01, "fpr_001": 0.001}
    metrics: dict[str, float] = {c: float(np.mean(pvalue[~alt] <= a)) for c, a in levels.items()}
    metrics["fdr"] = float((sig & ~alt).sum() / max(int(sig.sum()), 1))
    # power at the stated effect: the planted cell (the renormalisation moves the other cells
    # of its row a little; they count as alternatives for the FDR, not for the power)
    metrics["power"] = float(sig[planted(shape)].mean())
    metrics["descriptive"] = float(change.attrs["inference"] == "descriptive")
    out["routing_change"] = metrics
    return out


#: Permutations of the routing-change test: its smallest p is 1 / (1 + n_perm), and BH over
#: the K x E cells of a layer needs it well below 0.05 / (K E).
PERMUTATIONS = 1000


def routing_cells(quick: bool = False) -> list[dict[str, Any]]:
    """The grid: few items (8, 16) and more (32), multinomial or differing sequences (c = 20,
    c = 5)."""
    if quick:
        return [dict(shape=RoutingShape(items=8, concentration=20.0), reps=10, n_boot=100)]
    cells = [
        dict(shape=RoutingShape(items=n, concentration=c), reps=40, n_boot=200)
        for n in (8, 32)
        for c in (math.inf, 20.0)
    ]
    # sequences that differ a lot (c = 5), few items; a larger shift for the power column
    cells.append(
        dict(shape=RoutingShape(items=8, concentration=5.0, shift=3.0), reps=40, n_boot=200)
    )
    cells.append(
        dict(shape=RoutingShape(items=16, concentration=5.0, shift=3.0), reps=40, n_boot=200)
    )
    return cells
