"""Mixture-of-experts analysis commands: ``stats experts``, and the MoE lines of ``identify``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from langneurons.cli._options import Target, echo_json, results_options

if TYPE_CHECKING:
    import xarray as xr

Lines = list[str]

_RANK_WORDS = {
    "model": "over the whole model",
    "layer": "within each layer",
    "expert": "within each expert of each layer",
}


def identification_lines(result: xr.Dataset) -> Lines:
    """What a MoE identification adds: the rank scope, undefined cells, padding, per expert."""
    a = result.attrs
    if not a.get("rank") or "expert" not in result.dims:
        return []
    lines = [
        f"  mixture of experts: P = n_active / n_routed; thresholds and top-rate selection "
        f"{_RANK_WORDS[a['rank']]} (rank {a['rank']}); {a['n_units']} neurons analysed"
        + ("" if a["rank"] == "model" else "; tau per scope: the saved variable tau")
    ]
    n_cells = result.sizes["layer"] * result.sizes["expert"]
    undefined = int(a.get("n_undefined_cells", 0))
    if undefined:
        lines.append(
            f"  {undefined} of {n_cells} (layer, expert) cells undefined (fewer than "
            f"{a['min_routed']} routed tokens in some language): their "
            f"{a['n_undefined_neurons']} neurons are left out (neuron_type 'undefined')"
        )
    else:
        lines.append(f"  every (layer, expert) cell received >= {a['min_routed']} token(s)")
    if a.get("n_padding"):
        lines.append(f"  {a['n_padding']} padding neurons (experts of fewer neurons) not analysed")
    counts = result["n_language_neurons"].sum(("language", "layer")).values
    experts = result["expert"].values
    order = sorted(range(len(counts)), key=lambda i: (-int(counts[i]), i))[:5]
    top = ", ".join(f"expert {int(experts[i])}: {int(counts[i])}" for i in order)
    lines.append(f"  language-neuron memberships per expert (summed over layers), most: {top}")
    return lines


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def experts_lines(ds: xr.Dataset) -> Lines:
    """The headline of :func:`~langneurons.analysis.routing.language_experts`."""
    import numpy as np

    a = ds.attrs
    counts = a["type_counts"]
    n_layers, n_experts = ds.sizes["layer"], ds.sizes["expert"]
    shared = int(np.asarray(ds["expert_shared"].values).sum())
    lines = [
        f"  language experts by routing ({a['role']} tokens): {n_layers} layers x "
        f"{n_experts - shared} routed experts" + (f" (+{shared} shared)" if shared else ""),
        f"  specific {counts['specific']}, related {counts['related']}, general "
        f"{counts['general']}, unrouted {counts['unrouted']} (preferred language: share > "
        f"{a['ratio']:g} x the expert's mean share over languages)",
    ]
    has_ci = "share_low" in ds
    if a["inference"] == "valid":
        n = a.get("n_clusters", {})
        lines.append(
            f"  share intervals: {int(100 * a['ci'])} % ({a['interval'].split(';')[0]}), "
            f"{min(n.values())}-{max(n.values())} {a['unit']}s per language; specificity "
            "intervals descriptive"
        )
    else:
        lines.append(f"  descriptive: {a['inference_reason']}")
    share = ds["share"].transpose("language", "layer", "expert").values
    spec = ds["specificity"].transpose("layer", "expert").values
    types = ds["expert_type"].transpose("layer", "expert").values
    preferred = ds["preferred"].transpose("language", "layer", "expert").values
    rows = []
    for k, lang in enumerate(ds["language"].values.tolist()):
        mine = (types == "specific") & preferred[k]
        if not mine.any():
            rows.append(f"  {lang:<10} {0:>8}   -")
            continue
        cand = np.where(mine, spec, -np.inf)
        li, ei = np.unravel_index(int(np.argmax(cand)), cand.shape)
        others = np.delete(share[:, li, ei], k).mean()
        text = f"share {_fmt(share[k, li, ei])}"
        if has_ci:
            low = ds["share_low"].values[k, li, ei]
            high = ds["share_high"].values[k, li, ei]
            text += f" [{_fmt(low)}, {_fmt(high)}]"
        text += f" vs {_fmt(others)} in the other languages"
        where = f"layer {int(ds['layer'].values[li])} expert {int(ds['expert'].values[ei])}"
        rows.append(f"  {lang:<10} {int(mine.sum()):>8}   {where}: {text}")
    return [*lines, "  language   specific   most specific expert", *rows]


def change_lines(ds: xr.Dataset, top: int = 8) -> Lines:
    """The headline of :func:`~langneurons.analysis.routing.routing_change`."""
    import numpy as np

    a = ds.attrs
    change = ds["change"].transpose("language", "layer", "expert").values
    tested = "q" in ds
    if tested:
        lines = [
            f"  routing change, base -> aligned: {a['n_significant']} cells with q <= "
            f"{a['alpha']:g} (paired label-swap over items, {a['n_perm']} permutations, "
            f"Benjamini-Hochberg within each layer); per layer {a['per_layer']}"
        ]
    else:
        lines = [f"  routing change, base -> aligned: descriptive ({a['inference_reason']})"]
    flat = np.where(np.isnan(change), -1.0, np.abs(change)).reshape(-1)
    order = np.argsort(-flat, kind="stable")[:top]
    langs = ds["language"].values.tolist()
    header = "  language   layer  expert   base    aligned  change" + ("   q" if tested else "")
    lines.append(header)
    for i in order:
        k, li, ei = np.unravel_index(int(i), change.shape)
        row = (
            f"  {langs[k]:<10} {int(ds['layer'].values[li]):>5}  {int(ds['expert'].values[ei]):>6}"
            f"   {_fmt(ds['base_share'].values[k, li, ei])}   "
            f"{_fmt(ds['aligned_share'].values[k, li, ei])}   {change[k, li, ei]:+.3f}"
        )
        if tested:
            row += f"   {ds['q'].values[k, li, ei]:.3g}"
        lines.append(row)
    return lines


@click.command("experts")
@click.argument("store")
@click.option("--run", required=True, help="A mixture-of-experts run.")
@click.option(
    "--compare",
    "compare_run",
    default=None,
    help="A second MoE run of the same items (e.g. the aligned model): test the routing change.",
)
@click.option("--role", type=click.Choice(["response", "prompt", "all"]), default="response")
@click.option(
    "--ratio",
    type=float,
    default=1.5,
    show_default=True,
    help="A language is preferred by an expert whose share in it exceeds RATIO x its mean.",
)
@click.option("--n-boot", type=int, default=1000, show_default=True)
@click.option("--n-perm", type=click.IntRange(min=0), default=1000, show_default=True)
@click.option("--ci", type=float, default=0.95, show_default=True)
@click.option("--alpha", type=float, default=0.05, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--cluster", type=click.Choice(["auto", "item", "sequence"]), default="auto", show_default=True
)
@click.option("--name", default="experts", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@results_options
def stats_experts(
    store: str,
    run: str,
    compare_run: str | None,
    role: str,
    ratio: float,
    n_boot: int,
    n_perm: int,
    ci: float,
    alpha: float,
    seed: int,
    cluster: str,
    name: str,
    as_json: bool,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
) -> None:
    """Language experts of a MoE run: routing shares, specificity, and (--compare) the change."""
    from langneurons.analysis.routing import language_experts, routing_change
    from langneurons.cli._output import to_jsonable

    target = Target(store, results_store, no_save, allow_incomplete)
    base = target.open_run(run)
    other = target.open_run(compare_run) if compare_run else None
    experts = language_experts(
        base, role=role, ratio=ratio, n_boot=n_boot, ci=ci, seed=seed, cluster=cluster
    )
    change = None
    if other is not None:
        change = routing_change(base, other, role=role, n_perm=n_perm, seed=seed, alpha=alpha)
    saved = target.save(run, "stats", name, experts)
    saved_change = None
    if change is not None and compare_run is not None:
        saved_change = target.save(compare_run, "stats", f"{name}-change", change)
    if as_json:
        data: dict[str, Any] = {"experts": to_jsonable(experts, saved)}
        if change is not None:
            data["change"] = to_jsonable(change, saved_change)
        echo_json(data)
        return
    click.echo("experts: " + (f"saved at {saved}" if saved else "not saved (--no-save)"))
    for line in experts_lines(experts):
        click.echo(line)
    if change is not None:
        where = f"saved at {saved_change}" if saved_change else "not saved (--no-save)"
        click.echo(f"change ({run} -> {compare_run}): {where}")
        for line in change_lines(change):
            click.echo(line)
