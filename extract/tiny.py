"""Tiny random-weight models of every supported architecture, built offline for tests and demos.

:func:`tiny_model` writes a transformers model directory (config, safetensors weights, tokenizer,
chat template) that loads with ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` like a downloaded checkpoint. Nothing is downloaded: the config
comes from the architecture's own config class with small sizes, the weights from its random
initialisation under ``torch.manual_seed(seed)``, and the tokenizer is byte-level.

The tokenizer has ids 0, 1, 2 for ``<pad>``, ``<s>``, ``</s>`` and ``3 + b`` for byte ``b``
(GPT-2's byte-to-unicode symbols, no merges), so any UTF-8 text in any script round-trips. It
prepends ``<s>`` to every encoded text. The model's vocabulary is padded to :data:`VOCAB_SIZE`
so that tokens transformers adds on loading (the Qwen2 tokenizer class adds ``<|endoftext|>``)
still have an embedding.

The activation function is each architecture's default (silu for Llama, gelu_pytorch_tanh for
Gemma, relu for OPT, ...); the random gate / fc1 projections make roughly half of the neuron
activations positive.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langneurons.errors import MissingDependencyError, ParameterError

log = logging.getLogger(__name__)

#: Special tokens, in id order.
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
#: Id of byte 0; byte ``b`` has id ``BYTE_OFFSET + b``.
BYTE_OFFSET = len(SPECIAL_TOKENS)
#: The model vocabulary: 259 tokenizer ids padded to a multiple of 64.
VOCAB_SIZE = 320
#: Width of one attention head.
HEAD_DIM = 8

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class _Sizes:
    """The sizes of one tiny model."""

    layers: int
    hidden: int
    intermediate: int

    @property
    def heads(self) -> int:
        """Attention heads of width HEAD_DIM."""
        return self.hidden // HEAD_DIM

    @property
    def kv_heads(self) -> int:
        """Key/value heads: grouped-query attention when there are at least two heads."""
        return self.heads // 2 if self.heads % 2 == 0 else self.heads


_TOKENS = {"pad_token_id": PAD_ID, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID}


def _llama_like(s: _Sizes) -> dict[str, Any]:
    """Llama, Mistral, Qwen2, Qwen3, Phi-3: one config vocabulary."""
    return {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "head_dim": HEAD_DIM,
        "max_position_embeddings": 512,
        **_TOKENS,
    }


def _phi3(s: _Sizes) -> dict[str, Any]:
    """Phi-3 has no head_dim field."""
    kwargs = _llama_like(s)
    del kwargs["head_dim"]
    kwargs["original_max_position_embeddings"] = 512
    return kwargs


def _gemma2(s: _Sizes) -> dict[str, Any]:
    """Gemma 2 / Gemma 3 text: also a query scale and a sliding window."""
    return {**_llama_like(s), "query_pre_attn_scalar": HEAD_DIM, "sliding_window": 64}


def _gemma3(s: _Sizes) -> dict[str, Any]:
    """Multimodal Gemma 3: a tiny SigLIP tower; image tokens in the padded vocabulary."""
    return {
        "text_config": _gemma2(s),
        "vision_config": {
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
        },
        "mm_tokens_per_image": 4,
        "boi_token_index": VOCAB_SIZE - 3,
        "eoi_token_index": VOCAB_SIZE - 2,
        "image_token_index": VOCAB_SIZE - 1,
        **_TOKENS,
    }


def _gpt2(s: _Sizes) -> dict[str, Any]:
    """GPT-2 names its sizes n_*."""
    return {
        "vocab_size": VOCAB_SIZE,
        "n_embd": s.hidden,
        "n_inner": s.intermediate,
        "n_layer": s.layers,
        "n_head": s.heads,
        "n_positions": 512,
        **_TOKENS,
    }


def _gpt_neox(s: _Sizes) -> dict[str, Any]:
    """GPT-NeoX: plain MLP, parallel residual."""
    return {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "max_position_embeddings": 512,
        **_TOKENS,
    }


def _opt(s: _Sizes) -> dict[str, Any]:
    """OPT: ffn_dim, and the embedding projection width must equal the hidden size."""
    return {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": s.hidden,
        "word_embed_proj_dim": s.hidden,
        "ffn_dim": s.intermediate,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "max_position_embeddings": 512,
        **_TOKENS,
    }


def _bloom(s: _Sizes) -> dict[str, Any]:
    """BLOOM: the MLP is always 4 * hidden wide, so ``intermediate`` is not used."""
    return {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": s.hidden,
        "n_layer": s.layers,
        "n_head": s.heads,
        **_TOKENS,
    }


#: Config keyword arguments of each tiny architecture, keyed by ``model_type``.
_CONFIGS: dict[str, Callable[[_Sizes], dict[str, Any]]] = {
    "llama": _llama_like,
    "mistral": _llama_like,
    "qwen2": _llama_like,
    "qwen3": _llama_like,
    "gemma": _llama_like,
    "gemma2": _gemma2,
    "gemma3_text": _gemma2,
    "gemma3": _gemma3,
    "phi3": _phi3,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "opt": _opt,
    "bloom": _bloom,
}

#: The dense architectures :func:`tiny_model` can build (transformers ``model_type`` values).
TINY_ARCHITECTURES: tuple[str, ...] = tuple(_CONFIGS)


def _moe_sizes(s: _Sizes, experts: int, top_k: int) -> dict[str, Any]:
    """Llama-like sizes of a MoE model: ``intermediate`` is each routed expert's width."""
    return {**_llama_like(s), "num_experts_per_tok": top_k, "norm_topk_prob": True}


def _mixtral(s: _Sizes, experts: int, top_k: int) -> dict[str, Any]:
    """Mixtral: num_local_experts experts of intermediate_size neurons."""
    return {**_moe_sizes(s, experts, top_k), "num_local_experts": experts}


def _qwen2_moe(s: _Sizes, experts: int, top_k: int) -> dict[str, Any]:
    """Qwen2-MoE: routed experts of moe_intermediate_size plus one wider shared expert."""
    return {
        **_moe_sizes(s, experts, top_k),
        "num_experts": experts,
        "moe_intermediate_size": s.intermediate,
        "shared_expert_intermediate_size": s.intermediate + s.intermediate // 2,
        "intermediate_size": 2 * s.intermediate,
    }


def _qwen3_moe(s: _Sizes, experts: int, top_k: int) -> dict[str, Any]:
    """Qwen3-MoE: routed experts of moe_intermediate_size, every layer sparse."""
    return {
        **_moe_sizes(s, experts, top_k),
        "num_experts": experts,
        "moe_intermediate_size": s.intermediate,
        "intermediate_size": 2 * s.intermediate,
    }


def _olmoe(s: _Sizes, experts: int, top_k: int) -> dict[str, Any]:
    """OLMoE: num_experts experts of intermediate_size neurons."""
    return {**_moe_sizes(s, experts, top_k), "num_experts": experts}


def _gpt_oss(s: _Sizes, experts: int, top_k: int) -> dict[str, Any]:
    """GPT-OSS: interleaved gate/up with biases; alternating sliding and full attention."""
    kwargs = {**_mixtral(s, experts, top_k)}
    del kwargs["norm_topk_prob"]
    kinds = ("sliding_attention", "full_attention")
    kwargs["layer_types"] = [kinds[i % 2] for i in range(s.layers)]
    kwargs["sliding_window"] = 16
    kwargs["max_position_embeddings"] = 131072  # YaRN factor 32 of the default 4096
    return kwargs


#: Config keyword arguments of each tiny mixture-of-experts architecture.
_MOE_CONFIGS: dict[str, Callable[[_Sizes, int, int], dict[str, Any]]] = {
    "mixtral": _mixtral,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
    "olmoe": _olmoe,
    "gpt_oss": _gpt_oss,
}

#: The mixture-of-experts architectures :func:`tiny_model` can build.
TINY_MOE_ARCHITECTURES: tuple[str, ...] = tuple(_MOE_CONFIGS)


def _require() -> tuple[Any, Any, Any]:
    """torch, transformers and tokenizers, or MissingDependencyError."""
    try:
        import tokenizers
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            "building a tiny model needs torch, transformers and tokenizers; install them with "
            "pip install 'langneurons[extract]'"
        ) from exc
    return torch, transformers, tokenizers


def _positive_int(name: str, value: object, *, multiple_of: int = 1) -> int:
    """The value as a positive int (a multiple of ``multiple_of``), or ParameterError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % multiple_of:
        what = "a positive integer" + (f" divisible by {multiple_of}" if multiple_of > 1 else "")
        raise ParameterError(f"{name} must be {what}, not {value!r}")
    return value


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte value 0..255, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def byte_tokenizer() -> Any:
    """The offline byte-level tokenizer of the tiny models (a ``PreTrainedTokenizerFast``).

    Ids: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, byte ``b`` at ``3 + b``; no merges. Encoding
    prepends ``<s>``; :data:`CHAT_TEMPLATE` renders conversations.
    """
    _, transformers, tokenizers = _require()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({symbol: BYTE_OFFSET + b for b, symbol in enumerate(_byte_symbols())})
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    backend.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in SPECIAL_TOKENS])
    bos = SPECIAL_TOKENS[BOS_ID]
    backend.post_processor = tokenizers.processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, BOS_ID)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=SPECIAL_TOKENS[PAD_ID],
        bos_token=bos,
        eos_token=SPECIAL_TOKENS[EOS_ID],
        chat_template=CHAT_TEMPLATE,
    )


def tiny_model(
    arch: str = "llama",
    seed: int = 0,
    path: str | os.PathLike[str] | None = None,
    *,
    layers: int = 2,
    hidden: int = 32,
    intermediate: int = 64,
    experts: int = 4,
    top_k: int = 2,
) -> Path:
    """Write a tiny random-weight model and its byte-level tokenizer to a directory.

    Parameters
    ----------
    arch
        A transformers ``model_type`` from :data:`TINY_ARCHITECTURES` or
        :data:`TINY_MOE_ARCHITECTURES`.
    seed
        Seed of the weight initialisation; the same seed gives the same weights. The global
        torch random state is left as it was.
    path
        Directory to write to (created if missing); a new temporary directory when None.
    layers, hidden, intermediate
        Decoder layers, hidden size (a multiple of 8: heads are 8 wide) and MLP intermediate
        size, i.e. neurons per layer. BLOOM ignores ``intermediate``: its MLP is always
        ``4 * hidden`` wide. In a mixture of experts, ``intermediate`` is each routed expert's
        width (Qwen2-MoE's shared expert is 1.5 times as wide).
    experts, top_k
        Routed experts per layer and experts per token of a mixture of experts (ignored by
        dense architectures).

    Returns
    -------
    Path
        The directory, loadable with ``AutoModelForCausalLM.from_pretrained`` and
        ``AutoTokenizer.from_pretrained``.

    Raises
    ------
    ParameterError
        Unknown ``arch``, a size that is not a positive integer, or ``path`` is a file.
    MissingDependencyError
        torch, transformers or tokenizers is not installed.
    """
    known = isinstance(arch, str) and (arch in _CONFIGS or arch in _MOE_CONFIGS)
    if not known:
        available = ", ".join((*TINY_ARCHITECTURES, *TINY_MOE_ARCHITECTURES))
        raise ParameterError(f"arch {arch!r} has no tiny model (available: {available})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, not {seed!r}")
    sizes = _Sizes(
        _positive_int("layers", layers),
        _positive_int("hidden", hidden, multiple_of=HEAD_DIM),
        _positive_int("intermediate", intermediate),
    )
    if arch in _MOE_CONFIGS:
        _positive_int("experts", experts)
        if _positive_int("top_k", top_k) > experts:
            raise ParameterError(f"top_k must be at most experts ({experts}), not {top_k}")
        kwargs = _MOE_CONFIGS[arch](sizes, experts, top_k)
    else:
        kwargs = _CONFIGS[arch](sizes)
    torch, transformers, _ = _require()
    if path is None:
        out = Path(tempfile.mkdtemp(prefix=f"langneurons-tiny-{arch}-"))
    else:
        out = Path(path)
        if out.exists() and not out.is_dir():
            raise ParameterError(f"path {str(out)!r} is a file; give a directory for the model")
        out.mkdir(parents=True, exist_ok=True)

    config = transformers.AutoConfig.for_model(arch, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    byte_tokenizer().save_pretrained(out)
    log.debug("wrote a tiny %s model (seed %d) to %s", arch, seed, out)
    return out


__all__ = [
    "BOS_ID",
    "BYTE_OFFSET",
    "CHAT_TEMPLATE",
    "EOS_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "TINY_ARCHITECTURES",
    "TINY_MOE_ARCHITECTURES",
    "VOCAB_SIZE",
    "byte_tokenizer",
    "tiny_model",
]
