"""The headline of each analysis result as a short plain-text table (what a paper would quote).

The CLI prints these; ``--json`` prints the full summary instead. Each table reads a result
Dataset's variables and attributes only (nothing is recomputed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from langneurons._format import num

if TYPE_CHECKING:  # the tables read attributes and values only: identify prints without xarray
    import xarray as xr

Lines = list[str]


_fmt = num


def _interval(
    ds: xr.Dataset, base: str, index: dict[str, Any] | None = None, estimate: str = "estimate"
) -> str | None:
    """``estimate [lower, upper]`` of variables ``base_estimate``/``_lower``/``_upper``."""
    names = [f"{base}_{estimate}", f"{base}_lower", f"{base}_upper"]
    if not all(n in ds.variables for n in names):
        return None
    est, lo, hi = (ds[n].sel(index or {}).values.item() for n in names)
    return f"{_fmt(est)} [{_fmt(lo)}, {_fmt(hi)}]"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> Lines:
    """Columns padded to their widest cell; the first column left-aligned, the rest right."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = []
    for r in cells:
        first = r[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        out.append(indent + "  ".join([first, *rest]).rstrip())
    return out


def _labels(ds: xr.Dataset, dim: str) -> list[str]:
    return [str(x) for x in np.asarray(ds[dim].values).tolist()]


def _scalars(ds: xr.Dataset, names: Sequence[str] | None = None) -> Lines:
    chosen = names or [str(n) for n, v in ds.data_vars.items() if v.ndim == 0]
    rows = [[n, ds[n].values.item()] for n in chosen if n in ds.data_vars and ds[n].ndim == 0]
    return table(["statistic", "value"], rows) if rows else []


def inference_line(attrs: dict[str, Any]) -> Lines:
    """Say whether the p-values and intervals are inference or descriptive, when attrs tell."""
    kind = attrs.get("inference")
    if kind is None:
        assumption = str(attrs.get("assumption", ""))
        if "independent tokens" in assumption:
            kind = "descriptive"
    if kind is None:
        return [f"  assumes {attrs['assumption']}"] if "assumption" in attrs else []
    return [f"  inference: {kind}" + (f" ({attrs['assumption']})" if "assumption" in attrs else "")]


# --------------------------------------------------------------------------- per kind
def identification(ds: xr.Dataset) -> Lines:
    """lambda, tau, selected, unassigned, and the per-language specific / related / mask sizes."""
    a = ds.attrs
    per_layer = a.get("per_layer", {})
    unassigned = sum(per_layer.get("unassigned", []))
    general = sum(per_layer.get("general", []))
    head = f"  {a.get('method')}: {_fmt(a.get('n_selected'))} neurons selected"
    head += f" ({_fmt(unassigned)} of them assigned to no language)"
    head += f", tau {_fmt(a.get('tau'), 6)}"
    if a.get("lambda") is not None:
        head += f", lambda {_fmt(a.get('lambda'), 6)}"
        if a.get("lambda_at_bound"):
            head += " (at the top of its search range)"
    lines = [head, f"  general neurons (above tau in every language): {_fmt(general)}"]
    rows = [
        [lang, row["specific"], row["related"], row["mask"]]
        for lang, row in a.get("per_language", {}).items()
    ]
    return lines + table(["language", "specific", "related", "mask"], rows)


def _stage_count_line(ds: xr.Dataset) -> str:
    """How many stages, and how the number was set (and what the rules would choose)."""
    a = ds.attrs
    n = ds.sizes.get("stage", 0)
    plural = "" if n == 1 else "s"
    head = f"  {n} stage{plural} over {ds.sizes.get('layer', '?')} layers"
    rule = a.get("n_stages_rule")
    if rule is None:
        return head
    perm, bic = a.get("n_stages_permutation"), a.get("n_stages_bic")
    others = ([f"the permutation rule chooses {perm}"] if perm else []) + (
        [f"the BIC {bic}"] if bic else []
    )
    if rule == "fixed":
        how = "fixed" + (f"; {', '.join(others)}" if others else "")
    elif rule == "permutation":
        how = f"chosen by sequential permutation tests at {_fmt(a.get('alpha'))}"
        how += f"; the BIC chooses {bic}" if bic else ""
    else:
        how = "chosen by the BIC" + (f"; the permutation rule chooses {perm}" if perm else "")
        how += "; descriptive: the BIC over-splits (see docs/calibration.md)"
    return f"{head} ({how})"


def stages(ds: xr.Dataset) -> Lines:
    """The number of stages and its rule, each stage's names, layers, interval and profile, the
    cost curve and the boundaries under every normalisation."""
    types = _labels(ds, "type") if "type" in ds.dims else []
    positional = "positional_name" in ds
    header = ["stage", *(["positional"] if positional else []), "layers", "start CI"]
    header += [f"mean {t}" for t in types]
    rows = []
    for i, name in enumerate(_labels(ds, "stage")):
        start, end = int(ds["start"].values[i]), int(ds["end"].values[i])
        ci = "-"
        if "start_low" in ds and "start_high" in ds and i > 0:
            lo, hi = ds["start_low"].values[i], ds["start_high"].values[i]
            if not (np.isnan(lo) or np.isnan(hi)):
                ci = f"[{_fmt(float(lo))}, {_fmt(float(hi))}]"
        layers = f"{start}-{end}" if end != start else f"{start}"
        means = [float(ds["stage_mean"].values[i, j]) for j in range(len(types))]
        pos = [str(ds["positional_name"].values[i])] if positional else []
        rows.append([name, *pos, layers, ci, *means])
    lines = [_stage_count_line(ds)]
    lines += inference_line(dict(ds.attrs))
    lines += table(header, rows)
    if "naming" in ds.attrs:
        lines.append(f"  names: {ds.attrs['naming']}")
    if "objective" in ds:
        lines.append(f"  objective (within-stage sum of squares) {_fmt(ds['objective'].item())}")
    if "cost" in ds and "k" in ds.dims:
        cost = " ".join(_fmt(float(c)) for c in ds["cost"].values)
        lines.append(f"  cost J_k for k = 1..{ds.sizes['k']}: {cost}")
        p = ds["pvalue_more"].values if "pvalue_more" in ds else np.array([])
        if p.size and not np.isnan(p).all():
            tested = ", ".join(f"k={k}: {_fmt(float(v))}" for k, v in enumerate(p, 1)
                               if not np.isnan(v))  # fmt: skip
            lines.append(f"  p of k stages against more: {tested}")
    if "normalization_start" in ds and "normalization" in ds.dims:
        rng = ds.attrs.get("normalization_max_range")
        lines.append(
            "  boundaries under each normalisation"
            + (
                f" (an inner boundary moves by up to {_fmt(rng)} layer{'' if rng == 1 else 's'})"
                if rng is not None
                else ""
            )
        )
        starts = ds["normalization_start"].values
        rows = [
            [norm, " ".join(str(int(v)) for v in starts[i])]
            for i, norm in enumerate(_labels(ds, "normalization"))
        ]
        lines += table(["normalization", "stage starts"], rows)
    return lines


def stability(ds: xr.Dataset) -> Lines:
    """Selection and per-language Jaccard with intervals; lambda, tau and selected with theirs."""
    lines = []
    for name in ("n_selected", "lambda", "tau"):
        text = _interval(ds, name)
        if text is not None:
            lines.append(f"  {name:<11} {text}")
    a = ds.attrs
    lines.append(
        f"  replicates {_fmt(a.get('n_ok'))} of {_fmt(a.get('n_boot'))} "
        f"({_fmt(a.get('ci'))} {a.get('interval', 'percentile')} intervals)"
    )
    if "language" in ds.dims:
        rows = []
        for lang in _labels(ds, "language"):
            idx = {"language": lang}
            rows.append(
                [
                    lang,
                    _interval(ds, "specific", idx) or "-",
                    _interval(ds, "mask_size", idx) or "-",
                    _interval(ds, "jaccard", idx, estimate="mean") or "-",
                ]
            )
        lines += table(["language", "specific", "mask size", "Jaccard of mask: mean [CI]"], rows)
    return lines


def _unit_line(a: dict[str, Any]) -> Lines:
    """The unit of replication (cluster) and design effect, when the attrs record them."""
    unit = a.get("cluster")
    if unit in (None, "token"):
        deff = a.get("design_effect")
        return [f"  design effect D = {_fmt(deff)} (effective n = n / D)"] if deff else []
    counts = a.get("n_items") if unit == "item" else a.get("n_sequences")
    size = ""
    if isinstance(counts, dict) and counts:
        size = f" ({_fmt(min(counts.values()))} to {_fmt(max(counts.values()))} per language)"
    return [f"  unit of replication: {unit}{size}"]


def tests(ds: xr.Dataset) -> Lines:
    """The number of significant neuron x language tests, per language."""
    a = ds.attrs
    # descriptive p-values are a ranking, not tests: no "significant" in their headline
    word = "below the FDR threshold" if a.get("inference") == "descriptive" else "significant"
    lines = [
        f"  {a.get('method')} test, {a.get('correction')} at {_fmt(a.get('alpha'))}: "
        f"{_fmt(int(ds['significant'].sum()))} of {_fmt(int(ds['significant'].size))} "
        f"neuron x language tests {word}"
        + (f" with margin {_fmt(a.get('min_effect'))}" if a.get("min_effect") else "")
    ]
    if a.get("min_effect"):
        lines.append(f"  without the margin: {_fmt(a.get('n_significant_without_margin'))} {word}")
    lines += _unit_line(a)
    lines += inference_line(dict(a))
    if "language" in ds["significant"].dims:
        other = [d for d in ds["significant"].dims if d != "language"]
        counts = ds["significant"].sum(other).values
        rows = [[lang, int(c)] for lang, c in zip(_labels(ds, "language"), counts, strict=True)]
        if "effect" in ds:
            sig = ds["significant"]
            effect = ds["effect"].where(sig).median(other, skipna=True).values
            rows = [[*r, float(e)] for r, e in zip(rows, effect, strict=True)]
            lines += table(["language", "significant", "median effect"], rows)
        else:
            lines += table(["language", "significant"], rows)
    return lines


def probability(ds: xr.Dataset) -> Lines:
    """Median activation probability and interval width per language."""
    a = ds.attrs
    lines = [f"  method {a.get('method')}, {_fmt(a.get('ci'))} intervals"]
    lines += _unit_line(a)
    lines += inference_line(dict(a))
    names = [n for n in ("p", "estimate", "probability") if n in ds.data_vars]
    lows = [n for n in ("lower", "low", "ci_lower") if n in ds.data_vars]
    highs = [n for n in ("upper", "high", "ci_upper") if n in ds.data_vars]
    if names and lows and highs and "language" in ds[names[0]].dims:
        p = ds[names[0]]
        other = [d for d in p.dims if d != "language"]
        width = (ds[highs[0]] - ds[lows[0]]).median(other).values
        median = p.median(other).values
        rows = [
            [lang, float(m), float(w)]
            for lang, m, w in zip(_labels(ds, "language"), median, width, strict=True)
        ]
        lines += table(["language", "median P", "median CI width"], rows)
    return lines


def deactivation(ds: xr.Dataset) -> Lines:
    """Per deactivated language: dominance with its interval over items, the control and item
    p-values; the smallest attainable control p, the held-out status, and the overall tests."""
    a = ds.attrs
    lines = []
    if "dominance" in ds and "deactivated" in ds.dims:
        level = float(a.get("level", 0.95))
        has_ci = "dominance_low" in ds and bool(np.isfinite(ds["dominance_low"].values).any())
        rows = []
        for i, lang in enumerate(_labels(ds, "deactivated")):
            row: list[Any] = [lang, float(ds["dominance"].values[i])]
            if has_ci:
                lo, hi = ds["dominance_low"].values[i], ds["dominance_high"].values[i]
                row.append(f"[{_fmt(float(lo))}, {_fmt(float(hi))}]")
            for name in ("pvalue_control", "pvalue_items", "n_controls"):
                if name == "pvalue_items" and not has_ci:
                    continue
                row.append(ds[name].values[i].item() if name in ds else "-")
            rows.append(row)
        header = ["deactivated", "dominance"]
        header += [f"{_fmt(level * 100)}% CI (items)"] if has_ci else []
        header += ["p vs controls"] + (["p items"] if has_ci else []) + ["controls"]
        lines += table(header, rows)
        if "min_pvalue_control" in ds:
            floor = float(np.nanmax(ds["min_pvalue_control"].values))
            text = f"  smallest attainable control p: {_fmt(floor)}"
            alpha = a.get("alpha")
            if isinstance(alpha, int | float) and floor > alpha:
                text += f" (cannot reach alpha {_fmt(alpha)})"
            lines.append(text)
        if not has_ci and a.get("intervals"):
            lines.append(f"  {a['intervals']}")
        if has_ci and a.get("interval_inference") == "descriptive":
            lines.append(f"  intervals descriptive: {a.get('interval_inference_reason', '')}")
    if a.get("heldout"):
        lines.append(f"  held-out evaluation: {a['heldout']} ({a.get('heldout_note', '')})")
    if a.get("moe_unit"):
        lines.append(f"  mixture of experts: {a['moe_unit']}s switched off")
    if a.get("inference") == "descriptive":
        lines.append(f"  descriptive: {a.get('inference_reason', '')}")
    lines += _scalars(ds, ["mean_dominance", "pvalue_control_mean", "pvalue_permutation"])
    return lines


def accuracy(ds: xr.Dataset) -> Lines:
    """Baseline accuracy per language; per panel, each language's own-language accuracy drop
    with its interval, the item test, dominance and the control comparison."""
    a = ds.attrs
    lines = [
        "  baseline accuracy: "
        + ", ".join(
            f"{lang} {_fmt(float(v))} ({int(n)} items)"
            for lang, v, n in zip(
                _labels(ds, "evaluated"), ds["baseline"].values, ds["n_items"].values, strict=True
            )
        )
    ]
    evaluated = _labels(ds, "evaluated")
    size = "n_experts" if "n_experts" in ds else "n_neurons"  # whole experts masked, or neurons
    rows = []
    for i, panel in enumerate(_labels(ds, "panel")):
        for j, lang in enumerate(_labels(ds, "deactivated")):
            if lang not in evaluated:
                continue
            e = evaluated.index(lang)
            rows.append(
                [
                    panel,
                    lang,
                    int(ds[size].values[i, j]) if size in ds else "-",
                    float(ds["drop"].values[i, j, e]),
                    f"[{_fmt(float(ds['drop_low'].values[i, j, e]))}, "
                    f"{_fmt(float(ds['drop_high'].values[i, j, e]))}]",
                    float(ds["pvalue_item"].values[i, j, e]),
                    float(ds["dominance"].values[i, j]),
                    float(ds["pvalue_control"].values[i, j]),
                ]
            )
    lines += table(
        ["panel", "off", size[2:], "own drop", "CI", "item p", "dominance", "control p"], rows
    )
    if a.get("moe_unit"):
        lines.append(f"  mixture of experts: {a['moe_unit']}s switched off")
    lines.append(
        f"  {a.get('controls')} control(s) per set: smallest attainable control p "
        f"{_fmt(a.get('min_pvalue_control'))}; inference {a.get('inference')} "
        f"({a.get('inference_reason', '')})"
    )
    return lines


def spontaneous(ds: xr.Dataset) -> Lines:
    """Mean change of trained and untrained languages, their difference with its interval and
    tests, the permutation test's smallest p, and the equivalence test (or why there is none)."""
    a = ds.attrs
    lines = [
        f"  trained: {', '.join(a.get('trained_languages', []))}; "
        f"untrained: {', '.join(a.get('untrained_languages', []))}"
    ]
    has_ci = not np.isnan(ds["difference_low"].values).all()
    header = ["count", "trained", "untrained", "difference"]
    header += (["CI", "boot p"] if has_ci else []) + ["perm p"]
    rows = []
    for i, count in enumerate(_labels(ds, "count")):
        row: list[Any] = [count, *ds["mean_change"].values[:, i].tolist()]
        row.append(float(ds["difference"].values[i]))
        if has_ci:
            lo, hi = ds["difference_low"].values[i], ds["difference_high"].values[i]
            row += [f"[{_fmt(float(lo))}, {_fmt(float(hi))}]", float(ds["boot_pvalue"].values[i])]
        row.append(float(ds["perm_pvalue"].values[i]))
        rows.append(row)
    lines += table(header, rows)
    k = len(a.get("trained_languages", [])) + len(a.get("untrained_languages", []))
    mp = a.get("min_pvalue")
    if mp is not None:
        perm = f"  permutation ({a.get('permutation')}, {_fmt(a.get('n_assignments'))} "
        perm += f"assignments): smallest attainable p {_fmt(float(mp))}"
        if mp > 0.05:
            perm += f"; the permutation test cannot reach 0.05 with {k} languages"
        lines.append(perm)
    lines.append("  a large p is not evidence that untrained languages change like trained ones")
    kind = a.get("equivalence")
    if kind == "tost":
        margin, alpha = a["equivalence_margin"], a["equivalence_alpha"]
        lines.append(
            f"  equivalence (two one-sided tests, margin +-{_fmt(margin)}, alpha {_fmt(alpha)})"
        )
        rows = [
            [
                count,
                f"[{_fmt(float(ds['equivalence_low'].values[i]))}, "
                f"{_fmt(float(ds['equivalence_high'].values[i]))}]",
                float(ds["equivalence_pvalue"].values[i]),
                a["equivalence_verdict"][count],
            ]
            for i, count in enumerate(_labels(ds, "count"))
        ]
        lines += table(["count", f"{_fmt(1 - 2 * alpha)} CI", "TOST p", "verdict"], rows)
        if a.get("equivalence_inference") == "descriptive":
            lines.append(f"  equivalence descriptive: {a.get('equivalence_inference_reason', '')}")
        elif a.get("equivalence_caveat"):
            lines.append(f"  caution: {a['equivalence_caveat']}")
    elif kind is not None:
        lines.append(f"  equivalence {kind}: {a.get('equivalence_note', '')}")
    return lines


def type_change(ds: xr.Dataset) -> Lines:
    """Per type over all layers: base -> aligned, change [interval], bootstrap and swap p."""
    a = ds.attrs
    swap = "total_change_pvalue_swap" in ds
    header = ["type", "base", "aligned", "change", f"{_fmt(a.get('ci', 0.95))} CI", "boot p"]
    rows = []
    for t in _labels(ds, "type"):
        c = ds.sel(type=t)
        boot_p = float(np.nanmin(c["change_pvalue"].values)) if c["change_pvalue"].size else None
        row = [
            t,
            c["total_base"].item(),
            c["total_aligned"].item(),
            c["total_change"].item(),
            f"[{_fmt(c['total_change_low'].item())}, {_fmt(c['total_change_high'].item())}]",
            boot_p,
        ]
        if swap:
            row.append(c["total_change_pvalue_swap"].item())
        rows.append(row)
    lines = table([*header, "swap p"] if swap else header, rows)
    lines.append("  boot p: smallest per-layer bootstrap p (uncorrected)")
    if swap:
        lines.append(
            f"  swap p ({a['n_perm']} permutations of the total, smallest attainable "
            f"{_fmt(a['min_pvalue_swap'])}): {a['pvalue_swap']}"
        )
    elif a.get("paired") is False:
        lines.append("  no swap test: the runs do not share their seq_ids (not paired)")
    if a.get("note"):
        lines.append(f"  note: {a['note']}")
    return lines


def mask_change(ds: xr.Dataset) -> Lines:
    """Per language: mask size base -> aligned, change, label-swap p and its max-T p."""
    a = ds.attrs
    rows = [
        [
            lang,
            int(ds["base"].values[i]),
            int(ds["aligned"].values[i]),
            int(ds["change"].values[i]),
            float(ds["change_pvalue_swap"].values[i]),
            float(ds["change_pvalue_maxt"].values[i]),
        ]
        for i, lang in enumerate(_labels(ds, "language"))
    ]
    lines = table(["language", "base", "aligned", "change", "swap p", "max-T p"], rows)
    lines.append(
        f"  swap p ({a['n_perm']} permutations, smallest attainable "
        f"{_fmt(a['min_pvalue_swap'])}): {a['pvalue_swap']}; max-T p: familywise over languages"
    )
    lines += inference_line(a)
    return lines


def type_switches(ds: xr.Dataset) -> Lines:
    """Neurons switching type against label-swapped runs, and the asymmetric pairs of types."""
    a = ds.attrs
    lines = [
        f"  neurons switching type: {int(ds['changed'])} (exchangeable runs: "
        f"{_fmt(float(ds['expected_changed']))} on average), swap p = "
        f"{_fmt(float(ds['changed_pvalue_swap']))} (one-sided; smallest attainable "
        f"{_fmt(a['min_pvalue_swap'])})"
    ]
    rows = []
    types = _labels(ds, "from_type")
    for i, s in enumerate(types):
        for j, t in enumerate(types):
            if j > i:
                net = float(ds["asymmetry"].values[i, j])
                rows.append([f"{s} -> {t}", int(ds["count"].values[i, j]),
                             int(ds["count"].values[j, i]), int(net),
                             float(ds["asymmetry_pvalue_swap"].values[i, j])])  # fmt: skip
    lines += table(["types", "forward", "back", "net", "swap p"], rows)
    lines += inference_line(a)
    return lines


def model_groups(ds: xr.Dataset) -> Lines:
    """Per type: each model's mean share over its runs, the difference and its p-values."""
    a = ds.attrs
    ga, gb = _labels(ds, "group")
    rows = []
    for i, t in enumerate(_labels(ds, "type")):
        rows.append(
            [
                t,
                float(ds["type_share_mean"].values[0, i]),
                float(ds["type_share_mean"].values[1, i]),
                float(ds["type_share_difference"].values[i]),
                float(ds["type_share_perm_pvalue"].values[i]),
                float(ds["type_share_welch_pvalue"].values[i]),
            ]
        )
    n_runs = a.get("n_runs", {})
    header = ["type", f"{ga} ({n_runs.get(ga)} runs)", f"{gb} ({n_runs.get(gb)} runs)",
              "difference", "perm p", "Welch p"]  # fmt: skip
    lines = ["  share of all neurons, mean over each model's runs", *table(header, rows)]
    lines.append(f"  languages in common: {', '.join(a.get('languages', []))}")
    if a.get("note"):
        lines.append(f"  note: {a['note']}")
    lines += inference_line(a)
    return lines


def generic(ds: xr.Dataset) -> Lines:
    """Scalars, then small one-dimensional variables side by side by their dimension."""
    lines = _scalars(ds)
    by_dim: dict[str, list[str]] = {}
    for name, var in ds.data_vars.items():
        if var.ndim == 1 and var.size <= 30 and var.dtype.kind in "biuf":
            by_dim.setdefault(str(var.dims[0]), []).append(str(name))
    for dim, names in by_dim.items():
        names = names[:6]
        labels = _labels(ds, dim) if dim in ds.coords else [str(i) for i in range(ds.sizes[dim])]
        rows = [[lab, *(ds[n].values[i].item() for n in names)] for i, lab in enumerate(labels)]
        lines += table([dim, *names], rows)
    if "inference" in ds.attrs:  # a result that says what its p-values are
        lines += inference_line(ds.attrs)
        if ds.attrs.get("inference_reason"):
            lines.append(f"  why: {ds.attrs['inference_reason']}")
    return lines


#: The table of each result, by its ``result_kind``/analysis: (match on name, printer).
PRINTERS: dict[str, Callable[[xr.Dataset], Lines]] = {
    "identification": identification,
    "stages": stages,
    "stability": stability,
    "tests": tests,
    "probability": probability,
    "deactivation": deactivation,
    "accuracy": accuracy,
    "spontaneous": spontaneous,
    "type_change": type_change,
    "mask_change": mask_change,
    "model_groups": model_groups,
    "type_switches": type_switches,
}


def headline(label: str, ds: xr.Dataset) -> Lines:
    """The table for a result of one kind (``label`` names the analysis), generic otherwise."""
    printer = PRINTERS.get(label, generic)
    try:
        return printer(ds)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        return generic(ds)  # a result of an older shape: still print what it has


def models(ds: xr.Dataset) -> Lines:
    """Models side by side: shape, type shares [interval], mask shares, Mantel agreement."""
    a = ds.attrs
    names = _labels(ds, "model")
    boot = "type_share_lower" in ds

    def cell(var: str, m: str, index: dict[str, Any]) -> str:
        est = ds[var].sel(model=m, **index).item()
        if not boot:
            return _fmt(est)
        lo = ds[f"{var}_lower"].sel(model=m, **index).item()
        hi = ds[f"{var}_upper"].sel(model=m, **index).item()
        return f"{_fmt(est)} [{_fmt(lo)}, {_fmt(hi)}]"

    lines = [f"  common languages ({len(a['languages'])}): {', '.join(a['languages'])}"]
    shape_rows = [
        [m, int(ds["n_layers"].sel(model=m)), int(ds["n_neurons"].sel(model=m)),
         int(ds["n_selected"].sel(model=m))]
        for m in names
    ]  # fmt: skip
    lines += table(["model", "layers", "neurons/layer", "selected"], shape_rows)
    lines.append("  share of all neurons" + (f" [{_fmt(a['ci'])} interval]" if boot else ""))
    rows = [[t, *(cell("type_share", m, {"type": t}) for m in names)] for t in _labels(ds, "type")]
    rows += [
        [f"mask {x}", *(cell("mask_share", m, {"language": x}) for m in names)]
        for x in _labels(ds, "language")
    ]
    lines += table(["type", *names], rows)
    if "type_share_difference_lower" in ds and len(names) > 1:
        # descriptive (calibration family `models`): an interval to read, no p-value to quote
        diff_rows = [
            [m, t, ds["type_share_difference"].sel(model=m, type=t).item(),
             f"[{_fmt(ds['type_share_difference_lower'].sel(model=m, type=t).item())}, "
             f"{_fmt(ds['type_share_difference_upper'].sel(model=m, type=t).item())}]"]
            for m in names[1:] for t in _labels(ds, "type")
        ]  # fmt: skip
        lines.append(
            f"  difference from {names[0]} (item bootstrap, paired={a.get('paired')}; "
            "descriptive, no p-value: see the shares line below)"
        )
        lines += table(
            ["model", "type", "difference", f"{_fmt(a.get('ci', 0.95))} interval"], diff_rows
        )
    if "stage_start" in ds:
        srows = [
            [m, *(cell("stage_start", m, {"boundary": int(b)}) for b in ds["boundary"].values)]
            for m in names
        ]
        lines.append("  stage boundaries in relative depth layer/(L-1)")
        lines += table(
            ["model", *(f"stage {int(b) + 1} starts" for b in ds["boundary"].values)], srows
        )
    for pair, r, p, floor in zip(
        _labels(ds, "pair"),
        ds["mantel_r"].values,
        ds["mantel_pvalue"].values,
        ds["mantel_min_pvalue"].values,
        strict=True,
    ):
        lines.append(
            f"  Jaccard agreement {pair}: Mantel r = {_fmt(float(r))}, p = {_fmt(float(p))} "
            f"(smallest attainable {_fmt(float(floor))})"
        )
    lines.append(f"  Mantel: {a.get('mantel_inference')} ({a.get('mantel_reason')})")
    if a.get("tokens_note"):
        lines.append(f"  tokens: {a['tokens_note']}")
    if a.get("mixed_parameters"):
        lines.append(f"  mixed parameters (allowed): {', '.join(a['mixed_parameters'])}")
    lines.append(f"  shares: {a.get('inference')} ({a.get('inference_reason')})")
    return lines


PRINTERS["models"] = models
