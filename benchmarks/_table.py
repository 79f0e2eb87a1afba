"""One table for ``make bench``: the headline rows every benchmark script writes with ``--json``.

Each script under ``benchmarks/`` (except ``_*.py`` helpers like this one) takes
``--json PATH`` and writes there a list of rows::

    {"benchmark": "scale", "measure": "...", "unit": "s", "value": 12.3,
     "baseline": 10.1, "ratio": 1.22, "peak_mib": 2345.0, "peak_of": "VmHWM", "note": "..."}

``ratio`` is always ``value / baseline`` (lower is better for time and memory), measured in the
same run of the script as its baseline; ``baseline``, ``ratio`` and ``peak_mib`` may be null.
A row may carry a ``target``: ``{"of": "ratio" | "value", "op": "<=" | ">=", "limit": x}``
(e.g. the ratio at most 2, or the value at most 30 s); the table shows it and whether the row
met it (``met``, ``NOT MET``, ``no data`` when the value is missing, ``-`` without a target).
``peak_of`` says what the peak is: ``VmHWM`` (peak resident set of the measuring process),
``tracemalloc`` (extra peak traced during the call) or ``ru_maxrss``.

Usage::

    python benchmarks/_table.py OUT1.json OUT2.json ...   # print the rows of all files
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
from pathlib import Path
from typing import Any

COLUMNS = (
    "benchmark",
    "measure",
    "unit",
    "value",
    "baseline",
    "ratio",
    "target",
    "verdict",
    "peak MiB",
    "note",
)


def row(
    benchmark: str,
    measure: str,
    value: float | None,
    *,
    unit: str,
    baseline: float | None = None,
    peak_mib: float | None = None,
    peak_of: str | None = None,
    note: str = "",
    target: float | None = None,
    target_op: str = "<=",
    target_of: str = "ratio",
) -> dict[str, Any]:
    """One headline row; ``ratio = value / baseline`` when both are there.

    ``target`` (with ``target_op`` ``"<="`` or ``">="`` and ``target_of`` ``"ratio"`` or
    ``"value"``) is the row's goal, e.g. ``target=2.0`` for "at most twice the baseline".
    """
    if target_op not in ("<=", ">="):
        raise ValueError(f"target_op must be '<=' or '>=', got {target_op!r}")
    if target_of not in ("ratio", "value"):
        raise ValueError(f"target_of must be 'ratio' or 'value', got {target_of!r}")
    ratio = None
    if value is not None and baseline is not None and baseline != 0:
        ratio = value / baseline
    return {
        "benchmark": benchmark,
        "measure": measure,
        "unit": unit,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "peak_mib": peak_mib,
        "peak_of": peak_of,
        "note": note,
        "target": None
        if target is None
        else {"of": target_of, "op": target_op, "limit": float(target)},
    }


def verdict(r: dict[str, Any]) -> str:
    """``met``, ``NOT MET``, ``no data`` (target but no measured number) or ``-`` (no target)."""
    target = r.get("target")
    if not target:
        return "-"
    x = r.get(target["of"])
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "no data"
    ok = x <= target["limit"] if target["op"] == "<=" else x >= target["limit"]
    return "met" if ok else "NOT MET"


def _target_text(r: dict[str, Any]) -> str:
    """The target as a short cell: ``<= 2x`` for a ratio, ``<= 30 s`` for a value."""
    target = r.get("target")
    if not target:
        return "-"
    limit = _number(target["limit"])
    unit = "x" if target["of"] == "ratio" else f" {r.get('unit', '')}".rstrip()
    return f"{target['op']} {limit}{unit}"


def write_rows(path: Path | None, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as JSON to ``path`` (nothing when ``path`` is None)."""
    if path is not None:
        path.write_text(json.dumps(rows, indent=1) + "\n")


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (``VmHWM``; ``ru_maxrss`` without /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _number(x: float | None) -> str:
    """A compact rendering: 3 significant digits below 100, integers above."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """An aligned text table of the rows."""
    peak_codes = {"VmHWM": "rss", "ru_maxrss": "rss", "tracemalloc": "traced"}
    cells = []
    for r in rows:
        peak = _number(r.get("peak_mib"))
        if r.get("peak_mib") is not None and r.get("peak_of"):
            peak += f" {peak_codes.get(r['peak_of'], r['peak_of'])}"
        ratio = _number(r.get("ratio"))
        cells.append(
            (
                str(r.get("benchmark", "")),
                str(r.get("measure", "")),
                str(r.get("unit", "")),
                _number(r.get("value")),
                _number(r.get("baseline")),
                ratio if ratio == "-" else ratio + "x",
                _target_text(r),
                verdict(r),
                peak,
                str(r.get("note", "")),
            )
        )
    widths = [max(len(c[i]) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS))]
    right = {3, 4, 5, 6, 8}

    def line(values: tuple[str, ...]) -> str:
        parts = [
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [line(COLUMNS), line(tuple("-" * w for w in widths))]
    out += [line(c) for c in cells]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print one table of the rows in the given JSON files (missing files are reported)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    missing = []
    for path in args.files:
        if not path.is_file():
            missing.append(path.stem)
            continue
        rows += json.loads(path.read_text())
    print("\n== all benchmarks (ratio = value / baseline, both measured in the same run)")
    print(format_table(rows))
    print(
        "peak MiB: rss = peak resident set (VmHWM) of the measuring process; "
        "traced = extra peak traced by tracemalloc during the call"
    )
    targets = [r for r in rows if r.get("target")]
    met = sum(verdict(r) == "met" for r in targets)
    print(f"targets met: {met} of {len(targets)}")
    if missing:
        print(f"no rows from: {', '.join(missing)} (the script failed or wrote none)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
