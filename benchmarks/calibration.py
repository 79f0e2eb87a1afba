"""Calibration of every test and interval the analysis offers, on simulated runs with known truth.

For each cell of a grid of data shapes (``_simulate.Shape``: independent tokens, beta-binomial
and logit-normal sequence heterogeneity shared across neurons, repeated responses per item with
item effects correlated across languages, 8 / 16 / 32 / 128 sequences per language, sparse and
dense neurons, unequal lengths) it draws Monte-Carlo replicates and measures, per method:

- false-positive rate at 0.05 / 0.01 / 0.001 (fraction of null p-values at or below alpha;
  for per-neuron tests, over the (neuron, language) pairs of neurons with equal P everywhere);
- realised FDR of the significant set at q = 0.05 (``V / max(R, 1)``), 10 % of neurons with a
  true preference for one language;
- power at the stated effect (fraction of true alternatives rejected);
- coverage of the 95 % intervals (fraction of true values inside).

Every estimate comes with its Monte-Carlo standard error: the standard deviation of the
per-replicate values over sqrt(replicates), which accounts for the dependence of the
neurons within one replicate. Verdicts: ``ok``; ``FAILS (...)`` when a false-positive rate or
FDR exceeds nominal + 3 s.e. or a coverage falls below nominal - 3 s.e.; ``descriptive`` when
the method itself says (``attrs["inference"] == "descriptive"``) that it is not valid
inference on data of that shape.

The script uses only the public API of ``langneurons.analysis``; it measures the methods, it
does not change them. Usage::

    python benchmarks/calibration.py --out docs/calibration.md   # the full grid (make calibration)
    python benchmarks/calibration.py --quick --json OUT.json     # the reduced grid (make bench)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import _table
import numpy as np
import xarray as xr
from _routing import PERMUTATIONS, RoutingShape, routing_cells, routing_replicate
from _simulate import (
    AblationShape,
    Shape,
    Truth,
    as_layer_neuron_language,
    make_truth,
    population,
    shifted,
    simulate,
    simulate_ablation,
    simulate_accuracy,
    simulate_pair,
)

LEVELS = (0.05, 0.01, 0.001)
Q = 0.05  # FDR level
CI = 0.95  # interval level
COLUMNS = ("fpr_05", "fpr_01", "fpr_001", "fdr", "power", "coverage")
HEADERS = ("FPR .05", "FPR .01", "FPR .001", "FDR q=.05", "power", "coverage 95%")
# 51 of 1,024 neurons (the default top_rate 0.01 selects 10); lambda may grow past 0.2
IDENTIFY: dict[str, Any] = {"top_rate": 0.05, "lam_widen": 10}

Metrics = dict[str, float]
Replicate = dict[str, Metrics]  # method -> metric -> value of one replicate


def _analysis() -> Any:
    """The public API (imported late so ``--help`` is instant)."""
    import langneurons.analysis as analysis

    return analysis


def _descriptive(result: xr.Dataset) -> bool:
    """Whether a result declares itself descriptive (not valid inference) on this data."""
    return str(result.attrs.get("inference", "")) == "descriptive"


def _fpr(p: np.ndarray) -> Metrics:
    """Fractions of null p-values at or below each level."""
    p = np.asarray(p, dtype=np.float64).ravel()
    return {c: float(np.mean(p <= a)) for c, a in zip(COLUMNS[:3], LEVELS, strict=True)}


# --------------------------------------------------------------------------- cheap family


def true_design_effect(shape: Shape) -> float | None:
    """The design effect of token counts where it is known in closed form, else None.

    Beta-binomial sequences of fixed length ``t`` and one response per item:
    ``Var(a_i) = t P (1 - P) (1 + (t - 1) icc)``, so ``D = 1 + (t - 1) icc`` exactly.
    """
    if (
        shape.heterogeneity == "beta-binomial"
        and shape.lengths == "fixed"
        and shape.responses == 1
        and shape.rho == 0.0
    ):
        return 1.0 + (shape.length - 1) * shape.icc
    return None


def _test_rows(out: Replicate, res: xr.Dataset, name: str, null_pair: Any, preferred: Any) -> None:
    """FPR / power of a test's p-values, and FDR / power of its significant set."""
    p = res["p"].values
    sig = res["significant"].values
    desc = float(_descriptive(res))
    if res.attrs["correction"] == "fdr_bh":  # the p-values do not depend on the correction
        metrics = _fpr(p[null_pair])
        metrics["power"] = float(np.mean(p[preferred] <= LEVELS[0]))
        out[f"test {name}"] = {**metrics, "descriptive": desc}
    false = sig & ~preferred
    label = f"{'BH' if res.attrs['correction'] == 'fdr_bh' else 'BY'} ({name} test)"
    out[label] = {
        "fdr": float(false.sum() / max(int(sig.sum()), 1)),
        "power": float(sig[preferred].mean()),
        "descriptive": desc,
    }


def probability_and_tests(truth: Truth, rng: np.random.Generator, n_boot: int) -> Replicate:
    """One replicate of the per-(neuron, language) methods: intervals, tests, BH / BY."""
    an = _analysis()
    shape = truth.shape
    run = simulate(truth, rng)
    p_true = as_layer_neuron_language(truth.p_true, shape)
    preferred = as_layer_neuron_language(truth.preferred, shape)
    null_pair = np.broadcast_to(
        truth.null_neuron.reshape(shape.layers, shape.neurons)[..., None], preferred.shape
    )
    out: Replicate = {}
    deff = true_design_effect(shape)
    # (row name, method, options): cluster "auto" is the item when items repeat; the
    # sequence-clustered rows show what ignoring the items costs
    prob_rows: list[tuple[str, str, dict[str, Any]]] = [
        ("wilson", "wilson", {}),
        ("cluster", "cluster", {}),
        ("bootstrap", "bootstrap", {}),
    ]
    test_rows: list[tuple[str, str, dict[str, Any]]] = [
        ("binomial", "binomial", {}),
        ("cluster", "cluster", {}),
    ]
    if shape.responses > 1:
        prob_rows.append(("cluster by sequence", "cluster", {"cluster": "sequence"}))
        test_rows.append(("cluster by sequence", "cluster", {"cluster": "sequence"}))
    if deff is not None:
        prob_rows.append(("wilson true D", "wilson", {"design_effect": deff}))
        test_rows.append(("binomial true D", "binomial", {"design_effect": deff}))
    for name, method, options in prob_rows:
        kw = dict(options)
        if method == "bootstrap":
            kw.update(n_boot=n_boot, seed=int(rng.integers(2**31)))
        res = an.activation_probability(run, method=method, ci=CI, **kw)
        lower = res["lower"].values
        upper = res["upper"].values
        covered = (lower <= p_true) & (p_true <= upper)
        out[f"probability {name}"] = {"coverage": float(covered.mean())}
        out[f"probability {name}"]["descriptive"] = float(_descriptive(res))
    for name, method, options in test_rows:
        for correction in ("fdr_bh", "fdr_by"):
            res = an.language_preference_tests(
                run, method=method, correction=correction, alpha=Q, **options
            )
            _test_rows(out, res, name, null_pair, preferred)
    return out


# --------------------------------------------------------------------------- compare family


def membership_tests(truth: Truth, rng: np.random.Generator, shifted_truth: Truth) -> Replicate:
    """McNemar (2 runs) and Cochran's Q (3 runs) of a language's mask, null and shifted."""
    an = _analysis()
    runs = [simulate(truth, rng) for _ in range(3)]
    moved = simulate(shifted_truth, rng)
    ids = [an.identify(r, **IDENTIFY) for r in [*runs, moved]]
    lang = "l0"
    null = an.mcnemar(ids[0], ids[1], language=lang)
    alt = an.mcnemar(ids[0], ids[3], language=lang)
    q = an.cochran_q(ids[:3], language=lang)
    q_alt = an.cochran_q([ids[0], ids[1], ids[3]], language=lang)
    return {
        "mcnemar (mask l0)": {
            **_fpr(null["pvalue"].values),
            "power": float(alt["pvalue"].values <= LEVELS[0]),
            "descriptive": float(_descriptive(null)),
        },
        "cochran_q (mask l0, 3 runs)": {
            **_fpr(q["pvalue"].values),
            "power": float(q_alt["pvalue"].values <= LEVELS[0]),
            "descriptive": float(_descriptive(q)),
        },
    }


# --------------------------------------------------------------------------- bootstrap family


def _cover(lower: Any, upper: Any, value: Any) -> float:
    """Fraction of intervals [lower, upper] holding value (NaN bounds do not cover)."""
    lo, hi, v = (np.asarray(x, dtype=np.float64) for x in (lower, upper, value))
    return float(np.mean((lo <= v) & (v <= hi)))


def change_and_stability(
    truth: Truth, rng: np.random.Generator, n_boot: int, reference: dict[str, Any]
) -> Replicate:
    """Two-run change tests under the null (same truth) and one-run bootstrap intervals."""
    an = _analysis()
    base, aligned = simulate_pair(truth, truth, rng)
    seed = int(rng.integers(2**31))
    # the unit of replication, as cluster="auto" chooses it for the per-neuron methods: items
    # when they repeat within a language (paired runs cannot pair repeated sequences)
    unit = {"cluster": "item" if truth.shape.responses > 1 else "sequence"}
    out: Replicate = {}
    tc = an.type_change(base, aligned, n_boot=n_boot, seed=seed, **unit, **IDENTIFY)
    keep = ~np.isnan(tc["change_pvalue"].values)
    out["type_change"] = {
        **_fpr(tc["change_pvalue"].values[keep]),
        "coverage": _cover(tc["change_low"], tc["change_high"], 0.0),
        "descriptive": float(_descriptive(tc)),
    }
    sb = an.shared_by_change(base, aligned, n_boot=n_boot, seed=seed, **unit, **IDENTIFY)
    out["shared_by_change (tvd)"] = {
        **_fpr(sb["tvd_pvalue"].values),
        "coverage": _cover(sb["change_low"], sb["change_high"], 0.0),
        "descriptive": float(_descriptive(sb)),
    }
    sa = an.spontaneous_alignment(
        base, aligned, ["l0", "l1"], n_boot=n_boot, seed=seed, **unit, **IDENTIFY
    )
    out["spontaneous_alignment boot p"] = {
        **_fpr(sa["boot_pvalue"].values),
        "coverage": _cover(sa["difference_low"], sa["difference_high"], 0.0),
        "descriptive": float(_descriptive(sa)),
    }
    out["spontaneous_alignment perm p"] = {
        **_fpr(sa["perm_pvalue"].values),
        "descriptive": float(_descriptive(sa)),
    }
    st = an.bootstrap_identification(base, n_boot=n_boot, seed=seed, ci=CI, **unit, **IDENTIFY)
    cov = [
        _cover(st[f"{name}_lower"], st[f"{name}_upper"], reference[name])
        for name in ("specific", "related", "mask_size")
    ]
    out["bootstrap_identification counts"] = {
        "coverage": float(np.mean(cov)),
        "descriptive": float(_descriptive(st)),
    }
    sg = an.bootstrap_stages(base, n_stages=3, n_boot=n_boot, seed=seed, ci=CI, **unit, **IDENTIFY)
    inner = slice(1, None)  # the first stage always starts at layer 0
    out["bootstrap_stages boundaries"] = {
        "coverage": _cover(
            sg["start_low"].values[inner], sg["start_high"].values[inner], reference["starts"]
        ),
        "descriptive": float(_descriptive(sg)),
    }
    return out


def population_reference(truth: Truth) -> dict[str, Any]:
    """The estimands of the identification bootstraps: the rule applied to the population."""
    an = _analysis()
    pop = population(truth)
    ident = an.identify(pop, **IDENTIFY)
    languages = [str(x) for x in pop["language"].values]
    kinds = ident["neuron_type"].values
    assigned = ident["assigned"].transpose("layer", "neuron", "language").values
    profile = an.stage_profile(ident)
    starts = an.segment_stages(profile, 3)["start_index"].values[1:]
    return {
        "specific": [
            int((assigned[..., k] & (kinds == "specific")).sum()) for k in range(len(languages))
        ],
        "related": [
            int((assigned[..., k] & (kinds == "related")).sum()) for k in range(len(languages))
        ],
        "mask_size": [int(assigned[..., k].sum()) for k in range(len(languages))],
        "starts": np.asarray(starts, dtype=np.float64),
    }


# --------------------------------------------------------------------------- comparisons family


def _compare_api() -> Any:
    """The comparison functions (imported late, like :func:`_analysis`)."""
    import langneurons.analysis.compare as compare

    return compare


def _profiled_set(shape: Any, rng: np.random.Generator, size: int) -> xr.Dataset:
    """A random identification-shaped result: ``size`` selected neurons spread over layers like
    language neurons (weights ``exp(3 |d|)``, d the distance from the middle layer in
    half-depths: about 60 % in the first and last two of 8 layers), uniform within a layer,
    each specific to one random language."""
    layers, neurons, k = shape.layers, shape.neurons, shape.languages
    half = max((layers - 1) / 2.0, 1.0)
    weight = np.exp(3.0 * np.abs(np.arange(layers) - (layers - 1) / 2.0) / half)
    per_layer = rng.multinomial(size, weight / weight.sum())
    selected = np.zeros((layers, neurons), dtype=bool)
    for layer, n in enumerate(np.minimum(per_layer, neurons)):
        selected[layer, rng.choice(neurons, size=int(n), replace=False)] = True
    language = rng.integers(0, k, (layers, neurons))
    mask = np.stack([selected & (language == i) for i in range(k)])
    kinds = np.where(selected, "specific", "none")
    return xr.Dataset(
        {
            "selected": (("layer", "neuron"), selected),
            "mask": (("language", "layer", "neuron"), mask),
            "neuron_type": (("layer", "neuron"), kinds),
            "general": (("layer", "neuron"), np.zeros_like(selected)),
        },
        coords={"language": [f"l{i}" for i in range(k)]},
    )


def overlap_nulls(truth: Truth, rng: np.random.Generator, size: int) -> Replicate:
    """Overlap p-values of two independent sets with the same per-layer profile.

    The sets are independent, so every p-value is null: the masks (and specific sets) of
    every language and the selections.
    """
    cmp = _compare_api()
    a, b = (_profiled_set(truth.shape, rng, size) for _ in range(2))
    out: Replicate = {}
    for null in ("layer", "uniform"):
        res = cmp.overlap(a, b, null=null)
        p = np.concatenate(
            [
                res["pvalue"].sel(set="mask").values.ravel(),
                res["type_pvalue"].sel(type=["selected"]).values,
            ]
        )
        out[f"overlap ({null} null)"] = {
            **_fpr(p[~np.isnan(p)]),
            "descriptive": float(_descriptive(res)),
        }
    return out


def _alternatives(truth: Truth, shifted_truth: Truth) -> dict[str, Any]:
    """Which membership tests have a true effect: population identifications of both truths."""
    cmp = _compare_api()
    an = _analysis()
    a = an.identify(population(truth), **IDENTIFY)
    b = an.identify(population(shifted_truth), **IDENTIFY)
    res = cmp.membership_change(a, b)
    return {
        "language": (res["language_n_a_only"] != res["language_n_b_only"]).values,
        "type": (res["type_n_a_only"] != res["type_n_b_only"]).values,
    }


def membership_change_tests(
    truth: Truth, rng: np.random.Generator, shifted_truth: Truth, moved: dict[str, Any]
) -> Replicate:
    """membership_change between two runs of one truth (null) and of the shifted truth.

    Power counts the sets whose population membership changes (``moved``); Bowker and
    Stuart-Maxwell have one p-value per replicate.
    """
    cmp = _compare_api()
    an = _analysis()
    ids = [an.identify(simulate(t, rng), **IDENTIFY) for t in (truth, truth, shifted_truth)]
    null, alt = cmp.membership_change(ids[0], ids[1]), cmp.membership_change(ids[0], ids[2])
    out: Replicate = {}
    for name, var in (("mask", "language"), ("type", "type")):
        p = null[f"{var}_pvalue"].values
        p_alt = alt[f"{var}_pvalue"].values[moved[var]]
        out[f"membership McNemar per {name}"] = {
            **_fpr(p[~np.isnan(p)]),
            "power": float(np.mean(p_alt <= LEVELS[0])) if p_alt.size else math.nan,
            "descriptive": float(_descriptive(null)),
        }
    for test in ("bowker", "stuart_maxwell"):
        p = null[f"{test}_pvalue"].values
        out[f"membership {test.replace('_', '-')}"] = {
            **_fpr(p[~np.isnan(p)]),
            "power": float(alt[f"{test}_pvalue"].values <= LEVELS[0]),
            "descriptive": float(_descriptive(null)),
        }
    return out


def paired_change(
    truth: Truth,
    rng: np.random.Generator,
    n_boot: int,
    shifted_truth: Truth,
    changed: Any,
) -> Replicate:
    """type_change paired and unpaired on the same draws: null (one truth) and shifted.

    FPR and coverage of 0 under the null; power over the (layer, type) cells whose
    population count changes (``changed``); ``width``: mean interval width under the null.
    """
    an = _analysis()
    seed = int(rng.integers(2**31))
    base, aligned = simulate_pair(truth, truth, rng)
    base_s, moved = simulate_pair(truth, shifted_truth, rng)
    out: Replicate = {}
    for paired in (True, False):
        tc = an.type_change(base, aligned, n_boot=n_boot, seed=seed, paired=paired, **IDENTIFY)
        alt = an.type_change(base_s, moved, n_boot=n_boot, seed=seed, paired=paired, **IDENTIFY)
        p = tc["change_pvalue"].values
        p_alt = alt["change_pvalue"].values[changed]
        out[f"type_change {'paired' if paired else 'unpaired'}"] = {
            **_fpr(p[~np.isnan(p)]),
            "power": float(np.mean(p_alt <= LEVELS[0])),
            "coverage": _cover(tc["change_low"], tc["change_high"], 0.0),
            "width": float(np.nanmean(tc["change_high"].values - tc["change_low"].values)),
            "descriptive": float(_descriptive(tc)),
        }
    return out


def swap_change(
    truth: Truth,
    rng: np.random.Generator,
    n_perm: int,
    shifted_truth: Truth,
    changed: Any,
    changed_masks: Any,
) -> Replicate:
    """The label-swap permutation tests of type_change and mask_change (paired runs of one
    corpus).

    FPR over every (layer, type) cell and over the per-type totals under the null (one truth);
    power over the cells whose population count changes (``changed``). mask_change: FPR over
    every language's mask size (and of its max-T p-value, familywise over languages); power
    over the languages whose population mask size changes (``changed_masks``).
    """
    an = _analysis()
    seed = int(rng.integers(2**31))
    base, aligned = simulate_pair(truth, truth, rng)
    base_s, moved = simulate_pair(truth, shifted_truth, rng)
    null = an.type_change(base, aligned, n_boot=0, n_perm=n_perm, seed=seed, **IDENTIFY)
    alt = an.type_change(base_s, moved, n_boot=0, n_perm=n_perm, seed=seed, **IDENTIFY)
    p = null["change_pvalue_swap"].values
    total = null["total_change_pvalue_swap"].values
    params = an.IdentifyParams(**IDENTIFY)
    mnull = an.mask_change(base, aligned, params=params, n_perm=n_perm, seed=seed)
    malt = an.mask_change(base_s, moved, params=params, n_perm=n_perm, seed=seed)
    masks: Replicate = {}
    for kind in ("swap", "maxt"):
        pm = mnull[f"change_pvalue_{kind}"].values
        label = "per language" if kind == "swap" else "max-T over languages"
        masks[f"mask_change swap ({label})"] = {
            **_fpr(pm[~np.isnan(pm)]),
            "power": float(
                np.mean(malt[f"change_pvalue_{kind}"].values[changed_masks] <= LEVELS[0])
            ),
        }
    snull = an.type_switches(base, aligned, params=params, n_perm=n_perm, seed=seed)
    salt = an.type_switches(base_s, moved, params=params, n_perm=n_perm, seed=seed)
    asym = snull["asymmetry_pvalue_swap"].values
    asym_alt = salt["asymmetry_pvalue_swap"].values
    masks["type_switches swap (neurons switching)"] = {
        **_fpr(np.atleast_1d(snull["changed_pvalue_swap"].values)),
        "power": float(salt["changed_pvalue_swap"].values <= LEVELS[0]),
    }
    masks["type_switches swap (asymmetry per pair of types)"] = {
        **_fpr(asym[np.isfinite(asym)]),
        # power: the pairs the shift moves neurons between (none <-> specific, l0's masks)
        "power": float(np.nanmin(asym_alt) <= LEVELS[0]),
    }
    return {
        **masks,
        "type_change swap (layer x type)": {
            **_fpr(p[~np.isnan(p)]),
            "power": float(np.mean(alt["change_pvalue_swap"].values[changed] <= LEVELS[0])),
        },
        "type_change swap (total per type)": {
            **_fpr(total[~np.isnan(total)]),
            "power": float(
                np.mean(alt["total_change_pvalue_swap"].values[changed.any(axis=0)] <= LEVELS[0])
            ),
        },
    }


# --------------------------------------------------------------------------- stages family

#: Shape of the stage cells: 24 layers of 64 neurons (a 7B model has 32 layers).
STAGE_LAYERS = {"layers": 24, "neurons": 64}


def staged_layers(n_layers: int) -> tuple[int, ...]:
    """Layers holding the effect neurons of the staged truth: the first and last quarter
    (specific neurons early and late, none in between: three stages)."""
    q = n_layers // 4
    return (*range(q), *range(n_layers - q, n_layers))


def placed_truth(truth: Truth, layers: tuple[int, ...] | None, seed: int) -> Truth:
    """``truth`` with its effect neurons re-placed: uniformly over all layers (None: no depth
    structure, the null of the stage count), or uniformly within ``layers``."""
    shape = truth.shape
    rng = np.random.default_rng([seed, 29])
    base = truth.centre.min(axis=0)  # an effect only raises P: the base rate of each neuron
    layer = np.repeat(np.arange(shape.layers), shape.neurons)
    pool = np.flatnonzero(np.isin(layer, layers) if layers is not None else layer >= 0)
    chosen = rng.choice(pool, size=int(truth.effect_neuron.sum()), replace=False)
    effect = np.zeros(shape.n_cells, dtype=bool)
    effect[chosen] = True
    preferred = np.zeros_like(truth.preferred)
    preferred[rng.integers(0, shape.languages, chosen.size), chosen] = True
    centre = np.broadcast_to(base, truth.centre.shape).copy()
    centre[preferred] = np.minimum(centre[preferred] * (1.0 + shape.effect), 0.95)
    # p_true only feeds the prompt role here, which the stage count does not read
    return dataclasses.replace(
        truth, centre=centre, p_true=centre, preferred=preferred, effect_neuron=effect
    )


def stage_count(truth: Truth, rng: np.random.Generator, staged: Truth) -> Replicate:
    """``segment_stages(n_stages="auto")`` on identified runs: FPR (no depth structure: more
    than one stage chosen) and power (the three planted stages chosen exactly), on the
    default profile (``normalize="type"``) and on ``"neurons"`` (counts over N)."""
    an = _analysis()
    out: Replicate = {}
    idents = [an.identify(simulate(t, rng), **IDENTIFY) for t in (truth, staged)]
    seed = int(rng.integers(2**31))
    for criterion, normalize in (
        ("permutation", "type"),
        ("bic", "type"),
        ("permutation", "neurons"),
    ):
        null, alt = (
            an.segment_stages(
                an.stage_profile(ident, normalize=normalize),
                "auto",
                criterion=criterion,
                n_perm=99,
                seed=seed,
            )
            for ident in idents
        )
        name = criterion + ("" if normalize == "type" else f", normalize={normalize}")
        out[f"segment_stages auto ({name})"] = {
            "fpr_05": float(null.attrs["n_stages"] > 1),
            "power": float(alt.attrs["n_stages"] == 3),
            "descriptive": float(null.attrs.get("n_stages_inference") == "descriptive"),
        }
    return out


def replicate_groups(
    truth: Truth, rng: np.random.Generator, shifted_truth: Truth, runs: int
) -> Replicate:
    """group_comparison of ``runs`` against ``runs`` replicate runs: one truth (null), and the
    shifted truth against the truth (power), on the headline and per-layer counts.

    The runs of one arm are independent draws of one truth, so their variation stands for
    run-to-run variation (text only here; training adds to it in real replicate runs).
    """
    cmp = _compare_api()
    an = _analysis()

    def ident(t: Truth) -> xr.Dataset:
        return an.identify(simulate(t, rng), **IDENTIFY)

    null = cmp.group_comparison(
        {"a": [ident(truth) for _ in range(runs)], "b": [ident(truth) for _ in range(runs)]}
    )
    alt = cmp.group_comparison(
        {
            "a": [ident(shifted_truth) for _ in range(runs)],
            "b": [ident(truth) for _ in range(runs)],
        }
    )
    out: Replicate = {}
    for test in ("perm", "welch"):
        p = null[f"total_{test}_pvalue"].values
        p_alt = alt[f"total_{test}_pvalue"].values
        label = "permutation" if test == "perm" else "Welch t"
        out[f"group_comparison {label} ({runs} vs {runs} runs)"] = {
            **_fpr(p[~np.isnan(p)]),
            "power": float(np.mean(p_alt[~np.isnan(p_alt)] <= LEVELS[0])),
            "descriptive": float(_descriptive(null)),
        }
    return out


def _comparison_step(cell: Cell, truth: Truth, seed: int) -> tuple[Any, dict[str, Any]]:
    """The replicate function and its fixed arguments of a comparisons cell."""
    an = _analysis()
    if cell.family == "overlap":  # sets of 5 % of the neurons, like top_rate 0.05
        return overlap_nulls, {"size": int(round(0.05 * cell.shape.n_cells))}
    moved = shifted(truth, 0.1, 1.0, seed, languages=(0,))
    if cell.family == "groups":
        return replicate_groups, {"shifted_truth": moved, "runs": 3 if cell.n_boot == 0 else 4}
    if cell.family == "membership":
        return membership_change_tests, {
            "shifted_truth": moved,
            "moved": _alternatives(truth, moved),
        }
    # type_change per layer needs a large change to be seen: 20 % of neurons 4x as active in l0
    moved = shifted(truth, 0.2, 3.0, seed, languages=(0,))
    counts = [
        an.type_table(an.identify(population(t), **IDENTIFY)).transpose("layer", "type").values
        for t in (truth, moved)
    ]
    if cell.family == "swap":  # n_boot holds the permutations
        from langneurons.analysis.distributions import mask_sizes

        sizes = [mask_sizes(an.identify(population(t), **IDENTIFY)) for t in (truth, moved)]
        return swap_change, {
            "n_perm": cell.n_boot,
            "shifted_truth": moved,
            "changed": counts[0] != counts[1],
            "changed_masks": sizes[0] != sizes[1],
        }
    return paired_change, {
        "n_boot": cell.n_boot,
        "shifted_truth": moved,
        "changed": counts[0] != counts[1],
    }


#: Families of :func:`comparison_cells`, evaluated by :func:`_comparison_step`.
COMPARISON_FAMILIES = ("overlap", "membership", "paired", "swap", "groups")


# --------------------------------------------------------------------------- accuracy
ACCURACY_GENERIC = 0.5  # logit drop of every set on every language (not language-specific)
ACCURACY_PLANTED = 0.3  # extra drop in probability of the real set on its own language


def accuracy_cell(items: int, controls: int, reps: int) -> Cell:
    """An accuracy-deactivation cell: ``items`` per language, 4 languages, ``controls``."""
    note = f"accuracy: {items} items x 4 languages, C={controls}"
    return Cell("accuracy", Shape(sequences=items), reps, controls=controls, note=note)


def accuracy_replicate(
    truth: Truth, rng: np.random.Generator, *, items: int, controls: int
) -> Replicate:
    """Accuracy deactivation (``accuracy_effects``) on simulated per-item correctness.

    Item test (exact McNemar over items): FPR over every cell when nothing changes; power on
    the own-language cells with a planted drop. Control test: FPR when every set, real or
    control, does the same non-language-specific damage; power with the planted drop on top.
    Agresti-Min interval: coverage of the true drop of every cell under the planted effect.
    """
    an = _analysis()
    k = truth.shape.languages
    nothing, _ = simulate_accuracy(rng, languages=k, items=items, controls=controls)
    generic, _ = simulate_accuracy(
        rng, languages=k, items=items, controls=controls, generic=ACCURACY_GENERIC
    )
    planted, true_drop = simulate_accuracy(
        rng, languages=k, items=items, controls=controls, generic=ACCURACY_GENERIC,
        planted=ACCURACY_PLANTED,
    )  # fmt: skip
    item_null = an.accuracy_effects(nothing)["pvalue_item"].values.ravel()
    ctrl_null = an.accuracy_effects(generic)
    eff = an.accuracy_effects(planted)
    own = np.eye(k, dtype=bool)
    item_p = eff["pvalue_item"].values[0]
    lo, hi = eff["drop_low"].values[0], eff["drop_high"].values[0]
    out: Replicate = {
        "accuracy item test (exact McNemar)": {
            **_fpr(item_null),
            "power": float((item_p[own] <= 0.05).mean()),
        },
        f"accuracy control test (C={controls})": {
            **_fpr(ctrl_null["pvalue_control"].values.ravel()),
            "power": float((eff["pvalue_control"].values.ravel() <= 0.05).mean()),
            "descriptive": float(_descriptive(eff)),
        },
        "accuracy drop interval (Agresti-Min)": {"coverage": _cover(lo, hi, true_drop)},
    }
    return out


def comparison_cells(quick: bool = False) -> list[Cell]:
    """Cells of the comparisons: overlap nulls, membership tests, paired vs unpaired change,
    groups of replicate runs (about 10 minutes on 2 cores; ``quick``: seconds)."""
    if quick:
        return [
            Cell("overlap", _shape("independent", 16, 0.01), reps=20),
            Cell("membership", _shape("independent", 16, 0.01), reps=20),
            accuracy_cell(8, 19, reps=40),
        ]
    return [
        accuracy_cell(8, 3, reps=400),
        accuracy_cell(8, 19, reps=400),
        accuracy_cell(32, 19, reps=400),
        Cell("overlap", _shape("independent", 32, 0.01), reps=500),
        Cell("overlap", _shape("independent", 32, 0.01, neurons=1024), reps=500),
        Cell("membership", _shape("independent", 32, 0.01), reps=200),
        Cell("membership", _shape("independent", 128, 0.01), reps=100),
        Cell("membership", _shape("logit-normal", 32, 0.01), reps=200),
        Cell("paired", _shape("logit-normal", 32, 0.01, rho=0.5), reps=20, n_boot=60),
        # most of the latent variance is the item's, shared by the two runs of one corpus
        Cell(
            "paired",
            dataclasses.replace(
                _shape("logit-normal", 32, 0.05, rho=0.9, item_share=0.9, length=256), sd=1.5
            ),
            reps=20,
            n_boot=60,
        ),
        Cell("paired", _shape("independent", 32, 0.01), reps=20, n_boot=60),
        # label-swap permutations of type_change (n_boot: permutations per test)
        Cell("swap", _shape("logit-normal", 32, 0.01, rho=0.5), reps=60, n_boot=39),
        Cell("swap", _shape("independent", 32, 0.01), reps=60, n_boot=39),
        Cell("groups", _shape("logit-normal", 32, 0.01), reps=100),  # 3 vs 3 runs
        Cell("groups", _shape("logit-normal", 32, 0.01), reps=100, n_boot=1),  # 4 vs 4 runs
    ]


# --------------------------------------------------------------------------- deactivation
def deactivation_tests(shape: AblationShape, rng: np.random.Generator) -> Replicate:
    """One null ablation and one with ``shape.planted`` extra own-language damage (the stated
    effect): the control test's and the item t-test's rejections, the intervals' coverage."""
    an = _analysis()
    out: Replicate = {}
    for planted in (0.0, shape.planted):
        truth = dataclasses.replace(shape, planted=planted)
        res = an.deactivation_effects(simulate_ablation(truth, rng), alpha=0.05, n_perm=1)
        k = truth.languages
        damage = np.full((k, k), truth.shift) + np.eye(k) * planted
        covered = {
            f"deactivation {what} interval (items)": _cover(
                res[f"{what}_low"].values, res[f"{what}_high"].values, value
            )
            for what, value in (("damage", damage), ("dominance", np.full(k, planted)))
        }
        for name, p in (
            (f"deactivation control test (C={truth.controls})", res["pvalue_control"].values),
            ("deactivation item t-test", res["pvalue_items"].values),
        ):
            metrics = out.setdefault(name, {})
            if planted == 0.0:
                metrics |= _fpr(np.asarray(p, dtype=np.float64))
            else:
                metrics["power"] = float(np.mean(np.asarray(p) <= 0.05))
        for name, value in covered.items():  # under the null and the alternative alike
            metrics = out.setdefault(name, {"coverage": 0.0})
            metrics["coverage"] += value / 2.0
            metrics["descriptive"] = float(res.attrs.get("interval_inference") == "descriptive")
        if shape.planted == 0.0:
            for name in covered:
                out[name]["coverage"] *= 2.0
            break
    return out


def deactivation_cells(quick: bool = False) -> list[Cell]:
    """Simulated ablations (19 controls, K = 4, 20-80 tokens per item, log-normal difficulty):
    8 items per language (the built-in evaluation part) and 32; own-language extra damage 0.05
    nats per token (as large as the damage every set does) for the power column."""
    if quick:
        return [Cell("deactivation", AblationShape(items=8, planted=0.05), reps=200)]
    return [
        Cell("deactivation", AblationShape(items=8, planted=0.05), reps=2000),
        Cell("deactivation", AblationShape(items=32, planted=0.05), reps=1000),
        # heavier tails: item difficulty and damage factors with log-normal sd 1
        Cell("deactivation", AblationShape(items=8, sd=1.0, damage_sd=1.0, planted=0.05), 2000),
        Cell("deactivation", AblationShape(items=32, sd=1.0, damage_sd=1.0, planted=0.05), 1000),
    ]


# --------------------------------------------------------------------------- models family


#: The second model of a ``models`` cell: twice the depth at half the width (same neurons).
def reshaped(truth: Truth) -> Truth:
    """The same neurons as ``truth`` laid out in twice the layers of half the width.

    The population of both models is then the same set of neurons, so the identification of
    the population gives both the same type shares: a null of the between-model difference
    test across models of different shape.
    """
    shape = truth.shape
    other = dataclasses.replace(shape, layers=shape.layers * 2, neurons=shape.neurons // 2)
    return dataclasses.replace(truth, shape=other)


def relabelled(truth: Truth, seed: int) -> Truth:
    """``truth`` with its languages relabelled by a uniformly random permutation: a model whose
    language similarity structure agrees with ``truth``'s only as a random relabelling does
    (the Mantel test's null, exactly)."""
    rng = np.random.default_rng([seed, 31])
    centre = truth.centre[rng.permutation(truth.shape.languages)]
    return dataclasses.replace(truth, centre=centre, p_true=_marginal_of(centre, truth.shape))


def _marginal_of(centre: np.ndarray, shape: Shape) -> np.ndarray:
    from _simulate import _marginal

    return _marginal(centre, shape)


def models_replicate(
    truth: Truth, rng: np.random.Generator, n_boot: int, reference: xr.Dataset
) -> Replicate:
    """Two models of different shapes (8 x 128 and 16 x 64 neurons) drawn from one population:
    the between-model difference test under the null and the share intervals' coverage of the
    population rule's shares; and the Mantel test against a third model whose languages are
    a random relabelling of the population's (its null)."""
    an = _analysis()
    second = reshaped(truth)
    runs = [simulate(truth, rng), simulate(second, rng)]
    results = [an.identify(r, **IDENTIFY) for r in runs]
    seed = int(rng.integers(2**31))
    out = an.compare_models(runs, results, bins=4, n_boot=n_boot, seed=seed, n_perm=999)
    share = ("type_share", "mask_share")
    pvalues = np.concatenate(
        [out[f"{v}_difference_pvalue"].isel(model=1).values.ravel() for v in share]
    )
    keep = np.isfinite(pvalues)
    cover = [_cover(out[f"{v}_lower"], out[f"{v}_upper"], reference[v]) for v in share]
    d_cover = [
        _cover(
            out[f"{v}_difference_lower"].isel(model=1),
            out[f"{v}_difference_upper"].isel(model=1),
            0.0,
        )
        for v in share
    ]
    third = simulate(relabelled(second, int(rng.integers(2**31))), rng)
    null = an.compare_models(
        None, [results[0], an.identify(third, **IDENTIFY)], bins=4, n_boot=0, n_perm=999
    )
    mantel_p = null["mantel_pvalue"].values
    return {
        **model_groups_replicate(truth, rng),
        "compare_models difference (boot p)": {
            **_fpr(pvalues[keep]),
            "coverage": float(np.mean(d_cover)),
            "descriptive": float(_descriptive(out)),
        },
        "compare_models shares (interval)": {
            "coverage": float(np.mean(cover)),
            "descriptive": float(_descriptive(out)),
        },
        "compare_models Mantel (Jaccard agreement)": {
            **_fpr(mantel_p[np.isfinite(mantel_p)]),
            "descriptive": float(null.attrs["mantel_inference"] == "descriptive"),
        },
    }


def model_groups_replicate(truth: Truth, rng: np.random.Generator) -> Replicate:
    """Four replicate runs of each of two models of different shapes: from one population (the
    null of compare_model_groups), and with the second model's population shifted (20 % of its
    neurons 4x as active in l0: power, over the types whose population share changes)."""
    from _simulate import shifted

    an = _analysis()
    params = an.IdentifyParams(**IDENTIFY)
    moved = reshaped(shifted(truth, 0.2, 3.0, int(rng.integers(2**31)), languages=(0,)))
    a = [simulate(truth, rng) for _ in range(4)]
    b = [simulate(reshaped(truth), rng) for _ in range(4)]
    b_moved = [simulate(moved, rng) for _ in range(4)]
    seed = int(rng.integers(2**31))
    null = an.compare_model_groups({"a": a, "b": b}, params, bins=4, seed=seed)
    alt = an.compare_model_groups({"a": a, "b": b_moved}, params, bins=4, seed=seed)
    pops = [an.identify(population(t), **IDENTIFY) for t in (truth, moved)]
    shares = an.compare_models(None, pops, bins=4, n_boot=0)["type_share"].values
    changed = np.abs(shares[0] - shares[1]) > 1e-9
    out: Replicate = {}
    for test in ("perm", "welch"):
        p = null[f"type_share_{test}_pvalue"].values
        p_alt = alt[f"type_share_{test}_pvalue"].values[changed]
        label = "permutation across runs" if test == "perm" else "Welch t"
        out[f"compare_model_groups type shares ({label}, 4 vs 4 runs)"] = {
            **_fpr(p[np.isfinite(p)]),
            "power": float(np.mean(p_alt <= LEVELS[0])) if p_alt.size else float("nan"),
            "descriptive": float(_descriptive(null)),
        }
    return out


def models_reference(truth: Truth) -> xr.Dataset:
    """The estimands: the rule applied to each model's population (identical shares)."""
    an = _analysis()
    pops = [population(truth), population(reshaped(truth))]
    return an.compare_models(None, [an.identify(p, **IDENTIFY) for p in pops], bins=4, n_boot=0)


#: Shape of the ``models`` cells: 5 languages (Mantel: 1/5! = 0.008 is the smallest p).
MODELS_SHAPE: dict[str, Any] = {"languages": 5, "layers": 8, "neurons": 128}


# --------------------------------------------------------------------------- grid


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of the grid: a shape, a family of methods and a replicate count."""

    family: str  # "tests", "compare", "bootstrap", "stages", "deactivation", ...
    shape: Shape | AblationShape | RoutingShape
    reps: int
    n_boot: int = 0
    controls: int = 0  # accuracy cells: random controls per set
    note: str = ""  # a label replacing the shape's (cells that simulate no neurons)

    def label(self) -> str:
        return self.note or self.shape.label()


def _shape(het: str, n: int, rate: float, **kw: Any) -> Shape:
    """A grid shape; the stated effect is P x 2 (sparse) or P x 1.2 (dense)."""
    extra: dict[str, Any] = {"icc": 0.05} if het == "beta-binomial" else {}
    if het == "logit-normal":
        extra["sd"] = 1.0
    effect = 1.0 if rate < 0.1 else 0.2
    return Shape(heterogeneity=het, sequences=n, base_rate=rate, effect=effect, **extra, **kw)  # type: ignore[arg-type]


HETS = ("independent", "beta-binomial", "logit-normal")


def full_grid() -> list[Cell]:
    """The tests cells of ``make calibration`` (the whole grid: 49 minutes on 2 shared cores)."""
    cells = []
    for het in HETS:
        for rate in (0.01, 0.5):
            for n in (8, 16, 32, 128):
                cells.append(Cell("tests", _shape(het, n, rate), reps=40, n_boot=200))
        cells.append(Cell("tests", _shape(het, 32, 0.01, lengths="lognormal"), 40, 200))
    for het in ("beta-binomial", "logit-normal"):
        for n in (16, 128):
            cells.append(Cell("tests", _shape(het, n, 0.01, responses=4, rho=0.5), 40, 200))
    for n in (16, 128):  # repeated items whose effects do not carry across languages
        cells.append(Cell("tests", _shape("logit-normal", n, 0.01, responses=4), 40, 200))
    for n in (80, 160):  # R = 10 responses per item: 8 and 16 items per language
        cells.append(Cell("tests", _shape("logit-normal", n, 0.01, responses=10), 40, 200))
    for het in HETS:
        for n in (8, 128):
            cells.append(Cell("compare", _shape(het, n, 0.01), reps=200))
    cells.append(Cell("compare", _shape("logit-normal", 32, 0.01, responses=4, rho=0.5), 200))
    for shape in (
        _shape("independent", 32, 0.01),
        _shape("logit-normal", 8, 0.01),
        _shape("logit-normal", 32, 0.01),
        _shape("logit-normal", 32, 0.01, responses=4, rho=0.5),
    ):
        cells.append(Cell("bootstrap", shape, reps=20, n_boot=40))
    for het, n in (("independent", 32), ("logit-normal", 16)):
        cells.append(Cell("stages", _shape(het, n, 0.01, **STAGE_LAYERS), reps=200))
    for het, n in (("independent", 16), ("logit-normal", 32)):
        cells.append(Cell("models", _shape(het, n, 0.01, **MODELS_SHAPE), reps=40, n_boot=40))
    return cells


def quick_grid() -> list[Cell]:
    """The reduced grid of ``make bench`` (well under two minutes)."""
    return [
        Cell("tests", _shape("independent", 128, 0.01), reps=8, n_boot=100),
        Cell("tests", _shape("logit-normal", 16, 0.01, responses=4, rho=0.5), reps=8, n_boot=100),
        Cell("tests", _shape("logit-normal", 80, 0.01, responses=10), reps=8, n_boot=20),
        Cell("tests", _shape("beta-binomial", 32, 0.01), reps=8, n_boot=20),  # true D known
        Cell("tests", _shape("independent", 8, 0.5), reps=8, n_boot=20),  # 8 clusters, dense
        Cell("compare", _shape("independent", 16, 0.01), reps=20),
        Cell("bootstrap", _shape("logit-normal", 16, 0.01), reps=2, n_boot=10),
        Cell("stages", _shape("independent", 32, 0.01, **STAGE_LAYERS), reps=20),
        Cell("models", _shape("independent", 16, 0.01, **MODELS_SHAPE), reps=4, n_boot=10),
    ]


# --------------------------------------------------------------------------- evaluation


#: Fewer replicates than this give no verdict (the quick grid's smoke cells).
MIN_REPS_FOR_VERDICT = 3


@dataclasses.dataclass
class Result:
    """The Monte-Carlo summary of one method on one cell."""

    method: str
    cell: Cell
    reps: int
    mean: dict[str, float]
    se: dict[str, float]
    descriptive: bool
    seconds: float
    failed: int = 0  # replicates where an identification found no valid lambda

    def bounds(self) -> dict[str, tuple[str, float]]:
        """Per checked metric: the comparison and its bound (nominal +- 3 s.e.)."""
        out: dict[str, tuple[str, float]] = {}
        for col, nominal in zip(COLUMNS[:3], LEVELS, strict=True):
            if col in self.mean:
                out[col] = ("<=", nominal + 3 * self.se[col])
        if "fdr" in self.mean:
            out["fdr"] = ("<=", Q + 3 * self.se["fdr"])
        if "coverage" in self.mean:
            out["coverage"] = (">=", CI - 3 * self.se["coverage"])
        return out

    def failures(self) -> list[str]:
        """The bounds this result breaks, e.g. ``"fpr@0.05 0.31 > bound 0.064"``."""
        names = {"fpr_05": "fpr@0.05", "fpr_01": "fpr@0.01", "fpr_001": "fpr@0.001"}
        out = []
        for col, (op, bound) in self.bounds().items():
            value = self.mean[col]
            bad = value > bound if op == "<=" else value < bound
            if bad:
                sign = ">" if op == "<=" else "<"
                out.append(f"{names.get(col, col)} {value:.3g} {sign} bound {bound:.3g}")
        return out

    def verdict(self) -> str:
        """``ok``, ``FAILS (...)``, ``descriptive``, or no verdict from too few replicates."""
        if self.descriptive:
            return "descriptive"
        if self.reps < MIN_REPS_FOR_VERDICT:  # a Monte-Carlo s.e. from 2 values bounds nothing
            return f"smoke test only ({self.reps} replicates, no verdict)"
        bad = self.failures()
        return f"FAILS ({'; '.join(bad)})" if bad else "ok"


def evaluate(cell: Cell, seed: int = 0) -> list[Result]:
    """Run a cell's replicates; one Result per method of its family."""
    rng = np.random.default_rng([seed, 1])
    extra: dict[str, Any] = {}
    step: Callable[..., Replicate]
    truth: Any
    if isinstance(cell.shape, (AblationShape, RoutingShape)):
        truth = cell.shape  # an ablation's (a routing design's) truth is its shape
    else:
        truth = make_truth(cell.shape, seed)
    if cell.family == "deactivation":
        step = deactivation_tests
    elif cell.family == "routing":  # MoE language experts and the routing change
        step = routing_replicate
        extra = {"n_boot": cell.n_boot, "n_perm": PERMUTATIONS, "seed": seed}
    elif cell.family == "tests":
        step, extra = probability_and_tests, {"n_boot": cell.n_boot}
    elif cell.family == "compare":
        # 10 % of neurons fire twice as often in l0 only: l0's specific neurons change
        step = membership_tests
        extra = {"shifted_truth": shifted(truth, 0.1, 1.0, seed, languages=(0,))}
    elif cell.family == "accuracy":
        step = accuracy_replicate
        extra = {"items": cell.shape.sequences, "controls": cell.controls}
    elif cell.family in COMPARISON_FAMILIES:
        step, extra = _comparison_step(cell, truth, seed)
    elif cell.family == "models":
        step = models_replicate
        extra = {"n_boot": cell.n_boot, "reference": models_reference(truth)}
    elif cell.family == "stages":
        step = stage_count
        extra = {"staged": placed_truth(truth, staged_layers(cell.shape.layers), seed)}
        truth = placed_truth(truth, None, seed)
    else:
        step = change_and_stability
        extra = {"n_boot": cell.n_boot, "reference": population_reference(truth)}
    from langneurons.errors import NoValidLambdaError

    values: dict[str, dict[str, list[float]]] = {}
    failed = 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lambda at its bound etc.: expected on small runs
        for _ in range(cell.reps):
            try:
                replicate = step(truth, rng, **extra)
            except NoValidLambdaError:  # the identification has no answer on this draw
                failed += 1
                continue
            for method, metrics in replicate.items():
                for name, value in metrics.items():
                    values.setdefault(method, {}).setdefault(name, []).append(value)
    seconds = time.perf_counter() - start
    out = []
    for method, metrics in values.items():
        mean, se = {}, {}
        for name, vals in metrics.items():
            arr = np.asarray(vals, dtype=np.float64)
            arr = arr[~np.isnan(arr)]
            mean[name] = float(arr.mean()) if arr.size else math.nan
            se[name] = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
        desc = bool(mean.pop("descriptive", 0.0) > 0.5)
        se.pop("descriptive", None)
        out.append(Result(method, cell, cell.reps - failed, mean, se, desc, seconds, failed))
    return out


# --------------------------------------------------------------------------- output


def _cell_text(r: Result, col: str) -> str:
    """``0.051 ± 0.003`` or ``-``."""
    if col not in r.mean or math.isnan(r.mean[col]):
        return "-"
    se = r.se.get(col, math.nan)
    return f"{r.mean[col]:.3f} ± {se:.3f}" if not math.isnan(se) else f"{r.mean[col]:.3f}"


def summary_lines(rows: list[tuple[str, str, str]]) -> list[str]:
    """Per method (``(method, cell label, verdict)`` rows): cells failing, and where."""
    by_method: dict[str, list[tuple[str, str]]] = {}
    for method, label, verdict in rows:
        by_method.setdefault(method, []).append((label, verdict))
    failing = [(m, label) for m, label, v in rows if v.startswith("FAILS")]
    out = ["**Headline** (regenerated with the table):", ""]
    if failing:
        shown = "; ".join(f"{m} on {label}" for m, label in failing)
        out.append(
            f"- **{len(failing)} of {len(rows)} rows FAIL while their method claims valid "
            f"inference**: {shown}"
        )
    else:
        out.append(
            f"- **No method fails its bounds on a cell where it claims valid inference** "
            f"({len(rows)} rows; `descriptive` rows are methods that say, on data of that "
            "shape, that they are not inference)"
        )
    for method, cells in by_method.items():
        bad = [(label, v) for label, v in cells if v.startswith("FAILS")]
        desc = sum(v == "descriptive" for _, v in cells)
        text = f"- {method}: {len(cells) - len(bad) - desc} of {len(cells)} cells ok"
        if desc:
            text += f", {desc} descriptive"
        if bad:
            shown = "; ".join(f"{label} ({v[7:-1].split('; ')[0]})" for label, v in bad[:4])
            more = f"; and {len(bad) - 4} more" if len(bad) > 4 else ""
            text += f"; fails on {shown}{more}"
        out.append(text)
    return out


def markdown(results: list[Result], header: str) -> str:
    """The calibration table (one row per method and cell) under a header."""
    rows = [(r.method, r.cell.label(), r.verdict()) for r in results]
    lines = [
        header,
        *summary_lines(rows),
        "",
        "| method | data shape | reps | " + " | ".join(HEADERS) + " | verdict |",
    ]
    lines.append("|" + "---|" * (len(HEADERS) + 4))
    for r in results:
        reps = f"{r.reps}" + (f" (B={r.cell.n_boot})" if r.cell.n_boot else "")
        if r.failed:
            reps += f", {r.failed} without a valid lambda"
        cells = " | ".join(_cell_text(r, c) for c in COLUMNS)
        lines.append(f"| {r.method} | {r.cell.label()} | {reps} | {cells} | {r.verdict()} |")
    return "\n".join(lines) + "\n"


def header(args: argparse.Namespace, cells: list[Cell], seconds: float) -> str:
    """What was run, when, where, and how to read the table."""
    import langneurons

    command = "python benchmarks/calibration.py " + " ".join(sys.argv[1:])
    reps = sorted({(c.family, c.reps, c.n_boot) for c in cells})
    rep_text = "; ".join(
        f"{fam}: {n} replicates" + (f", B = {b} bootstrap replicates" if b else "")
        for fam, n, b in reps
    )
    shape = Shape()
    return f"""# Calibration of the tests and intervals

Generated by `{command}` (`make calibration`) on {date.today().isoformat()}, langneurons
{getattr(langneurons, "__version__", "?")}, Python {platform.python_version()}, numpy
{np.__version__}, on {platform.machine()} with {os.cpu_count()} CPUs ({platform.node() or "?"}),
in {seconds / 60:.1f} minutes. Replicates per cell: {rep_text}. Seed {args.seed}.

**Simulated runs** (`benchmarks/_simulate.py`): {shape.languages} languages,
{shape.layers} layers x {shape.neurons} neurons, mean response length {shape.length} tokens;
base rates P ~ 0.01 (sparse) or ~ 0.5 (dense), five levels per neuron; 10 % of the neurons
prefer one language (2.5 % of the neuron-language pairs), with P x 2 (sparse) or P x 1.2
(dense) there: this is the stated effect of the power column. Heterogeneity: independent
tokens; beta-binomial with intra-class correlation 0.05; logit-normal with sd 1. The sequence
effect is half shared by all neurons, half each neuron's own. `R=4 rho=0.5`: four responses
per item (`seq_id` repeated), the item holding half the variance, item effects correlated 0.5
across languages. `unequal len`: lognormal lengths (sigma 0.75) with the same mean.

**Measures.** FPR: fraction of null p-values <= alpha (per-neuron tests: the neuron-language
pairs of neurons with equal P in every language; change tests: both runs drawn from the same
truth; McNemar / Cochran's Q: membership in language l0's mask across independent runs of
the same truth). FDR: mean of V / max(R, 1) of the significant set at q = 0.05. Power: tests,
fraction of true preferences with p <= 0.05; BH / BY, fraction of them significant; McNemar /
Cochran's Q, rejections at 0.05 when 10 % of the neurons fire twice as often in l0 in one run.
Spontaneous alignment trains l0 and l1 of 4 languages, so its exact permutation p-value is a
multiple of 1/6 and cannot fall below 0.05 (FPR 0 by construction, no power).
Coverage: fraction of true values inside the 95 % intervals (probabilities: the population
ratio E[a] / E[t]; the probability bootstrap runs B bootstrap replicates as given in the reps
column, fewer than its default 1,000, which costs percentile intervals a little coverage;
change intervals: 0 under the null; identification and stage intervals: the rule applied
to the population with {IDENTIFY}, 3 stages). Stage count (`segment_stages` with
`n_stages="auto"`, 99 permutations, on the identified runs' profiles; 24 layers of 64
neurons): FPR, fraction of runs whose effect neurons are spread uniformly over the layers
(no depth structure) where more than one stage is chosen; power, fraction of runs whose
effect neurons all lie in the first and last quarter where exactly 3 are. ± is the Monte-Carlo
standard error (sd of per-replicate values / sqrt(replicates)), which includes the
dependence of the neurons of one replicate.

**Other families** (rows named after the function): `compare`, McNemar and Cochran's Q of a
mask across independent identified runs; `bootstrap`, the change tests of two runs of one truth
(`type_change`, `shared_by_change`, `spontaneous_alignment`) and the identification and stage
bootstraps; `overlap`, two independent sets of 5 % of the neurons with the layer profile of
identified sets (about 60 % in the first and last two of 8 layers); `membership`, McNemar per
mask and type and Bowker / Stuart-Maxwell between runs of one truth (power: 10 % of neurons
twice as active in l0); `paired` and `swap`, `type_change` paired vs unpaired and its label-swap
permutation test (n_boot holds the permutations; power: 20 % of neurons 4x as active in l0);
`groups`, `group_comparison` of 3 vs 3 and 4 vs 4 replicate runs; `accuracy`, per-item
correctness under deactivation (exact McNemar over items, the control rank test with C random
sets, the Agresti-Min interval of the drop; items of difficulty N(0.5, 1.5) on the logit
scale, a 0.5 logit drop of every set, a planted 0.3 drop of the own set); `deactivation`,
per-item NLL under deactivation (4 languages, 19 controls, 20-80 tokens per item, log-normal
difficulty and damage factor of sd 0.5, or 1 for heavy tails; every set adds 0.05 nats per
token, the own set 0.05 more in the power column; coverage of the true damage and dominance
under the null and the alternative).

**Verdict**: `FAILS` when an FPR or the FDR exceeds nominal + 3 s.e., or coverage falls below
95 % - 3 s.e.; `descriptive` when the method declares (`attrs["inference"] ==
"descriptive"`) that it is not valid inference on data of that shape. Power has no bound.
Each check at 3 s.e. flags a calibrated method with probability about 0.13 %, so over the
hundreds of checks here about one spurious `FAILS` barely past its bound is expected; a
failure repeated over cells, or far past its bound, is the signal.
"""


def rows_for_json(results: list[Result], seconds: float) -> list[dict[str, Any]]:
    """Headline rows for ``make bench``: one per method and cell, plus the total time."""
    rows = []
    for r in results:
        col = next(c for c in ("fpr_05", "fdr", "coverage") if c in r.mean)
        rows.append(
            _table.row(
                "calibration",
                f"{r.method} [{r.cell.label()}] {col}",
                r.mean[col],
                unit="rate",
                note=r.verdict(),
            )
        )
    rows.append(_table.row("calibration", "grid wall time", seconds, unit="s"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the grid; write the table (``--out``) and the headline rows (``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the reduced grid (CI)")
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    parser.add_argument("--json", type=Path, help="write the headline rows here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--family", "--only", action="append", help="run only cells of this family (repeatable)"
    )
    args = parser.parse_args(argv)
    cells = (quick_grid() if args.quick else full_grid()) + comparison_cells(args.quick)
    cells += deactivation_cells(args.quick)
    cells += [Cell("routing", **c) for c in routing_cells(args.quick)]
    if args.family:
        cells = [c for c in cells if c.family in set(args.family)]
    results: list[Result] = []
    start = time.perf_counter()
    for i, cell in enumerate(cells):
        done = evaluate(cell, seed=args.seed + i)
        results += done
        took = done[0].seconds if done else 0.0
        print(f"[{i + 1}/{len(cells)}] {cell.family}: {cell.label()} ({took:.1f} s)", flush=True)
        for r in done:
            print(f"    {r.method}: {r.verdict()}", flush=True)
    seconds = time.perf_counter() - start
    results.sort(key=lambda r: (r.method, r.cell.family))
    table = markdown(results, header(args, cells, seconds))
    if args.out is not None:
        args.out.write_text(table)
    else:
        print(table)
    _table.write_rows(args.json, rows_for_json(results, seconds))
    print(f"calibration: {len(cells)} cells in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
