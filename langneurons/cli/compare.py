"""The ``compare`` group: two runs, or a series of checkpoints (``langneurons.workflows``)."""

from __future__ import annotations

from typing import Any

import click

from langneurons.cli._options import (
    Target,
    identify_options,
    identify_params,
    results_options,
    split_list,
)


@click.group()
def compare() -> None:
    """Compare runs (base vs aligned, or a series of checkpoints); saved under compare/."""


@compare.command("runs")
@click.argument("store")
@click.option("--base", required=True, help="The base run.")
@click.option("--aligned", required=True, help="The aligned (or other) run.")
@click.option(
    "--trained-languages",
    default=None,
    help="Languages the aligned model was trained on: test spontaneous alignment.",
)
@click.option("--n-boot", type=int, default=200, show_default=True)
@click.option("--n-perm", type=int, default=10000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", default=None, help="Default: vs-BASE (slashes become '_').")
@click.option("--json", "as_json", is_flag=True)
@results_options
@identify_options
def compare_runs(
    store: str,
    base: str,
    aligned: str,
    trained_languages: str | None,
    n_boot: int,
    n_perm: int,
    seed: int,
    name: str | None,
    as_json: bool,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
    **options: Any,
) -> None:
    """Type distributions, per-layer change, overlaps, transitions and McNemar of two runs."""
    from langneurons import workflows
    from langneurons.cli._output import emit

    params = identify_params(options)
    target = Target(store, results_store, no_save, allow_incomplete)
    parts = workflows.compare_runs(
        target.open_run(base),
        target.open_run(aligned),
        params,
        trained_languages=split_list(trained_languages),
        n_boot=n_boot,
        n_perm=n_perm,
        seed=seed,
    )
    prefix = name or workflows.comparison_name(base)
    emit(workflows.save_parts(target.save, aligned, prefix, parts), as_json)


@compare.command("checkpoints")
@click.argument("store")
@click.option("--runs", "runs_", required=True, help="Comma-separated runs, in order.")
@click.option("--labels", default=None, help="Comma-separated labels (default: the runs).")
@click.option("--name", default="checkpoints", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@results_options
@identify_options
def compare_checkpoints(
    store: str,
    runs_: str,
    labels: str | None,
    name: str,
    as_json: bool,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
    **options: Any,
) -> None:
    """Trajectories of every count over an ordered series of runs, and Cochran's Q."""
    from langneurons import workflows
    from langneurons.cli._output import emit

    params = identify_params(options)
    target = Target(store, results_store, no_save, allow_incomplete)
    names = split_list(runs_)
    parts = workflows.compare_checkpoints(
        [target.open_run(r) for r in names], split_list(labels) if labels else names, params
    )
    emit(workflows.save_parts(target.save, names[-1], name, parts), as_json)
