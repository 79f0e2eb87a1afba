"""A store's runs as long-form Parquet neuron tables, one file per run, written layer by layer.

One row per (language, role, layer, neuron) of a run, with the columns:

``run, language, role, layer, neuron, n_active, n_tokens, P``
    the counts, and ``P = n_active / n_tokens`` (NaN where no token was counted);
``expert``, ``n_routed`` (mixture-of-experts runs only: one row per language, role, layer,
    expert and neuron)
    the expert after ``layer``, the tokens routed to it after ``n_tokens``, and
    ``P = n_active / n_routed`` (null where the expert received no token, and at the padding
    neurons of an expert smaller than the largest, docs/design/moe.md);
``type_<name>``, ``mask_<name>``
    for each saved identification result ``<name>`` (``/`` in a name written as ``.``): the
    neuron's type (``specific``, ``related``, ``general``, ``none``, ...) and whether it is in
    the result's mask for the row's language (null where the result has no such language).

Rows are written one row group per batch of layers (about :data:`ROWS_PER_GROUP` rows), each
batch read from the store, written and forgotten, so a 7B run never sits in memory whole. The
file's key-value metadata ``langneurons`` holds the run's attributes and, per result column, the
result it came from with that result's attributes (JSON). pandas, polars, DuckDB and the
``datasets`` library read the files as they are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from langneurons._progress import progress
from langneurons.errors import StoreValidationError
from langneurons.names import (
    EXPERT,
    EXPERT_NEURONS,
    LANGUAGE,
    LAYER,
    N_ACTIVE,
    N_ROUTED,
    N_TOKENS,
    NEURON,
    ROLE,
)
from langneurons.store import _attrs, _export

log = logging.getLogger(__name__)

#: Rows per row group (and so per batch held in memory): a few tens of MB.
ROWS_PER_GROUP = 1 << 20
METADATA_KEY = b"langneurons"


@dataclass(frozen=True)
class Source:
    """One identification result whose type and mask become columns."""

    name: str
    result: xr.Dataset
    type_column: str | None
    mask_column: str | None


def _inner(counts: xr.Dataset) -> tuple[str, ...]:
    """The dims after ``layer`` of a run's counts: the expert too in a MoE run."""
    return (EXPERT, NEURON) if N_ROUTED in counts else (NEURON,)


def column_names(name: str) -> tuple[str, str]:
    """The ``type_`` and ``mask_`` column names of the identification result ``name``."""
    flat = name.replace("/", ".")
    return f"type_{flat}", f"mask_{flat}"


def write(
    dest: Path,
    runs: Sequence[str],
    open_run: Callable[[str], xr.Dataset],
    identifications: Callable[[str], list[tuple[str, xr.Dataset]]],
    *,
    folder: str = "",
) -> list[Path]:
    """Write one Parquet file per run under the new folder ``dest`` (in ``dest/folder``).

    ``open_run(run)`` gives the run's counts (lazily: each batch reads only its layers),
    ``identifications(run)`` its saved identification results as ``(name, dataset)``. Each file
    is read back and compared with the store before the folder is renamed into place.
    """
    with _export.staged(dest, "export-parquet") as tmp:
        return [
            dest / path.relative_to(tmp)
            for path in write_into(tmp / folder, runs, open_run, identifications)
        ]


def write_into(
    folder: Path,
    runs: Sequence[str],
    open_run: Callable[[str], xr.Dataset],
    identifications: Callable[[str], list[tuple[str, xr.Dataset]]],
) -> list[Path]:
    """:func:`write` into an existing (staged) folder; return the files."""
    pa = _export.require("pyarrow", "parquet")
    pq = _export.require("pyarrow.parquet", "parquet")
    out = []
    for run in runs:
        counts = open_run(run)
        sources = _sources(run, counts, identifications(run))
        path = _export.run_file(folder, run, ".parquet")
        schema = _schema(pa, sources, N_ROUTED in counts).with_metadata(
            {METADATA_KEY: json.dumps(_metadata(run, counts, sources)).encode()}
        )
        batches = list(_layer_batches(counts))
        with progress(f"export parquet {run}", total=len(batches), unit="batch") as task:
            with pq.ParquetWriter(path, schema, compression="zstd") as writer:
                for layers in batches:
                    writer.write_table(_table(pa, schema, run, counts, sources, layers))
                    task.update()
        check(path, run, counts, sources, schema)
        out.append(path)
    return out


def _sources(run: str, counts: xr.Dataset, found: list[tuple[str, xr.Dataset]]) -> list[Source]:
    """The identification results on the run's grid, with their column names."""
    out = []
    for name, result in found:
        same = all(
            dim in result.coords
            and np.array_equal(np.asarray(result[dim].values), np.asarray(counts[dim].values))
            for dim in (LAYER, *_inner(counts))
        )
        has_type, has_mask = "neuron_type" in result, "mask" in result
        if not same or not (has_type or has_mask):
            log.warning(
                "identification result %r of run %r left out of the Parquet table: %s",
                name,
                run,
                "not on the run's layer x neuron grid" if not same else "no neuron_type or mask",
            )
            continue
        type_col, mask_col = column_names(name)
        out.append(
            Source(name, result, type_col if has_type else None, mask_col if has_mask else None)
        )
    return out


def _schema(pa: Any, sources: list[Source], moe: bool = False) -> Any:
    words = pa.dictionary(pa.int32(), pa.string())
    fields = [
        pa.field("run", words, nullable=False),
        pa.field(LANGUAGE, words, nullable=False),
        pa.field(ROLE, words, nullable=False),
        pa.field(LAYER, pa.int64(), nullable=False),
        *([pa.field(EXPERT, pa.int64(), nullable=False)] if moe else []),
        pa.field(NEURON, pa.int64(), nullable=False),
        pa.field(N_ACTIVE, pa.int64(), nullable=False),
        pa.field(N_TOKENS, pa.int64(), nullable=False),
        *([pa.field(N_ROUTED, pa.int64(), nullable=False)] if moe else []),
        pa.field("P", pa.float64(), nullable=moe),
    ]
    for source in sources:
        if source.type_column:
            fields.append(pa.field(source.type_column, words, nullable=False))
        if source.mask_column:
            fields.append(pa.field(source.mask_column, pa.bool_(), nullable=True))
    return pa.schema(fields)


def _metadata(run: str, counts: xr.Dataset, sources: list[Source]) -> dict[str, Any]:
    return {
        "run": run,
        "attrs": _attrs.to_python(_attrs.decode(counts.attrs)),
        "rows": (
            "one per (language, role, layer, expert, neuron); P = n_active / n_routed"
            if N_ROUTED in counts
            else "one per (language, role, layer, neuron); P = n_active / n_tokens"
        ),
        "columns": {
            col: {"result": f"identification/{s.name}", "variable": var}
            for s in sources
            for col, var in ((s.type_column, "neuron_type"), (s.mask_column, "mask"))
            if col
        },
        "results": {s.name: _attrs.to_python(_attrs.decode(s.result.attrs)) for s in sources},
    }


def _layer_batches(counts: xr.Dataset) -> Iterator[slice]:
    """Slices of the layer axis, each about :data:`ROWS_PER_GROUP` rows of the table."""
    k, r, n_layers = (counts.sizes[d] for d in (LANGUAGE, ROLE, LAYER))
    n = int(np.prod([counts.sizes[d] for d in _inner(counts)]))
    per_layer = max(1, k * r * n)
    step = max(1, ROWS_PER_GROUP // per_layer)
    for start in range(0, n_layers, step):
        yield slice(start, min(start + step, n_layers))


def _table(
    pa: Any, schema: Any, run: str, counts: xr.Dataset, sources: list[Source], layers: slice
) -> Any:
    """The rows of one batch of layers, ordered language, role, layer, (expert,) neuron."""
    inner = _inner(counts)
    moe = len(inner) == 2
    languages = _export.labels(counts[LANGUAGE].variable)
    roles = _export.labels(counts[ROLE].variable)
    layer_ids = np.asarray(counts[LAYER].values)[layers]
    inner_ids = [np.asarray(counts[d].values) for d in inner]
    k, r, b = len(languages), len(roles), len(layer_ids)
    shape = (k, r, b, *(len(x) for x in inner_ids))
    active = np.asarray(
        counts[N_ACTIVE].transpose(LANGUAGE, ROLE, LAYER, *inner).isel({LAYER: layers}).values,
        dtype=np.int64,
    )
    tokens = np.asarray(counts[N_TOKENS].transpose(LANGUAGE, ROLE).values, dtype=np.int64)
    tokens_cells = np.broadcast_to(tokens.reshape(k, r, *[1] * (len(shape) - 2)), shape)
    denominator = tokens_cells
    if moe:
        routed = counts[N_ROUTED].transpose(LANGUAGE, ROLE, LAYER, EXPERT).isel({LAYER: layers})
        denominator = np.broadcast_to(np.asarray(routed.values, dtype=np.int64)[..., None], shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        prob = np.where(denominator > 0, active / np.maximum(denominator, 1), np.nan)
    if moe:  # padding neurons of a smaller expert: no probability
        sizes = np.asarray(counts[EXPERT_NEURONS].values)
        prob = np.where(inner_ids[1][None, :] >= sizes[:, None], np.nan, prob)

    def index(values: np.ndarray, axis: int) -> np.ndarray:
        view = [1] * len(shape)
        view[axis] = len(values)
        return np.broadcast_to(values.reshape(view), shape).reshape(-1)

    def words(labels: np.ndarray, axis: int) -> Any:
        codes = index(np.arange(len(labels), dtype=np.int32), axis)
        return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(labels.tolist()))

    cells = int(np.prod(shape))
    columns: dict[str, Any] = {
        "run": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(cells, dtype=np.int32)), pa.array([run])
        ),
        LANGUAGE: words(languages, 0),
        ROLE: words(roles, 1),
        LAYER: index(layer_ids.astype(np.int64), 2),
    }
    for axis, (dim, ids) in enumerate(zip(inner, inner_ids, strict=True), start=3):
        columns[dim] = index(ids.astype(np.int64), axis)
    columns[N_ACTIVE] = active.reshape(-1)
    columns[N_TOKENS] = tokens_cells.reshape(-1)
    if moe:
        columns[N_ROUTED] = denominator.reshape(-1)
    columns["P"] = prob.reshape(-1)
    if moe:  # undefined P is null (an expert without tokens, a padding neuron)
        columns["P"] = pa.array(columns["P"], mask=np.isnan(columns["P"]), type=pa.float64())
    for source in sources:
        part = source.result.isel({LAYER: layers})
        if source.type_column:
            kinds = _export.labels(part["neuron_type"].transpose(LAYER, *inner).variable)
            table, codes = np.unique(kinds, return_inverse=True)
            typed = np.broadcast_to(codes.reshape(1, 1, *shape[2:]).astype(np.int32), shape)
            columns[source.type_column] = pa.DictionaryArray.from_arrays(
                pa.array(typed.reshape(-1)), pa.array(table.tolist())
            )
        if source.mask_column:
            columns[source.mask_column] = _mask_column(pa, part, languages, shape, inner)
    return pa.table(columns, schema=schema)


def _mask_column(
    pa: Any,
    part: xr.Dataset,
    languages: np.ndarray,
    shape: tuple[int, ...],
    inner: tuple[str, ...] = (NEURON,),
) -> Any:
    """The result's mask for each row's language (null for a language the result lacks)."""
    k = shape[0]
    mask = part["mask"].transpose(LANGUAGE, LAYER, *inner)
    have = list(_export.labels(mask[LANGUAGE].variable))
    values = np.zeros((k, *shape[2:]), dtype=bool)
    valid = np.zeros((k, *shape[2:]), dtype=bool)
    data = np.asarray(mask.values, dtype=bool)
    for i, lang in enumerate(languages):
        if lang in have:
            values[i] = data[have.index(lang)]
            valid[i] = True
    cells = np.broadcast_to(values[:, None], shape).reshape(-1)
    known = np.broadcast_to(valid[:, None], shape).reshape(-1)
    return pa.array(cells, mask=~known, type=pa.bool_())


def check(path: Path, run: str, counts: xr.Dataset, sources: list[Source], schema: Any) -> None:
    """Read ``path`` back, row group by row group, and compare it with the store."""
    pa = _export.require("pyarrow", "parquet")
    pq = _export.require("pyarrow.parquet", "parquet")
    where = f"Parquet export of run {run!r} ({path.name})"
    with pq.ParquetFile(path) as found:
        batches = list(_layer_batches(counts))
        if found.num_row_groups != len(batches):
            raise StoreValidationError(
                f"{where}: {found.num_row_groups} row groups written, {len(batches)} expected"
            )
        if not found.schema_arrow.equals(schema, check_metadata=True):
            raise StoreValidationError(f"{where}: the schema read back differs")
        for i, layers in enumerate(batches):
            expected = _table(pa, schema, run, counts, sources, layers)  # MoE runs too
            if not found.read_row_group(i).equals(expected):
                raise StoreValidationError(
                    f"{where}: row group {i} (layers {layers.start}..{layers.stop - 1}) differs "
                    "from the store; the written copy is damaged (disk or library fault)"
                )
