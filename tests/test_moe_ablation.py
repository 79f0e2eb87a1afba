"""Deactivation inside mixture-of-experts models (issue 17 item 5), against independent oracles.

Tiny random Mixtral / Qwen2-MoE / Qwen3-MoE models are built from config in float64
(float32 for ``grouped_mm``, which has no float64 kernel). The
oracle recomputes every sparse block token by token from the weights (router softmax and top-k,
each chosen expert's ``act(gate) * keep * up`` and down projection, the shared expert with its
sigmoid gate), with no code of transformers' experts or of the module under test.
"""

from __future__ import annotations

import copy
import types
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from langneurons.errors import ParameterError  # noqa: E402
from langneurons.extract import _moe_ablate as moe_ablate  # noqa: E402
from langneurons.extract import moe_ablation as moe  # noqa: E402

E, K, LAYERS, HIDDEN, INTER, SHARED_INTER, VOCAB = 4, 2, 3, 16, 12, 20, 64
KINDS = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss")
IMPLEMENTATIONS = ("eager", "batched_mm", "grouped_mm")


def _config(kind: str) -> Any:
    common = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_experts_per_tok=K,
        max_position_embeddings=64,
    )
    if kind == "mixtral":
        return transformers.MixtralConfig(
            intermediate_size=INTER, num_local_experts=E, head_dim=8, **common
        )
    if kind == "qwen2_moe":
        return transformers.Qwen2MoeConfig(
            intermediate_size=SHARED_INTER,
            moe_intermediate_size=INTER,
            shared_expert_intermediate_size=SHARED_INTER,
            num_experts=E,
            norm_topk_prob=False,
            **common,
        )
    if kind == "olmoe":
        return transformers.OlmoeConfig(
            intermediate_size=INTER, num_experts=E, norm_topk_prob=False, **common
        )
    if kind == "gpt_oss":
        return transformers.GptOssConfig(
            intermediate_size=INTER,
            num_local_experts=E,
            head_dim=8,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            sliding_window=16,
            **{**common, "max_position_embeddings": 131072},
        )
    return transformers.Qwen3MoeConfig(
        intermediate_size=SHARED_INTER,
        moe_intermediate_size=INTER,
        num_experts=E,
        norm_topk_prob=True,
        head_dim=8,
        **common,
    )


def _router(block: Any) -> Any:
    return block.router if hasattr(block, "router") else block.gate


def tiny_moe(kind: str, seed: int = 0, implementation: str = "eager", dtype: Any = None) -> Any:
    """A tiny random MoE model with non-trivial router weights (float64, but float32 for
    grouped_mm, which has no float64 kernel)."""
    if dtype is None:
        dtype = torch.float32 if implementation == "grouped_mm" else torch.float64
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(_config(kind)).to(dtype)
    with torch.no_grad():
        for layer in model.model.layers:
            _router(layer.mlp).weight.normal_(0.0, 1.0)  # Qwen routers start at 0: all ties
            if kind == "gpt_oss":
                layer.mlp.router.bias.normal_(0.0, 0.5)
                layer.mlp.experts.gate_up_proj_bias.normal_(0.0, 0.5)
                layer.mlp.experts.down_proj_bias.normal_(0.0, 0.5)
    model.set_experts_implementation(implementation)
    return model.eval()


def _ids(seed: int = 1) -> Any:
    return torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(seed))


def _atol(model: Any) -> float:
    return 1e-12 if model.dtype == torch.float64 else 1e-5


def _logits(model: Any, ids: Any) -> Any:
    with torch.inference_mode():
        return model(input_ids=ids).logits


# ----------------------------------------------------------------------------- the oracle
def _oracle_forward(
    block: Any,
    kind: str,
    normalize: bool,
    keep: dict[int, Any],
    masked: set[int],
) -> Any:
    """A sparse block's forward, token by token, with ``keep[e]`` (0/1 per neuron) multiplied
    into each expert's activation and the ``masked`` experts removed."""
    experts = block.experts
    routed = experts.num_experts
    router = _router(block)
    oss = kind == "gpt_oss"
    inter = experts.gate_up_proj.shape[-1 if oss else 1] // 2

    def expert_out(e: int, x: Any) -> Any:
        if oss:  # [H, 2I] interleaved, with biases; a clamped GLU times (up + 1)
            gate_up = x @ experts.gate_up_proj[e] + experts.gate_up_proj_bias[e]
            gate, up = gate_up[::2].clamp(max=experts.limit), gate_up[1::2]
            up = up.clamp(min=-experts.limit, max=experts.limit)
            act = gate * torch.sigmoid(gate * experts.alpha) * keep[e]
            return (act * (up + 1)) @ experts.down_proj[e] + experts.down_proj_bias[e]
        gate = experts.gate_up_proj[e, :inter] @ x
        up = experts.gate_up_proj[e, inter:] @ x
        act = experts.act_fn(gate) * keep[e]
        return experts.down_proj[e] @ (act * up)

    def forward(self: Any, hidden: Any) -> Any:
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])
        out = torch.zeros_like(x)
        for t in range(x.shape[0]):
            logits = router.weight @ x[t]
            allowed = [e for e in range(routed) if e not in masked]
            if oss:  # top-k logits, then a softmax over them
                logits = logits + router.bias
                order = sorted(range(len(allowed)), key=lambda i: -float(logits[allowed][i]))[:K]
                weights = torch.softmax(logits[allowed][order], dim=-1)
            else:
                # the routers of transformers take the softmax (and renormalise) in float32
                probs = torch.softmax(logits[allowed].float(), dim=-1)
                order = sorted(range(len(allowed)), key=lambda i: -float(probs[i]))[:K]
                weights = probs[order]
                if normalize:
                    weights = weights / weights.sum()
            for w, i in zip(weights.to(x.dtype), order, strict=True):
                out[t] += w * expert_out(allowed[i], x[t])
            shared = getattr(block, "shared_expert", None)
            if shared is not None and routed not in masked:
                mlp = shared
                act = mlp.act_fn(mlp.gate_proj.weight @ x[t]) * keep[routed]
                s = mlp.down_proj.weight @ (act * (mlp.up_proj.weight @ x[t]))
                out[t] += torch.sigmoid(block.shared_expert_gate.weight @ x[t])[0] * s
        if oss:  # GptOssMLP also returns the router scores, which the layer drops
            return out.reshape(shape), None
        return out.reshape(shape)

    return forward


def _normalize(kind: str, model: Any) -> bool:
    return True if kind == "mixtral" else bool(getattr(model.config, "norm_topk_prob", False))


def _oracle_model(
    model: Any,
    kind: str,
    units: dict[tuple[int, int], np.ndarray] | None = None,
    experts: dict[int, list[int]] | None = None,
) -> Any:
    reference = copy.deepcopy(model)
    layout = moe.moe_targets(reference)
    for layer, decoder in enumerate(reference.model.layers):
        keep = {}
        for e, n in enumerate(layout.expert_neurons):
            mask = torch.ones(n, dtype=model.dtype)
            mask[list((units or {}).get((layer, e), []))] = 0.0
            keep[e] = mask
        block = decoder.mlp
        block.forward = types.MethodType(
            _oracle_forward(
                block, kind, _normalize(kind, model), keep, set((experts or {}).get(layer, []))
            ),
            block,
        )
    return reference


def _units(layout: moe.MoeTargets, seed: int) -> dict[tuple[int, int], np.ndarray]:
    """About a third of the neurons of some experts (every kind, shared ones included)."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in range(layout.n_layers):
        for e, n in enumerate(layout.expert_neurons):
            if rng.random() < 0.7:
                out[(layer, e)] = np.sort(rng.choice(n, size=n // 3, replace=False))
    return out


# ----------------------------------------------------------------------------- neurons
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_neurons_in_experts_equal_the_oracle(kind: str, implementation: str) -> None:
    model = tiny_moe(kind, implementation=implementation)
    layout = moe.moe_targets(model)
    units = _units(layout, seed=3)
    ids = _ids()
    before = _logits(model, ids)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the oracle itself reproduces the unablated model
    torch.testing.assert_close(
        _logits(_oracle_model(model, kind), ids), before, rtol=0, atol=_atol(model)
    )
    with moe.deactivate_moe(layout, units):
        ablated = _logits(model, ids)
    expected = _logits(_oracle_model(model, kind, units), ids)
    torch.testing.assert_close(ablated, expected, rtol=0, atol=_atol(model))
    assert (ablated - before).abs().max() > 1e-6  # the deactivation changed something
    # restored bit for bit
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert torch.equal(_logits(model, ids), before)


@pytest.mark.parametrize("kind", KINDS)
def test_grouped_mm_equals_eager_bit_for_bit(kind: str) -> None:
    """In float32 the grouped and eager experts give the same bits, ablated or not."""
    eager = tiny_moe(kind, implementation="eager", dtype=torch.float32)
    grouped = tiny_moe(kind, implementation="grouped_mm", dtype=torch.float32)
    units = _units(moe.moe_targets(eager), seed=5)
    drop = {0: np.array([2]), 2: np.array([1])}
    ids = _ids(2)
    assert torch.equal(_logits(eager, ids), _logits(grouped, ids))
    out = []
    for model in (eager, grouped):
        layout = moe.moe_targets(model)
        with moe.deactivate_moe(layout, units), moe.mask_experts(layout, drop):
            out.append(_logits(model, ids))
    assert torch.equal(out[0], out[1])


def test_neurons_bit_exact_across_implementations() -> None:
    """Zeroing the gate row is the same as zeroing act(gate) inside the eager loop, bit for bit."""
    model = tiny_moe("qwen2_moe", implementation="eager")
    layout = moe.moe_targets(model)
    units = {(1, 2): np.array([0, 5, 7]), (0, 0): np.array([3])}
    ids = _ids()
    with moe.deactivate_moe(layout, units):
        ablated = _logits(model, ids)
    # the same deactivation by hooking act_fn of the eager loop, which runs the experts in
    # ascending order: the hook learns the expert from the order of its calls
    experts = model.model.layers[1].mlp.experts
    seen: list[int] = []

    def pre(module: Any, args: Any) -> None:
        hit = sorted({int(e) for e in args[1].flatten()})
        seen[:] = hit

    def hook(module: Any, args: Any, output: Any) -> Any:
        e = seen.pop(0)
        if e == 2:
            output = output.clone()
            output[:, [0, 5, 7]] = 0
        return output

    experts0 = model.model.layers[0].mlp.experts
    seen0: list[int] = []

    def pre0(module: Any, args: Any) -> None:
        seen0[:] = sorted({int(e) for e in args[1].flatten()})

    def hook0(module: Any, args: Any, output: Any) -> Any:
        if seen0.pop(0) == 0:
            output = output.clone()
            output[:, 3] = 0
        return output

    handles = [
        experts.register_forward_pre_hook(pre),
        experts.act_fn.register_forward_hook(hook),
        experts0.register_forward_pre_hook(pre0),
        experts0.act_fn.register_forward_hook(hook0),
    ]
    try:
        hooked = _logits(model, ids)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(ablated, hooked)


def test_shared_expert_neurons_are_switched_off_on_every_token() -> None:
    model = tiny_moe("qwen2_moe")
    layout = moe.moe_targets(model)
    assert layout.expert_neurons == (INTER,) * E + (SHARED_INTER,)
    seen = []
    down = model.model.layers[0].mlp.shared_expert.down_proj  # its input is act(gate) * up
    handle = down.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    off = [1, SHARED_INTER - 1]
    try:
        _logits(model, _ids())
        with moe.deactivate_moe(layout, {(0, E): np.array(off)}):
            _logits(model, _ids())
    finally:
        handle.remove()
    assert (seen[0][..., off] != 0).all()
    assert (seen[1][..., off] == 0).all()
    on = [n for n in range(SHARED_INTER) if n not in off]
    assert torch.equal(seen[0][..., on], seen[1][..., on])


# ----------------------------------------------------------------------------- routing
@pytest.mark.parametrize("kind", KINDS)
def test_routing_rule_reproduces_the_router(kind: str) -> None:
    model = tiny_moe(kind)
    layout = moe.moe_targets(model)
    x = torch.randn(11, HIDDEN, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    router = layout.layers[0].router
    assert router is _router(model.model.layers[0].mlp)
    logits, weights, index = router(x)
    none = torch.zeros(E, dtype=torch.bool)
    ours_w, ours_i = layout.routing.route(layout.config, logits, K, none)
    assert torch.equal(ours_i, index) and torch.equal(ours_w, weights)


def _dropped_model(model: Any, kind: str, drop: dict[int, int]) -> Any:
    """The same model with expert ``drop[layer]`` physically removed from each layer."""
    config = copy.deepcopy(model.config)
    if kind in ("mixtral", "gpt_oss"):
        config.num_local_experts = E - 1
    else:
        config.num_experts = E - 1
    smaller = transformers.AutoModelForCausalLM.from_config(config).to(model.dtype).eval()
    smaller.set_experts_implementation("eager")
    state = {}
    for name, value in model.state_dict().items():
        parts = name.split(".")
        if "mlp" in parts:
            layer = int(parts[2])
            if parts[-2] == "experts" or (parts[-2] in ("gate", "router") and parts[-3] == "mlp"):
                keep = [e for e in range(E) if e != drop[layer]]
                value = value[keep]
        state[name] = value
    smaller.load_state_dict(state)
    return smaller


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_masked_experts_get_no_tokens_and_equal_a_model_without_them(
    kind: str, implementation: str
) -> None:
    model = tiny_moe(kind, implementation=implementation)
    layout = moe.moe_targets(model)
    drop = {0: 1, 1: 3, 2: 0}
    routed: dict[int, list[Any]] = {layer: [] for layer in range(LAYERS)}

    def pre(layer: int) -> Any:
        return lambda module, args: routed[layer].append(args[1].clone())

    handles = [
        d.mlp.experts.register_forward_pre_hook(pre(i)) for i, d in enumerate(model.model.layers)
    ]
    ids = _ids()
    try:
        before = _logits(model, ids)
        assert all(any((r == drop[i]).any() for r in routed[i]) for i in drop)  # used before
        for r in routed.values():
            r.clear()
        with moe.mask_experts(layout, {i: np.array([e]) for i, e in drop.items()}):
            masked = _logits(model, ids)
    finally:
        for h in handles:
            h.remove()
    assert all(not (r == drop[i]).any() for i in drop for r in routed[i])
    expected = _logits(_dropped_model(model, kind, drop), ids)
    torch.testing.assert_close(masked, expected, rtol=0, atol=_atol(model))
    # and the token-by-token oracle agrees
    oracle = _logits(_oracle_model(model, kind, experts={i: [e] for i, e in drop.items()}), ids)
    torch.testing.assert_close(masked, oracle, rtol=0, atol=_atol(model))
    assert torch.equal(_logits(model, ids), before)  # hooks removed


def test_masking_the_shared_expert_zeroes_its_output() -> None:
    model = tiny_moe("qwen2_moe")
    layout = moe.moe_targets(model)
    ids = _ids()
    with moe.mask_experts(layout, {1: np.array([E, 2])}):
        masked = _logits(model, ids)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.model.layers[1].mlp.shared_expert.down_proj.weight.zero_()
    with moe.mask_experts(moe.moe_targets(reference), {1: np.array([2])}):
        expected = _logits(reference, ids)
    assert torch.equal(masked, expected)
    oracle = _logits(_oracle_model(model, "qwen2_moe", experts={1: [E, 2]}), ids)
    torch.testing.assert_close(masked, oracle, rtol=0, atol=_atol(model))


# ----------------------------------------------------------------------------- controls
def test_random_controls_are_matched_and_reproducible() -> None:
    units = {(0, 1): np.array([0, 2, 5]), (2, 4): np.array([1]), (1, 0): np.array([], int)}
    sizes = (12, 12, 12, 12, 20)
    a = moe.random_neuron_control(units, sizes, np.random.default_rng(7))
    b = moe.random_neuron_control(units, sizes, np.random.default_rng(7))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    for key, index in units.items():
        assert len(a[key]) == len(index)
        assert not set(a[key]) & set(index)
        assert (a[key] < sizes[key[1]]).all()
    experts = {0: np.array([1, 4]), 2: np.array([0, 3])}
    c = moe.random_expert_control(experts, 4, 1, np.random.default_rng(1))
    again = moe.random_expert_control(experts, 4, 1, np.random.default_rng(1))
    assert c.keys() == again.keys() and all(np.array_equal(c[k], again[k]) for k in c)
    assert len(c[0]) == 1 and c[0][0] not in (1, 4)  # the only shared expert is taken
    assert len(c[2]) == 2 and not set(c[2]) & {0, 3} and (c[2] < 4).all()


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_one_clear_line() -> None:
    model = tiny_moe("qwen2_moe")
    layout = moe.moe_targets(model)
    cases = [
        (lambda: moe.deactivate_moe(layout, {(0, 9): np.array([0])}), "expert 9 is out of range"),
        (lambda: moe.deactivate_moe(layout, {(0, 1): np.array([12])}), "neuron 12 of expert 1"),
        (lambda: moe.deactivate_moe(layout, {(5, 1): np.array([0])}), "layer 5 is out of range"),
        (lambda: moe.mask_experts(layout, {0: np.arange(E)}), "routing is impossible"),
        (lambda: moe.mask_experts(layout, {0: np.array([0, 1, 2])}), "at most 2 routed"),
        (lambda: moe.mask_experts(layout, {0: np.array([5])}), "expert 5 is out of range"),
    ]
    for call, message in cases:
        with pytest.raises(ParameterError, match=message) as info:
            with call():
                pass
        assert "\n" not in str(info.value)
    dense = transformers.AutoModelForCausalLM.from_config(
        transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=INTER,
            num_hidden_layers=1,
            num_attention_heads=2,
        )
    )
    with pytest.raises(
        ParameterError, match=r"the model \(llama\) is dense, not a mixture of experts"
    ):
        moe.moe_targets(dense)


def test_activation_that_is_not_zero_at_zero_is_refused() -> None:
    model = tiny_moe("mixtral")
    model.model.layers[0].mlp.experts.act_fn = torch.nn.Sigmoid()
    layout = moe.moe_targets(model)
    weights = model.model.layers[0].mlp.experts.gate_up_proj.detach().clone()
    with pytest.raises(ParameterError, match="cannot be switched off by a zero gate"):
        with moe.deactivate_moe(layout, {(1, 0): np.array([1]), (0, 0): np.array([1])}):
            pass
    assert torch.equal(model.model.layers[0].mlp.experts.gate_up_proj, weights)
    assert (model.model.layers[1].mlp.experts.gate_up_proj[0, 1] != 0).any()  # restored


def test_offloaded_experts_are_refused() -> None:
    model = tiny_moe("qwen3_moe")
    layout = moe.moe_targets(model)
    model.model.layers[2].mlp.experts.to("meta")
    kept = model.model.layers[0].mlp.experts.gate_up_proj.detach().clone()
    with pytest.raises(ParameterError, match="experts of layer 2 are offloaded"):
        with moe.deactivate_moe(layout, {(0, 1): np.array([2]), (2, 1): np.array([2])}):
            pass
    assert torch.equal(model.model.layers[0].mlp.experts.gate_up_proj, kept)


def test_moe_with_dense_layers_is_refused() -> None:
    torch.manual_seed(0)
    config = _config("qwen2_moe")
    config.mlp_only_layers = [1]
    model = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(
        ParameterError, match="decoder layer 1 of the qwen2_moe model has no sparse"
    ):
        moe.moe_targets(model)


# ----------------------------------------------------------------------------- in ablate
ABLATE: dict[str, Any] = {
    "controls": 2,
    "seed": 3,
    "batch_tokens": 64,
    "device": "cpu",
    "dtype": "float32",
    "progress": False,
}


@pytest.fixture(scope="module")
def moe_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny Qwen2-MoE model, a MoE run of it with an identification per expert, held-out
    evaluation data, and a dense run (of a tiny Llama) beside it."""
    from langneurons.analysis import identify
    from langneurons.store import open_store

    from .conftest import moe_and_dense_runs

    built = moe_and_dense_runs(tmp_path_factory.mktemp("moe_ablation"), seed=2)
    model, dense, data, store = built["model"], built["dense"], built["heldout"], built["store"]
    opened = open_store(store, mode="r+")
    run = opened.open_run("moe")
    ident = identify(run, "lape", top_rate=0.1, rank="expert")
    opened.save_result("moe", "identification", "lape", ident)
    opened.save_result(
        "dense", "identification", "lape", identify(opened.open_run("dense"), "lape")
    )
    return {"model": model, "dense": dense, "data": data, "store": store, "ident": ident}


def _save(store: Any, run: str, name: str, ds: Any) -> None:
    from langneurons.store import open_store

    open_store(store, mode="r+").save_result(run, "identification", name, ds)


def _expert_mask(ident: Any, chosen: dict[int, list[int]]) -> Any:
    """An expert mask ``[language, layer, expert]``: ``chosen[layer]`` for the first language,
    expert 1 of layer 0 for the others."""
    import xarray as xr

    shape = (ident.sizes["language"], ident.sizes["layer"], ident.sizes["expert"])
    mask = np.zeros(shape, dtype=bool)
    for layer, experts in chosen.items():
        mask[0, layer, experts] = True
    mask[1:, 0, 1] = True
    return xr.Dataset(
        {"mask": (("language", "layer", "expert"), mask)},
        coords={"language": ident.language.values},
    )


def test_ablate_switches_off_neurons_inside_experts(moe_store: dict[str, Any]) -> None:
    from langneurons.analysis import deactivation_effects
    from langneurons.extract import engine
    from langneurons.extract.ablation import ablate, response_nll
    from langneurons.extract.corpus import read_records

    s = moe_store
    result = ablate(s["model"], s["store"], "moe", "lape", s["data"], name="n", **ABLATE)
    mask = s["ident"]["mask"].transpose("language", "layer", "expert", "neuron").values
    langs = [str(x) for x in s["ident"].language.values]
    assert result.attrs["moe_unit"] == "neuron"
    assert "per layer and expert" in result.attrs["control_rule"]
    assert result["n_neurons"].sel(deactivated=langs).values.tolist() == [
        int(mask[k].sum()) for k in range(len(langs))
    ]
    # each language's value is the NLL with its neurons off, recomputed here directly
    loaded = engine.load_model(s["model"], device="cpu", dtype="float32")
    targets = moe.moe_targets(loaded.model, loaded.plan)
    records = read_records(s["data"])
    lang = langs[0]
    units = moe_ablate.language_sets(s["ident"]["mask"], "neuron", [lang])[lang]
    own = [r for r in records if r.language == lang]
    kw = {"batch_tokens": 64, "max_length": 1024, "chat_template": False}
    with moe.deactivate_moe(targets, units):
        total, count = response_nll(loaded, own, **kw)
    assert result["nll"].sel(deactivated=lang, evaluated=lang).item() == pytest.approx(
        total / count, rel=1e-6
    )
    total, count = response_nll(loaded, own, **kw)
    assert result["nll"].sel(deactivated="none", evaluated=lang).item() == pytest.approx(
        total / count, rel=1e-6
    )
    assert np.isfinite(result["control_nll"].sel(deactivated=langs).values).all()
    effects = deactivation_effects(result, alpha=None)
    assert (
        effects["n_neurons"].values.tolist()
        == result["n_neurons"].sel(deactivated=langs).values.tolist()
    )


def test_ablate_masks_whole_experts(moe_store: dict[str, Any]) -> None:
    from langneurons.analysis import deactivation_effects
    from langneurons.extract.ablation import ablate

    s = moe_store
    _save(s["store"], "moe", "experts", _expert_mask(s["ident"], {0: [0, 4], 1: [2]}))
    result = ablate(s["model"], s["store"], "moe", "experts", s["data"], name="x", **ABLATE)
    assert result.attrs["moe_unit"] == "expert"
    langs = [str(x) for x in s["ident"].language.values]
    assert result["n_experts"].sel(deactivated=langs).values.tolist() == [3] + [1] * (
        len(langs) - 1
    )
    # the NLL changed when experts were masked, and the controls ran
    assert (result["nll"].sel(deactivated=langs[0]) != result["nll"].sel(deactivated="none")).all()
    assert np.isfinite(result["control_nll"].sel(deactivated=langs).values).all()
    effects = deactivation_effects(result, alpha=None)
    assert (
        effects["n_experts"].values.tolist()
        == result["n_experts"].sel(deactivated=langs).values.tolist()
    )
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from langneurons.reports.figures import deactivation_heatmap

    figure = deactivation_heatmap(effects)  # the dense figure draws a MoE ablation as is
    assert len(figure.axes) == 3  # heatmap, dominance, colour bar
    plt.close(figure)


def test_ablate_refuses_mismatched_masks_in_one_line(moe_store: dict[str, Any]) -> None:
    from langneurons.extract.ablation import ablate

    s = moe_store
    dense_ident = (
        s["ident"]
        .isel(expert=0)
        .drop_vars([v for v in s["ident"].coords if "expert" in v], errors="ignore")[["mask"]]
    )
    _save(s["store"], "moe", "flat", dense_ident)
    _save(s["store"], "dense", "experts", _expert_mask(s["ident"], {0: [0]}).isel(layer=[0, 1]))
    _save(s["store"], "moe", "all", _expert_mask(s["ident"], {1: [0, 1, 2, 3]}))
    cases = [
        ("moe", "flat", s["model"], "has no expert dim but run 'moe' is a mixture of experts"),
        ("dense", "experts", s["dense"], "has an expert dim but run 'dense' is dense"),
        ("moe", "all", s["model"], "routing is impossible"),
        ("moe", "lape", s["dense"], "deactivates neurons inside experts but the model is dense"),
    ]
    for run, ident, model, message in cases:
        with pytest.raises(ParameterError, match=message) as info:
            ablate(model, s["store"], run, ident, s["data"], name="bad", **ABLATE)
        assert "\n" not in str(info.value)


def test_cli_ablate_on_a_moe_run_resumes_bit_exact(
    moe_store: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from langneurons.extract import ablation
    from langneurons.store import open_store

    from .conftest import run_cli
    from .test_ablation_resume import assert_bit_identical

    s = moe_store
    args = [
        "--quiet", "ablate", "--model", s["model"], "--store", s["store"], "--run", "moe",
        "--identification", "experts_cli", "--data", s["data"], "--controls", "1",
        "--seed", "3", "--batch-tokens", "64", "--device", "cpu", "--dtype", "float32",
        "--checkpoint-seconds", "0",
    ]  # fmt: skip
    _save(s["store"], "moe", "experts_cli", _expert_mask(s["ident"], {1: [3]}))
    code, out, err = run_cli(capsys, *args, "--name", "whole")
    assert code == 0, err
    assert "mixture of experts: experts off; controls: same count of routed" in out
    whole = open_store(s["store"]).open_result("moe", "ablation", "whole").load()
    # killed inside its fourth unit, then resumed: the same bits
    original, calls = ablation._summed_nll, []

    def failing(*a: Any, **k: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("interrupted")
        return original(*a, **k)

    with monkeypatch.context() as patch:
        patch.setattr(ablation, "_summed_nll", failing)
        with pytest.raises(RuntimeError, match="interrupted"):
            run_cli(capsys, *args, "--name", "again")
    code, out, err = run_cli(capsys, *args, "--name", "again", "--resume")
    assert code == 0, err
    code, out, err = run_cli(
        capsys, "stats", "deactivation", s["store"], "--run", "moe", "--ablation", "again",
        "--alpha", "none", "--name", "again",
    )  # fmt: skip
    assert code == 0, err
    assert "mixture of experts: experts switched off" in out
    assert_bit_identical(
        open_store(s["store"]).open_result("moe", "ablation", "again").load(), whole
    )
    # a bad expert mask: one line, exit code of a parameter error
    _save(s["store"], "moe", "all_cli", _expert_mask(s["ident"], {0: [0, 1, 2]}))
    code, _, err = run_cli(capsys, *args[:9], "all_cli", *args[10:], "--name", "bad")
    assert code != 0
    assert err.strip() == (
        "langneurons: error: masking 3 of the 4 routed experts of layer 0 leaves fewer than "
        "top_k = 2 for each token: routing is impossible; mask at most 2 routed experts per layer"
    )


def test_ablate_masks_the_language_experts_of_stats_experts(
    moe_store: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from langneurons.store import open_store

    from .conftest import run_cli

    s = moe_store
    code, out, err = run_cli(
        capsys, "stats", "experts", s["store"], "--run", "moe", "--n-boot", "0",
        "--ratio", "1.2", "--name", "lexp",
    )  # fmt: skip
    assert code == 0, err
    experts = open_store(s["store"]).open_result("moe", "stats", "lexp")
    preferred = experts["preferred"].transpose("language", "layer", "expert").values
    code, out, err = run_cli(
        capsys, "--quiet", "ablate", "--model", s["model"], "--store", s["store"], "--run", "moe",
        "--identification", "lexp", "--language-experts", "--data", s["data"], "--controls", "1",
        "--device", "cpu", "--dtype", "float32",
    )  # fmt: skip
    assert code == 0, err
    assert "mixture of experts: experts off" in out
    result = open_store(s["store"]).open_result("moe", "ablation", "lexp")
    assert result.attrs["source"] == "stats" and result.attrs["moe_unit"] == "expert"
    langs = [str(x) for x in experts.language.values]
    assert result["n_experts"].sel(deactivated=langs).values.tolist() == [
        int(preferred[k].sum()) for k in range(len(langs))
    ]
    # without --language-experts the name is looked up among the identifications
    code, _, err = run_cli(
        capsys, "--quiet", "ablate", "--model", s["model"], "--store", s["store"], "--run", "moe",
        "--identification", "lexp", "--data", s["data"], "--name", "nope",
    )  # fmt: skip
    assert code != 0 and "lexp" in err and err.strip().count("\n") == 0


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_restores_weights_and_keeps_masked_experts_empty(kind: str) -> None:
    model = tiny_moe(kind, implementation="eager", dtype=torch.bfloat16)
    layout = moe.moe_targets(model)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = _ids()
    before = _logits(model, ids)
    seen: list[Any] = []
    handle = layout.layers[1].experts.register_forward_pre_hook(
        lambda m, a: seen.append(a[1].clone())
    )
    try:
        with (
            moe.deactivate_moe(layout, _units(layout, seed=4)),
            moe.mask_experts(layout, {1: np.array([0, 3])}),
        ):
            ablated = _logits(model, ids)
    finally:
        handle.remove()
    assert seen and all(not ((s == 0) | (s == 3)).any() for s in seen)
    assert not torch.equal(ablated, before)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert torch.equal(_logits(model, ids), before)
