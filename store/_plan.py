"""Which units an extraction planned, and which of them are committed (the run's write log).

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
from langneurons.store import _attrs, schema
from langneurons.store._counts import Counts

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


def resume_options(attrs: Mapping[str, Any]) -> str:
    """The ``langneurons extract`` options the run was extracted with that a resume must repeat
    (from its provenance; empty when it records none)."""
    provenance = _attrs.value(attrs, "provenance", {})
    identity = provenance.get("identity") if isinstance(provenance, dict) else None
    if not isinstance(identity, dict):
        return ""
    out = []
    if identity.get("per_sequence"):
        out.append("--per-sequence")
    if identity.get("sums") is False:
        out.append("--no-sums")
    if identity.get("chat_template"):
        out.append("--chat-template")
    for key in ("max_length", "batch_tokens", "unit_size"):
        if isinstance(identity.get(key), int):
            out.append(f"--{key.replace('_', '-')} {identity[key]}")
    return " ".join(out)


def check_complete(run: str, attrs: Mapping[str, Any]) -> None:
    """Raise IncompleteRunError when the run's extraction has units still to commit."""
    what = incompleteness(attrs)
    if what is not None:
        options = resume_options(attrs)
        same = f" (it was extracted with {options})" if options else ""
        raise IncompleteRunError(
            f"run {run!r} is {what}; complete it with the same `langneurons extract` and "
            f"--resume{same}, or pass --allow-incomplete to analyse what is there"
        )


def write_record(action: str, counts: Counts, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of a run's ``writes`` attribute: what was written, when, from where."""
    return {
        "time": schema.now_iso(),
        "action": action,
        "languages": list(counts.languages),
        "sequences": len(counts.seq_language or []),
        "provenance": dict(provenance),
    }


def log_write(writes: list[Any], record: dict[str, Any]) -> None:
    """Append a write to a run's log, folding a run of unit writes into one entry.

    Writes with ``provenance={"unit": KEY, ...}`` (extraction commits a unit at a time) that
    follow one another with the same action and other provenance become a single entry with
    ``units`` (the keys in commit order), ``first`` and ``time`` (of the first and the last),
    the union of their ``languages`` and the sum of their ``sequences``, so the log grows by
    a key, not by an entry, per unit.
    """
    provenance = dict(record["provenance"])
    unit = provenance.pop("unit", None)
    if unit is None:
        writes.append(record)
        return
    last = writes[-1] if writes else None
    if (
        isinstance(last, dict)
        and "units" in last
        and last.get("action") == record["action"]
        and last.get("provenance") == provenance
    ):
        new = [x for x in record["languages"] if x not in last["languages"]]
        writes[-1] = {  # a new dict: the log's entries may be shared with the run's metadata
            **last,
            "units": [*last["units"], unit],
            "languages": [*last["languages"], *new],
            "sequences": int(last.get("sequences", 0)) + int(record["sequences"]),
            "time": record["time"],
        }
        return
    writes.append({**record, "provenance": provenance, "first": record["time"], "units": [unit]})
