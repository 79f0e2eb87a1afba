"""The kinds of saved results a report recognises, by their variables, and what it draws of each.

A registry (:data:`KINDS`), not an if-chain: each :class:`Kind` names the variables that
identify it, the variables of its key table in the sources, and a builder of its figure calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Final

import xarray as xr

from langneurons.names import LANGUAGE, LAYER
from langneurons.reports._blocks import Call, Derive, Load
from langneurons.reports.derived import DEACTIVATION_N_PERM

#: What each figure counts, for its caption.
CAPTIONS: Final[Mapping[str, str]] = {
    "layer_types": (
        "Specific (1 language) and related (2..K-1 languages) neurons are counted among the "
        "rule's selected neurons, per layer (upper panels); general neurons (above tau in all K "
        "languages) are counted over all neurons (lower panels, own axis). Shaded bands and "
        "numbers: stages; bars at the top: bootstrap intervals of the stage boundaries."
    ),
    "per_language": (
        "Selected neurons assigned to each language (P > tau there), split into specific and "
        "related; black tick: the language's whole mask."
    ),
    "overlap_matrix": (
        "Jaccard index |A ∩ B| / |A ∪ B| of the neuron sets named on the axes; grey cells: "
        "both sets empty."
    ),
    "shared_by": "All neurons, by the number N of languages in which P > tau.",
    "expert_neurons": (
        "Language neurons (the language's mask: selected, P > tau, with P = n_active / "
        "n_routed) in each expert (columns) of each layer (rows); grey: the expert received "
        "too few tokens of some language there (undefined P, left out)."
    ),
    "routing_shares": (
        "Fraction of each language's tokens that the router of a layer (rows) sends to each "
        "routed expert (columns), n_routed / n_tokens; summed over a layer it is top_k. "
        "Outlined: experts specific to the language (share above ratio x their mean share)."
    ),
    "type_change": (
        "Change in the number of neurons of each type, per layer and over all layers (second "
        "run minus first), with bootstrap percentile intervals from resampling sequences; "
        "specific, related, unassigned: of the selected neurons; general: of all neurons."
    ),
    "transitions": (
        "Every neuron's type in the first run (rows) and in the second (columns); cells: "
        "neurons, colour: fraction of the row. none: not selected by the rule; unassigned: "
        "selected, but above tau in no language."
    ),
    "deactivation_heatmap": (
        "Cells: perplexity change (%) on the evaluated language (columns) when the row "
        "language's neurons are switched off, and below it the mean over random sets of the "
        "same size in the same layers (ctrl). Right: own-language damage minus the mean damage "
        "on the other languages, against the same for each random set, with the control p-value."
    ),
    "accuracy_heatmap": (
        "Cells: accuracy drop in percentage points (baseline minus accuracy with the row "
        "language's neurons of the panel switched off) on the evaluated language (columns, "
        "with its baseline accuracy and items), and below it the mean drop over random sets of "
        "the same size in the same layers (ctrl). An answer is correct when its final number is "
        "the reference and it is written in the question's language."
    ),
    "stability": (
        "Left: neurons selected in at least one bootstrap replicate (sequences resampled within "
        "each language), by the fraction of replicates that selected them. Right: per language, "
        "the Jaccard index of each replicate's mask with the full-data mask."
    ),
    "model_profiles": (
        "Layer profiles on relative depth layer/(L-1), binned on one grid for every model: in "
        "each bin, the fraction of the model's neurons there that are of the type (specific, "
        "related, unassigned: selected neurons; general: any neuron above tau in all the "
        "model's languages); bands: item-bootstrap percentile intervals (descriptive); dotted "
        "lines: where each model's stages begin."
    ),
    "model_shares": (
        "Neuron types as a fraction of all the model's neurons (left) and of its selected set "
        "(right; general: the selected general neurons); bars: item-bootstrap percentile "
        "intervals, which show stability, not coverage of the population share (descriptive)."
    ),
    "model_jaccard": (
        "Jaccard index |M_k ∩ M_l| / |M_k ∪ M_l| of the masks of two languages, per model, over "
        "the languages every model has (diagonal left blank); titles: Mantel correlation with "
        "the first model's matrix and its permutation p (languages permuted jointly)."
    ),
    "qvalues": (
        "Left: p- and FDR q-values of all (neuron, language) tests; right: neurons significant "
        "for each language at the FDR level."
    ),
}


# --------------------------------------------------------------------------- result kinds


@dataclasses.dataclass(frozen=True)
class Context:
    """What a figure builder knows: the result, where it is saved, the run's other results."""

    load: Load
    ds: xr.Dataset
    identifications: dict[str, xr.Dataset]
    pair: tuple[str, str] | None = None  # (first run, second run) of a comparison
    saved_effects: Load | None = None  # an ablation's effects saved by `stats deactivation`


FigureBuilder = Callable[[Context], list[tuple[str, Call]]]


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of result, recognised by its variables (and dimensions).

    ``key`` names the variables of its key table in the sources (filtered to those present);
    ``key_dims`` picks every variable with exactly these dimensions instead; ``key_attr`` a
    mapping in the attributes (e.g. counts per language).
    """

    label: str
    needs: tuple[str, ...]
    dims: tuple[str, ...] = ()
    figures: FigureBuilder | None = None
    key: tuple[str, ...] = ()
    key_dims: tuple[str, ...] | None = None
    key_attr: str | None = None

    def matches(self, ds: xr.Dataset) -> bool:
        return all(v in ds.variables for v in self.needs) and all(d in ds.dims for d in self.dims)


def _one(title: str, func: str, *, labelled: bool = False) -> FigureBuilder:
    """A builder drawing ``figures.func(result)`` (with the two runs' names when ``labelled``)."""

    def build(ctx: Context) -> list[tuple[str, Call]]:
        kwargs: tuple[tuple[str, Any], ...] = ()
        if labelled and ctx.pair is not None:
            kwargs = (("labels", list(ctx.pair)),)
        return [(title, Call(func, (ctx.load,), kwargs))]

    return build


def stage_call(run: str, name: str, stages: Load) -> Call:
    """Stages drawn over the layer-type counts of identification ``name`` of ``run``."""
    ref = Load(run, "identification", name)
    return Call("layer_types", ([ref],), (("labels", [f"{run} · {name}"]), ("stages", stages)))


def _stage_figures(ctx: Context) -> list[tuple[str, Call]]:
    """Stages drawn over the layer-type counts of a saved identification with the same rule."""
    method = ctx.ds.attrs.get("method")
    for name, ident in sorted(ctx.identifications.items()):
        if ident.attrs.get("method") == method:
            call = stage_call(ctx.load.run, name, ctx.load)
            return [(f"Stages over the neuron types of identification {name}", call)]
    return []


def effects_of(ablation: Load) -> Derive:
    """The deactivation effects of an ablation whose effects were not saved (derived, the
    fallback for stores where `langneurons stats deactivation` was not run). ``alpha=None``:
    an older ablation with few random controls is drawn, its control comparison descriptive."""
    return Derive(
        "deactivation_effects", (ablation,), (("alpha", None), ("n_perm", DEACTIVATION_N_PERM))
    )


def _ablation_figures(ctx: Context) -> list[tuple[str, Call]]:
    """The heatmap of an ablation's effects: the saved ones, else derived once."""
    if ctx.saved_effects is not None:
        return []  # drawn in the saved effects' own section
    title = "Perplexity change when each language's neurons are switched off"
    return [(title, Call("deactivation_heatmap", (effects_of(ctx.load),)))]


def accuracy_effects_of(ablation: Load) -> Derive:
    """The effects of an accuracy ablation whose effects were not saved (derived)."""
    return Derive("accuracy_effects", (ablation,))


def _accuracy_ablation_figures(ctx: Context) -> list[tuple[str, Call]]:
    """The heatmaps of an accuracy ablation's effects: the saved ones, else derived once."""
    if ctx.saved_effects is not None:
        return []
    title = "Accuracy drop when each language's neurons are switched off"
    return [(title, Call("accuracy_heatmap", (accuracy_effects_of(ctx.load),)))]


def _models_figures(ctx: Context) -> list[tuple[str, Call]]:
    """The three figures of a cross-model comparison."""
    return [
        ("Layer profiles on relative depth", Call("model_profiles", (ctx.load,))),
        ("Neuron-type shares, models side by side", Call("model_shares", (ctx.load,))),
        ("Language similarity (Jaccard of masks), per model", Call("model_jaccard", (ctx.load,))),
    ]


#: The label of a cross-model comparison (the report gives it a section of its own).
MODELS_LABEL: Final = "models of different shapes side by side (compare_models)"

KINDS: Final[tuple[Kind, ...]] = (
    # mixture-of-experts routing results (before the per-neuron tests, whose variables the
    # routing change shares)
    Kind(
        "language experts of a mixture-of-experts run (language_experts)",
        ("share", "specificity", "expert_type"),
        (LANGUAGE, LAYER, "expert"),
        _one("Routing share per expert and layer", "routing_shares"),
        key_attr="per_language",
    ),
    Kind(
        "routing change between two mixture-of-experts runs (routing_change)",
        ("base_share", "aligned_share", "change"),
        (LANGUAGE, LAYER, "expert"),
        key_attr="per_layer",
    ),
    Kind(
        MODELS_LABEL,
        ("type_share", "layer_share", "jaccard", "mantel_r"),
        ("model",),
        _models_figures,
        key_dims=("model", "type"),
    ),
    Kind(
        "stage boundaries (bootstrap_stages)",
        ("stage_label", "start", "end"),
        (),
        _stage_figures,
        key=("start", "end", "length", "start_low", "start_high", "start_mode_fraction"),
    ),
    Kind(
        "per-layer change of neuron types between two runs (type_change)",
        ("change", "change_low", "change_high"),
        (LAYER, "type"),
        _one("Change of neuron types per layer", "type_change", labelled=True),
        key=(
            "total_base",
            "total_aligned",
            "total_change",
            "total_change_low",
            "total_change_high",
        ),
    ),
    Kind(
        "change of the shared-by-N histogram between two runs (shared_by_change)",
        ("base", "aligned", "change"),
        ("n_shared",),
        _one("Neurons shared by N languages, before and after", "shared_by", labelled=True),
        key=("base", "aligned", "change", "change_low", "change_high"),
    ),
    Kind(
        "overlap of two runs' neuron sets (overlap)",
        ("jaccard", "type_jaccard"),
        (LANGUAGE, "set"),
        _one("Overlap of the neuron sets of the two runs", "overlap_matrix"),
        key=("type_n_a", "type_n_b", "type_n_both", "type_jaccard"),
    ),
    Kind(
        "membership change between two runs (membership_change)",
        ("bowker_pvalue", "stuart_maxwell_pvalue", "language_pvalue"),
        key=(
            "language_n_a_only",
            "language_n_b_only",
            "language_pvalue",
            "type_n_a_only",
            "type_n_b_only",
            "type_pvalue",
        ),
    ),
    Kind(
        "paired type-switch test between two runs (type_switches)",
        ("changed_pvalue_swap", "asymmetry_pvalue_swap"),
        key=("changed", "expected_changed", "changed_pvalue_swap"),
    ),
    Kind(
        "type transitions between two runs (transition_table)",
        ("count", "fraction"),
        ("from_type", "to_type"),
        _one("Type transitions", "transitions", labelled=True),
        key=("count",),
    ),
    Kind(
        "chi-square comparison of type distributions (compare_type_distributions)",
        ("residual", "cramers_v"),
        key=("statistic", "dof", "pvalue", "cramers_v", "n"),
    ),
    Kind(
        "McNemar test of membership (mcnemar)",
        ("table", "n_a_only"),
        key=("statistic", "pvalue", "n_a_only", "n_b_only", "n_both", "n_neither"),
    ),
    Kind("Cochran's Q over checkpoints (cochran_q)", ("n_discordant", "proportion")),
    Kind("counts over checkpoints (trajectories)", ("layer_types", "n_selected"), ("checkpoint",)),
    Kind("spontaneous alignment (spontaneous_alignment)", ("trained", "difference")),
    Kind(
        "deactivation effects (deactivation_effects)",
        ("damage", "dominance"),
        (),
        _one("Deactivation damage against random controls", "deactivation_heatmap"),
        key=("ppl_ratio",),
    ),
    Kind(
        "accuracy deactivation effects (accuracy_effects)",
        ("drop", "pvalue_item", "baseline"),
        (),
        _one("Accuracy drop against random controls", "accuracy_heatmap"),
        key=("baseline",),
    ),
    Kind(
        "accuracy deactivation experiment (ablate_accuracy)",
        ("correct", "baseline_correct"),
        (),
        _accuracy_ablation_figures,
    ),
    Kind(
        "deactivation experiment (ablation)",
        ("nll", "control_nll"),
        (),
        _ablation_figures,
        key=("ppl",),
    ),
    Kind(
        "per-neuron language preference tests (language_preference_tests)",
        ("q", "significant"),
        (),
        _one("p and q values", "qvalues"),
        key_attr="n_significant_per_language",
    ),
    Kind(
        "FDR-significant neurons against an identification (compare_with_identification)",
        ("n_significant", "n_rule"),
    ),
    Kind(
        "stability of the identification (bootstrap_identification)",
        ("selection_frequency", "jaccard"),
        (),
        _one("Identification stability", "stability"),
        key_dims=(LANGUAGE,),
    ),
    Kind(
        "activation probabilities with intervals (activation_probability)", ("p", "lower", "upper")
    ),
)


def kind_of(ds: xr.Dataset) -> Kind | None:
    """The first registered kind whose variables the result holds."""
    return next((k for k in KINDS if k.matches(ds)), None)


__all__ = [
    "CAPTIONS",
    "KINDS",
    "MODELS_LABEL",
    "Context",
    "Kind",
    "accuracy_effects_of",
    "effects_of",
    "kind_of",
    "stage_call",
]
