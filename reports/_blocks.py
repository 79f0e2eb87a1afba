"""The report's model: sections of blocks (text, tables, figure calls, notebook code), and cells.

A report is built as data first (:class:`Section` holding blocks), then drawn and rendered by
:mod:`~langneurons.reports._render` (HTML, Markdown, CSV) and
:mod:`~langneurons.reports._notebook` (Quarto, Jupyter). Nothing here touches a store.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Load:
    """A saved result, loaded with ``store.open_result``."""

    run: str
    kind: str
    name: str

    def code(self) -> str:
        """The load as Python source, with ``store`` in scope."""
        return f"store.open_result({self.run!r}, {self.kind!r}, {self.name!r})"


@dataclasses.dataclass(frozen=True)
class Derive:
    """A derived result: a public function (see :mod:`~langneurons.reports.derived`) of loads.

    ``func`` is the name the sources call it by (``"language_overlap"``,
    ``"derived.run_overlap"``); the report obtains it once through ``derived.DERIVATIONS``.
    """

    func: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def code(self) -> str:
        """The call as Python source, with ``store`` and the function in scope."""
        parts = [code_of(a) for a in self.args] + [f"{k}={code_of(v)}" for k, v in self.kwargs]
        return f"{self.func}({', '.join(parts)})"


@dataclasses.dataclass(frozen=True)
class Call:
    """A call of a :mod:`~langneurons.reports.figures` function; arguments may hold loads and
    derived results."""

    func: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def code(self) -> str:
        """The call as Python source, with ``store`` and ``figures`` in scope."""
        parts = [code_of(a) for a in self.args] + [f"{k}={code_of(v)}" for k, v in self.kwargs]
        one_line = f"figures.{self.func}({', '.join(parts)})"
        if len(one_line) <= 96:
            return one_line
        inner = "".join(f"    {p},\n" for p in parts)
        return f"figures.{self.func}(\n{inner})"


def code_of(value: Any) -> str:
    """Python source of a call argument."""
    if isinstance(value, (Load, Derive)):
        return value.code()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(code_of(v) for v in value) + "]"
    if value is None or isinstance(value, (str, int, float, bool)):
        return repr(value)
    raise TypeError(f"cannot write {type(value).__name__} as a figure argument")


@dataclasses.dataclass
class Para:
    """A paragraph; ``cls`` "warning" marks a line a reader must not miss."""

    text: str
    cls: str = ""


@dataclasses.dataclass
class Items:
    """A bulleted list of short lines."""

    lines: list[str]


@dataclasses.dataclass
class Pre:
    text: str


@dataclasses.dataclass
class Table:
    slug: str
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclasses.dataclass
class Fig:
    slug: str
    title: str
    call: Call
    caption: str = ""
    png: bytes | None = None
    error: str | None = None


@dataclasses.dataclass
class Ref:
    """A pointer to a figure shown earlier (the summary's key figures are not drawn twice)."""

    fig: Fig


@dataclasses.dataclass
class Code:
    """Notebook-only code: opens a run or result and shows a table (not in HTML/Markdown)."""

    source: str
    title: str
    tag: str = "table"


Block = Para | Items | Pre | Table | Fig | Ref | Code


@dataclasses.dataclass
class Section:
    anchor: str
    title: str
    level: int
    blocks: list[Block] = dataclasses.field(default_factory=list)
    summary: bool = False  # its text is also the notebook's (the answer comes first there too)


class Slugs:
    """Unique file-name-safe slugs."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def __call__(self, *parts: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:90] or "item"
        slug, i = base, 2
        while slug in self._used:
            slug, i = f"{base}-{i}", i + 1
        self._used.add(slug)
        return slug


# --------------------------------------------------------------------------- value formatting


def plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values (for JSON and cells)."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def json_text(value: Any, indent: int | None = None) -> str:
    """Compact (or indented) JSON of attributes, keys sorted; NaN written as NaN."""
    seps = (", ", ": ") if indent is None else (",", ": ")
    return json.dumps(plain(value), indent=indent, separators=seps, sort_keys=True, default=str)


def cell(value: Any) -> str:
    """A value as table text."""
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json_text(value)


def csv_cell(value: Any) -> str:
    """A value for CSV: full precision floats, JSON for nested values."""
    value = plain(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else repr(value)
    if isinstance(value, (list, dict)):
        return json_text(value)
    return cell(value)


def is_number(value: Any) -> bool:
    value = plain(value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = [
    "Block",
    "Call",
    "Code",
    "Derive",
    "Fig",
    "Items",
    "Load",
    "Para",
    "Pre",
    "Ref",
    "Section",
    "Slugs",
    "Table",
    "cell",
    "code_of",
    "csv_cell",
    "is_number",
    "json_text",
    "plain",
]
