"""Store commands: ``info``, ``validate``, ``repair``, ``export``, ``migrate`` and ``import``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from langneurons.cli._options import EXIT_ERROR, echo_json, split_list


@click.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(store: str, as_json: bool) -> None:
    """Runs, languages, shapes, token totals and provenance of STORE."""
    from langneurons.cli._info import read_info

    data = read_info(store)  # a local store, from its JSON: no zarr or xarray to import
    if data is None:
        from langneurons.store import open_store

        data = open_store(store).info()
    if as_json:
        echo_json(data)
        return
    for line in info_lines(data):
        click.echo(line)


def info_lines(data: dict[str, Any]) -> list[str]:
    """The text ``info`` prints for the data of ``ActivationStore.info()``."""
    out = [f"store {data['store']} (schema version {data['schema_version']})"]
    if not data["runs"]:
        out.append("  no runs" + (" with counts" if data.get("results_only") else ""))
    for run, entry in data["runs"].items():
        attrs = entry["attrs"]
        prov = attrs.get("provenance", {})
        out.append(f"run {run}")
        model = f"{attrs.get('model') or '?'} {attrs.get('revision') or ''}".rstrip()
        out.append(f"  model      {model}")
        moe = entry.get("moe")
        if moe:  # a mixture-of-experts run: neurons is the largest expert's
            shared = f" + {moe['n_shared']} shared" if moe.get("n_shared") else ""
            out.append(
                f"  shape      {entry['layers']} layers x {moe['n_experts']} routed{shared} "
                f"experts (top-{moe['top_k']}) x {entry['neurons']} neurons"
            )
        else:
            out.append(f"  shape      {entry['layers']} layers x {entry['neurons']} neurons")
        out.append(f"  made       {prov.get('method', '?')} {prov.get('format', '')}".rstrip())
        if "incomplete" in entry:
            out.append(f"  status     {entry['incomplete']}")
        out.append(f"  optional   {', '.join(entry['optional']) or 'none'}")
        if "sequences" in entry:
            out.append(f"  sequences  {entry['sequences']}")
        out.append(f"  languages  {len(entry['languages'])}: {' '.join(entry['languages'])}")
        for lang, tokens in entry["n_tokens"].items():
            out.append(
                f"    {lang:<8} prompt {tokens['prompt']:>12,}  response {tokens['response']:>12,}"
            )
        for kind, names in entry.get("results", {}).items():
            out.append(f"  {kind:<10} {', '.join(names)}")
    for line in data.get("unreadable", []):
        out.append(f"note: {line}")
    for run, entry in data.get("results_only", {}).items():
        source = entry["results_of"]
        out.append(f"results of run {run} (counts in {source.get('store')})")
        for kind, names in entry.get("results", {}).items():
            out.append(f"  {kind:<10} {', '.join(names)}")
    return out


@click.command()
@click.argument("store")
@click.option("--run", default=None, help="Validate only this run.")
def validate(store: str, run: str | None) -> None:
    """Check STORE against the schema (dims, dtypes, counts); exit 1 on any problem."""
    from langneurons.store import open_store

    opened = open_store(store)
    problems = opened.validate(run)
    for note in opened.notes(run):
        click.echo(f"note: {note}")
    if problems:
        for problem in problems:
            click.echo(f"invalid: {problem}", err=True)
        raise SystemExit(EXIT_ERROR)
    n = 1 if run else len(opened.runs())
    click.echo(f"ok: {n} run(s) valid in {store}")


@click.command()
@click.argument("store")
@click.option(
    "--rebind",
    is_flag=True,
    help="Also record where each chunk lies (a chunk manifest) for arrays written before "
    "langneurons kept one; only for data you know to be good.",
)
def repair(store: str, rebind: bool) -> None:
    """Roll back writes that were interrupted (a killed import or extraction)."""
    from langneurons.store import open_store

    done = open_store(store, mode="r+", any_version=True).repair_report(rebind=rebind)
    rolled = list(done.rolled_back)
    click.echo(
        f"rolled back {len(rolled)} interrupted write(s)" + (f": {rolled}" if rolled else "")
    )
    if done.removed:
        click.echo(
            f"removed {len(done.removed)} leftover(s) of killed writes: {', '.join(done.removed)}"
        )
    if done.restored:
        click.echo(
            f"restored the lost zarr.json of {len(done.restored)} node(s) from the consolidated "
            f"metadata: {', '.join(done.restored)}"
        )
    if rebind:
        click.echo(f"recorded the chunk places of {len(done.rebound)} array(s)")
    if done.damaged:
        from langneurons.errors import CorruptStoreError

        raise CorruptStoreError(
            f"{len(done.damaged)} folder(s) hold Zarr data without a zarr.json that repair "
            f"cannot restore, left as they are: {', '.join(done.damaged)}; restore them from a "
            "copy, or remove them if they are what a killed delete left"
        )


@click.command()
@click.argument("store")
@click.argument("dest")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["zip", "netcdf", "parquet", "dataset"]),
    default="zip",
    show_default=True,
    help="zip: the whole store as one zip file DEST; netcdf: one NetCDF-4 file per run under the "
    "new folder DEST; parquet: one long-form neuron table per run under DEST; dataset: a folder "
    "laid out as a dataset repository (card, store zip, Parquet tables).",
)
@click.option("--runs", default=None, help="Comma-separated runs to export (default all; not zip).")
@click.option(
    "--license",
    default="unknown",
    show_default=True,
    help="Licence identifier written in the dataset card (--format dataset), e.g. cc-by-4.0.",
)
@click.option("--title", default=None, help="Title of the dataset card (--format dataset).")
def export(
    store: str, dest: str, fmt: str, runs: str | None, license: str, title: str | None
) -> None:
    """Export STORE to DEST for sharing: a zip (xarray reads it via zarr's ZipStore), NetCDF
    files, Parquet neuron tables or a dataset folder. A damaged store is refused; what is
    written is read back and compared before DEST appears."""
    from langneurons.store import open_store

    opened = open_store(store)
    selected = split_list(runs) or None
    if fmt == "zip":
        if selected:
            raise click.UsageError("--runs is not for --format zip, which exports the whole store")
        click.echo(f"wrote {opened.export_zip(dest)}")
        return
    if fmt == "dataset":
        path = opened.export_dataset(dest, runs=selected, license=license, title=title)
        n = len(selected or opened.runs())
        click.echo(
            f"wrote dataset folder {path} ({n} run(s): README.md card, store.zip, data/*.parquet;"
            f" licence {license})"
        )
        return
    write = opened.export_netcdf if fmt == "netcdf" else opened.export_parquet
    files = write(dest, runs=selected)
    click.echo(f"wrote {len(files)} {fmt} file(s) under {dest}: " + ", ".join(map(str, files)))


@click.command()
@click.argument("store")
@click.option("--out", default=None, help="Write the migrated store here; default: in place.")
def migrate(store: str, out: str | None) -> None:
    """Rewrite STORE, written by an older langneurons, in the current schema version."""
    from langneurons.store import migrate_store

    done = migrate_store(store, out)
    click.echo(
        f"migrated {store} from schema version {done.from_version} to {done.to_version} "
        f"({done.runs} run(s), {done.results} result(s)) into {done.store}"
    )
    if done.backup is not None:
        click.echo(f"the original is kept at {done.backup}; delete it once you are satisfied")


# --------------------------------------------------------------------------- importers
@click.group(name="import")
def import_() -> None:
    """Import existing activation or mask files into a store."""


@import_.command("njunlp")
@click.argument("directory")
@click.option("--tag", required=True, help="The TAG in activation.{lang}.{TAG}.pt.")
@click.option("--languages", required=True, help="Comma-separated codes, e.g. en,ru,zh.")
@click.option("--store", required=True, help="Store path or URL.")
@click.option("--run", required=True, help="Run path inside the store, e.g. mistral-7b/base.")
@click.option("--model", default="", help="Model name recorded with the run.")
@click.option("--merge", is_flag=True, help="Add counts to languages already in the run.")
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def import_njunlp(
    directory: str,
    tag: str,
    languages: str,
    store: str,
    run: str,
    model: str,
    merge: bool,
    as_json: bool,
) -> None:
    """Import the full/prefix activation files of the reference pipeline from DIRECTORY."""
    from langneurons.extract.importers import import_njunlp as run_import

    # the store positionally: its keyword is being renamed (store_url -> store)
    report = run_import(store, run, directory, tag, split_list(languages), model=model, merge=merge)
    _report_import(report, store, run, as_json)


@import_.command("lape")
@click.argument("files", nargs=-1, required=True)
@click.option("--languages", required=True, help="Comma-separated codes, one per file.")
@click.option("--store", required=True, help="Store path or URL.")
@click.option("--run", required=True, help="Run path inside the store.")
@click.option("--model", default="", help="Model name recorded with the run.")
@click.option("--merge", is_flag=True, help="Add counts to languages already in the run.")
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def import_lape(
    files: Sequence[str],
    languages: str,
    store: str,
    run: str,
    model: str,
    merge: bool,
    as_json: bool,
) -> None:
    """Import LAPE activation files (all tokens counted; stored under role 'response')."""
    from langneurons.extract.importers import import_lape as run_import

    report = run_import(store, run, list(files), split_list(languages), model=model, merge=merge)
    _report_import(report, store, run, as_json)


def _report_import(report: dict[str, Any], store: str, run: str, as_json: bool) -> None:
    if as_json:
        echo_json(report)
        return
    langs = report.get("languages", [])
    click.echo(f"imported {len(langs)} language(s) into {store} run {run}: {' '.join(langs)}")
    if "clamped_cells_total" in report:
        click.echo(
            f"clamped {report['clamped_cells_total']} negative full-minus-prefix cell(s) to 0 "
            f"and {report.get('clamped_above_cells_total', 0)} above the response token total"
        )


@import_.command("zip")
@click.argument("file")
@click.option("--store", required=True, help="New directory store to unpack into.")
def import_zip(file: str, store: str) -> None:
    """Unpack a zip made by `langneurons export` into a new, writable directory store."""
    from langneurons.store import import_zip as unpack

    unpacked = unpack(file, store)
    click.echo(f"unpacked {len(unpacked.runs())} run(s) into {store}")


@import_.command("mask")
@click.argument("file")
@click.option("--store", required=True, help="Store path or URL.")
@click.option("--run", required=True, help="The run whose languages and shape the mask uses.")
@click.option("--name", required=True, help="Name of the neuron set, e.g. lape-published.")
def import_mask(file: str, store: str, run: str, name: str) -> None:
    """Import a LAPE-format mask FILE as a neuron set saved under RUN/identification/NAME."""
    from langneurons.analysis.identify import masks_from_lists
    from langneurons.extract import load_mask
    from langneurons.names import LANGUAGE, LAYER, NEURON
    from langneurons.store import open_store

    opened = open_store(store, mode="r+")
    ds = opened.open_run(run)
    languages = [str(x) for x in ds[LANGUAGE].values]
    masks = load_mask(file)
    result = masks_from_lists(masks, languages, ds.sizes[LAYER], ds.sizes[NEURON])
    result.attrs.update({"method": "imported-mask", "source": str(file)})
    path = opened.save_result(run, "identification", name, result)
    total = int(result["mask"].sum())
    click.echo(f"saved {total} mask entries for {len(languages)} languages at {path}")
