"""Analysis commands: ``identify``, the ``stats`` group, and ``report``."""

from __future__ import annotations

from typing import Any

import click

from langneurons.cli._options import (
    Target,
    echo_json,
    identify_options,
    identify_params,
    results_options,
    split_list,
)


@click.command()
@click.argument("store")
@click.option("--run", required=True, help="Run path inside the store.")
@identify_options
@click.option("--name", default=None, help="Result name (default: the method).")
@click.option("--export-mask", default=None, help="Also write the LAPE mask file format here.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--rank",
    type=click.Choice(["model", "layer", "expert"]),
    default=None,
    help="Mixture-of-experts runs: compute thresholds and the top-rate selection over the "
    "model (default), within each layer, or within each expert.",
)
@click.option(
    "--min-routed",
    type=int,
    default=1,
    show_default=True,
    help="Mixture-of-experts runs: leave out an expert of a layer with fewer routed tokens "
    "than this in some language.",
)
@results_options
def identify(
    store: str,
    run: str,
    name: str | None,
    export_mask: str | None,
    as_json: bool,
    rank: str | None,
    min_routed: int,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
    **options: Any,
) -> None:
    """Identify language neurons in a run and save the result into the store."""
    from langneurons.analysis.identify import identify as run_identify
    from langneurons.analysis.identify import summary
    from langneurons.cli._tables import identification
    from langneurons.names import EXPERT, N_ACTIVE, N_ROUTED, N_TOKENS
    from langneurons.plain import PlainDataset

    params = identify_params(options)
    target = Target(store, results_store, no_save, allow_incomplete)
    # The counts are read into numpy and identified without importing xarray (half a second)
    ds = target.read_run(run, [N_ACTIVE, N_TOKENS])
    moe = EXPERT in ds.sizes
    if moe:  # a mixture-of-experts run divides by the tokens routed to each expert
        routed = target.read_run(run, [N_ROUTED])
        ds = PlainDataset(
            {**ds.data_vars, **routed.data_vars}, {**ds.coords, **routed.coords}, ds.attrs
        )
    if export_mask and moe:
        from langneurons.errors import ParameterError

        raise ParameterError(
            "the LAPE mask file format has no expert dimension, so a mixture-of-experts "
            "identification cannot be written to it; drop --export-mask (the masks are saved "
            "in the store)"
        )
    if not no_save:  # a bad name is refused before any work
        from langneurons.store.schema import check_name

        check_name(name or params.method, "result")
    if export_mask:  # checked before any work: a folder, or a file of the user's, is refused
        from langneurons.extract import check_mask_target

        check_mask_target(export_mask)
    result = run_identify(ds, params.method, **params.keywords(), rank=rank, min_routed=min_routed)
    if export_mask:  # before the result is saved: a failed write leaves no result behind
        from langneurons.analysis.identify import masks_to_lists
        from langneurons.extract import save_mask

        save_mask(export_mask, masks_to_lists(result))
    path = target.save(run, "identification", name or params.method, result)
    data = summary(result)
    if as_json:
        echo_json({**data, "saved": path, "mask_file": export_mask})
        return
    click.echo(
        (f"saved at {path}" if path else "not saved (--no-save)")
        + (f"; mask written to {export_mask}" if export_mask else "")
    )
    for line in identification(result):
        click.echo(line)
    if moe:
        from langneurons.cli.moe import identification_lines

        for line in identification_lines(result.to_xarray()):
            click.echo(line)


@click.command()
@click.argument("store")
@click.option("--out", required=True, help="Output directory (an earlier report is replaced).")
@click.option("--runs", default=None, help="Comma-separated runs to report (default all).")
@click.option("--title", default=None, help="Report title.")
def report(store: str, out: str, runs: str | None, title: str | None) -> None:
    """Write an HTML report (with Markdown, CSV, figures, .qmd and .ipynb) of STORE."""
    from langneurons.reports import write_report
    from langneurons.store import open_store

    html = write_report(open_store(store), out, runs=split_list(runs) or None, title=title)
    click.echo(f"wrote {html}")


# --------------------------------------------------------------------------- stats
@click.group()
def stats() -> None:
    """Statistics on one run, saved under RUN/stats/NAME."""


def _n_stages(ctx: click.Context, param: click.Parameter, value: str) -> int | str:
    """``--n-stages``: ``auto`` or a positive integer."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"must be 'auto' or an integer >= 1, got {value!r}") from None


@stats.command("stages")
@click.argument("store")
@click.option("--run", required=True)
@click.option(
    "--n-stages",
    default="4",
    show_default=True,
    callback=_n_stages,
    help="Number of stages, or 'auto' (chosen by --criterion).",
)
@click.option("--max-stages", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--criterion", type=click.Choice(["permutation", "bic"]), default="permutation",
    show_default=True,
    help="Rule of --n-stages auto (bic: uncalibrated, over-splits; for comparison).",
)  # fmt: skip
@click.option(
    "--n-perm", type=click.IntRange(min=0), default=199, show_default=True,
    help="Permutations of each test of k stages against more (0: not run).",
)  # fmt: skip
@click.option(
    "--normalize", type=click.Choice(["type", "layer", "neurons", "none", "zscore"]),
    default="type", show_default=True, help="Profile normalisation (all are reported).",
)  # fmt: skip
@click.option(
    "--n-boot", type=int, default=None,
    help="Bootstrap replicates (default 200 with per-sequence counts, else 0: descriptive).",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", default="stages", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@results_options
@identify_options
def stats_stages(
    store: str,
    run: str,
    n_stages: int | str,
    max_stages: int,
    criterion: str,
    n_perm: int,
    normalize: str,
    n_boot: int | None,
    seed: int,
    name: str,
    as_json: bool,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
    **options: Any,
) -> None:
    """Contiguous stages of the layers: their number, signature names, boundaries, intervals."""
    from langneurons.analysis.stages import bootstrap_stages
    from langneurons.cli._output import emit
    from langneurons.names import SEQ_N_ACTIVE

    params = identify_params(options)
    target = Target(store, results_store, no_save, allow_incomplete)
    ds = target.open_run(run)
    if n_boot is None:  # no per-sequence counts: descriptive boundaries, said so
        n_boot = 200 if SEQ_N_ACTIVE in ds.data_vars else 0
    result = bootstrap_stages(
        ds,
        params=params,
        n_stages=n_stages,
        n_boot=n_boot,
        seed=seed,
        max_stages=max_stages,
        criterion=criterion,
        n_perm=n_perm,
        normalize=normalize,
    )
    emit({"stages": (result, target.save(run, "stats", name, result))}, as_json)


@stats.command("deactivation")
@click.argument("store")
@click.option("--run", required=True)
@click.option("--ablation", required=True, help="Name of a saved `langneurons ablate` result.")
@click.option(
    "--alpha",
    default="0.05",
    show_default=True,
    help="Level of the tests and intervals, in (0, 1); 'none': control comparison descriptive.",
)
@click.option("--n-perm", type=click.IntRange(min=0), default=10000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", default="deactivation", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@results_options
def stats_deactivation(
    store: str,
    run: str,
    ablation: str,
    alpha: str,
    n_perm: int,
    seed: int,
    name: str,
    as_json: bool,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
) -> None:
    """Diagonal dominance of deactivation damage against random-neuron controls and over items."""
    from langneurons.analysis.deactivation import deactivation_effects
    from langneurons.cli._output import emit

    level = parse_alpha(alpha)
    target = Target(store, results_store, no_save, allow_incomplete)
    saved = target.open_result(run, "ablation", ablation)
    if saved.attrs.get("kind") == "accuracy":  # an `ablate-accuracy` result: its own statistics
        _stats_accuracy(target, run, ablation, saved, name, 0.05 if level is None else level,
                        as_json)  # fmt: skip
        return
    ds = deactivation_effects(saved, alpha=level, n_perm=n_perm, seed=seed)
    ds.attrs["ablation"] = ablation  # the report draws these effects for that ablation
    emit({"deactivation": (ds, target.save(run, "stats", name, ds))}, as_json)


@stats.command("accuracy")
@click.argument("store")
@click.option("--run", required=True)
@click.option(
    "--ablation", required=True, help="Name of a saved `langneurons ablate-accuracy` result."
)
@click.option("--alpha", type=float, default=0.05, show_default=True)
@click.option("--name", default="accuracy", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@results_options
def stats_accuracy(
    store: str,
    run: str,
    ablation: str,
    alpha: float,
    name: str,
    as_json: bool,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
) -> None:
    """Accuracy drops of an accuracy ablation, item tests, and dominance against controls.

    `stats deactivation` on an accuracy ablation runs this too (with alpha 0.05).
    """
    target = Target(store, results_store, no_save, allow_incomplete)
    saved = target.open_result(run, "ablation", ablation)
    _stats_accuracy(target, run, ablation, saved, name, alpha, as_json)


def _stats_accuracy(
    target: Target, run: str, ablation: str, saved: Any, name: str, alpha: float, as_json: bool
) -> None:
    from langneurons.analysis.accuracy import accuracy_effects
    from langneurons.cli._output import emit

    ds = accuracy_effects(saved, alpha=alpha)
    ds.attrs["ablation"] = ablation  # the report draws these effects for that ablation
    emit({"accuracy": (ds, target.save(run, "stats", name, ds))}, as_json)


def parse_alpha(text: str) -> float | None:
    """``--alpha``: a number in (0, 1), or "none"."""
    from langneurons.errors import ParameterError

    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise ParameterError(f"--alpha must be a number in (0, 1) or 'none', got {text!r}")
    return value


def _warn_if_descriptive(ds: Any) -> None:
    """One warning line when a result's p-values / intervals are descriptive (token level)."""
    if ds.attrs.get("inference") == "descriptive":
        import warnings

        from langneurons.analysis.uncertainty import DESCRIPTIVE_WARNING
        from langneurons.errors import LangneuronsWarning

        reason = ds.attrs.get("inference_reason")
        text = f"descriptive, not inference: {reason}" if reason else DESCRIPTIVE_WARNING
        warnings.warn(text, LangneuronsWarning, stacklevel=2)


@stats.command("probability")
@click.argument("store")
@click.option("--run", required=True)
@click.option("--role", type=click.Choice(["response", "prompt", "all"]), default="response")
@click.option(
    "--method",
    type=click.Choice(["auto", "bootstrap", "cluster", "wilson"]),
    default="auto",
    show_default=True,
)
@click.option("--ci", type=float, default=0.95, show_default=True)
@click.option("--n-boot", type=int, default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--cluster",
    type=click.Choice(["auto", "item", "sequence"]),
    default="auto",
    show_default=True,
    help="Unit of replication of the per-sequence methods (auto: the item when an item has "
    "several sequences in a language).",
)
@click.option(
    "--design-effect",
    type=float,
    default=None,
    help="Token-level (wilson) intervals with variance inflated by D >= 1 (effective n = n/D).",
)
@click.option("--name", default="probability", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@results_options
def stats_probability(
    store: str,
    run: str,
    role: str,
    method: str,
    ci: float,
    n_boot: int,
    seed: int,
    cluster: str,
    design_effect: float | None,
    name: str,
    as_json: bool,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
) -> None:
    """Activation probabilities with confidence intervals."""
    from langneurons.analysis.uncertainty import activation_probability
    from langneurons.cli._output import emit

    target = Target(store, results_store, no_save, allow_incomplete)
    ds = activation_probability(
        target.open_run(run),
        role=role,
        method=method,
        ci=ci,
        n_boot=n_boot,
        seed=seed,
        cluster=cluster,
        design_effect=design_effect,
    )
    _warn_if_descriptive(ds)
    emit({"probability": (ds, target.save(run, "stats", name, ds))}, as_json)


@stats.command("tests")
@click.argument("store")
@click.option("--run", required=True)
@click.option("--role", type=click.Choice(["response", "prompt", "all"]), default="response")
@click.option(
    "--method",
    type=click.Choice(["auto", "cluster", "binomial"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--correction", type=click.Choice(["fdr_bh", "fdr_by"]), default="fdr_bh", show_default=True
)
@click.option("--alpha", type=float, default=0.05, show_default=True)
@click.option(
    "--cluster",
    type=click.Choice(["auto", "item", "sequence"]),
    default="auto",
    show_default=True,
    help="Unit of replication of the cluster test (auto: the item when an item has several "
    "sequences in a language).",
)
@click.option(
    "--design-effect",
    type=float,
    default=None,
    help="Token-level (binomial) test with variance inflated by D >= 1 (effective n = n/D).",
)
@click.option(
    "--min-effect",
    type=float,
    default=0.0,
    show_default=True,
    help="Margin DELTA in [0, 1): test P[language] - P[rest] <= DELTA.",
)
@click.option(
    "--identification",
    default=None,
    help="Compare the significant neurons with this saved identification.",
)
@click.option("--name", default="tests", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@results_options
def stats_tests(
    store: str,
    run: str,
    role: str,
    method: str,
    correction: str,
    alpha: float,
    cluster: str,
    design_effect: float | None,
    min_effect: float,
    identification: str | None,
    name: str,
    as_json: bool,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
) -> None:
    """Per-neuron, per-language tests of higher activation, with FDR control."""
    from langneurons.analysis.neuron_tests import (
        compare_with_identification,
        language_preference_tests,
    )
    from langneurons.cli._output import clean, emit

    target = Target(store, results_store, no_save, allow_incomplete)
    ds = language_preference_tests(
        target.open_run(run),
        role=role,
        method=method,
        correction=correction,
        alpha=alpha,
        cluster=cluster,
        design_effect=design_effect,
        min_effect=min_effect,
    )
    _warn_if_descriptive(ds)
    results = {"tests": (ds, target.save(run, "stats", name, ds))}
    if identification:
        ident = target.open_result(run, "identification", identification)
        versus = compare_with_identification(ds, ident)
        import xarray as xr

        if not isinstance(versus, xr.Dataset):
            versus = xr.Dataset(attrs=clean(versus))
        path = target.save(run, "stats", f"{name}-vs-{identification}", versus)
        results["versus_identification"] = (versus, path)
    emit(results, as_json)


@stats.command("stability")
@click.argument("store")
@click.option("--run", required=True)
@click.option("--n-boot", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", default=None, help="Default: stability-METHOD.")
@click.option("--json", "as_json", is_flag=True)
@results_options
@identify_options
def stats_stability(
    store: str,
    run: str,
    n_boot: int,
    seed: int,
    name: str | None,
    as_json: bool,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
    **options: Any,
) -> None:
    """Bootstrap the whole identification over sequences: selection frequency, Jaccard, CIs."""
    from langneurons.analysis.stability import bootstrap_identification
    from langneurons.cli._output import emit

    params = identify_params(options)
    target = Target(store, results_store, no_save, allow_incomplete)
    ds = bootstrap_identification(target.open_run(run), params=params, n_boot=n_boot, seed=seed)
    path = target.save(run, "stats", name or f"stability-{params.method}", ds)
    emit({"stability": (ds, path)}, as_json)


def _moe_commands() -> None:
    """The mixture-of-experts stats command (langneurons.cli.moe), in the stats group."""
    from langneurons.cli.moe import stats_experts

    stats.add_command(stats_experts, "experts")


_moe_commands()
