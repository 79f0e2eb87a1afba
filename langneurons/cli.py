"""The ``langneurons`` command line.

Every command maps onto the Python API; errors print one line (``langneurons: error: ...``) and exit
non-zero, with a traceback only under ``--debug``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from langneurons.errors import LangneuronsError

log = logging.getLogger("langneurons")

EXIT_ERROR = 1
EXIT_USAGE = 2


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _split_languages(value: str | None) -> list[str]:
    if value is None:
        return []
    return [x.strip() for x in value.split(",") if x.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.version_option(package_name="langneurons")
def cli(debug: bool, verbose: bool) -> None:
    """langneurons: find and compare language neurons in multilingual LLMs."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------- store commands
@cli.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(store: str, as_json: bool) -> None:
    """Runs, languages, shapes, token totals and provenance of STORE."""
    from langneurons.store import open_store

    data = open_store(store).info()
    if as_json:
        _echo_json(data)
        return
    click.echo(f"store {data['store']} (schema version {data['schema_version']})")
    if not data["runs"]:
        click.echo("  no runs")
    for run, entry in data["runs"].items():
        attrs = entry["attrs"]
        prov = attrs.get("provenance", {})
        click.echo(f"run {run}")
        click.echo(
            f"  model      {attrs.get('model') or '?'} {attrs.get('revision') or ''}".rstrip()
        )
        click.echo(f"  shape      {entry['layers']} layers x {entry['neurons']} neurons")
        click.echo(f"  made       {prov.get('method', '?')} {prov.get('format', '')}".rstrip())
        click.echo(f"  optional   {', '.join(entry['optional']) or 'none'}")
        if "sequences" in entry:
            click.echo(f"  sequences  {entry['sequences']}")
        click.echo(f"  languages  {len(entry['languages'])}: {' '.join(entry['languages'])}")
        for lang, tokens in entry["n_tokens"].items():
            click.echo(
                f"    {lang:<8} prompt {tokens['prompt']:>12,}  response {tokens['response']:>12,}"
            )
        for kind, names in entry.get("results", {}).items():
            click.echo(f"  {kind:<10} {', '.join(names)}")


@cli.command()
@click.argument("store")
@click.option("--run", default=None, help="Validate only this run.")
def validate(store: str, run: str | None) -> None:
    """Check STORE against the schema (dims, dtypes, counts); exit 1 on any problem."""
    from langneurons.store import open_store

    opened = open_store(store)
    problems = opened.validate(run)
    if problems:
        for problem in problems:
            click.echo(f"invalid: {problem}", err=True)
        raise SystemExit(EXIT_ERROR)
    n = 1 if run else len(opened.runs())
    click.echo(f"ok: {n} run(s) valid in {store}")


@cli.command()
@click.argument("store")
def repair(store: str) -> None:
    """Roll back writes that were interrupted (a killed import or extraction)."""
    from langneurons.store import open_store

    rolled = open_store(store, mode="r+").repair()
    click.echo(
        f"rolled back {len(rolled)} interrupted write(s)" + (f": {rolled}" if rolled else "")
    )


@cli.command()
@click.argument("store")
@click.argument("dest")
def export(store: str, dest: str) -> None:
    """Export STORE as one zip file DEST for sharing (xarray reads it via zarr's ZipStore)."""
    from langneurons.store import open_store

    path = open_store(store).export_zip(dest)
    click.echo(f"wrote {path}")


# --------------------------------------------------------------------------- importers
@cli.group(name="import")
def import_() -> None:
    """Import existing activation or mask files into a store."""


@import_.command("njunlp")
@click.argument("directory")
@click.option("--tag", required=True, help="The TAG in activation.{lang}.{TAG}.pt.")
@click.option("--languages", required=True, help="Comma-separated codes, e.g. en,ru,zh.")
@click.option("--store", "store_url", required=True, help="Store path or URL.")
@click.option("--run", required=True, help="Run path inside the store, e.g. mistral-7b/base.")
@click.option("--model", default="", help="Model name recorded with the run.")
@click.option("--merge", is_flag=True, help="Add counts to languages already in the run.")
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def import_njunlp(
    directory: str,
    tag: str,
    languages: str,
    store_url: str,
    run: str,
    model: str,
    merge: bool,
    as_json: bool,
) -> None:
    """Import the full/prefix activation files of the reference pipeline from DIRECTORY."""
    from langneurons.extract.importers import import_njunlp as run_import

    report = run_import(
        store_url, run, directory, tag, _split_languages(languages), model=model, merge=merge
    )
    _report_import(report, store_url, run, as_json)


@import_.command("lape")
@click.argument("files", nargs=-1, required=True)
@click.option("--languages", required=True, help="Comma-separated codes, one per file.")
@click.option("--store", "store_url", required=True, help="Store path or URL.")
@click.option("--run", required=True, help="Run path inside the store.")
@click.option("--model", default="", help="Model name recorded with the run.")
@click.option("--merge", is_flag=True, help="Add counts to languages already in the run.")
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def import_lape(
    files: Sequence[str],
    languages: str,
    store_url: str,
    run: str,
    model: str,
    merge: bool,
    as_json: bool,
) -> None:
    """Import LAPE activation files (all tokens counted; stored under role 'response')."""
    from langneurons.extract.importers import import_lape as run_import

    report = run_import(
        store_url, run, list(files), _split_languages(languages), model=model, merge=merge
    )
    _report_import(report, store_url, run, as_json)


def _report_import(report: dict[str, Any], store_url: str, run: str, as_json: bool) -> None:
    if as_json:
        _echo_json(report)
        return
    langs = report.get("languages", [])
    click.echo(f"imported {len(langs)} language(s) into {store_url} run {run}: {' '.join(langs)}")
    clamped = report.get("clamped_total")
    if clamped is not None:
        click.echo(f"clamped {clamped} negative full-minus-prefix cell(s) to 0")


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (errors print one line unless --debug)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = cli.main(args=args, prog_name="langneurons", standalone_mode=False)
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_ERROR
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_ERROR
    except (LangneuronsError, PermissionError, FileNotFoundError, NotADirectoryError) as exc:
        if debug:
            raise
        message = " ".join(str(exc).split())
        click.echo(f"langneurons: error: {message}", err=True)
        return EXIT_ERROR
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
