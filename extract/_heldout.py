"""Is an evaluation set held out from the sequences a run's neurons were identified from?

Deactivation scored on the identification corpus is circular: the neurons were chosen because they
fire on those very texts. A run with per-sequence counts knows which items it read (``seq_id``
per ``seq_language``), so an evaluation record whose ``(language, id)`` is among them is an
overlap. A run without them only knows its corpus hash: the same hash means the same texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import xarray as xr

from langneurons.errors import ParameterError
from langneurons.extract import corpus as _corpus
from langneurons.names import SEQ_ID, SEQ_LANGUAGE

DISJOINT = "disjoint"
OVERLAP_ALLOWED = "overlap allowed"
UNCHECKED = "unchecked"


def heldout_check(
    run_ds: xr.Dataset,
    records: Sequence[_corpus.Record],
    *,
    allow_overlap: bool = False,
    run: str = "",
) -> dict[str, Any]:
    """Check that ``records`` share no item with the run's sequences; the attrs to record.

    Returns ``{"heldout": DISJOINT | OVERLAP_ALLOWED | UNCHECKED, "heldout_note": ...,
    "heldout_overlap": n}``: disjoint when checked by ``seq_id`` (or by corpus hash when the
    run has no per-sequence labels, which can only show that the corpora are not identical:
    then ``UNCHECKED``).

    Raises
    ------
    ParameterError
        An evaluation item is among the run's sequences (or the corpus is the run's own), and
        ``allow_overlap`` is False.
    """
    what = f"run {run!r}" if run else "the run"
    if SEQ_ID in run_ds.coords and SEQ_LANGUAGE in run_ds.coords:
        seen = set(
            zip(
                (str(x) for x in run_ds[SEQ_LANGUAGE].values),
                (str(x) for x in run_ds[SEQ_ID].values),
                strict=True,
            )
        )
        shared = sorted({(r.language, r.id) for r in records} & seen)
        n_items = len({(r.language, r.id) for r in records})
        if not shared:
            return {
                "heldout": DISJOINT,
                "heldout_note": f"no evaluation item is among the {len(seen)} sequences of {what} "
                "(checked by language and seq_id)",
                "heldout_overlap": 0,
            }
        language, item = shared[0]
        note = (
            f"{len(shared)} of {n_items} evaluation items were also read to identify the neurons "
            f"of {what} (first: language {language!r}, id {item!r})"
        )
    else:
        own = run_ds.attrs.get("corpus_hash")
        if own is None or own != _corpus.corpus_hash(records):
            return {
                "heldout": UNCHECKED,
                "heldout_note": f"{what} has no per-sequence labels (seq_id), so overlap with the "
                "evaluation items cannot be checked; its corpus is not the evaluation data",
                "heldout_overlap": -1,
            }
        shared = [(r.language, r.id) for r in records]
        note = f"the evaluation data is the corpus {what} was extracted from"
    if not allow_overlap:
        raise ParameterError(
            f"{note}; deactivation scored on them is circular: evaluate on held-out items (e.g. "
            "'builtin:evaluate' after extracting 'builtin:identify'), or pass --allow-overlap"
        )
    return {"heldout": OVERLAP_ALLOWED, "heldout_note": note, "heldout_overlap": len(shared)}


__all__ = ["DISJOINT", "OVERLAP_ALLOWED", "UNCHECKED", "heldout_check"]
