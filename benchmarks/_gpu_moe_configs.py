"""The tiny random MoE models the GPU checks share (``_gpu_moe_check.py``, ``_gpu_moe_ablate.py``).

Five architectures (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, GPT-OSS), two layers of eight experts
with two per token, hidden size 64: small enough to compare every experts implementation exactly.
Imported by the scripts as ``_gpu_moe_configs`` (their own folder is on ``sys.path``).
"""

import torch
import transformers

BASE = dict(
    vocab_size=320,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    num_experts_per_tok=2,
)
CFG = {
    "mixtral": dict(hidden_size=64, intermediate_size=48, num_local_experts=8),
    "qwen2_moe": dict(
        hidden_size=64,
        intermediate_size=96,
        moe_intermediate_size=48,
        shared_expert_intermediate_size=72,
        num_experts=8,
    ),
    "qwen3_moe": dict(
        hidden_size=64, intermediate_size=96, moe_intermediate_size=48, num_experts=8
    ),
    "olmoe": dict(hidden_size=64, intermediate_size=48, num_experts=8),
    "gpt_oss": dict(
        hidden_size=64,
        intermediate_size=48,
        num_local_experts=8,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=16,
        max_position_embeddings=131072,
    ),
}


def tiny_moe(arch: str, dev: str, dtype: torch.dtype) -> torch.nn.Module:
    """The tiny random ``arch`` model (seed 0: the same weights in every script), in eval mode."""
    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model(arch, **{**BASE, **CFG[arch]})
    return transformers.AutoModelForCausalLM.from_config(cfg).to(dev, dtype).eval()
