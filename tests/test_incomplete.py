"""An extraction stopped before its last unit: the run says it is incomplete, analyses refuse it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from langneurons.errors import IncompleteRunError  # noqa: E402
from langneurons.extract import engine  # noqa: E402
from langneurons.extract.engine import extract  # noqa: E402
from langneurons.extract.tiny import tiny_model  # noqa: E402
from langneurons.store import Counts, create_store, decode_attrs, open_store  # noqa: E402

from .conftest import make_counts, run_cli, write_data  # noqa: E402

pytestmark = pytest.mark.requires_torch

COMMON: dict[str, Any] = {"device": "cpu", "dtype": "float32", "unit_size": 2, "progress": False}
# 3 languages x 4 records in units of 2: en/0 en/1 de/0 de/1 zh/0 zh/1
REFUSED = (
    "run 'm/base' is incomplete: 5 of 6 units committed (e.g. 'zh/1' missing); complete it with "
    "the same `langneurons extract` and --resume (it was extracted with --no-sums --max-length "
    "1024 --batch-tokens 4096 --unit-size 2), or pass --allow-incomplete to analyse what is there"
)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model("llama", seed=1, path=tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("data") / "data.jsonl")


def _stopped(
    monkeypatch: pytest.MonkeyPatch, llama: Path, data: Path, store: Path, units: int
) -> None:
    """An extraction that dies while counting unit ``units + 1`` (``units`` are committed)."""
    real = engine.count_unit
    calls = {"n": 0}

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > units:
            raise KeyboardInterrupt  # as a killed process: nothing after this unit
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(engine, "count_unit", dying)
        with pytest.raises(KeyboardInterrupt):
            extract(llama, data, store, "m/base", **COMMON)


def test_stopped_extraction_is_incomplete_until_resumed(
    tmp_path: Path,
    llama: Path,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "s.zarr"
    _stopped(monkeypatch, llama, data, store, units=5)
    assert run_cli(capsys, "repair", store)[0] == 0
    assert open_store(store).committed_units("m/base") == {"en/0", "en/1", "de/0", "de/1", "zh/0"}
    planned = decode_attrs(open_store(store).run_metadata("m/base").to_attrs())
    assert "planned_units" not in planned  # the plan is the run's, not its metadata's

    code, out, _ = run_cli(capsys, "info", store)
    assert code == 0
    assert "  status     incomplete: 5 of 6 units committed (e.g. 'zh/1' missing)\n" in out
    info = open_store(store).info()["runs"]["m/base"]
    assert info["incomplete"] == "incomplete: 5 of 6 units committed (e.g. 'zh/1' missing)"
    assert info["attrs"]["planned_units"] == ["en/0", "en/1", "de/0", "de/1", "zh/0", "zh/1"]

    # an incomplete run is not an invalid one: validate notes it and passes
    code, out, err = run_cli(capsys, "validate", store)
    assert (code, err) == (0, "")
    assert out.startswith(
        "note: run 'm/base': incomplete: 5 of 6 units committed (e.g. 'zh/1' missing)\nok: 1 run(s)"
    )

    code, out, err = run_cli(capsys, "identify", store, "--run", "m/base")
    assert code == 1 and out == ""
    assert err.strip() == f"langneurons: error: {REFUSED}"
    assert open_store(store).results("m/base", "identification") == []
    with pytest.raises(IncompleteRunError, match=r"^run 'm/base' is incomplete: 5 of 6 units"):
        open_store(store).open_run("m/base")
    for args in (["stats", "probability"], ["stats", "tests"]):
        code, _, err = run_cli(capsys, *args, store, "--run", "m/base", "--no-save")
        assert code == 1 and REFUSED in err, (args, err)

    code, out, err = run_cli(capsys, "identify", store, "--run", "m/base", "--allow-incomplete")
    assert code == 0, err
    assert open_store(store).results("m/base", "identification") == ["ternary"]
    partial = open_store(store).open_run("m/base", allow_incomplete=True)
    assert list(partial.language.values) == ["en", "de", "zh"]
    zh_partial = int(partial.n_tokens.sel(language="zh").sum())

    report = extract(llama, data, store, "m/base", resume=True, **COMMON)
    assert report["units_skipped"] == 5 and report["units_done"] == 1
    code, out, _ = run_cli(capsys, "info", store)
    assert code == 0 and "incomplete" not in out
    code, out, err = run_cli(capsys, "validate", store)
    assert (code, err) == (0, "") and "incomplete" not in out
    zh = int(open_store(store).open_run("m/base").n_tokens.sel(language="zh").sum())
    assert 0 < zh_partial < zh
    assert run_cli(capsys, "identify", store, "--run", "m/base", "--name", "full")[0] == 0


def test_shards_plan_the_whole_corpus(tmp_path: Path, llama: Path, data: Path) -> None:
    store = tmp_path / "s.zarr"
    extract(llama, data, store, "m/base", shard="0/2", **COMMON)
    with pytest.raises(IncompleteRunError, match=r"3 of 6 units committed \(e.g. 'en/1' missing\)"):
        open_store(store).open_run("m/base")
    extract(llama, data, store, "m/base", shard="1/2", **COMMON)
    open_store(store).open_run("m/base")  # complete


def test_languages_subset_leaves_the_run_incomplete(
    tmp_path: Path, llama: Path, data: Path
) -> None:
    store = tmp_path / "s.zarr"
    extract(llama, data, store, "m/base", languages=["en", "zh"], **COMMON)
    with pytest.raises(IncompleteRunError, match=r"4 of 6 units committed \(e.g. 'de/0' missing\)"):
        open_store(store).open_run("m/base")


def test_runs_without_a_plan_are_complete(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr")
    store.create_run("a", n_layers=3, n_neurons=7, counts=make_counts(["en", "de"]))
    store.open_run("a")
    assert open_store(tmp_path / "s.zarr").notes() == []
    assert "incomplete" not in store.info()["runs"]["a"]


def test_create_run_with_a_plan(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr")
    store.create_run("a", n_layers=3, n_neurons=7, languages=["en"], planned_units=["u1", "u2"])
    with pytest.raises(IncompleteRunError, match=r"0 of 2 units committed \(e.g. 'u1' missing\)"):
        store.open_run("a")
    one: Counts = make_counts(["en"])
    store.merge_counts("a", one, provenance={"unit": "u1"})
    assert store.notes("a") == ["run 'a': incomplete: 1 of 2 units committed (e.g. 'u2' missing)"]
    store.merge_counts("a", make_counts(["en"], seed=1), provenance={"unit": "u2"})
    store.open_run("a")
    with pytest.raises(Exception, match="planned_units holds a unit key twice"):
        store.create_run("b", n_layers=3, n_neurons=7, planned_units=["u", "u"])
