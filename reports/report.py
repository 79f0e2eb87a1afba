"""Render what a store holds as a report: HTML, Markdown, CSV tables, figures and sources.

:func:`write_report` reads runs and their saved results (identification, stats, compare,
ablation) and writes, into one folder:

- ``report.html``: self-contained (CSS inline, figures as base64 PNG, no external resources);
- ``report.md``: the same content in Markdown, figures linked from ``figures/``;
- ``tables/*.csv``: every table of the report;
- ``figures/*.svg`` and ``figures/*.png``: every figure;
- ``report.qmd`` (Quarto) and ``report.ipynb`` (Jupyter): places to continue from, which open
  the store, the runs and the saved results, show the key tables and rebuild the figures
  through the public API, parameterised by the store path.

The report leads with the answer: a summary per run and per comparison (headline numbers,
each marked inference or descriptive, and the key figures); parameters, provenance and full
tables follow as an appendix. Paths are written relative to the report folder, so the folder
can be moved and shared together with its store. Tables are sorted deterministically: the same
store gives the same table bytes.

Each figure is described once, as a call of a :mod:`~langneurons.reports.figures` function on
results loaded from the store (or derived from them in one place,
:mod:`~langneurons.reports.derived`); the report executes that call and the sources print it,
so both draw the same thing. Results are recognised by the variables they hold (a registry,
:mod:`~langneurons.reports._kinds`), not by their names.

The parts: the block model (``_blocks``), the assembly of sections (``_assemble``, with
``_kinds``, ``_tables`` and ``_summary``), loading (``_load``), the renderers (``_render``:
HTML, Markdown, CSV) and the sources (``_notebook``: Jupyter, Quarto); this module draws the
figures and writes the folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from langneurons._progress import progress
from langneurons.errors import LangneuronsError, ParameterError, RunNotFoundError
from langneurons.reports import figures
from langneurons.reports._assemble import Builder
from langneurons.reports._blocks import Fig, Items, Para, Pre, Section, Table, plain
from langneurons.reports._load import Loader
from langneurons.reports._notebook import notebook, qmd, source_cells
from langneurons.reports._paths import PathView
from langneurons.reports._render import html_page, markdown, write_csv
from langneurons.store import ActivationStore, open_store

log = logging.getLogger(__name__)

#: File that marks a folder as a langneurons report (only such folders are replaced).
MARKER: Final = ".langneurons-report"


# --------------------------------------------------------------------------- drawing


def _draw(sections: list[Section], loader: Loader, folder: Path) -> None:
    """Execute every figure call; save SVG and PNG; keep the PNG bytes for the HTML."""
    blocks = [b for sec in sections for b in sec.blocks if isinstance(b, Fig)]
    with progress("report", total=len(blocks), unit="figure") as task:
        for block in blocks:
            task.note(block.slug)
            call = block.call
            try:
                args = [loader.resolve(a) for a in call.args]
                kwargs = {k: loader.resolve(v) for k, v in call.kwargs}
                fig = getattr(figures, call.func)(*args, **kwargs)
            except (LangneuronsError, KeyError, ValueError) as exc:  # a result it cannot draw
                log.warning("figure %s could not be drawn: %s", block.slug, exc)
                block.error = str(exc)
                task.update()
                continue
            paths = figures.save(fig, folder / block.slug, ("svg", "png"))
            block.png = paths[1].read_bytes()
            task.update()


def _relative(sections: list[Section], view: PathView) -> None:
    """Rewrite absolute local paths in every block relative to the report folder."""
    for sec in sections:
        for block in sec.blocks:
            if isinstance(block, (Para, Pre)):
                block.text = view.text(block.text)
            elif isinstance(block, Items):
                block.lines = [view.text(line) for line in block.lines]
            elif isinstance(block, Table):
                block.title = view.text(block.title)
                block.rows = [[view.value(plain(v)) for v in row] for row in block.rows]


# --------------------------------------------------------------------------- public API


def _check_out_dir(out: Path) -> None:
    """Refuse a file, or a non-empty folder that is not an earlier report."""
    if out.exists() and not out.is_dir():
        raise ParameterError(f"out_dir {str(out)!r} is a file; give a folder path for the report")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ParameterError(
            f"out_dir {str(out)!r} is a non-empty folder that is not a langneurons report; "
            "choose a new folder or empty it"
        )


_MADE_DIRS: Final = ("figures", "tables")  # the folders a report makes
_MADE_FILES: Final = ("report.html", "report.md", "report.qmd", "report.ipynb", MARKER)


def _made_by_report(out: Path) -> set[str]:
    """The files (relative paths) the earlier report in ``out`` wrote: listed in its marker,
    or, for a marker without the list (older releases), the report's own file names."""
    try:
        listed = json.loads((out / MARKER).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    if isinstance(listed, list) and all(isinstance(x, str) for x in listed):
        return {*listed, MARKER}
    made = set(_MADE_FILES)
    for folder, suffixes in (("figures", (".svg", ".png")), ("tables", (".csv",))):
        made |= {f"{folder}/{p.name}" for p in (out / folder).glob("*") if p.suffix in suffixes}
    return made


def _carry_over(out: Path, tmp: Path) -> None:
    """Put into the new report ``tmp`` every file and folder of the earlier report ``out``
    that the earlier report did not write (the user's: notes, their own tables), linked or
    copied; the originals stay until the new report is in place. A user's file where the new
    report writes one is refused (nothing of theirs is replaced)."""
    made = _made_by_report(out)
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if rel in made or (path.is_dir() and not path.is_symlink() and rel in _MADE_DIRS):
            continue
        target = tmp / rel
        if path.is_dir() and not path.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if target.exists() or target.is_symlink():
            raise ParameterError(
                f"{str(path)!r} was not written by the earlier report, but the new report "
                "writes a file of that name; move it, or give the report a new folder"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            target.symlink_to(os.readlink(path))
            continue
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished report into place: an earlier report is replaced, and what the user
    added to its folder is kept."""
    if not out.exists():
        os.replace(tmp, out)
        return
    _carry_over(out, tmp)
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_report(
    store: ActivationStore | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    runs: Sequence[str] | None = None,
    *,
    title: str | None = None,
) -> Path:
    """Write a report of a store's runs and saved results; return the HTML path.

    The report opens with a summary per run and per comparison: the headline numbers (lambda,
    tau, selected neurons, types, stages with their layer ranges, stability, tests, the strongest
    deactivation effects, what changed between runs), each marked as inference (sequences as
    the sampled unit) or descriptive, a warning when an automatic lambda ended at the top of
    its search range, and the key figures. The appendix follows: for every run (or those
    given) its provenance (model, revision, hook point, activation, dtype, corpus and hash, tool
    version, creation time, provenance and every write), token totals per language and role,
    every saved identification with its parameters and count tables and figures, and every
    saved stats, compare and ablation result (its attributes, tables of its small variables,
    and the figure that fits its kind); with two or more runs, identifications of the same name
    compared across runs.

    Local paths (the store, files named in provenance and results) are written relative to
    ``out_dir`` where they share a folder with it, so the report folder can be moved and shared
    together with its store; the sources' ``STORE`` parameter is such a relative path. Tables
    are sorted deterministically: the same store gives the same tables, byte for byte.

    The report is assembled in a temporary folder next to ``out_dir`` and moved into place
    when complete, so a failure leaves nothing half-written. An existing ``out_dir`` is
    replaced only when it is empty or an earlier report, and then only the files that report
    wrote (listed in its marker): files and folders the user added there are kept.

    Parameters
    ----------
    store : ActivationStore, str or path
        An open store, or its path/URL (opened read-only).
    out_dir : str or path
        Folder to write: ``report.html`` (self-contained), ``report.md``, ``tables/*.csv``,
        ``figures/*.svg`` and ``*.png``, ``report.qmd`` and ``report.ipynb`` (which open the
        store, runs and results, show the key tables and rebuild the figures).
    runs : sequence of str, optional
        Runs to report (default: all).
    title : str, optional
        Report title (default: "langneurons report").

    Returns
    -------
    pathlib.Path
        The path of ``report.html``.

    Raises
    ------
    ParameterError
        The store holds no runs, ``runs`` is empty, or ``out_dir`` is a file or a non-empty
        folder that is not a report.
    RunNotFoundError
        A run in ``runs`` is not in the store.
    """
    opened = store if isinstance(store, ActivationStore) else open_store(store, mode="r")
    available = opened.runs()
    if not available:
        raise ParameterError(
            f"store {opened.url!r} holds no runs; import or extract one first "
            "(`langneurons import ...`)"
        )
    if runs is None:
        chosen = available
    else:
        if isinstance(runs, str):
            runs = [runs]
        chosen = list(dict.fromkeys(str(r) for r in runs))
        if not chosen:
            raise ParameterError("runs is empty; give at least one run or None for all")
        missing = [r for r in chosen if r not in available]
        if missing:
            raise RunNotFoundError(
                f"run {missing[0]!r} is not in store {opened.url!r} (runs: "
                f"{', '.join(available)}); list them with `langneurons info STORE`"
            )
    out = Path(out_dir)
    _check_out_dir(out)
    view = PathView(out, opened.url)
    location = view.store
    title = title or "langneurons report"
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    from langneurons._version import __version__

    subtitle = f"Store {location}; written {now} by langneurons {__version__}"
    builder = Builder(opened, chosen, location)
    sections = builder.build()
    _relative(sections, view)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the report is an ordinary folder
        (tmp / "figures").mkdir()
        (tmp / "tables").mkdir()
        _draw(sections, builder.loader, tmp / "figures")
        for sec in sections:
            for block in sec.blocks:
                if isinstance(block, Table):
                    write_csv(block, tmp / "tables")
        (tmp / "report.html").write_text(html_page(sections, title, subtitle), encoding="utf-8")
        (tmp / "report.md").write_text(markdown(sections, title, subtitle), encoding="utf-8")
        cells = source_cells(sections, location)
        (tmp / "report.qmd").write_text(qmd(cells, title, location), encoding="utf-8")
        book = notebook(cells, title)
        (tmp / "report.ipynb").write_text(json.dumps(book, indent=1) + "\n", encoding="utf-8")
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        marker = {
            "store": location,
            "runs": chosen,
            "written": now,
            "langneurons": __version__,
            "files": files,  # what the report wrote: a new report replaces these alone
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("report of %d run(s) written to %s", len(chosen), out)
    return out / "report.html"


__all__ = ["write_report"]
