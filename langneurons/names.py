"""The shared vocabulary of every room: dimension, role, variable and neuron-type names.

The ground floor: this module imports nothing of langneurons, so ``store`` (which writes these
names to disk), ``analysis`` (which reads them), ``extract`` and ``reports`` all take them from
one place. The on-disk schema built from them is :mod:`langneurons.store.schema`.
"""

from __future__ import annotations

from typing import Final, Literal

# dimensions of a run
LANGUAGE: Final = "language"
ROLE: Final = "role"
LAYER: Final = "layer"
NEURON: Final = "neuron"
SEQUENCE: Final = "sequence"
#: Mixture-of-experts runs only: the expert a neuron lives in (docs/design/moe.md).
EXPERT: Final = "expert"

#: The token roles a run stores, in store order.
ROLES: Final = ("prompt", "response")
#: A stored token role.
Role = Literal["prompt", "response"]
#: A role an analysis reads: a stored one, or ``"all"`` (both summed).
ReadRole = Literal["response", "prompt", "all"]

COUNT_DIMS: Final = (LANGUAGE, ROLE, LAYER, NEURON)
SEQ_DIMS: Final = (SEQUENCE, ROLE, LAYER, NEURON)

# variables of a run
N_ACTIVE: Final = "n_active"
N_TOKENS: Final = "n_tokens"
ACT_SUM: Final = "act_sum"
ACT_SQSUM: Final = "act_sqsum"
SEQ_N_ACTIVE: Final = "seq_n_active"
SEQ_N_TOKENS: Final = "seq_n_tokens"
SEQ_LANGUAGE: Final = "seq_language"
SEQ_ID: Final = "seq_id"

# mixture-of-experts runs (docs/design/moe.md): dense runs have none of these
#: ``n_active[language, role, layer, expert, neuron]`` in a MoE run.
MOE_COUNT_DIMS: Final = (LANGUAGE, ROLE, LAYER, EXPERT, NEURON)
MOE_SEQ_DIMS: Final = (SEQUENCE, ROLE, LAYER, EXPERT, NEURON)
#: ``n_routed[language, role, layer, expert]``: tokens routed to the expert (the denominator).
N_ROUTED: Final = "n_routed"
#: ``seq_n_routed[sequence, role, layer, expert]``: the same per sequence (optional).
SEQ_N_ROUTED: Final = "seq_n_routed"
#: Coordinate ``expert_shared[expert]``: True for a shared (always-on) expert.
EXPERT_SHARED: Final = "expert_shared"
#: Coordinate ``expert_neurons[expert]``: neurons the expert has; ``neuron`` >= it is padding.
EXPERT_NEURONS: Final = "expert_neurons"
#: Run attribute of a MoE run: ``{"n_experts", "n_shared", "top_k", "model_type"}``.
MOE_ATTR: Final = "moe"

#: Neuron types of a selected neuron (disjoint), in report order.
TYPES: Final = ("specific", "related", "general", "unassigned")
#: Every value of ``neuron_type`` in an identification ("none": not selected).
ALL_TYPES: Final = (*TYPES, "none")
