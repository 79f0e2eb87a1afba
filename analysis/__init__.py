"""langneurons.analysis: pure functions over xarray objects (no torch, no GPU)."""

from __future__ import annotations

from langneurons.analysis import _accessor as _accessor  # registers ds.neurons
from langneurons.analysis.accuracy import accuracy_effects
from langneurons.analysis.compare import (
    cochran_q,
    language_overlap,
    mcnemar,
    overlap,
    spontaneous_alignment,
    trajectories,
    transition_table,
)
from langneurons.analysis.cross_model import compare_models
from langneurons.analysis.deactivation import deactivation_effects
from langneurons.analysis.distributions import (
    TYPES,
    compare_type_distributions,
    mask_change,
    shared_by_change,
    type_change,
    type_table,
)
from langneurons.analysis.groups import group_comparison
from langneurons.analysis.identify import (
    identify,
    masks_from_lists,
    masks_to_lists,
    select,
    summary,
)
from langneurons.analysis.membership import membership_change
from langneurons.analysis.model_groups import compare_model_groups
from langneurons.analysis.neuron_tests import (
    compare_with_identification,
    language_preference_tests,
)
from langneurons.analysis.params import IdentifyParams
from langneurons.analysis.routing import language_experts, routing_change
from langneurons.analysis.stability import bootstrap_identification
from langneurons.analysis.stages import (
    FOUR_STAGES,
    bootstrap_stages,
    segment_stages,
    stage_profile,
)
from langneurons.analysis.switches import type_switches
from langneurons.analysis.uncertainty import activation_probability

__all__ = [
    "FOUR_STAGES",
    "TYPES",
    "accuracy_effects",
    "activation_probability",
    "bootstrap_identification",
    "compare_with_identification",
    "language_experts",
    "language_overlap",
    "language_preference_tests",
    "bootstrap_stages",
    "cochran_q",
    "compare_model_groups",
    "compare_models",
    "compare_type_distributions",
    "deactivation_effects",
    "IdentifyParams",
    "identify",
    "mask_change",
    "masks_from_lists",
    "masks_to_lists",
    "mcnemar",
    "membership_change",
    "group_comparison",
    "overlap",
    "routing_change",
    "segment_stages",
    "select",
    "shared_by_change",
    "spontaneous_alignment",
    "stage_profile",
    "summary",
    "trajectories",
    "transition_table",
    "type_change",
    "type_switches",
    "type_table",
]
