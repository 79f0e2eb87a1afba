"""Where the neurons live: a registry of forward-hook points, one per decoder architecture.

"The neuron" is the output of the MLP activation function in every decoder layer:
``act_fn(gate_proj(x))`` in gated MLPs (SwiGLU, GeGLU; *not* multiplied by ``up_proj``) and
``act(fc1(x))`` in plain MLPs. A neuron is active on a token when this output is > 0 (Tang et
al., 2024, "Language-Specific Neurons", Sec. 2; Zhang et al., 2025). Each architecture has one
module per decoder layer whose forward *output* is exactly that activation; a forward hook on it
sees the activations of every neuron of that layer, for every token.

The registry is keyed by the transformers config ``model_type`` (never by matching model names).
Every entry was checked against the modeling code of transformers 5.24: the named module is
built from ``ACT2FN[...]`` (a fresh ``nn.Module`` per layer) or, for BLOOM, ``BloomGelu``, and the
MLP's forward calls it on the gate / fc1 projection alone.

Torch is imported lazily, so the registry itself (:func:`supported`, :data:`ARCHITECTURES`) works
without the ``extract`` extra.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

from langneurons.errors import MissingDependencyError, ParameterError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: The example pattern quoted in error messages.
EXAMPLE_PATTERN = "model.layers.*.mlp.act_fn"

_COMPONENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")


@dataclass(frozen=True)
class Architecture:
    """Where the neuron activations of one decoder architecture are, and how many there are.

    Parameters
    ----------
    model_type
        The transformers ``config.model_type`` this entry is registered under.
    layers
        Dotted path from the loaded ``*ForCausalLM`` (or ``*ForConditionalGeneration``) model to
        the ``nn.ModuleList`` of decoder layers, e.g. ``"model.layers"``.
    activation_module
        Dotted path from one decoder layer to the module whose forward output is the neuron
        activation, e.g. ``"mlp.act_fn"``.
    activation_key
        The attribute of the (text) config naming the activation function (``hidden_act``,
        ``hidden_activation``, ``activation_function``), or None when the architecture
        hard-codes it.
    neurons_key
        The attribute of the (text) config holding the number of neurons per layer (the MLP
        intermediate size). When None, or when the attribute is None (GPT-2's ``n_inner``), the
        count is ``4 * hidden_size``.
    gated
        True when the MLP is gated (``act(gate(x)) * up(x)``); the neuron is then ``act(gate(x))``.
    fixed_activation
        The activation name used when ``activation_key`` is None.
    flat_tokens
        True when the module sees the tokens flattened to ``(batch * seq, neurons)`` rather than
        ``(batch, seq, neurons)`` (OPT reshapes before ``fc1``); ``act.reshape(*input_ids.shape,
        -1)`` restores the batch axis for every architecture.
    note
        What is special about this architecture, for the reader of the registry.
    """

    model_type: str
    layers: str
    activation_module: str
    activation_key: str | None
    neurons_key: str | None
    gated: bool
    fixed_activation: str | None = None
    flat_tokens: bool = False
    note: str = ""

    @property
    def hook_point(self) -> str:
        """The dotted path of the hooked module, with ``{i}`` for the layer index."""
        return f"{self.layers}.{{i}}.{self.activation_module}"

    def activation(self, config: Any) -> str:
        """The activation function's name, read from the (text) config."""
        if self.activation_key is None:
            if self.fixed_activation is None:
                raise ParameterError(
                    f"architecture '{self.model_type}' names neither activation_key nor "
                    "fixed_activation; give one of them"
                )
            return self.fixed_activation
        name = getattr(config, self.activation_key, None)
        if not isinstance(name, str):
            raise ParameterError(
                f"the {self.model_type} config has no string '{self.activation_key}' "
                f"(found {name!r}); the model config is incomplete"
            )
        return name

    def neurons(self, config: Any) -> int:
        """The number of neurons per layer, read from the (text) config."""
        value = getattr(config, self.neurons_key, None) if self.neurons_key else None
        if value is None:
            value = 4 * int(config.hidden_size)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ParameterError(
                f"the {self.model_type} config has '{self.neurons_key}' = {value!r}; "
                "expected a positive integer (one intermediate size for every layer)"
            )
        return value


@dataclass(frozen=True)
class HookPlan:
    """The modules to hook in one loaded model, in layer order, with what they produce.

    Attributes
    ----------
    model_type
        ``model.config.model_type``.
    hook_point
        Dotted path of the hooked module with ``{i}`` for the layer index.
    modules
        One module per decoder layer, layer 0 first; each module's forward output is the neuron
        activation of that layer, shape ``(..., neurons)``.
    activation
        The activation function's name, or None when the plan comes from a pattern the registry
        does not describe.
    neurons
        Neurons per layer, or None when unknown (take it from the last axis of the first output).
    architecture
        The registry entry, or None when the plan comes from a pattern the registry does not
        describe.
    """

    model_type: str
    hook_point: str
    modules: tuple[torch.nn.Module, ...]
    activation: str | None
    neurons: int | None
    architecture: Architecture | None

    @property
    def n_layers(self) -> int:
        """The number of hooked layers."""
        return len(self.modules)

    def module_name(self, layer: int) -> str:
        """The dotted name of the hooked module of one layer."""
        return self.hook_point.format(i=layer)


def _gated(model_type: str, layers: str = "model.layers", **kwargs: Any) -> Architecture:
    """A Llama-style gated MLP: ``layer.mlp.act_fn`` applied to ``gate_proj(x)``."""
    kwargs.setdefault("activation_key", "hidden_act")
    return Architecture(
        model_type,
        layers,
        "mlp.act_fn",
        neurons_key="intermediate_size",
        gated=True,
        **kwargs,
    )


_BUILTIN: tuple[Architecture, ...] = (
    _gated("llama"),
    _gated("mistral"),
    _gated("qwen2"),
    _gated("qwen3"),
    _gated("gemma"),
    _gated("gemma2", activation_key="hidden_activation"),
    _gated("gemma3_text", activation_key="hidden_activation"),
    _gated(
        "gemma3",
        layers="model.language_model.layers",
        activation_key="hidden_activation",
        note="multimodal Gemma 3 (Gemma3ForConditionalGeneration); numbers from text_config",
    ),
    Architecture(
        "phi3",
        "model.layers",
        "mlp.activation_fn",
        activation_key="hidden_act",
        neurons_key="intermediate_size",
        gated=True,
        note="gate_up_proj is one Linear chunked in two; activation_fn sees the gate half only",
    ),
    Architecture(
        "gpt2",
        "transformer.h",
        "mlp.act",
        activation_key="activation_function",
        neurons_key="n_inner",
        gated=False,
        note="c_fc is a Conv1D; n_inner None means 4 * n_embd",
    ),
    Architecture(
        "gpt_neox",
        "gpt_neox.layers",
        "mlp.act",
        activation_key="hidden_act",
        neurons_key="intermediate_size",
        gated=False,
    ),
    Architecture(
        "opt",
        "model.decoder.layers",
        "activation_fn",
        activation_key="activation_function",
        neurons_key="ffn_dim",
        gated=False,
        flat_tokens=True,
        note="no MLP module: fc1, activation_fn and fc2 sit on the decoder layer itself, "
        "which flattens the tokens to (batch * seq, hidden) first",
    ),
    Architecture(
        "bloom",
        "transformer.h",
        "mlp.gelu_impl",
        activation_key=None,
        neurons_key=None,
        gated=False,
        fixed_activation="gelu_new",
        note="BloomGelu hard-codes the tanh-approximate GELU (same formula as gelu_new); "
        "the MLP is always 4 * hidden_size wide",
    ),
)

_REGISTRY: dict[str, Architecture] = {arch.model_type: arch for arch in _BUILTIN}

#: Read-only view of the registry, keyed by ``config.model_type``.
ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType(_REGISTRY)


def supported() -> list[str]:
    """The ``model_type`` values the registry knows, sorted."""
    return sorted(_REGISTRY)


def register(architecture: Architecture, *, replace: bool = False) -> None:
    """Add an architecture to the registry (``replace=True`` to overwrite an entry)."""
    if not isinstance(architecture, Architecture):
        raise ParameterError(
            f"architecture must be an Architecture, not {type(architecture).__name__}"
        )
    if architecture.model_type in _REGISTRY and not replace:
        raise ParameterError(
            f"architecture '{architecture.model_type}' is already registered; "
            "pass replace=True to overwrite it"
        )
    _check_pattern(architecture.hook_point)
    _REGISTRY[architecture.model_type] = architecture


# ---------------------------------------------------------------------- resolving
def _torch() -> ModuleType:
    """Return the ``torch`` module, or raise MissingDependencyError."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "hooking a model needs torch; install it with pip install 'langneurons[extract]'"
        ) from exc
    return torch


def _check_pattern(pattern: str) -> str:
    """The pattern with ``{i}`` for the layer index, or ParameterError."""
    if not isinstance(pattern, str):
        raise ParameterError(f"hook module pattern must be a string, not {type(pattern).__name__}")
    normalized = pattern.replace("{i}", "*")
    parts = normalized.split(".")
    wildcards = parts.count("*")
    bad = [part for part in parts if part != "*" and not _COMPONENT.fullmatch(part)]
    if wildcards != 1 or bad:
        raise ParameterError(
            f"hook module pattern '{pattern}' is not a dotted module path with exactly one '*' "
            f"or '{{i}}' as a whole component for the layer index, e.g. '{EXAMPLE_PATTERN}'"
        )
    return normalized.replace("*", "{i}")


def _model_type(model: Any) -> str:
    """``model.config.model_type``, or '' when the model has none."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    return model_type if isinstance(model_type, str) else ""


def _text_config(model: Any) -> Any:
    """The config describing the decoder (``text_config`` of multimodal models)."""
    config = model.config
    get_text_config = getattr(config, "get_text_config", None)
    return get_text_config(decoder=True) if callable(get_text_config) else config


def _explain_no_match(model: torch.nn.Module, pattern: str) -> str:
    """Why a pattern matched nothing: the deepest resolvable prefix, walked with layer 0."""
    torch = _torch()
    cls = type(model).__name__
    module: Any = model
    walked: list[str] = []
    for part in pattern.replace("{i}", "*").split("."):
        name = "0" if part == "*" else part
        child = module._modules.get(name)
        if child is None:
            child = getattr(module, name, None)
        if child is None:
            where = f"'{'.'.join(walked)}'" if walked else "the model"
            children = ", ".join(module._modules) or "no submodules"
            return (
                f"hook module pattern '{pattern}' matches no module of {cls}: {where} has no "
                f"submodule '{name}' (it has: {children})"
            )
        if not isinstance(child, torch.nn.Module):
            kind = "a plain function" if callable(child) else f"a {type(child).__name__}"
            return (
                f"hook module pattern '{pattern}' matches no module of {cls}: "
                f"'{'.'.join([*walked, name])}' is {kind}, not a torch module, so it cannot "
                "carry a forward hook; hook a module whose output is the activation"
            )
        walked.append(name)
        module = child
    return (
        f"hook module pattern '{pattern}' matches no module of {cls}; check the dotted path "
        f"against model.named_modules(), e.g. '{EXAMPLE_PATTERN}'"
    )


def _match(model: torch.nn.Module, pattern: str, shown: str) -> tuple[torch.nn.Module, ...]:
    """The modules a ``{i}`` pattern names, layer 0 first; errors (quoting ``shown``) on no
    match, gaps and shared modules."""
    prefix, _, suffix = pattern.partition("{i}")
    regex = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix))
    found: dict[int, torch.nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        hit = regex.fullmatch(name)
        if hit:
            found[int(hit.group(1))] = module
    if not found:
        raise ParameterError(_explain_no_match(model, shown))
    indices = sorted(found)
    if indices != list(range(len(indices))):
        raise ParameterError(
            f"hook module pattern '{shown}' matches layers {indices}, not 0..{len(indices) - 1} "
            "without gaps; name a module that every decoder layer has"
        )
    first_layer: dict[int, int] = {}
    for index in indices:
        seen = first_layer.setdefault(id(found[index]), index)
        if seen != index:
            raise ParameterError(
                f"hook module pattern '{shown}' names one module object shared by layers "
                f"{seen} and {index}; a hook on it would fire for every layer and double-count, "
                "so name a module that each layer owns"
            )
    return tuple(found[index] for index in indices)


def resolve(model: torch.nn.Module, hook_module: str | None = None) -> HookPlan:
    """Find the module of every decoder layer whose output is the neuron activation.

    Parameters
    ----------
    model
        A loaded transformers ``*ForCausalLM`` model (``*ForConditionalGeneration`` for
        multimodal Gemma 3).
    hook_module
        A dotted module path with ``*`` or ``{i}`` standing for the layer index, e.g.
        ``"model.layers.*.mlp.act_fn"``; it overrides the registry and works for any
        architecture. The activation name and neuron count are filled in only when the pattern
        is the registry's own hook point for this ``model_type``.

    Returns
    -------
    HookPlan
        One module per decoder layer, layer 0 first, with the hook point and metadata.

    Raises
    ------
    ParameterError
        The ``model_type`` is not registered and no pattern is given; the pattern is malformed,
        matches nothing, skips layers, or names one module shared across layers; the registry
        path finds a different number of modules than decoder layers.
    MissingDependencyError
        torch is not installed.
    """
    _torch()
    model_type = _model_type(model)
    architecture = _REGISTRY.get(model_type)
    if hook_module is None:
        if architecture is None:
            raise ParameterError(
                f"architecture '{model_type}' is not supported (supported: "
                f"{', '.join(supported())}); name the activation module with "
                f"--hook-module PATTERN, e.g. '{EXAMPLE_PATTERN}'"
            )
        pattern = shown = architecture.hook_point
    else:
        shown = hook_module
        pattern = _check_pattern(hook_module)
        if architecture is not None and pattern != architecture.hook_point:
            architecture = None
    modules = _match(model, pattern, shown)
    if architecture is None:
        log.debug("resolved %d modules of %s by pattern %s", len(modules), model_type, pattern)
        return HookPlan(model_type, pattern, modules, None, None, None)
    decoder_layers: Any = model.get_submodule(architecture.layers)
    n_layers = len(decoder_layers)
    if len(modules) != n_layers:
        raise ParameterError(
            f"'{pattern}' names {len(modules)} modules but '{architecture.layers}' holds "
            f"{n_layers} decoder layers; name the module with --hook-module PATTERN"
        )
    config = _text_config(model)
    return HookPlan(
        model_type,
        pattern,
        modules,
        architecture.activation(config),
        architecture.neurons(config),
        architecture,
    )


@contextmanager
def capture(plan: HookPlan, callback: Callable[[int, torch.Tensor], object]) -> Iterator[HookPlan]:
    """Call ``callback(layer, activations)`` on every forward pass of every hooked module.

    The hooks are registered on entry and removed on exit, also when the block (or the
    callback) raises. The tensor is the module's output itself, shape ``(batch, seq, neurons)``
    -- or ``(batch * seq, neurons)`` where ``plan.architecture.flat_tokens`` (OPT); use
    ``act.reshape(*input_ids.shape, -1)`` to get the batch axis back for any architecture. The
    callback must not modify the tensor in place, since the model goes on to use it.

    Examples
    --------
    >>> counts = {}
    >>> with capture(resolve(model), lambda i, act: counts.update({i: (act > 0).sum(0)})):
    ...     model(**batch)
    """
    torch = _torch()
    handles: list[Any] = []

    def make_hook(layer: int) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise ParameterError(
                    f"module '{plan.module_name(layer)}' returned {type(output).__name__}, not "
                    "a tensor; hook the activation module, whose output is a tensor"
                )
            callback(layer, output)

        return hook

    try:
        for layer, module in enumerate(plan.modules):
            handles.append(module.register_forward_hook(make_hook(layer)))
        yield plan
    finally:
        for handle in handles:
            handle.remove()


__all__ = [
    "ARCHITECTURES",
    "EXAMPLE_PATTERN",
    "Architecture",
    "HookPlan",
    "capture",
    "register",
    "resolve",
    "supported",
]
