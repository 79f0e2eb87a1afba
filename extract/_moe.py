"""Mixture-of-experts models: where the router and the experts are, and per-expert counting.

A neuron of a mixture-of-experts (MoE) model lives inside one expert, and an expert sees only
the tokens its router sends it (docs/design/moe.md). The neuron of expert ``e`` is
``act(gate_e(x))`` on the tokens routed to ``e`` -- not multiplied by ``up_e(x)``, as in dense
gated MLPs (:mod:`langneurons.extract.architectures`). Shared experts (Qwen2-MoE) are ordinary
gated MLPs that every token passes through; they get their own expert index after the routed
experts.

How the counts are taken. transformers 5.24 keeps the routed experts of a layer in one module
with fused 3-D weights (``gate_up_proj``: ``[E, 2I, H]``, or ``[E, H, 2I]`` interleaved for
GPT-OSS) and dispatches its forward to an *experts implementation* (``eager``, ``batched_mm``,
``grouped_mm`` -- the default -- or GPU kernels), each of which orders the (token, expert) pairs
its own way. A forward pre-hook on the experts module reads what every implementation receives
(the hidden states and the router's top-k indices) and, for the three implementations of
transformers itself, reproduces the order in which their rows reach the gate activation
(:func:`row_order`); a forward hook on the experts' ``act_fn`` (GPT-OSS: a wrapper of
``_apply_gate``) then counts the activations the model computes anyway, per (role, expert,
neuron). Two checks guard the reproduced order: the first and last rows of each layer's first
activation call of a unit are recomputed from the weights and must match (a transformers
version that orders rows otherwise is refused, not miscounted), and a hook after the experts'
forward checks that every routed pair was seen. For any other implementation (or
``MoeAccumulator(recompute=True)``) the gate of the routed pairs is recomputed from the weights
(:func:`expert_gate`: sorted by expert, one grouped matmul over the gate halves), which costs
about a third of the experts' multiply-adds more. Both ways give the same counts;
tests/test_moe_extract.py checks eager, batched_mm, grouped_mm and the recompute against an
unbatched oracle. Shared experts are counted from a forward hook on their activation module, as
dense layers are. On a GPU nothing here waits for the device: the spot checks record a mismatch
in a device flag that :meth:`MoeAccumulator.verify` reads once, after the batches, and run on a
layer's first batch only (measured on an H200, bfloat16, Qwen3-MoE proportions: 1.40x a bare
forward before these two changes, 1.12x after both, 1.19x with per-sequence counts;
benchmarks/_gpu_moe_check.py).

Why this module is long: the registry, the hooks and the accumulator share the row-order
contract of the experts implementations, and splitting them would put one fragile invariant
(which row is which (token, expert) pair) in two places.

Torch is imported lazily; the registry works without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from langneurons.errors import ParameterError

log = logging.getLogger(__name__)

#: Config attributes whose positive value marks a mixture of experts.
EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


@dataclass(frozen=True)
class MoeArchitecture:
    """Where the routing and the experts of one MoE architecture are.

    Parameters
    ----------
    model_type
        The transformers ``config.model_type``.
    layers
        Dotted path from the loaded causal LM to the decoder layers.
    block
        Dotted path from one decoder layer to the sparse MoE block.
    router, experts
        Attributes of the block: the top-k router and the fused experts module (a
        ``@use_experts_implementation`` class called as ``experts(hidden, top_k_index, ...)``).
    shared
        Attribute of the block holding a shared (always-on) gated MLP, or None.
    experts_key, top_k_key, neurons_key, shared_neurons_key
        Config attributes: routed experts, experts per token, neurons per routed expert, neurons
        of the shared expert.
    gate_layout
        ``"concatenated"``: ``gate_up_proj`` is ``[E, 2I, H]`` with the gate rows first (Mixtral,
        Qwen-MoE, OLMoE); ``"interleaved_transposed"``: ``[E, H, 2I]`` with gate columns at even
        positions and a ``gate_up_proj_bias`` (GPT-OSS).
    clamped_glu
        GPT-OSS's activation: ``g * sigmoid(alpha * g)`` of the gate clamped at ``limit``
        (``swiglu_alpha`` / ``swiglu_limit`` of the experts module) instead of ``act_fn``.
    """

    model_type: str
    experts_key: str
    neurons_key: str
    layers: str = "model.layers"
    block: str = "mlp"
    router: str = "gate"
    experts: str = "experts"
    shared: str | None = None
    top_k_key: str = "num_experts_per_tok"
    shared_neurons_key: str | None = None
    gate_layout: str = "concatenated"
    clamped_glu: bool = False
    note: str = ""

    @property
    def hook_point(self) -> str:
        """The dotted path of the hooked experts module, with ``{i}`` for the layer index."""
        return f"{self.layers}.{{i}}.{self.block}.{self.experts}"


_BUILTIN = (
    MoeArchitecture("mixtral", "num_local_experts", "intermediate_size"),
    MoeArchitecture(
        "qwen2_moe",
        "num_experts",
        "moe_intermediate_size",
        shared="shared_expert",
        shared_neurons_key="shared_expert_intermediate_size",
        note="one shared expert (its own intermediate size) scaled by a sigmoid "
        "shared_expert_gate; the gate scales the output only, so the shared expert's neurons "
        "are act(gate_proj(x))",
    ),
    MoeArchitecture("qwen3_moe", "num_experts", "moe_intermediate_size"),
    MoeArchitecture("olmoe", "num_experts", "intermediate_size"),
    MoeArchitecture(
        "gpt_oss",
        "num_local_experts",
        "intermediate_size",
        router="router",
        gate_layout="interleaved_transposed",
        clamped_glu=True,
        note="the neuron is glu = g * sigmoid(alpha * g) with g = min(gate, limit); "
        "not multiplied by (up + 1)",
    ),
)

_REGISTRY: dict[str, MoeArchitecture] = {layout.model_type: layout for layout in _BUILTIN}

#: Read-only view of the MoE registry, keyed by ``config.model_type``.
MOE_ARCHITECTURES: Mapping[str, MoeArchitecture] = MappingProxyType(_REGISTRY)


def moe_supported() -> list[str]:
    """The MoE ``model_type`` values the registry knows, sorted."""
    return sorted(_REGISTRY)


@dataclass(frozen=True)
class MoePlan:
    """The modules to hook in one loaded MoE model and the sizes of its experts.

    ``experts[layer]`` is the fused experts module of a layer, ``shared[layer]`` the activation
    modules of its shared experts (empty tuples without shared experts). Expert indices: routed
    experts ``0..n_experts-1``, then shared experts. ``neurons`` is the widest expert;
    ``expert_neurons[x]`` the width of expert ``x``.
    """

    model_type: str
    hook_point: str
    layout: MoeArchitecture
    experts: tuple[Any, ...]
    shared: tuple[tuple[Any, ...], ...]
    n_experts: int
    n_shared: int
    top_k: int
    activation: str
    expert_neurons: tuple[int, ...]

    @property
    def n_layers(self) -> int:
        """The number of decoder layers (all sparse)."""
        return len(self.experts)

    @property
    def neurons(self) -> int:
        """The neuron axis: the widest expert."""
        return max(self.expert_neurons)

    @property
    def modules(self) -> tuple[Any, ...]:
        """Refused: a MoE model has no one activation module per layer (commands written for
        dense models ask for it)."""
        raise ParameterError(
            f"this command hooks one activation module per layer, but the model "
            f"({self.model_type}) is a mixture of experts, counted per expert; use a command "
            "that supports mixture-of-experts runs"
        )

    @property
    def architecture(self) -> None:
        """No dense architecture entry (kept so code that asks a dense plan gets None)."""
        return None

    def moe_attr(self) -> dict[str, Any]:
        """The run attribute ``moe`` of docs/design/moe.md."""
        return {
            "n_experts": self.n_experts,
            "n_shared": self.n_shared,
            "top_k": self.top_k,
            "model_type": self.model_type,
        }


def is_moe_plan(plan: Any) -> bool:
    """True for a :class:`MoePlan`."""
    return isinstance(plan, MoePlan)


def _config_int(config: Any, key: str, model_type: str) -> int:
    value = getattr(config, key, None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(
            f"the {model_type} config has '{key}' = {value!r}; expected a positive integer, so "
            "the model's routing cannot be read (is the config complete?)"
        )
    return value


def looks_moe(model: Any) -> bool:
    """True when a model seems to be a mixture of experts (config keys or experts modules)."""
    config = getattr(model, "config", None)
    get_text = getattr(config, "get_text_config", None)
    config = get_text(decoder=True) if callable(get_text) else config
    for key in EXPERT_COUNT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            return True
    modules = getattr(model, "modules", None)
    if callable(modules):
        return any(type(m).__name__.endswith("Experts") for m in modules())
    return False


def resolve_moe(model: Any) -> MoePlan:
    """The experts modules and sizes of a loaded MoE model from the registry.

    Raises
    ------
    ParameterError
        The ``model_type`` is not in the registry, a registered module is missing (a
        transformers version with another layout), or some decoder layers are dense.
    """
    config = model.config
    get_text = getattr(config, "get_text_config", None)
    config = get_text(decoder=True) if callable(get_text) else config
    model_type = str(getattr(model.config, "model_type", "") or "")
    layout = _REGISTRY.get(model_type)
    if layout is None:
        raise ParameterError(
            f"architecture '{model_type}' is a mixture of experts whose routing langneurons "
            f"cannot read (supported MoE: {', '.join(moe_supported())}); extract a supported model"
        )
    n_experts = _config_int(config, layout.experts_key, model_type)
    top_k = _config_int(config, layout.top_k_key, model_type)
    neurons = _config_int(config, layout.neurons_key, model_type)
    shared_neurons = (
        _config_int(config, layout.shared_neurons_key, model_type)
        if layout.shared_neurons_key
        else 0
    )
    try:
        layers = model.get_submodule(layout.layers)
    except AttributeError:
        raise ParameterError(
            f"the {model_type} model has no '{layout.layers}' (the MoE registry's layer path); "
            "its routing cannot be read with this transformers version"
        ) from None
    experts: list[Any] = []
    shared: list[tuple[Any, ...]] = []
    for i, layer in enumerate(layers):
        where = f"{layout.layers}.{i}.{layout.block}"
        try:
            block = layer.get_submodule(layout.block)
            module = block.get_submodule(layout.experts)
            block.get_submodule(layout.router)
        except AttributeError:
            raise ParameterError(
                f"decoder layer {i} of the {model_type} model has no sparse block with "
                f"'{layout.router}' and '{layout.experts}' at '{where}' (a dense layer, or "
                "another transformers layout); per-expert counting needs every layer sparse"
            ) from None
        if getattr(module, "gate_up_proj", None) is None or getattr(module, "num_experts", 0) != (
            n_experts
        ):
            raise ParameterError(
                f"'{where}.{layout.experts}' of the {model_type} model has no fused gate_up_proj "
                f"for {n_experts} experts; its routing cannot be read with this transformers "
                "version"
            )
        experts.append(module)
        if layout.shared is not None:
            try:
                shared.append((block.get_submodule(f"{layout.shared}.act_fn"),))
            except AttributeError:
                raise ParameterError(
                    f"'{where}' of the {model_type} model has no shared expert "
                    f"'{layout.shared}.act_fn'; its routing cannot be read with this "
                    "transformers version"
                ) from None
        else:
            shared.append(())
    n_shared = len(shared[0]) if shared else 0
    activation = "clamped_swiglu" if layout.clamped_glu else str(config.hidden_act)
    widths = (neurons,) * n_experts + (shared_neurons,) * n_shared
    return MoePlan(
        model_type,
        layout.hook_point,
        layout,
        tuple(experts),
        tuple(shared),
        n_experts,
        n_shared,
        top_k,
        activation,
        widths,
    )


# --------------------------------------------------------------------------- hooks
def expert_gate(plan: MoePlan, layer: int, x: Any, sizes: Any, expert_ids: Any) -> Any:
    """The neuron values ``act(gate_e(x))`` of routed (token, expert) pairs sorted by expert.

    ``x``: ``[S, H]`` hidden states of the pairs, grouped by expert in ascending order;
    ``sizes``: ``[E]`` pairs per expert; ``expert_ids``: ``[S]`` the expert of each pair.
    Returns ``[S, I]`` in the dtype of the model.
    """
    import torch

    module = plan.experts[layer]
    n_neurons = plan.expert_neurons[0]
    weight = module.gate_up_proj
    if plan.layout.gate_layout == "interleaved_transposed":
        gate_w = weight[:, :, ::2]  # [E, H, I]
    else:
        gate_w = weight[:, :n_neurons, :].transpose(1, 2)  # [E, H, I]
    x = x.to(weight.dtype)
    grouped = getattr(torch.nn.functional, "grouped_mm", None)
    dense_rows = 1 in (gate_w.stride(-1), gate_w.stride(-2))  # grouped_mm needs one of them
    if grouped is not None and dense_rows and x.device.type == "cpu" and x.dtype == torch.float32:
        offsets = torch.cumsum(sizes, 0).to(torch.int32)
        gate = grouped(x, gate_w, offs=offsets)
    else:  # one matmul per expert that received tokens
        gate = torch.empty((x.shape[0], n_neurons), dtype=x.dtype, device=x.device)
        start = 0
        for e, size in enumerate(sizes.tolist()):
            if size:
                torch.mm(x[start : start + size], gate_w[e], out=gate[start : start + size])
            start += size
    if plan.layout.gate_layout == "interleaved_transposed":
        gate = gate + module.gate_up_proj_bias[:, ::2][expert_ids]
    if plan.layout.clamped_glu:
        gate = gate.clamp(max=module.limit)
        return gate * torch.sigmoid(gate * module.alpha)
    return module.act_fn(gate)


def pair_gate(plan: MoePlan, layer: int, x: Any, expert: Any) -> Any:
    """``act(gate_e(x))`` of a few (token, expert) rows, without synchronising with a GPU.

    ``x``: ``[R, H]`` hidden states; ``expert``: ``[R]`` each row's expert (a device tensor).
    """
    import torch

    module = plan.experts[layer]
    weight = module.gate_up_proj
    x = x.to(weight.dtype)
    if plan.layout.gate_layout == "interleaved_transposed":
        gate = torch.einsum("rh,rhi->ri", x, weight[expert][:, :, ::2])
        gate = gate + module.gate_up_proj_bias[expert][:, ::2]
    else:
        gate = torch.einsum("rh,rih->ri", x, weight[expert][:, : plan.expert_neurons[0], :])
    if plan.layout.clamped_glu:
        gate = gate.clamp(max=module.limit)
        return gate * torch.sigmoid(gate * module.alpha)
    return module.act_fn(gate)


#: Experts implementations of transformers 5.24 whose order of (token, expert) rows
#: :func:`row_order` knows; any other one is counted by recomputing the gate.
KNOWN_IMPLEMENTATIONS = ("eager", "grouped_mm", "batched_mm")


def implementation(module: Any) -> str:
    """The experts implementation a fused experts module runs (``"eager"`` when unset)."""
    config = getattr(module, "config", None)
    name = getattr(config, "_experts_implementation", None)
    return str(name) if name else "eager"


def row_order(impl: str, index: Any, n_experts: int) -> tuple[Any, Any]:
    """Token and expert of each row the gate activation sees, in the order of ``impl``.

    ``index`` is the router's ``top_k_index [T, k]``. ``batched_mm`` runs the pairs token by
    token (``j -> (j // k, index.flat[j])``); ``grouped_mm`` sorts them by expert with
    ``torch.sort`` (the same call on the same tensor gives the same permutation); ``eager``
    calls the activation once per expert that received tokens, in ascending order, on the pairs
    ``torch.where(one_hot(index)[..., e].T)`` finds: ordered by top-k slot, then token.
    """
    import torch

    k = index.shape[-1]
    flat = index.reshape(-1)
    if impl == "batched_mm":
        order = torch.arange(flat.shape[0], device=flat.device)
    elif impl == "grouped_mm":
        _, order = torch.sort(flat)
    elif impl == "eager":
        n_tokens = index.shape[0]
        j = torch.arange(flat.shape[0], device=flat.device)
        key = flat.to(torch.int64) * (k * n_tokens) + (j % k) * n_tokens + j // k
        order = torch.argsort(key)
    else:
        raise ParameterError(f"experts implementation '{impl}' has no known row order")
    return order // k, flat[order].to(torch.int64)


@contextmanager
def capture_moe(plan: MoePlan, accumulator: Any) -> Iterator[MoePlan]:
    """Hook every layer for :class:`MoeAccumulator`.

    Before each experts module runs, ``accumulator.routed(layer, module, hidden, top_k_index)``;
    on each gate activation inside it (the ``act_fn`` module's output, or GPT-OSS's
    ``_apply_gate`` input), ``accumulator.gate(layer, values)``; after it,
    ``accumulator.finished(layer)``; after each shared expert's activation,
    ``accumulator.shared(layer, s, activations)``. Everything is undone on exit, also when the
    block raises.
    """
    handles: list[Any] = []
    wrapped: list[Any] = []

    def routed_hook(layer: int) -> Callable[..., None]:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs.get("hidden_states")
            if len(args) > 1:
                index = args[1]
            else:
                index = kwargs.get("top_k_index", kwargs.get("router_indices"))
            if hidden is None or index is None:
                raise ParameterError(
                    f"the experts module of layer {layer} was called without hidden states and "
                    "top-k indices; the routing of this model cannot be read"
                )
            accumulator.routed(layer, module, hidden, index)

        return hook

    def finished_hook(layer: int) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            accumulator.finished(layer)

        return hook

    def act_hook(layer: int) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            accumulator.gate(layer, output)

        return hook

    def glu_wrapper(layer: int, module: Any) -> Callable[[Any], Any]:
        original = module._apply_gate  # a bound method of the class

        def apply_gate(gate_up: Any) -> Any:
            import torch

            gate = gate_up[..., ::2].clamp(max=module.limit)
            accumulator.gate(layer, gate * torch.sigmoid(gate * module.alpha))
            return original(gate_up)

        return apply_gate

    def shared_hook(layer: int, s: int) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            accumulator.shared(layer, s, output)

        return hook

    try:
        for layer, module in enumerate(plan.experts):
            handles.append(module.register_forward_pre_hook(routed_hook(layer), with_kwargs=True))
            handles.append(module.register_forward_hook(finished_hook(layer)))
            if plan.layout.clamped_glu:
                module._apply_gate = glu_wrapper(layer, module)
                wrapped.append(module)
            else:
                handles.append(module.act_fn.register_forward_hook(act_hook(layer)))
            for s, act in enumerate(plan.shared[layer]):
                handles.append(act.register_forward_hook(shared_hook(layer, s)))
        yield plan
    finally:
        for handle in handles:
            handle.remove()
        for module in wrapped:
            del module._apply_gate  # the class's method again


class MoeAccumulator:
    """Device-side per-expert counts of one unit: ``n_active``, ``n_routed`` and per-sequence forms.

    Shapes: ``active [2, L, X, N]``, ``routed [2, L, X]`` (role, layer, expert, neuron) with
    ``X = n_experts + n_shared``; ``seq [n_seq, 2, L, X, N]`` and ``seq_routed [n_seq, 2, L, X]``
    with ``per_sequence``. Padding tokens (role mask all zero) are neither routed nor counted.

    With an experts implementation of :data:`KNOWN_IMPLEMENTATIONS` the activations the model
    computes are counted as they pass (no extra work but the bookkeeping); with any other one,
    or ``recompute=True``, the gate of the routed tokens is recomputed (:func:`expert_gate`).
    """

    def __init__(
        self,
        torch: Any,
        plan: MoePlan,
        n_seq: int,
        device: Any,
        per_sequence: bool,
        *,
        recompute: bool = False,
    ) -> None:
        self.torch = torch
        self.plan = plan
        self.recompute = recompute
        n_x = plan.n_experts + plan.n_shared
        shape = (2, plan.n_layers, n_x)
        self.active = torch.zeros((*shape, plan.neurons), dtype=torch.int64, device=device)
        self.routed_count = torch.zeros(shape, dtype=torch.int64, device=device)
        self.seq: Any = None
        self.seq_routed: Any = None
        if per_sequence:
            self.seq = torch.zeros((n_seq, *shape, plan.neurons), dtype=torch.int32, device=device)
            self.seq_routed = torch.zeros((n_seq, *shape), dtype=torch.int64, device=device)
        self.mask: Any = None  # [B, T, 2] float32 role mask of the current batch
        self.rows: Any = None  # unit-local sequence rows of the current batch
        self.pending: dict[int, list[Any]] = {}  # layer -> [tokens, experts, rows seen]
        self._role: tuple[Any, Any] = (None, None)  # (mask, its token roles)
        self._checking = False  # inside _spot_check (its act_fn call is not the model's)
        self._bad: Any = None  # [L] bool on the device: a spot check failed (see verify)
        self._checked: set[int] = set()  # layers spot-checked (on their first batch)

    def _roles(self, layer: int, n: int) -> tuple[int, int, Any]:
        """Batch size, width, and each token's role: 0 prompt, 1 response, 2 padding."""
        b, t, _ = self.mask.shape
        if n != b * t:
            raise ParameterError(
                f"the experts of layer {layer} saw {n} tokens, expected {b * t}; the routing "
                "of this model cannot be read"
            )
        if self._role[0] is not self.mask:  # once per batch
            mask = self.mask.reshape(b * t, 2)
            role = mask[:, 1].to(self.torch.int64).masked_fill(mask.sum(-1) == 0, 2)
            self._role = (self.mask, role)
        return b, t, self._role[1]

    def routed(self, layer: int, module: Any, hidden: Any, index: Any) -> None:
        """Before a layer's experts run: plan the rows their activations will come in."""
        impl = implementation(module)
        parallel = getattr(module, "_is_expert_parallel", False)
        if self.recompute or impl not in KNOWN_IMPLEMENTATIONS or parallel:
            self._recount(layer, hidden, index)
            return
        self._roles(layer, hidden.shape[0])
        token, expert = row_order(impl, index, self.plan.n_experts)
        self.pending[layer] = [token, expert, 0, hidden]

    def gate(self, layer: int, values: Any) -> None:
        """The gate activations of some of a layer's rows, in the planned order."""
        pending = self.pending.get(layer)
        if pending is None or self._checking:
            return  # recounted in routed(), a call outside the experts' forward, or our own
        token, expert, seen, hidden = pending
        values = values.reshape(-1, values.shape[-1])
        n = values.shape[0]
        if seen + n > token.shape[0]:
            raise ParameterError(
                f"the experts of layer {layer} computed more activation rows than routed "
                "(token, expert) pairs; the routing of this model cannot be read"
            )
        if seen == 0 and layer not in self._checked:  # the planned order is the model's order
            self._checked.add(layer)  # once a layer and unit: the order is the implementation's
            self._spot_check(layer, hidden, token[[0, n - 1]], expert[[0, n - 1]], values)
        pending[2] = seen + n
        self._count(layer, token[seen : seen + n], expert[seen : seen + n], values)

    def _spot_check(self, layer: int, hidden: Any, token: Any, expert: Any, values: Any) -> None:
        """Recompute the first and last rows of a call from the weights; a mismatch is recorded
        on the device (no synchronisation with the GPU) and refused by :meth:`verify`."""
        torch = self.torch
        self._checking = True
        try:
            mine = pair_gate(self.plan, layer, hidden[token], expert).float()
        finally:
            self._checking = False
        theirs = values.reshape(-1, values.shape[-1])[[0, -1]].float()
        scale = theirs.abs().amax(-1, keepdim=True) + 1e-6
        close = ((mine - theirs).abs() <= 0.05 * scale + 0.05 * theirs.abs()).all(-1).all()
        if self._bad is None:
            self._bad = torch.zeros(self.plan.n_layers, dtype=torch.bool, device=close.device)
        self._bad[layer] |= ~close

    def verify(self) -> None:
        """Refuse the counts when a spot check found the activations in another order than
        planned (one read of the device flags, after the batches)."""
        if self._bad is None:
            return
        bad = self._bad.cpu().tolist()
        if any(bad):
            layer = bad.index(True)
            raise ParameterError(
                f"the gate activations of layer {layer} do not come in the order of "
                f"{implementation(self.plan.experts[layer])!r} that langneurons expects (a "
                "transformers version with another experts implementation?); the routing "
                "of this model cannot be read"
            )

    def finished(self, layer: int) -> None:
        """After a layer's experts ran: every planned row must have been counted."""
        pending = self.pending.pop(layer, None)
        if pending is not None and pending[2] != pending[0].shape[0]:
            raise ParameterError(
                f"the experts of layer {layer} computed {pending[2]} activation rows for "
                f"{pending[0].shape[0]} routed (token, expert) pairs; the routing of this "
                "model cannot be read"
            )

    def _recount(self, layer: int, hidden: Any, index: Any) -> None:
        """Count by recomputing the gate of the routed, non-padding pairs."""
        torch, plan = self.torch, self.plan
        _, _, role = self._roles(layer, hidden.shape[0])
        k = index.shape[-1]
        token = torch.arange(hidden.shape[0], device=hidden.device).repeat_interleave(k)
        expert = index.reshape(-1).to(torch.int64)
        keep = role[token] < 2
        token, expert = token[keep], expert[keep]
        order = torch.argsort(expert, stable=True)
        token, expert = token[order], expert[order]
        sizes = torch.bincount(expert, minlength=plan.n_experts)
        values = expert_gate(plan, layer, hidden[token], sizes, expert)
        self._count(layer, token, expert, values)

    def _count(self, layer: int, token: Any, expert: Any, values: Any) -> None:
        """Add the rows' positives and routings under (role, expert) and (sequence, role,
        expert)."""
        torch = self.torch
        n_e = self.plan.n_experts
        b, t, role = self._roles(layer, self.mask.shape[0] * self.mask.shape[1])
        positive = (values.reshape(token.shape[0], -1) > 0).float()
        n_i = positive.shape[-1]
        key = role[token] * n_e + expert  # [role (with padding), expert]
        # float32 sums of 0/1 count exactly: each is at most the batch's tokens (< 2**24)
        counted = torch.zeros((3 * n_e, n_i), dtype=torch.float32, device=positive.device)
        counted.index_add_(0, key, positive)
        self.active[:, layer, :n_e, :n_i] += counted[: 2 * n_e].view(2, n_e, n_i).to(torch.int64)
        ones = torch.ones_like(key)  # index_add_, not bincount: no synchronisation with a GPU
        routed = torch.zeros(3 * n_e, dtype=torch.int64, device=key.device).index_add_(0, key, ones)
        self.routed_count[:, layer, :n_e] += routed[: 2 * n_e].view(2, n_e)
        if self.seq is not None:
            seq_key = (token // t) * (3 * n_e) + key  # [batch row, role, expert]
            per_seq = torch.zeros((b * 3 * n_e, n_i), dtype=torch.float32, device=positive.device)
            per_seq.index_add_(0, seq_key, positive)
            per_seq = per_seq.view(b, 3, n_e, n_i)[:, :2]
            self.seq[self.rows, :, layer, :n_e, :n_i] += per_seq.to(torch.int32)
            routed = torch.zeros(b * 3 * n_e, dtype=torch.int64, device=key.device)
            routed.index_add_(0, seq_key, ones)
            self.seq_routed[self.rows, :, layer, :n_e] += routed.view(b, 3, n_e)[:, :2]

    def shared(self, layer: int, s: int, output: Any) -> None:
        """Count a shared expert's neurons of one layer on every token."""
        torch = self.torch
        b, t, _ = self._roles(layer, output.reshape(-1, output.shape[-1]).shape[0])
        x = self.plan.n_experts + s
        positive = (output.reshape(b * t, -1) > 0).float()
        n_i = positive.shape[-1]
        roles = self.mask.reshape(b * t, 2).T  # [2, B*T]
        self.active[:, layer, x, :n_i] += (roles @ positive).to(torch.int64)
        self.routed_count[:, layer, x] += roles.sum(-1).to(torch.int64)
        if self.seq is not None:
            per_seq = torch.einsum("btr,btn->brn", self.mask, positive.view(b, t, -1))
            self.seq[self.rows, :, layer, x, :n_i] += per_seq.to(torch.int32)
            self.seq_routed[self.rows, :, layer, x] += self.mask.sum(1).to(torch.int64)


__all__ = [
    "EXPERT_COUNT_KEYS",
    "KNOWN_IMPLEMENTATIONS",
    "MOE_ARCHITECTURES",
    "MoeAccumulator",
    "MoeArchitecture",
    "MoePlan",
    "capture_moe",
    "expert_gate",
    "implementation",
    "is_moe_plan",
    "looks_moe",
    "moe_supported",
    "pair_gate",
    "resolve_moe",
    "row_order",
]
