"""Hand-built mixture-of-experts runs following docs/design/moe.md (tests only)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from langneurons.names import (
    EXPERT,
    EXPERT_NEURONS,
    EXPERT_SHARED,
    LANGUAGE,
    LAYER,
    MOE_ATTR,
    NEURON,
    ROLE,
    ROLES,
    SEQ_ID,
    SEQ_LANGUAGE,
    SEQ_N_TOKENS,
    SEQUENCE,
)


def moe_run(
    n_active: np.ndarray,
    n_routed: np.ndarray,
    n_tokens: np.ndarray,
    *,
    languages: tuple[str, ...] = ("en", "de", "fr"),
    expert_neurons: np.ndarray | None = None,
    top_k: int = 2,
    n_shared: int = 0,
) -> xr.Dataset:
    """A MoE run from response counts ``n_active[language, layer, expert, neuron]``,
    ``n_routed[language, layer, expert]`` and ``n_tokens[language]`` (the prompt role holds
    the same counts, so role="all" doubles them)."""
    k, n_layers, n_experts, n_neurons = n_active.shape
    act = np.stack([n_active, n_active], axis=1).astype(np.int64)
    rout = np.stack([n_routed, n_routed], axis=1).astype(np.int64)
    tok = np.stack([n_tokens, n_tokens], axis=1).astype(np.int64)
    if expert_neurons is None:
        expert_neurons = np.full(n_experts, n_neurons)
    shared = np.zeros(n_experts, dtype=bool)
    if n_shared:
        shared[-n_shared:] = True
    return xr.Dataset(
        {
            "n_active": ((LANGUAGE, ROLE, LAYER, EXPERT, NEURON), act),
            "n_routed": ((LANGUAGE, ROLE, LAYER, EXPERT), rout),
            "n_tokens": ((LANGUAGE, ROLE), tok),
        },
        coords={
            LANGUAGE: list(languages[:k]),
            ROLE: list(ROLES),
            LAYER: np.arange(n_layers),
            EXPERT: np.arange(n_experts),
            NEURON: np.arange(n_neurons),
            EXPERT_SHARED: (EXPERT, shared),
            EXPERT_NEURONS: (EXPERT, np.asarray(expert_neurons, dtype=np.int64)),
        },
        attrs={
            MOE_ATTR: {
                "n_experts": n_experts - n_shared,
                "n_shared": n_shared,
                "top_k": top_k,
                "model_type": "synthetic",
            }
        },
    )


def routing_run(
    seq_routed: np.ndarray,
    seq_tokens: np.ndarray,
    seq_language: list[str],
    *,
    languages: tuple[str, ...],
    seq_ids: list[str] | None = None,
    top_k: int = 1,
    n_neurons: int = 2,
) -> xr.Dataset:
    """A MoE run with per-sequence routing ``seq_routed[sequence, layer, expert]`` and tokens
    ``seq_tokens[sequence]`` (response role; prompt role empty). Neuron counts are 0."""
    n_seq, n_layers, n_experts = seq_routed.shape
    lang_idx = np.array([languages.index(x) for x in seq_language])
    routed = np.zeros((len(languages), n_layers, n_experts), dtype=np.int64)
    tokens = np.zeros(len(languages), dtype=np.int64)
    for s in range(n_seq):
        routed[lang_idx[s]] += seq_routed[s]
        tokens[lang_idx[s]] += seq_tokens[s]
    zeros = np.zeros_like(routed)
    run = moe_run(
        np.zeros((len(languages), n_layers, n_experts, n_neurons), dtype=np.int64),
        routed,
        tokens,
        languages=languages,
        top_k=top_k,
    )
    run["n_routed"] = ((LANGUAGE, ROLE, LAYER, EXPERT), np.stack([zeros, routed], axis=1))
    run["n_tokens"] = ((LANGUAGE, ROLE), np.stack([np.zeros_like(tokens), tokens], axis=1))
    run["n_active"] = run["n_active"] * 0
    seq = np.stack([np.zeros_like(seq_routed), seq_routed], axis=1).astype(np.int64)
    st = np.stack([np.zeros_like(seq_tokens), seq_tokens], axis=1).astype(np.int64)
    run["seq_n_routed"] = ((SEQUENCE, ROLE, LAYER, EXPERT), seq)
    run[SEQ_N_TOKENS] = ((SEQUENCE, ROLE), st)
    run[SEQ_LANGUAGE] = ((SEQUENCE,), np.array(seq_language))
    if seq_ids is not None:
        run[SEQ_ID] = ((SEQUENCE,), np.array(seq_ids))
    return run
