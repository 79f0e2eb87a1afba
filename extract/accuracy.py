"""Accuracy-based deactivation (Zhang et al. 2025): switch neurons off, answer, score the answer.

For each *panel* (a neuron set per language built from a ternary identification's types) and
each deactivated language d, the model answers every evaluation item of every evaluated language
greedily with d's set switched off, and each answer is scored (:mod:`._answers`): correct when
its final number is the reference ``answer`` *and* it is written in the question's language
(:mod:`._langid`). The panels of the paper:

- ``specific``: d's language-specific neurons;
- ``specific+related``: those and the language-related neurons whose languages include d;
- ``specific+related+general``: and the general neurons (shared by every language).

Each set has ``controls`` random sets of the same count per layer (drawn, seeded, from the
layer's other neurons), and the baseline answers with nothing off. Per-item results are saved
at ``RUN/ablation/NAME`` with ``attrs["kind"] == "accuracy"``; :mod:`langneurons.analysis.accuracy`
turns them into accuracies, drops and tests.

On a mixture-of-experts run a per-expert ternary identification (``mask[language, layer,
expert, neuron]``) gives each panel's neurons inside experts, and a mask ``[language, layer,
expert]`` or, with ``source="stats"``, a ``stats experts`` result's ``preferred`` experts gives
whole experts masked in the router (one panel, ``experts``); both are switched off, and their
controls drawn, by :mod:`langneurons.extract._moe_ablate` as ``ablate`` does.

Work is split into units (the baseline; one set of one panel for one language, or one of its
controls), each answering every item. Finished units are saved as a partial result at most every
``checkpoint_seconds``; ``resume=True`` completes it with the answers an uninterrupted run gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import xarray as xr

from langneurons._type_codes import as_type_labels
from langneurons.errors import ParameterError, RunExistsError
from langneurons.extract import _moe_ablate as _moe
from langneurons.extract import corpus as _corpus
from langneurons.extract._answers import score_answer
from langneurons.extract._generate import generate_answers
from langneurons.extract._heldout import heldout_check
from langneurons.extract._langid import detectable
from langneurons.extract.ablation import (
    check_same_model,
    deactivate,
    load_for_run,
    random_control,
)
from langneurons.extract.engine import LoadedModel, load_records, reporting
from langneurons.names import EXPERT, LAYER, NEURON
from langneurons.store import open_store, schema

log = logging.getLogger(__name__)

KIND: Final = "accuracy"
PARTS: Final = ("specific", "related", "general")
PANELS: Final = ("specific", "specific+related", "specific+related+general")
FIELDS: Final = ("correct", "number_ok", "language_ok", "detected", "text")
#: The one panel of whole experts (a mask [language, layer, expert] has no neuron types).
EXPERT_PANEL: Final = "experts"
#: What a resumed accuracy ablation must share with the one it completes.
_CHECKED: Final = (
    "identification",
    "mask_sha256",
    "corpus_hash",
    "panels",
    "languages",
    "controls",
    "seed",
    "max_new_tokens",
    "chat_template",
    "batch_size",
    "answer_end",
)


def check_panels(panels: Sequence[str]) -> tuple[str, ...]:
    """Each panel is a ``+``-joined list of neuron types (specific, related, general)."""
    if isinstance(panels, str) or not panels:
        raise ParameterError(
            f"panels must be a non-empty list such as {', '.join(PANELS)}; got {panels!r}"
        )
    out = []
    for panel in panels:
        parts = str(panel).split("+")
        bad = [p for p in parts if p not in PARTS]
        if bad or len(set(parts)) != len(parts):
            raise ParameterError(
                f"panel {panel!r} is unknown; a panel joins neuron types with '+' "
                f"({', '.join(PARTS)}), e.g. {', '.join(PANELS)}"
            )
        out.append("+".join(parts))
    if len(set(out)) != len(out):
        raise ParameterError(f"panels must be distinct, got {list(panels)}")
    return tuple(out)


def panel_sets(
    identification: xr.Dataset, languages: Sequence[str], panel: str
) -> dict[str, dict[Any, np.ndarray]]:
    """Each language's neuron set ({layer: indices}; on a mixture of experts {(layer, expert):
    indices}, non-empty cells only) of one panel of a ternary identification.

    Specific and related neurons are those of the language's mask with that type; general
    neurons are the identification's ``general`` variable (above tau in every language, over
    all neurons, as Zhang et al. count them), else the selected neurons typed general.
    """
    grid = (LAYER, EXPERT, NEURON) if EXPERT in identification["mask"].dims else (LAYER, NEURON)
    mask = np.asarray(identification["mask"].transpose("language", *grid).values, bool)
    types = as_type_labels(identification["neuron_type"].transpose(*grid)).astype(str)
    if "general" in identification:
        general = np.asarray(identification["general"].transpose(*grid).values, bool)
    else:
        general = types == "general"
    index = {str(x): k for k, x in enumerate(identification["language"].values)}
    parts = panel.split("+")
    out: dict[str, dict[Any, np.ndarray]] = {}
    for lang in languages:
        own = mask[index[lang]]
        chosen = np.zeros(own.shape, dtype=bool)
        if "specific" in parts:
            chosen |= own & (types == "specific")
        if "related" in parts:
            chosen |= own & (types == "related")
        if "general" in parts:
            chosen |= general
        if chosen.ndim == 3:  # [layer, expert, neuron]: the (layer, expert) cells with neurons
            out[lang] = {
                (int(layer), int(expert)): np.flatnonzero(chosen[layer, expert])
                for layer, expert in zip(*np.nonzero(chosen.any(axis=2)), strict=True)
            }
        else:
            out[lang] = {layer: np.flatnonzero(chosen[layer]) for layer in range(len(chosen))}
    return out


def _digest(neurons: dict[Any, np.ndarray]) -> str:
    h = hashlib.sha256()  # empty layers are left out: an empty set is the baseline's
    for layer in sorted(k for k, v in neurons.items() if len(v)):
        h.update(f"{layer}:".encode())
        h.update(np.asarray(neurons[layer], dtype=np.int64).tobytes())
    return h.hexdigest()


def _mask_sha256(ident: xr.Dataset) -> str:
    h = hashlib.sha256(json.dumps([str(x) for x in ident["language"].values]).encode())
    h.update(np.ascontiguousarray(ident["mask"].values, dtype=bool).tobytes())
    if "neuron_type" in ident:  # absent from a mask of whole experts
        h.update("|".join(as_type_labels(ident["neuron_type"]).astype(str).ravel()).encode())
    if "general" in ident:
        h.update(np.ascontiguousarray(ident["general"].values, dtype=bool).tobytes())
    return h.hexdigest()


def _check_int(name: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class _Unit:
    """The baseline (panel -1), or one set of a panel for one language (variant 0: the real
    set; c + 1: its random control c)."""

    panel: int
    row: int
    variant: int


def ablate_accuracy(
    model: str | os.PathLike[str] | LoadedModel | Any,
    store: str | os.PathLike[str],
    run: str,
    identification: str,
    data: str | os.PathLike[str],
    *,
    languages: Sequence[str] | None = None,
    panels: Sequence[str] | None = None,
    controls: int = 1,
    seed: int = 0,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    chat_template: bool = False,
    answer_end: str | None = None,
    allow_overlap: bool = False,
    name: str | None = None,
    resume: bool = False,
    progress: bool | None = None,
    loaded: LoadedModel | None = None,
    tokenizer: Any = None,
    gguf_file: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    hook_module: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    allow_download: bool = False,
    checkpoint_seconds: float = 30.0,
    source: str = "identification",
) -> xr.Dataset:
    """Answer every evaluation item with each panel's neuron sets off; score each answer.

    Parameters
    ----------
    model, gguf_file, revision, allow_download, tokenizer, loaded, device, dtype, hook_module,
    trust_remote_code
        The run's model (see :func:`langneurons.extract.engine.extract`).
    identification, source
        A saved *ternary* identification of ``run`` (its ``mask`` and ``neuron_type``; on a
        mixture of experts, per expert: neurons inside experts are switched off), or a mask
        ``[language, layer, expert]`` of whole experts (masked in the router; one panel,
        ``experts``); ``source="stats"``: a saved ``stats experts`` result, whose ``preferred``
        experts are masked.
    data
        Evaluation records with an ``answer`` each (e.g. ``"builtin:evaluate"``), held out
        from the run's sequences unless ``allow_overlap``.
    languages
        Evaluate (and deactivate) only these languages; default every language of ``data``.
        Languages the identification lacks are evaluated but not deactivated.
    panels
        Neuron sets per language: ``+``-joined neuron types (default the paper's three; whole
        experts have the one panel ``experts``).
    controls, seed
        Random sets per real set (same count per layer), drawn from ``seed`` in a fixed order.
        Generation is costly: few controls are allowed, and the smallest attainable control
        p-value, 1 / (controls + 1), is recorded (``min_pvalue_control``).
    max_new_tokens, batch_size, chat_template, answer_end
        Greedy generation: answer length, prompts per batch, whether prompts are wrapped in
        the tokenizer's chat template, and a string that ends an answer (generation stops at
        it and the answer is cut there; e.g. ``"\n\n"`` for a base model given few-shot
        prompts, which would otherwise go on to write the next question).
    name
        Saved at ``RUN/ablation/NAME`` (default ``"accuracy-" + identification``).
    resume, checkpoint_seconds
        Finished units are saved at most every ``checkpoint_seconds`` (0: after every unit);
        ``resume=True`` completes an interrupted ablation of that name (same parameters).

    Returns
    -------
    xarray.Dataset
        ``correct``, ``number_ok``, ``language_ok`` (bool), ``detected`` and ``text`` (str) on
        ``[panel, deactivated, variant, item]``; ``baseline_*`` the same on ``[item]``;
        ``n_neurons[panel, deactivated, variant]`` (``n_experts`` for whole experts, with
        ``attrs["moe_unit"]`` on a mixture of experts, as ``ablate`` saves); coordinates
        ``item_id`` and ``item_language`` on ``item``. ``attrs``: ``kind == "accuracy"``, the
        parameters, the held-out check (``heldout``, ``heldout_note``, ``heldout_overlap``),
        the model identity and ``min_pvalue_control``; ``attrs["result_path"]`` is where it
        is saved.

    Raises
    ------
    ParameterError
        A record has no ``answer``; the identification is not ternary; a panel is unknown; an
        evaluation item was read to identify the neurons (without ``allow_overlap``); a
        language the answer check cannot detect; a bad count.
    RunExistsError
        An ablation of that name exists and ``resume`` is False.

    References
    ----------
    Zhang et al. (2025), "How does Alignment Enhance LLMs' Multilingual Capabilities? A Language
    Neurons Perspective"; Shi et al. (2023), "Language Models are Multilingual Chain-of-Thought
    Reasoners" (MGSM, final-number scoring).
    """
    if panels is not None and list(panels) != [EXPERT_PANEL]:
        panels = check_panels(panels)
    controls = _check_int("controls", controls, 0)
    max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    if not isinstance(checkpoint_seconds, int | float) or not checkpoint_seconds >= 0:
        raise ParameterError(f"checkpoint_seconds must be >= 0, got {checkpoint_seconds!r}")
    name = schema.check_name(name or f"accuracy-{identification}", "result")
    records = load_records(data)
    missing = [r for r in records if r.answer is None or not str(r.answer).strip()]
    if missing:
        raise ParameterError(
            f"{len(missing)} of {len(records)} records of {str(data)!r} have no 'answer' "
            f"(first: language {missing[0].language!r}, id {missing[0].id!r}); accuracy-based "
            "deactivation scores answers against it: give data with answers, e.g. "
            "'builtin:evaluate'"
        )
    evaluated = list(dict.fromkeys(r.language for r in records))
    if languages:
        unknown = [x for x in languages if x not in evaluated]
        if unknown:
            raise ParameterError(f"language {unknown[0]!r} is not in the evaluation data")
        evaluated = [x for x in evaluated if x in set(languages)]
    blind = [x for x in evaluated if detectable(x) is None]
    if blind:
        raise ParameterError(
            f"language {blind[0]!r} cannot be told by the answer-language check; evaluate only "
            "languages it knows (--languages)"
        )
    records = [r for r in records if r.language in set(evaluated)]
    opened = open_store(store, mode="r+")
    ident = opened.open_result(run, _moe.check_source(source), identification)
    mask_da = _moe.identification_mask(ident, identification)
    unit = _moe.mask_unit(mask_da, identification)  # None: dense; neurons or whole experts
    if unit == _moe.EXPERT_UNIT:  # whole experts: no neuron types, one panel
        if panels is not None and tuple(panels) != (EXPERT_PANEL,):
            raise ParameterError(
                f"{identification!r} masks whole experts, which have no neuron types; drop "
                f"--panels (the one panel of whole experts is {EXPERT_PANEL!r})"
            )
        panels = (EXPERT_PANEL,)
        ident = xr.Dataset({"mask": mask_da}).load()
    else:
        panels = check_panels(PANELS if panels is None else panels)
        if "neuron_type" not in ident or ident.attrs.get("method") != "ternary":
            raise ParameterError(
                f"identification {identification!r} is not ternary (method "
                f"{ident.attrs.get('method')!r}); the panels need the ternary rule's specific, "
                "related and general neurons: identify with --method ternary"
            )
        ident = ident[["mask", "neuron_type", *(["general"] if "general" in ident else [])]]
        ident = ident.load()
    run_ds = opened.open_run(run)
    _moe.check_run(unit, run_ds, identification, run)
    held = heldout_check(run_ds, records, allow_overlap=allow_overlap, run=run)
    rows = [x for x in evaluated if x in {str(v) for v in ident["language"].values}]
    if not rows:
        raise ParameterError(
            f"no evaluated language ({', '.join(evaluated)}) is in identification "
            f"{identification!r}; nothing to deactivate"
        )
    attrs: dict[str, Any] = {
        "kind": KIND,
        "identification": identification,
        "mask_sha256": _mask_sha256(ident),
        "data": str(data),
        "corpus_hash": _corpus.corpus_hash(records),
        "panels": list(panels),
        "languages": list(evaluated),
        "controls": controls,
        "seed": seed,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "chat_template": chat_template,
        "answer_end": answer_end or "",
        **held,
        "min_pvalue_control": 1.0 / (controls + 1),
        "control_rule": "same count per layer, drawn from the layer's neurons outside the set",
        "scoring": "correct = the answer's final number equals the reference answer and the "
        "answer is detected as the question's language (script / word profile)",
        "unknown_language": "an answer whose language is unknown counts as not in the language",
        "variant_meaning": "0: the panel's set of the deactivated language; c + 1: control c",
        "model": {},
    }
    attrs |= {"source": source} if source != "identification" else {}
    earlier = _earlier(opened, run, name, resume)
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
    moe_off = _moe.for_ablation(loaded, unit, identification, run, run_ds)
    if moe_off is not None:  # what is switched off, and how the controls are drawn
        attrs |= {"moe_unit": moe_off.unit, "control_rule": moe_off.control_rule}
    attrs["model"] = loaded.identity
    writer = opened.writer(run)
    if earlier is not None:
        for key in _CHECKED:
            if json.dumps(earlier.attrs.get(key), default=str) != json.dumps(attrs[key]):
                raise ParameterError(
                    f"ablation {name!r} of run {run!r} was made with a different {key} "
                    f"({earlier.attrs.get(key)!r} != {attrs[key]!r}); resume it with the same "
                    "parameters, or choose another --name"
                )
        check_same_model(run, name, earlier.attrs, attrs["model"])
        if "unit_done" not in earlier:
            earlier.attrs["result_path"] = f"{writer.run}/ablation/{name}"
            return earlier

    if unit == _moe.EXPERT_UNIT:
        sets = {EXPERT_PANEL: _moe.language_sets(ident["mask"], unit, rows)}
    else:
        sets = {p: panel_sets(ident, rows, p) for p in panels}
    if moe_off is not None:  # units the model lacks, or too many experts: refused up front
        for per_lang in sets.values():
            for one in per_lang.values():
                moe_off.check(one)
    rng = np.random.default_rng(seed)  # drawn in a fixed order: a resumed run draws the same
    chosen: dict[_Unit, dict[Any, np.ndarray]] = {_Unit(-1, 0, 0): {}}
    for i, p in enumerate(panels):
        for r, lang in enumerate(rows):
            chosen[_Unit(i, r, 0)] = sets[p][lang]
            for c in range(controls):
                chosen[_Unit(i, r, c + 1)] = (
                    random_control(sets[p][lang], loaded.plan.neurons, rng)
                    if moe_off is None
                    else moe_off.control(sets[p][lang], rng)
                )
    shape = (len(panels), len(rows), controls + 1, len(records))
    size_name = "n_experts" if unit == _moe.EXPERT_UNIT else "n_neurons"
    table = _Table.empty(shape, size_name) if earlier is None else _Table.of(earlier)
    todo = [u for u in chosen if not table.is_done(u)]
    answers_of: dict[str, list[tuple[str, Any]]] = {}  # same set, same answers (greedy)
    for u in chosen:
        if table.is_done(u) and (u.variant == 0 or u.panel < 0):
            answers_of.setdefault(_digest(chosen[u]), table.get(u))
    last_save = time.monotonic()
    with reporting("ablate-accuracy", len(todo) * len(records), "answer", progress) as task:
        for k, unit in enumerate(todo, 1):
            neurons = chosen[unit]
            key = _digest(neurons)
            what = (
                "nothing (baseline)"
                if unit.panel < 0
                else f"{panels[unit.panel]} of {rows[unit.row]}"
                + (f" control {unit.variant}/{controls}" if unit.variant else "")
            )
            task.note(f"off {what} (unit {k}/{len(todo)})")
            if key in answers_of:  # the same set again (a panel adding none, an empty set)
                scored = answers_of[key]
            else:
                with _switch_off(loaded, moe_off, neurons):
                    texts = generate_answers(
                        loaded,
                        records,
                        max_new_tokens=max_new_tokens,
                        chat_template=chat_template,
                        batch_size=batch_size,
                        answer_end=answer_end or None,
                    )
                scored = [
                    (t, score_answer(t, str(r.answer), r.language))
                    for t, r in zip(texts, records, strict=True)
                ]
                if unit.variant == 0 or not neurons:
                    answers_of[key] = scored
            table.put(unit, scored, sum(len(v) for v in neurons.values()))
            task.update(len(records))
            if k < len(todo) and time.monotonic() - last_save >= checkpoint_seconds:
                writer.save_result("ablation", name, table.dataset(panels, rows, records, attrs))
                last_save = time.monotonic()
    ds = table.dataset(panels, rows, records, attrs, final=True)
    ds.attrs["result_path"] = writer.save_result("ablation", name, ds)
    return ds


def _switch_off(
    loaded: LoadedModel, moe_off: _moe.MoeDeactivation | None, units: dict[Any, np.ndarray]
) -> contextlib.AbstractContextManager[Any]:
    """The context in which a set is off: dense neurons, or neurons / experts of a MoE."""
    if moe_off is None:
        return deactivate(loaded, units)
    if not any(len(v) for v in units.values()):  # the baseline: nothing to switch off
        return contextlib.nullcontext()
    return moe_off.switch_off(units)


def _earlier(opened: Any, run: str, name: str, resume: bool) -> xr.Dataset | None:
    """An earlier ablation of that name, refused without ``resume``."""
    if name not in opened.results(run, "ablation"):
        return None
    earlier: xr.Dataset = opened.open_result(run, "ablation", name).load()
    if not resume:
        if "unit_done" in earlier:
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
    if earlier.attrs.get("kind") != KIND:
        raise ParameterError(
            f"ablation {name!r} of run {run!r} is not an accuracy ablation; choose another --name"
        )
    return earlier


@dataclasses.dataclass
class _Table:
    """Per-item scores of every unit, and which units are done."""

    values: dict[str, np.ndarray]  # FIELDS on [panel, row, variant, item]
    base: dict[str, np.ndarray]  # FIELDS on [item]
    n_neurons: np.ndarray  # saved as size_name
    done: np.ndarray
    base_done: bool
    size_name: str = "n_neurons"  # "n_experts" when whole experts are masked

    @classmethod
    def empty(cls, shape: tuple[int, int, int, int], size_name: str = "n_neurons") -> _Table:
        def fresh(field: str, n: tuple[int, ...]) -> np.ndarray:
            return (
                np.zeros(n, bool) if field not in ("detected", "text") else np.full(n, "", object)
            )

        return cls(
            {f: fresh(f, shape) for f in FIELDS},
            {f: fresh(f, shape[-1:]) for f in FIELDS},
            np.zeros(shape[:3], np.int64),
            np.zeros(shape[:3], bool),
            False,
            size_name,
        )

    @classmethod
    def of(cls, ds: xr.Dataset) -> _Table:
        def arr(name: str) -> np.ndarray:
            values = np.asarray(ds[name].values)
            return values.astype(object) if values.dtype.kind in "UO" else values.copy()

        size_name = "n_experts" if "n_experts" in ds else "n_neurons"
        return cls(
            {f: arr(f) for f in FIELDS},
            {f: arr(f"baseline_{f}") for f in FIELDS},
            arr(size_name),
            arr("unit_done").astype(bool),
            bool(ds["baseline_done"].values),
            size_name,
        )

    def is_done(self, u: _Unit) -> bool:
        return self.base_done if u.panel < 0 else bool(self.done[u.panel, u.row, u.variant])

    def get(self, u: _Unit) -> list[tuple[str, Any]]:
        from langneurons.extract._answers import Score

        at: tuple[Any, ...]
        if u.panel < 0:
            v, at = self.base, (slice(None),)
        else:
            v, at = self.values, (u.panel, u.row, u.variant)
        return [
            (str(t), Score(bool(n), bool(g), str(d)))
            for t, n, g, d in zip(
                v["text"][at], v["number_ok"][at], v["language_ok"][at], v["detected"][at],
                strict=True,
            )
        ]  # fmt: skip

    def put(self, u: _Unit, scored: list[tuple[str, Any]], size: int) -> None:
        columns = {
            "correct": [s.correct for _, s in scored],
            "number_ok": [s.number_ok for _, s in scored],
            "language_ok": [s.language_ok for _, s in scored],
            "detected": [s.detected for _, s in scored],
            "text": [t for t, _ in scored],
        }
        for f, col in columns.items():
            if u.panel < 0:
                self.base[f][:] = col
            else:
                self.values[f][u.panel, u.row, u.variant] = col
        if u.panel < 0:
            self.base_done = True
        else:
            self.done[u.panel, u.row, u.variant] = True
            self.n_neurons[u.panel, u.row, u.variant] = size

    def dataset(
        self,
        panels: Sequence[str],
        rows: Sequence[str],
        records: Sequence[_corpus.Record],
        attrs: dict[str, Any],
        *,
        final: bool = False,
    ) -> xr.Dataset:
        dims = ("panel", "deactivated", "variant", "item")
        data: dict[str, Any] = {}
        for f in FIELDS:
            kind = str if f in ("detected", "text") else bool
            data[f] = (dims, self.values[f].astype(kind))
            data[f"baseline_{f}"] = (("item",), self.base[f].astype(kind))
        data[self.size_name] = (dims[:3], self.n_neurons)
        out_attrs = dict(attrs)
        if not final:
            data["unit_done"] = (dims[:3], self.done.copy())
            data["baseline_done"] = ((), self.base_done)
            out_attrs |= {
                "status": "partial: complete it with `langneurons ablate-accuracy ... --resume`",
                "units_done": int(self.done.sum()) + int(self.base_done),
                "units_total": int(self.done.size) + 1,
            }
        return xr.Dataset(
            data,
            coords={
                "panel": np.array(panels, dtype=str),
                "deactivated": np.array(rows, dtype=str),
                "variant": np.arange(self.done.shape[2]),
                "item": np.arange(len(records)),
                "item_id": ("item", np.array([r.id for r in records], dtype=str)),
                "item_language": ("item", np.array([r.language for r in records], dtype=str)),
            },
            attrs=out_attrs,
        )


__all__ = ["EXPERT_PANEL", "KIND", "PANELS", "ablate_accuracy", "check_panels", "panel_sets"]
