"""Deactivation experiments: switch language neurons off and measure each language's perplexity.

For each deactivated set (``none``, then the mask of each evaluated language from a saved
identification) and each evaluation language, the mean negative log-likelihood per response
token (and its perplexity) with the set's activations forced to 0 by forward hooks, which are
removed afterwards. For each language's set, ``controls`` random sets of the same size in the
same layers (drawn from the neurons outside that set, seeded) give the noise floor.

The result is a Dataset with dims ``deactivated``, ``evaluated`` and ``control``, saved in the
store at ``RUN/ablation/NAME``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import xarray as xr

from langneurons.errors import ParameterError
from langneurons.extract import corpus as _corpus
from langneurons.extract._torchio import require_torch
from langneurons.extract.engine import (
    LoadedModel,
    bucket_batches,
    encode,
    load_model,
    load_records,
    pad_batch,
)
from langneurons.store import open_store

log = logging.getLogger(__name__)

LOGITS_BUDGET = 2**28  # logits per batch (1 GiB in float32)


@contextlib.contextmanager
def deactivate(loaded: LoadedModel, neurons: dict[int, np.ndarray]) -> Iterator[None]:
    """Force the activations of ``neurons`` ({layer: indices}) to 0 while the block runs."""
    torch = require_torch()
    handles: list[Any] = []
    masks = {}
    for layer, index in neurons.items():
        if len(index):
            keep = torch.ones(loaded.plan.neurons, dtype=torch.bool, device=loaded.device)
            keep[torch.as_tensor(np.asarray(index), dtype=torch.int64, device=loaded.device)] = (
                False
            )
            masks[layer] = keep

    def make_hook(keep: Any) -> Any:
        def hook(module: Any, args: Any, output: Any) -> Any:
            return output * keep.to(output.dtype)

        return hook

    try:
        for layer, keep in masks.items():
            handles.append(loaded.plan.modules[layer].register_forward_hook(make_hook(keep)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def response_nll(
    loaded: LoadedModel,
    records: Sequence[_corpus.Record],
    *,
    batch_tokens: int,
    max_length: int,
    chat_template: bool,
) -> tuple[float, int]:
    """Summed negative log-likelihood of the response tokens, and their number."""
    torch = require_torch()
    encoded = [
        encode(r, loaded.tokenizer, chat_template=chat_template, max_length=max_length)
        for r in records
    ]
    pad = int(loaded.tokenizer.pad_token_id or 0)
    # full-vocabulary logits are tokens x vocab floats: keep a batch's under LOGITS_BUDGET
    vocab = int(loaded.model.config.get_text_config().vocab_size)
    batch_tokens = max(1, min(batch_tokens, LOGITS_BUDGET // max(vocab, 1)))
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in bucket_batches([e.length for e in encoded], batch_tokens):
            ids, mask = pad_batch([encoded[i] for i in batch], pad)
            attention = mask.sum(-1).to(torch.int64)
            target = mask[..., 1].bool()
            target[:, 0] = False  # token 0 has no prediction
            logits = loaded.model(
                input_ids=ids.to(loaded.device),
                attention_mask=attention.to(loaded.device),
                use_cache=False,
            ).logits
            chosen = target[:, 1:].to(loaded.device)
            predicted = logits[:, :-1][chosen].float()  # only the response positions
            truth = ids[:, 1:].to(loaded.device)[chosen]
            nll = torch.nn.functional.cross_entropy(predicted, truth, reduction="sum")
            total += float(nll.double())
            count += int(chosen.sum())
    return total, count


def random_control(
    mask: dict[int, np.ndarray], n_neurons: int, rng: np.random.Generator
) -> dict[int, np.ndarray]:
    """As many neurons per layer as ``mask`` has, drawn from the others in that layer."""
    out = {}
    for layer, index in mask.items():
        others = np.setdiff1d(np.arange(n_neurons), index)
        take = min(len(index), len(others))
        out[layer] = np.sort(rng.choice(others, size=take, replace=False)) if take else index[:0]
    return out


def ablate(
    model: str | os.PathLike[str],
    store: str | os.PathLike[str],
    run: str,
    identification: str,
    data: str | os.PathLike[str],
    *,
    gguf_file: str | None = None,
    languages: Sequence[str] | None = None,
    controls: int = 3,
    seed: int = 0,
    batch_tokens: int = 4096,
    max_length: int = 1024,
    device: str = "auto",
    dtype: str = "auto",
    chat_template: bool = False,
    hook_module: str | None = None,
    trust_remote_code: bool = False,
    name: str | None = None,
    loaded: LoadedModel | None = None,
) -> xr.Dataset:
    """Deactivate each language's neurons in turn and measure every language's response NLL.

    Returns the Dataset (also saved under ``RUN/ablation/NAME``, NAME defaulting to the
    identification's name) with ``nll[deactivated, evaluated]``, ``ppl``,
    ``control_nll[deactivated, evaluated, control]`` (NaN for ``none``), ``n_neurons``.
    """
    if not isinstance(controls, int) or controls < 0:
        raise ParameterError(f"controls must be a non-negative integer, got {controls!r}")
    opened = open_store(store, mode="r+")
    result = opened.open_result(run, "identification", identification)
    if "mask" not in result:
        raise ParameterError(f"identification {identification!r} holds no per-language mask")
    mask_langs = [str(x) for x in result.language.values]
    records = load_records(data)
    evaluated = list(dict.fromkeys(r.language for r in records))
    if languages:
        unknown = [x for x in languages if x not in evaluated]
        if unknown:
            raise ParameterError(f"language {unknown[0]!r} is not in the evaluation data")
        evaluated = [x for x in evaluated if x in set(languages)]
    if loaded is None:
        loaded = load_model(
            model,
            gguf_file=gguf_file,
            device=device,
            dtype=dtype,
            hook_module=hook_module,
            trust_remote_code=trust_remote_code,
        )
    run_ds = opened.open_run(run)
    if (run_ds.sizes["layer"], run_ds.sizes["neuron"]) != (loaded.n_layers, loaded.plan.neurons):
        raise ParameterError(
            f"run {run!r} has {run_ds.sizes['layer']} x {run_ds.sizes['neuron']} neurons but the "
            f"model has {loaded.n_layers} x {loaded.plan.neurons}; ablate with the run's model"
        )
    mask = np.asarray(result["mask"].values, dtype=bool)  # [language, layer, neuron]
    # each evaluated language's own set is switched off in turn (its diagonal needs both)
    sets: dict[str, dict[int, np.ndarray]] = {"none": {}} | {
        lang: {layer: np.flatnonzero(mask[k, layer]) for layer in range(mask.shape[1])}
        for k, lang in enumerate(mask_langs)
        if lang in evaluated
    }
    by_lang = {lang: [r for r in records if r.language == lang] for lang in evaluated}

    def evaluate(neurons: dict[int, np.ndarray]) -> list[float]:
        with deactivate(loaded, neurons):
            out = []
            for lang in evaluated:
                total, count = response_nll(
                    loaded,
                    by_lang[lang],
                    batch_tokens=batch_tokens,
                    max_length=max_length,
                    chat_template=chat_template,
                )
                out.append(total / count if count else math.nan)
            return out

    rng = np.random.default_rng(seed)
    labels = list(sets)
    nll = np.full((len(labels), len(evaluated)), np.nan)
    control = np.full((len(labels), len(evaluated), controls), np.nan)
    sizes = np.zeros(len(labels), dtype=np.int64)
    for d, label in enumerate(labels):
        neurons = sets[label]
        sizes[d] = sum(len(v) for v in neurons.values())
        log.info("deactivating %s (%d neurons)", label, sizes[d])
        nll[d] = evaluate(neurons)
        if label != "none":
            for c in range(controls):
                control[d, :, c] = evaluate(random_control(neurons, loaded.plan.neurons, rng))
    ds = xr.Dataset(
        {
            "nll": (("deactivated", "evaluated"), nll),
            "ppl": (("deactivated", "evaluated"), np.exp(nll)),
            "control_nll": (("deactivated", "evaluated", "control"), control),
            "n_neurons": (("deactivated",), sizes),
        },
        coords={
            "deactivated": np.array(labels, dtype=object),
            "evaluated": np.array(evaluated, dtype=object),
            "control": np.arange(controls),
        },
        attrs={
            "identification": identification,
            "data": str(data),
            "corpus_hash": _corpus.corpus_hash(records),
            "controls": controls,
            "seed": seed,
            "chat_template": chat_template,
            "max_length": max_length,
            "model": loaded.identity,
            "control_rule": "same count per layer, drawn from the layer's neurons outside the set",
        },
    )
    opened.save_result(run, "ablation", name or identification, ds)
    return ds
