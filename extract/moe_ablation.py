"""Deactivation inside mixture-of-experts models: neurons of experts, and whole experts.

Two interventions, each a context manager that restores the model on exit (also on error):

- :func:`deactivate_moe` switches off neurons ``(layer, expert, neuron)``: the neuron's
  activation ``act(gate(x))`` is 0 on every token routed to that expert, exactly as the dense
  ablation zeroes the output of ``act_fn``. In the routed experts (fused 3-D ``gate_up_proj``
  weights, run by the eager loop, ``batched_mm`` or ``grouped_mm``) the neuron's gate row (and
  bias) is set to 0 while the block runs, so ``gate = 0`` and ``act(0) = 0`` on every token of
  that expert whichever implementation runs; this is exact only for activations with
  ``act(0) == 0`` (SiLU, GELU and its tanh form, ReLU, ...), which is checked on entry (an
  activation such as sigmoid is refused). In a shared expert (a plain gated MLP that sees every
  token) the output of its ``act_fn`` is multiplied by a 0/1 mask, as in dense models.
- :func:`mask_experts` removes whole experts: the router's logits of the masked routed experts
  are set to -inf before the softmax and top-k (each token goes to its next-best experts: the
  usual router-masking intervention), and a masked shared expert's output is set to 0. At least
  ``top_k`` routed experts of a layer must stay unmasked, or top-k routing is impossible.

Experts are numbered as in a MoE run (docs/design/moe.md): routed experts ``0..E-1``, then the
shared experts ``E..E+S-1``. :func:`random_neuron_control` and :func:`random_expert_control`
draw the matched random sets (same count per layer and expert; same count of routed and of shared
experts per layer) from a seeded generator.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from langneurons.errors import ParameterError
from langneurons.extract._moe import (
    MOE_ARCHITECTURES,
    MoePlan,
    looks_moe,
    resolve_moe,
)
from langneurons.extract._torchio import require_torch

#: Neuron units: ``{(layer, expert): neuron indices}``.
NeuronUnits = Mapping[tuple[int, int], np.ndarray]
#: Expert units: ``{layer: expert indices}`` (routed ``0..E-1``, shared ``E..E+S-1``).
ExpertUnits = Mapping[int, np.ndarray]


# ----------------------------------------------------------------------------- routing rules
def _softmax_topk(
    logits: Any, top_k: int, masked: Any, *, normalize: bool, cast: bool
) -> tuple[Any, Any]:
    """Softmax over the experts, then top-k (the rule of Mixtral, Qwen-MoE and OLMoE routers).

    ``masked`` (bool, [experts]) sets those logits to -inf first; the top-k is taken over the
    probabilities with the masked ones below every other, so a masked expert is never chosen.
    """
    torch = require_torch()
    logits = logits.masked_fill(masked, float("-inf"))
    probs = torch.nn.functional.softmax(logits, dim=-1, dtype=torch.float)
    key = probs.masked_fill(masked, -1.0)
    _, index = torch.topk(key, top_k, dim=-1)
    value = probs.gather(-1, index)
    if normalize:
        value = value / value.sum(dim=-1, keepdim=True)
    if cast:
        value = value.to(logits.dtype)
    return value, index


def _topk_softmax(logits: Any, top_k: int, masked: Any) -> tuple[Any, Any]:
    """Top-k of the logits, then a softmax over those k (GPT-OSS), masked logits at -inf."""
    torch = require_torch()
    logits = logits.masked_fill(masked, float("-inf"))
    value, index = torch.topk(logits, top_k, dim=-1)
    return torch.nn.functional.softmax(value, dim=1, dtype=value.dtype), index


@dataclasses.dataclass(frozen=True)
class Routing:
    """How one architecture's router turns logits into the top-k experts and their weights.

    ``rule``: ``"softmax_topk"`` (softmax over all experts, then top-k) or ``"topk_softmax"``
    (top-k logits, then a softmax over them); ``normalize``: renormalise the top-k weights --
    True, False, or the config attribute that says (``norm_topk_prob``); ``cast``: the weights
    are cast back to the logits' dtype (Qwen-MoE, OLMoE) or left float32 (Mixtral). The router's
    forward must return ``(logits, weights, indices)``.
    """

    rule: str = "softmax_topk"
    normalize: bool | str = True
    cast: bool = False

    def route(self, config: Any, logits: Any, top_k: int, masked: Any) -> tuple[Any, Any]:
        """The top-k weights and indices with ``masked`` experts excluded."""
        if self.rule == "topk_softmax":
            return _topk_softmax(logits, top_k, masked)
        normalize = self.normalize
        if isinstance(normalize, str):
            normalize = bool(getattr(config, normalize, False))
        return _softmax_topk(logits, top_k, masked, normalize=normalize, cast=self.cast)


_QWEN_ROUTING = Routing(normalize="norm_topk_prob", cast=True)
#: The routing rule of each MoE ``model_type`` of the extraction registry, checked against the
#: routers of transformers 5.24 (tests/test_moe_ablation.py reproduces each router bit for bit).
ROUTING: Mapping[str, Routing] = MappingProxyType(
    {
        "mixtral": Routing(normalize=True, cast=False),
        "qwen2_moe": _QWEN_ROUTING,
        "qwen3_moe": _QWEN_ROUTING,
        "olmoe": _QWEN_ROUTING,
        "gpt_oss": Routing(rule="topk_softmax"),
    }
)


# ----------------------------------------------------------------------------- the layout
@dataclasses.dataclass(frozen=True)
class MoeLayer:
    """The router, the fused routed experts and the shared experts (MLP, activation) of a layer."""

    router: Any
    experts: Any
    shared: tuple[Any, ...]
    shared_act: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class MoeTargets:
    """What the interventions touch in a loaded MoE model, and its expert sizes.

    ``expert_neurons[e]`` is the neuron count of expert e (routed ``0..E-1``, then shared).
    """

    model_type: str
    config: Any
    routing: Routing
    layers: tuple[MoeLayer, ...]
    n_experts: int
    n_shared: int
    top_k: int
    expert_neurons: tuple[int, ...]

    @property
    def n_layers(self) -> int:
        """Decoder layers."""
        return len(self.layers)

    @property
    def max_neurons(self) -> int:
        """The ``neuron`` dimension of a MoE run: the widest expert."""
        return max(self.expert_neurons)


def moe_targets(model: Any, plan: MoePlan | None = None) -> MoeTargets:
    """The routers, experts and shared experts of every decoder layer of a MoE ``model``.

    ``plan`` is the model's :class:`~langneurons.extract._moe.MoePlan` (resolved when None).

    Raises
    ------
    ParameterError
        The model is dense, or a mixture of experts whose routing is not in the registry.
    """
    require_torch()
    model_type = str(getattr(getattr(model, "config", None), "model_type", "") or "")
    if plan is None:
        if model_type not in MOE_ARCHITECTURES and not looks_moe(model):
            raise ParameterError(
                f"the model ({model_type or type(model).__name__}) is dense, not a mixture of "
                "experts; a per-expert mask needs the MoE model it was identified on"
            )
        plan = resolve_moe(model)
    routing = ROUTING.get(plan.model_type)
    if routing is None:
        raise ParameterError(
            f"the router of model type {plan.model_type!r} has no routing rule for masking "
            f"(known: {', '.join(sorted(ROUTING))}); deactivate neurons instead of experts"
        )
    decoder = model.get_submodule(plan.layout.layers)
    layers = []
    for i, layer in enumerate(decoder):
        block = layer.get_submodule(plan.layout.block)
        shared = (block.get_submodule(plan.layout.shared),) if plan.layout.shared else ()
        layers.append(
            MoeLayer(
                router=block.get_submodule(plan.layout.router),
                experts=plan.experts[i],
                shared=shared,
                shared_act=tuple(plan.shared[i]),
            )
        )
    config = model.config
    get = getattr(config, "get_text_config", None)
    return MoeTargets(
        model_type=plan.model_type,
        config=get(decoder=True) if callable(get) else config,
        routing=routing,
        layers=tuple(layers),
        n_experts=plan.n_experts,
        n_shared=plan.n_shared,
        top_k=plan.top_k,
        expert_neurons=tuple(plan.expert_neurons),
    )


def _transposed(experts: Any) -> bool:
    return bool(getattr(experts, "is_transposed", False))


# ----------------------------------------------------------------------------- checks
def _as_index(value: Any) -> np.ndarray:
    out = np.asarray(value)
    if out.size == 0:
        return np.zeros(0, dtype=np.int64)
    if out.ndim != 1 or not np.issubdtype(out.dtype, np.integer):
        raise ParameterError(f"indices must be a 1-D list of integers, got {value!r}")
    return out.astype(np.int64)


def _check_layer(layout: MoeTargets, layer: int) -> MoeLayer:
    if not 0 <= layer < layout.n_layers:
        raise ParameterError(
            f"layer {layer} is out of range: the {layout.model_type} model has layers "
            f"0..{layout.n_layers - 1}"
        )
    return layout.layers[layer]


def _check_expert(layout: MoeTargets, expert: int) -> None:
    total = layout.n_experts + layout.n_shared
    if not 0 <= expert < total:
        raise ParameterError(
            f"expert {expert} is out of range: the {layout.model_type} model has experts "
            f"0..{total - 1} ({layout.n_experts} routed"
            + (f", then {layout.n_shared} shared)" if layout.n_shared else ")")
        )


def check_neuron_units(layout: MoeTargets, units: NeuronUnits) -> dict[tuple[int, int], np.ndarray]:
    """The units as sorted unique int64 indices, checked against the model's experts."""
    out = {}
    for (layer, expert), index in units.items():
        idx = np.unique(_as_index(index))
        if not idx.size:
            continue
        _check_layer(layout, int(layer))
        _check_expert(layout, int(expert))
        limit = layout.expert_neurons[int(expert)]
        if idx[0] < 0 or idx[-1] >= limit:
            raise ParameterError(
                f"neuron {int(idx[-1] if idx[-1] >= limit else idx[0])} of expert {expert} in "
                f"layer {layer} is out of range: that expert has neurons 0..{limit - 1}"
            )
        out[(int(layer), int(expert))] = idx
    return out


def check_expert_units(layout: MoeTargets, units: ExpertUnits) -> dict[int, np.ndarray]:
    """The expert sets as sorted unique int64 indices, checked: at least top_k routed experts of
    every layer must stay unmasked."""
    out = {}
    for layer, index in units.items():
        idx = np.unique(_as_index(index))
        if not idx.size:
            continue
        _check_layer(layout, int(layer))
        for expert in (idx[0], idx[-1]):
            _check_expert(layout, int(expert))
        routed = int((idx < layout.n_experts).sum())
        if layout.n_experts - routed < layout.top_k:
            raise ParameterError(
                f"masking {routed} of the {layout.n_experts} routed experts of layer {layer} "
                f"leaves fewer than top_k = {layout.top_k} for each token: routing is impossible; "
                f"mask at most {layout.n_experts - layout.top_k} routed experts per layer"
            )
        out[int(layer)] = idx
    return out


# ----------------------------------------------------------------------------- neurons
def _gate_rows(experts: Any, neurons: np.ndarray) -> tuple[str, Any, str | None]:
    """The parameter holding the pre-activations, the rows of ``neurons`` in it, and the bias."""
    torch = require_torch()
    index = torch.as_tensor(neurons, dtype=torch.int64)
    if getattr(experts, "has_gate", True):
        name = "gate_up_proj"
        if not getattr(experts, "is_concatenated", True):
            index = index * 2  # interleaved [gate0, up0, gate1, up1, ...]
    else:
        name = "up_proj"
    bias = f"{name}_bias" if getattr(experts, "has_bias", False) else None
    return name, index, bias


def _check_act_zero(experts: Any, where: str) -> None:
    """Refuse offloaded experts, and experts whose gating is not 0 at a zero gate (a zero gate
    row would not switch the neuron off). The experts' own ``_apply_gate`` (``act(gate) * up``,
    or GPT-OSS's clamped GLU) is evaluated on a gate of 0 and an up of 1, in the layout of
    ``gate_up_proj``."""
    torch = require_torch()
    weight = experts.gate_up_proj if hasattr(experts, "gate_up_proj") else experts.up_proj
    if weight.is_meta:  # offloaded: an edit of these weights would change nothing
        raise ParameterError(
            f"the experts of {where} are offloaded (on the meta device), so their neurons cannot "
            "be switched off; load the model without offloading (no device_map disk or CPU offload)"
        )
    if not getattr(experts, "has_gate", True):
        with torch.no_grad():
            value = experts.act_fn(torch.zeros(4, dtype=weight.dtype, device=weight.device))
    else:
        gate_up = torch.ones(1, 8, dtype=weight.dtype, device=weight.device)
        if getattr(experts, "is_concatenated", True):
            gate_up[:, :4] = 0
        else:
            gate_up[:, ::2] = 0
        apply = getattr(experts, "_apply_gate", None)
        with torch.no_grad():
            if callable(apply):
                value = apply(gate_up)
            else:
                gate, up = gate_up.chunk(2, dim=-1)
                value = experts.act_fn(gate) * up
    if not bool((value == 0).all()):
        raise ParameterError(
            f"the activation of the experts of {where} is {float(value.flatten()[0])!r} at 0, "
            "not 0, so their neurons cannot be switched off by a zero gate; deactivate whole "
            "experts instead"
        )


@contextlib.contextmanager
def deactivate_moe(layout: MoeTargets, units: NeuronUnits) -> Iterator[None]:
    """Switch off neurons inside experts while the block runs.

    Parameters
    ----------
    layout
        :func:`moe_layout` of the model.
    units
        ``{(layer, expert): neuron indices}``; routed experts ``0..E-1``, shared ``E..E+S-1``.

    Each neuron's activation ``act(gate(x))`` is 0 on every token the expert processes. Routed
    experts: the neuron's gate row of the fused ``gate_up_proj`` (and its bias) is zeroed, and
    restored bit for bit on exit; ``act(0) == 0`` is checked. Shared experts: a forward hook
    multiplies the output of their ``act_fn`` by a 0/1 mask (the dense rule).
    """
    torch = require_torch()
    checked = check_neuron_units(layout, units)
    saved: list[tuple[Any, Any, Any, Any]] = []  # (parameter, expert, rows, original values)
    handles: list[Any] = []
    checked_layers: set[int] = set()

    def hook_for(keep: Any) -> Callable[..., Any]:
        def hook(module: Any, args: Any, output: Any) -> Any:
            return output * keep.to(output.dtype)

        return hook

    try:
        with torch.no_grad():
            for (layer, expert), neurons in checked.items():
                found = layout.layers[layer]
                if expert >= layout.n_experts:
                    s = expert - layout.n_experts
                    keep = torch.ones(layout.expert_neurons[expert], dtype=torch.bool)
                    keep[torch.as_tensor(neurons)] = False
                    device = next(found.shared[s].parameters()).device
                    handle = found.shared_act[s].register_forward_hook(hook_for(keep.to(device)))
                    handles.append(handle)
                    continue
                experts = found.experts
                if layer not in checked_layers:  # once per layer, not per expert
                    _check_act_zero(experts, f"layer {layer}")
                    checked_layers.add(layer)
                name, rows, bias = _gate_rows(experts, neurons)
                for pname, axis in ((name, -1 if _transposed(experts) else -2), (bias, -1)):
                    if pname is None:
                        continue
                    param = getattr(experts, pname)
                    r = rows.to(param.device)
                    view = param[expert]
                    original = view.index_select(axis + view.ndim if axis < 0 else axis, r).clone()
                    saved.append((param, expert, (axis, r), original))
                    view.index_fill_(axis + view.ndim, r, 0)
        yield
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for param, expert, (axis, r), original in reversed(saved):
                view = param[expert]
                view.index_copy_(axis + view.ndim, r, original)


# ----------------------------------------------------------------------------- experts
@contextlib.contextmanager
def mask_experts(layout: MoeTargets, units: ExpertUnits) -> Iterator[None]:
    """Remove whole experts while the block runs.

    Parameters
    ----------
    layout
        :func:`moe_layout` of the model.
    units
        ``{layer: expert indices}``; routed experts ``0..E-1``, shared ``E..E+S-1``.

    A masked routed expert's router logit is -inf before the softmax and top-k (its tokens go to
    the next-best experts, whose weights are renormalised as the router's rule says); a masked
    shared expert's output is 0. At least ``top_k`` routed experts per layer must stay unmasked.
    """
    torch = require_torch()
    checked = check_expert_units(layout, units)
    handles: list[Any] = []
    routing = layout.routing

    def router_hook(masked: Any) -> Callable[..., Any]:
        def hook(module: Any, args: Any, output: Any) -> Any:
            logits = output[0]
            weights, index = routing.route(layout.config, logits, layout.top_k, masked)
            return (logits.masked_fill(masked, float("-inf")), weights, index)

        return hook

    def zero_hook(module: Any, args: Any, output: Any) -> Any:
        return torch.zeros_like(output)

    try:
        for layer, experts in checked.items():
            found = layout.layers[layer]
            routed = experts[experts < layout.n_experts]
            if routed.size:
                masked = torch.zeros(layout.n_experts, dtype=torch.bool)
                masked[torch.as_tensor(routed)] = True
                masked = masked.to(found.router.weight.device)
                handles.append(found.router.register_forward_hook(router_hook(masked)))
            for shared in experts[experts >= layout.n_experts]:
                module = found.shared[int(shared) - layout.n_experts]
                handles.append(module.register_forward_hook(zero_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------------- controls
def random_neuron_control(
    units: NeuronUnits, expert_neurons: tuple[int, ...] | np.ndarray, rng: np.random.Generator
) -> dict[tuple[int, int], np.ndarray]:
    """As many neurons per (layer, expert) as ``units`` has, drawn from the expert's others.

    Only the expert's real neurons (``< expert_neurons[expert]``) are drawn, never padding.
    """
    out = {}
    for (layer, expert), index in sorted(units.items()):
        index = np.asarray(index, dtype=np.int64)
        others = np.setdiff1d(np.arange(int(expert_neurons[expert])), index)
        take = min(len(index), len(others))
        out[(layer, expert)] = (
            np.sort(rng.choice(others, size=take, replace=False)) if take else index[:0]
        )
    return out


def random_expert_control(
    units: ExpertUnits, n_experts: int, n_shared: int, rng: np.random.Generator
) -> dict[int, np.ndarray]:
    """As many routed and shared experts per layer as ``units`` has, drawn from the layer's
    other routed and other shared experts."""
    out = {}
    for layer, index in sorted(units.items()):
        index = np.asarray(index, dtype=np.int64)
        drawn = []
        for low, high in ((0, n_experts), (n_experts, n_experts + n_shared)):
            own = index[(index >= low) & (index < high)]
            others = np.setdiff1d(np.arange(low, high), own)
            take = min(len(own), len(others))
            if take:
                drawn.append(rng.choice(others, size=take, replace=False))
        out[layer] = np.sort(np.concatenate(drawn)).astype(np.int64) if drawn else index[:0]
    return out


__all__ = [
    "ExpertUnits",
    "ROUTING",
    "MoeLayer",
    "MoeTargets",
    "NeuronUnits",
    "Routing",
    "check_expert_units",
    "check_neuron_units",
    "deactivate_moe",
    "mask_experts",
    "moe_targets",
    "random_expert_control",
    "random_neuron_control",
]
