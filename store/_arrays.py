"""The arrays of a run: creating them, checking a write of counts against them, applying it.

These functions work on one run group and know nothing of locking or the journal: the store
(:class:`~langneurons.store.ActivationStore`) takes the lock, arms the journal with the values a
write replaces (from :func:`plan_write`), and only then calls :func:`apply`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import zarr
import zarr.api.asynchronous
import zarr.storage

from langneurons.errors import StoreValidationError
from langneurons.names import (
    ACT_SUM,
    EXPERT,
    EXPERT_NEURONS,
    EXPERT_SHARED,
    LANGUAGE,
    LAYER,
    MOE_ATTR,
    N_ACTIVE,
    N_ROUTED,
    N_TOKENS,
    NEURON,
    ROLE,
    ROLES,
    SEQ_ID,
    SEQ_LANGUAGE,
    SEQ_N_ACTIVE,
    SEQ_N_ROUTED,
    SEQ_N_TOKENS,
    SEQUENCE,
)
from langneurons.store import _attrs, _chunks, _integrity, _nodes, schema
from langneurons.store._counts import Counts, check_token_total

#: The arrays indexed by language (rows a write appends or adds to), moments last; n_routed
#: only in a mixture-of-experts run (every user skips an array the run does not have).
LANGUAGE_ROWS = (N_ACTIVE, N_TOKENS, N_ROUTED, *schema.MOMENTS)
#: The per-sequence count arrays (slots a write adds to); seq_n_routed only in a MoE run.
SEQ_COUNTS = (SEQ_N_ACTIVE, SEQ_N_TOKENS, SEQ_N_ROUTED)

SequenceLabels = tuple[Sequence[str], Sequence[str]]
#: Array config of every write: chunks holding only the fill value are stored too (schema 2).
_WHOLE: Any = {"write_empty_chunks": True}  # zarr types it as ArrayConfigParams


class Plan(NamedTuple):
    """Where a write goes: the run's languages before it, and the rows it adds to."""

    current: list[str]  # language labels before the write
    existing: dict[str, int]  # language of the counts -> its row in the run (merged rows)
    totals: str = ""  # the run's token totals after the write (schema.TOKEN_TOTALS_ATTR)


def token_totals(languages: Sequence[str], n_tokens: Any) -> str:
    """The :data:`schema.TOKEN_TOTALS_ATTR` text of a run's labels and ``n_tokens`` rows."""
    rows = [[int(x) for x in row] for row in n_tokens]
    return json.dumps(
        {"language": [str(x) for x in languages], "n_tokens": rows},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def read_token_totals(group: zarr.Group) -> str:
    """:func:`token_totals` of a run as its arrays hold them."""
    return token_totals(_nodes.labels(group, LANGUAGE), _nodes.read(group, N_TOKENS))


def moe_layout(group: zarr.Group, where: str = "run") -> schema.MoeLayout | None:
    """The experts of a mixture-of-experts run (None for a dense run), from its attrs and coords."""
    if N_ROUTED not in group and MOE_ATTR not in group.attrs:
        return None
    return schema.MoeLayout.from_parts(
        group.attrs.get(MOE_ATTR),
        _nodes.read(group, EXPERT_SHARED),
        _nodes.read(group, EXPERT_NEURONS),
        where,
    )


def check_new_run(
    *,
    n_layers: int,
    n_neurons: int,
    sequences: bool,
    seq_dtype: str,
    languages: Sequence[str] | None,
    sequence_labels: SequenceLabels | None,
    planned_units: Sequence[str] | None,
) -> tuple[list[str] | None, tuple[list[str], list[str]] | None, list[str] | None]:
    """Check the arguments of a new run; return its languages, sequence labels and plan."""
    planned = None
    if planned_units is not None:
        planned = [str(u) for u in planned_units]
        if len(set(planned)) != len(planned):
            raise StoreValidationError("planned_units holds a unit key twice; each unit once")
    if n_layers < 1 or n_neurons < 1:
        raise StoreValidationError(
            f"a run needs at least one layer and one neuron (got {n_layers} x {n_neurons})"
        )
    if seq_dtype not in schema.SEQ_DTYPES:
        raise StoreValidationError(
            f"seq_dtype {seq_dtype!r} is not allowed; use one of {', '.join(schema.SEQ_DTYPES)}"
        )
    langs = None
    if languages is not None:
        langs = [schema.check_language(x) for x in languages]
        if len(set(langs)) != len(langs):
            raise StoreValidationError(f"duplicate language in {langs}; each language once")
    labels = None
    if sequence_labels is not None:
        if not sequences:
            raise StoreValidationError("sequence_labels need sequences=True")
        seq_language, seq_id = (list(map(str, x)) for x in sequence_labels)
        if len(seq_language) != len(seq_id):
            raise StoreValidationError("sequence_labels: seq_language and seq_id differ in length")
        unknown = sorted(set(seq_language) - set(langs or []))
        if unknown:
            raise StoreValidationError(
                f"sequence_labels name language {unknown[0]!r}, which is not in languages"
            )
        labels = (seq_language, seq_id)
    return langs, labels, planned


def create_arrays(
    group: zarr.Group,
    n_layers: int,
    n_neurons: int,
    moments: bool,
    sequences: bool,
    seq_dtype: str,
    moe: schema.MoeLayout | None = None,
) -> dict[str, zarr.Array]:
    """Create the (empty) arrays of a new run in ``group`` (``moe``: a mixture-of-experts run).

    Returns the arrays by name, bound to ``group``'s store (nothing is read back). Zarr builds
    them (metadata and coordinate chunks) in memory; their keys are then stored concurrently,
    each once: creating them one by one in the store cost about 50 round trips of checks,
    parent groups and attribute rewrites (``benchmarks/store.py``). The stored bytes are the
    ones zarr writes (a test compares them).
    """
    specs = _array_specs(n_layers, n_neurons, moments, sequences, seq_dtype, moe)
    if moe is not None:
        group.attrs.update(_attrs.encode({MOE_ATTR: moe.to_attr()}))
    draft = zarr.storage.MemoryStore()

    async def _build() -> dict[str, Any]:
        with _nodes.quiet():
            root = await zarr.api.asynchronous.open_group(store=draft, mode="w", zarr_format=3)
            made = await asyncio.gather(
                *(root.create_array(name, **kwargs) for name, kwargs, _ in specs)
            )
        pairs = zip(made, (value for _, _, value in specs), strict=True)
        await asyncio.gather(*(a.setitem(slice(None), v) for a, v in pairs if v is not None))
        return {name: a.metadata for a, (name, _, _) in zip(made, specs, strict=True)}

    metadata = zarr.core.sync.sync(_build())
    _nodes.copy_keys(draft, group.store_path.store, group.path, skip=("zarr.json",))
    return {
        name: zarr.Array(
            zarr.AsyncArray(metadata=meta, store_path=group.store_path / name, config=_WHOLE)
        )
        for name, meta in metadata.items()
    }


def _array_specs(
    n_layers: int,
    n_neurons: int,
    moments: bool,
    sequences: bool,
    seq_dtype: str,
    moe: schema.MoeLayout | None,
) -> list[tuple[str, dict[str, Any], np.ndarray | None]]:
    """``(name, create_array arguments, coordinate values or None)`` of a new run's arrays."""
    lc = schema.layer_chunk(n_layers, n_neurons)
    # a MoE run: counts [.., layer, expert, neuron], chunked by layers (or experts) as dense runs
    inner: tuple[int, ...] = (n_neurons,)
    chunk_inner: tuple[int, ...] = (lc, n_neurons)
    count_coords: dict[str, Any] = {}
    if moe is not None:
        inner = (moe.size, n_neurons)
        chunk_inner = schema.expert_chunks(n_layers, moe.size, n_neurons)
        chunk_inner = (*chunk_inner, n_neurons)
        count_coords = {"coordinates": f"{EXPERT_SHARED} {EXPERT_NEURONS}"}
    dims = schema.variables(moe is not None)
    codec = _integrity.numeric_codecs()
    text = _integrity.string_codecs()
    specs: list[tuple[str, dict[str, Any], np.ndarray | None]] = []

    def add(name: str, value: np.ndarray | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("dimension_names", [name])
        # the variable's CF attributes on top of the given ones (one metadata write)
        attrs = {**kwargs.pop("attributes", {}), **schema.VARIABLE_ATTRS.get(name, {})}
        specs.append((name, {**kwargs, "attributes": attrs, "config": _WHOLE}, value))

    add(LANGUAGE, shape=(0,), chunks=(64,), dtype=str, compressors=text)
    add(ROLE, np.array(ROLES), shape=(2,), chunks=(2,), dtype=str, compressors=text)
    for dim, size in ((LAYER, n_layers), (NEURON, n_neurons)):
        values = np.arange(size, dtype=np.int64)
        add(dim, values, shape=(size,), chunks=(size,), dtype="int64", compressors=codec)
    if moe is not None:
        experts = {
            EXPERT: np.arange(moe.size, dtype=np.int64),
            EXPERT_SHARED: moe.expert_shared,
            EXPERT_NEURONS: np.asarray(moe.expert_neurons, dtype=np.int64),
        }
        for name, value in experts.items():
            add(
                name,
                value,
                shape=(moe.size,),
                chunks=(moe.size,),
                dtype=value.dtype,
                dimension_names=[EXPERT],
                compressors=codec,
            )
        add(
            N_ROUTED,
            shape=(0, 2, n_layers, moe.size),
            chunks=(1, 2, n_layers, moe.size),
            dtype="int64",
            fill_value=0,
            dimension_names=list(schema.MOE_VARIABLES[N_ROUTED].dims),
            compressors=codec,
            attributes={"coordinates": f"{EXPERT_SHARED} {EXPERT_NEURONS}"},
        )
    for name in [N_ACTIVE] + (list(schema.MOMENTS) if moments else []):
        add(
            name,
            shape=(0, 2, n_layers, *inner),
            chunks=(1, 1, *chunk_inner),
            dtype=dims[name].dtype,
            fill_value=0,
            dimension_names=list(dims[name].dims),
            compressors=codec,
            attributes=count_coords,
        )
    add(
        N_TOKENS,
        shape=(0, 2),
        chunks=(1, 2),
        dtype="int64",
        fill_value=0,
        dimension_names=[LANGUAGE, ROLE],
        compressors=codec,
    )
    if sequences:
        itemsize = np.dtype(seq_dtype).itemsize
        slc: tuple[int, ...] = (schema.layer_chunk(n_layers, n_neurons, itemsize),)
        if moe is not None:
            slc = schema.expert_chunks(n_layers, moe.size, n_neurons, itemsize)
        coords: dict[str, Any] = {"coordinates": " ".join(schema.SEQ_COORDS)}
        add(
            SEQ_N_ACTIVE,
            shape=(0, 2, n_layers, *inner),
            chunks=(8, 1, *slc, n_neurons),
            dtype=seq_dtype,
            fill_value=0,
            compressors=codec,
            dimension_names=list(dims[SEQ_N_ACTIVE].dims),
            attributes=_with_coords(coords, count_coords),
        )
        if moe is not None:
            per_seq = 2 * n_layers * moe.size * 8
            add(
                SEQ_N_ROUTED,
                shape=(0, 2, n_layers, moe.size),
                chunks=(max(1, min(1024, (8 << 20) // per_seq)), 2, n_layers, moe.size),
                dtype="int64",
                fill_value=0,
                compressors=codec,
                dimension_names=list(dims[SEQ_N_ROUTED].dims),
                attributes=_with_coords(coords, count_coords),
            )
        add(
            SEQ_N_TOKENS,
            shape=(0, 2),
            chunks=(1024, 2),
            dtype="int64",
            fill_value=0,
            dimension_names=[SEQUENCE, ROLE],
            attributes=coords,
            compressors=codec,
        )
        for name in schema.SEQ_COORDS:
            add(
                name,
                shape=(0,),
                chunks=(1024,),
                dtype=str,
                dimension_names=[SEQUENCE],
                compressors=text,
            )
    return specs


def _with_coords(*attrs: dict[str, Any]) -> dict[str, Any]:
    """Array attributes naming the coordinates of each of ``attrs`` (xarray reads them)."""
    names = " ".join(a["coordinates"] for a in attrs if a.get("coordinates"))
    return {"coordinates": names} if names else {}


def preallocate(
    group: zarr.Group,
    languages: Sequence[str] | None,
    sequence_labels: SequenceLabels | None,
) -> None:
    """Zero-count language rows and sequence slots, every chunk written (schema 2)."""
    if languages:
        for name in LANGUAGE_ROWS:
            if name in group:
                array = _nodes.arr(group, name)
                array.resize((len(languages), *array.shape[1:]))
                _nodes.fill_zeros(array)
        labels = _nodes.arr(group, LANGUAGE)
        labels.resize((len(languages),))
        labels[:] = np.array(list(languages), dtype=object).astype(str)
    if sequence_labels:
        n = len(sequence_labels[0])
        for name in seq_arrays(group):
            array = _nodes.arr(group, name)
            array.resize((n, *array.shape[1:]))
            if name not in schema.SEQ_COORDS:
                _nodes.fill_zeros(array)
        for name, values in zip(schema.SEQ_COORDS, sequence_labels, strict=True):
            _nodes.arr(group, name)[:] = np.array(list(values), dtype=object).astype(str)


def plan_write(run: str, group: zarr.Group, counts: Counts, merge: bool) -> Plan:
    """Check counts against the run; return its current languages and the rows merged into."""
    current = _nodes.labels(group, LANGUAGE)
    shape = _nodes.arr(group, N_ACTIVE).shape
    layers, neurons = shape[2], shape[-1]
    _check_same_experts(run, group, counts)
    if counts.shape != (layers, neurons):
        raise StoreValidationError(
            f"counts have {counts.shape[0]} layers x {counts.shape[1]} neurons but run {run!r} "
            f"has {layers} x {neurons}; write them to a run of the same model"
        )
    has_moments = ACT_SUM in group
    if counts.has_moments != has_moments:
        want = "needs" if has_moments else "has no"
        raise StoreValidationError(
            f"run {run!r} {want} act_sum/act_sqsum; write counts with the same optional arrays"
        )
    has_seq = SEQ_N_ACTIVE in group
    if counts.has_sequences != has_seq:
        want = "needs" if has_seq else "has no"
        raise StoreValidationError(
            f"run {run!r} {want} per-sequence counts; write counts with the same optional arrays"
        )
    existing = {x: current.index(x) for x in counts.languages if x in current}
    if existing and not merge:
        first = next(iter(existing))
        raise StoreValidationError(
            f"language {first!r} is already in run {run!r}; merge shards with merge_counts "
            "(CLI: --merge) or choose another run"
        )
    # token totals (and the sums analyses take of them) must still fit in int64 afterwards
    after = _nodes.read(group, N_TOKENS).astype(object)  # Python ints: exact sums
    added = []
    for j, lang in enumerate(counts.languages):
        if lang in existing:
            after[existing[lang]] += counts.n_tokens[j].astype(object)
        else:
            added.append(counts.n_tokens[j].astype(object))
    after = np.concatenate([after.reshape(-1, 2), np.array(added, dtype=object).reshape(-1, 2)])
    labels = [*current, *(x for x in counts.languages if x not in existing)]
    check_token_total(after, labels, f"run {run!r}: this write would make n_tokens add up to")
    if has_seq:
        _check_sequences(group, counts)
    return Plan(current, existing, token_totals(labels, after))


def _check_same_experts(run: str, group: zarr.Group, counts: Counts) -> None:
    """Refuse dense counts in a MoE run, MoE counts in a dense one, or other experts."""
    layout = moe_layout(group, f"run {run!r}")
    if layout is None and counts.moe is not None:
        raise StoreValidationError(
            f"counts are per expert ({counts.moe.describe()}) but run {run!r} is a dense run; "
            "write them to a run created with moe=MoeLayout(...)"
        )
    if layout is not None and counts.moe is None:
        raise StoreValidationError(
            f"run {run!r} is a mixture-of-experts run ({layout.describe()}) but the counts are "
            "dense; give Counts(..., moe=..., n_routed=...) of the same model"
        )
    if layout is not None and counts.moe != layout:
        raise StoreValidationError(
            f"counts have {layout_text(counts.moe)} but run {run!r} has {layout_text(layout)}; "
            "write them to a run of the same model"
        )


def layout_text(moe: schema.MoeLayout | None) -> str:
    """A layout in a message, with what tells two apart."""
    if moe is None:
        return "no experts"
    return (
        f"{moe.describe()} (expert_neurons {list(moe.expert_neurons)}, model_type "
        f"{moe.model_type!r})"
    )


def seq_arrays(group: zarr.Group) -> tuple[str, ...]:
    """The per-sequence arrays of the run ``group`` (a MoE run's include ``seq_n_routed``)."""
    return schema.MOE_SEQUENCES if SEQ_N_ROUTED in group else schema.SEQUENCES


def _check_sequences(group: zarr.Group, counts: Counts) -> None:
    """Per-sequence counts must name the run's slots and fit the run's dtype once added."""
    seq_dtype = _nodes.arr(group, SEQ_N_ACTIVE).dtype
    if counts.seq_index is not None:
        index = np.asarray(counts.seq_index, dtype=np.intp)
        n_seq = _nodes.arr(group, SEQ_N_ACTIVE).shape[0]
        if index.max(initial=-1) >= n_seq:
            raise StoreValidationError(
                f"seq_index {int(index.max())} is beyond the run's {n_seq} sequence slots"
            )
        for name, mine in ((SEQ_LANGUAGE, counts.seq_language), (SEQ_ID, counts.seq_id)):
            stored = [str(x) for x in np.asarray(_nodes.arr(group, name).oindex[index])]
            if stored != [str(x) for x in mine or []]:
                raise StoreValidationError(
                    f"{name} of the counts does not match the run's slots at seq_index; "
                    "write each sequence into its own slot"
                )
        old = np.asarray(_nodes.arr(group, SEQ_N_ACTIVE).oindex[index], dtype=np.int64)
        biggest = int((old + np.asarray(counts.seq_n_active)).max(initial=0))
    else:
        biggest = int(np.asarray(counts.seq_n_active).max(initial=0))
    if biggest > np.iinfo(seq_dtype).max:
        raise StoreValidationError(
            f"per-sequence count {biggest} overflows the run's {seq_dtype}; create the run "
            "with a wider seq_dtype (e.g. 'uint32')"
        )


def apply(
    group: zarr.Group,
    counts: Counts,
    plan: Plan,
    old: dict[str, np.ndarray] | None = None,
) -> None:
    """Write ``counts`` into the run as planned.

    ``old`` holds the merged rows as they were (the journal's undo data, read once); without it
    they are read from the arrays.
    """
    current, existing = plan.current, plan.existing
    new = [x for x in counts.languages if x not in existing]
    k0 = len(current)
    k1 = k0 + len(new)
    names = [N_ACTIVE, N_TOKENS] + (list(schema.MOMENTS) if counts.has_moments else [])
    names += [N_ROUTED] if counts.moe is not None else []
    rows = sorted(existing.values())
    if new:  # every array's new shape in one round trip (one metadata write each)
        grown = [_nodes.arr(group, name) for name in [*names, LANGUAGE]]
        _nodes.resize_many([(a, (k1, *a.shape[1:])) for a in grown])
    for name in names:
        array = _nodes.arr(group, name)
        data = getattr(counts, name)
        for lang, i in existing.items():
            j = counts.languages.index(lang)
            before = old[name][rows.index(i)] if old is not None else array[i]
            array[i] = before + data[j]
        if new:
            _chunks.write_or_set(array, k0, _rows(data, [counts.languages.index(x) for x in new]))
    if new:
        _nodes.arr(group, LANGUAGE)[k0:k1] = np.array(new, dtype=object).astype(str)
    if counts.has_sequences and counts.seq_index is not None:
        index = np.asarray(counts.seq_index, dtype=np.intp)
        for name in SEQ_COUNTS:
            if name not in group:
                continue
            array = _nodes.arr(group, name)
            before = np.asarray(array.oindex[index], dtype=np.int64)
            array.oindex[index] = (before + np.asarray(getattr(counts, name))).astype(array.dtype)
    elif counts.has_sequences:
        s0 = _nodes.arr(group, SEQ_N_ACTIVE).shape[0]
        s1 = s0 + len(counts.seq_language or [])
        if s1 > s0:
            for name in seq_arrays(group):
                array = _nodes.arr(group, name)
                array.resize((s1, *array.shape[1:]))
                value = getattr(counts, name)
                if name in schema.SEQ_COORDS:
                    value = np.array(value, dtype=object).astype(str)
                else:
                    value = np.asarray(value).astype(array.dtype)
                array[s0:s1] = value


def _rows(data: Any, order: list[int]) -> np.ndarray:
    """``data[order]``, a view when ``order`` is a run of consecutive rows (no copy of counts)."""
    values = np.asarray(data)
    if order == list(range(order[0], order[0] + len(order))):
        return values[order[0] : order[0] + len(order)]
    return values[order]
