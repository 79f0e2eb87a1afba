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
from langneurons.extract.corpus import read_records  # noqa: E402
from langneurons.extract.engine import count_unit, encode, load_model  # noqa: E402
from langneurons.extract.tiny import TINY_MOE_ARCHITECTURES, tiny_model  # noqa: E402

pytestmark = pytest.mark.requires_torch

TEXTS = {
    "en": ("How many apples are left?", "Ten minus four is six, so six apples are left."),
    "de": ("Wie viele Äpfel bleiben übrig?", "Zehn minus vier ist sechs."),
    "zh": ("还剩下多少个苹果？", "十减四等于六，所以还剩六个。"),
}


def write_data(path: Path, n_items: int = 3) -> Path:
    """A small parallel JSONL corpus with varied lengths (so batches need padding)."""
    lines = []
    for lang, (prompt, response) in TEXTS.items():
        for i in range(n_items):
            lines.append(
                {
                    "language": lang,
                    "id": f"q{i}",
                    "prompt": prompt + " " * (i % 2) + "?" * i,
                    "response": response + "!" * (3 * i),
                }
            )
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("data") / "data.jsonl")


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
def test_per_expert_counts_equal_the_oracle(tmp_path: Path, data: Path, arch: str) -> None:
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
