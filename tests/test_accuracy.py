"""Accuracy-based deactivation end to end: the panels, the scorer against known truth, resume,
the CLI and its refusals.

The tests use a tiny random model (whose answers are noise) and, to check the panels and the
scorer against known truth, a fake generator that answers right unless given neurons are off.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from langneurons.analysis.accuracy import accuracy_effects
from langneurons.errors import InputFormatError, ParameterError
from langneurons.extract.corpus import builtin_corpus

from .conftest import run_cli

# --------------------------------------------------------------------------- end to end
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from langneurons.analysis import identify  # noqa: E402
from langneurons.extract import accuracy  # noqa: E402
from langneurons.extract.accuracy import ablate_accuracy, check_panels  # noqa: E402
from langneurons.extract.corpus import write_records  # noqa: E402
from langneurons.extract.engine import extract  # noqa: E402
from langneurons.extract.tiny import tiny_model  # noqa: E402
from langneurons.store import open_store  # noqa: E402

LANGS = ["en", "de"]
EN_SPECIFIC, DE_SPECIFIC, RELATED, GENERAL = [0, 1, 2], [3, 4, 5], [0, 1], [2]


def _identification(n_layers: int, n_neurons: int) -> xr.Dataset:
    """A ternary identification with known sets: specific en (layer 0: 0-2), de (layer 0:
    3-5), related to both (layer 1: 0-1), general (layer 1: 2, and the last neuron, which is
    general without being selected)."""
    mask = np.zeros((2, n_layers, n_neurons), bool)
    types = np.full((n_layers, n_neurons), "none", dtype=object)
    mask[0, 0, EN_SPECIFIC] = mask[1, 0, DE_SPECIFIC] = True
    types[0, EN_SPECIFIC + DE_SPECIFIC] = "specific"
    mask[:, 1, RELATED] = True
    types[1, RELATED] = "related"
    mask[:, 1, GENERAL] = True
    types[1, GENERAL] = "general"
    general = np.zeros((n_layers, n_neurons), bool)
    general[1, GENERAL] = True
    general[1, n_neurons - 1] = True  # above tau everywhere but not selected: general too
    return xr.Dataset(
        {
            "mask": (("language", "layer", "neuron"), mask),
            "neuron_type": (("layer", "neuron"), types.astype(str)),
            "general": (("layer", "neuron"), general),
        },
        coords={"language": LANGS},
        attrs={"method": "ternary"},
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model, a run on the identification part (en, de), a known ternary
    identification ``known`` and a real one ``lape`` (not ternary)."""
    root = tmp_path_factory.mktemp("accuracy")
    model = tiny_model("llama", seed=1, path=root / "model")
    data = root / "identify.jsonl"
    write_records(data, builtin_corpus(LANGS, part="identify"))
    store = root / "store.zarr"
    extract(model, data, store, "r", device="cpu", dtype="float32", per_sequence=True,
            progress=False)  # fmt: skip
    opened = open_store(store, mode="r+")
    run = opened.open_run("r")
    opened.save_result(
        "r", "identification", "known", _identification(run.sizes["layer"], run.sizes["neuron"])
    )
    opened.save_result("r", "identification", "lape", identify(run, "lape", top_rate=0.1))
    no_answer = root / "no-answer.jsonl"
    rows = [{"id": "a", "language": "en", "prompt": "Hi?", "response": "Hello."}]
    no_answer.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {"root": root, "model": model, "store": store, "no_answer": no_answer}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[dict[int, np.ndarray]]:
    """Answer every item with its reference response unless: en's specific neurons are off
    (en items answered in German), de's are off (de items get a wrong number), or the general
    neuron is off (every item wrong)."""
    off: list[dict[int, np.ndarray]] = [{}]
    seen: list[dict[int, np.ndarray]] = []

    @contextlib.contextmanager
    def deactivate(loaded: Any, neurons: dict[int, np.ndarray]) -> Iterator[None]:
        off[0] = neurons
        seen.append(neurons)
        yield
        off[0] = {}

    def has(layer: int, index: list[int]) -> bool:
        return set(index) <= set(np.asarray(off[0].get(layer, [])).tolist())

    german = {r.id: r.response for r in builtin_corpus(["de"], part="evaluate")}

    def generate_answers(loaded: Any, records: Any, **kwargs: Any) -> list[str]:
        out = []
        for r in records:
            if has(1, GENERAL) or (r.language == "de" and has(0, DE_SPECIFIC)):
                out.append("Das ist 999.")
            elif r.language == "en" and has(0, EN_SPECIFIC):
                out.append(german[r.id])
            else:
                out.append(r.response)
        return out

    monkeypatch.setattr(accuracy, "deactivate", deactivate)
    monkeypatch.setattr(accuracy, "generate_answers", generate_answers)
    return seen


OPTIONS: dict[str, Any] = {"device": "cpu", "dtype": "float32", "progress": False}


def test_panels_and_scores_follow_the_known_truth(
    setup: dict[str, Path], fake: list[dict[int, np.ndarray]]
) -> None:
    ds = ablate_accuracy(
        setup["model"], setup["store"], "r", "known", "builtin:evaluate", languages=LANGS,
        controls=2, name="fake", **OPTIONS,
    )  # fmt: skip
    assert ds.attrs["kind"] == "accuracy" and ds.attrs["heldout"] == "disjoint"
    assert ds["baseline_correct"].values.all()
    # + general: the identification's general variable (2 neurons), not only selected ones
    assert ds["n_neurons"].values[:, :, 0].tolist() == [[3, 3], [5, 5], [7, 7]]
    ef = accuracy_effects(ds)
    drop = ef["drop"].values  # [panel, deactivated, evaluated]
    assert drop[0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert drop[1].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert drop[2].tolist() == [[1.0, 1.0], [1.0, 1.0]]  # the general neuron hurts everyone
    spec = ds.sel(panel="specific", variant=0)
    en = spec.item_language == "en"
    # en's set off: en answered in German, right number; de's set off: wrong number in German
    assert spec["number_ok"].sel(deactivated="en").values[en.values].all()
    assert not spec["language_ok"].sel(deactivated="en").values[en.values].any()
    assert set(spec["detected"].sel(deactivated="en").values[en.values]) == {"de"}
    assert not spec["number_ok"].sel(deactivated="de").values[~en.values].any()
    # random sets of the same size miss the specific neurons (a control of a larger panel
    # may hit the general neuron, which is outside the set it imitates)
    assert (ef["control_drop"].values[0] == 0).all()
    assert ef["dominance"].values[0].tolist() == [1.0, 1.0]
    assert ef["pvalue_control"].values[0].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert ef.attrs["inference"] == "descriptive"
    back = open_store(setup["store"]).open_result("r", "ablation", "fake")
    assert back["text"].values.tolist() == ds["text"].values.tolist()


def test_an_interrupted_run_resumes_to_the_same_result(
    setup: dict[str, Path], fake: list[dict[int, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs: dict[str, Any] = {"languages": LANGS, "controls": 1, "panels": ["specific"],
                              "checkpoint_seconds": 0, **OPTIONS}  # fmt: skip
    args = (setup["model"], setup["store"], "r", "known", "builtin:evaluate")
    whole = ablate_accuracy(*args, name="whole", **kwargs)
    real = accuracy.generate_answers
    calls = [0]

    def dying(*a: Any, **k: Any) -> list[str]:
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(accuracy, "generate_answers", dying)
    with pytest.raises(KeyboardInterrupt):
        ablate_accuracy(*args, name="cut", **kwargs)
    partial = open_store(setup["store"]).open_result("r", "ablation", "cut")
    assert partial.attrs["units_done"] == 2 and partial.attrs["units_total"] == 5
    with pytest.raises(InputFormatError, match="is unfinished"):
        accuracy_effects(partial)
    monkeypatch.setattr(accuracy, "generate_answers", real)
    with pytest.raises(ParameterError, match=r"^ablation 'cut' of run 'r' was made with a "
                       r"different dtype \(dtype 'float32' != 'bfloat16'\); resume it with the "
                       r"same parameters, or choose another --name$"):  # fmt: skip
        ablate_accuracy(*args, name="cut", resume=True, **{**kwargs, "dtype": "bfloat16"})
    resumed = ablate_accuracy(*args, name="cut", resume=True, **kwargs)
    for name in ("correct", "text", "n_neurons", "baseline_text"):
        assert resumed[name].values.tolist() == whole[name].values.tolist()


def test_the_tiny_model_runs_the_real_generation_path(setup: dict[str, Path]) -> None:
    ds = ablate_accuracy(
        setup["model"], setup["store"], "r", "known", "builtin:evaluate", languages=LANGS,
        panels=["specific"], controls=1, max_new_tokens=3, batch_size=5, answer_end="\n",
        name="tiny", **OPTIONS,
    )  # fmt: skip
    assert ds["text"].shape == (1, 2, 2, 16)
    assert ds.attrs["min_pvalue_control"] == 0.5
    assert ds.attrs["answer_end"] == "\n"
    assert not any("\n" in t for t in ds["text"].values.ravel())  # answers cut at the end


def test_panels_are_checked() -> None:
    assert check_panels(["general+specific"]) == ("general+specific",)
    with pytest.raises(ParameterError, match="panel 'specifc' is unknown"):
        check_panels(["specifc"])


def _saved(store: Path) -> list[str]:
    return list(open_store(store).results("r", "ablation"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--data", "NO_ANSWER"],
            "1 of 1 records of 'NO_ANSWER' have no 'answer' (first: language 'en', id 'a')",
        ),
        (
            ["--identification", "lape"],
            "identification 'lape' is not ternary (method 'lape')",
        ),
        (["--panels", "specific,everything"], "panel 'everything' is unknown"),
        (
            ["--data", "builtin:identify"],
            "48 of 48 evaluation items were also read to identify the neurons of run 'r'",
        ),
    ],
)
def test_bad_inputs_fail_in_one_line_and_save_nothing(
    setup: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    extra = [str(setup["no_answer"]) if x == "NO_ANSWER" else x for x in extra]
    message = message.replace("NO_ANSWER", str(setup["no_answer"]))
    before = _saved(setup["store"])
    options = {"--identification": "known", "--data": "builtin:evaluate"}
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        options[key] = value
    code, out, err = run_cli(
        capsys, "ablate-accuracy", "--model", setup["model"], "--store", setup["store"],
        "--run", "r", "--languages", "en,de", "--device", "cpu", "--dtype", "float32",
        "--name", "bad", *[x for kv in options.items() for x in kv],
    )  # fmt: skip
    assert code != 0
    assert message in err, err
    assert len(err.strip().splitlines()) == 1
    assert _saved(setup["store"]) == before


def test_cli_headline_and_stats_deactivation_on_an_accuracy_ablation(
    setup: dict[str, Path],
    fake: list[dict[int, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(
        capsys, "ablate-accuracy", "--model", setup["model"], "--store", setup["store"],
        "--run", "r", "--identification", "known", "--data", "builtin:evaluate",
        "--languages", "en,de", "--controls", "1", "--device", "cpu", "--dtype", "float32",
        "--name", "cli",
    )  # fmt: skip
    assert code == 0, err
    assert "baseline accuracy: en 1 (8 items), de 1 (8 items)" in out
    assert "smallest attainable control p 0.5" in out
    assert "inference descriptive" in out
    code, out, err = run_cli(
        capsys, "stats", "deactivation", setup["store"], "--run", "r", "--ablation", "cli",
        "--name", "acc-stats",
    )  # fmt: skip
    assert code == 0, err
    assert "own drop" in out and "specific+related+general" in out
    saved = open_store(setup["store"]).open_result("r", "stats", "acc-stats")
    assert saved.attrs["kind"] == "accuracy" and saved.attrs["ablation"] == "cli"


def test_the_report_draws_a_heatmap_per_panel(
    setup: dict[str, Path], fake: list[dict[int, np.ndarray]], tmp_path: Path
) -> None:
    from langneurons.reports import figures
    from langneurons.reports.report import write_report

    ds = ablate_accuracy(
        setup["model"], setup["store"], "r", "known", "builtin:evaluate", languages=LANGS,
        controls=1, name="drawn", **OPTIONS,
    )  # fmt: skip
    fig = figures.accuracy_heatmap(accuracy_effects(ds))
    assert len(fig.axes) == 3 + 1  # a heatmap per panel and the colour bar
    assert fig.axes[0].get_title(loc="left").startswith("specific (smallest control p 0.5")
    with pytest.raises(InputFormatError, match="effects is an accuracy ablation"):
        figures.accuracy_heatmap(ds)
    path = write_report(setup["store"], tmp_path / "report", runs=["r"])
    html = path.read_text()
    assert "Deactivation: accuracy drop per panel (r · drawn)" in html
    assert "Accuracy deactivation drawn: baseline en 100%, de 100%" in html
    # the report's sources derive the effects with the public function (the notebook imports it)
    sources = "".join(p.read_text() for p in path.parent.glob("*.ipynb"))
    assert "accuracy_effects(store.open_result('r', 'ablation', 'drawn'))" in sources
