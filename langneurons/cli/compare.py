"""The ``compare`` group: two runs, two groups of runs, or a series of checkpoints
(``langneurons.workflows``)."""

from __future__ import annotations

import math
from typing import Any

import click

from langneurons.cli._options import (
    Target,
    identify_options,
    identify_params,
    results_options,
    split_list,
)
from langneurons.errors import ParameterError

PAIRED: dict[str, bool | str] = {"auto": "auto", "yes": True, "no": False}


@click.group()
def compare() -> None:
    """Compare runs (base vs aligned, two groups of runs, a series of checkpoints, or models of
    different shapes)."""


def parse_groups(values: tuple[str, ...]) -> dict[str, list[str]]:
    """``("aligned=a1,a2", "base=b1,b2")`` -> ``{"aligned": [...], "base": [...]}``, checked."""
    if len(values) != 2:
        raise ParameterError(
            f"compare runs takes exactly two --group options (--group NAME=RUN,RUN,...), got "
            f"{len(values)}"
        )
    groups: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for value in values:
        name, sep, runs = value.partition("=")
        name = name.strip()
        if not sep or not name or not split_list(runs):
            raise ParameterError(
                f"--group {value!r} must read NAME=RUN[,RUN...], e.g. --group aligned=m/a1,m/a2"
            )
        if name in groups:
            raise ParameterError(f"group name {name!r} is given twice; name each group once")
        for run in split_list(runs):
            if run in seen:
                raise ParameterError(
                    f"run {run!r} is in group {seen[run]!r} and again in {name!r}; every run "
                    "may be used once"
                )
            seen[run] = name
        groups[name] = split_list(runs)
    return groups


def parse_margin(text: str | None, trained_languages: str | None) -> float | None:
    """``--equivalence-margin``: a positive finite number, and only with --trained-languages."""
    if text is None:
        return None
    if not trained_languages:
        raise ParameterError(
            "--equivalence-margin tests spontaneous alignment; give --trained-languages too"
        )
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ParameterError(
            f"--equivalence-margin must be a positive number of neurons, got {text!r}"
        )
    return value


def _membership_lines(ds: Any) -> list[str]:
    """The membership tests of ``compare runs``: the reason a margin is fixed, then the tests
    that can change (per-language masks, per-type membership, type switches)."""
    from langneurons.cli._tables import table

    lines = []
    if ds.attrs.get("degenerate"):
        lines.append(f"  selection: {ds.attrs.get('reason', 'fixed by construction')}")
    elif "pvalue" in ds:
        lines.append(
            f"  selection (McNemar): {int(ds['n_a_only'])} only in the first run, "
            f"{int(ds['n_b_only'])} only in the second, p = {float(ds['pvalue']):.3g}"
        )
    rows = [
        [f"mask {lang}", int(a), int(b), float(p)]
        for lang, a, b, p in zip(
            ds["language"].values.tolist(),
            ds["language_n_a_only"].values,
            ds["language_n_b_only"].values,
            ds["language_pvalue"].values,
            strict=True,
        )
    ]
    rows += [
        [str(t), int(a), int(b), float(p)]
        for t, a, b, p in zip(
            ds["type"].values.tolist(),
            ds["type_n_a_only"].values,
            ds["type_n_b_only"].values,
            ds["type_pvalue"].values,
            strict=True,
        )
    ]
    lines += table(["McNemar", "only first", "only second", "p"], rows)
    for test, label in (("bowker", "Bowker symmetry"), ("stuart_maxwell", "Stuart-Maxwell")):
        lines.append(
            f"  type switches, {label}: statistic {float(ds[f'{test}_statistic']):.3g}, "
            f"df {int(ds[f'{test}_df'])}, p = {float(ds[f'{test}_pvalue']):.3g}"
        )
    lines.append(
        f"  inference: {ds.attrs.get('inference', '')} ({ds.attrs.get('assumption', '')}); "
        "p-values uncorrected"
    )
    return lines


def _group_lines(ds: Any) -> list[str]:
    """Headline counts of two groups of runs: means, difference and the tests' p-values."""
    from langneurons.cli._tables import table

    a = ds.attrs
    groups = list(ds["group"].values.tolist())
    lines = [f"  {g}: {', '.join(a['groups'][g])}" for g in groups]
    if a.get("note"):
        lines.append(f"  {a['note']}")
    header = ["count", *groups, "difference"]
    if "permutation" in a.get("tests", []):
        header.append(f"perm p (min {a['min_pvalue']:.3g})")
    if "welch" in a.get("tests", []):
        header.append("Welch p")
    rows = []
    for i, count in enumerate(ds["count"].values.tolist()):
        row: list[Any] = [count, *ds["total_mean"].values[:, i].tolist()]
        row.append(float(ds["total_difference"].values[i]))
        if "permutation" in a.get("tests", []):
            row.append(float(ds["total_perm_pvalue"].values[i]))
        if "welch" in a.get("tests", []):
            row.append(float(ds["total_welch_pvalue"].values[i]))
        rows.append(row)
    lines += table(header, rows)
    lines.append(f"  inference: {a.get('inference')}; per-layer tests in the saved result")
    return lines


def _cochran_lines(ds: Any) -> list[str]:
    """Cochran's Q, or why the selection's margin is not tested."""
    from langneurons.cli._tables import generic

    if ds.attrs.get("degenerate"):
        return [f"  selection: {ds.attrs.get('reason', 'fixed by construction')}"]
    return generic(ds)


def _models_lines(ds: Any) -> list[str]:
    from langneurons.cli._tables import models

    return models(ds)


def _type_change_lines(ds: Any) -> list[str]:
    from langneurons.cli._tables import type_change

    return type_change(ds)


#: Parts whose headline this command prints itself (the others: the shared tables).
PRINTERS = {
    "mcnemar": _membership_lines,
    "groups": _group_lines,
    "cochran_q": _cochran_lines,
    "type_change": _type_change_lines,
    "models": _models_lines,
}


def _emit(saved: dict[str, Any], as_json: bool) -> None:
    """Print the parts: as JSON, or each part's headline table."""
    from langneurons.cli._output import emit

    if as_json:
        emit(saved, True)
        return
    for name, (ds, path) in saved.items():
        printer = PRINTERS.get(name)
        if printer is None:
            emit({name: (ds, path)}, False)
            continue
        click.echo(f"{name}: " + (f"saved at {path}" if path else "not saved (--no-save)"))
        for line in printer(ds):
            click.echo(line)


@compare.command("runs")
@click.argument("store")
@click.option("--base", default=None, help="The base run.")
@click.option("--aligned", default=None, help="The aligned (or other) run.")
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="NAME=RUN,RUN,...: a group of replicate runs; give exactly two instead of "
    "--base/--aligned to test between-group differences against run-to-run variance.",
)
@click.option(
    "--test",
    type=click.Choice(["auto", "permutation", "welch"]),
    default="auto",
    show_default=True,
    help="With --group: the test of the group difference.",
)
@click.option(
    "--paired",
    type=click.Choice(list(PAIRED)),
    default="auto",
    show_default=True,
    help="Bootstrap both runs' sequences together (auto: when they share their seq_ids).",
)
@click.option(
    "--trained-languages",
    default=None,
    help="Languages the aligned model was trained on: test spontaneous alignment.",
)
@click.option(
    "--equivalence-margin",
    default=None,
    metavar="DELTA",
    help="With --trained-languages: test that untrained languages change like trained ones "
    "(two one-sided tests): DELTA is the largest difference of mean change, in neurons, that "
    "counts as alike. No default: without it no equivalence test is run.",
)
@click.option("--n-boot", type=int, default=200, show_default=True)
@click.option("--n-perm", type=click.IntRange(min=0), default=10000, show_default=True)
@click.option(
    "--n-swap",
    type=click.IntRange(min=0),
    default=99,
    show_default=True,
    help="Label-swap permutations of the type change (paired runs; respects the fixed "
    "selection). 0: none.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--name", default=None, help="Default: vs-BASE (slashes become '_'), or groups-A-vs-B."
)
@click.option("--json", "as_json", is_flag=True)
@results_options
@identify_options
def compare_runs(
    store: str,
    base: str | None,
    aligned: str | None,
    groups: tuple[str, ...],
    test: str,
    paired: str,
    trained_languages: str | None,
    equivalence_margin: str | None,
    n_boot: int,
    n_perm: int,
    n_swap: int,
    seed: int,
    name: str | None,
    as_json: bool,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
    **options: Any,
) -> None:
    """Two runs: type distributions, per-layer change, overlaps, transitions and membership
    tests. Two groups of runs (--group twice): their type counts against run-to-run variance."""
    from langneurons import workflows

    params = identify_params(options)
    margin = parse_margin(equivalence_margin, trained_languages)
    if groups:
        if base is not None or aligned is not None:
            raise ParameterError(
                "give either --base and --aligned or two --group options, not both"
            )
        named = parse_groups(groups)
        target = Target(store, results_store, no_save, allow_incomplete)
        runs = {g: [target.open_run(r) for r in members] for g, members in named.items()}
        parts = workflows.compare_groups(
            runs, params, names=named, test=test, n_perm=n_perm, n_boot=n_boot, seed=seed
        )
        first = next(iter(named.values()))[0]
        prefix = name or workflows.groups_name(list(named))
        _emit(workflows.save_parts(target.save, first, prefix, parts), as_json)
        return
    if base is None or aligned is None:
        raise ParameterError(
            "compare runs needs --base and --aligned, or two --group NAME=RUN,... options"
        )
    target = Target(store, results_store, no_save, allow_incomplete)
    parts = workflows.compare_runs(
        target.open_run(base),
        target.open_run(aligned),
        params,
        trained_languages=split_list(trained_languages),
        n_boot=n_boot,
        n_perm=n_perm,
        n_swap=n_swap,
        seed=seed,
        paired=PAIRED[paired],
        equivalence_margin=margin,
    )
    prefix = name or workflows.comparison_name(base)
    _emit(workflows.save_parts(target.save, aligned, prefix, parts), as_json)


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

    params = identify_params(options)
    names = split_list(runs_)
    if len(names) < 2 or len(set(names)) != len(names):  # before any run is read
        raise ParameterError(
            f"--runs must name at least 2 distinct runs in order, got {runs_!r}; e.g. "
            "--runs m/step-1000,m/step-2000,m/final"
        )
    target = Target(store, results_store, no_save, allow_incomplete)
    parts = workflows.compare_checkpoints(
        [target.open_run(r) for r in names], split_list(labels) if labels else names, params
    )
    _emit(workflows.save_parts(target.save, names[-1], name, parts), as_json)


@compare.command("models")
@click.argument("store")
@click.argument("runs", nargs=-1)
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="NAME=RUN,RUN,...: replicate runs of one model; give exactly two (instead of RUN "
    "RUN ...) to test the models' differences against run-to-run variance.",
)
@click.option(
    "--test",
    type=click.Choice(["auto", "permutation", "welch"]),
    default="auto",
    show_default=True,
    help="With --group: the test of the models' difference.",
)
@click.option(
    "--result",
    "result_name",
    default=None,
    help="The saved identification of every run to compare (default: the --method's name).",
)
@click.option(
    "--identify",
    "identify_now",
    is_flag=True,
    help="Identify every run here with one common set of parameters (the identification "
    "options) instead of reading saved identifications.",
)
@click.option(
    "--allow-mixed",
    is_flag=True,
    help="Compare identifications made with different methods or parameters (refused "
    "otherwise); the differences are recorded and printed.",
)
@click.option(
    "--bins",
    type=int,
    default=5,
    show_default=True,
    help="Bins of relative depth layer/(L-1); at most the shallowest model's layers.",
)
@click.option(
    "--n-stages",
    type=int,
    default=4,
    show_default=True,
    help="Stages of each model's layer profile, boundaries in relative depth (0: none).",
)
@click.option("--n-boot", type=int, default=200, show_default=True)
@click.option("--n-perm", type=click.IntRange(min=0), default=9999, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", default=None, help="Default: models-RUN-RUN... (slashes become '_').")
@click.option("--json", "as_json", is_flag=True)
@results_options
@identify_options
def compare_models(
    store: str,
    runs: tuple[str, ...],
    groups: tuple[str, ...],
    test: str,
    result_name: str | None,
    identify_now: bool,
    allow_mixed: bool,
    bins: int,
    n_stages: int,
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
    """Models of different depth, width and languages: type shares, relative-depth profiles,
    language-similarity (Jaccard) matrices and their Mantel agreement."""
    from langneurons import workflows
    from langneurons.analysis.cross_model import check_bins, common_languages
    from langneurons.analysis.cross_model import compare_models as run_compare
    from langneurons.analysis.identify import identify as run_identify

    params = identify_params(options)
    named = parse_groups(groups) if groups else None
    if named is not None and runs:
        raise ParameterError("give either RUN RUN ... or two --group options, not both")
    if named is not None:
        runs = tuple(r for members in named.values() for r in members)
    elif len(runs) < 2:
        raise ParameterError(
            f"compare models needs at least two runs (STORE RUN RUN ...) or two --group "
            f"options, got {len(runs)} run(s)"
        )
    if len(set(runs)) != len(runs):
        raise ParameterError("a run is given twice; name every model once")
    if identify_now and result_name is not None:
        raise ParameterError("--identify and --result exclude each other; choose one")
    target = Target(store, results_store, no_save, allow_incomplete)
    opened = [target.open_run(r) for r in runs]
    # the checks that need no identification come first (nothing is computed for bad input)
    common_languages(opened, runs)
    check_bins(bins, [int(ds.sizes["layer"]) for ds in opened], runs)
    saved = result_name or params.method
    results = []
    for run, ds in zip(runs, opened, strict=True):
        if identify_now:
            results.append(run_identify(ds, params.method, **params.keywords()))
            continue
        try:
            results.append(target.open_result(run, "identification", saved))
        except LookupError:
            raise ParameterError(
                f"run {run!r} has no saved identification {saved!r}; identify it first "
                f"(`langneurons identify {store} --run {run}`), or pass --identify to identify "
                "every model here with one common set of parameters"
            ) from None
    if named is not None:
        from langneurons.analysis.model_groups import compare_model_groups

        by_run = dict(zip(runs, results, strict=True))
        ds = compare_model_groups(
            {g: [by_run[r] for r in members] for g, members in named.items()},
            params,
            bins=bins,
            test=test,
            n_perm=n_perm,
            seed=seed,
            names=named,
        )
        first = next(iter(named.values()))[0]
        prefix = name or "models-" + workflows.groups_name(list(named))
        _emit(workflows.save_parts(target.save, first, prefix, {"model_groups": ds}), as_json)
        return
    ds = run_compare(
        opened,
        results,
        names=list(runs),
        bins=bins,
        n_stages=n_stages,
        n_boot=n_boot,
        n_perm=n_perm,
        seed=seed,
        allow_mixed=allow_mixed,
    )
    prefix = name or "models-" + "-".join(r.replace("/", "_") for r in runs)
    _emit(workflows.save_parts(target.save, runs[0], prefix, {"models": ds}), as_json)
