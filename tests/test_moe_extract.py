"""Mixture-of-experts extraction: per-expert counts equal an independent, unbatched oracle.

The oracle runs each record alone, takes the input of every layer's sparse MoE block from a
pre-hook, recomputes the router's top-k experts from the router weights and every routed
expert's gate activation by hand from the fused weights (one token, one expert at a time), and
splits the positives into roles by the known prompt length. The extraction under test runs
padded batches through the model's default experts implementation (``grouped_mm``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from langneurons.errors import ParameterError  # noqa: E402
from langneurons.extract._moe import MoeAccumulator, capture_moe, implementation  # noqa: E402
from langneurons.extract.corpus import read_records  # noqa: E402
from langneurons.extract.engine import (  # noqa: E402
    bucket_batches,
    count_unit,
    encode,
    load_model,
    pad_batch,
)
from langneurons.extract.tiny import TINY_MOE_ARCHITECTURES, tiny_model  # noqa: E402

from .conftest import write_data  # noqa: E402

pytestmark = pytest.mark.requires_torch


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("data") / "data.jsonl", n_items=3)


def _hand_activations(model: Any, layer: int, x: torch.Tensor) -> list[np.ndarray]:
    """Per token of ``x [T, H]``: an ``[X, N]`` array of neuron values (NaN where not routed)."""
    from transformers.activations import ACT2FN

    cfg = model.config
    block = model.model.layers[layer].mlp
    mtype = cfg.model_type
    experts = block.experts
    n_e = experts.num_experts
    router = block.router if mtype == "gpt_oss" else block.gate
    n_shared = 1 if mtype == "qwen2_moe" else 0
    widths = [experts.gate_up_proj.shape[-1 if mtype == "gpt_oss" else 1] // 2] * n_e
    if n_shared:
        widths.append(block.shared_expert.gate_proj.out_features)
    out = []
    for t in range(x.shape[0]):
        xt = x[t]
        logits = router.weight @ xt
        if mtype == "gpt_oss":
            logits = logits + router.bias
        chosen = torch.topk(logits, cfg.num_experts_per_tok).indices.tolist()
        values = np.full((n_e + n_shared, max(widths)), np.nan)
        for e in chosen:
            if mtype == "gpt_oss":
                gate = xt @ experts.gate_up_proj[e][:, ::2] + experts.gate_up_proj_bias[e, ::2]
                gate = gate.clamp(max=experts.limit)
                act = gate * torch.sigmoid(gate * experts.alpha)
            else:
                w = widths[e]
                act = ACT2FN[cfg.hidden_act](experts.gate_up_proj[e, :w] @ xt)
            values[e, : widths[e]] = act.numpy()
        if n_shared:
            act = ACT2FN[cfg.hidden_act](block.shared_expert.gate_proj(xt))
            values[n_e, : widths[n_e]] = act.numpy()
        out.append(values)
    return out


def oracle(model_dir: Path, data: Path) -> dict[str, np.ndarray]:
    """Expected counts, one record at a time: n_active, n_routed per role, layer and expert."""
    loaded = load_model(model_dir, device="cpu", dtype="float32")
    model, tok = loaded.model, loaded.tokenizer
    plan = loaded.plan
    records = read_records(data)
    n_x = plan.n_experts + plan.n_shared
    active = np.zeros((len(records), 2, plan.n_layers, n_x, plan.neurons), dtype=np.int64)
    routed = np.zeros((len(records), 2, plan.n_layers, n_x), dtype=np.int64)
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        layer.mlp.register_forward_pre_hook(lambda _m, a, i=i: inputs.__setitem__(i, a[0]))
        for i, layer in enumerate(model.model.layers)
    ]
    try:
        with torch.no_grad():
            for r, record in enumerate(records):
                enc = encode(record, tok, chat_template=False, max_length=1024)
                model(input_ids=torch.tensor([enc.prompt + enc.response]))
                p = len(enc.prompt)
                for i in range(plan.n_layers):
                    values = _hand_activations(model, i, inputs[i][0])
                    for t, v in enumerate(values):
                        role = 0 if t < p else 1
                        routed[r, role, i] += ~np.isnan(v[:, 0])
                        active[r, role, i] += np.nan_to_num(v, nan=-1.0) > 0
    finally:
        for handle in handles:
            handle.remove()
    return {"active": active, "routed": routed, "language": [r.language for r in records]}


def _extracted(model_dir: Path, data: Path) -> tuple[Any, dict[str, np.ndarray]]:
    loaded = load_model(model_dir, device="cpu", dtype="float32")
    records = read_records(data)
    encoded = [encode(r, loaded.tokenizer, chat_template=False, max_length=1024) for r in records]
    return loaded, count_unit(loaded, encoded, batch_tokens=150, per_sequence=True)


@pytest.mark.parametrize("arch", TINY_MOE_ARCHITECTURES)
def test_per_expert_counts_equal_the_oracle(
    tmp_path: Path, data: Path, arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import langneurons.extract._moe as moe

    def no_recount(*args: Any) -> None:
        raise AssertionError("the default experts implementation is counted as it runs")

    monkeypatch.setattr(moe.MoeAccumulator, "_recount", no_recount)
    model_dir = tiny_model(arch, seed=5, path=tmp_path / arch, intermediate=24, experts=6)
    loaded, got = _extracted(model_dir, data)
    expected = oracle(model_dir, data)
    plan = loaded.plan
    assert got["n_active"].shape == (
        2,
        plan.n_layers,
        plan.n_experts + plan.n_shared,
        36 if arch == "qwen2_moe" else 24,
    )
    np.testing.assert_array_equal(got["seq_n_active"], expected["active"])
    np.testing.assert_array_equal(got["seq_n_routed"], expected["routed"])
    np.testing.assert_array_equal(got["n_active"], expected["active"].sum(0))
    np.testing.assert_array_equal(got["n_routed"], expected["routed"].sum(0))
    # the contract's invariants: top-k routing, shared experts see every token
    tokens = got["n_tokens"]
    routed = got["n_routed"]
    np.testing.assert_array_equal(
        routed[:, :, : plan.n_experts].sum(-1),
        plan.top_k * tokens[:, None].repeat(plan.n_layers, 1),
    )
    if plan.n_shared:
        np.testing.assert_array_equal(
            routed[:, :, plan.n_experts], tokens[:, None].repeat(plan.n_layers, 1)
        )
    assert (got["n_active"] <= routed[..., None]).all()
    # not trivial: every layer routes to more than top_k experts; not all neurons active
    assert ((routed[:, :, : plan.n_experts].sum(0) > 0).sum(-1) > plan.top_k).all()
    assert 0 < got["n_active"].sum() < (routed[..., None] * np.ones(plan.neurons)).sum()


def test_counts_do_not_depend_on_the_experts_implementation(tmp_path: Path, data: Path) -> None:
    model_dir = tiny_model("qwen2_moe", seed=2, path=tmp_path / "m", intermediate=24, experts=6)
    loaded, first = _extracted(model_dir, data)
    assert loaded.model.config._experts_implementation == "grouped_mm"  # the default
    records = read_records(data)
    encoded = [encode(r, loaded.tokenizer, chat_template=False, max_length=1024) for r in records]
    for impl in ("batched_mm", "eager"):
        loaded.model.set_experts_implementation(impl)
        got = count_unit(loaded, encoded, batch_tokens=150, per_sequence=True)
        for key in ("n_active", "n_routed", "seq_n_active", "seq_n_routed"):
            np.testing.assert_array_equal(got[key], first[key], err_msg=f"{impl}: {key}")
    # an implementation of unknown row order is counted by recomputing the gate: same counts
    loaded.model.set_experts_implementation("grouped_mm")
    loaded.model.config._experts_implementation_internal = "some_kernel"
    for module in loaded.plan.experts:  # the model still runs grouped_mm; the hooks see a name
        assert implementation(module) == "some_kernel"
    loaded.model.config._experts_implementation_internal = "grouped_mm"
    acc = MoeAccumulator(torch, loaded.plan, len(encoded), "cpu", True, recompute=True)
    with torch.inference_mode(), capture_moe(loaded.plan, acc):
        for batch in bucket_batches([e.length for e in encoded], 150):
            ids, mask = pad_batch([encoded[i] for i in batch], 0)
            acc.mask, acc.rows = mask, torch.tensor(batch)
            loaded.model(input_ids=ids, attention_mask=mask.sum(-1).long(), use_cache=False)
    np.testing.assert_array_equal(acc.active.numpy(), first["n_active"])
    np.testing.assert_array_equal(acc.routed_count.numpy(), first["n_routed"])
    np.testing.assert_array_equal(acc.seq.numpy(), first["seq_n_active"])


# ----------------------------------------------------------------------------- bad inputs
@pytest.fixture(scope="module")
def qwen3_moe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model("qwen3_moe", seed=1, path=tmp_path_factory.mktemp("qwen3_moe"))


def test_per_expert_counts_of_a_dense_model_are_refused(tmp_path: Path) -> None:
    from langneurons.extract.engine import check_experts

    loaded = load_model(tiny_model("llama", path=tmp_path / "llama"), device="cpu")
    check_experts(loaded, None)
    check_experts(loaded, False)
    with pytest.raises(ParameterError) as info:
        check_experts(loaded, True)
    assert str(info.value) == (
        "per-expert counts were asked for, but the model (llama) is dense: it has no experts; "
        "drop --experts"
    )


def test_dense_counts_of_a_moe_model_are_refused(qwen3_moe: Path) -> None:
    from langneurons.extract.engine import check_experts

    loaded = load_model(qwen3_moe, device="cpu")
    check_experts(loaded, True)
    with pytest.raises(ParameterError, match=r"is a mixture of experts.*drop --no-experts$"):
        check_experts(loaded, False)


def test_a_hook_module_on_a_moe_model_is_refused(qwen3_moe: Path) -> None:
    with pytest.raises(ParameterError) as info:
        load_model(qwen3_moe, device="cpu", hook_module="model.layers.*.mlp.experts.act_fn")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("--hook-module cannot count a mixture of experts (qwen3_moe)")


def test_an_unregistered_moe_architecture_is_refused(qwen3_moe: Path) -> None:
    from transformers import AutoModelForCausalLM

    from langneurons.extract.engine import from_pretrained_objects
    from langneurons.extract.tiny import byte_tokenizer

    model = AutoModelForCausalLM.from_pretrained(qwen3_moe)
    model.config.model_type = "my_moe"
    with pytest.raises(ParameterError) as info:
        from_pretrained_objects(model, byte_tokenizer())
    assert str(info.value) == (
        "architecture 'my_moe' is a mixture of experts whose routing langneurons cannot read "
        "(supported MoE: gpt_oss, mixtral, olmoe, qwen2_moe, qwen3_moe); extract a supported model"
    )


def test_a_dense_layer_in_a_moe_model_is_refused(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from langneurons.extract.engine import from_pretrained_objects
    from langneurons.extract.tiny import byte_tokenizer

    config = AutoConfig.from_pretrained(tiny_model("qwen3_moe", path=tmp_path / "m"))
    config.mlp_only_layers = [1]  # layer 1 is a dense MLP: no router there
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ParameterError) as info:
        from_pretrained_objects(model, byte_tokenizer())
    assert str(info.value) == (
        "decoder layer 1 of the qwen3_moe model has no sparse block with 'gate' and 'experts' at "
        "'model.layers.1.mlp' (a dense layer, or another transformers layout); per-expert "
        "counting needs every layer sparse"
    )


# ----------------------------------------------------------------------------- into a store
def test_extract_writes_the_oracle_counts_into_a_moe_run(tmp_path: Path, data: Path) -> None:
    from langneurons.extract.engine import extract
    from langneurons.names import EXPERT_NEURONS, EXPERT_SHARED
    from langneurons.store import open_store

    model_dir = tiny_model("qwen2_moe", seed=4, path=tmp_path / "m", intermediate=24, experts=6)
    store = tmp_path / "s.zarr"
    kwargs: dict[str, Any] = {"device": "cpu", "dtype": "float32", "progress": False}
    report = extract(
        model_dir,
        data,
        store,
        "moe/base",
        per_sequence=True,
        unit_size=2,
        batch_tokens=150,
        **kwargs,
    )
    assert report["units_done"] == 6
    ds = open_store(store).open_run("moe/base").load()
    expected = oracle(model_dir, data)
    np.testing.assert_array_equal(ds.seq_n_active.values.astype(np.int64), expected["active"])
    np.testing.assert_array_equal(ds.seq_n_routed.values, expected["routed"])
    rows = np.asarray(expected["language"])
    for k, lang in enumerate(ds.language.values):
        np.testing.assert_array_equal(
            ds.n_active.values[k], expected["active"][rows == lang].sum(0)
        )
        np.testing.assert_array_equal(
            ds.n_routed.values[k], expected["routed"][rows == lang].sum(0)
        )
    assert ds[EXPERT_SHARED].values.tolist() == [False] * 6 + [True]
    assert ds[EXPERT_NEURONS].values.tolist() == [24] * 6 + [36]
    assert json.loads(ds.attrs["moe"]) == {
        "n_experts": 6,
        "n_shared": 1,
        "top_k": 2,
        "model_type": "qwen2_moe",
    }
    assert open_store(store).validate() == []


def test_extract_cli_on_a_moe_model_resumes_bit_exact(
    tmp_path: Path, data: Path, qwen3_moe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from langneurons.store import open_store

    from .conftest import run_cli

    common = ["--model", qwen3_moe, "--data", data, "--device", "cpu", "--dtype", "float32"]
    store = tmp_path / "s.zarr"
    code, out, err = run_cli(capsys, "extract", *common, "--store", store, "--run", "whole")
    assert code == 0, err
    # a partial run (one language), then the rest with --resume
    code, _, err = run_cli(
        capsys, "extract", *common, "--store", store, "--run", "part", "--languages", "de"
    )
    assert code == 0, err
    code, _, err = run_cli(capsys, "extract", *common, "--store", store, "--run", "part")
    assert code != 0 and "pass --resume to complete it" in err
    code, out, err = run_cli(
        capsys, "extract", *common, "--store", store, "--run", "part", "--resume", "--experts"
    )
    assert code == 0, err
    assert "extracted 2 unit(s) (1 already done)" in out
    whole = open_store(store).open_run("whole").load()
    part = open_store(store).open_run("part").load()
    for name in ("n_active", "n_routed", "n_tokens"):
        np.testing.assert_array_equal(whole[name].values, part[name].values)
    # the bad inputs on the command line: one line each, nothing written
    code, _, err = run_cli(capsys, "extract", *common, "--store", store, "--run", "x", "--sums")
    assert code != 0 and err.strip().endswith("drop --sums") and len(err.strip().splitlines()) == 1
    assert "x" not in open_store(store).runs()


def test_extract_cli_refuses_experts_on_a_dense_model(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .conftest import run_cli

    model = tiny_model("llama", path=tmp_path / "llama")
    capsys.readouterr()  # the progress bars of writing the model
    store = tmp_path / "s.zarr"
    code, _, err = run_cli(
        capsys,
        "extract",
        "--model",
        model,
        "--data",
        data,
        "--store",
        store,
        "--run",
        "r",
        "--device",
        "cpu",
        "--experts",
    )
    assert code != 0
    assert err.strip().splitlines()[-1:] == [
        "langneurons: error: per-expert counts were asked for, but the model (llama) is dense: "
        "it has no experts; drop --experts"
    ]
    assert not store.exists()  # refused before anything was written


# ----------------------------------------------------------------------------- demo --moe
def test_demo_moe_runs_end_to_end_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from langneurons.cli import main
    from langneurons.store import open_store

    out = tmp_path / "demo"
    code = main(["demo", "--moe", "--out", str(out), "--languages", "en,zh,de", "--n-boot", "5"])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"report {out / 'report' / 'report.html'}" in printed
    assert "[demo] tiny-qwen2-moe/base ternary" in printed
    assert "rank expert" in printed
    assert "language experts by routing (response tokens): 4 layers x 8 routed experts" in printed
    assert "routing change, base -> aligned" in printed
    store = open_store(out / "store.zarr")
    assert store.runs() == ["tiny-qwen2-moe/aligned", "tiny-qwen2-moe/base"]
    assert store.validate() == []
    base = store.open_run("tiny-qwen2-moe/base")
    assert base.sizes["expert"] == 9 and bool(base.expert_shared.values[-1])
    assert store.results("tiny-qwen2-moe/base", "identification") == ["lape", "ternary"]
    assert store.results("tiny-qwen2-moe/base", "stats") == ["experts"]
    assert store.results("tiny-qwen2-moe/aligned", "stats") == ["routing-change"]
    assert (out / "report" / "report.html").is_file()


def test_demo_moe_refuses_another_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from langneurons.cli import main

    code = main(["demo", "--moe", "--model", "gemma3-270m", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code != 0
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith("--moe runs a tiny random Qwen2-MoE built offline; drop --model gemma3-270m")
    )
    assert not (tmp_path / "d").exists()


def test_activations_in_an_unexpected_order_are_refused(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import langneurons.extract._moe as moe

    model_dir = tiny_model("mixtral", seed=5, path=tmp_path / "m", intermediate=24, experts=6)
    loaded = load_model(model_dir, device="cpu", dtype="float32")
    encoded = [encode(r, loaded.tokenizer, chat_template=False, max_length=1024)
               for r in read_records(data)]  # fmt: skip
    original = moe.row_order

    def shifted(impl: str, index: Any, n_experts: int) -> tuple[Any, Any]:
        token, expert = original(impl, index, n_experts)
        return token.roll(1), expert.roll(1)  # what a changed implementation would look like

    monkeypatch.setattr(moe, "row_order", shifted)
    with pytest.raises(ParameterError) as info:
        count_unit(loaded, encoded, batch_tokens=150, per_sequence=False)
    assert str(info.value) == (
        "the gate activations of layer 0 do not come in the order of 'grouped_mm' that "
        "langneurons expects (a transformers version with another experts implementation?); "
        "the routing of this model cannot be read"
    )
