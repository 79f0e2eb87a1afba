"""Accuracy-based deactivation (``ablate-accuracy``) on a mixture-of-experts run: neurons inside
experts from a per-expert ternary identification, whole experts from a mask or a ``stats
experts`` result, matched random controls, resume, refusals.

The answers are recomputed directly under the same intervention (greedy generation is
deterministic on CPU in float32), and each random control is checked against the set it imitates.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from langneurons.errors import ParameterError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from langneurons.extract import _moe_ablate as moe_ablate  # noqa: E402
from langneurons.extract import accuracy  # noqa: E402
from langneurons.extract import moe_ablation as moe  # noqa: E402

pytestmark = pytest.mark.requires_torch

LANGS = ["en", "de"]
OPTIONS: dict[str, Any] = {
    "languages": LANGS,
    "controls": 2,
    "seed": 5,
    "max_new_tokens": 3,
    "batch_size": 4,
    "device": "cpu",
    "dtype": "float32",
    "progress": False,
}


@pytest.fixture(scope="module")
def moe_acc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny Qwen2-MoE, a MoE run of it with a ternary identification per expert, an expert
    mask, held-out evaluation data with answers, and a dense run (tiny Llama) beside it."""
    import xarray as xr

    from langneurons.analysis import identify
    from langneurons.store import open_store

    from .conftest import moe_and_dense_runs

    root = tmp_path_factory.mktemp("moe_accuracy")
    built = moe_and_dense_runs(root, seed=3)
    model, dense, store = built["model"], built["dense"], built["store"]
    data = root / "data.jsonl"
    lines = [json.loads(x) for x in built["heldout"].read_text().splitlines()]
    data.write_text("".join(json.dumps({**x, "answer": "6"}) + "\n" for x in lines))
    opened = open_store(store, mode="r+")
    ident = identify(opened.open_run("moe"), "ternary", top_rate=0.2, rank="expert")
    opened.save_result("moe", "identification", "ternary", ident)
    dense_ident = identify(opened.open_run("dense"), "ternary", top_rate=0.2)
    opened.save_result("dense", "identification", "ternary", dense_ident)
    langs = ident.language.values
    experts = np.zeros((len(langs), ident.sizes["layer"], ident.sizes["expert"]), bool)
    experts[0, 0, [0, 2]] = experts[1, 1, 3] = True  # en: 2 experts of layer 0; de: 1 of layer 1
    mask = xr.Dataset({"mask": (("language", "layer", "expert"), experts)}, {"language": langs})
    opened.save_result("moe", "identification", "experts", mask)
    return {"model": model, "dense": dense, "data": data, "store": store, "ident": ident}


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[Any, np.ndarray]]:
    """Record every set that the MoE deactivation switches off."""
    seen: list[dict[Any, np.ndarray]] = []
    original = moe_ablate.MoeDeactivation.switch_off

    def switch_off(self: Any, units: Any) -> Any:
        seen.append(dict(units))
        return original(self, units)

    monkeypatch.setattr(moe_ablate.MoeDeactivation, "switch_off", switch_off)
    return seen


def _recomputed(s: dict[str, Any], off: Any) -> list[str]:
    """The answers with ``off(targets)`` switched off, generated here directly."""
    from langneurons.extract._generate import generate_answers
    from langneurons.extract.corpus import read_records
    from langneurons.extract.engine import load_model

    loaded = load_model(s["model"], device="cpu", dtype="float32")
    records = [r for r in read_records(s["data"]) if r.language in LANGS]
    targets = moe.moe_targets(loaded.model, loaded.plan)
    kw = {"max_new_tokens": 3, "chat_template": False, "batch_size": 4}
    with off(targets):
        return generate_answers(loaded, records, **kw)


def _content(units: dict[Any, np.ndarray]) -> str:
    return str(sorted((k, np.asarray(v).tolist()) for k, v in units.items() if len(v)))


def _cells(units: dict[Any, np.ndarray]) -> dict[Any, int]:
    return {k: len(v) for k, v in units.items() if len(v)}


def test_neurons_inside_experts_equal_a_direct_recomputation(
    moe_acc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from langneurons.analysis.accuracy import accuracy_effects

    s = moe_acc
    seen = _spy(monkeypatch)
    ds = accuracy.ablate_accuracy(
        s["model"], s["store"], "moe", "ternary", s["data"], name="neurons", **OPTIONS
    )
    assert ds.attrs["moe_unit"] == "neuron"
    assert "per layer and expert" in ds.attrs["control_rule"]
    assert list(ds.panel.values) == list(accuracy.PANELS)
    sets = {p: accuracy.panel_sets(s["ident"], LANGS, p) for p in accuracy.PANELS}
    sizes = [[sum(map(len, sets[p][lang].values())) for lang in LANGS] for p in accuracy.PANELS]
    assert ds["n_neurons"].values[:, :, 0].tolist() == sizes
    assert sizes[2][0] > 0  # something is switched off
    # every control matches its set: the same count in each (layer, expert) cell
    assert (ds["n_neurons"].values == ds["n_neurons"].values[:, :, :1]).all()
    real = [sets[p][lang] for p in sets for lang in LANGS]
    drawn = [x for x in seen if _content(x) not in map(_content, real)]
    assert len(drawn) == 2 * sum(1 for x in real if _cells(x))  # 2 controls per distinct set
    assert all(_cells(x) in map(_cells, real) for x in drawn)
    # the saved answers are those generated here with the same neurons off (and none off)
    p, lang = "specific+related+general", "en"
    want = _recomputed(s, lambda t: moe.deactivate_moe(t, sets[p][lang]))
    got = ds["text"].sel(panel=p, deactivated=lang, variant=0).values.tolist()
    assert got == want
    base = _recomputed(s, lambda t: moe.deactivate_moe(t, {}))
    assert ds["baseline_text"].values.tolist() == base
    effects = accuracy_effects(ds)
    assert effects.attrs["moe_unit"] == "neuron"
    assert effects["n_neurons"].values.tolist() == ds["n_neurons"].values[:, :, 0].tolist()


def test_whole_experts_equal_a_direct_recomputation(
    moe_acc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from langneurons.analysis.accuracy import accuracy_effects

    s = moe_acc
    seen = _spy(monkeypatch)
    ds = accuracy.ablate_accuracy(
        s["model"], s["store"], "moe", "experts", s["data"], name="experts", **OPTIONS
    )
    assert ds.attrs["moe_unit"] == "expert" and "n_neurons" not in ds
    assert "routed and of shared experts" in ds.attrs["control_rule"]
    assert list(ds.panel.values) == [accuracy.EXPERT_PANEL]
    assert ds["n_experts"].values.tolist() == [[[2, 2, 2], [1, 1, 1]]]
    # controls: the same number of experts in the same layers, never the set itself
    en = {0: np.array([0, 2]), 1: np.array([], dtype=np.int64)}
    de = {0: np.array([], dtype=np.int64), 1: np.array([3])}
    controls = [x for x in seen if _content(x) not in (_content(en), _content(de))]
    assert sorted(str(_cells(x)) for x in controls) == ["{0: 2}"] * 2 + ["{1: 1}"] * 2
    want = _recomputed(s, lambda t: moe.mask_experts(t, en))
    assert ds["text"].sel(deactivated="en", variant=0).values.ravel().tolist() == want
    effects = accuracy_effects(ds)
    assert effects.attrs["moe_unit"] == "expert"
    assert effects["n_experts"].values.tolist() == [[2, 1]]
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from langneurons.reports.figures import accuracy_heatmap

    figure = accuracy_heatmap(effects)
    assert figure.axes[0].get_ylabel() == "deactivated experts of"
    plt.close(figure)


def test_cli_language_experts_and_resume_bit_exact(
    moe_acc: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from langneurons.store import open_store

    from .conftest import run_cli
    from .test_ablation_resume import assert_bit_identical

    s = moe_acc
    code, out, err = run_cli(
        capsys, "stats", "experts", s["store"], "--run", "moe", "--n-boot", "0",
        "--ratio", "1.2", "--name", "lexp",
    )  # fmt: skip
    assert code == 0, err
    preferred = open_store(s["store"]).open_result("moe", "stats", "lexp")["preferred"]
    args = [
        "--quiet", "ablate-accuracy", "--model", s["model"], "--store", s["store"], "--run",
        "moe", "--identification", "lexp", "--language-experts", "--data", s["data"],
        "--languages", "en,de", "--controls", "1", "--seed", "2", "--max-new-tokens", "3",
        "--device", "cpu", "--dtype", "float32", "--checkpoint-seconds", "0",
    ]  # fmt: skip
    code, out, err = run_cli(capsys, *args, "--name", "whole")
    assert code == 0, err
    assert "mixture of experts: experts switched off" in out
    whole = open_store(s["store"]).open_result("moe", "ablation", "whole").load()
    assert whole.attrs["source"] == "stats" and whole.attrs["moe_unit"] == "expert"
    counts = preferred.sum(["layer", "expert"]).sel(language=LANGS).values.tolist()
    assert whole["n_experts"].sel(variant=0).values.ravel().tolist() == counts
    # killed inside its third unit, then resumed: the same bits
    original, calls = accuracy.generate_answers, []

    def failing(*a: Any, **k: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        return original(*a, **k)

    with monkeypatch.context() as patch:
        patch.setattr(accuracy, "generate_answers", failing)
        with pytest.raises(RuntimeError, match="interrupted"):
            run_cli(capsys, *args, "--name", "again")
    partial = open_store(s["store"]).open_result("moe", "ablation", "again")
    assert "unit_done" in partial and "n_experts" in partial
    code, out, err = run_cli(capsys, *args, "--name", "again", "--resume")
    assert code == 0, err
    again = open_store(s["store"]).open_result("moe", "ablation", "again").load()
    assert_bit_identical(again, whole)
    code, out, err = run_cli(
        capsys, "stats", "deactivation", s["store"], "--run", "moe", "--ablation", "again",
        "--name", "again-acc",
    )  # fmt: skip
    assert code == 0, err
    assert "mixture of experts: experts switched off" in out and "experts" in out


def test_bad_inputs_are_one_line(moe_acc: dict[str, Any]) -> None:
    from langneurons.store import open_store

    s = moe_acc
    opened = open_store(s["store"], mode="r+")
    flat = s["ident"].isel(expert=0)
    flat = flat.drop_vars([v for v in flat.coords if "expert" in v], errors="ignore")
    opened.save_result("moe", "identification", "flat", flat[["mask", "neuron_type"]])
    experts = opened.open_result("moe", "identification", "experts").load()
    opened.save_result("dense", "identification", "experts", experts.isel(layer=[0, 1]))
    crowded = experts.copy(deep=True)
    crowded["mask"][0, 1, :3] = True  # 3 of 4 routed experts of layer 1, top_k 2
    opened.save_result("moe", "identification", "crowded", crowded)
    cases: list[tuple[str, str, Any, dict[str, Any], str]] = [
        ("moe", "flat", s["model"], {}, "has no expert dim but run 'moe' is a mixture of experts"),
        ("dense", "experts", s["dense"], {}, "has an expert dim but run 'dense' is dense"),
        ("moe", "ternary", s["dense"], {}, "deactivates neurons inside experts but the model is"),
        ("moe", "crowded", s["model"], {}, "routing is impossible"),
        ("moe", "experts", s["model"], {"panels": ["specific"]}, "masks whole experts, which"),
        ("moe", "experts", s["model"], {"source": "stat"}, "source must be 'identification'"),
    ]
    before = list(opened.results("moe", "ablation"))
    for run, ident, model, extra, message in cases:
        with pytest.raises(ParameterError, match=message) as info:
            accuracy.ablate_accuracy(
                model, s["store"], run, ident, s["data"], name="bad", **{**OPTIONS, **extra}
            )
        assert "\n" not in str(info.value)
    assert list(open_store(s["store"]).results("moe", "ablation")) == before


def test_the_intervention_reaches_the_answers(
    moe_acc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generator that answers right while the model's logits on the prompt are those of the
    unablated model, and wrong otherwise: masking a language's experts (or its neurons inside
    experts, or a random control) drops accuracy from 1 to 0; an empty set does not."""
    from langneurons.analysis.accuracy import accuracy_effects

    s = moe_acc
    intact: dict[str, Any] = {}

    def generate_answers(loaded: Any, records: Any, **kwargs: Any) -> list[str]:
        out = []
        for r in records:
            ids = loaded.tokenizer(r.prompt, return_tensors="pt")
            with torch.no_grad():
                logits = loaded.model(**ids).logits
            same = torch.equal(intact.setdefault(r.id + r.language, logits), logits)
            out.append(f"{r.response} {'6' if same else '7'}.")
        return out

    monkeypatch.setattr(accuracy, "generate_answers", generate_answers)
    for ident, unit in (("experts", "n_experts"), ("ternary", "n_neurons")):
        ds = accuracy.ablate_accuracy(
            s["model"], s["store"], "moe", ident, s["data"], name=f"fake-{ident}", **OPTIONS
        )
        effects = accuracy_effects(ds)
        assert effects["baseline"].values.tolist() == [1.0, 1.0]
        off = ds[unit].values[:, :, 0] > 0  # [panel, deactivated]
        drop = effects["drop"].values  # [panel, deactivated, evaluated]
        assert off.any()
        assert (drop[off] == 1.0).all() and (drop[~off] == 0.0).all()
        control = effects["control_drop"].values  # a matched control changes the model too
        assert (control[off] == 1.0).all()
