"""How :func:`langneurons.extract.ablation.ablate` takes a mixture-of-experts mask.

A mask with an ``expert`` dim switches off neurons inside experts (``[language, layer, expert,
neuron]``) or whole experts (``[language, layer, expert]``, or a ``stats experts`` result's
``preferred``); :class:`MoeDeactivation` checks each language's set against the model, draws its
matched random controls and switches it off with :mod:`langneurons.extract.moe_ablation`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from langneurons.errors import ParameterError
from langneurons.extract._moe import is_moe_plan
from langneurons.extract.moe_ablation import (
    MoeTargets,
    check_expert_units,
    check_neuron_units,
    deactivate_moe,
    mask_experts,
    moe_targets,
    random_expert_control,
    random_neuron_control,
)
from langneurons.names import EXPERT, LANGUAGE, LAYER, NEURON

NEURON_UNIT, EXPERT_UNIT = "neuron", "expert"


def check_source(source: str) -> str:
    """The result kind ablate reads its mask from: an identification or ``stats experts``."""
    if source not in ("identification", "stats"):
        raise ParameterError(f"source must be 'identification' or 'stats', got {source!r}")
    return source


def identification_mask(result: xr.Dataset, name: str) -> xr.DataArray:
    """The per-language mask of a saved result: ``mask``, or the language experts' ``preferred``
    (``[layer, expert, language]``) as an expert mask."""
    if "mask" in result:
        return result["mask"]
    if "preferred" in result and set(result["preferred"].dims) == {LANGUAGE, LAYER, EXPERT}:
        return result["preferred"].transpose(LANGUAGE, LAYER, EXPERT)
    raise ParameterError(f"identification {name!r} holds no per-language mask")


def mask_unit(mask: xr.DataArray, name: str) -> str | None:
    """None for a dense mask ``[language, layer, neuron]``; ``"neuron"`` for neurons inside
    experts ``[language, layer, expert, neuron]``; ``"expert"`` for whole experts
    ``[language, layer, expert]``."""
    dims = set(mask.dims)
    for unit, expected in (
        (None, {LANGUAGE, LAYER, NEURON}),
        (NEURON_UNIT, {LANGUAGE, LAYER, EXPERT, NEURON}),
        (EXPERT_UNIT, {LANGUAGE, LAYER, EXPERT}),
    ):
        if dims == expected:
            return unit
    raise ParameterError(
        f"the mask of identification {name!r} has dims {tuple(mask.dims)}; expected "
        "(language, layer, neuron), (language, layer, expert, neuron) or (language, layer, expert)"
    )


def language_sets(
    mask: xr.DataArray, unit: str, languages: list[str]
) -> dict[str, dict[Any, np.ndarray]]:
    """Each language's units from a MoE mask: ``{(layer, expert): neurons}`` or ``{layer:
    experts}``."""
    out: dict[str, dict[Any, np.ndarray]] = {}
    if unit == NEURON_UNIT:
        values = np.asarray(mask.transpose(LANGUAGE, LAYER, EXPERT, NEURON).values, dtype=bool)
    else:
        values = np.asarray(mask.transpose(LANGUAGE, LAYER, EXPERT).values, dtype=bool)
    index = {str(x): k for k, x in enumerate(mask[LANGUAGE].values)}
    for lang in languages:
        own = values[index[lang]]
        if unit == NEURON_UNIT:
            out[lang] = {
                (layer, expert): np.flatnonzero(own[layer, expert])
                for layer in range(own.shape[0])
                for expert in range(own.shape[1])
                if own[layer, expert].any()
            }
        else:
            out[lang] = {layer: np.flatnonzero(own[layer]) for layer in range(own.shape[0])}
    return out


@dataclasses.dataclass(frozen=True)
class MoeDeactivation:
    """How :func:`langneurons.extract.ablation.ablate` switches a MoE mask's sets off."""

    unit: str  # NEURON_UNIT or EXPERT_UNIT
    targets: MoeTargets

    @property
    def control_rule(self) -> str:
        """What the random controls are, for the result's attributes."""
        if self.unit == NEURON_UNIT:
            return (
                "same count per layer and expert, drawn from the expert's neurons outside the set"
            )
        return (
            "same count of routed and of shared experts per layer, drawn from the layer's "
            "experts outside the set"
        )

    def check(self, units: Mapping[Any, np.ndarray]) -> None:
        """Refuse units the model does not have (or a masking that leaves too few experts)."""
        if self.unit == NEURON_UNIT:
            check_neuron_units(self.targets, units)
        else:
            check_expert_units(self.targets, units)

    def control(self, units: Mapping[Any, np.ndarray], rng: np.random.Generator) -> dict[Any, Any]:
        """A matched random set."""
        t = self.targets
        if self.unit == NEURON_UNIT:
            return dict(random_neuron_control(units, t.expert_neurons, rng))
        return dict(random_expert_control(units, t.n_experts, t.n_shared, rng))

    def switch_off(
        self, units: Mapping[Any, np.ndarray]
    ) -> contextlib.AbstractContextManager[None]:
        """The context in which the set is off."""
        if self.unit == NEURON_UNIT:
            return deactivate_moe(self.targets, units)
        return mask_experts(self.targets, units)


def check_run(unit: str | None, run_ds: xr.Dataset, name: str, run: str) -> None:
    """Refuse a MoE mask on a dense run and a dense mask on a MoE run."""
    if (unit is None) == (EXPERT in run_ds.dims):
        has = (
            f"no expert dim but run {run!r} is a mixture of experts"
            if unit is None
            else f"an expert dim but run {run!r} is dense"
        )
        raise ParameterError(
            f"identification {name!r} has {has}; ablate an identification made on this run"
        )


def for_ablation(
    loaded: Any, unit: str | None, name: str, run: str, run_ds: xr.Dataset
) -> MoeDeactivation | None:
    """The MoE deactivation of a loaded model for a mask of ``unit`` (None: dense), or the
    one-line refusal of a dense mask on a MoE model and the reverse."""
    moe = is_moe_plan(loaded.plan)
    if unit is None and moe:
        raise ParameterError(
            f"identification {name!r} is a dense mask (language, layer, neuron) but the model is "
            "a mixture of experts; identify the neurons per expert on a MoE run of this model"
        )
    if unit is not None and not moe:
        raise ParameterError(
            f"identification {name!r} deactivates {unit}s inside experts but the model is dense; "
            "ablate with the mixture-of-experts model of the run"
        )
    if unit is None:
        return None
    targets = moe_targets(loaded.model, loaded.plan)
    total = targets.n_experts + targets.n_shared
    if EXPERT in run_ds.dims and run_ds.sizes[EXPERT] != total:
        raise ParameterError(
            f"run {run!r} has {run_ds.sizes[EXPERT]} experts per layer but the model has {total}; "
            "ablate with the run's model"
        )
    return MoeDeactivation(unit, targets)


__all__ = [
    "EXPERT_UNIT",
    "NEURON_UNIT",
    "MoeDeactivation",
    "check_run",
    "check_source",
    "for_ablation",
    "identification_mask",
    "language_sets",
    "mask_unit",
]
