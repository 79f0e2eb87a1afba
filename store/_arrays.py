"""The arrays of a run: creating them, checking a write of counts against them, applying it.

These functions work on one run group and know nothing of locking or the journal: the store
(:class:`~langneurons.store.ActivationStore`) takes the lock, arms the journal with the values a
write replaces (from :func:`plan_write`), and only then calls :func:`apply`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import zarr

from langneurons.errors import StoreValidationError
from langneurons.names import (
    ACT_SUM,
    LANGUAGE,
    LAYER,
    N_ACTIVE,
    N_TOKENS,
    NEURON,
    ROLE,
    ROLES,
    SEQ_DIMS,
    SEQ_ID,
    SEQ_LANGUAGE,
    SEQ_N_ACTIVE,
    SEQ_N_TOKENS,
    SEQUENCE,
)
from langneurons.store import _chunks, _integrity, _nodes, schema
from langneurons.store._counts import Counts, check_token_total

#: The arrays indexed by language (rows a write appends or adds to), moments last.
LANGUAGE_ROWS = (N_ACTIVE, N_TOKENS, *schema.MOMENTS)
#: The per-sequence count arrays (slots a write adds to).
SEQ_COUNTS = (SEQ_N_ACTIVE, SEQ_N_TOKENS)

SequenceLabels = tuple[Sequence[str], Sequence[str]]


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
) -> None:
    """Create the (empty) arrays of a new run in ``group``."""
    lc = schema.layer_chunk(n_layers, n_neurons)
    codec = _integrity.numeric_codecs()
    text = _integrity.string_codecs()
    with _nodes.quiet():
        group.create_array(
            LANGUAGE,
            shape=(0,),
            chunks=(64,),
            dtype=str,
            dimension_names=[LANGUAGE],
            compressors=text,
        )
        role = group.create_array(
            ROLE,
            shape=(2,),
            chunks=(2,),
            dtype=str,
            dimension_names=[ROLE],
            compressors=text,
        )
        role[:] = np.array(ROLES)
        for dim, size in ((LAYER, n_layers), (NEURON, n_neurons)):
            coord = group.create_array(
                dim,
                shape=(size,),
                chunks=(size,),
                dtype="int64",
                dimension_names=[dim],
                compressors=codec,
            )
            coord[:] = np.arange(size, dtype=np.int64)
        names = [N_ACTIVE] + (list(schema.MOMENTS) if moments else [])
        for name in names:
            spec = schema.VARIABLES[name]
            group.create_array(
                name,
                shape=(0, 2, n_layers, n_neurons),
                chunks=(1, 1, lc, n_neurons),
                dtype=spec.dtype,
                fill_value=0,
                dimension_names=list(spec.dims),
                compressors=codec,
            )
        group.create_array(
            N_TOKENS,
            shape=(0, 2),
            chunks=(1, 2),
            dtype="int64",
            fill_value=0,
            dimension_names=[LANGUAGE, ROLE],
            compressors=codec,
        )
        if sequences:
            slc = schema.layer_chunk(n_layers, n_neurons, np.dtype(seq_dtype).itemsize)
            coords: dict[str, Any] = {"coordinates": " ".join(schema.SEQ_COORDS)}
            group.create_array(
                SEQ_N_ACTIVE,
                shape=(0, 2, n_layers, n_neurons),
                chunks=(8, 1, slc, n_neurons),
                dtype=seq_dtype,
                fill_value=0,
                compressors=codec,
                dimension_names=list(SEQ_DIMS),
                attributes=coords,
            )
            group.create_array(
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
                group.create_array(
                    name,
                    shape=(0,),
                    chunks=(1024,),
                    dtype=str,
                    dimension_names=[SEQUENCE],
                    compressors=text,
                )
        for name, array in group.arrays():
            if schema.VARIABLE_ATTRS.get(name):  # one metadata write (attrs.update: one a key)
                array.update_attributes(schema.VARIABLE_ATTRS[name])


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
        for name in schema.SEQUENCES:
            array = _nodes.arr(group, name)
            array.resize((n, *array.shape[1:]))
            if name not in schema.SEQ_COORDS:
                _nodes.fill_zeros(array)
        for name, values in zip(schema.SEQ_COORDS, sequence_labels, strict=True):
            _nodes.arr(group, name)[:] = np.array(list(values), dtype=object).astype(str)


def plan_write(run: str, group: zarr.Group, counts: Counts, merge: bool) -> Plan:
    """Check counts against the run; return its current languages and the rows merged into."""
    current = _nodes.labels(group, LANGUAGE)
    layers, neurons = _nodes.arr(group, N_ACTIVE).shape[2:]
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
    rows = sorted(existing.values())
    for name in names:
        array = _nodes.arr(group, name)
        data = getattr(counts, name)
        if new:
            array.resize((k1, *array.shape[1:]))
        for lang, i in existing.items():
            j = counts.languages.index(lang)
            before = old[name][rows.index(i)] if old is not None else array[i]
            array[i] = before + data[j]
        if new:
            _chunks.write_or_set(array, k0, _rows(data, [counts.languages.index(x) for x in new]))
    if new:
        labels = _nodes.arr(group, LANGUAGE)
        labels.resize((k1,))
        labels[k0:k1] = np.array(new, dtype=object).astype(str)
    if counts.has_sequences and counts.seq_index is not None:
        index = np.asarray(counts.seq_index, dtype=np.intp)
        for name in SEQ_COUNTS:
            array = _nodes.arr(group, name)
            before = np.asarray(array.oindex[index], dtype=np.int64)
            array.oindex[index] = (before + np.asarray(getattr(counts, name))).astype(array.dtype)
    elif counts.has_sequences:
        s0 = _nodes.arr(group, SEQ_N_ACTIVE).shape[0]
        s1 = s0 + len(counts.seq_language or [])
        if s1 > s0:
            for name in schema.SEQUENCES:
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
