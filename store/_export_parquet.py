"""A store's runs as long-form Parquet neuron tables, one file per run, written layer by layer.

One row per (language, role, layer, neuron) of a run, with the columns:

``run, language, role, layer, neuron, n_active, n_tokens, P``
    the counts, and ``P = n_active / n_tokens`` (NaN where no token was counted);
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
from langneurons.names import LANGUAGE, LAYER, N_ACTIVE, N_TOKENS, NEURON, ROLE
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
        schema = _schema(pa, sources).with_metadata(
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
            for dim in (LAYER, NEURON)
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


def _schema(pa: Any, sources: list[Source]) -> Any:
    words = pa.dictionary(pa.int32(), pa.string())
    fields = [
        pa.field("run", words, nullable=False),
        pa.field(LANGUAGE, words, nullable=False),
        pa.field(ROLE, words, nullable=False),
        pa.field(LAYER, pa.int64(), nullable=False),
        pa.field(NEURON, pa.int64(), nullable=False),
        pa.field(N_ACTIVE, pa.int64(), nullable=False),
        pa.field(N_TOKENS, pa.int64(), nullable=False),
        pa.field("P", pa.float64(), nullable=False),
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
        "rows": "one per (language, role, layer, neuron); P = n_active / n_tokens",
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
    k, r, n_layers, n = (counts.sizes[d] for d in (LANGUAGE, ROLE, LAYER, NEURON))
    per_layer = max(1, k * r * n)
    step = max(1, ROWS_PER_GROUP // per_layer)
    for start in range(0, n_layers, step):
        yield slice(start, min(start + step, n_layers))


def _table(
    pa: Any, schema: Any, run: str, counts: xr.Dataset, sources: list[Source], layers: slice
) -> Any:
    """The rows of one batch of layers, ordered language, role, layer, neuron."""
    languages = _export.labels(counts[LANGUAGE].variable)
    roles = _export.labels(counts[ROLE].variable)
    layer_ids = np.asarray(counts[LAYER].values)[layers]
    neuron_ids = np.asarray(counts[NEURON].values)
    k, r, b, n = len(languages), len(roles), len(layer_ids), len(neuron_ids)
    shape = (k, r, b, n)
    active = np.asarray(
        counts[N_ACTIVE].transpose(LANGUAGE, ROLE, LAYER, NEURON).isel({LAYER: layers}).values,
        dtype=np.int64,
    )
    tokens = np.asarray(counts[N_TOKENS].transpose(LANGUAGE, ROLE).values, dtype=np.int64)
    tokens_cells = np.broadcast_to(tokens[:, :, None, None], shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        prob = np.where(tokens_cells > 0, active / np.maximum(tokens_cells, 1), np.nan)

    def index(values: np.ndarray, axis: int) -> np.ndarray:
        view = [1, 1, 1, 1]
        view[axis] = len(values)
        return np.broadcast_to(values.reshape(view), shape).reshape(-1)

    def words(labels: np.ndarray, axis: int) -> Any:
        codes = index(np.arange(len(labels), dtype=np.int32), axis)
        return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(labels.tolist()))

    columns: dict[str, Any] = {
        "run": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(k * r * b * n, dtype=np.int32)), pa.array([run])
        ),
        LANGUAGE: words(languages, 0),
        ROLE: words(roles, 1),
        LAYER: index(layer_ids.astype(np.int64), 2),
        NEURON: index(neuron_ids.astype(np.int64), 3),
        N_ACTIVE: active.reshape(-1),
        N_TOKENS: tokens_cells.reshape(-1),
        "P": prob.reshape(-1),
    }
    for source in sources:
        part = source.result.isel({LAYER: layers})
        if source.type_column:
            kinds = _export.labels(part["neuron_type"].transpose(LAYER, NEURON).variable)
            table, codes = np.unique(kinds, return_inverse=True)
            cells = np.broadcast_to(codes.reshape(1, 1, b, n).astype(np.int32), shape)
            columns[source.type_column] = pa.DictionaryArray.from_arrays(
                pa.array(cells.reshape(-1)), pa.array(table.tolist())
            )
        if source.mask_column:
            columns[source.mask_column] = _mask_column(pa, part, languages, shape)
    return pa.table(columns, schema=schema)


def _mask_column(pa: Any, part: xr.Dataset, languages: np.ndarray, shape: tuple[int, ...]) -> Any:
    """The result's mask for each row's language (null for a language the result lacks)."""
    k, r, b, n = shape
    mask = part["mask"].transpose(LANGUAGE, LAYER, NEURON)
    have = list(_export.labels(mask[LANGUAGE].variable))
    values = np.zeros((k, b, n), dtype=bool)
    valid = np.zeros((k, b, n), dtype=bool)
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
            expected = _table(pa, schema, run, counts, sources, layers)
            if not found.read_row_group(i).equals(expected):
                raise StoreValidationError(
                    f"{where}: row group {i} (layers {layers.start}..{layers.stop - 1}) differs "
                    "from the store; the written copy is damaged (disk or library fault)"
                )
