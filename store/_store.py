"""The activation store: a Zarr v3 hierarchy of runs, safe for concurrent writers.

Writes are serialised by a lock on the store (``flock`` on the store directory for local stores,
an in-process lock for other URLs) and made atomic by a journal: before touching a run, a writer
records the run's previous shapes, attributes and the previous values of every slice it will
change in ``RUN/_journal``; only when every array is written does it delete the journal and
refresh the consolidated metadata. A writer killed in between leaves the journal behind; the next
writer (or ``repair``) rolls the run back to its previous state, and readers refuse the run until
then. Readers that go through the consolidated metadata (plain xarray included) see the last
committed shapes throughout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import xarray as xr
import zarr
import zarr.storage
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype

from langneurons._fs import apply_umask
from langneurons._progress import progress
from langneurons.errors import (
    AlreadyWrittenError,
    InterruptedWriteError,
    InvalidNameError,
    NotAStoreError,
    RunExistsError,
    RunNotFoundError,
    SchemaVersionError,
    StoreNotFoundError,
    StoreValidationError,
)
from langneurons.store import _attrs, _integrity, _leftovers, _metadata, _plan, schema
from langneurons.store._counts import INT64_MAX, Counts, check_token_total, total
from langneurons.store._plan import units_of

log = logging.getLogger(__name__)

_UNDO = "undo.npz"  # inside RUN/_journal: the values a write replaces
_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence zarr's notice that consolidated metadata is not in the v3 spec (we rely on it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        warnings.filterwarnings("ignore", message="Object at .* is not recognized")
        yield


def _local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url:
        return None
    return Path(url)


@dataclasses.dataclass(frozen=True)
class Repaired:
    """What :meth:`ActivationStore.repair_report` did."""

    rolled_back: tuple[str, ...]  # runs whose interrupted write was rolled back
    removed: tuple[str, ...]  # leftovers removed, as paths inside the store


class ActivationStore:
    """A langneurons activation store (many runs in one Zarr v3 hierarchy).

    Open one with :func:`open_store` or create one with :func:`create_store`.
    """

    def __init__(self, url: str, zstore: Store, *, read_only: bool) -> None:
        self.url = url
        self._zstore = zstore
        self.read_only = read_only
        self._path = _local_path(url) if not url.endswith(".zip") else None
        # every read of data goes through the checked view: missing or damaged chunks are named
        self._checked = _integrity.CheckedStore(zstore)

    def __repr__(self) -> str:
        mode = "r" if self.read_only else "r+"
        return f"ActivationStore({self.url!r}, mode={mode!r}, runs={self.runs()!r})"

    # ------------------------------------------------------------------ locking
    @contextlib.contextmanager
    def _lock(self, exclusive: bool = True) -> Iterator[None]:
        """Hold the store's write lock (shared for readers)."""
        if self._path is not None and self._path.is_dir():
            fd = os.open(self._path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                with _integrity.write_empty_chunks() if exclusive else contextlib.nullcontext():
                    yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        else:
            with _PROCESS_LOCKS_GUARD:
                lock = _PROCESS_LOCKS.setdefault(self.url, threading.RLock())
            with lock, _integrity.write_empty_chunks():
                yield

    def _require_writable(self) -> None:
        if self.read_only:
            raise PermissionError(
                f"store {self.url!r} is open read-only; open it with mode='r+' to write"
            )

    # ------------------------------------------------------------------ groups
    def _root(self, consolidated: bool = True, *, checked: bool = False) -> zarr.Group:
        with _quiet():
            return zarr.open_group(
                self._checked if checked else self._zstore,
                mode="r" if self.read_only else "r+",
                use_consolidated=consolidated,
            )

    def _exists(self, key: str) -> bool:
        return _exists(self._zstore, key)

    def _group(self, run: str, *, checked: bool = False) -> zarr.Group:
        """A run's group (``checked``: reads go through the checked view, for data read)."""
        with _quiet():
            node = zarr.open_group(
                self._checked if checked else self._zstore,
                path=run,
                mode="r" if self.read_only else "r+",
                use_consolidated=False,
            )
        return node

    def _raw(self, key: str) -> bytes | None:
        value = zarr.core.sync.sync(self._zstore.get(key, prototype=default_buffer_prototype()))
        return None if value is None else value.to_bytes()

    def _consolidate(self) -> None:
        with _quiet():
            zarr.consolidate_metadata(self._zstore)

    def _delete_group(self, path: str) -> None:
        zarr.core.sync.sync(self._zstore.delete_dir(path))

    def runs(self) -> list[str]:
        """Paths of all committed runs, sorted."""
        root = self._root()
        out = []
        with _quiet():
            for path, node in root.members(max_depth=None):
                if isinstance(node, zarr.Group) and "schema_version" in node.attrs:
                    out.append(path)
        return sorted(out)

    def _is_run(self, run: str) -> bool:
        """Whether ``run`` is a committed run (one read of its group metadata)."""
        raw = zarr.core.sync.sync(
            self._zstore.get(f"{run}/zarr.json", prototype=default_buffer_prototype())
        )
        if raw is None:
            return False
        try:
            meta = json.loads(raw.to_bytes())
        except ValueError:
            return False
        return meta.get("node_type") == "group" and "schema_version" in meta.get("attributes", {})

    def _linked(self, run: str) -> dict[str, Any] | None:
        """The ``results_of`` attribute of a results-only group (None when there is none)."""
        raw = self._raw(f"{run}/zarr.json")
        if raw is None:
            return None
        try:
            attrs = json.loads(raw).get("attributes", {})
        except ValueError:
            return None
        linked = _attrs.value(attrs, schema.RESULTS_OF)
        return dict(linked) if isinstance(linked, dict) else None

    def linked_runs(self) -> dict[str, dict[str, Any]]:
        """Results-only groups (made by :meth:`link_run`): run path -> where its counts live."""
        root = self._root()
        out: dict[str, dict[str, Any]] = {}
        with _quiet():
            for path, node in root.members(max_depth=None):
                linked = (
                    _attrs.value(node.attrs, schema.RESULTS_OF)
                    if isinstance(node, zarr.Group)
                    else None
                )
                if isinstance(linked, dict):
                    out[path] = dict(linked)
        return dict(sorted(out.items()))

    def link_run(self, run: str, source: ActivationStore) -> str:
        """Make ``run`` of this store hold the results of ``run`` of ``source`` (counts stay there).

        This is how a read-only store (a shared zip, a read-only folder or bucket) is analysed:
        the results are saved here, under a results-only group that names the source store and
        the run's identity (model, corpus hash, creation time). Linking again to the same run is a
        no-op; a group linked to another run, or a run with counts of its own, is refused.
        """
        self._require_writable()
        run = source._check_run(run)
        attrs = source.run_metadata(run).to_attrs()
        counts = source.open_run(run, allow_incomplete=True)  # only its shape and totals
        # what tells this run from another of the same name: its counts' shape, languages and
        # token totals, with its model, corpus and creation time (made in the same second by the
        # same code, two runs still differ in their totals)
        shape = {
            "languages": [str(x) for x in counts[schema.LANGUAGE].values],
            "layers": int(counts.sizes[schema.LAYER]),
            "neurons": int(counts.sizes[schema.NEURON]),
            "n_tokens": np.asarray(counts["n_tokens"].values).tolist(),
        }
        digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
        identity = {
            "store": source.url,
            "run": run,
            "model": attrs.get("model", ""),
            "corpus_hash": attrs.get("corpus_hash", ""),
            "created": attrs.get("created", ""),
            "counts_sha256": digest,
        }
        with self._lock():
            if self._is_run(run):
                if self.url == source.url:
                    return run
                raise RunExistsError(
                    f"store {self.url!r} has a run {run!r} with counts of its own; save the "
                    f"results of {source.url!r} in another --results-store"
                )
            linked = self._linked(run)
            if linked is not None:
                keys = ("model", "corpus_hash", "created", "counts_sha256")
                same = all(linked.get(k) == identity[k] for k in keys)
                if not same:
                    raise RunExistsError(
                        f"{self.url!r} holds results of another run {run!r} (from "
                        f"{linked.get('store')!r}, created {linked.get('created')!r}); choose "
                        "another --results-store"
                    )
                if linked.get("store") == identity["store"]:
                    return run
            with _quiet():
                group = self._root(consolidated=False).require_group(run)
                group.attrs.update(_attrs.encode({schema.RESULTS_OF: identity}))
            self._consolidate()
        return run

    def _check_target(self, run: str) -> str:
        """A run, or a results-only group, that results may be saved under or read from."""
        run = schema.check_name(run)
        if self._linked(run) is not None:
            return run
        return self._check_run(run)

    def _check_run(self, run: str) -> str:
        run = schema.check_name(run)
        if not self._is_run(run):
            self._check_unreadable(run)
            known = ", ".join(self.runs()) or "none"
            raise RunNotFoundError(
                f"run {run!r} is not in store {self.url!r} (runs: {known}); "
                "list them with `langneurons info STORE`"
            )
        return run

    def _check_unreadable(self, run: str) -> None:
        """Raise the reason ``run``, which is not a readable run, still looks like one."""
        if self._raw(f"{run}/zarr.json") is None:
            cons = _metadata.consolidated(self._raw) or {}
            if run in cons or self._has_keys(run):
                raise _integrity.damage_error_line(f"run {run!r} has no zarr.json")
        elif run in self.unreadable_groups():
            raise RunNotFoundError(
                f"{_unreadable(run)}; list the runs with `langneurons info STORE`"
            )

    def unreadable_groups(self) -> list[str]:
        """Groups that hold a run's count arrays but no ``schema_version`` attribute, sorted."""
        cons = _metadata.consolidated(self._raw) or {}
        out = set()
        for key, meta in cons.items():
            parent, _, name = key.rpartition("/")
            if name not in ("n_active", "n_tokens") or not isinstance(meta, dict):
                continue
            hidden = any(p.startswith(".") or p in schema.RESERVED_NAMES for p in parent.split("/"))
            group = cons.get(parent)
            creating = f"{parent}/{schema.JOURNAL}" in cons  # an interrupted create: named apart
            if parent and not hidden and not creating and isinstance(group, dict):
                if "schema_version" not in (group.get("attributes") or {}):
                    out.add(parent)
        return sorted(out)

    # ------------------------------------------------------------------ reading
    def run_metadata(self, run: str) -> schema.RunMetadata:
        """The provenance attributes of a run."""
        run = self._check_run(run)
        attrs = dict(_grp(self._root(), run).attrs)
        return schema.RunMetadata.from_attrs(attrs, where=f"run {run!r}")

    def open_run(
        self, run: str, *, chunks: Any = None, allow_incomplete: bool = False
    ) -> xr.Dataset:
        """Open a run as a lazy :class:`xarray.Dataset` (arrays are read when used).

        The Dataset is pinned to the run's state when opened: a chunk read after a writer has
        committed to the run (or while one is writing) raises RunChangedError, and a missing or
        damaged chunk raises CorruptStoreError naming the array and the chunk.

        Parameters
        ----------
        run
            Run path, e.g. ``"mistral-7b/base"``.
        chunks
            Passed to :func:`xarray.open_zarr`: ``None`` reads lazily without dask (analyses
            stream such arrays chunk by chunk), ``{}`` gives dask arrays of the store's chunks.
        allow_incomplete
            Open a run whose extraction has not committed every planned unit (otherwise
            IncompleteRunError, naming a missing unit and how to complete the run).
        """
        run = self._check_run(run)
        with self._lock(exclusive=False):
            if self._exists(f"{run}/{schema.JOURNAL}/zarr.json"):
                raise InterruptedWriteError(
                    f"run {run!r} holds an interrupted write; run `langneurons repair "
                    f"{self.url}` to roll it back"
                )
            damaged = self._metadata_damage(run)
            if damaged:
                raise _integrity.damage_error_line(damaged[0], len(damaged))
            pinned = _integrity.CheckedStore(
                self._zstore, pins={run: self._raw(f"{run}/zarr.json") or b""}, runs=[run]
            )
            with _quiet():
                ds = xr.open_zarr(
                    pinned, group=run, consolidated=True, chunks=chunks, zarr_format=3
                )
            schema.RunMetadata.from_attrs(ds.attrs, where=f"run {run!r}")
            if not allow_incomplete:
                _plan.check_complete(run, ds.attrs)
            ds = _described(_unicode_labels(ds))
            # nested attributes as JSON text, as stored (older runs stored them nested): every
            # attribute is then a string or a number, and ds.to_netcdf() can carry them
            ds.attrs = _attrs.encode(ds.attrs)
        return ds

    def languages(self, run: str) -> list[str]:
        """Language labels of a run, in store order."""
        run = self._check_run(run)
        return _labels(_grp(self._root(checked=True), run), schema.LANGUAGE)

    # ------------------------------------------------------------------ writing
    def create_run(
        self,
        run: str,
        *,
        n_layers: int,
        n_neurons: int,
        metadata: schema.RunMetadata | None = None,
        moments: bool = False,
        sequences: bool = False,
        seq_dtype: str = "uint16",
        counts: Counts | None = None,
        languages: Sequence[str] | None = None,
        sequence_labels: tuple[Sequence[str], Sequence[str]] | None = None,
        planned_units: Sequence[str] | None = None,
    ) -> str:
        """Create a run, optionally writing its first counts in the same atomic step.

        Parameters
        ----------
        languages
            Language rows to create up front, with zero counts, in this order. Writers that
            later merge into them cannot change the order, so concurrent writers of different
            languages give the same store as one writer.
        sequence_labels
            ``(seq_language, seq_id)`` of sequence slots to create up front (needs
            ``sequences=True``); counts then name their slots with ``Counts.seq_index``.
        planned_units
            Unit keys (``provenance={"unit": KEY}`` of later writes) that make the run complete,
            recorded as the ``planned_units`` attribute: until each is committed the run is
            incomplete and :meth:`open_run` refuses it. None (the default): complete as written.
        """
        self._require_writable()
        run = schema.check_name(run)
        if planned_units is not None:
            planned_units = [str(u) for u in planned_units]
            if len(set(planned_units)) != len(planned_units):
                raise StoreValidationError("planned_units holds a unit key twice; each unit once")
        if n_layers < 1 or n_neurons < 1:
            raise StoreValidationError(
                f"a run needs at least one layer and one neuron (got {n_layers} x {n_neurons})"
            )
        if seq_dtype not in schema.SEQ_DTYPES:
            raise StoreValidationError(
                f"seq_dtype {seq_dtype!r} is not allowed; use one of {', '.join(schema.SEQ_DTYPES)}"
            )
        if languages is not None:
            languages = [schema.check_language(x) for x in languages]
            if len(set(languages)) != len(languages):
                raise StoreValidationError(f"duplicate language in {languages}; each language once")
        if sequence_labels is not None:
            if not sequences:
                raise StoreValidationError("sequence_labels need sequences=True")
            seq_language, seq_id = (list(map(str, x)) for x in sequence_labels)
            if len(seq_language) != len(seq_id):
                raise StoreValidationError(
                    "sequence_labels: seq_language and seq_id differ in length"
                )
            unknown = sorted(set(seq_language) - set(languages or []))
            if unknown:
                raise StoreValidationError(
                    f"sequence_labels name language {unknown[0]!r}, which is not in languages"
                )
            sequence_labels = (seq_language, seq_id)
        meta = metadata or schema.RunMetadata()
        with self._lock():
            self._recover_all()
            existing = self.runs()
            if run in existing:
                raise RunExistsError(
                    f"run {run!r} already exists in {self.url!r}; choose another --run or add "
                    "languages to it"
                )
            for other in existing:
                if other.startswith(run + "/") or run.startswith(other + "/"):
                    raise InvalidNameError(
                        f"run {run!r} would nest with existing run {other!r}; runs cannot contain "
                        "runs"
                    )
            if self._has_keys(run):
                # leftovers of a create that was rolled back while being deleted
                log.warning("removing the remains of an unfinished run at %s", run)
                self._delete_group(run)
            with _quiet():
                root = self._root(consolidated=False)
                group = root.require_group(run)
                group.create_group(schema.JOURNAL, attributes={"op": "create", "state": "armed"})
            try:
                self._create_arrays(group, n_layers, n_neurons, moments, sequences, seq_dtype)
                self._preallocate(group, languages, sequence_labels)
                attrs = meta.to_attrs()
                if planned_units is not None:
                    attrs[_plan.PLANNED_UNITS] = planned_units
                if counts is not None:
                    self._apply(run, group, counts, merge=False)
                    attrs["writes"] = [_write_record("created", counts, attrs["provenance"])]
                group.attrs.update(_attrs.encode(attrs))
            except BaseException:
                self._recover(run)
                raise
            self._commit_journal(run)
            self._consolidate()
        log.info("created run %s (%d x %d)", run, n_layers, n_neurons)
        return run

    def _create_arrays(
        self,
        group: zarr.Group,
        n_layers: int,
        n_neurons: int,
        moments: bool,
        sequences: bool,
        seq_dtype: str,
    ) -> None:
        lc = schema.layer_chunk(n_layers, n_neurons)
        codec = _integrity.numeric_codecs()
        text = _integrity.string_codecs()
        with _quiet():
            group.create_array(
                schema.LANGUAGE,
                shape=(0,),
                chunks=(64,),
                dtype=str,
                dimension_names=[schema.LANGUAGE],
                compressors=text,
            )
            role = group.create_array(
                schema.ROLE,
                shape=(2,),
                chunks=(2,),
                dtype=str,
                dimension_names=[schema.ROLE],
                compressors=text,
            )
            role[:] = np.array(schema.ROLES)
            for dim, size in ((schema.LAYER, n_layers), (schema.NEURON, n_neurons)):
                arr = group.create_array(
                    dim,
                    shape=(size,),
                    chunks=(size,),
                    dtype="int64",
                    dimension_names=[dim],
                    compressors=codec,
                )
                arr[:] = np.arange(size, dtype=np.int64)
            names = ["n_active"] + (list(schema.MOMENTS) if moments else [])
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
                "n_tokens",
                shape=(0, 2),
                chunks=(1, 2),
                dtype="int64",
                fill_value=0,
                dimension_names=[schema.LANGUAGE, schema.ROLE],
                compressors=codec,
            )
            if sequences:
                slc = schema.layer_chunk(n_layers, n_neurons, np.dtype(seq_dtype).itemsize)
                coords: dict[str, Any] = {"coordinates": " ".join(schema.SEQ_COORDS)}
                group.create_array(
                    "seq_n_active",
                    shape=(0, 2, n_layers, n_neurons),
                    chunks=(8, 1, slc, n_neurons),
                    dtype=seq_dtype,
                    fill_value=0,
                    compressors=codec,
                    dimension_names=list(schema.SEQ_DIMS),
                    attributes=coords,
                )
                group.create_array(
                    "seq_n_tokens",
                    shape=(0, 2),
                    chunks=(1024, 2),
                    dtype="int64",
                    fill_value=0,
                    dimension_names=[schema.SEQUENCE, schema.ROLE],
                    attributes=coords,
                    compressors=codec,
                )
                for name in schema.SEQ_COORDS:
                    group.create_array(
                        name,
                        shape=(0,),
                        chunks=(1024,),
                        dtype=str,
                        dimension_names=[schema.SEQUENCE],
                        compressors=text,
                    )
            for name, arr in group.arrays():
                arr.attrs.update(schema.VARIABLE_ATTRS.get(name, {}))

    def _preallocate(
        self,
        group: zarr.Group,
        languages: Sequence[str] | None,
        sequence_labels: tuple[Sequence[str], Sequence[str]] | None,
    ) -> None:
        """Zero-count language rows and sequence slots, every chunk written (schema 2)."""
        if languages:
            for name in ("n_active", "n_tokens", *schema.MOMENTS):
                if name in group:
                    arr = _arr(group, name)
                    arr.resize((len(languages), *arr.shape[1:]))
                    _fill_zeros(arr)
            labels = _arr(group, schema.LANGUAGE)
            labels.resize((len(languages),))
            labels[:] = np.array(list(languages), dtype=object).astype(str)
        if sequence_labels:
            n = len(sequence_labels[0])
            for name in schema.SEQUENCES:
                arr = _arr(group, name)
                arr.resize((n, *arr.shape[1:]))
                if name not in schema.SEQ_COORDS:
                    _fill_zeros(arr)
            for name, values in zip(schema.SEQ_COORDS, sequence_labels, strict=True):
                _arr(group, name)[:] = np.array(list(values), dtype=object).astype(str)

    def add_languages(
        self, run: str, counts: Counts, *, provenance: Mapping[str, Any] | None = None
    ) -> None:
        """Append new languages to a run; a language already there is an error.

        ``provenance`` (e.g. the source files) is recorded in the run's ``writes`` attribute.
        """
        self._write(run, counts, merge=False, provenance=provenance)

    def merge_counts(
        self, run: str, counts: Counts, *, provenance: Mapping[str, Any] | None = None
    ) -> None:
        """Add counts to a run: existing languages are summed, new ones appended.

        Shards of one language, extracted separately, merge this way (counts are additive).
        """
        self._write(run, counts, merge=True, provenance=provenance)

    def _write(
        self, run: str, counts: Counts, *, merge: bool, provenance: Mapping[str, Any] | None
    ) -> None:
        self._require_writable()
        run = schema.check_name(run)
        with self._lock():
            self._recover(run)
            run = self._check_run(run)
            group = _cached(self._group(run))
            unit = (provenance or {}).get("unit")
            if unit is not None and unit in self._units(group):
                raise AlreadyWrittenError(
                    f"unit {unit!r} is already committed to run {run!r}; nothing was written"
                )
            # what the write reads back (labels, the rows it adds to) is read checked
            undo = self._journal_for(
                run, group, _cached(self._group(run, checked=True)), counts, merge
            )
            try:
                self._apply(run, group, counts, merge=merge, undo=undo)
                writes = list(_attrs.value(group.attrs, "writes", []))
                action = "merged" if merge else "added"
                _log_write(writes, _write_record(action, counts, provenance or {}))
                group.attrs.update(_attrs.encode({"updated": schema.now_iso(), "writes": writes}))
            except BaseException:
                self._recover(run)
                raise
            self._commit_journal(run)
            self._consolidate()

    @staticmethod
    def _units(group: zarr.Group) -> set[str]:
        return units_of(_attrs.value(group.attrs, "writes", []))

    def committed_units(self, run: str) -> set[str]:
        """Unit keys (``provenance={"unit": ...}``) of every write committed to a run.

        A write that was interrupted is not committed: its unit is not counted even when it
        had already been recorded in the run's attributes (the journal holds the attributes
        as they were before it).
        """
        run = self._check_run(run)
        with self._lock(exclusive=False):
            if self._exists(f"{run}/{schema.JOURNAL}/zarr.json"):
                with _quiet():
                    journal = zarr.open_group(
                        self._zstore, path=f"{run}/{schema.JOURNAL}", mode="r"
                    )
                before = journal.attrs.get("attrs")
                if journal.attrs.get("op") == "create" or not isinstance(before, dict):
                    return set()
                return units_of(_attrs.value(before, "writes", []))
            return self._units(self._group(run))

    def _plan(
        self, run: str, group: zarr.Group, counts: Counts, merge: bool
    ) -> tuple[list[str], dict[str, int]]:
        """Check counts against the run; return current languages and existing indices."""
        current = _labels(group, schema.LANGUAGE)
        layers, neurons = _arr(group, "n_active").shape[2:]
        if counts.shape != (layers, neurons):
            raise StoreValidationError(
                f"counts have {counts.shape[0]} layers x {counts.shape[1]} neurons but run {run!r} "
                f"has {layers} x {neurons}; write them to a run of the same model"
            )
        has_moments = "act_sum" in group
        if counts.has_moments != has_moments:
            want = "needs" if has_moments else "has no"
            raise StoreValidationError(
                f"run {run!r} {want} act_sum/act_sqsum; write counts with the same optional arrays"
            )
        has_seq = "seq_n_active" in group
        if counts.has_sequences != has_seq:
            want = "needs" if has_seq else "has no"
            raise StoreValidationError(
                f"run {run!r} {want} per-sequence counts; write counts with the same optional "
                "arrays"
            )
        existing = {x: current.index(x) for x in counts.languages if x in current}
        if existing and not merge:
            first = next(iter(existing))
            raise StoreValidationError(
                f"language {first!r} is already in run {run!r}; merge shards with merge_counts "
                "(CLI: --merge) or choose another run"
            )
        # token totals (and the sums analyses take of them) must still fit in int64 afterwards
        after = _read(group, "n_tokens").astype(object)  # Python ints: exact sums
        added = []
        for j, lang in enumerate(counts.languages):
            if lang in existing:
                after[existing[lang]] += counts.n_tokens[j].astype(object)
            else:
                added.append(counts.n_tokens[j].astype(object))
        after = np.concatenate([after.reshape(-1, 2), np.array(added, dtype=object).reshape(-1, 2)])
        labels = [*current, *(x for x in counts.languages if x not in existing)]
        check_token_total(after, labels, f"run {run!r}: this write would make n_tokens add up to")
        if has_seq and counts.seq_index is not None:
            index = np.asarray(counts.seq_index, dtype=np.intp)
            n_seq = _arr(group, "seq_n_active").shape[0]
            if index.max(initial=-1) >= n_seq:
                raise StoreValidationError(
                    f"seq_index {int(index.max())} is beyond the run's {n_seq} sequence slots"
                )
            for name, mine in (("seq_language", counts.seq_language), ("seq_id", counts.seq_id)):
                stored = [str(x) for x in np.asarray(_arr(group, name).oindex[index])]
                if stored != [str(x) for x in mine or []]:
                    raise StoreValidationError(
                        f"{name} of the counts does not match the run's slots at seq_index; "
                        "write each sequence into its own slot"
                    )
            old = np.asarray(_arr(group, "seq_n_active").oindex[index], dtype=np.int64)
            biggest = int((old + np.asarray(counts.seq_n_active)).max(initial=0))
            seq_dtype = _arr(group, "seq_n_active").dtype
            if biggest > np.iinfo(seq_dtype).max:
                raise StoreValidationError(
                    f"per-sequence count {biggest} overflows the run's {seq_dtype}; create the run "
                    "with a wider seq_dtype (e.g. 'uint32')"
                )
        elif has_seq:
            seq_dtype = _arr(group, "seq_n_active").dtype
            biggest = int(np.asarray(counts.seq_n_active).max(initial=0))
            if biggest > np.iinfo(seq_dtype).max:
                raise StoreValidationError(
                    f"per-sequence count {biggest} overflows the run's {seq_dtype}; create the run "
                    "with a wider seq_dtype (e.g. 'uint32')"
                )
        return current, existing

    def _journal_for(
        self, run: str, group: zarr.Group, checked: zarr.Group, counts: Counts, merge: bool
    ) -> dict[str, Any]:
        current, existing = self._plan(run, checked, counts, merge)
        n_seq = _arr(group, "seq_n_active").shape[0] if "seq_n_active" in group else 0
        state: dict[str, Any] = {
            "op": "write",
            "state": "armed",
            "languages": len(current),
            "sequences": int(n_seq),
            "attrs": dict(group.attrs),
            "merged": sorted(existing.values()),
        }
        undo: dict[str, np.ndarray] = {}
        if existing:
            index = np.array(sorted(existing.values()), dtype=np.intp)
            for name in ("n_active", "n_tokens", *schema.MOMENTS):
                if name in group:
                    undo[name] = np.asarray(_arr(checked, name).oindex[index])
        if counts.seq_index is not None and "seq_n_active" in group:
            index = np.asarray(counts.seq_index, dtype=np.intp)
            for name in ("seq_n_active", "seq_n_tokens"):
                undo[name] = np.asarray(_arr(checked, name).oindex[index])
            state["seq_index"] = [int(i) for i in index]
        # the undo data goes first; the group marker, written last, arms the journal
        if self._has_keys(f"{run}/{schema.JOURNAL}"):
            self._delete_group(f"{run}/{schema.JOURNAL}")
        blob = io.BytesIO()
        savez: Any = np.savez  # numpy's stubs do not type **arrays
        savez(blob, **undo)
        buffer = default_buffer_prototype().buffer.from_bytes(blob.getvalue())
        zarr.core.sync.sync(self._zstore.set(f"{run}/{schema.JOURNAL}/{_UNDO}", buffer))
        with _quiet():
            group.create_group(schema.JOURNAL, attributes=state)
        return {"current": current, "existing": existing, "old": undo}

    def _apply(
        self,
        run: str,
        group: zarr.Group,
        counts: Counts,
        *,
        merge: bool,
        undo: dict[str, Any] | None = None,
    ) -> None:
        if undo is None:
            current, existing = self._plan(run, group, counts, merge)
        else:
            current, existing = undo["current"], undo["existing"]
        new = [x for x in counts.languages if x not in existing]
        k0 = len(current)
        k1 = k0 + len(new)
        names = ["n_active", "n_tokens"] + (list(schema.MOMENTS) if counts.has_moments else [])
        for name in names:
            arr = _arr(group, name)
            data = getattr(counts, name)
            if new:
                arr.resize((k1, *arr.shape[1:]))
            rows = sorted(existing.values())
            for lang, i in existing.items():
                j = counts.languages.index(lang)
                old = undo["old"][name][rows.index(i)] if undo is not None else arr[i]
                arr[i] = old + data[j]
            for offset, lang in enumerate(new):
                arr[k0 + offset] = data[counts.languages.index(lang)]
        if new:
            labels = _arr(group, schema.LANGUAGE)
            labels.resize((k1,))
            labels[k0:k1] = np.array(new, dtype=object).astype(str)
        if counts.has_sequences and counts.seq_index is not None:
            index = np.asarray(counts.seq_index, dtype=np.intp)
            for name in ("seq_n_active", "seq_n_tokens"):
                arr = _arr(group, name)
                old = np.asarray(arr.oindex[index], dtype=np.int64)
                arr.oindex[index] = (old + np.asarray(getattr(counts, name))).astype(arr.dtype)
        elif counts.has_sequences:
            s0 = _arr(group, "seq_n_active").shape[0]
            s1 = s0 + len(counts.seq_language or [])
            if s1 > s0:
                for name in schema.SEQUENCES:
                    arr = _arr(group, name)
                    arr.resize((s1, *arr.shape[1:]))
                    value = getattr(counts, name)
                    if name in schema.SEQ_COORDS:
                        value = np.array(value, dtype=object).astype(str)
                    else:
                        value = np.asarray(value).astype(arr.dtype)
                    arr[s0:s1] = value

    # ------------------------------------------------------------------ recovery
    def _interrupted_runs(self) -> list[str]:
        """Run paths holding an armed journal (a write that never finished)."""
        suffix = "/" + schema.JOURNAL
        with _quiet():
            root = self._root(consolidated=False)
            return [
                path[: -len(suffix)]
                for path, node in root.members(max_depth=None)
                if isinstance(node, zarr.Group) and path.endswith(suffix)
            ]

    def _recover_all(self) -> list[str]:
        """Roll back every armed journal and remove the leftovers of disarmed ones."""
        rolled = self._interrupted_runs()
        for run in rolled:
            self._recover(run)
        for run in self.runs():
            if run not in rolled and self._has_keys(f"{run}/{schema.JOURNAL}"):
                self._recover(run)  # a writer killed after its commit: only cleans up
        return rolled

    def _commit_journal(self, run: str) -> None:
        """Delete the journal: its group marker first (the commit point), then the rest."""
        zarr.core.sync.sync(self._zstore.delete(f"{run}/{schema.JOURNAL}/zarr.json"))
        self._delete_group(f"{run}/{schema.JOURNAL}")

    def _has_keys(self, prefix: str) -> bool:
        async def _any() -> bool:
            async for _ in self._zstore.list_prefix(prefix.rstrip("/") + "/"):
                return True
            return False

        return bool(zarr.core.sync.sync(_any()))

    def _recover(self, run: str) -> bool:
        """Roll back an interrupted write of ``run`` (caller holds the lock).

        Returns True when a write was rolled back. Leftovers of a journal whose marker is gone
        (a writer killed while deleting it after its commit) are only cleaned up.
        """
        if not self._exists(f"{run}/{schema.JOURNAL}/zarr.json"):
            if self._has_keys(f"{run}/{schema.JOURNAL}"):
                self._delete_group(f"{run}/{schema.JOURNAL}")
                self._consolidate()
            return False
        with _quiet():
            journal = zarr.open_group(self._zstore, path=f"{run}/{schema.JOURNAL}", mode="r+")
        state: dict[str, Any] = dict(journal.attrs)
        undo: dict[str, np.ndarray] = {}
        raw = zarr.core.sync.sync(
            self._zstore.get(
                f"{run}/{schema.JOURNAL}/{_UNDO}", prototype=default_buffer_prototype()
            )
        )
        if raw is not None:
            with np.load(io.BytesIO(raw.to_bytes())) as saved:
                undo = {name: saved[name] for name in saved.files}
        log.warning("rolling back an interrupted %s of run %s", state.get("op"), run)
        if state.get("op") == "create":
            self._delete_group(run)
        elif state.get("state") == "armed":
            group = self._group(run)
            merged = np.array(state["merged"], dtype=np.intp)
            k0, s0 = int(state["languages"]), int(state["sequences"])
            for name in ("n_active", "n_tokens", *schema.MOMENTS):
                if name in group:
                    if merged.size:
                        _arr(group, name).oindex[merged] = undo[name]
                    arr = _arr(group, name)
                    arr.resize((k0, *arr.shape[1:]))
            _arr(group, schema.LANGUAGE).resize((k0,))
            if "seq_index" in state:
                index = np.array(state["seq_index"], dtype=np.intp)
                for name in ("seq_n_active", "seq_n_tokens"):
                    _arr(group, name).oindex[index] = undo[name]
            if "seq_n_active" in group:
                for name in schema.SEQUENCES:
                    arr = _arr(group, name)
                    arr.resize((s0, *arr.shape[1:]))
            group.attrs.put(dict(state["attrs"]))
            self._commit_journal(run)
        else:
            self._commit_journal(run)
        self._consolidate()
        return True

    def repair(self) -> list[str]:
        """Roll back every interrupted write; returns the runs that were repaired.

        Leftovers of killed writes are removed too; :meth:`repair_report` also says which.
        """
        return list(self.repair_report().rolled_back)

    def repair_report(self) -> Repaired:
        """Roll back every interrupted write and remove every leftover of a killed one.

        Leftovers are the hidden ``.NAME.tmp`` groups of killed result saves and any folder
        under a group that is no Zarr node (no ``zarr.json``) and holds only Zarr's files: the
        remains of a killed delete or write. A folder holding other files is left alone.
        """
        self._require_writable()
        with self._lock():
            rolled = self._recover_all()
            ours, foreign = zarr.core.sync.sync(_leftovers.orphans(self._zstore))
            found = sorted({*self._unfinished_results(), *ours})
            removed = [p for p in found if not any(p.startswith(q + "/") for q in found)]
            for leftover in removed:
                log.warning("removing %s, left by a write that was killed", leftover)
                self._delete_group(leftover)
            for path in foreign:
                log.warning("leaving %s: no Zarr node, but it holds files of others", path)
            self._consolidate()
        return Repaired(tuple(rolled), tuple(removed))

    def _unfinished_results(self) -> list[str]:
        """Hidden ``.NAME.tmp`` groups a killed ``save_result`` left behind."""

        async def _keys(prefix: str) -> list[str]:
            return [k async for k in self._zstore.list_prefix(prefix)]

        out = set()
        for run in [*self.runs(), *self.linked_runs()]:
            for kind in schema.RESULT_GROUPS:
                for key in zarr.core.sync.sync(_keys(f"{run}/{kind}/")):
                    parts = key.split("/")
                    for i, part in enumerate(parts):
                        if part.startswith(".") and part.endswith(".tmp"):
                            out.add("/".join(parts[: i + 1]))
                            break
        return sorted(out)

    def delete_run(self, run: str) -> None:
        """Remove a run and everything saved under it."""
        self._require_writable()
        with self._lock():
            run = self._check_run(run)
            self._delete_group(run)
            self._consolidate()

    # ------------------------------------------------------------------ results
    def save_result(self, run: str, kind: str, name: str, result: xr.Dataset) -> str:
        """Save an analysis result Dataset at ``RUN/KIND/NAME``, replacing one of that name.

        The result is written to a fresh group and only then swapped in, so a reader sees the old
        result or the new one, never a partial write. A name that would contain another result
        (``lape`` when ``lape/sub`` exists) or nest inside one (``lape/sub`` when ``lape``
        exists) is refused, since saving it would delete or hide the other; results that share a
        folder (``vs-base/types``, ``vs-base/overlap``) are fine.
        """
        return self._save_result(run, kind, name, result, nest_check=True)

    def _save_result(
        self, run: str, kind: str, name: str, result: xr.Dataset, *, nest_check: bool
    ) -> str:
        """:meth:`save_result`; ``nest_check=False`` copies results that already nest (migrate)."""
        self._require_writable()
        if kind not in schema.RESULT_GROUPS:
            raise InvalidNameError(f"result kind {kind!r} is not one of {schema.RESULT_GROUPS}")
        name = schema.check_name(name, "result")
        data = _vlen_strings(result.drop_encoding()).assign_attrs(
            result_kind=kind,
            result_name=name,
            result_saved=schema.now_iso(),
            result_token=uuid.uuid4().hex,  # each save is distinct, for readers' pins
        )
        encoding = {
            n: {
                "compressors": _integrity.string_codecs()
                if var.dtype.kind in "OUT"
                else _integrity.numeric_codecs()
            }
            for n, var in data.variables.items()
        }
        with self._lock():
            run = self._check_target(run)
            if nest_check:
                self._check_nesting(run, kind, name)
            path = f"{run}/{kind}/{name}"
            parent, leaf = path.rsplit("/", 1)
            tmp = f"{parent}/.{leaf}.tmp"
            old = f"{parent}/.{leaf}~old.tmp"  # '~' is in no name: never another result's
            self._delete_group(tmp)
            self._delete_group(old)
            with _quiet():
                root = self._root(consolidated=False)
                root.require_group(parent)
                data.to_zarr(
                    self._zstore,
                    group=tmp,
                    mode="w",
                    zarr_format=3,
                    consolidated=False,
                    encoding=encoding,
                    write_empty_chunks=True,
                )
                if self._path is not None and (self._path / path).is_dir():
                    os.replace(self._path / path, self._path / old)  # never half deleted
                else:
                    self._delete_group(path)
                self._move(tmp, path)
            self._consolidate()
            self._delete_group(old)
        return path

    def _check_nesting(self, run: str, kind: str, name: str) -> None:
        """Refuse a result name that would contain, or nest inside, another saved result."""
        for other in self.results(run, kind):
            if other.startswith(name + "/"):
                raise InvalidNameError(
                    f"{kind} result {name!r} would contain the existing result {other!r} of run "
                    f"{run!r}; choose another --name"
                )
            if name.startswith(other + "/"):
                raise InvalidNameError(
                    f"{kind} result {name!r} would nest inside the existing result {other!r} of "
                    f"run {run!r}; choose another --name"
                )

    def _move(self, src: str, dst: str) -> None:
        if self._path is not None:
            os.replace(self._path / src, self._path / dst)
            return

        async def _copy() -> None:
            store = self._zstore
            proto = default_buffer_prototype()
            async for key in store.list_prefix(src + "/"):
                buf = await store.get(key, prototype=proto)
                if buf is not None:
                    await store.set(dst + key[len(src) :], buf)
            await store.delete_dir(src)

        zarr.core.sync.sync(_copy())

    def results(self, run: str, kind: str) -> list[str]:
        """Names of results of one kind saved under a run (or a results-only group)."""
        run = self._check_target(run)
        root = self._root(consolidated=False)  # the files, not a summary a crash left stale
        if f"{run}/{kind}" not in root:
            return []
        group = _grp(root, f"{run}/{kind}")
        names = []
        with _quiet():
            for path, node in group.members(max_depth=None):
                hidden = any(part.startswith(".") for part in path.split("/"))
                if isinstance(node, zarr.Group) and not hidden and any(node.arrays()):
                    names.append(path)
        return sorted(names)

    def open_result(self, run: str, kind: str, name: str) -> xr.Dataset:
        """Open a saved result."""
        run = self._check_target(run)
        if name not in self.results(run, kind):
            raise RunNotFoundError(
                f"no {kind} result {name!r} under run {run!r} (have: "
                f"{', '.join(self.results(run, kind)) or 'none'})"
            )
        path = f"{run}/{kind}/{name}"
        with self._lock(exclusive=False):
            pinned = _integrity.CheckedStore(
                self._zstore, pins={path: self._raw(f"{path}/zarr.json") or b""}
            )
            with _quiet():
                ds = xr.open_zarr(pinned, group=path, consolidated=False)
            return _unicode_labels(ds)

    # ------------------------------------------------------------------ checks
    def validate(self, run: str | None = None) -> list[str]:
        """Check runs against the schema; return the problems found (empty when valid)."""
        return [problem for _, problem in self._problems(run)]

    def notes(self, run: str | None = None) -> list[str]:
        """What ``validate`` reports without failing: runs whose extraction is incomplete."""
        runs = [self._check_run(run)] if run is not None else self.runs()
        root = self._root()
        out = []
        for name in runs:
            incomplete = _plan.incompleteness(_grp(root, name).attrs)
            if incomplete is not None:
                out.append(f"run {name!r}: {incomplete}")
        return out

    def _problems(self, run: str | None = None) -> list[tuple[bool, str]]:
        """``validate``'s problems, each with whether it is damage (a missing or bad chunk)."""
        runs = [self._check_run(run)] if run is not None else self.runs()
        problems = [
            (
                False,
                f"run {path!r}: interrupted write (journal present); run `langneurons repair "
                f"{self.url}`",
            )
            for path in self._interrupted_runs()
        ]
        cons = _metadata.consolidated(self._raw)
        if run is None:
            problems.extend((False, _unreadable(g)) for g in self.unreadable_groups())
        for name in runs:
            if self._raw(f"{name}/zarr.json") is None:
                problems.append((True, f"run {name!r} has no zarr.json"))
                continue
            damage = self._metadata_damage(name, cons) or self._damage(name)
            if damage:
                problems.extend((True, p) for p in damage)
                continue
            checked = self._group(name, checked=True)
            try:
                schema.RunMetadata.from_attrs(dict(checked.attrs), where=f"run {name!r}")
            except (StoreValidationError, SchemaVersionError) as exc:
                problems.append((False, str(exc)))
                continue
            with _quiet():
                problems.extend((False, f"run {name!r}: {p}") for p in _validate_run(checked))
        if run is None:  # the saved results of results-only groups carry checksums too
            for name in self.linked_runs():
                problems.extend((True, p) for p in self._damage(name))
        return problems

    def _metadata_damage(self, run: str, cons: dict[str, Any] | None = None) -> list[str]:
        """Each way the metadata of a run's arrays breaks the schema (metadata reads only)."""
        found = _metadata.problems(self._raw, run, cons)
        return [f"{_integrity.describe(f'{run}/{name}')}: {p}" for name, p in found]

    def _damage(self, run: str, *, verify: bool = True) -> list[str]:
        """Chunks of a run's arrays (results included) that are missing or fail their checksum."""
        out: list[str] = []
        with _quiet():
            members = list(self._group(run).members(max_depth=None))
        for path, node in members:
            hidden = any(p.startswith(".") or p == schema.JOURNAL for p in path.split("/"))
            if isinstance(node, zarr.Array) and not hidden:
                problems = _integrity.damaged_chunks(self._zstore, node, verify=verify)
                where = _integrity.describe(f"{run}/{path}")
                out.extend(f"{where}: {p}" for p in problems)
        return out

    def info(self) -> dict[str, Any]:
        """Runs, languages, shapes, token totals and provenance, as plain data."""
        out: dict[str, Any] = {
            "store": self.url,
            "schema_version": schema.SCHEMA_VERSION,
            "runs": {},
        }
        root = self._root(checked=True)
        for run in self.runs():
            group = _grp(root, run)
            langs = _labels(group, schema.LANGUAGE)
            tokens = _read(group, "n_tokens")
            entry: dict[str, Any] = {
                "languages": langs,
                "layers": int(_arr(group, "n_active").shape[2]),
                "neurons": int(_arr(group, "n_active").shape[3]),
                "roles": list(schema.ROLES),
                "n_tokens": {
                    lang: dict(zip(schema.ROLES, map(int, tokens[i]), strict=True))
                    for i, lang in enumerate(langs)
                },
                "optional": [n for n in (*schema.MOMENTS, *schema.SEQUENCES) if n in group],
                "attrs": _attrs.decode(dict(group.attrs)),
            }
            incomplete = _plan.incompleteness(group.attrs)
            if incomplete is not None:
                entry["incomplete"] = incomplete
            if "seq_n_active" in group:
                entry["sequences"] = int(_arr(group, "seq_n_active").shape[0])
            for kind in schema.RESULT_GROUPS:
                names = self.results(run, kind)
                if names:
                    entry.setdefault("results", {})[kind] = names
            out["runs"][run] = entry
        unreadable = [_unreadable(g) for g in self.unreadable_groups()]
        if unreadable:
            out["unreadable"] = unreadable
        for run, linked in self.linked_runs().items():
            results = {kind: self.results(run, kind) for kind in schema.RESULT_GROUPS}
            out.setdefault("results_only", {})[run] = {
                "results_of": linked,
                "results": {kind: names for kind, names in results.items() if names},
            }
        return out

    # ------------------------------------------------------------------ sharing
    def export_zip(self, dest: str | os.PathLike[str]) -> Path:
        """Write the whole store to one zip file (xarray reads it through zarr's ``ZipStore``).

        The zip is assembled next to ``dest`` and renamed into place, so a failed export leaves
        nothing behind.
        """
        dest = Path(dest)
        if dest.suffix != ".zip":
            raise InvalidNameError(f"export target {str(dest)!r} must end in .zip")
        with self._lock(exclusive=False):
            if self._interrupted_runs():
                raise InterruptedWriteError(
                    f"store {self.url!r} holds an interrupted write; run `langneurons repair "
                    f"{self.url}` before exporting"
                )
            self._check_valid("export")
            dest.parent.mkdir(parents=True, exist_ok=True)
            _leftovers.clean_next_to(dest, "export")
            fd, tmp = tempfile.mkstemp(
                prefix=_leftovers.tmp_prefix(dest, "export"), suffix=".tmp", dir=dest.parent
            )
            os.close(fd)
            try:
                keys = self._keys()
                with (
                    zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf,
                    progress("export", total=len(keys), unit="file") as task,
                ):
                    for key, data in self._iter_items(keys):
                        zf.writestr(key, data)
                        task.update()
                apply_umask(tmp)  # mkstemp makes it private; an export is an ordinary file
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return dest

    def _check_valid(self, action: str) -> None:
        """Raise the first problem ``validate`` finds, as one line, before ``action``."""
        problems = self._problems()
        if not problems:
            return
        damage, first = problems[0]
        if damage:
            n = sum(1 for d, _ in problems if d)
            raise _integrity.damage_error_line(first, n)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreValidationError(
            f"store {self.url!r} is invalid: {first}{more}; refusing to {action} it (`langneurons "
            "validate STORE` lists every problem)"
        )

    def _keys(self) -> list[str]:
        async def _list() -> list[str]:
            return sorted([k async for k in self._zstore.list()])

        return list(zarr.core.sync.sync(_list()))

    def _iter_items(self, keys: list[str] | None = None) -> Iterator[tuple[str, bytes]]:
        proto = default_buffer_prototype()
        for key in self._keys() if keys is None else keys:
            buf = zarr.core.sync.sync(self._checked.get(key, prototype=proto))
            if buf is not None:
                yield key, buf.to_bytes()


def import_zip(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> ActivationStore:
    """Unpack a zip export into a new directory store ``dest`` (which must not exist).

    Every member must be a plain relative key of a Zarr store: absolute names, ``..``
    components, backslashes, drive letters and links are refused before anything is written
    (no zip-slip). The store is unpacked next to ``dest``, checked, and only then renamed into
    place, so a refused or failed import leaves nothing behind.
    """
    src, dest = Path(src), Path(dest)
    if dest.exists():
        raise RunExistsError(f"{str(dest)!r} already exists; give a new path for the store")
    try:
        archive = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise NotAStoreError(f"{str(src)!r} is not a zip file: {exc}") from exc
    with archive:
        members = archive.infolist()
        for info in members:
            _check_member(src, info)
        if "zarr.json" not in {m.filename for m in members}:
            raise NotAStoreError(f"{str(src)!r} holds no zarr.json; it is not a store export")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _leftovers.clean_next_to(dest, "import")
        tmp = Path(
            tempfile.mkdtemp(
                prefix=_leftovers.tmp_prefix(dest, "import"), suffix=".tmp", dir=dest.parent
            )
        )
        try:
            root = tmp.resolve()
            with progress("import zip", total=len(members), unit="file") as task:
                for info in members:
                    task.update()
                    if info.is_dir():
                        continue
                    target = (tmp / info.filename).resolve()
                    if root not in target.parents:  # belt and braces after _check_member
                        raise InvalidNameError(f"zip member {info.filename!r} escapes the store")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as fh, open(target, "wb") as out:
                        shutil.copyfileobj(fh, out)
            unpacked = open_store(tmp)
            problems = unpacked.validate()
            if problems:
                raise StoreValidationError(f"{str(src)!r} holds an invalid store: {problems[0]}")
            apply_umask(tmp)  # mkdtemp makes it private; the store is an ordinary folder
            os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return open_store(dest, mode="r+")


def _check_member(src: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    bad = (
        name.startswith("/")
        or "\\" in name
        or re.match(r"^[A-Za-z]:", name) is not None
        or any(part in ("", ".", "..") for part in name.rstrip("/").split("/"))
    )
    if bad:
        raise InvalidNameError(
            f"{str(src)!r}: member {name!r} would escape the store (absolute, '..' or drive); "
            "refusing the whole archive"
        )
    mode = (info.external_attr >> 16) & 0o170000
    if mode == 0o120000:
        raise InvalidNameError(f"{str(src)!r}: member {name!r} is a link; refusing the archive")


def _chunk_rows(arr: zarr.Array) -> Iterator[slice]:
    """Slices of ``arr`` along its first axis, one row of chunks each (bounded memory)."""
    step = arr.chunks[0]
    for start in range(0, arr.shape[0], step):
        yield slice(start, min(start + step, arr.shape[0]))


def _fill_zeros(arr: zarr.Array) -> None:
    """Write zeros to every chunk of ``arr``, one chunk row at a time."""
    for rows in _chunk_rows(arr):
        arr[rows] = np.zeros((rows.stop - rows.start, *arr.shape[1:]), dtype=arr.dtype)


def _described(ds: xr.Dataset) -> xr.Dataset:
    """Variables with their CF-style attributes (runs written before they were stored too)."""
    for name, attrs in schema.VARIABLE_ATTRS.items():
        if name in ds.variables:
            for key, value in attrs.items():
                ds[name].attrs.setdefault(key, value)
    return ds


def _unicode_labels(ds: xr.Dataset) -> xr.Dataset:
    """String coordinates and variables as numpy unicode, friendlier than StringDType for .sel."""
    for name, var in ds.variables.items():
        if var.dtype.kind == "T":
            labels = np.array([str(x) for x in np.asarray(var.values).ravel()], dtype=str)
            value = (var.dims, labels.reshape(var.shape), var.attrs)
            ds = ds.assign_coords({name: value}) if name in ds.coords else ds.assign({name: value})
    return ds


def _vlen_strings(ds: xr.Dataset) -> xr.Dataset:
    """Fixed-width unicode arrays as variable-length strings (the only string type in Zarr v3)."""
    fixed = [name for name, var in ds.variables.items() if var.dtype.kind == "U"]
    out = ds.assign({n: ds[n].astype(object) for n in fixed if n not in ds.coords})
    return out.assign_coords({n: ds[n].astype(object) for n in fixed if n in ds.coords})


def _write_record(action: str, counts: Counts, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of a run's ``writes`` attribute: what was written, when, from where."""
    return {
        "time": schema.now_iso(),
        "action": action,
        "languages": list(counts.languages),
        "sequences": len(counts.seq_language or []),
        "provenance": dict(provenance),
    }


def _log_write(writes: list[Any], record: dict[str, Any]) -> None:
    """Append a write to a run's log, folding a run of unit writes into one entry.

    Writes with ``provenance={"unit": KEY, ...}`` (extraction commits a unit at a time) that
    follow one another with the same action and other provenance become a single entry with
    ``units`` (the keys in commit order), ``first`` and ``time`` (of the first and the last),
    the union of their ``languages`` and the sum of their ``sequences``, so the log grows by
    a key, not by an entry, per unit.
    """
    provenance = dict(record["provenance"])
    unit = provenance.pop("unit", None)
    if unit is None:
        writes.append(record)
        return
    last = writes[-1] if writes else None
    if (
        isinstance(last, dict)
        and "units" in last
        and last.get("action") == record["action"]
        and last.get("provenance") == provenance
    ):
        new = [x for x in record["languages"] if x not in last["languages"]]
        writes[-1] = {  # a new dict: the log's entries may be shared with the run's metadata
            **last,
            "units": [*last["units"], unit],
            "languages": [*last["languages"], *new],
            "sequences": int(last.get("sequences", 0)) + int(record["sequences"]),
            "time": record["time"],
        }
        return
    writes.append({**record, "provenance": provenance, "first": record["time"], "units": [unit]})


# ---------------------------------------------------------------------- node helpers
class _CachedGroup:
    """A group whose children are looked up once (each lookup otherwise re-reads metadata)."""

    def __init__(self, group: zarr.Group) -> None:
        self._group = group
        with _quiet():
            self._members = dict(group.members())

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def __getitem__(self, name: str) -> Any:
        return self._members[name]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._group, attr)


def _cached(group: zarr.Group) -> zarr.Group:
    """``group`` with its children cached, for the many lookups of one write."""
    return cast(zarr.Group, _CachedGroup(group))


def _arr(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of a group (raises StoreValidationError when it is not one)."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise StoreValidationError(f"{group.path}/{name} is not an array")
    return node


def _read(group: zarr.Group, name: str) -> np.ndarray:
    """All values of the array ``name``."""
    return np.asarray(_arr(group, name)[...])


def _labels(group: zarr.Group, name: str) -> list[str]:
    """A string array as a list of str."""
    return [str(x) for x in _read(group, name)]


def _grp(group: zarr.Group, name: str) -> zarr.Group:
    """The subgroup ``name`` of a group."""
    node = group[name]
    if not isinstance(node, zarr.Group):
        raise StoreValidationError(f"{group.path}/{name} is not a group")
    return node


# ---------------------------------------------------------------------- validation helpers
def _unreadable(group: str) -> str:
    """Why a group with a run's count arrays is not listed among the runs."""
    what = "holds run arrays but no schema_version attribute"
    return f"group {group!r} {what}; it is not a readable run"


def _validate_run(group: zarr.Group) -> list[str]:
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
        arr = _arr(group, name)
        assert isinstance(arr, zarr.Array)
        dims = tuple(arr.metadata.dimension_names or ())  # type: ignore[union-attr]
        if dims != spec.dims:
            problems.append(f"{name} has dims {dims}; expected {spec.dims}")
            continue
        kind = np.dtype(arr.dtype).kind if not _is_string(arr) else "T"
        if kind != spec.kind or (spec.dtype and str(arr.dtype) != spec.dtype):
            problems.append(f"{name} has dtype {arr.dtype}; expected {spec.dtype or spec.kind}")
        for dim, size in zip(dims, arr.shape, strict=True):
            if sizes.setdefault(dim, size) != size:
                problems.append(f"{name} has {size} along {dim}; other arrays have {sizes[dim]}")
    if problems:
        return problems
    langs = _labels(group, schema.LANGUAGE)
    if len(set(langs)) != len(langs):
        problems.append(f"duplicate language labels in {langs}")
    if any(not x for x in langs):
        problems.append("an empty language label (an unfinished write?)")
    if _labels(group, schema.ROLE) != list(schema.ROLES):
        problems.append(f"role must be {list(schema.ROLES)}")
    for dim in (schema.LAYER, schema.NEURON):
        values = _read(group, dim)
        if not np.array_equal(values, np.arange(len(values))):
            problems.append(f"{dim} coordinate must be 0..{len(values) - 1}")
    tokens = _read(group, "n_tokens")
    if (tokens < 0).any():
        problems.append("n_tokens holds negative totals")
    elif total(tokens) > INT64_MAX:
        problems.append(f"n_tokens adds up to {total(tokens)}, above the int64 limit {INT64_MAX}")
    problems.extend(_check_counts(group, "n_active", tokens, langs))
    if "act_sqsum" in present:
        import dask.array as da

        if bool((da.from_zarr(_arr(group, "act_sqsum")) < 0).any().compute()):
            problems.append("act_sqsum holds negative values")
    if "seq_n_active" in present:
        seq_tokens = _read(group, "seq_n_tokens")
        seq_ids = _labels(group, "seq_id")
        problems.extend(_check_counts(group, "seq_n_active", seq_tokens, seq_ids))
        unknown = sorted(set(_labels(group, "seq_language")) - set(langs))
        if unknown:
            problems.append(f"seq_language names languages not in the run: {unknown}")
    return problems


def _is_string(arr: zarr.Array) -> bool:
    return np.dtype(arr.dtype).kind in "TUO"


def _check_counts(
    group: zarr.Group, name: str, tokens: np.ndarray, labels: Sequence[str]
) -> list[str]:
    import dask.array as da

    active = da.from_zarr(_arr(group, name))
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
            f"{name} exceeds n_tokens for {labels[i]!r} role {schema.ROLES[r]!r} at "
            f"{int(above[i, r])} cells"
        )
    return out


# ---------------------------------------------------------------------- opening
def _zarr_store(url: str, *, read_only: bool) -> Store:
    if url.endswith(".zip"):
        if not read_only:
            raise PermissionError(f"zip store {url!r} is read-only; open it with mode='r'")
        return zarr.core.sync.sync(zarr.storage.ZipStore.open(url, mode="r", read_only=True))
    path = _local_path(url)
    if path is not None:
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(url, read_only=read_only)


def _exists(zstore: Store, key: str) -> bool:
    return bool(zarr.core.sync.sync(zstore.exists(key)))


def open_store(
    url: str | os.PathLike[str], mode: Literal["r", "r+"] = "r", *, any_version: bool = False
) -> ActivationStore:
    """Open an existing langneurons store.

    Parameters
    ----------
    url
        A local path, ``file://`` or ``memory://`` URL (any fsspec URL zarr supports), or a
        ``.zip`` file made by :meth:`ActivationStore.export_zip` (read-only).
    mode
        ``"r"`` to read, ``"r+"`` to write.
    any_version
        Open a store of another schema version without refusing it; only ``repair`` (whose
        journal is the same in every version) and :func:`migrate_store` should need this.
    """
    url = os.fspath(url)
    path = _local_path(url)
    if path is not None and not path.exists():
        raise StoreNotFoundError(
            f"store {url!r} does not exist; check the path or create it with `langneurons import`"
        )
    if path is not None and path.is_file() and not url.endswith(".zip"):
        raise NotAStoreError(f"{url!r} is a file, not a Zarr store directory")
    try:
        zstore = _zarr_store(url, read_only=mode == "r")
    except (zipfile.BadZipFile, OSError) as exc:
        raise NotAStoreError(f"{url!r} cannot be opened as a Zarr store: {exc}") from exc
    if not _exists(zstore, "zarr.json"):
        if path is None and not url.endswith(".zip"):
            raise StoreNotFoundError(f"store {url!r} does not exist (no zarr.json found)")
        raise NotAStoreError(
            f"{url!r} is not a Zarr v3 store (no zarr.json); point to a store made by langneurons"
        )
    proto = default_buffer_prototype()
    raw = zarr.core.sync.sync(zstore.get("zarr.json", prototype=proto))
    try:
        meta = json.loads(raw.to_bytes()) if raw is not None else {}
    except ValueError as exc:
        raise NotAStoreError(f"{url!r} has an unreadable zarr.json: {exc}") from exc
    attrs = meta.get("attributes", {}).get(schema.STORE_ATTR)
    if meta.get("node_type") != "group" or not isinstance(attrs, dict):
        raise NotAStoreError(
            f"{url!r} is a Zarr store but not a langneurons store; create one with "
            "`langneurons import` or langneurons.create_store"
        )
    if not any_version:
        schema.check_version(attrs.get("schema_version"), f"store {url!r}", url)
    return ActivationStore(url, zstore, read_only=mode == "r")


def create_store(url: str | os.PathLike[str], *, exist_ok: bool = True) -> ActivationStore:
    """Create an empty store, or open an existing one for writing when ``exist_ok``."""
    url = os.fspath(url)
    if url.endswith(".zip"):
        raise InvalidNameError(
            f"cannot write into zip {url!r}; create a directory store and export it"
        )
    path = _local_path(url)
    if path is not None and path.is_file():
        raise NotAStoreError(f"{url!r} is a file, not a Zarr store directory; choose a new path")
    if path is not None and path.is_dir() and not (path / "zarr.json").exists():
        if any(path.iterdir()):
            raise NotAStoreError(
                f"{url!r} is a non-empty directory that is not a Zarr store; choose a new path"
            )
    zstore = _zarr_store(url, read_only=False)
    if _exists(zstore, "zarr.json"):
        if not exist_ok:
            raise RunExistsError(f"store {url!r} already exists; open it instead")
        return open_store(url, mode="r+")
    if path is None:
        _init_store(zstore)
        return ActivationStore(url, zstore, read_only=False)
    # Local stores are built next to their path and renamed into place, so a concurrent
    # creator never sees a half-made store; the loser of the race opens the winner's.
    path.parent.mkdir(parents=True, exist_ok=True)
    _leftovers.clean_next_to(path, "create")
    tmp = _leftovers.tmp_path(path, "create")
    try:
        _init_store(zarr.storage.LocalStore(tmp, read_only=False))
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "zarr.json").exists():
                raise
            if not exist_ok:
                raise RunExistsError(f"store {url!r} already exists; open it instead") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return open_store(url, mode="r+")


def _init_store(zstore: Store) -> None:
    """Write the root group of an empty langneurons store."""
    with _quiet():
        zarr.open_group(
            zstore,
            mode="w-",
            zarr_format=3,
            attributes={
                schema.STORE_ATTR: {
                    "schema_version": schema.SCHEMA_VERSION,
                    "kind": "activation-store",
                }
            },
        )
        zarr.consolidate_metadata(zstore)
