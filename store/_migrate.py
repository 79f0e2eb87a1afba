"""Rewrite a store of an older schema version in the current one.

Version 1 -> 2: every array is rewritten with a CRC32C checksum in its codec chain and with every
chunk present (version 1 left all-zero chunks implicit), and saved results gain their
``result_kind`` / ``result_name`` attributes. Counts, labels, provenance and the write history
are copied unchanged, block by block, so a store larger than memory migrates too.

The new store is built next to the target and renamed into place only once it validates; a
failed or killed migration leaves the original untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
import zarr.storage

from langneurons._deprecate import renamed_keywords
from langneurons.errors import InterruptedWriteError, InvalidNameError, StoreValidationError
from langneurons.names import LANGUAGE, N_ACTIVE, SEQ_ID, SEQ_LANGUAGE, SEQ_N_ACTIVE
from langneurons.store import _arrays, _attrs, _journal, _leftovers, _nodes, schema
from langneurons.store._arrays import LANGUAGE_ROWS, SEQ_COUNTS
from langneurons.store._open import open_store
from langneurons.store._store import ActivationStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """What :func:`migrate_store` did."""

    store: Path
    from_version: int
    to_version: int
    runs: int
    results: int
    backup: Path | None  # where the original was kept (in-place migration), else None


@renamed_keywords(src="store")
def migrate_store(
    store: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None
) -> Migration:
    """Rewrite the store at ``store`` in the current schema version.

    Parameters
    ----------
    store
        A local store directory, or a ``.zip`` export (then ``dest`` is required). (Named
        ``src`` before 0.2; that name still works, with a DeprecationWarning.)
    dest
        Where to write the migrated store (a new path). ``None`` migrates in place: the original
        is renamed to ``STORE.schemaN.bak`` and kept until you delete it.
    """
    src = store
    src_url = os.fspath(src)
    old = open_store(src_url, mode="r", any_version=True)
    version = _version(old)
    if version in schema.READS:  # 3 marks a store with a MoE run: read as it is
        raise StoreValidationError(
            f"store {src_url!r} already has schema version {version}; nothing to migrate"
        )
    if version not in schema.MIGRATES_FROM:
        schema.check_version(version, f"store {src_url!r}")  # newer or unknown: raises
    interrupted = _journal.interrupted_runs(old.zarr_store)
    if interrupted:
        raise InterruptedWriteError(
            f"run {interrupted[0]!r} holds an interrupted write; run `langneurons repair "
            f"{src_url}` before migrating"
        )
    if dest is None and src_url.endswith(".zip"):
        raise InvalidNameError(
            f"cannot migrate zip {src_url!r} in place; give a new directory as the destination"
        )
    target = _nodes.local_path(os.fspath(dest if dest is not None else src))
    if target is None:
        raise InvalidNameError("migration writes local directories; give a local path")
    if dest is not None and target.exists():
        raise InvalidNameError(f"destination {str(target)!r} already exists; choose a new path")
    _leftovers.clean_next_to(target, "migrate")
    work = _leftovers.tmp_path(target, "migrate")
    try:
        _nodes.init_store(zarr.storage.LocalStore(work, read_only=False))
        new = open_store(work, mode="r+")
        runs, results = _copy(old, new, version)
        problems = new.validate()
        if problems:
            raise StoreValidationError(f"the migrated store does not validate: {problems[0]}")
        backup = None
        if dest is None:
            backup = target.with_name(f"{target.name}.schema{version}.bak")
            if backup.exists():
                raise InvalidNameError(
                    f"{str(backup)!r} exists from an earlier migration; move it away first"
                )
            os.rename(target, backup)
        os.rename(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("migrated %s from schema %s to %s", src_url, version, schema.SCHEMA_VERSION)
    return Migration(target, version, schema.SCHEMA_VERSION, runs, results, backup)


def _version(store: ActivationStore) -> int:
    with _nodes.quiet():
        root = zarr.open_group(store.zarr_store, mode="r")
    attrs = root.attrs.get(schema.STORE_ATTR)
    version = attrs.get("schema_version") if isinstance(attrs, dict) else None
    if not isinstance(version, int):
        raise StoreValidationError(f"store {store.url!r} names no schema version; cannot migrate")
    return version


def _copy(old: ActivationStore, new: ActivationStore, version: int) -> tuple[int, int]:
    """Copy every run and result of ``old`` into the empty store ``new``."""
    n_results = 0
    runs = old.runs()
    for run in runs:
        with _nodes.quiet():
            group = zarr.open_group(old.zarr_store, path=run, mode="r", use_consolidated=False)
        attrs = dict(group.attrs)
        n_layers, n_neurons = _nodes.arr(group, N_ACTIVE).shape[2:]
        sequences = SEQ_N_ACTIVE in group
        labels = None
        if sequences:
            labels = (_nodes.labels(group, SEQ_LANGUAGE), _nodes.labels(group, SEQ_ID))
        meta = schema.RunMetadata.from_attrs({**attrs, "schema_version": schema.SCHEMA_VERSION})
        new.create_run(
            run,
            n_layers=n_layers,
            n_neurons=n_neurons,
            metadata=meta,
            moments="act_sum" in group,
            sequences=sequences,
            seq_dtype=str(_nodes.arr(group, SEQ_N_ACTIVE).dtype) if sequences else "uint16",
            languages=_nodes.labels(group, LANGUAGE),
            sequence_labels=labels,
        )
        writer = new.writer(run)
        with writer.unjournaled() as target:  # the new store is not in place yet: no one reads
            for name in (*LANGUAGE_ROWS, *SEQ_COUNTS):
                if name in group:
                    _copy_blocks(_nodes.arr(group, name), _nodes.arr(target, name))
            target.attrs.update(
                _attrs.encode(
                    {
                        **attrs,  # provenance, tool version, creation and write history
                        "schema_version": schema.SCHEMA_VERSION,
                        "migrated": {"from": version, "time": schema.now_iso()},
                    }
                )
                # the totals of the copied arrays (create_run wrote those of its zero rows)
                | {schema.TOKEN_TOTALS_ATTR: _arrays.read_token_totals(target)}
            )
        for kind in schema.RESULT_GROUPS:
            for name in old.results(run, kind):
                import xarray as xr  # here: importing the store must not import xarray

                with _nodes.quiet():
                    result = xr.open_zarr(
                        old.zarr_store, group=f"{run}/{kind}/{name}", consolidated=False, chunks={}
                    )
                writer.save_result(kind, name, result, nest_check=False)
                n_results += 1
    return len(runs), n_results


def _copy_blocks(src: zarr.Array, dst: zarr.Array) -> None:
    """Copy ``src`` into ``dst`` (same shape) one chunk row of ``dst`` at a time."""
    if src.shape != dst.shape:
        raise StoreValidationError(f"{src.path} has shape {src.shape}, expected {dst.shape}")
    for rows in _nodes.chunk_rows(dst):
        dst[rows] = np.asarray(src[rows])
