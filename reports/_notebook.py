"""The report's sources: a Jupyter notebook and a Quarto document to continue from.

Both open the store (``langneurons.open_store``), the runs (``store.open_run``) and the saved
results (``store.open_result``), show the key tables as pandas DataFrames, and rebuild the
report's figures through :mod:`langneurons.reports.figures`, with the few results no command
saves derived by the same public calls as the report's (:mod:`langneurons.reports.derived`).
The store path is a parameter (``STORE``, tagged ``parameters`` for papermill; ``params`` for
Quarto) whose default is relative to the report folder, the working directory of both.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Final

from langneurons.reports._blocks import Code, Fig, Items, Para, Section

SETUP: Final = """\
%matplotlib inline
import pandas as pd
import langneurons
from langneurons.analysis import accuracy_effects, deactivation_effects
from langneurons.analysis import language_overlap, type_table
from langneurons.reports import derived, figures

store = langneurons.open_store(STORE)
store.runs()"""


@dataclasses.dataclass(frozen=True)
class Cell:
    """A cell: markdown, or code; ``label`` is "parameters", "setup", "open", "table" or a slug."""

    kind: str
    source: str
    label: str = ""
    caption: str = ""


def _markdown_of(sec: Section) -> str:
    """A summary section's text as Markdown."""
    out = ["#" * sec.level + " " + sec.title]
    for block in sec.blocks:
        if isinstance(block, Para):
            out.append(("**Warning:** " if block.cls == "warning" else "") + block.text)
        elif isinstance(block, Items):
            out.append("\n".join(f"- {line}" for line in block.lines))
    return "\n\n".join(out)


def source_cells(sections: list[Section], store: str) -> list[Cell]:
    """Parameters, setup, then per section its heading, code cells (tables) and figure cells."""
    cells = [Cell("code", f"STORE = {store!r}", "parameters"), Cell("code", SETUP, "setup")]
    parent: Section | None = None  # a level-2 heading, written before its first cell
    for sec in sections:
        if sec.level <= 2:
            parent = sec
        active = [
            b
            for b in sec.blocks
            if isinstance(b, Code) or (isinstance(b, Fig) and b.png is not None)
        ]
        if not active and not sec.summary:
            continue
        if parent is not None and parent is not sec:
            cells.append(Cell("markdown", "#" * parent.level + " " + parent.title))
        parent = None
        cells.append(
            Cell(
                "markdown", _markdown_of(sec) if sec.summary else "#" * sec.level + " " + sec.title
            )
        )
        for block in active:
            if isinstance(block, Code):
                cells.append(Cell("code", block.source, block.tag, block.title))
            elif isinstance(block, Fig):
                cells.append(Cell("code", block.call.code(), block.slug, block.title))
    return cells


def notebook(cells: list[Cell], title: str) -> dict[str, Any]:
    """An nbformat 4.5 notebook (written without the nbformat package)."""
    intro = (
        f"# {title}\n\nA place to continue from: opens the store, its runs and saved results, "
        "shows the key tables and rebuilds the report's figures (the few results no command "
        "saves are derived by the same public calls the report made). "
        "`STORE` (next cell, tagged `parameters` for papermill) is relative to this folder; "
        "set it to another path or URL to point elsewhere."
    )
    out: list[dict[str, Any]] = [
        {"cell_type": "markdown", "id": "title", "metadata": {}, "source": intro}
    ]
    for i, c in enumerate(cells):
        tags = ["parameters"] if c.label == "parameters" else []
        if c.label in ("table", "open"):
            tags = [c.label]
        cell: dict[str, Any] = {
            "cell_type": c.kind,
            "id": f"cell-{i}",
            "metadata": {"tags": tags} if tags else {},
            "source": c.source,
        }
        if c.kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return {
        "cells": out,
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def qmd(cells: list[Cell], title: str, store: str) -> str:
    """A Quarto document; ``params`` and the parameters cell hold the store path."""
    out = [
        "---",
        f"title: {json.dumps(title)}",
        "format:",
        "  html:",
        "    embed-resources: true",
        "    toc: true",
        "jupyter: python3",
        "params:",
        f"  STORE: {json.dumps(store)}",
        "---",
        "",
        "A place to continue from: opens the store, its runs and saved results, shows the key "
        "tables and rebuilds the report's figures. `STORE` is relative to this folder: "
        "`quarto render report.qmd -P STORE:/path/to/store.zarr` points elsewhere.",
        "",
    ]
    for c in cells:
        if c.kind == "markdown":
            out += [c.source, ""]
            continue
        out.append("```{python}")
        if c.label == "parameters":
            out.append("#| tags: [parameters]")
        elif c.label in ("table", "open"):
            out.append(f"#| tags: [{c.label}]")
        elif c.label != "setup":
            out += [f"#| label: fig-{c.label}", f"#| fig-cap: {json.dumps(c.caption)}"]
        out += [c.source, "```", ""]
    return "\n".join(out)


__all__ = ["SETUP", "Cell", "notebook", "qmd", "source_cells"]
