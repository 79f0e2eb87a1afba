"""Validation of a stored run against the schema (:mod:`langneurons.store.schema`).

What :meth:`ActivationStore.validate` checks inside one run group: its metadata, that every
required array is there with the schema's dimensions and dtype, that sizes agree, that labels
and coordinates are well formed, and that no count is negative or above its token total. Each
check reports a problem as a line; none raises.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import zarr

from langneurons.names import (
    ACT_SQSUM,
    LANGUAGE,
    LAYER,
    N_ACTIVE,
    N_TOKENS,
    NEURON,
    ROLE,
    ROLES,
    SEQ_ID,
    SEQ_LANGUAGE,
    SEQ_N_ACTIVE,
    SEQ_N_TOKENS,
)
from langneurons.store import _nodes, schema
from langneurons.store._counts import INT64_MAX, total


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
    missing = [n for n in schema.REQUIRED if n not in present]
    if missing:
        return [f"missing arrays {missing}"]
    sizes: dict[str, int] = {}
    for name in sorted(present & set(schema.VARIABLES)):
        spec = schema.VARIABLES[name]
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
    problems.extend(check_counts(group, N_ACTIVE, tokens, langs))
    problems.extend(check_token_totals(group.attrs.get(schema.TOKEN_TOTALS_ATTR), langs, tokens))
    if ACT_SQSUM in present:
        import dask.array as da

        if bool((da.from_zarr(_nodes.arr(group, ACT_SQSUM)) < 0).any().compute()):
            problems.append("act_sqsum holds negative values")
    if SEQ_N_ACTIVE in present:
        seq_tokens = _nodes.read(group, SEQ_N_TOKENS)
        seq_ids = _nodes.labels(group, SEQ_ID)
        problems.extend(check_counts(group, SEQ_N_ACTIVE, seq_tokens, seq_ids))
        unknown = sorted(set(_nodes.labels(group, SEQ_LANGUAGE)) - set(langs))
        if unknown:
            problems.append(f"seq_language names languages not in the run: {unknown}")
    return problems


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
    group: zarr.Group, name: str, tokens: np.ndarray, labels: Sequence[str]
) -> list[str]:
    """Negative counts, and counts above their token total, in the count array ``name``."""
    import dask.array as da

    active = da.from_zarr(_nodes.arr(group, name))
    if active.shape[0] == 0:
        return []
    negative = (active < 0).sum(axis=(2, 3)) if active.dtype.kind == "i" else None
    above = (active > tokens[:, :, None, None]).sum(axis=(2, 3))
    if negative is not None:
        negative, above = da.compute(negative, above)
    else:
        (above,) = da.compute(above)
    out = []
    if negative is not None and negative.any():
        out.append(f"{name} holds {int(negative.sum())} negative counts")
    for i, r in np.argwhere(above > 0):
        out.append(
            f"{name} exceeds n_tokens for {labels[i]!r} role {ROLES[r]!r} at "
            f"{int(above[i, r])} cells"
        )
    return out
