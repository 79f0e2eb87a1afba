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

#: Neuron types of a selected neuron (disjoint), in report order.
TYPES: Final = ("specific", "related", "general", "unassigned")
#: Every value of ``neuron_type`` in an identification ("none": not selected).
ALL_TYPES: Final = (*TYPES, "none")
