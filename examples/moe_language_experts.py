"""A small simulated mixture-of-experts store with known language experts, for the README.

Two runs of one 4-layer MoE (8 routed experts, top-2, one shared expert, 16 neurons each) over
the same 24 items in en, de, fr: in layer 2 the router sends German tokens to expert 3 three
times as often as the other languages' tokens, and in the "aligned" run layer 0 sends French
tokens to expert 5 twice as often as the base run does. Neuron 7 of expert 3 in layer 2 fires
on German tokens only. Usage::

    python examples/moe_language_experts.py moe.zarr
    langneurons identify moe.zarr --run moe/base --method lape --rank layer
    langneurons stats experts moe.zarr --run moe/base --compare moe/aligned
"""

from __future__ import annotations

import sys

import numpy as np

from langneurons.store import Counts, MoeLayout, create_store

LANGS = ["en", "de", "fr"]
LAYERS, EXPERTS, SHARED, TOP_K, NEURONS, ITEMS = 4, 8, 1, 2, 16, 24


def counts(aligned: bool, seed: int) -> Counts:
    rng = np.random.default_rng(seed)
    layout = MoeLayout((NEURONS,) * (EXPERTS + SHARED), n_shared=SHARED, top_k=TOP_K)
    rows = len(LANGS) * ITEMS
    tokens = np.stack([rng.integers(5, 15, rows), rng.integers(20, 80, rows)], axis=1)
    routed = np.zeros((rows, 2, LAYERS, EXPERTS + SHARED), dtype=np.int64)
    active = np.zeros((*routed.shape, NEURONS), dtype=np.int64)
    rate = rng.uniform(0.05, 0.6, size=(LAYERS, EXPERTS + SHARED, NEURONS))
    for i in range(rows):
        lang = LANGS[i // ITEMS]
        for layer in range(LAYERS):
            weight = np.ones(EXPERTS)
            if layer == 2 and lang == "de":
                weight[3] = 3.0
            if aligned and layer == 0 and lang == "fr":
                weight[5] = 2.0
            for r in range(2):
                n = int(tokens[i, r])
                # top-k distinct experts per token: Gumbel top-k of the routing logits
                keys = np.log(weight)[None, :] + rng.gumbel(size=(n, EXPERTS))
                chosen = np.argsort(-keys, axis=1)[:, :TOP_K]
                routed[i, r, layer, :EXPERTS] = np.bincount(chosen.ravel(), minlength=EXPERTS)
                routed[i, r, layer, EXPERTS:] = n
                p = rate[layer].copy()
                if layer == 2:
                    p[3, 7] = 0.8 if lang == "de" else 0.0
                active[i, r, layer] = rng.binomial(routed[i, r, layer][:, None], p)
    k = len(LANGS)
    return Counts(
        LANGS,
        active.reshape(k, ITEMS, *active.shape[1:]).sum(axis=1),
        tokens.reshape(k, ITEMS, 2).sum(axis=1),
        n_routed=routed.reshape(k, ITEMS, *routed.shape[1:]).sum(axis=1),
        moe=layout,
        seq_n_active=active.astype(np.uint16),
        seq_n_routed=routed,
        seq_n_tokens=tokens,
        seq_language=[lang for lang in LANGS for _ in range(ITEMS)],
        seq_id=[f"item{i % ITEMS}" for i in range(rows)],
    )


def main(path: str) -> None:
    store = create_store(path)
    for run, aligned, seed in (("moe/base", False, 1), ("moe/aligned", True, 2)):
        c = counts(aligned, seed)
        assert c.moe is not None
        store.create_run(
            run, n_layers=LAYERS, n_neurons=c.moe.n_neurons, moe=c.moe, counts=c, sequences=True
        )
    print(f"wrote {path}: runs moe/base and moe/aligned")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "moe.zarr")
