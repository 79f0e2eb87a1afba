"""Validation of a stored run against the schema (:mod:`langneurons.store.schema`).

What :meth:`ActivationStore.validate` checks inside one run group: its metadata, that every
required array is there with the schema's dimensions and dtype, that sizes agree, that labels
and coordinates are well formed, and that no count is negative or above its token total. Each
check reports a problem as a line; none raises.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from langneurons.errors import StoreValidationError
from langneurons.names import (
    ACT_SQSUM,
    EXPERT,
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
)
from langneurons.store import _nodes, schema
from langneurons.store._arrays import moe_layout
from langneurons.store._counts import INT64_MAX, routing_problems, total


def unreadable(group: str) -> str:
    """Why a group with a run's count arrays is not listed among the runs."""
    what = "holds run arrays but no schema_version attribute"
    return f"group {group!r} {what}; it is not a readable run"


def validate_run(group: zarr.Group) -> list[str]:
    """Every way the run ``group`` breaks the schema (empty when it is valid)."""
    problems: list[str] = []
    try:
        schema.RunMetadata.from_attrs(dict(group.attrs))
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return [str(exc)]
    present = {name for name, _ in group.arrays()}
    moe = MOE_ATTR in group.attrs  # a mixture-of-experts run (docs/design/moe.md)
    specs = schema.variables(moe)
    missing = [n for n in (schema.MOE_REQUIRED if moe else schema.REQUIRED) if n not in present]
    if missing:
        return [f"missing arrays {missing}"]
    if not moe and N_ROUTED in present:
        return [f"n_routed is there but the run has no {MOE_ATTR!r} attribute"]
    sizes: dict[str, int] = {}
    for name in sorted(present & set(specs)):
        spec = specs[name]
        arr = _nodes.arr(group, name)
        dims = tuple(arr.metadata.dimension_names or ())  # type: ignore[union-attr,unused-ignore]
        if dims != spec.dims:
            problems.append(f"{name} has dims {dims}; expected {spec.dims}")
            continue
        kind = np.dtype(arr.dtype).kind if not is_string(arr) else "T"
        if kind != spec.kind or (spec.dtype and str(arr.dtype) != spec.dtype):
            problems.append(f"{name} has dtype {arr.dtype}; expected {spec.dtype or spec.kind}")
        for dim, size in zip(dims, arr.shape, strict=True):
            if sizes.setdefault(dim, size) != size:
                problems.append(f"{name} has {size} along {dim}; other arrays have {sizes[dim]}")
    if problems:
        return problems
    langs = _nodes.labels(group, LANGUAGE)
    if len(set(langs)) != len(langs):
        problems.append(f"duplicate language labels in {langs}")
    if any(not x for x in langs):
        problems.append("an empty language label (an unfinished write?)")
    if _nodes.labels(group, ROLE) != list(ROLES):
        problems.append(f"role must be {list(ROLES)}")
    for dim in (LAYER, NEURON):
        values = _nodes.read(group, dim)
        if not np.array_equal(values, np.arange(len(values))):
            problems.append(f"{dim} coordinate must be 0..{len(values) - 1}")
    tokens = _nodes.read(group, N_TOKENS)
    if (tokens < 0).any():
        problems.append("n_tokens holds negative totals")
    elif total(tokens) > INT64_MAX:
        problems.append(f"n_tokens adds up to {total(tokens)}, above the int64 limit {INT64_MAX}")
    if moe:
        problems.extend(check_experts(group, tokens, langs))
    else:
        problems.extend(check_counts(group, N_ACTIVE, tokens, langs))
    problems.extend(check_token_totals(group.attrs.get(schema.TOKEN_TOTALS_ATTR), langs, tokens))
    if ACT_SQSUM in present:
        import dask.array as da

        if bool((da.from_zarr(_nodes.arr(group, ACT_SQSUM)) < 0).any().compute()):
            problems.append("act_sqsum holds negative values")
    if SEQ_N_ACTIVE in present and moe:
        problems.extend(check_sequence_experts(group, tokens, langs))
    elif SEQ_N_ACTIVE in present:
        seq_tokens = _nodes.read(group, SEQ_N_TOKENS)
        seq_ids = _nodes.labels(group, SEQ_ID)
        problems.extend(check_counts(group, SEQ_N_ACTIVE, seq_tokens, seq_ids))
        seq_langs = _nodes.labels(group, SEQ_LANGUAGE)
        unknown = sorted(set(seq_langs) - set(langs))
        if unknown:
            problems.append(f"seq_language names languages not in the run: {unknown}")
        else:
            problems.extend(check_sequence_sums(group, tokens, langs, seq_langs, seq_tokens))
    return problems


def check_sequence_sums(
    group: zarr.Group,
    tokens: np.ndarray,
    langs: list[str],
    seq_langs: list[str],
    seq_tokens: np.ndarray,
) -> list[str]:
    """Whether the per-sequence counts add up, per language, to ``n_tokens`` and ``n_active``
    (read a row of chunks at a time)."""
    if len(seq_langs) == 0:
        return []  # a run without sequences yet (slots filled by later writes add up then)
    index = {x: i for i, x in enumerate(langs)}
    idx = np.array([index[x] for x in seq_langs], dtype=np.intp)
    out = []
    tok = np.zeros(tokens.shape, dtype=np.int64)
    np.add.at(tok, idx, seq_tokens.astype(np.int64))
    if not np.array_equal(tok, tokens):
        out.append(f"{SEQ_N_TOKENS} summed per language differs from {N_TOKENS}")
    active = _nodes.arr(group, N_ACTIVE)
    summed = np.zeros(active.shape, dtype=np.int64)
    seq = _nodes.arr(group, SEQ_N_ACTIVE)
    for rows in _nodes.chunk_rows(seq):
        block = np.asarray(seq[rows])
        here = idx[rows]
        for k in np.unique(here):
            summed[k] += block[here == k].sum(axis=0, dtype=np.int64)
    if not np.array_equal(summed, np.asarray(active[...], dtype=np.int64)):
        out.append(f"{SEQ_N_ACTIVE} summed per language differs from {N_ACTIVE}")
    return out


def check_token_totals(text: object, langs: list[str], tokens: np.ndarray) -> list[str]:
    """Whether the run's token-totals attribute (when it has one) matches its arrays."""
    if text is None:
        return []  # written before the attribute existed: info reads the arrays
    want = {"language": langs, "n_tokens": [[int(x) for x in row] for row in tokens]}
    try:
        have = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        have = None
    if have != want:
        return [
            f"the run's {schema.TOKEN_TOTALS_ATTR} attribute does not match its language and "
            "n_tokens arrays (langneurons info would show it); delete the attribute, and info "
            "reads the arrays"
        ]
    return []


def is_string(arr: zarr.Array) -> bool:
    """Whether ``arr`` holds strings (of any of numpy's string kinds)."""
    return np.dtype(arr.dtype).kind in "TUO"


def check_counts(
    group: zarr.Group,
    name: str,
    tokens: Any,
    labels: Sequence[str],
    denominator: str = N_TOKENS,
) -> list[str]:
    """Negative counts, and counts above their token total, in the count array ``name``.

    ``tokens`` is the denominator: ``[row, role]`` token totals, or the ``[row, role, layer,
    expert]`` routed tokens (``denominator="n_routed"``, a numpy or dask array) of a
    mixture-of-experts run.
    """
    import dask.array as da

    active = da.from_zarr(_nodes.arr(group, name))
    if active.shape[0] == 0:
        return []
    axes = tuple(range(2, active.ndim))
    limit = tokens.reshape(tokens.shape + (1,) * (active.ndim - tokens.ndim))
    negative = (active < 0).sum(axis=axes) if active.dtype.kind == "i" else None
    above = (active > limit).sum(axis=axes)
    if negative is not None:
        negative, above = da.compute(negative, above)
    else:
        (above,) = da.compute(above)
    out = []
    if negative is not None and negative.any():
        out.append(f"{name} holds {int(negative.sum())} negative counts")
    for i, r in np.argwhere(above > 0):
        out.append(
            f"{name} exceeds {denominator} for {labels[i]!r} role {ROLES[r]!r} at "
            f"{int(above[i, r])} cells"
        )
    return out


def check_experts(group: zarr.Group, tokens: np.ndarray, langs: list[str]) -> list[str]:
    """How the per-expert counts of a MoE run break the invariants of docs/design/moe.md."""
    try:
        moe = moe_layout(group)
    except StoreValidationError as exc:
        return [str(exc)]
    assert moe is not None
    out = []
    if not np.array_equal(_nodes.read(group, EXPERT), np.arange(moe.size)):
        out.append(f"expert coordinate must be 0..{moe.size - 1}")
    if moe.n_neurons != _nodes.arr(group, NEURON).shape[0]:
        out.append(
            f"expert_neurons has {moe.n_neurons} at most but the run has "
            f"{_nodes.arr(group, NEURON).shape[0]} neurons; the largest expert sets the neuron dim"
        )
        return out
    routed = _nodes.read(group, N_ROUTED)
    if (routed < 0).any():
        return [*out, "n_routed holds negative counts"]
    out.extend(routing_problems(moe, N_ROUTED, routed, tokens, langs))
    out.extend(check_counts(group, N_ACTIVE, routed, langs, N_ROUTED))
    out.extend(check_padding(group, N_ACTIVE, moe, langs))
    return out


def check_padding(
    group: zarr.Group, name: str, moe: schema.MoeLayout, labels: Sequence[str]
) -> list[str]:
    """Counts at padding neurons (``neuron >= expert_neurons`` of their expert), which must be 0."""
    import dask.array as da

    padding = np.arange(moe.n_neurons)[None, :] >= np.asarray(moe.expert_neurons)[:, None]
    active = da.from_zarr(_nodes.arr(group, name))
    if not padding.any() or active.shape[0] == 0:
        return []
    counted = (da.where(padding, active, 0) != 0).sum(axis=(2, 3, 4)).compute()
    return [
        f"{name} counts {int(counted[i, r])} padding neurons (neuron >= expert_neurons) for "
        f"{labels[i]!r} role {ROLES[r]!r}; those must hold 0"
        for i, r in np.argwhere(counted > 0)
    ]


def check_sequence_experts(group: zarr.Group, tokens: np.ndarray, langs: list[str]) -> list[str]:
    """The per-sequence arrays of a MoE run: their routing, and that they add up per language."""
    try:
        moe = moe_layout(group)
    except StoreValidationError:
        return []  # check_experts names it
    assert moe is not None
    import dask.array as da

    seq_tokens = _nodes.read(group, SEQ_N_TOKENS)
    seq_ids = _nodes.labels(group, SEQ_ID)
    seq_langs = _nodes.labels(group, SEQ_LANGUAGE)
    index = {x: i for i, x in enumerate(langs)}
    known = all(x in index for x in seq_langs)
    idx = np.array([index.get(x, 0) for x in seq_langs], dtype=np.intp)
    routed_array = _nodes.arr(group, SEQ_N_ROUTED)
    summed = np.zeros(_nodes.arr(group, N_ROUTED).shape, dtype=np.int64)
    found: dict[str, str] = {}  # the first line of each kind of problem
    for rows in _nodes.chunk_rows(routed_array):  # a block of sequences at a time
        block = np.asarray(routed_array[rows])
        if (block < 0).any():
            return ["seq_n_routed holds negative counts"]
        for line in routing_problems(moe, SEQ_N_ROUTED, block, seq_tokens[rows], seq_ids[rows]):
            found.setdefault("shared" if "shared expert" in line else "routed", line)
        np.add.at(summed, idx[rows], block)
    out = list(found.values())
    limit = da.from_zarr(routed_array)
    out.extend(check_counts(group, SEQ_N_ACTIVE, limit, seq_ids, SEQ_N_ROUTED))
    out.extend(check_padding(group, SEQ_N_ACTIVE, moe, seq_ids))
    if known:
        tok = np.zeros(tokens.shape, dtype=np.int64)
        np.add.at(tok, idx, seq_tokens.astype(np.int64))
        for name, mine, whole in (
            (N_TOKENS, tok, tokens),
            (N_ROUTED, summed, _nodes.read(group, N_ROUTED)),
        ):
            if not np.array_equal(mine, whole):
                out.append(f"seq_{name} summed per language differs from {name}")
    return out
