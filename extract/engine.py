"""One-pass extraction: run a model over prompt + response and count positive activations.

For every record the prompt and the response are tokenized separately and their ids
concatenated, so each token is counted under its role (``prompt`` / ``response``) in a single
forward pass; padding is never counted. Work is split into *units* (up to ``unit_size`` records
of one language); each unit's counts are committed to the store as one journaled write keyed by
the unit, so a killed run resumes where it stopped (``resume=True``) and several processes
(``shard=(i, n)`` or different ``languages``) can fill one run at the same time. The run is
created with every language of the data file and, with ``per_sequence``, one slot per record, so
the result does not depend on which process commits first.

Sums of activations are accumulated in float64 per unit and rounded to multiples of
``MOMENT_GRID`` (2**-20) before they are committed: sums of such numbers are exact in float64,
so merging units in any order gives bit-identical stores.

This module plans the units, hands their counts to the store and checks a run's identity; the
steps live in private modules and their public names are re-exported here: loading a model
(``_loading``), tokenizing, batching and counting (``_counting``), generating missing responses
(``_generate``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from langneurons._progress import Task, progress
from langneurons.errors import (
    AlreadyWrittenError,
    ParameterError,
    RunExistsError,
    StoreValidationError,
)
from langneurons.extract import corpus as _corpus
from langneurons.extract._counting import (
    MOMENT_GRID,
    Encoded,
    bucket_batches,
    count_unit,
    encode,
    forward_kwargs,
    pad_batch,
    probe_neurons,
)
from langneurons.extract._generate import generate_missing, generated_path
from langneurons.extract._loading import (
    Device,
    DType,
    LoadedModel,
    as_loaded,
    from_pretrained_objects,
    load_model,
)
from langneurons.extract._moe import is_moe_plan
from langneurons.names import (
    ACT_SQSUM,
    ACT_SUM,
    N_ACTIVE,
    N_ROUTED,
    N_TOKENS,
    SEQ_ID,
    SEQ_LANGUAGE,
    SEQ_N_ACTIVE,
    SEQ_N_ROUTED,
    SEQ_N_TOKENS,
)
from langneurons.store import (
    ActivationStore,
    Counts,
    MoeLayout,
    RunMetadata,
    create_store,
    schema,
)

log = logging.getLogger(__name__)


__all__ = [
    "MOMENT_GRID",
    "DType",
    "Device",
    "Encoded",
    "LoadedModel",
    "Unit",
    "as_loaded",
    "bucket_batches",
    "check_experts",
    "count_unit",
    "encode",
    "extract",
    "forward_kwargs",
    "from_pretrained_objects",
    "generate_missing",
    "generated_path",
    "load_model",
    "load_records",
    "pad_batch",
    "parse_shard",
    "plan_units",
    "reporting",
]


# --------------------------------------------------------------------------- units and shards
@dataclasses.dataclass(frozen=True)
class Unit:
    """Up to ``unit_size`` records of one language, committed to the store as one write."""

    key: str
    language: str
    positions: tuple[int, ...]  # indices into the data file's records


def plan_units(
    records: Sequence[_corpus.Record],
    languages: Sequence[str],
    unit_size: int,
    shard: tuple[int, int] = (0, 1),
) -> list[Unit]:
    """Split the records of ``languages`` into units; keep every n-th unit for shard (i, n)."""
    index, count = shard
    units: list[Unit] = []
    for lang in languages:
        positions = [i for i, r in enumerate(records) if r.language == lang]
        for k in range(0, len(positions), unit_size):
            units.append(
                Unit(f"{lang}/{k // unit_size}", lang, tuple(positions[k : k + unit_size]))
            )
    return [u for n, u in enumerate(units) if n % count == index]


def parse_shard(text: str | tuple[int, int]) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    if isinstance(text, tuple):
        index, count = text
    else:
        try:
            index, count = (int(x) for x in str(text).split("/"))
        except ValueError:
            raise ParameterError(f"--shard {text!r} is not I/N, e.g. 0/2") from None
    if count < 1 or not 0 <= index < count:
        raise ParameterError(
            f"--shard {index}/{count} is out of range; use I/N with 0 <= I < N (e.g. 0/2 and 1/2)"
        )
    return index, count


# --------------------------------------------------------------------------- the command
def extract(
    model: str | os.PathLike[str] | LoadedModel | Any,
    data: str | os.PathLike[str],
    store: str | os.PathLike[str],
    run: str,
    *,
    gguf_file: str | None = None,
    languages: Sequence[str] | None = None,
    per_sequence: bool = False,
    sums: bool = False,
    batch_tokens: int = 4096,
    max_length: int = 1024,
    device: str = "auto",
    dtype: str = "auto",
    chat_template: bool = False,
    resume: bool = False,
    shard: str | tuple[int, int] = (0, 1),
    hook_module: str | None = None,
    generate: bool = False,
    max_new_tokens: int = 256,
    trust_remote_code: bool = False,
    unit_size: int = 32,
    progress: bool | None = None,
    loaded: LoadedModel | None = None,
    tokenizer: Any = None,
    revision: str | None = None,
    allow_download: bool = False,
    experts: bool | None = None,
) -> dict[str, Any]:
    """Extract activation counts of ``model`` on ``data`` into ``store`` under ``run``.

    Parameters
    ----------
    model, gguf_file
        A directory saved with ``save_pretrained`` (or holding ``gguf_file``), a ``.gguf`` path,
        or a Hugging Face id ``org/name`` found in the local cache (see :func:`load_model`); or a
        model already in memory: a ``transformers`` causal LM with its ``tokenizer=``, or a
        :class:`LoadedModel` (see :func:`from_pretrained_objects`).
    revision, allow_download
        For a Hugging Face id: the branch, tag or commit, and whether a model that is not cached
        may be downloaded (default: refused, naming both fixes).
    data
        JSONL records ``{"language", "prompt", "response", "id"}`` or the reference pipeline's
        MAPO-style JSON (see :func:`langneurons.extract.corpus.read_records`), or ``"builtin"``
        for the built-in ten-language corpus.
    languages
        Extract only these languages (the run still lists every language of the data file).
    per_sequence
        Also store per-sequence counts (needed for bootstrap statistics).
    sums
        Also store each neuron's sum of activations and of their squares (``act_sum`` /
        ``act_sqsum``, for means and variances of the activations). No analysis of langneurons
        reads them, and they cost two more passes over every hooked activation, so they are off
        by default. A run keeps the choice it was created with: resuming or joining it with a
        different ``sums`` is refused.
    batch_tokens, max_length
        Padded tokens per batch; longest prompt + response kept per record.
    resume
        Skip units already committed (after an interruption) instead of refusing.
    shard
        ``(i, n)`` or ``"i/n"``: process every n-th unit, starting at i.
    generate, max_new_tokens
        Generate missing responses greedily first; the completed records are saved next to the
        store and extracted.
    experts
        Per-expert counts (``n_active[language, role, layer, expert, neuron]`` and the experts'
        token counts ``n_routed``, docs/design/moe.md). ``None`` (the default): per expert for
        a mixture-of-experts model of the registry (:mod:`langneurons.extract._moe`), dense
        otherwise; ``True`` refuses a dense model and ``False`` a mixture of experts (whose
        neurons have no per-layer count).
    progress
        ``False``: report no progress. ``None`` (or ``True``): report it as
        ``langneurons._progress.configure`` chose (the command line: a bar on a terminal, a
        line per step otherwise; a script: ``INFO`` records of the ``langneurons.progress``
        logger), counting the tokens of the units still to do and naming the current unit.

    Returns
    -------
    dict
        What was done: units done and skipped, tokens per role, the run's identity.
    """
    shard = parse_shard(shard)
    for name, value in (
        ("batch_tokens", batch_tokens),
        ("max_length", max_length),
        ("unit_size", unit_size),
        ("max_new_tokens", max_new_tokens),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    run = schema.check_name(run)
    records = load_records(data, require_response=not generate)
    all_languages = list(dict.fromkeys(r.language for r in records))
    chosen = _choose_languages(all_languages, languages)
    loaded = as_loaded(
        model,
        tokenizer,
        loaded,
        gguf_file=gguf_file,
        device=device,
        dtype=dtype,
        hook_module=hook_module,
        trust_remote_code=trust_remote_code,
        revision=revision,
        allow_download=allow_download,
    )
    check_experts(loaded, experts, sums=bool(sums))
    if generate:
        records = generate_missing(
            loaded, records, store, run, max_new_tokens=max_new_tokens, chat_template=chat_template
        )
    identity = {
        **loaded.identity,
        "corpus": str(data),
        "corpus_hash": _corpus.corpus_hash(records),
        "chat_template": chat_template,
        "max_length": max_length,
        "batch_tokens": batch_tokens,
        "unit_size": unit_size,
        "per_sequence": per_sequence,
        "sums": bool(sums),
        "moment_grid": MOMENT_GRID,
    }
    # every unit of the whole corpus (all shards, all languages): the run is complete when each
    # is committed, and readers refuse it until then
    planned = [u.key for u in plan_units(records, all_languages, unit_size)]
    opened = _open_or_create_run(
        store, run, loaded, records, all_languages, identity, max_length, planned
    )
    # A process killed inside a commit leaves its journal armed, possibly after it recorded its
    # unit in the run's attributes; roll such writes back (and refresh consolidated metadata a
    # killed writer left stale) before reading which units are committed, or that unit is
    # skipped here and then lost when the next commit rolls it back. Only this run's: a whole
    # repair would read every run of the store, under its lock, at every start.
    opened.repair(run)
    run_writer = opened.writer(run)  # the run's name is checked once, here
    units = plan_units(records, chosen, unit_size, shard)
    done = run_writer.committed_units()
    mine_done = [u.key for u in units if u.key in done]
    if mine_done and not resume:
        raise RunExistsError(
            f"run {run!r} already holds {len(mine_done)} of this command's units (e.g. "
            f"{mine_done[0]!r}); pass --resume to complete it, or choose another --run"
        )
    todo = [u for u in units if u.key not in done]
    encoded = {
        i: encode(records[i], loaded.tokenizer, chat_template=chat_template, max_length=max_length)
        for u in todo
        for i in u.positions
    }
    empty = [records[i].id for i, e in encoded.items() if not e.response and not generate]
    if empty:
        log.warning(
            "%d record(s) have no response tokens after truncation (e.g. %s)", len(empty), empty[0]
        )
    total_tokens = sum(e.length for e in encoded.values())
    report: dict[str, Any] = {
        "store": str(store),
        "run": run,
        "units_total": len(units),
        "units_skipped": len(units) - len(todo),
        "units_done": 0,
        "tokens": {"prompt": 0, "response": 0},
        "identity": identity,
    }

    def commit(unit: Unit, counts: Counts) -> None:
        try:
            run_writer.merge_counts(counts, unit=unit.key)
        except AlreadyWrittenError:
            log.info("unit %s was committed by another process; skipped", unit.key)
            return
        report["units_done"] += 1
        report["tokens"]["prompt"] += int(counts.n_tokens[0, 0])
        report["tokens"]["response"] += int(counts.n_tokens[0, 1])

    # On a GPU each unit is committed by a writer thread while the model runs on the next one
    # (at most one commit in flight; a failure in either is raised here after the other
    # settles). On the CPU the writer would compete with torch's threads, so it commits inline.
    overlap = loaded.device.type == "cuda"
    if report["units_skipped"]:
        log.info("resuming run %r: %d of %d units already done", run, len(mine_done), len(units))
    with (
        reporting("extract", total_tokens, "tok", progress) as task,
        ThreadPoolExecutor(1) as writer,
    ):
        pending: Future[None] | None = None
        try:
            for n, unit in enumerate(todo, 1):
                task.note(f"unit {unit.key} ({n}/{len(todo)})")
                summed = count_unit(
                    loaded,
                    [encoded[i] for i in unit.positions],
                    batch_tokens=batch_tokens,
                    per_sequence=per_sequence,
                    moments=bool(sums),
                    on_batch=task.update,
                )
                counts = _unit_counts(unit, records, summed, per_sequence, _run_layout(loaded))
                if pending is not None:
                    pending.result()
                    pending = None
                if overlap:
                    pending = writer.submit(commit, unit, counts)
                else:
                    commit(unit, counts)
        finally:
            if pending is not None:
                pending.result()
    return report


def check_experts(loaded: LoadedModel, experts: bool | None, *, sums: bool = False) -> None:
    """Refuse per-expert counts of a dense model, dense counts of a mixture of experts, and
    sums of activations of a mixture of experts (not in its run layout)."""
    moe = is_moe_plan(loaded.plan)
    model_type = loaded.plan.model_type
    if experts is True and not moe:
        raise ParameterError(
            f"per-expert counts were asked for, but the model ({model_type}) is dense: it has no "
            "experts; drop --experts"
        )
    if experts is False and moe:
        raise ParameterError(
            f"the model ({model_type}) is a mixture of experts: its neurons live inside experts "
            "and are counted per expert; drop --no-experts"
        )
    if sums and moe:
        raise ParameterError(
            f"--sums is not supported for mixture-of-experts models ({model_type}): sums per "
            "expert are not in the run layout; drop --sums"
        )


def load_records(
    data: str | os.PathLike[str], *, require_response: bool = True
) -> list[_corpus.Record]:
    """Records of a corpus file, or of the built-in corpus.

    ``"builtin"`` is the whole built-in corpus; ``"builtin:identify"`` and
    ``"builtin:evaluate"`` are its identification and held-out evaluation parts.
    """
    text = str(data)
    if text == "builtin":
        return _corpus.builtin_corpus()
    if text.startswith("builtin:"):
        return _corpus.builtin_corpus(part=text.removeprefix("builtin:"))
    return _corpus.read_records(data, require_response=require_response)


def _choose_languages(all_languages: list[str], languages: Sequence[str] | None) -> list[str]:
    if not languages:
        return all_languages
    missing = [x for x in languages if x not in all_languages]
    if missing:
        raise ParameterError(
            f"language {missing[0]!r} is not in the data (it has {', '.join(all_languages)})"
        )
    return [x for x in all_languages if x in set(languages)]


def _run_layout(loaded: LoadedModel) -> MoeLayout | None:
    """The store's layout of a MoE run of the loaded model, or None for a dense model."""
    plan = loaded.plan
    if not is_moe_plan(plan):
        return None
    return MoeLayout(
        expert_neurons=plan.expert_neurons,
        n_shared=plan.n_shared,
        top_k=plan.top_k,
        model_type=plan.model_type,
    )


def _unit_counts(
    unit: Unit,
    records: Sequence[_corpus.Record],
    sums: dict[str, np.ndarray],
    per_sequence: bool,
    moe: MoeLayout | None = None,
) -> Counts:
    kwargs: dict[str, Any] = {}
    if moe is not None:
        kwargs = {"moe": moe, N_ROUTED: sums[N_ROUTED][None]}
        if per_sequence:
            kwargs[SEQ_N_ROUTED] = sums[SEQ_N_ROUTED]
    if ACT_SUM in sums:
        kwargs |= {ACT_SUM: sums[ACT_SUM][None], ACT_SQSUM: sums[ACT_SQSUM][None]}
    if per_sequence:
        kwargs |= {
            SEQ_N_ACTIVE: sums[SEQ_N_ACTIVE],
            SEQ_N_TOKENS: sums[SEQ_N_TOKENS],
            SEQ_LANGUAGE: [unit.language] * len(unit.positions),
            SEQ_ID: [records[i].id for i in unit.positions],
            "seq_index": list(unit.positions),
        }
    return Counts(
        [unit.language],
        sums[N_ACTIVE][None],
        sums[N_TOKENS][None],
        **kwargs,
    )


_IDENTITY_KEYS = (
    "config_sha256",
    "hook_point",
    "dtype",
    "corpus_hash",
    "chat_template",
    "max_length",
    "batch_tokens",
    "unit_size",
    "per_sequence",
    "sums",
    "moment_grid",
)


def _open_or_create_run(
    store: str | os.PathLike[str],
    run: str,
    loaded: LoadedModel,
    records: Sequence[_corpus.Record],
    all_languages: list[str],
    identity: dict[str, Any],
    max_length: int,
    planned: list[str],
) -> ActivationStore:
    opened = create_store(store)
    n_neurons = loaded.plan.neurons or probe_neurons(loaded)
    if run not in opened.runs():
        meta = RunMetadata(
            model=str(identity["model"]),
            revision=str(identity.get("revision") or ""),
            hook_point=loaded.plan.hook_point,
            activation=loaded.plan.activation or "",
            dtype=loaded.dtype,
            corpus=Path(str(identity["corpus"])).name,
            corpus_hash=str(identity["corpus_hash"]),
            provenance={"method": "extracted", "identity": identity},
        )
        per_sequence = bool(identity["per_sequence"])
        labels = ([r.language for r in records], [r.id for r in records])
        try:
            opened.create_run(
                run,
                n_layers=loaded.n_layers,
                n_neurons=n_neurons,
                metadata=meta,
                moments=bool(identity["sums"]),
                sequences=per_sequence,
                seq_dtype=str(schema.seq_dtype_for(max_length)),
                languages=all_languages,
                sequence_labels=labels if per_sequence else None,
                planned_units=planned,
                moe=_run_layout(loaded),
            )
            return opened
        except RunExistsError:
            # another process created it first (or one was killed after committing it, before
            # refreshing the consolidated metadata: run_metadata reads the run's own group)
            pass  # join it below
    theirs = opened.run_metadata(run).provenance.get("identity")
    if not isinstance(theirs, dict):
        raise StoreValidationError(
            f"run {run!r} was not made by `langneurons extract`; extract into another --run"
        )
    checked = [*_IDENTITY_KEYS]
    if theirs.get("revision") and identity.get("revision"):
        checked.append("revision")  # both know which commit of a Hub model they used
    # runs made before sums were optional have no "sums" key and always stored them
    theirs = {"sums": True, **theirs}
    for key in checked:
        if key == "sums" and theirs["sums"] != identity["sums"]:
            flag = "--sums" if theirs["sums"] else "--no-sums"
            raise StoreValidationError(
                f"run {run!r} was extracted {'with' if theirs['sums'] else 'without'} act_sum/"
                f"act_sqsum; pass {flag} (sums={bool(theirs['sums'])}) to complete it, or extract "
                "into another --run"
            )
        if theirs.get(key) != identity.get(key):
            what = "data" if key == "corpus_hash" else "model" if key == "config_sha256" else key
            raise StoreValidationError(
                f"run {run!r} was extracted with a different {what} ({key} "
                f"{theirs.get(key)!r} != {identity.get(key)!r}); refusing to mix them — extract "
                "into another --run"
            )
    return opened


class _Silent:
    """A progress task that shows nothing (``progress=False``)."""

    def update(self, n: float = 1) -> None:
        """Nothing to show."""

    def note(self, status: str) -> None:
        """Nothing to show."""


@contextlib.contextmanager
def reporting(
    desc: str, total: float | None, unit: str, enabled: bool | None = None
) -> Iterator[Task | _Silent]:
    """:func:`langneurons._progress.progress`, or a silent task when ``enabled`` is False."""
    if enabled is False:
        yield _Silent()
        return
    with progress(desc, total=total, unit=unit) as task:
        yield task
