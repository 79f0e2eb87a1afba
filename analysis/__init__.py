"""langneurons.analysis: pure functions over xarray objects (no torch, no GPU).

Import cost. The identification (:func:`identify`, :func:`select`, :func:`summary`, the mask
lists and :class:`IdentifyParams`) is imported with the package: it computes in numpy and
imports xarray only when given xarray objects, so ``identify`` on a
:class:`~langneurons.plain.PlainDataset` (the command line's path) never imports xarray,
pandas, dask or scipy. Every other name is imported when first used (PEP 562 ``__getattr__``),
with the module that defines it.

The ``ds.neurons`` accessor (:mod:`._accessor`, which imports xarray) is registered on the
first use of any of those lazily imported names, and at once by ``import langneurons.analysis``
when xarray is already imported (the usual case: a program that holds a Dataset has imported
xarray first). A program that imports this package, then xarray, and uses only the
identification names registers it with ``import langneurons.analysis._accessor``.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

# `identify` is also the name of a submodule: binding the function here, at import, keeps
# `langneurons.analysis.identify` the function whatever imports the submodule later
from langneurons.analysis.identify import (
    identify,
    masks_from_lists,
    masks_to_lists,
    select,
    summary,
)
from langneurons.analysis.params import IdentifyParams

if TYPE_CHECKING:
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
    from langneurons.analysis.membership import membership_change
    from langneurons.analysis.model_groups import compare_model_groups
    from langneurons.analysis.neuron_tests import (
        compare_with_identification,
        language_preference_tests,
    )
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

#: Public name -> the module (under langneurons.analysis) that defines it, imported on first use.
_LAZY: dict[str, str] = {
    "accuracy_effects": "accuracy",
    "cochran_q": "compare",
    "language_overlap": "compare",
    "mcnemar": "compare",
    "overlap": "compare",
    "spontaneous_alignment": "compare",
    "trajectories": "compare",
    "transition_table": "compare",
    "compare_models": "cross_model",
    "deactivation_effects": "deactivation",
    "TYPES": "distributions",
    "compare_type_distributions": "distributions",
    "mask_change": "distributions",
    "shared_by_change": "distributions",
    "type_change": "distributions",
    "type_table": "distributions",
    "group_comparison": "groups",
    "membership_change": "membership",
    "compare_model_groups": "model_groups",
    "compare_with_identification": "neuron_tests",
    "language_preference_tests": "neuron_tests",
    "language_experts": "routing",
    "routing_change": "routing",
    "bootstrap_identification": "stability",
    "FOUR_STAGES": "stages",
    "bootstrap_stages": "stages",
    "segment_stages": "stages",
    "stage_profile": "stages",
    "type_switches": "switches",
    "activation_probability": "uncertainty",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'langneurons.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"langneurons.analysis.{module}"), name)
    importlib.import_module("langneurons.analysis._accessor")  # registers ds.neurons
    globals()[name] = value  # later look-ups skip this function
    return value


if "xarray" in sys.modules:  # xarray is there already: register ds.neurons now, as before
    importlib.import_module("langneurons.analysis._accessor")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
