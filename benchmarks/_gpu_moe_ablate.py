"""GPU check of MoE deactivation (needs CUDA; not part of `make bench`).

Run on a GPU machine with langneurons installed: `python benchmarks/_gpu_moe_ablate.py`. On tiny
random Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE models it switches off neurons inside experts and
masks whole experts under the eager, batched_mm and grouped_mm experts implementations, and
checks that they agree, that masked experts receive no tokens and that the weights are restored
bit for bit. Measured on an NVIDIA H200 (2026-12-04), float32: grouped_mm equals eager exactly,
batched_mm within 2.1e-7 (float32 round-off), masked experts got 0 tokens, weights restored.
"""

import json
import os

import numpy as np
import torch
from _gpu_moe_configs import tiny_moe

import langneurons.extract._moe as moe
import langneurons.extract.moe_ablation as ab

dev = "cpu" if os.environ.get("SMOKE") else "cuda"
g = torch.Generator().manual_seed(0)
ids = torch.randint(3, 300, (4, 32), generator=g).to(dev)
out = {}
for arch in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe"):  # not GPT-OSS
    model = tiny_moe(arch, dev, torch.float32)
    plan = moe.resolve_moe(model)
    layout = ab.moe_targets(model, plan)
    rng = np.random.default_rng(0)
    units = {
        (layer, e): rng.choice(layout.expert_neurons[e], 5, replace=False)
        for layer in range(layout.n_layers)
        for e in range(layout.n_experts + layout.n_shared)
    }
    experts = {layer: np.array([1, 5]) for layer in range(layout.n_layers)}
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    line = {}
    logits = {}
    for impl in ("eager", "batched_mm", "grouped_mm"):
        try:
            model.set_experts_implementation(impl)
            with torch.inference_mode():
                bare = model(input_ids=ids).logits.float().cpu()
                with ab.deactivate_moe(layout, units):
                    neu = model(input_ids=ids).logits.float().cpu()
                acc = moe.MoeAccumulator(torch, plan, ids.shape[0], dev, False)
                acc.mask = torch.ones(*ids.shape, 2, device=dev)
                acc.mask[..., 1] = 0
                with ab.mask_experts(layout, experts), moe.capture_moe(plan, acc):
                    exp = model(input_ids=ids).logits.float().cpu()
            routed = acc.routed_count.cpu()
            logits[impl] = (bare, neu, exp)
            line[impl] = {
                "neuron_effect": float((neu - bare).abs().max()),
                "expert_effect": float((exp - bare).abs().max()),
                "masked_experts_tokens": int(routed[:, :, [1, 5]].sum()),
            }
        except Exception as e:
            line[impl] = repr(e)[:300]
    ref = logits.get("eager")
    for impl, v in logits.items():
        if impl != "eager" and ref is not None:
            diffs = [float((a - b).abs().max()) for a, b in zip(v, ref, strict=True)]
            line[impl]["max_diff_vs_eager"] = diffs
    line["weights_restored"] = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    out[arch] = line
    print(arch, json.dumps(line), flush=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "gpu_ablate.json"), "w"), indent=1)
