"""Deactivation experiments: switch language neurons off and measure each language's perplexity.

For each deactivated set (``none``, then the mask of each evaluated language from a saved
identification) and each evaluation language, the mean negative log-likelihood per response
token (and its perplexity) with the set's activations forced to 0 by forward hooks, which are
removed afterwards. For each language's set, ``controls`` random sets of the same size in the
same layers (drawn from the neurons outside that set, seeded) give the noise floor.

Each evaluation record's summed response NLL is kept too (dim ``item``), so that the analysis
can put intervals over items on the damage. The evaluation records must be held out from the
sequences the neurons were identified from (checked by ``seq_id``; ``allow_overlap`` to accept).

The result is a Dataset with dims ``deactivated``, ``evaluated``, ``control`` and ``item``, saved
in the store at ``RUN/ablation/NAME``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import xarray as xr

from langneurons.errors import ParameterError, RunExistsError
from langneurons.extract import _moe_ablate as _moe
from langneurons.extract import corpus as _corpus
from langneurons.extract._heldout import heldout_check
from langneurons.extract._torchio import require_torch
from langneurons.extract.engine import (
    Encoded,
    LoadedModel,
    as_loaded,
    bucket_batches,
    encode,
    load_records,
    pad_batch,
    reporting,
)
from langneurons.names import LAYER, NEURON
from langneurons.store import open_store, schema

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
    on_batch: Callable[[int], None] | None = None,
) -> tuple[float, int]:
    """Summed negative log-likelihood of the response tokens, and their number."""
    encoded = [
        encode(r, loaded.tokenizer, chat_template=chat_template, max_length=max_length)
        for r in records
    ]
    scored = _summed_nll(loaded, encoded, batch_tokens=batch_tokens, on_batch=on_batch)
    return scored.total, scored.count


@dataclasses.dataclass(frozen=True)
class Scored:
    """Response NLL of tokenized records: the total and each record's own sum and tokens.

    ``total`` is summed one batch after another exactly as before per-record sums were kept, so
    the mean NLL per token is unchanged; ``item_sum`` sums the same per-token values (float32)
    in float64 per record, so ``item_sum.sum()`` equals ``total`` up to float32 rounding.
    """

    total: float
    count: int
    item_sum: np.ndarray  # float64 [record]
    item_count: np.ndarray  # int64 [record]


def scored_tokens(encoded: Encoded) -> int:
    """Response tokens of a record that are scored (token 0 has no prediction)."""
    r = len(encoded.response)
    return r - 1 if r and not encoded.prompt else r


def _summed_nll(
    loaded: LoadedModel,
    encoded: Sequence[Encoded],
    *,
    batch_tokens: int,
    on_batch: Callable[[int], None] | None = None,
) -> Scored:
    """Response NLL of tokenized records, in total and per record; ``on_batch`` gets each
    batch's token count."""
    torch = require_torch()
    functional = torch.nn.functional
    pad = int(loaded.tokenizer.pad_token_id or 0)
    # full-vocabulary logits are tokens x vocab floats: keep a batch's under LOGITS_BUDGET
    vocab = int(loaded.model.config.get_text_config().vocab_size)
    batch_tokens = max(1, min(batch_tokens, LOGITS_BUDGET // max(vocab, 1)))
    total, count = 0.0, 0
    item_sum = np.zeros(len(encoded), dtype=np.float64)
    item_count = np.zeros(len(encoded), dtype=np.int64)
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
            # cross_entropy is log_softmax then nll_loss: the total is bit for bit the same
            logp = functional.log_softmax(predicted, dim=-1)
            nll = functional.nll_loss(logp, truth, reduction="sum")
            each = functional.nll_loss(logp, truth, reduction="none").double().cpu().numpy()
            total += float(nll.double())
            count += int(chosen.sum())
            # per record, summed on the CPU in a fixed order (no device atomics)
            rows = target[:, 1:].nonzero()[:, 0].numpy()
            item_sum[batch] = np.bincount(rows, weights=each, minlength=len(batch))
            item_count[batch] = np.bincount(rows, minlength=len(batch))
            if on_batch is not None:
                on_batch(int(attention.sum()))
    return Scored(total, count, item_sum, item_count)


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


# --------------------------------------------------------------------------- the experiment
NONE = "none"  # the deactivated label of the unablated baseline

#: What a resumed ablation must share with the one it completes (its result records them).
_CHECKED = (
    "identification",
    "mask_sha256",
    "corpus_hash",
    "evaluated",
    "controls",
    "seed",
    "chat_template",
    "max_length",
    "batch_tokens",
    "allow_overlap",
)
#: What an ablation made before a checked parameter existed was made with.
_DEFAULTS: dict[str, Any] = {"allow_overlap": False}
_MODEL_CHECKED = ("dtype", "hook_point", "config_sha256")  # the most telling first
_WHAT = {
    "mask_sha256": "identification mask",
    "corpus_hash": "data",
    "evaluated": "set of evaluated languages",
    "config_sha256": "model",
}


@dataclasses.dataclass(frozen=True)
class _Unit:
    """One deactivated set (a language's, or one of its random controls) on one language."""

    row: int  # the deactivated label
    variant: int  # 0: the language's set; c + 1: its random control c
    column: int  # the evaluated language


def _plan(labels: Sequence[str], n_evaluated: int, controls: int) -> list[_Unit]:
    """Every unit, in the order they run: per label its set, then each control; languages inner."""
    return [
        _Unit(d, v, e)
        for d, label in enumerate(labels)
        for v in range(1 + (controls if label != NONE else 0))
        for e in range(n_evaluated)
    ]


def _mask_sha256(mask: np.ndarray, languages: Sequence[str]) -> str:
    digest = hashlib.sha256(json.dumps([list(languages), list(mask.shape)]).encode())
    digest.update(np.ascontiguousarray(mask, dtype=bool).tobytes())
    return digest.hexdigest()


def _recorded(attrs: dict[str, Any], evaluated: Sequence[str]) -> dict[str, Any]:
    """The parameters a saved (partial or complete) ablation was made with, as plain JSON."""
    out = {key: attrs.get(key, _DEFAULTS.get(key)) for key in _CHECKED if key != "evaluated"}
    out["evaluated"] = [str(x) for x in evaluated]
    model = attrs.get("model")
    if not isinstance(model, dict):
        model = {}
    out |= {key: model.get(key) for key in _MODEL_CHECKED}
    return dict(json.loads(json.dumps(out, default=str)))


def _check_same(run: str, name: str, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    for key, value in ours.items():
        if theirs.get(key) != value:
            raise ParameterError(
                f"ablation {name!r} of run {run!r} was made with a different "
                f"{_WHAT.get(key, key)} ({key} {theirs.get(key)!r} != {value!r}); resume it with "
                "the same parameters, or choose another --name"
            )


def load_for_run(
    model: Any,
    tokenizer: Any,
    loaded: LoadedModel | None,
    run_ds: xr.Dataset,
    run: str,
    **loading: Any,
) -> LoadedModel:
    """The run's model (loaded, or the one given), refused when its shape is not the run's."""
    out = as_loaded(model, tokenizer, loaded, **loading)
    if (run_ds.sizes[LAYER], run_ds.sizes[NEURON]) != (out.n_layers, out.plan.neurons):
        raise ParameterError(
            f"run {run!r} has {run_ds.sizes[LAYER]} x {run_ds.sizes[NEURON]} neurons but the "
            f"model has {out.n_layers} x {out.plan.neurons}; ablate with the run's model"
        )
    return out


def check_same_model(run: str, name: str, theirs: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse to resume ablation ``name`` (saved attrs ``theirs``) with another model."""
    model = theirs.get("model")
    model = model if isinstance(model, dict) else {}
    _check_same(
        run,
        name,
        {key: model.get(key) for key in _MODEL_CHECKED},
        {key: identity.get(key) for key in _MODEL_CHECKED},
    )


def ablate(
    model: str | os.PathLike[str] | LoadedModel | Any,
    store: str | os.PathLike[str],
    run: str,
    identification: str,
    data: str | os.PathLike[str],
    *,
    gguf_file: str | None = None,
    languages: Sequence[str] | None = None,
    controls: int = 19,
    seed: int = 0,
    allow_overlap: bool = False,
    batch_tokens: int = 4096,
    max_length: int = 1024,
    device: str = "auto",
    dtype: str = "auto",
    chat_template: bool = False,
    hook_module: str | None = None,
    trust_remote_code: bool = False,
    name: str | None = None,
    resume: bool = False,
    progress: bool | None = None,
    loaded: LoadedModel | None = None,
    tokenizer: Any = None,
    revision: str | None = None,
    allow_download: bool = False,
    checkpoint_seconds: float = 10.0,
    source: str = "identification",
) -> xr.Dataset:
    """Deactivate each language's neurons in turn and measure every language's response NLL.

    The evaluation data must be held out from the sequences the run's neurons were identified
    from (checked by language and ``seq_id`` when the run has per-sequence labels, else by corpus
    hash; see :func:`langneurons.extract._heldout.heldout_check`): scoring deactivation on the
    identification texts is circular. ``allow_overlap=True`` accepts an overlap and records it.

    The work is split into units: one deactivated set (``none``, a language's set, or one of its
    ``controls`` random sets) evaluated on one language. Finished units are saved at
    ``RUN/ablation/NAME`` as a *partial* result (variables ``unit_nll`` and ``unit_done``,
    ``unit_item_nll`` with the per-record sums, attributes ``units_done`` and ``units_total``)
    after the first unit that ends at least ``checkpoint_seconds`` (default 10; 0 saves after
    every unit) after the previous save, so a killed ablation loses at most that much finished
    work and the unit it was running: ``resume=True`` skips the saved units and gives the result
    an uninterrupted run gives, bit for bit. The random controls are drawn from ``seed`` in a
    fixed order, whatever was done before. The finished result replaces the partial one.

    Parameters
    ----------
    model, gguf_file, revision, allow_download, tokenizer
        The run's model: a path, a Hugging Face id, or a model in memory (see
        :func:`langneurons.extract.engine.extract`).
    identification, source
        A saved identification of ``run`` whose per-language ``mask`` is switched off (on a
        mixture of experts, see :mod:`langneurons.extract.moe_ablation`); ``source="stats"``:
        a saved ``stats experts`` result, whose ``preferred`` experts are masked.
    data
        Evaluation records; their response tokens are scored.
    languages
        Evaluate (and deactivate) only these languages.
    controls, seed
        Random sets per language (same count per layer, drawn from the layer's other neurons).
        The default 19 lets the per-language control test reach p = 1/(19+1) = 0.05.
    allow_overlap
        Accept evaluation items that the run's neurons were identified from (recorded in
        ``attrs["heldout"]``); refused by default.
    name
        Where the result is saved (``RUN/ablation/NAME``; default: the identification's name).
    resume
        Complete an interrupted ablation of that name (or return a finished one). Without it
        an existing ablation of that name is refused. The identification (and its mask), data,
        evaluated languages, controls, seed, allow_overlap, chat template, lengths and model
        must be the same.
    progress
        ``False``: report none; otherwise as :mod:`langneurons._progress` is configured (tokens
        of the units still to do; the status names the unit).

    Returns
    -------
    xarray.Dataset
        ``nll[deactivated, evaluated]`` (mean NLL per response token), ``ppl``,
        ``control_nll[deactivated, evaluated, control]`` (NaN for ``none``), ``n_neurons``;
        per evaluation record (dim ``item``, coordinates ``item_language`` and ``item_id``, in
        the order of ``evaluated`` then of the data) the summed response NLL
        ``item_nll[deactivated, item]`` and ``control_item_nll[deactivated, item, control]``
        and the scored tokens ``item_tokens[item]`` (``nll`` is the sum of a language's items
        over the sum of their tokens, up to float32 rounding); ``attrs`` ``heldout``,
        ``heldout_note`` and ``heldout_overlap`` say whether the items are held out;
        ``attrs["result_path"]`` is where it is saved in the store (``RUN/ablation/NAME``, as
        :meth:`~langneurons.store.ActivationStore.save_result` returns it).
    """
    if not isinstance(controls, int) or isinstance(controls, bool) or controls < 0:
        raise ParameterError(f"controls must be a non-negative integer, got {controls!r}")
    if not isinstance(allow_overlap, bool):
        raise ParameterError(f"allow_overlap must be True or False, got {allow_overlap!r}")
    for key, value in (("batch_tokens", batch_tokens), ("max_length", max_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ParameterError(f"{key} must be a positive integer, got {value!r}")
    name = schema.check_name(name or identification, "result")
    opened = open_store(store, mode="r+")
    result = opened.open_result(run, _moe.check_source(source), identification)
    mask_da = _moe.identification_mask(result, identification)
    moe_unit = _moe.mask_unit(mask_da, identification)  # None: dense; neurons or whole experts
    mask_langs = [str(x) for x in mask_da.language.values]
    records = load_records(data)
    evaluated = list(dict.fromkeys(r.language for r in records))
    if languages:
        unknown = [x for x in languages if x not in evaluated]
        if unknown:
            raise ParameterError(f"language {unknown[0]!r} is not in the evaluation data")
        evaluated = [x for x in evaluated if x in set(languages)]
    items = [r for lang in evaluated for r in records if r.language == lang]
    mask = np.asarray(mask_da.values, dtype=bool)  # [language, layer, (expert,) neuron]
    attrs: dict[str, Any] = {
        "identification": identification,
        "mask_sha256": _mask_sha256(mask, mask_langs),
        "data": str(data),
        "corpus_hash": _corpus.corpus_hash(records),
        "controls": controls,
        "seed": seed,
        "chat_template": chat_template,
        "max_length": max_length,
        "batch_tokens": batch_tokens,
        "allow_overlap": allow_overlap,
        "model": {},
        "control_rule": "same count per layer, drawn from the layer's neurons outside the set",
    }
    attrs |= {"source": source} if source != "identification" else {}
    # an earlier ablation of this name: refused without --resume, checked (before the model is
    # loaded, then its identity after) with it
    earlier: xr.Dataset | None = None
    if name in opened.results(run, "ablation"):
        earlier = opened.open_result(run, "ablation", name).load()
    partial = earlier is not None and "unit_done" in earlier
    if partial and resume and earlier is not None and "unit_item_nll" not in earlier:
        raise ParameterError(
            f"ablation {name!r} of run {run!r} was interrupted before per-item NLL was stored, "
            "so it cannot be completed; ablate again under another --name"
        )
    if earlier is not None and not resume:
        if partial:
            raise RunExistsError(
                f"ablation {name!r} of run {run!r} was interrupted after "
                f"{earlier.attrs.get('units_done', '?')} of "
                f"{earlier.attrs.get('units_total', '?')} units; pass --resume to complete it, "
                "or choose another --name"
            )
        raise RunExistsError(
            f"ablation {name!r} of run {run!r} already exists; choose another --name, or pass "
            "--resume to reuse it"
        )
    theirs = _recorded(earlier.attrs, earlier.evaluated.values) if earlier is not None else {}
    ours = _recorded(attrs, evaluated)
    if earlier is not None:
        _check_same(run, name, theirs, {k: v for k, v in ours.items() if k in _CHECKED})
    # held out from the identification sequences: checked before anything is loaded or written
    run_ds = opened.open_run(run)
    _moe.check_run(moe_unit, run_ds, identification, run)
    attrs |= heldout_check(run_ds, items, allow_overlap=allow_overlap, run=run)
    loaded = load_for_run(
        model,
        tokenizer,
        loaded,
        run_ds,
        run,
        gguf_file=gguf_file,
        device=device,
        dtype=dtype,
        hook_module=hook_module,
        trust_remote_code=trust_remote_code,
        revision=revision,
        allow_download=allow_download,
    )
    moe_off = _moe.for_ablation(loaded, moe_unit, identification, run, run_ds)
    if moe_off is not None:  # what is switched off, and how the controls are drawn
        attrs |= {"moe_unit": moe_off.unit, "control_rule": moe_off.control_rule}
    writer = opened.writer(run)  # the run's name is checked once, for every save below
    attrs["model"] = loaded.identity
    if earlier is not None:
        _check_same(run, name, theirs, _recorded(attrs, evaluated))
        if not partial:
            log.info("ablation %r of run %r is complete; nothing to do", name, run)
            earlier.attrs["result_path"] = f"{writer.run}/ablation/{name}"
            return earlier
    # each evaluated language's own set is switched off in turn (its diagonal needs both)
    sets: dict[str, dict[Any, np.ndarray]] = {NONE: {}}
    if moe_off is None:
        sets |= {
            lang: {layer: np.flatnonzero(mask[k, layer]) for layer in range(mask.shape[1])}
            for k, lang in enumerate(mask_langs)
            if lang in evaluated
        }
    else:  # {(layer, expert): neurons} or {layer: experts}, checked before any unit runs
        sets |= _moe.language_sets(mask_da, moe_off.unit, [x for x in mask_langs if x in evaluated])
        for one in sets.values():
            moe_off.check(one)
    labels = list(sets)
    # the random controls, always drawn in the same order, so a resumed run draws the same sets
    rng = np.random.default_rng(seed)
    drawn = {
        (d, c + 1): moe_off.control(sets[label], rng)
        if moe_off is not None
        else random_control(sets[label], loaded.plan.neurons, rng)
        for d, label in enumerate(labels)
        if label != NONE
        for c in range(controls)
    }
    units = _plan(labels, len(evaluated), controls)
    values = np.full((len(labels), len(evaluated), controls + 1), np.nan)
    item_values = np.full((len(labels), len(items), controls + 1), np.nan)
    done = np.zeros(values.shape, dtype=bool)
    if earlier is not None:  # a partial ablation with the same parameters: keep its units
        values = np.array(earlier["unit_nll"].values, dtype=np.float64)
        item_values = np.array(earlier["unit_item_nll"].values, dtype=np.float64)
        done = np.array(earlier["unit_done"].values, dtype=bool)
    todo = [u for u in units if not done[u.row, u.column, u.variant]]
    if len(todo) < len(units):
        log.info(
            "resuming ablation %r of run %r: %d of %d units already done",
            name,
            run,
            len(units) - len(todo),
            len(units),
        )
    encoded = [
        encode(r, loaded.tokenizer, chat_template=chat_template, max_length=max_length)
        for r in items
    ]
    # each language's items are one contiguous slice of the item dimension
    starts = np.cumsum([0] + [sum(r.language == lang for r in items) for lang in evaluated])
    slices = {lang: slice(int(starts[k]), int(starts[k + 1])) for k, lang in enumerate(evaluated)}
    by_lang = {lang: encoded[slices[lang]] for lang in evaluated}
    item_tokens = np.array([scored_tokens(e) for e in encoded], dtype=np.int64)
    tokens = {lang: sum(e.length for e in enc) for lang, enc in by_lang.items()}
    total = sum(tokens[evaluated[u.column]] for u in todo)
    if not isinstance(checkpoint_seconds, int | float) or not checkpoint_seconds >= 0:
        raise ParameterError(f"checkpoint_seconds must be >= 0, got {checkpoint_seconds!r}")
    last_save = time.monotonic()
    with reporting("ablate", total, "tok", progress) as task:
        for k, unit in enumerate(todo, 1):
            label, lang = labels[unit.row], evaluated[unit.column]
            if unit.variant == 0:
                neurons, what = sets[label], label
            else:
                neurons = drawn[(unit.row, unit.variant)]
                what = f"{label} control {unit.variant}/{controls}"
            task.note(f"off {what}, on {lang} (unit {k}/{len(todo)})")
            if unit.row and done[0, unit.column, 0] and not any(map(len, neurons.values())):
                # an empty set (and its controls) switches nothing off: the unablated
                # values, which the same forward pass would give bit for bit
                values[unit.row, unit.column, unit.variant] = values[0, unit.column, 0]
                item_values[unit.row, slices[lang], unit.variant] = item_values[0, slices[lang], 0]
                task.update(tokens[lang])
            else:
                off = (
                    deactivate(loaded, neurons) if moe_off is None else moe_off.switch_off(neurons)
                )
                with off:
                    scored = _summed_nll(
                        loaded, by_lang[lang], batch_tokens=batch_tokens, on_batch=task.update
                    )
                count = scored.count
                values[unit.row, unit.column, unit.variant] = (
                    scored.total / count if count else math.nan
                )
                item_values[unit.row, slices[lang], unit.variant] = scored.item_sum
            done[unit.row, unit.column, unit.variant] = True
            # finished units are saved at most every checkpoint_seconds: a kill loses at most
            # that much work, and tiny units do not spend their time saving
            if k < len(todo) and time.monotonic() - last_save >= checkpoint_seconds:
                writer.save_result(
                    "ablation",
                    name,
                    _partial(
                        values,
                        item_values,
                        done,
                        labels,
                        evaluated,
                        items,
                        item_tokens,
                        attrs,
                        len(units),
                    ),
                )
                last_save = time.monotonic()
    sizes = np.array([sum(len(v) for v in sets[label].values()) for label in labels], np.int64)
    nll_table = values[:, :, 0]
    ds = xr.Dataset(
        {
            "nll": (("deactivated", "evaluated"), nll_table),
            "ppl": (("deactivated", "evaluated"), np.exp(nll_table)),
            "control_nll": (("deactivated", "evaluated", "control"), values[:, :, 1:]),
            ("n_experts" if moe_unit == _moe.EXPERT_UNIT else "n_neurons"): (
                ("deactivated",),
                sizes,
            ),
            "item_nll": (("deactivated", "item"), item_values[:, :, 0]),
            "control_item_nll": (("deactivated", "item", "control"), item_values[:, :, 1:]),
            "item_tokens": (("item",), item_tokens),
        },
        coords={
            "deactivated": np.array(labels, dtype=object),
            "evaluated": np.array(evaluated, dtype=object),
            "control": np.arange(controls),
            **_item_coords(items),
        },
        attrs=attrs,
    )
    # the finished result replaces the partial one; callers learn where from the returned
    # attrs only (the saved copy does not hold its own path, which a copied store would falsify)
    ds.attrs["result_path"] = writer.save_result("ablation", name, ds)
    return ds


def _item_coords(items: Sequence[_corpus.Record]) -> dict[str, Any]:
    """The language and id of each evaluation record, on the ``item`` dimension."""
    return {
        "item_language": ("item", np.array([r.language for r in items], dtype=object)),
        "item_id": ("item", np.array([r.id for r in items], dtype=object)),
    }


def _partial(
    values: np.ndarray,
    item_values: np.ndarray,
    done: np.ndarray,
    labels: Sequence[str],
    evaluated: Sequence[str],
    items: Sequence[_corpus.Record],
    item_tokens: np.ndarray,
    attrs: dict[str, Any],
    n_units: int,
) -> xr.Dataset:
    """The finished units of an unfinished ablation, with its parameters.

    Its variables are not those of an ablation result (``nll``, ``control_nll``), so no reader
    takes it for a finished one.
    """
    return xr.Dataset(
        {
            "unit_nll": (("deactivated", "evaluated", "variant"), values.copy()),
            "unit_done": (("deactivated", "evaluated", "variant"), done.copy()),
            "unit_item_nll": (("deactivated", "item", "variant"), item_values.copy()),
            "item_tokens": (("item",), item_tokens.copy()),
        },
        coords={
            "deactivated": np.array(labels, dtype=object),
            "evaluated": np.array(evaluated, dtype=object),
            "variant": np.arange(values.shape[2]),
            **_item_coords(items),
        },
        attrs={
            **attrs,
            "status": "partial: complete it with `langneurons ablate ... --resume`",
            "units_done": int(done.sum()),
            "units_total": n_units,
            "variant_meaning": "0: the language's set; c + 1: its random control c",
        },
    )
