"""The ``make bench`` table: targets and verdicts of benchmarks/_table.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _table  # noqa: E402


def test_ratio_target_met_and_not_met() -> None:
    fast = _table.row("x", "fast", 1.5, unit="s", baseline=1.0, target=2.0)
    slow = _table.row("x", "slow", 2.5, unit="s", baseline=1.0, target=2.0)
    assert _table.verdict(fast) == "met"
    assert _table.verdict(slow) == "NOT MET"
    text = _table.format_table([fast, slow])
    assert "<= 2.00x" in text and "NOT MET" in text and "target" in text.splitlines()[0]


def test_value_target_and_lower_bound() -> None:
    quick = _table.row("x", "stability", 20.0, unit="s", target=30.0, target_of="value")
    assert _table.verdict(quick) == "met"
    assert "<= 30.00 s" in _table.format_table([quick])
    gain = _table.row("x", "throughput", 3.0, unit="MB/s", baseline=1.0, target=2, target_op=">=")
    assert _table.verdict(gain) == "met"
    assert _table.verdict({**gain, "ratio": 1.5}) == "NOT MET"


def test_missing_value_and_no_target() -> None:
    assert _table.verdict(_table.row("x", "failed", None, unit="s", baseline=1, target=2)) == (
        "no data"
    )
    assert _table.verdict(_table.row("x", "plain", 1.0, unit="s")) == "-"


def test_bad_target_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="target_op"):
        _table.row("x", "y", 1.0, unit="s", target=1, target_op="<")
    with pytest.raises(ValueError, match="target_of"):
        _table.row("x", "y", 1.0, unit="s", target=1, target_of="baseline")


def test_main_counts_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    rows = [_table.row("x", "a", 1.0, unit="s", baseline=1.0, target=2.0)]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    assert _table.main([str(tmp_path / "a.json"), str(tmp_path / "missing.json")]) == 0
    out = capsys.readouterr().out
    assert "targets met: 1 of 1" in out and "no rows from: missing" in out
