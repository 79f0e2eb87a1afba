"""Which units an extraction planned, and which of them are committed.

An extraction commits its work in units of records (``provenance={"unit": KEY}``, folded into
the run's ``writes``). It records the keys of every unit of the whole corpus in the run's
``planned_units`` attribute when it creates the run, so a run killed before its last unit (and
rolled back by ``repair``) says that it is incomplete instead of passing for a finished one.
Runs without a plan (imports, :meth:`ActivationStore.create_run` without ``planned_units``) are
complete by definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langneurons.errors import IncompleteRunError
from langneurons.store import _attrs

#: Run attribute holding the unit keys an extraction planned (JSON text, see ``_attrs``).
PLANNED_UNITS = "planned_units"


def units_of(writes: Any) -> set[str]:
    """Unit keys in a write log (folded entries, and single entries of older logs)."""
    out: set[str] = set()
    for w in writes or []:
        out.update(w.get("units", []))
        unit = w.get("provenance", {}).get("unit")
        if unit is not None:
            out.add(unit)
    return out


def missing_units(attrs: Mapping[str, Any]) -> tuple[list[str], int] | None:
    """``(planned units not committed, units planned)``, or None for a run without a plan."""
    planned = _attrs.value(attrs, PLANNED_UNITS)
    if not isinstance(planned, list):
        return None
    done = units_of(_attrs.value(attrs, "writes", []))
    return [str(u) for u in planned if u not in done], len(planned)


def incompleteness(attrs: Mapping[str, Any]) -> str | None:
    """``"incomplete: 3 of 6 units committed (e.g. 'sw/0' missing)"``, or None when complete."""
    found = missing_units(attrs)
    if found is None or not found[0]:
        return None
    missing, planned = found
    done = planned - len(missing)
    return f"incomplete: {done} of {planned} units committed (e.g. {missing[0]!r} missing)"


def check_complete(run: str, attrs: Mapping[str, Any]) -> None:
    """Raise IncompleteRunError when the run's extraction has units still to commit."""
    what = incompleteness(attrs)
    if what is not None:
        raise IncompleteRunError(
            f"run {run!r} is {what}; complete it with `langneurons extract ... --resume`, or "
            "pass --allow-incomplete to analyse what is there"
        )
