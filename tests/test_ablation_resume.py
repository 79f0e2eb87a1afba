"""Ablation is resumable per (deactivated set, language) unit, and resumes bit for bit; it keeps
per-item NLL and refuses evaluation items the neurons were identified from."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from langneurons.analysis import identify  # noqa: E402
from langneurons.errors import ParameterError, RunExistsError  # noqa: E402
from langneurons.extract import ablation  # noqa: E402
from langneurons.extract.ablation import ablate  # noqa: E402
from langneurons.extract.engine import extract  # noqa: E402
from langneurons.extract.tiny import tiny_model  # noqa: E402
from langneurons.store import open_store  # noqa: E402

from .conftest import run_cli, write_data, write_heldout  # noqa: E402

pytestmark = pytest.mark.requires_torch

LANGS = ["en", "de"]  # evaluated: labels none, en, de; 1 control -> 3 * 2 + 2 * 2 = 10 units
UNITS = 10
OPTIONS: dict[str, Any] = {
    "checkpoint_seconds": 0,  # save after every unit, so tests can stop after any of them
    "languages": LANGS,
    "controls": 1,
    "seed": 3,
    "batch_tokens": 64,
    "device": "cpu",
    "dtype": "float32",
    "progress": False,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model, its identification data, held-out evaluation data (``data``), and a store
    with a run (per-sequence labels), an identification and a finished ablation ``ref``."""
    root = tmp_path_factory.mktemp("ablation")
    model = tiny_model("llama", seed=1, path=root / "model")
    corpus = write_data(root / "corpus.jsonl", n_items=2)
    data = write_heldout(root / "data.jsonl", n_items=2)
    store = root / "store.zarr"
    extract(model, corpus, store, "r", device="cpu", dtype="float32", progress=False,
            per_sequence=True)  # fmt: skip
    opened = open_store(store, mode="r+")
    opened.save_result("r", "identification", "lape", identify(opened.open_run("r"), "lape",
                                                               top_rate=0.1))  # fmt: skip
    ablate(model, store, "r", "lape", data, name="ref", **OPTIONS)
    return {"model": model, "data": data, "corpus": corpus, "store": store}


@pytest.fixture
def store(setup: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the module's store, for a test to change."""
    copy = tmp_path / "store.zarr"
    shutil.copytree(setup["store"], copy)
    return copy


def _reference(setup: dict[str, Path]) -> xr.Dataset:
    return open_store(setup["store"]).open_result("r", "ablation", "ref").load()


def assert_bit_identical(got: xr.Dataset, want: xr.Dataset) -> None:
    """Every variable and coordinate byte for byte; attributes equal but for the save stamps."""
    assert sorted(got.variables) == sorted(want.variables)
    for name in want.variables:
        a, b = got[name].values, want[name].values
        assert a.shape == b.shape, name
        if a.dtype.kind in "OU" or b.dtype.kind in "OU":  # labels: object in memory, str read
            assert [str(x) for x in a.tolist()] == [str(x) for x in b.tolist()], name
        else:
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    # where and when it was saved; result_path is on the returned Dataset only, not on disk
    stamps = ("result_saved", "result_token", "result_name", "result_kind", "result_path")
    strip = lambda attrs: {k: v for k, v in attrs.items() if k not in stamps}  # noqa: E731
    assert json.dumps(strip(got.attrs), sort_keys=True, default=str) == json.dumps(
        strip(want.attrs), sort_keys=True, default=str
    )


def _counting(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> list[int]:
    """Count the units evaluated; raise inside the one numbered ``fail_at`` (1-based)."""
    calls: list[int] = []
    original = ablation._summed_nll

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("interrupted")
        return original(*args, **kwargs)

    monkeypatch.setattr(ablation, "_summed_nll", counted)
    return calls


def _interrupt(
    setup: dict[str, Path], store: Path, after: int, monkeypatch: pytest.MonkeyPatch, **kw: Any
) -> None:
    """Run ablation ``x`` until it fails inside unit ``after + 1``."""
    with monkeypatch.context() as patch:
        _counting(patch, fail_at=after + 1)
        with pytest.raises(RuntimeError, match="interrupted"):
            ablate(setup["model"], store, "r", "lape", setup["data"], name="x", **{**OPTIONS, **kw})


@pytest.mark.parametrize("after", [1, 5, UNITS - 1])
def test_interrupted_and_resumed_is_bit_exact(
    setup: dict[str, Path], store: Path, after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt(setup, store, after, monkeypatch)
    opened = open_store(store)
    assert opened.results("r", "ablation") == ["ref", "x"]
    partial = opened.open_result("r", "ablation", "x")
    assert "nll" not in partial and partial.attrs["status"].startswith("partial")
    assert (partial.attrs["units_done"], partial.attrs["units_total"]) == (after, UNITS)
    assert int(partial.unit_done.sum()) == after
    # the finished units' per-item sums travel with the partial result, and only theirs
    done_items = int(partial.unit_item_nll.notnull().sum().values)
    assert done_items == after * 2  # two items per language
    # without --resume it is refused, and nothing changes
    with pytest.raises(
        RunExistsError,
        match=rf"^ablation 'x' of run 'r' was interrupted after {after} of {UNITS} units; pass "
        r"--resume to complete it, or choose another --name$",
    ):
        ablate(setup["model"], store, "r", "lape", setup["data"], name="x", **OPTIONS)
    calls = _counting(monkeypatch)
    got = ablate(setup["model"], store, "r", "lape", setup["data"], name="x", resume=True,
                 **OPTIONS)  # fmt: skip
    assert len(calls) == UNITS - after  # only the units still to do
    assert got.attrs["result_path"] == "r/ablation/x"  # the CLI prints it
    want = _reference(setup)
    assert_bit_identical(got, want)
    saved = open_store(store).open_result("r", "ablation", "x").load()
    assert_bit_identical(saved, want)
    # the finished result replaced the partial one
    assert open_store(store).results("r", "ablation") == ["ref", "x"]
    assert "unit_done" not in saved
    assert open_store(store).validate() == []


def test_a_finished_ablation_is_refused_or_reused(
    setup: dict[str, Path], store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(
        RunExistsError,
        match=r"^ablation 'ref' of run 'r' already exists; choose another --name, or pass "
        r"--resume to reuse it$",
    ):
        ablate(setup["model"], store, "r", "lape", setup["data"], name="ref", **OPTIONS)
    calls = _counting(monkeypatch)
    got = ablate(setup["model"], store, "r", "lape", setup["data"], name="ref", resume=True,
                 **OPTIONS)  # fmt: skip
    assert calls == []
    assert got.attrs["result_path"] == "r/ablation/ref"
    assert "result_path" not in _reference(setup).attrs
    assert_bit_identical(got, _reference(setup))
    with pytest.raises(ParameterError, match=r"made with a different seed \(seed 3 != 4\)"):
        ablate(setup["model"], store, "r", "lape", setup["data"], name="ref", resume=True,
               **{**OPTIONS, "seed": 4})  # fmt: skip


def _other_data(setup: dict[str, Path]) -> Path:
    return write_heldout(setup["data"].parent / "other.jsonl", n_items=1)


# (label, changed option, pinned message)
CHANGED: list[tuple[str, Callable[[dict[str, Path]], dict[str, Any]], str]] = [
    ("seed", lambda s: {"seed": 4}, r"a different seed \(seed 3 != 4\)"),
    ("controls", lambda s: {"controls": 2}, r"a different controls \(controls 1 != 2\)"),
    ("data", lambda s: {"data": _other_data(s)},
     r"a different data \(corpus_hash 'sha256:[0-9a-f]+' != 'sha256:[0-9a-f]+'\)"),
    ("languages", lambda s: {"languages": ["en"]},
     r"a different set of evaluated languages \(evaluated \['en', 'de'\] != \['en'\]\)"),
    ("identification", lambda s: {"identification": "lape2"},
     r"a different identification \(identification 'lape' != 'lape2'\)"),
    ("batch tokens", lambda s: {"batch_tokens": 32},
     r"a different batch_tokens \(batch_tokens 64 != 32\)"),
    ("dtype", lambda s: {"dtype": "bfloat16"},
     r"a different dtype \(dtype 'float32' != 'bfloat16'\)"),
    ("allow overlap", lambda s: {"allow_overlap": True},
     r"a different allow_overlap \(allow_overlap False != True\)"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "change", "message"), CHANGED, ids=[c[0] for c in CHANGED])
def test_resume_with_other_parameters_is_refused(
    setup: dict[str, Path],
    store: Path,
    monkeypatch: pytest.MonkeyPatch,
    label: str,
    change: Callable[[dict[str, Path]], dict[str, Any]],
    message: str,
) -> None:
    _interrupt(setup, store, 3, monkeypatch)
    opened = open_store(store, mode="r+")
    other = identify(opened.open_run("r"), "lape", top_rate=0.2)
    opened.save_result("r", "identification", "lape2", other)
    kwargs = {**OPTIONS, "data": setup["data"], "identification": "lape", **change(setup)}
    data, ident = kwargs.pop("data"), kwargs.pop("identification")
    with pytest.raises(ParameterError) as info:
        ablate(setup["model"], store, "r", ident, data, name="x", resume=True, **kwargs)
    text = str(info.value)
    assert re.fullmatch(
        rf"ablation 'x' of run 'r' was made with {message}; resume it with the same "
        r"parameters, or choose another --name",
        text,
    ), text
    partial = open_store(store).open_result("r", "ablation", "x")
    assert partial.attrs["units_done"] == 3  # nothing changed


def test_parameters_are_checked_before_the_model_is_loaded(
    setup: dict[str, Path], store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt(setup, store, 2, monkeypatch)
    missing = setup["model"].parent / "no-such-model"
    with pytest.raises(ParameterError, match=r"a different seed \(seed 3 != 5\)"):
        ablate(missing, store, "r", "lape", setup["data"], name="x", resume=True,
               **{**OPTIONS, "seed": 5})  # fmt: skip


def test_memory_store_resumes(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url = "memory://ablation-resume.zarr"
    extract(setup["model"], setup["corpus"], url, "r", device="cpu", dtype="float32",
            progress=False, per_sequence=True)  # fmt: skip
    opened = open_store(url, mode="r+")
    opened.save_result("r", "identification", "lape", identify(opened.open_run("r"), "lape",
                                                               top_rate=0.1))  # fmt: skip
    _interrupt(setup, url, 4, monkeypatch)  # type: ignore[arg-type]
    assert open_store(url).results("r", "ablation") == ["x"]
    assert "unit_done" in open_store(url).open_result("r", "ablation", "x")
    got = ablate(setup["model"], url, "r", "lape", setup["data"], name="x", resume=True,
                 **OPTIONS)  # fmt: skip
    want = _reference(setup)
    assert_bit_identical(got, want)
    assert open_store(url).results("r", "ablation") == ["x"]


def test_progress_counts_the_units_still_to_do(
    setup: dict[str, Path], store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt(setup, store, 6, monkeypatch)
    seen: dict[str, Any] = {"updates": 0, "notes": []}

    class Task:
        def update(self, n: float = 1) -> None:
            seen["updates"] += n

        def note(self, status: str) -> None:
            seen["notes"].append(status)

    @contextlib.contextmanager
    def fake(desc: str, total: float | None = None, unit: str = "it") -> Any:
        seen.update(desc=desc, total=total, unit=unit)
        yield Task()

    monkeypatch.setattr("langneurons.extract.engine.progress", fake)
    ablate(setup["model"], store, "r", "lape", setup["data"], name="x", resume=True,
           **{**OPTIONS, "progress": None})  # fmt: skip
    assert (seen["desc"], seen["unit"]) == ("ablate", "tok")
    assert seen["total"] == seen["updates"] > 0
    # the last 4 units: de's set on en and de, then de's control on en and de
    assert seen["notes"] == [
        "off de, on en (unit 1/4)",
        "off de, on de (unit 2/4)",
        "off de control 1/1, on en (unit 3/4)",
        "off de control 1/1, on de (unit 4/4)",
    ]


# ------------------------------------------------------------------ a real kill
_KILL_AFTER = """
import os, signal, sys
from langneurons.cli import main
from langneurons.store import RunWriter

after = int(sys.argv[1])
original = RunWriter.save_result
saved = []


def save_result(self, kind, name, result, **kwargs):
    path = original(self, kind, name, result, **kwargs)
    if "unit_done" in result:  # a partial result
        saved.append(name)
        if len(saved) == after:
            os.kill(os.getpid(), signal.SIGKILL)
    return path


RunWriter.save_result = save_result
sys.exit(main(sys.argv[2:]))
"""


def test_killed_process_resumes_bit_exact(
    setup: dict[str, Path], store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--quiet", "ablate", "--model", setup["model"], "--store", store, "--run", "r",
        "--identification", "lape", "--data", setup["data"], "--languages", ",".join(LANGS),
        "--controls", "1", "--seed", "3", "--batch-tokens", "64", "--device", "cpu",
        "--dtype", "float32", "--name", "x", "--checkpoint-seconds", "0",
    ]  # fmt: skip
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_AFTER, "4", *map(str, args)], capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = open_store(store).open_result("r", "ablation", "x")
    assert partial.attrs["units_done"] == 4
    code, _, err = run_cli(capsys, *args)
    assert code == 1
    assert err.strip() == (
        "langneurons: error: ablation 'x' of run 'r' was interrupted after 4 of 10 units; pass "
        "--resume to complete it, or choose another --name"
    )
    code, out, err = run_cli(capsys, *args, "--resume")
    assert code == 0, err
    assert "ablation saved at r/ablation/x" in out
    assert "held-out evaluation: disjoint (no evaluation item is among the 6 sequences" in out
    assert_bit_identical(open_store(store).open_result("r", "ablation", "x").load(),
                         _reference(setup))  # fmt: skip


# ------------------------------------------------------------------ per-item NLL, held out
def test_per_item_nll_adds_up_to_the_mean_per_token(setup: dict[str, Path]) -> None:
    ref = _reference(setup)
    assert ref.attrs["heldout"] == "disjoint" and ref.attrs["heldout_overlap"] == 0
    assert ref.sizes["item"] == 2 * len(LANGS)
    assert ref.item_language.values.tolist() == ["en", "en", "de", "de"]
    assert ref.item_id.values.tolist() == ["e0", "e1", "e0", "e1"]
    assert (ref.item_tokens.values > 0).all()
    for lang in LANGS:
        on = (ref.item_language == lang).values
        tokens = ref.item_tokens.values[on].sum()
        mean = ref.item_nll.values[:, on].sum(axis=1) / tokens
        np.testing.assert_allclose(mean, ref.nll.sel(evaluated=lang).values, rtol=1e-6)
        control = ref.control_item_nll.values[1:, on].sum(axis=1) / tokens
        np.testing.assert_allclose(
            control, ref.control_nll.sel(evaluated=lang).values[1:], rtol=1e-6
        )
    assert np.isnan(ref.control_item_nll.sel(deactivated="none").values).all()


def _old_summed_nll(loaded: Any, encoded: list[Any], batch_tokens: int) -> tuple[float, int]:
    """The total as it was computed before per-record sums were kept (the oracle)."""
    from langneurons.extract.engine import bucket_batches, pad_batch

    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in bucket_batches([e.length for e in encoded], batch_tokens):
            ids, mask = pad_batch([encoded[i] for i in batch], 0)
            target = mask[..., 1].bool()
            target[:, 0] = False
            logits = loaded.model(input_ids=ids, attention_mask=mask.sum(-1).long()).logits
            chosen = target[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1][chosen].float(), ids[:, 1:][chosen], reduction="sum"
            )
            total += float(nll.double())
            count += int(chosen.sum())
    return total, count


def test_total_is_unchanged_and_items_are_the_records(setup: dict[str, Path]) -> None:
    from langneurons.extract.engine import encode, load_model, load_records

    loaded = load_model(setup["model"], device="cpu", dtype="float32")
    loaded.tokenizer.pad_token_id = 0
    records = load_records(setup["data"])
    encoded = [encode(r, loaded.tokenizer, chat_template=False, max_length=1024) for r in records]
    scored = ablation._summed_nll(loaded, encoded, batch_tokens=24)
    total, count = _old_summed_nll(loaded, encoded, 24)
    assert scored.count == count
    assert abs(scored.total - total) <= 1e-12 * abs(total)
    np.testing.assert_allclose(scored.item_sum.sum(), total, rtol=1e-6)
    assert scored.item_count.tolist() == [ablation.scored_tokens(e) for e in encoded]
    # one record at a time gives the same per-record sums (batching moves nothing between rows)
    alone = [ablation._summed_nll(loaded, [e], batch_tokens=24).item_sum[0] for e in encoded]
    np.testing.assert_allclose(scored.item_sum, alone, rtol=1e-5)


def test_overlapping_evaluation_is_refused_before_the_model_loads(
    setup: dict[str, Path], store: Path
) -> None:
    missing = setup["model"].parent / "no-such-model"  # never loaded: the check comes first
    with pytest.raises(
        ParameterError,
        match=r"^4 of 4 evaluation items were also read to identify the neurons of run 'r' "
        r"\(first: language 'de', id 'q0'\); deactivation scored on them is circular: .* or pass "
        r"--allow-overlap$",
    ):
        ablate(missing, store, "r", "lape", setup["corpus"], name="circular", **OPTIONS)
    assert open_store(store).results("r", "ablation") == ["ref"]  # nothing saved
    got = ablate(setup["model"], store, "r", "lape", setup["corpus"], name="circular",
                 allow_overlap=True, **OPTIONS)  # fmt: skip
    assert got.attrs["heldout"] == "overlap allowed" and got.attrs["heldout_overlap"] == 4
    assert got.attrs["allow_overlap"] is True


def test_overlap_via_cli_exits_non_zero_and_saves_nothing(
    setup: dict[str, Path], store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "ablate", "--model", setup["model"], "--store", store, "--run", "r", "--identification",
        "lape", "--data", setup["corpus"], "--controls", "1", "--device", "cpu", "--name", "c",
    ]  # fmt: skip
    code, _, err = run_cli(capsys, *map(str, args))
    assert code != 0
    assert err.strip() == (
        "langneurons: error: 6 of 6 evaluation items were also read to identify the neurons of "
        "run 'r' (first: language 'de', id 'q0'); deactivation scored on them is circular: "
        "evaluate on held-out items (e.g. 'builtin:evaluate' after extracting "
        "'builtin:identify'), or pass --allow-overlap"
    )
    assert open_store(store).results("r", "ablation") == ["ref"]


def test_a_partial_ablation_without_item_values_is_not_resumed(
    setup: dict[str, Path], store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt(setup, store, 2, monkeypatch)
    opened = open_store(store, mode="r+")
    old = opened.open_result("r", "ablation", "x").load().drop_vars("unit_item_nll")
    opened.save_result("r", "ablation", "x", old)
    with pytest.raises(
        ParameterError,
        match=r"^ablation 'x' of run 'r' was interrupted before per-item NLL was stored, so it "
        r"cannot be completed; ablate again under another --name$",
    ):
        ablate(setup["model"], store, "r", "lape", setup["data"], name="x", resume=True,
               **OPTIONS)  # fmt: skip


def test_an_empty_set_is_not_evaluated_again(
    setup: dict[str, Path], store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A language whose mask is empty (so are its controls) reuses the unablated values: the
    forward pass it would run is the unablated one, bit for bit."""
    opened = open_store(store, mode="r+")
    lape = opened.open_result("r", "identification", "lape").load()
    mask = lape["mask"].copy()
    mask.loc[{"language": "de"}] = False
    opened.save_result("r", "identification", "no-de", lape.assign(mask=mask))
    calls = _counting(monkeypatch)
    out = ablate(setup["model"], store, "r", "no-de", setup["data"], name="e", **OPTIONS)
    assert len(calls) == UNITS - 2 * 2  # de and its control, on en and de
    none = out["nll"].sel(deactivated="none").values
    assert out["nll"].sel(deactivated="de").values.tobytes() == none.tobytes()
    assert (out["control_nll"].sel(deactivated="de").values == none[:, None]).all()
    assert int(out["n_neurons"].sel(deactivated="de")) == 0
    ref = _reference(setup)  # the other rows are those of the full ablation
    assert out["nll"].sel(deactivated="en").values.tobytes() == (
        ref["nll"].sel(deactivated="en").values.tobytes()
    )
    # the unablated pass is deterministic: evaluating "none" again gives the same bytes
    assert out["nll"].sel(deactivated="none").values.tobytes() == (
        ref["nll"].sel(deactivated="none").values.tobytes()
    )
