"""Random but valid mixture-of-experts counts, for the tests of every room (docs/design/moe.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from langneurons.store import Counts, MoeLayout


def make_moe_counts(
    languages: Sequence[str],
    *,
    layers: int = 2,
    experts: int = 4,
    shared: int = 1,
    top_k: int = 2,
    neurons: int = 6,
    expert_neurons: Sequence[int] | None = None,
    sequences: int = 0,
    moments: bool = False,
    seed: int = 0,
    model_type: str = "qwen2_moe",
) -> Counts:
    """Counts of a MoE model whose every invariant holds: each token is routed to ``top_k`` of
    ``experts`` routed experts per layer (and to every one of ``shared`` shared experts), and a
    neuron counts a subset of its expert's routed tokens.

    ``expert_neurons`` (one per expert, routed then shared) gives experts of different sizes:
    ``neurons`` is then their maximum, and each expert's higher neurons are padding (0).
    With ``sequences``, that many per language, whose per-sequence counts add up exactly.
    """
    rng = np.random.default_rng(seed)
    size = experts + shared
    per_expert = list(expert_neurons) if expert_neurons is not None else [neurons] * size
    moe = MoeLayout(tuple(per_expert), n_shared=shared, top_k=top_k, model_type=model_type)
    width = moe.n_neurons
    rows = len(languages) * max(sequences, 1)
    tokens = rng.integers(1, 30, size=(rows, 2)) if sequences else rng.integers(20, 120, (rows, 2))
    routed = np.zeros((rows, 2, layers, size), dtype=np.int64)
    for i in range(rows):
        for r in range(2):
            for layer in range(layers):
                scores = rng.random((int(tokens[i, r]), experts))
                chosen = np.argsort(scores, axis=1)[:, :top_k]  # top_k distinct experts a token
                routed[i, r, layer, :experts] = np.bincount(chosen.ravel(), minlength=experts)
    routed[..., experts:] = tokens[:, :, None, None]
    active = rng.binomial(routed[..., None], rng.random(width) * 0.8).astype(np.int64)
    padding = np.arange(width)[None, :] >= np.asarray(per_expert)[:, None]
    active[..., padding] = 0
    kwargs: dict[str, object] = {"moe": moe}
    if sequences:
        k = len(languages)
        kwargs.update(
            seq_n_active=active.astype(np.uint16),
            seq_n_routed=routed,
            seq_n_tokens=tokens,
            seq_language=[lang for lang in languages for _ in range(sequences)],
            seq_id=[f"item{i % sequences}" for i in range(rows)],
        )
        tokens = tokens.reshape(k, sequences, 2).sum(axis=1)
        routed = routed.reshape(k, sequences, *routed.shape[1:]).sum(axis=1)
        active = active.reshape(k, sequences, *active.shape[1:]).sum(axis=1)
    if moments:
        kwargs["act_sum"] = np.where(padding, 0.0, active * 0.25 + rng.random(active.shape))
        kwargs["act_sqsum"] = np.where(padding, 0.0, active * 0.5 + rng.random(active.shape))
    return Counts(list(languages), active, tokens, n_routed=routed, **kwargs)  # type: ignore[arg-type]
