"""Hook points of every registered architecture, checked against a hand computation.

Each tiny model is written to disk by ``tiny_model`` and loaded back the real way
(``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``). The oracle for the captured
activations is independent of the registry: a forward pre-hook on the MLP module (OPT: on
``fc1``) grabs the MLP input, and the gate / fc1 projection and the activation are recomputed by
hand from the layer's weights with ``torch.nn.functional`` and ``ACT2FN[name]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.activations import ACT2FN  # noqa: E402

from langneurons.errors import ParameterError  # noqa: E402
from langneurons.extract.architectures import (  # noqa: E402
    ARCHITECTURES,
    Architecture,
    capture,
    resolve,
    supported,
)
from langneurons.extract.tiny import (  # noqa: E402
    BOS_ID,
    BYTE_OFFSET,
    TINY_ARCHITECTURES,
    VOCAB_SIZE,
    tiny_model,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "我们一起学习语言模型。",
    "আমি বাংলায় গান গাই।",
    "ภาษาไทยเป็นภาษาที่สวยงาม",
]


def _linear(module: Any, x: Any) -> Any:
    """``module(x)`` recomputed from the weights of an ``nn.Linear``."""
    return F.linear(x, module.weight, module.bias)


@dataclass(frozen=True)
class Recipe:
    """How the test finds and recomputes one architecture's neurons, without the registry."""

    layers: str  # path to the decoder layers
    mlp: str  # module (relative to a layer) whose first forward input is the MLP input
    pre_activation: Callable[[Any, Any], Any]  # (layer, mlp input) -> gate / fc1 output
    hook_point: str
    activation: str
    neurons: int


def _gated(layers: str = "model.layers", activation: str = "silu") -> Recipe:
    return Recipe(
        layers,
        "mlp",
        lambda layer, x: _linear(layer.mlp.gate_proj, x),
        f"{layers}.{{i}}.mlp.act_fn",
        activation,
        64,
    )


RECIPES: dict[str, Recipe] = {
    "llama": _gated(),
    "mistral": _gated(),
    "qwen2": _gated(),
    "qwen3": _gated(),
    "gemma": _gated(activation="gelu_pytorch_tanh"),
    "gemma2": _gated(activation="gelu_pytorch_tanh"),
    "gemma3_text": _gated(activation="gelu_pytorch_tanh"),
    "gemma3": _gated("model.language_model.layers", "gelu_pytorch_tanh"),
    "phi3": Recipe(
        "model.layers",
        "mlp",
        # gate_up_proj is [gate; up]: the gate is the first half of the output features
        lambda layer, x: F.linear(x, layer.mlp.gate_up_proj.weight).chunk(2, dim=-1)[0],
        "model.layers.{i}.mlp.activation_fn",
        "silu",
        64,
    ),
    "gpt2": Recipe(
        "transformer.h",
        "mlp",
        # Conv1D stores its weight as (in, out)
        lambda layer, x: x @ layer.mlp.c_fc.weight + layer.mlp.c_fc.bias,
        "transformer.h.{i}.mlp.act",
        "gelu_new",
        64,
    ),
    "gpt_neox": Recipe(
        "gpt_neox.layers",
        "mlp",
        lambda layer, x: _linear(layer.mlp.dense_h_to_4h, x),
        "gpt_neox.layers.{i}.mlp.act",
        "gelu",
        64,
    ),
    "opt": Recipe(
        "model.decoder.layers",
        "fc1",
        lambda layer, x: _linear(layer.fc1, x),
        "model.decoder.layers.{i}.activation_fn",
        "relu",
        64,
    ),
    "bloom": Recipe(
        "transformer.h",
        "mlp",
        lambda layer, x: _linear(layer.mlp.dense_h_to_4h, x),
        "transformer.h.{i}.mlp.gelu_impl",
        "gelu_new",  # BloomGelu: the tanh approximation, 4 * hidden neurons
        128,
    ),
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    """The directory of one tiny model per architecture, built once per module."""
    cache: dict[str, Any] = {}

    def get(arch: str) -> Any:
        if arch not in cache:
            cache[arch] = tiny_model(arch, path=tmp_path_factory.mktemp(arch))
        return cache[arch]

    return get


@pytest.fixture(scope="module")
def llama(tiny_dir: Callable[[str], Any]) -> tuple[Any, Any]:
    """A tiny Llama model and its tokenizer, loaded from disk."""
    path = tiny_dir("llama")
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _no_hooks(plan: Any) -> bool:
    return all(not module._forward_hooks for module in plan.modules)


def test_every_tiny_architecture_is_registered_and_has_a_recipe() -> None:
    assert set(TINY_ARCHITECTURES) <= set(supported())
    assert set(RECIPES) == set(TINY_ARCHITECTURES)
    assert supported() == sorted(ARCHITECTURES)
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"} <= set(
        supported()
    )
    assert {"phi3", "gpt2", "gpt_neox", "opt", "bloom"} <= set(supported())


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_captured_activations_equal_hand_computation(
    arch: str, tiny_dir: Callable[[str], Any]
) -> None:
    recipe = RECIPES[arch]
    path = tiny_dir(arch)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == arch
    assert model.dtype == torch.float32

    # the tokenizer round-trips every script and stays inside the embedding matrix
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == BOS_ID
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert len(tokenizer) <= VOCAB_SIZE == model.get_input_embeddings().num_embeddings

    plan = resolve(model)
    layers = model.get_submodule(recipe.layers)
    n_layers = len(layers)
    assert n_layers == 2
    assert plan.n_layers == n_layers
    assert plan.hook_point == recipe.hook_point
    assert plan.activation == recipe.activation
    assert plan.neurons == recipe.neurons
    for i, module in enumerate(plan.modules):
        assert module is model.get_submodule(recipe.hook_point.format(i=i))
        assert module is layers[i].get_submodule(plan.hook_point.split("{i}.")[1])

    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    captured: dict[int, Any] = {}
    mlp_inputs: dict[int, Any] = {}
    layer_inputs: dict[int, Any] = {}
    oracle_handles = []
    for i, layer in enumerate(layers):
        oracle_handles.append(
            layer.get_submodule(recipe.mlp).register_forward_pre_hook(
                lambda m, args, i=i: mlp_inputs.__setitem__(i, args[0].detach().clone())
            )
        )
        oracle_handles.append(
            layer.register_forward_pre_hook(
                lambda m, args, kwargs, i=i: layer_inputs.__setitem__(
                    i, (args[0] if args else kwargs["hidden_states"]).detach().clone()
                ),
                with_kwargs=True,
            )
        )
    try:
        with torch.no_grad():
            with capture(plan, lambda i, act: captured.__setitem__(i, act.detach().clone())):
                assert all(len(module._forward_hooks) == 1 for module in plan.modules)
                out = model(**batch, output_hidden_states=True)
    finally:
        for handle in oracle_handles:
            handle.remove()
    assert _no_hooks(plan)

    # hidden_states[i] is what layer i received
    assert len(out.hidden_states) == n_layers + 1
    for i in range(n_layers):
        assert torch.equal(layer_inputs[i], out.hidden_states[i])

    act_fn = ACT2FN[plan.activation]
    shape = (*batch["input_ids"].shape, plan.neurons)
    positive = negative = 0.0
    with torch.no_grad():
        for i, layer in enumerate(layers):
            expected = act_fn(recipe.pre_activation(layer, mlp_inputs[i]))
            got = captured[i]
            assert got.dtype == expected.dtype == torch.float32
            assert got.reshape(shape).shape == expected.reshape(shape).shape == shape
            assert torch.allclose(got.reshape(shape), expected.reshape(shape), atol=1e-6)
            positive += (got > 0).float().mean().item() / n_layers
            negative += (got < 0).float().mean().item() / n_layers
            if arch == "gpt_neox":
                # parallel residual: the MLP reads the layer input through its own norm,
                # so here the MLP input follows from the hidden states alone
                assert torch.allclose(
                    mlp_inputs[i], layer.post_attention_layernorm(out.hidden_states[i])
                )
    # random init: a sizeable share of the neurons on each side of zero
    assert 0.25 < positive < 0.75
    if plan.activation == "relu":
        assert negative == 0.0
    else:
        assert 0.25 < negative < 0.75


def test_unknown_architecture_names_the_supported_ones() -> None:
    model = _Toy()
    message = (
        "architecture 'toy' is not supported (supported: bloom, gemma, gemma2, gemma3, "
        "gemma3_text, gpt2, gpt_neox, llama, mistral, opt, phi3, qwen2, qwen3); name the "
        "activation module with --hook-module PATTERN, e.g. 'model.layers.*.mlp.act_fn'"
    )
    with pytest.raises(ParameterError) as info:
        resolve(model)
    assert str(info.value) == message


@pytest.mark.parametrize("pattern", ["model.layers.*.mlp.act_fn", "model.layers.{i}.mlp.act_fn"])
def test_hook_module_pattern_resolves_llama(pattern: str, llama: tuple[Any, Any]) -> None:
    model, _ = llama
    default = resolve(model)
    plan = resolve(model, pattern)
    assert plan.hook_point == "model.layers.{i}.mlp.act_fn"
    assert plan.modules == default.modules
    assert all(a is b for a, b in zip(plan.modules, default.modules, strict=True))
    assert (plan.activation, plan.neurons) == ("silu", 64)
    assert plan.architecture is ARCHITECTURES["llama"]


def test_hook_module_pattern_elsewhere_drops_the_registry_metadata(
    llama: tuple[Any, Any],
) -> None:
    model, _ = llama
    plan = resolve(model, "model.layers.*.mlp.gate_proj")
    assert plan.modules == tuple(layer.mlp.gate_proj for layer in model.model.layers)
    assert (plan.activation, plan.neurons, plan.architecture) == (None, None, None)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (
            "model.layers.*.mlp.act",
            "hook module pattern 'model.layers.*.mlp.act' matches no module of "
            "LlamaForCausalLM: 'model.layers.0.mlp' has no submodule 'act' "
            "(it has: gate_proj, up_proj, down_proj, act_fn)",
        ),
        (
            "transformer.h.*.mlp.act",
            "hook module pattern 'transformer.h.*.mlp.act' matches no module of "
            "LlamaForCausalLM: the model has no submodule 'transformer' (it has: model, lm_head)",
        ),
        (
            "model.layers.mlp.act_fn",
            "hook module pattern 'model.layers.mlp.act_fn' is not a dotted module path with "
            "exactly one '*' or '{i}' as a whole component for the layer index, "
            "e.g. 'model.layers.*.mlp.act_fn'",
        ),
        (
            "model.layers.*.mlp.*",
            "hook module pattern 'model.layers.*.mlp.*' is not a dotted module path with "
            "exactly one '*' or '{i}' as a whole component for the layer index, "
            "e.g. 'model.layers.*.mlp.act_fn'",
        ),
    ],
)
def test_bad_pattern_messages(pattern: str, message: str, llama: tuple[Any, Any]) -> None:
    model, _ = llama
    with pytest.raises(ParameterError) as info:
        resolve(model, pattern)
    assert str(info.value) == message


# ---------------------------------------------------------------------- outside the registry
class _Block(torch.nn.Module):
    def __init__(self, act: Any, pair: bool = False) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 6)
        self.act = act
        if pair:
            self.pair = _Pair()

    def forward(self, x: Any) -> Any:
        h = self.act(self.fc(x))
        if hasattr(self, "pair"):
            self.pair(h)
        return h.sum(-1, keepdim=True).expand(*x.shape)


class _Pair(torch.nn.Module):
    def forward(self, x: Any) -> tuple[Any, Any]:
        return x, x


class _Toy(torch.nn.Module):
    """Three blocks; ``act`` may be shared across blocks or a plain function."""

    def __init__(self, act: str = "own", pair_from: int = 0) -> None:
        super().__init__()
        self.config = SimpleNamespace(model_type="toy")
        shared = torch.nn.GELU()
        acts = {"own": torch.nn.GELU, "shared": lambda: shared, "function": lambda: F.gelu}
        self.blocks = torch.nn.ModuleList(
            _Block(acts[act](), pair=i >= pair_from) for i in range(3)
        )

    def forward(self, x: Any) -> Any:
        for block in self.blocks:
            x = block(x)
        return x


def test_pattern_works_for_an_unregistered_architecture() -> None:
    model = _Toy()
    plan = resolve(model, "blocks.*.act")
    assert plan.modules == tuple(block.act for block in model.blocks)
    assert (plan.model_type, plan.hook_point) == ("toy", "blocks.{i}.act")
    assert (plan.activation, plan.neurons, plan.architecture) == (None, None, None)
    seen: list[tuple[int, tuple[int, ...]]] = []
    with capture(plan, lambda i, act: seen.append((i, tuple(act.shape)))):
        model(torch.ones(5, 4))
    assert seen == [(0, (5, 6)), (1, (5, 6)), (2, (5, 6))]
    assert _no_hooks(plan)


def test_shared_module_is_refused() -> None:
    with pytest.raises(ParameterError) as info:
        resolve(_Toy(act="shared"), "blocks.{i}.act")
    assert str(info.value) == (
        "hook module pattern 'blocks.{i}.act' names one module object shared by layers 0 and 1; "
        "a hook on it would fire for every layer and double-count, so name a module that each "
        "layer owns"
    )


def test_plain_function_is_explained() -> None:
    with pytest.raises(ParameterError) as info:
        resolve(_Toy(act="function"), "blocks.*.act")
    assert str(info.value) == (
        "hook module pattern 'blocks.*.act' matches no module of _Toy: 'blocks.0.act' is a "
        "plain function, not a torch module, so it cannot carry a forward hook; hook a module "
        "whose output is the activation"
    )


def test_pattern_with_missing_layers_is_refused() -> None:
    with pytest.raises(ParameterError) as info:
        resolve(_Toy(pair_from=1), "blocks.*.pair")
    assert str(info.value) == (
        "hook module pattern 'blocks.*.pair' matches layers [1, 2], not 0..1 without gaps; "
        "name a module that every decoder layer has"
    )


def test_non_tensor_output_is_refused_and_hooks_removed() -> None:
    model = _Toy()
    plan = resolve(model, "blocks.*.pair")
    with pytest.raises(ParameterError) as info:
        with capture(plan, lambda i, act: None):
            model(torch.ones(2, 4))
    assert str(info.value) == (
        "module 'blocks.0.pair' returned tuple, not a tensor; hook the activation module, "
        "whose output is a tensor"
    )
    assert _no_hooks(plan)


# ---------------------------------------------------------------------- hooks always clean up
def test_hooks_removed_after_exception_in_block(llama: tuple[Any, Any]) -> None:
    model, tokenizer = llama
    plan = resolve(model)
    assert _no_hooks(plan)
    with pytest.raises(RuntimeError, match="boom"):
        with capture(plan, lambda i, act: None):
            assert all(len(module._forward_hooks) == 1 for module in plan.modules)
            raise RuntimeError("boom")
    assert _no_hooks(plan)


def test_hooks_removed_after_exception_in_callback(llama: tuple[Any, Any]) -> None:
    model, tokenizer = llama
    plan = resolve(model)

    def fail(layer: int, act: Any) -> None:
        raise KeyError(f"callback failed at layer {layer}")

    with pytest.raises(KeyError, match="layer 0"):
        with torch.no_grad(), capture(plan, fail):
            model(**tokenizer("hello", return_tensors="pt"))
    assert _no_hooks(plan)
    # the model is untouched: a plain forward pass still runs
    with torch.no_grad():
        model(**tokenizer("hello", return_tensors="pt"))


def test_capture_sees_every_layer_once_per_forward(llama: tuple[Any, Any]) -> None:
    model, tokenizer = llama
    plan = resolve(model)
    calls: list[int] = []
    with torch.no_grad(), capture(plan, lambda i, act: calls.append(i)) as entered:
        assert entered is plan
        model(**tokenizer(TEXTS[:2], return_tensors="pt", padding=True))
    assert calls == [0, 1]
    assert _no_hooks(plan)


def test_register_refuses_to_overwrite_silently() -> None:
    with pytest.raises(ParameterError) as info:
        from langneurons.extract.architectures import register

        register(Architecture("llama", "model.layers", "mlp.act_fn", "hidden_act", None, True))
    assert str(info.value) == (
        "architecture 'llama' is already registered; pass replace=True to overwrite it"
    )


# ---------------------------------------------------------------------- tiny models
def test_tokenizer_round_trips_scripts_and_chat_template(llama: tuple[Any, Any]) -> None:
    _, tokenizer = llama
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids == [BOS_ID] + [BYTE_OFFSET + b for b in text.encode("utf-8")]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)

    messages = [{"role": "user", "content": TEXTS[1]}, {"role": "assistant", "content": "ok"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == f"<s><|user|>\n{TEXTS[1]}</s>\n<|assistant|>\nok</s>\n"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("</s>\n<|assistant|>\n")
    ids = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, return_dict=True)
    ids = ids["input_ids"]
    assert ids.count(BOS_ID) == 1 and ids[0] == BOS_ID
    assert tokenizer.decode(ids) == "<s>" + prompt.removeprefix("<s>")


def test_tiny_model_is_deterministic(tmp_path: Any) -> None:
    state = torch.get_rng_state()
    a = load_file(tiny_model("llama", seed=3, path=tmp_path / "a") / "model.safetensors")
    b = load_file(tiny_model("llama", seed=3, path=tmp_path / "b") / "model.safetensors")
    c = load_file(tiny_model("llama", seed=4, path=tmp_path / "c") / "model.safetensors")
    assert torch.equal(torch.get_rng_state(), state)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_tiny_model_sizes(tmp_path: Any) -> None:
    path = tiny_model("qwen2", path=tmp_path, layers=3, hidden=16, intermediate=24)
    config = transformers.AutoConfig.from_pretrained(path)
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (3, 16, 24)
    assert config.hidden_act == "silu"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"arch": "mamba"},
            "arch 'mamba' has no tiny model (available: llama, mistral, qwen2, qwen3, gemma, "
            "gemma2, gemma3_text, gemma3, phi3, gpt2, gpt_neox, opt, bloom, mixtral, qwen2_moe, "
            "qwen3_moe, olmoe, gpt_oss)",
        ),
        ({"arch": "mixtral", "experts": 0}, "experts must be a positive integer, not 0"),
        ({"arch": "olmoe", "experts": 4, "top_k": 5}, "top_k must be at most experts (4), not 5"),
        ({"hidden": 12}, "hidden must be a positive integer divisible by 8, not 12"),
        ({"layers": 0}, "layers must be a positive integer, not 0"),
        ({"seed": -1}, "seed must be a non-negative integer, not -1"),
    ],
)
def test_tiny_model_refuses_bad_parameters(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=f"^{re.escape(message)}$"):
        tiny_model(**kwargs)
