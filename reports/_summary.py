"""The report's opening: headline numbers of each run and each comparison, in a few lines.

Every line reads saved results (their variables and attributes) and says whether the number is
**inference** (an interval or test with sequences as the sampled unit: bootstrap over
sequences, cluster-robust tests) or **descriptive** (counts of one identification, or
token-level statistics without per-sequence counts). A result may say so itself in
``attrs["inference"]``; otherwise its ``assumption`` and ``resampling`` attributes decide.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import xarray as xr

from langneurons._format import num as _num
from langneurons._format import significant
from langneurons.names import LANGUAGE, LAYER, NEURON

#: How each kind of count is described.
TYPE_COUNTS = "specific, related, unassigned: of the selected neurons; general: of all neurons"


def num(value: Any, digits: int = 3) -> str:
    """A number for a sentence: integers as they are, floats to ``digits`` significant digits."""
    return _num(value, digits, missing="n/a", keep_zeros=True, whole_below=1e6)


def signed(value: Any) -> str:
    """A change with its sign."""
    text = num(value)
    return text if text.startswith(("-", "n/a")) or text == "0" else f"+{text}"


def param(value: Any) -> str:
    """A parameter as given (``0.05``, not ``0.0500``)."""
    if isinstance(value, np.generic):
        value = value.item()
    return f"{value:g}" if isinstance(value, float) else str(value)


def validity(attrs: Mapping[str, Any], default: str) -> str:
    """Whether a result is "Inference (...)" or "Descriptive (...)", from its attributes."""
    text = _validity(attrs, default)
    return text[:1].upper() + text[1:]


def _validity(attrs: Mapping[str, Any], default: str) -> str:
    explicit = attrs.get("inference")
    if isinstance(explicit, (bool, np.bool_)):
        return "inference" if explicit else "descriptive"
    if explicit:
        return str(explicit)
    assumption = str(attrs.get("assumption", ""))
    resampling = str(attrs.get("resampling", ""))
    if assumption.startswith("independent tokens"):
        return "descriptive (token-level: assumes independent tokens, no per-sequence counts)"
    if "sequence" in assumption or "sequence" in resampling:
        return "inference (sequences are the sampled unit)"
    return default


def _scalar(ds: xr.Dataset, name: str) -> float:
    return float(np.asarray(ds[name].values)) if name in ds.variables else math.nan


def _top(counts: Mapping[str, Any], n: int = 3) -> str:
    """``"ru 28, bn 4, ja 2"``: the largest non-zero counts."""
    items = sorted(((int(v), str(k)) for k, v in counts.items()), key=lambda t: (-t[0], t[1]))
    shown = [f"{k} {v:,}" for v, k in items[:n] if v > 0]
    return ", ".join(shown) if shown else "none"


def type_totals(ds: xr.Dataset) -> dict[str, int]:
    """Totals over layers of each type in an identification's ``attrs["per_layer"]``."""
    per_layer = ds.attrs.get("per_layer") or {}
    return {str(t): int(sum(v)) for t, v in per_layer.items()}


def lambda_warning(attrs: Mapping[str, Any]) -> str | None:
    """A warning line when the automatic lambda ended at the top of its search range."""
    if not attrs.get("lambda_at_bound"):
        return None
    bounds = attrs.get("lam_range_searched") or attrs.get("lam_range") or ["?", "?"]
    lo, hi = (num(float(b)) if isinstance(b, (int, float)) else str(b) for b in bounds)
    return (
        f"the automatic lambda {num(attrs.get('lambda'), 4)} ended at the top of its search "
        f"range [{lo}, {hi}]: the condition still holds there, so the largest lambda may lie "
        "above it; widen the range (--lambda-range) or let it grow (--lambda-widen)"
    )


def identification_line(name: str, ds: xr.Dataset) -> str:
    """Selected neurons, tau, lambda, types, and the languages with the most neurons."""
    a = ds.attrs
    total = int(ds.sizes.get(LAYER, 0) * ds.sizes.get(NEURON, 0))
    types = type_totals(ds)
    k = len(a.get("languages") or []) or ds.sizes.get(LANGUAGE, 0)
    method = str(a.get("method", "?"))
    head = f"Identification {name}" + (f" ({method})" if method != name else "")
    head += f": {num(a.get('n_selected'))}"
    head += f" of {total:,} neurons selected" if total else " neurons selected"
    if "top_rate" in a:
        head += f" (top_rate {param(a['top_rate'])})"
    head += f", tau {num(a.get('tau'), 4)}"
    if a.get("lambda") is not None:
        head += f", lambda {num(a.get('lambda'), 4)}"
        if a.get("lambda_at_bound"):
            head += " (at the top of its search range)"
    parts = [f"{t} {types[t]:,}" for t in ("specific", "related", "unassigned") if t in types]
    head += "; of the selected: " + ", ".join(parts) if parts else ""
    if "general" in types:
        head += f"; general (any neuron above tau in all {k} languages): {types['general']:,}"
    per_language = a.get("per_language") or {}
    if per_language:
        masks = {lang: c.get("mask", 0) for lang, c in per_language.items()}
        head += f"; most neurons: {_top(masks)}"
    return head + ". Descriptive (counts of one identification; no interval)."


def stages_line(ds: xr.Dataset) -> str:
    """Each stage's name and layer range, with the bootstrap interval of its start."""
    names = [str(x) for x in np.asarray(ds["stage"].values)] if "stage" in ds.coords else []
    starts = np.asarray(ds["start"].values).astype(int)
    ends = np.asarray(ds["end"].values).astype(int)
    low = np.asarray(ds["start_low"].values) if "start_low" in ds else None
    high = np.asarray(ds["start_high"].values) if "start_high" in ds else None
    parts = []
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        name = names[i] if i < len(names) else f"stage {i + 1}"
        layers = f"layers {s}–{e}" if e != s else f"layer {s}"
        text = f"{i + 1} {name}: {layers}"
        if i > 0 and low is not None and high is not None:
            lo, hi = float(low[i]), float(high[i])
            if math.isfinite(lo) and math.isfinite(hi):
                text += f" (start {num(lo)}–{num(hi)})"
        parts.append(text)
    method = ds.attrs.get("method")
    head = f"Stages{f' ({method} counts)' if method else ''}: " + "; ".join(parts)
    n_boot = ds.attrs.get("n_boot")
    if low is not None and n_boot:
        ci = ds.attrs.get("ci", 0.95)
        head += (
            f". Boundaries: descriptive segmentation; their {num(float(ci) * 100)}% intervals: "
            + _validity(ds.attrs, "inference (bootstrap)")
            + f", {n_boot} replicates."
        )
    else:
        head += ". Descriptive (segmentation of one identification)."
    if ds.attrs.get("n_stages_rule") == "bic":
        head += " Number of stages chosen by the BIC: descriptive (it over-splits)."
    return head


def stability_line(ds: xr.Dataset) -> str:
    """Selection count with its interval and the least stable languages' masks."""
    a = ds.attrs
    head = f"Stability ({a.get('method', '?')}, {num(a.get('n_ok', a.get('n_boot')))} replicates)"
    ci = a.get("ci")
    parts = []
    for name, label in (("n_selected", "selected"), ("lambda", "lambda"), ("tau", "tau")):
        if f"{name}_lower" in ds.variables and f"{name}_upper" in ds.variables:
            lo, hi = _scalar(ds, f"{name}_lower"), _scalar(ds, f"{name}_upper")
            parts.append(f"{label} {num(lo)}–{num(hi)}")
    if parts:
        head += f": {num(float(ci) * 100) if ci else '?'}% intervals " + ", ".join(parts)
    if "jaccard_mean" in ds.variables and LANGUAGE in ds.coords:
        values = np.asarray(ds["jaccard_mean"].values, dtype=np.float64)
        langs = [str(x) for x in np.asarray(ds[LANGUAGE].values)]
        finite = [(v, lang) for v, lang in zip(values, langs, strict=True) if math.isfinite(v)]
        if finite:
            lowest = sorted(finite)[:3]
            median = float(np.median([v for v, _ in finite]))
            head += (
                f"; mask Jaccard with the full-data mask (mean over replicates): median "
                f"{num(median)}, lowest " + ", ".join(f"{lang} {num(v)}" for v, lang in lowest)
            )
    if "selection_frequency" in ds.variables:
        freq = np.asarray(ds["selection_frequency"].values, dtype=np.float64)
        head += f"; {int((freq >= 0.9).sum()):,} neurons selected in at least 90% of replicates"
    return head + ". " + validity(a, "inference (bootstrap)") + "."


def tests_line(ds: xr.Dataset) -> str:
    """How many (neuron, language) tests are significant, and for which languages most."""
    a = ds.attrs
    head = (
        f"Per-neuron language-preference tests ({a.get('method', '?')}, "
        f"{a.get('correction', 'FDR')} at alpha {param(a.get('alpha'))}): "
        f"{num(a.get('n_significant'))} of {num(a.get('n_tests'))} (neuron, language) tests "
        "significant"
    )
    per = a.get("n_significant_per_language")
    if isinstance(per, Mapping) and per:
        head += f"; most: {_top(per)}"
    return head + ". " + validity(a, "descriptive") + "."


def accuracy_line(name: str, effects: xr.Dataset) -> str:
    """Baseline accuracy, and per panel the mean own-language drop against the controls."""
    evaluated = [str(x) for x in np.asarray(effects["evaluated"].values)]
    base = ", ".join(
        f"{e} {significant(100 * float(b), sign=False)}%"
        for e, b in zip(evaluated, effects["baseline"].values, strict=True)
    )
    parts = []
    for panel in [str(x) for x in np.asarray(effects["panel"].values)]:
        drops = [
            float(effects["drop"].sel(panel=panel, deactivated=d, evaluated=d).values)
            for d in [str(x) for x in np.asarray(effects["deactivated"].values)]
            if d in evaluated
        ]
        mean = float(np.mean(drops)) if drops else math.nan
        parts.append(f"{panel} {significant(100 * mean, sign=True)} pp")
    n = int(effects.attrs.get("controls", 0))
    return (
        f"Accuracy deactivation {name}: baseline {base}; mean own-language drop "
        + "; ".join(parts)
        + f" ({n} random control(s) per set: smallest attainable control p "
        f"{num(float(effects.attrs.get('min_pvalue_control', math.nan)), 2)})."
    )


def deactivation_line(ds: xr.Dataset, effects: xr.Dataset, n: int = 3) -> str:
    """The strongest own-language perplexity changes, against the random controls."""
    ratio = cast(
        xr.DataArray,
        effects["ppl_ratio"] if "ppl_ratio" in effects else np.exp(effects["damage"]),
    )
    evaluated = [str(x) for x in np.asarray(effects["evaluated"].values)]
    rows = []
    for d in [str(x) for x in np.asarray(effects["deactivated"].values)]:
        if d not in evaluated:
            continue
        r = float(ratio.sel(deactivated=d, evaluated=d).values)
        if not math.isfinite(r):
            continue
        text = f"{d} {significant((r - 1) * 100, sign=True)}%"
        if "control_damage" in effects and effects.sizes.get("control", 0) > 0:
            cd = np.asarray(effects["control_damage"].sel(deactivated=d, evaluated=d).values)
            if np.isfinite(cd).any():
                ctrl = math.exp(float(np.nanmean(cd))) - 1
                text += f" (random sets {significant(ctrl * 100, sign=True)}%"
                if "pvalue_control" in effects:
                    p = float(effects["pvalue_control"].sel(deactivated=d).values)
                    text += f", control p = {num(p, 2)}"
                text += ")"
        rows.append((abs(r - 1), d, text))
    rows.sort(key=lambda t: (-t[0], t[1]))
    a = ds.attrs
    head = f"Deactivation ({a.get('identification', '?')} neurons"
    if a.get("controls"):
        head += f", {a['controls']} random control sets per language"
    head += "): strongest own-language perplexity changes: "
    head += "; ".join(t for _, _, t in rows[:n]) if rows else "none"
    default = "descriptive (mean NLL over the evaluation tokens; no per-sequence values)"
    return head + ". " + validity(a, default) + "."


def totals_line(name: str, first: str, second: str, a: xr.Dataset, b: xr.Dataset) -> str:
    """Selected and per-type totals of one identification in two runs."""
    ta, tb = type_totals(a), type_totals(b)
    parts = [f"selected {num(a.attrs.get('n_selected'))} → {num(b.attrs.get('n_selected'))}"]
    for t in ("specific", "related", "unassigned", "general"):
        if t in ta and t in tb:
            parts.append(f"{t} {ta[t]:,} → {tb[t]:,}")
    return (
        f"Identification {name}, {first} → {second}: "
        + ", ".join(parts)
        + f" ({TYPE_COUNTS}). Descriptive."
    )


def type_change_line(ds: xr.Dataset) -> str:
    """Change over all layers with intervals, and the layers whose interval excludes 0."""
    types = [str(t) for t in np.asarray(ds["type"].values)]
    ci = ds.attrs.get("ci")
    parts = []
    for t in types:
        sel = ds.sel(type=t)
        if "total_change" not in ds:
            break
        est = _scalar(sel, "total_change")
        lo, hi = _scalar(sel, "total_change_low"), _scalar(sel, "total_change_high")
        parts.append(f"{t} {signed(est)} [{num(lo)}, {num(hi)}]")
    head = "Change over all layers"
    if ci:
        head += (
            f" ({num(float(ci) * 100)}% bootstrap interval, {ds.attrs.get('n_boot')} replicates)"
        )
    head += ": " + ", ".join(parts) if parts else ""
    low = ds["change_low"].transpose(LAYER, "type").values
    high = ds["change_high"].transpose(LAYER, "type").values
    layers = [str(x) for x in np.asarray(ds[LAYER].values)]
    change = ds["change"].transpose(LAYER, "type").values
    clear = [
        f"{types[j]} at layer {layers[i]} ({signed(float(change[i, j]))})"
        for i in range(len(layers))
        for j in range(len(types))
        if (low[i, j] > 0 or high[i, j] < 0)
    ]
    head += "; per layer, intervals excluding 0: " + (", ".join(clear) if clear else "none")
    return head + ". " + validity(ds.attrs, "inference (bootstrap)") + "."


def overlap_line(ds: xr.Dataset) -> str:
    """Neurons selected in both runs, and the Jaccard index of the selected sets."""
    if "type" not in ds.coords or "selected" not in [str(t) for t in ds["type"].values]:
        return "Overlap of the two runs' sets: see the appendix. Descriptive."
    sel = ds.sel(type="selected")
    return (
        f"Selected neurons in both runs: {num(_scalar(sel, 'type_n_both'))} "
        f"(of {num(_scalar(sel, 'type_n_a'))} and {num(_scalar(sel, 'type_n_b'))}; Jaccard "
        f"{num(_scalar(sel, 'type_jaccard'))}). Descriptive."
    )


def transitions_line(ds: xr.Dataset) -> str:
    """How many neurons kept or changed their type."""
    stayed, changed = _scalar(ds, "stayed"), _scalar(ds, "changed")
    return (
        f"Type transitions: {num(stayed)} neurons kept their type, {num(changed)} changed "
        "(none: not selected; unassigned: selected, above tau in no language). Descriptive."
    )


def chi_square_line(ds: xr.Dataset) -> str:
    """The chi-square test of the type-by-layer counts."""
    return (
        f"Chi-square test of homogeneity of the type counts by layer: statistic "
        f"{num(_scalar(ds, 'statistic'))}, dof {num(_scalar(ds, 'dof'))}, p = "
        f"{num(_scalar(ds, 'pvalue'), 2)}, Cramér's V {num(_scalar(ds, 'cramers_v'))}. "
        + validity(ds.attrs, "descriptive (neurons counted as independent units)")
        + "."
    )


def mcnemar_line(ds: xr.Dataset) -> str:
    """McNemar's test of the selections (or why it has no p-value)."""
    if ds.attrs.get("degenerate"):
        return (
            f"McNemar test of selection: {num(_scalar(ds, 'n_a_only'))} selected only in the "
            f"first run, {num(_scalar(ds, 'n_b_only'))} only in the second; no p-value: "
            f"{ds.attrs.get('reason', 'a margin is fixed by construction')}."
        )
    return (
        f"McNemar test of selection: {num(_scalar(ds, 'n_a_only'))} selected only in the first "
        f"run, {num(_scalar(ds, 'n_b_only'))} only in the second, p = "
        f"{num(_scalar(ds, 'pvalue'), 2)}. "
        + validity(ds.attrs, "descriptive (neurons counted as independent units)")
        + "."
    )


def membership_line(ds: xr.Dataset) -> str:
    """Membership changes per language mask and per type, and the type switches."""
    parts = []
    for dim, var in ((ds["language"], "language"), (ds["type"], "type")):
        for i, label in enumerate(str(x) for x in np.asarray(dim.values)):
            a = int(ds[f"{var}_n_a_only"].values[i])
            b = int(ds[f"{var}_n_b_only"].values[i])
            parts.append(f"{label} -{a}/+{b}")
    return (
        "Membership change (neurons leaving/joining each language mask and type): "
        + ", ".join(parts)
        + f"; Bowker p = {num(_scalar(ds, 'bowker_pvalue'), 2)}, Stuart-Maxwell p = "
        f"{num(_scalar(ds, 'stuart_maxwell_pvalue'), 2)}. "
        + validity(ds.attrs, "descriptive (neurons counted as independent units)")
        + "."
    )


def shared_by_change_line(ds: xr.Dataset) -> str:
    """Bins of the shared-by-N histogram whose change interval excludes 0."""
    bins = [str(x) for x in np.asarray(ds["n_shared"].values)]
    low, high = np.asarray(ds["change_low"].values), np.asarray(ds["change_high"].values)
    change = np.asarray(ds["change"].values)
    clear = [
        f"N={b} ({signed(float(c))})"
        for b, c, lo, hi in zip(bins, change, low, high, strict=True)
        if lo > 0 or hi < 0
    ]
    return (
        "Shared-by-N histogram (all neurons): bins whose change interval excludes 0: "
        + (", ".join(clear) if clear else "none")
        + ". "
        + validity(ds.attrs, "inference (bootstrap)")
        + "."
    )


def models_lines(ds: xr.Dataset) -> list[str]:
    """Cross-model comparison: per model its shape and type shares; per pair its Mantel test."""
    a = ds.attrs
    names = [str(m) for m in ds["model"].values]
    out = [
        f"{len(names)} models on {len(a.get('languages', []))} common languages "
        f"({', '.join(a.get('languages', []))}); {a.get('languages_note', '')}."
    ]
    for m in names:
        sel = ds.sel(model=m)
        shares = ", ".join(
            f"{t} {100 * float(sel['type_share'].sel(type=t)):.2f}%"
            for t in ("specific", "related", "general")
        )
        out.append(
            f"{m} ({int(sel['n_layers'])} layers x {int(sel['n_neurons'])} neurons): {shares} "
            "of all neurons"
        )
    out.append(f"Shares and profiles: {a.get('inference')} ({a.get('inference_reason', '')}).")
    for pair, r, p in zip(
        [str(x) for x in ds["pair"].values],
        ds["mantel_r"].values,
        ds["mantel_pvalue"].values,
        strict=True,
    ):
        out.append(
            f"Language similarity {pair}: Mantel r = {num(float(r))}, p = {num(float(p))} "
            f"({a.get('mantel_inference')}: {a.get('mantel_reason')})"
        )
    if a.get("tokens_note"):
        out.append(f"Tokens: {a['tokens_note']}.")
    return out


def lines_of(kind_label: str, ds: xr.Dataset) -> list[str]:
    """Summary lines of a compare result by its recognised kind (empty when none fits)."""
    if kind_label.endswith("(compare_models)"):
        return models_lines(ds)
    if kind_label.endswith("(type_change)"):
        return [type_change_line(ds)]
    if kind_label.endswith("(overlap)"):
        return [overlap_line(ds)]
    if kind_label.endswith("(transition_table)"):
        return [transitions_line(ds)]
    if kind_label.endswith("(compare_type_distributions)"):
        return [chi_square_line(ds)]
    if kind_label.endswith("(mcnemar)"):
        return [mcnemar_line(ds)]
    if kind_label.endswith("(membership_change)"):
        return [mcnemar_line(ds), membership_line(ds)]
    if kind_label.endswith("(shared_by_change)"):
        return [shared_by_change_line(ds)]
    return []


def intro() -> str:
    """The sentence that opens the summary."""
    return (
        "Headline numbers first; parameters, provenance and full tables follow in the appendix. "
        "Each line says whether it is inference (intervals and tests with sequences as the "
        "sampled unit) or descriptive (counts of one identification, or token-level "
        "statistics without per-sequence counts)."
    )


__all__: Sequence[str] = [
    "TYPE_COUNTS",
    "deactivation_line",
    "membership_line",
    "identification_line",
    "intro",
    "lambda_warning",
    "lines_of",
    "models_lines",
    "num",
    "stability_line",
    "stages_line",
    "tests_line",
    "totals_line",
    "type_totals",
    "validity",
]
