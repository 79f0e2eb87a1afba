"""langneurons.reports: figures and reports of results computed by ``langneurons.analysis``.

:mod:`~langneurons.reports.figures` draws results with matplotlib (no pyplot state, no torch);
:func:`write_report` renders everything saved in a store as a self-contained HTML page, Markdown,
CSV tables, figure files and two reproducible sources (a Quarto document and a Jupyter
notebook) that rebuild the figures from the store through the public API.
"""

from __future__ import annotations

from langneurons.reports import figures
from langneurons.reports.report import write_report

__all__ = ["figures", "write_report"]
