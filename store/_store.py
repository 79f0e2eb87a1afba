"""The activation store: a Zarr v3 hierarchy of runs, safe for concurrent writers.

Writes are serialised by a lock on the store (``flock`` on the store directory for local stores,
a lock object made by a conditional PUT for stores on S3, :mod:`~langneurons.store._objectlock`,
an in-process lock for other URLs) and made atomic by each run's journal
(:mod:`langneurons.store._journal`): a writer killed in the middle of a write leaves the journal
behind, and the run's next writer (a write to it, or a create at, above or inside its path) or
``repair`` rolls the run back to its previous state; readers refuse the run until then. Readers
that go through the consolidated metadata (plain xarray included) see the last committed shapes:
a commit refreshes only the entries of the groups it wrote (:func:`~langneurons.store._summary.
consolidate`), and ``repair`` all of them.

This module holds :class:`ActivationStore` (open, read, write, results, checks) and
:class:`RunWriter` (the writes of one run). How a run's arrays are made and written is
:mod:`~langneurons.store._arrays`; zarr node helpers are :mod:`~langneurons.store._nodes`;
validation is :mod:`~langneurons.store._validation`; zip files are :mod:`~langneurons.store._zip`;
opening a URL is :mod:`~langneurons.store._open`; a run read into, and a result written from,
numpy without xarray (:meth:`ActivationStore.read_run`, ``save_result`` of a PlainDataset) is
:mod:`~langneurons.store._plain_io`.

Why this module is over 600 lines: :class:`ActivationStore` is one public class of ~40 methods
that all take the same lock and the same run-name checks, and the crash tests pin its private
write steps (``_delete_group``, ``_move``, ``_consolidate``). The mechanics of each concern have
moved out; what stays is the locking and checking around them. Splitting the class further
(results and checks as mixins) is the next step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype

from langneurons.errors import (
    AlreadyWrittenError,
    CorruptStoreError,
    InterruptedWriteError,
    InvalidNameError,
    RunChangedError,
    RunExistsError,
    RunNotFoundError,
    SchemaVersionError,
    StoreValidationError,
)
from langneurons.names import (
    LANGUAGE,
    LAYER,
    MOE_ATTR,
    N_ACTIVE,
    N_TOKENS,
    NEURON,
    SEQ_N_ACTIVE,
)
from langneurons.plain import PlainDataset
from langneurons.store import (
    _arrays,
    _attrs,
    _integrity,
    _journal,
    _leftovers,
    _manifest,
    _metadata,
    _nodes,
    _plain_io,
    _plan,
    _remote,
    _summary,
    _validation,
    _zip,
    schema,
)
from langneurons.store._counts import Counts

if TYPE_CHECKING:  # xarray is imported where it is used: reading a run as numpy needs none
    import xarray as xr

log = logging.getLogger(__name__)

_PROCESS_LOCKS: dict[str, threading.RLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Repaired:
    """What :meth:`ActivationStore.repair_report` did."""

    rolled_back: tuple[str, ...]  # runs whose interrupted write was rolled back
    removed: tuple[str, ...]  # leftovers removed, as paths inside the store
    rebound: tuple[str, ...] = ()  # arrays given a chunk manifest of their chunks (--rebind)
    #: nodes whose lost ``zarr.json`` was written again from the consolidated metadata
    restored: tuple[str, ...] = ()
    #: folders of Zarr data without a ``zarr.json`` that could not be restored (left as they are)
    damaged: tuple[str, ...] = ()


def repair_hint(url: str, *, archive: bool = False) -> str:
    """How to roll back an interrupted write in the store at ``url`` (``archive``: a zip)."""
    if archive or url.endswith(".zip"):  # read-only; unzipped, it is an ordinary store folder
        return f"unzip {url} into a new folder and run `langneurons repair FOLDER` there"
    return f"run `langneurons repair {url}`"


class ActivationStore:
    """A langneurons activation store (many runs in one Zarr v3 hierarchy).

    Open one with :func:`open_store` or create one with :func:`create_store`.
    """

    def __init__(self, url: str, zstore: Store, *, read_only: bool) -> None:
        self.url = url
        self._zstore = zstore
        self.read_only = read_only
        self._path = _nodes.local_path(url) if not url.endswith(".zip") else None

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
                remote = _remote.object_lock(self._zstore, self.url) if exclusive else None
                if remote is None or _remote.holds(self.url):  # no lock object, or held already
                    yield
                    return
                # across processes and machines (a store on S3); a writer whose lease runs
                # out writes no more
                with remote, _remote.fenced(self.url, remote):
                    yield

    def _require_writable(self) -> None:
        if self.read_only:
            raise PermissionError(
                f"store {self.url!r} is open read-only; open it with mode='r+' to write"
            )

    # ------------------------------------------------------------------ groups
    def _checked(self) -> _integrity.CheckedStore:
        """A fresh checked view: reads of data name missing, damaged or misplaced chunks.

        Fresh for each use, since it keeps the chunk manifests it has read.
        """
        return _integrity.CheckedStore(self._zstore)

    def _root(self, consolidated: bool = True, *, checked: bool = False) -> zarr.Group:
        """The root group (``consolidated``: through the consolidated metadata when the root
        holds it, else by listing: another process creating the store or committing a run
        rewrites the root's ``zarr.json`` before it consolidates again, and a reader that
        demanded the summary then failed)."""
        base: Store = self._checked() if checked else self._zstore
        with _nodes.quiet():
            return zarr.open_group(
                base if consolidated else _summary.LeanRoot(base),  # no summary parsed, unused
                mode="r" if self.read_only else "r+",
                use_consolidated=None if consolidated else False,
            )

    @property
    def zarr_store(self) -> Store:
        """The zarr store underneath (for this package's tools, e.g. migration, to read)."""
        return self._zstore

    def _exists(self, key: str) -> bool:
        return _nodes.exists(self._zstore, key)

    def _has_keys(self, prefix: str) -> bool:
        return _nodes.has_keys(self._zstore, prefix)

    def _group(self, run: str, *, checked: bool = False, zstore: Store | None = None) -> zarr.Group:
        """A run's group (``checked``: reads go through the checked view, for data read).

        ``zstore``: open it through this view of the store instead (a write's recorder).
        """
        with _nodes.quiet():
            node = zarr.open_group(
                self._checked() if checked else (zstore or self._zstore),
                path=run,
                mode="r" if self.read_only else "r+",
                use_consolidated=False,
            )
        return node

    def _raw(self, key: str) -> bytes | None:
        return _nodes.raw(self._zstore, key)

    def _consolidate(self, *changed: str, gone: Sequence[str] = ()) -> None:
        """Refresh the consolidated metadata of the groups ``changed`` (none: the whole store);
        ``gone``: groups about to be deleted, dropped from it unread."""
        _summary.consolidate(self._zstore, changed or None, gone=gone)

    def _delete_group(self, path: str) -> None:
        _nodes.delete_node(self._zstore, path)

    def runs(self) -> list[str]:
        """Paths of all committed runs, sorted."""
        root = self._root()
        out = []
        with _nodes.quiet():
            for path, node in root.members(max_depth=None):
                if isinstance(node, zarr.Group) and "schema_version" in node.attrs:
                    out.append(path)
        return sorted(out)

    def _is_run(self, run: str) -> bool:
        """Whether ``run`` is a committed run (one read of its group metadata)."""
        raw = self._raw(f"{run}/zarr.json")
        if raw is None:
            return False
        try:
            meta = json.loads(raw)
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
        with _nodes.quiet():
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
            "languages": [str(x) for x in counts[LANGUAGE].values],
            "layers": int(counts.sizes[LAYER]),
            "neurons": int(counts.sizes[NEURON]),
            "n_tokens": np.asarray(counts[N_TOKENS].values).tolist(),
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
            with _nodes.quiet():
                group = self._root(consolidated=False).require_group(run)
                group.attrs.update(_attrs.encode({schema.RESULTS_OF: identity}))
            self._consolidate(run)
        return run

    def _check_target(self, run: str) -> str:
        """A run, or a results-only group, that results may be saved under or read from."""
        run = schema.check_name(run)
        if self._linked(run) is not None:
            return run
        return self._check_run(run)

    def _repair_hint(self) -> str:
        """How to roll back an interrupted write in this store (a zip cannot be repaired)."""
        return repair_hint(self.url)

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
        bad = self._unparsable(run)
        if bad:
            raise _integrity.damage_error_line(bad[0], len(bad))
        if self._raw(f"{run}/zarr.json") is None:
            cons = _metadata.consolidated(self._raw) or {}
            if run in cons or self._has_keys(run):
                raise _integrity.damage_error_line(f"run {run!r} has no zarr.json")
        elif run in self.unreadable_groups():
            raise RunNotFoundError(
                f"{_validation.unreadable(run)}; list the runs with `langneurons info STORE`"
            )

    def _unparsable(self, prefix: str = "") -> list[str]:
        """A problem line for each ``zarr.json`` under ``prefix`` that is not a JSON object."""
        prefix = f"{prefix.rstrip('/')}/" if prefix else ""
        out = []
        for key in _nodes.keys(self._zstore, prefix):
            if key != "zarr.json" and not key.endswith("/zarr.json"):
                continue
            try:
                meta = json.loads(self._raw(key) or b"")
            except ValueError as exc:
                out.append(f"{key!r} is not valid JSON ({exc})")
                continue
            if not isinstance(meta, dict):
                out.append(f"{key!r} is not a JSON object")
        return out

    def unreadable_groups(self) -> list[str]:
        """Groups that hold a run's count arrays but no ``schema_version`` attribute, sorted."""
        cons = _metadata.consolidated(self._raw) or {}
        out = set()
        for key, meta in cons.items():
            parent, _, name = key.rpartition("/")
            if name not in (N_ACTIVE, N_TOKENS) or not isinstance(meta, dict):
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
        return self._run_metadata(self._check_run(run))

    def _run_metadata(self, run: str) -> schema.RunMetadata:
        attrs = dict(self._group(run).attrs)
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
        import xarray as xr

        from langneurons.store import _whole_reads

        with self._reading_run(run) as (run, pinned):
            with _nodes.quiet():
                ds = xr.open_zarr(
                    pinned, group=run, consolidated=True, chunks=chunks, zarr_format=3
                )
            self._check_run_attrs(run, ds.attrs, allow_incomplete=allow_incomplete)
            if chunks is None:  # whole variables (.values) read by the store's chunk reader
                arrays = _nodes.open_arrays(pinned, run, list(ds.data_vars))
                ds = _whole_reads.whole_reads(ds, arrays)
            ds = _nodes.described(_nodes.unicode_labels(ds))
            ds.attrs = _nodes.run_attrs(ds.attrs)
        return ds

    def read_run(
        self, run: str, *, variables: Sequence[str] | None = None, allow_incomplete: bool = False
    ) -> PlainDataset:
        """A run's data variables read whole into numpy, without xarray (a :class:`PlainDataset`).

        The same content as ``open_run(run)[variables].load()`` (``variables``: names of data
        variables, None for all), with the coordinates their dimensions need, and the same
        checks: an interrupted or in-flight write, damaged metadata, an incomplete run and a
        missing or damaged chunk each raise as :meth:`open_run` and its reads do. Whole
        arrays are read by the store's concurrent chunk reader. A run whose arrays carry
        attributes xarray would decode (none that langneurons writes) is read through
        :meth:`open_run`.
        """
        with self._reading_run(run) as (run, pinned):
            group = _plain_io.run_group(pinned, run)
            attrs = dict(group.attrs)
            self._check_run_attrs(run, attrs, allow_incomplete=allow_incomplete)
            plain = _plain_io.read_run(group, run, variables)
        if plain is not None:
            return plain
        ds = self.open_run(run, allow_incomplete=allow_incomplete)
        return PlainDataset.from_xarray(ds if variables is None else ds[list(variables)])

    @contextlib.contextmanager
    def _reading_run(self, run: str) -> Iterator[tuple[str, _integrity.CheckedStore]]:
        """The checks every reader of a run makes before it reads (its name, no write in flight
        or interrupted, no damaged metadata), then, under the shared lock, the run's checked
        name and a view of the store pinned to the run's state."""
        run = self._check_run(run)
        with self._lock(exclusive=False):
            if _journal.Journal(self._zstore, run).armed():
                writer = _remote.live_writer(self._zstore, self.url)
                if writer is not None:  # on S3 readers take no lock: a write is in flight
                    raise RunChangedError(
                        f"run {run!r} is being written by another process (host "
                        f"{writer.get('host')}, pid {writer.get('pid')}); open it again once the "
                        "write has committed"
                    )
                raise InterruptedWriteError(
                    f"run {run!r} holds an interrupted write; {self._repair_hint()} to roll it back"
                )
            found = self._prefetch(run)
            cons, shown = _summary.scoped(found["zarr.json"], run)  # the root parsed once
            damaged = self._metadata_damage(run, cons=cons, found=found)
            if damaged:
                raise _integrity.damage_error_line(damaged[0], len(damaged))
            pinned = _integrity.CheckedStore(  # the metadata just checked is not read again
                self._zstore,
                pins={run: found[f"{run}/zarr.json"] or b""},
                runs=[run],
                known=found,
                root=shown,  # the consolidated metadata of this run alone
            )
            yield run, pinned

    @staticmethod
    def _check_run_attrs(run: str, attrs: Mapping[str, Any], *, allow_incomplete: bool) -> None:
        """A reader's checks of a run's attributes: valid metadata, and (unless
        ``allow_incomplete``) every planned unit committed."""
        schema.RunMetadata.from_attrs(attrs, where=f"run {run!r}")
        if not allow_incomplete:
            _plan.check_complete(run, attrs)

    def languages(self, run: str) -> list[str]:
        """Language labels of a run, in store order."""
        run = self._check_run(run)
        return _nodes.labels(self._group(run, checked=True), LANGUAGE)

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
        moe: schema.MoeLayout | None = None,
    ) -> str:
        """Create a run, optionally writing its first counts in the same atomic step.

        Parameters
        ----------
        moe
            The experts of a mixture-of-experts model: the run's counts then carry an
            ``expert`` dim (docs/design/moe.md), ``n_neurons`` is the largest expert's neurons
            (``moe.n_neurons``), and the store becomes schema version 3.
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
        languages, sequence_labels, planned_units = _arrays.check_new_run(
            n_layers=n_layers,
            n_neurons=n_neurons,
            sequences=sequences,
            seq_dtype=seq_dtype,
            languages=languages,
            sequence_labels=sequence_labels,
            planned_units=planned_units,
        )
        if moe is not None and not isinstance(moe, schema.MoeLayout):
            raise StoreValidationError(
                f"moe must be a langneurons.store.MoeLayout, got {type(moe).__name__}"
            )
        if moe is not None and n_neurons != moe.n_neurons:
            raise StoreValidationError(
                f"n_neurons is {n_neurons} but the largest expert has {moe.n_neurons} "
                "(moe.expert_neurons); pass n_neurons=moe.n_neurons"
            )
        if counts is not None and counts.moe != moe:  # checked before the store is marked
            raise StoreValidationError(
                f"counts have {_arrays.layout_text(counts.moe)} but run {run!r} is created with "
                f"{_arrays.layout_text(moe)}; pass moe=counts.moe"
            )
        meta = metadata or schema.RunMetadata()
        if moe is not None:
            meta = dataclasses.replace(meta, schema_version=schema.MOE_SCHEMA_VERSION)
        with self._lock():
            self._recover_near(run)
            if self._is_run(run):
                raise RunExistsError(
                    f"run {run!r} already exists in {self.url!r}; choose another --run or add "
                    "languages to it"
                )
            nesting = self._nesting_runs(run)
            if nesting:
                raise InvalidNameError(
                    f"run {run!r} would nest with existing run {nesting[0]!r}; runs cannot "
                    "contain runs"
                )
            if self._has_keys(run):
                # leftovers of a create that was rolled back while being deleted
                log.warning("removing the remains of an unfinished run at %s", run)
                self._delete_group(run)
            if moe is not None:  # before the run exists: older releases refuse the store
                self._mark_version(schema.MOE_SCHEMA_VERSION)
            recorder = _manifest.Recorder(self._zstore)  # every chunk written goes on record
            with _nodes.quiet():
                root = zarr.open_group(recorder, mode="r+", use_consolidated=False)
                group = root.require_group(run)
            journal = _journal.Journal(self._zstore, run)
            journal.arm_create(group)
            try:
                made = _arrays.create_arrays(
                    group, n_layers, n_neurons, moments, sequences, seq_dtype, moe=moe
                )
                group = _nodes.cached(group, made)  # the new arrays, not read back
                _arrays.preallocate(group, languages, sequence_labels)
                attrs = meta.to_attrs()
                attrs[schema.MANIFESTS_ATTR] = _manifest.FORMAT
                if planned_units is not None:
                    attrs[_plan.PLANNED_UNITS] = planned_units
                if counts is not None:
                    plan = _arrays.plan_write(run, group, counts, merge=False)
                    _arrays.apply(group, counts, plan)
                    attrs["writes"] = [_plan.write_record("created", counts, attrs["provenance"])]
                attrs[schema.TOKEN_TOTALS_ATTR] = (
                    plan.totals if counts is not None else _arrays.read_token_totals(group)
                )
                group.update_attributes(_attrs.encode(attrs))  # one metadata write, not one a key
                _manifest.flush(self._zstore, recorder, new=True)
            except BaseException:
                journal.roll_back()
                raise
            journal.commit()
            self._consolidate(run)
        log.info("created run %s (%d x %d)", run, n_layers, n_neurons)
        return run

    def _mark_version(self, version: int) -> None:
        """Raise the store's schema version to ``version`` (never lowers it)."""
        with _nodes.quiet():
            root = zarr.open_group(self._zstore, mode="r+", use_consolidated=False)
            found: Any = root.attrs.get(schema.STORE_ATTR)
            mark = dict(found) if isinstance(found, dict) else {}
            current = mark.get("schema_version")
            if not isinstance(current, int) or current < version:
                mark["schema_version"] = version
                root.attrs.update({schema.STORE_ATTR: mark})

    def schema_version(self) -> int:
        """The store's schema version: 3 when it holds a mixture-of-experts run, else 2."""
        raw = self._raw("zarr.json")
        attrs = json.loads(raw or b"{}").get("attributes", {}).get(schema.STORE_ATTR) or {}
        version = attrs.get("schema_version", schema.SCHEMA_VERSION)
        return int(version) if isinstance(version, int) else schema.SCHEMA_VERSION

    def writer(self, run: str) -> RunWriter:
        """The writes of one committed run, its name checked once (see :class:`RunWriter`)."""
        self._require_writable()
        return RunWriter(self, self._check_run(run))

    def add_languages(
        self, run: str, counts: Counts, *, provenance: Mapping[str, Any] | None = None
    ) -> None:
        """Append new languages to a run; a language already there is an error.

        ``provenance`` (e.g. the source files) is recorded in the run's ``writes`` attribute.
        """
        self._write(self._writable_name(run), counts, merge=False, provenance=provenance)

    def merge_counts(
        self, run: str, counts: Counts, *, provenance: Mapping[str, Any] | None = None
    ) -> None:
        """Add counts to a run: existing languages are summed, new ones appended.

        Shards of one language, extracted separately, merge this way (counts are additive).
        """
        self._write(self._writable_name(run), counts, merge=True, provenance=provenance)

    def _writable_name(self, run: str) -> str:
        self._require_writable()
        return schema.check_name(run)

    def _write(
        self, run: str, counts: Counts, *, merge: bool, provenance: Mapping[str, Any] | None
    ) -> None:
        """Write counts to the run ``run`` (a checked name) under the lock, journaled."""
        with self._lock():
            journal = _journal.Journal(self._zstore, run)
            journal.roll_back()
            if not self._is_run(run):  # deleted, or its create rolled back, since it was named
                self._check_run(run)
            recorder = _manifest.Recorder(self._zstore)  # every chunk written goes on record
            group = _nodes.cached(self._group(run, zstore=recorder))
            unit = (provenance or {}).get("unit")
            if unit is not None and unit in self._units(group):
                raise AlreadyWrittenError(
                    f"unit {unit!r} is already committed to run {run!r}; nothing was written"
                )
            # what the write reads back (labels, the rows it adds to) is read checked
            checked = _nodes.cached(self._group(run, checked=True))
            plan = _arrays.plan_write(run, checked, counts, merge)
            old = journal.arm_write(group, checked, counts, plan)
            try:
                _arrays.apply(group, counts, plan, old)
                writes = list(_attrs.value(group.attrs, "writes", []))
                action = "merged" if merge else "added"
                _plan.log_write(writes, _plan.write_record(action, counts, provenance or {}))
                attrs = {"updated": schema.now_iso(), "writes": writes}
                attrs = _attrs.encode(attrs) | {schema.TOKEN_TOTALS_ATTR: plan.totals}
                group.update_attributes(attrs)  # one metadata write, not one a key
                _manifest.flush(self._zstore, recorder, new=False)
            except BaseException:
                journal.roll_back()
                raise
            journal.commit()
            self._consolidate(run)

    @staticmethod
    def _units(group: zarr.Group) -> set[str]:
        return _plan.units_of(_attrs.value(group.attrs, "writes", []))

    def committed_units(self, run: str) -> set[str]:
        """Unit keys (``provenance={"unit": ...}``) of every write committed to a run.

        A write that was interrupted is not committed: its unit is not counted even when it
        had already been recorded in the run's attributes (the journal holds the attributes
        as they were before it).
        """
        return self._committed_units(self._check_run(run))

    def _committed_units(self, run: str) -> set[str]:
        with self._lock(exclusive=False):
            before = _journal.Journal(self._zstore, run).units_before()
            return before if before is not None else self._units(self._group(run))

    # ------------------------------------------------------------------ recovery
    def _interrupted_runs(self) -> list[str]:
        """Run paths holding an armed journal (a write that never finished)."""
        return _journal.interrupted_runs(self._zstore)

    def _recover_near(self, run: str) -> list[str]:
        """Roll back the interrupted writes that can change what is at ``run``; return the runs
        rolled back.

        Those are the journals of ``run``, of its ancestors and of anything inside its folder:
        rolling back a create deletes that run's folder, rolling back a write changes only its
        run's arrays, so no other journal reaches ``run``. Interrupted writes of other runs are
        left to their run's next writer (which rolls its own journal back first) or to
        ``repair``, so that a create reads the depth of ``run`` and its own folder, not the
        whole store. Raises CorruptStoreError, once the others are done, for a journal among
        these whose undo data is damaged.
        """
        chain = schema.lineage(run)  # ancestors, then run
        armed = [p for p in chain if _journal.Journal(self._zstore, p).armed()]
        lost: dict[str, CorruptStoreError] = {}
        done = self._roll_back(armed, [p for p in chain if self._is_run(p)], lost)
        if self._has_keys(run):  # a rolled-back create of run or an ancestor leaves nothing
            done += self._roll_back(*self._inside(run), lost)
        error = self._lost_error(lost)
        if error is not None:
            raise error
        return done

    def _nesting_runs(self, run: str) -> list[str]:
        """Committed runs ``run`` would nest with, sorted: its ancestors (one read each), then
        the runs inside its folder (walked only when it holds keys)."""
        found = [p for p in schema.lineage(run)[:-1] if self._is_run(p)]
        if self._has_keys(run):
            found += sorted(self._inside(run)[1])
        return found

    def _inside(self, path: str) -> tuple[list[str], list[str]]:
        """Below the group at ``path`` (not itself): the run paths holding an armed journal, and
        the committed runs (a walk of that group only; nothing when it is no group)."""
        raw = self._raw(f"{path}/zarr.json")
        try:
            if raw is None or json.loads(raw).get("node_type") != "group":
                return [], []
        except (ValueError, AttributeError):
            return [], []
        suffix = "/" + schema.JOURNAL
        armed, runs = [], []
        with _nodes.quiet():
            group = zarr.open_group(self._zstore, path=path, mode="r", use_consolidated=False)
            for sub, node in group.members(max_depth=None):
                if not isinstance(node, zarr.Group) or sub == schema.JOURNAL:
                    continue
                full = f"{path}/{sub}"
                if full.endswith(suffix):
                    armed.append(full[: -len(suffix)])
                elif "schema_version" in node.attrs:
                    runs.append(full)
        return armed, runs

    def _roll_back_all(self) -> tuple[list[str], CorruptStoreError | None]:
        """Roll back every armed journal and remove the leftovers of disarmed ones; the error
        of runs whose undo data is damaged is returned, not raised (``repair`` goes on)."""
        lost: dict[str, CorruptStoreError] = {}
        done = self._roll_back(self._interrupted_runs(), self.runs(), lost)
        return done, self._lost_error(lost)

    def _roll_back(
        self, armed: Sequence[str], runs: Sequence[str], lost: dict[str, CorruptStoreError]
    ) -> list[str]:
        """Roll back the journals of ``armed`` and remove the disarmed leftovers of ``runs``;
        return the runs rolled back. Runs whose undo data is damaged go into ``lost`` and the
        others go on."""
        done = []
        for run in armed:
            try:
                _journal.Journal(self._zstore, run).roll_back()
            except CorruptStoreError as exc:
                lost[run] = exc
            else:
                done.append(run)
        for run in runs:
            journal = _journal.Journal(self._zstore, run)
            if run not in armed and journal.leftovers():
                journal.roll_back()  # a writer killed after its commit: only cleans up
        return done

    @staticmethod
    def _lost_error(lost: Mapping[str, CorruptStoreError]) -> CorruptStoreError | None:
        """One error for the runs whose undo data is damaged (None when there are none)."""
        if not lost:
            return None
        more = f" (and {len(lost) - 1} more run(s) like it)" if len(lost) > 1 else ""
        return CorruptStoreError(f"{next(iter(lost.values()))}{more}")

    def repair(self, run: str | None = None) -> list[str]:
        """Roll back every interrupted write; returns the runs that were repaired.

        Leftovers of killed writes are removed too; :meth:`repair_report` also says which.

        ``run``: repair only what a writer of that run needs, at the cost of that run rather
        than of the whole store: roll back the interrupted writes that can change it (its own,
        a create of a group above it, anything inside its folder), remove the leftovers of a
        killed write's commit, and refresh its entries in the consolidated metadata (which a
        writer killed after its commit leaves stale). Other runs' interrupted writes and
        leftovers are left to their next writer or to a whole repair.
        """
        if run is None:
            return list(self.repair_report().rolled_back)
        self._require_writable()
        run = schema.check_name(run)
        with self._lock():
            done = self._recover_near(run)
            self._consolidate(run)
        return done

    def repair_report(self, *, rebind: bool = False) -> Repaired:
        """Roll back every interrupted write and remove every leftover of a killed one.

        Leftovers are the hidden ``.NAME.tmp`` groups of killed result saves and deletes, and
        folders under a group that are no Zarr node (no ``zarr.json``) holding only Zarr's
        bookkeeping files (chunk manifests, journal data): the remains of a killed write.

        Data is never removed. A folder holding chunks or nodes but no ``zarr.json`` (its
        metadata lost, or what a delete killed on object storage left) gets its ``zarr.json``
        back from the consolidated metadata when that has the node, and, for an array, every
        chunk is there (``restored``); otherwise it is left as it is and reported
        (``damaged``: restore it from a copy, or remove it yourself). Empty folders and folders
        holding other files are left alone too.

        ``rebind``: give every array written before chunk manifests a manifest of the chunks it
        holds now, after checking each chunk's checksum (a damaged array refuses the whole
        rebind). Only the user can know those chunks are in their places: rebind a store that
        ``validate`` finds valid and whose results you trust.
        """
        self._require_writable()
        with self._lock():
            bad = self._unparsable()  # nothing here can mend metadata that is not JSON
            if bad:
                raise _integrity.damage_error_line(bad[0], len(bad))
            # lost metadata first: the runs below a node that lost its zarr.json are only
            # found (and their journals rolled back) once it is back
            found, restored = self._restore_lost_metadata()
            rolled, lost = self._roll_back_all()  # the rest of the repair goes on regardless
            leftovers = sorted({*self._unfinished_results(), *found.ours})
            removed = [p for p in leftovers if not any(p.startswith(q + "/") for q in leftovers)]
            for leftover in removed:
                log.warning("removing %s, left by a write that was killed", leftover)
                self._delete_group(leftover)
            for path in found.foreign:
                log.warning("leaving %s: no Zarr node, but it holds files of others", path)
            for path in found.data:
                log.warning(
                    "leaving %s: it holds Zarr data but no zarr.json, and the consolidated "
                    "metadata cannot restore it (no entry, or chunks missing); restore it from "
                    "a copy, or remove it if it is what a killed delete left",
                    path,
                )
            self._consolidate()
            if lost is not None:
                raise lost
            rebound = self._rebind() if rebind else []
            if rebind:  # new manifests, and the groups' marker
                self._consolidate()
        return Repaired(
            tuple(rolled), tuple(removed), tuple(rebound), tuple(restored), tuple(found.data)
        )

    def _restore_lost_metadata(self) -> tuple[_leftovers.Orphans, list[str]]:
        """Write again the ``zarr.json`` of every folder of Zarr data that lost it, from the
        consolidated metadata (a group's attributes; an array's metadata when every one of its
        chunks is there); returns the store's orphans as left, and the nodes restored. Looks
        again below each restored group (its own lost nodes were hidden under it)."""
        entries = _metadata.consolidated(self._raw) or {}
        restored: list[str] = []
        while True:
            found = zarr.core.sync.sync(_leftovers.orphans(self._zstore))
            fresh = {p: k for p, k in found.data.items() if p not in restored}
            done = [p for p, keys in fresh.items() if self._restore_node(p, keys, entries)]
            restored += done
            if not done:
                return found, restored

    def _restore_node(self, path: str, keys: list[str], entries: Mapping[str, Any]) -> bool:
        """Write ``path/zarr.json`` from its consolidated entry; False when it cannot be."""
        from zarr.core.group import GroupMetadata
        from zarr.core.metadata import ArrayV3Metadata

        entry = entries.get(path)
        if not isinstance(entry, dict):
            return False
        try:
            if entry.get("node_type") == "group":
                meta: Any = GroupMetadata(attributes=dict(entry.get("attributes") or {}))
            elif entry.get("node_type") == "array":
                meta = ArrayV3Metadata.from_dict(dict(entry))
                have = set(keys)
                for coords in meta.chunk_grid.all_chunk_coords(meta.shape):
                    if f"{path}/{meta.encode_chunk_key(coords)}" not in have:
                        return False  # part of its data is gone: not ours to make whole
            else:
                return False
            text = meta.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
        except (ValueError, TypeError, KeyError):
            return False
        log.warning("restoring the lost zarr.json of %s from the consolidated metadata", path)
        _nodes.put(self._zstore, f"{path}/zarr.json", text)
        return True

    def _rebind(self) -> list[str]:
        """Give arrays written before manifests one of their chunks; their groups the marker."""
        todo: list[tuple[str, list[zarr.Array]]] = []
        for run in [*self.runs(), *self.linked_runs()]:
            for group, (marked, arrays) in self._arrays_by_group(run).items():
                if not marked and arrays:
                    todo.append((group, arrays))
        for _, arrays in todo:  # everything is checked before anything is written
            for arr in arrays:
                if self._exists(_manifest.key(arr.path)):
                    continue
                damage = _integrity.damaged_chunks(self._zstore, arr)
                if damage:
                    raise _integrity.damage_error(arr.path, damage)
        out = []
        for group, arrays in todo:
            for arr in arrays:
                if not self._exists(_manifest.key(arr.path)):
                    _manifest.rebind(self._zstore, arr)
                    out.append(arr.path)
            with _nodes.quiet():
                node = zarr.open_group(self._zstore, path=group, mode="r+", use_consolidated=False)
                node.attrs.update({schema.MANIFESTS_ATTR: _manifest.FORMAT})
        return out

    def _unfinished_results(self) -> list[str]:
        """Hidden ``.NAME.tmp`` groups a killed ``save_result`` left behind."""
        out = set()
        for run in [*self.runs(), *self.linked_runs()]:
            for kind in schema.RESULT_GROUPS:
                for key in _nodes.keys(self._zstore, f"{run}/{kind}/"):
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
            self._consolidate(run)

    # ------------------------------------------------------------------ results
    def save_result(self, run: str, kind: str, name: str, result: xr.Dataset | PlainDataset) -> str:
        """Save an analysis result Dataset at ``RUN/KIND/NAME``, replacing one of that name.

        ``result`` may be a :class:`~langneurons.plain.PlainDataset` (numpy arrays): it is
        written without xarray, to the same bytes as ``result.to_xarray()`` would be (data
        types or attributes that only xarray's encoding handles go through it).

        The result is written to a fresh group and only then swapped in, so a reader sees the old
        result or the new one, never a partial write. A name that would contain another result
        (``lape`` when ``lape/sub`` exists) or nest inside one (``lape/sub`` when ``lape``
        exists) is refused, since saving it would delete or hide the other; results that share a
        folder (``vs-base/types``, ``vs-base/overlap``) are fine.
        """
        return self._save_result(run, kind, name, result, nest_check=True)

    def _save_result(
        self,
        run: str,
        kind: str,
        name: str,
        result: xr.Dataset | PlainDataset,
        *,
        nest_check: bool,
        checked: bool = False,
    ) -> str:
        """:meth:`save_result`; ``nest_check=False`` copies results that already nest (migrate).

        ``checked``: ``run`` is a run's checked name (a writer's), only looked up again.
        """
        self._require_writable()
        if kind not in schema.RESULT_GROUPS:
            raise InvalidNameError(f"result kind {kind!r} is not one of {schema.RESULT_GROUPS}")
        name = schema.check_name(name, "result")
        stamp = {
            "result_kind": kind,
            "result_name": name,
            "result_saved": schema.now_iso(),
            "result_token": uuid.uuid4().hex,  # each save is distinct, for readers' pins
            schema.MANIFESTS_ATTR: _manifest.FORMAT,
        }
        write = _plain_io.result_writer(result, kind, stamp)
        with self._lock():
            if not (checked and self._is_run(run)):
                run = self._check_target(run)
            recorder = _manifest.Recorder(self._zstore)  # every chunk written goes on record
            with _nodes.quiet():  # the root read once, for the checks and the write
                root = zarr.open_group(recorder, mode="r+", use_consolidated=False)
            if nest_check:
                self._check_nesting(run, kind, name, root)
            path = f"{run}/{kind}/{name}"
            parent, leaf = path.rsplit("/", 1)
            tmp = f"{parent}/.{leaf}.tmp"
            old = f"{parent}/.{leaf}~old.tmp"  # '~' is in no name: never another result's
            self._delete_group(tmp)
            self._delete_group(old)
            with _nodes.quiet():
                root.require_group(parent)
                write(recorder, tmp)
                _manifest.flush(self._zstore, recorder, new=True)
                if self._path is not None and (self._path / path).is_dir():
                    os.replace(self._path / path, self._path / old)  # never half deleted
                else:
                    self._delete_group(path)
                self._move(tmp, path)
            self._consolidate(path, tmp, gone=[old])
            self._delete_group(old)
        return path

    def _check_nesting(
        self, run: str, kind: str, name: str, root: zarr.Group | None = None
    ) -> None:
        """Refuse a result name that would contain, or nest inside, another saved result.

        Looks only where such a result could be (the groups on ``name``'s path, and below
        ``name``), not at every result of the run: a save's cost does not grow with the
        results already saved.
        """
        parts = name.split("/")
        if root is None:  # the files, not a summary a crash left stale
            root = self._root(consolidated=False)
        for depth in range(1, len(parts)):
            other = "/".join(parts[:depth])
            path = f"{run}/{kind}/{other}"
            with _nodes.quiet():
                found = path in root and self._is_result(root[path])
            if found:
                raise InvalidNameError(
                    f"{kind} result {name!r} would nest inside the existing result {other!r} of "
                    f"run {run!r}; choose another --name"
                )
        inside = self._results(run, f"{kind}/{name}", root)  # below name, if it is a group
        if inside:
            raise InvalidNameError(
                f"{kind} result {name!r} would contain the existing result "
                f"{name + '/' + inside[0]!r} of run {run!r}; choose another --name"
            )

    @staticmethod
    def _is_result(node: Any) -> bool:
        """Whether ``node`` is a saved result: a group holding arrays."""
        return isinstance(node, zarr.Group) and any(node.arrays())

    def _move(self, src: str, dst: str) -> None:
        if self._path is not None:
            os.replace(self._path / src, self._path / dst)
            return

        _nodes.move(self._zstore, src, dst)

    def results(self, run: str, kind: str) -> list[str]:
        """Names of results of one kind saved under a run (or a results-only group)."""
        return self._results(self._check_target(run), kind)

    def _results(self, run: str, kind: str, root: zarr.Group | None = None) -> list[str]:
        if root is None:  # the files, not a summary a crash left stale
            root = self._root(consolidated=False)
        if f"{run}/{kind}" not in root:
            return []
        group = _nodes.grp(root, f"{run}/{kind}")
        names = []
        with _nodes.quiet():
            for path, node in group.members(max_depth=None):
                hidden = any(part.startswith(".") for part in path.split("/"))
                if not hidden and self._is_result(node):
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
        import xarray as xr

        path = f"{run}/{kind}/{name}"
        with self._lock(exclusive=False):
            pinned = _integrity.CheckedStore(
                self._zstore, pins={path: self._raw(f"{path}/zarr.json") or b""}
            )
            with _nodes.quiet():
                ds = xr.open_zarr(pinned, group=path, consolidated=False)
            ds.attrs.pop(schema.MANIFESTS_ATTR, None)  # the store's bookkeeping, not the data's
            return _nodes.labelled_types(_nodes.unicode_labels(ds))

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
            incomplete = _plan.incompleteness(_nodes.grp(root, name).attrs)
            if incomplete is not None:
                out.append(f"run {name!r}: {incomplete}")
        for name in runs if run is not None else [*runs, *self.linked_runs()]:
            if self._raw(f"{name}/zarr.json") is None or self._unparsable(name):
                continue  # damage, which validate names
            unbound = self._unbound(name)
            if unbound:
                out.append(
                    f"{_integrity.owner(name)}: chunk places unverified in {len(unbound)} "
                    f"array(s) written before chunk manifests (e.g. {unbound[0]!r}); once the data "
                    f"is known good, record them with `langneurons repair --rebind {self.url}`"
                )
        return out

    def _arrays_by_group(self, run: str) -> dict[str, tuple[bool, list[zarr.Array]]]:
        """The arrays of a run (results included) by group: whether it has manifests, arrays."""
        with _nodes.quiet():
            group = self._group(run)
            members = list(group.members(max_depth=None))
        out: dict[str, tuple[bool, list[zarr.Array]]] = {
            run: (schema.MANIFESTS_ATTR in group.attrs, [])
        }
        for path, node in members:
            if any(p.startswith(".") or p == schema.JOURNAL for p in path.split("/")):
                continue
            if isinstance(node, zarr.Group):
                out[f"{run}/{path}"] = (schema.MANIFESTS_ATTR in node.attrs, [])
        for path, node in members:
            parent = f"{run}/{path}".rsplit("/", 1)[0]
            if isinstance(node, zarr.Array) and parent in out:
                out[parent][1].append(node)
        return out

    def _unbound(self, run: str) -> list[str]:
        """Arrays of a run (results included) written before chunk manifests, as store paths."""
        return sorted(
            arr.path
            for marked, arrays in self._arrays_by_group(run).values()
            if not marked
            for arr in arrays
            if not self._exists(_manifest.key(arr.path))
        )

    def _problems(self, run: str | None = None) -> list[tuple[bool, str]]:
        """``validate``'s problems, each with whether it is damage (a missing or bad chunk)."""
        unparsable = self._unparsable(run or "")
        if unparsable:  # zarr cannot walk the store past them: name them alone
            return [(True, problem) for problem in unparsable]
        runs = [self._check_run(run)] if run is not None else self.runs()
        problems = [
            (True, damaged)
            if (damaged := _journal.Journal(self._zstore, path).damaged_undo())
            else (
                False,
                f"run {path!r}: interrupted write (journal present); {self._repair_hint()}",
            )
            for path in self._interrupted_runs()
        ]
        cons = _metadata.consolidated(self._raw)
        if run is None:
            problems.extend((False, _validation.unreadable(g)) for g in self.unreadable_groups())
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
            with _nodes.quiet():
                problems.extend(
                    (False, f"run {name!r}: {p}") for p in _validation.validate_run(checked)
                )
        if run is None:  # the saved results of results-only groups carry checksums too
            for name in self.linked_runs():
                problems.extend((True, p) for p in self._damage(name))
        return problems

    def _metadata_damage(
        self,
        run: str,
        cons: dict[str, Any] | None = None,
        found: Mapping[str, bytes | None] | None = None,
    ) -> list[str]:
        """Each way the metadata of a run's arrays breaks the schema (metadata reads only;
        ``found``: :meth:`_prefetch` of the run, read by the caller)."""
        known = self._prefetch(run) if found is None else found
        problems = _metadata.problems(
            lambda key: known[key] if key in known else self._raw(key), run, cons
        )
        return [f"{_integrity.describe(f'{run}/{name}')}: {p}" for name, p in problems]

    def _prefetch(self, run: str) -> dict[str, bytes | None]:
        """The keys the metadata checks of ``run`` read, read at once, concurrently (one round
        trip instead of two or three per array): the root's and the run's metadata, and each
        schema array's metadata and chunk manifest (None where absent)."""
        keys = ["zarr.json", f"{run}/zarr.json"]
        for name in schema.variables(True):  # a MoE run's arrays include a dense run's
            keys += [f"{run}/{name}/zarr.json", f"{run}/{name}/{schema.CHUNK_MANIFEST}"]
        return _nodes.raw_many(self._zstore, keys)

    def _damage(self, run: str, *, verify: bool = True) -> list[str]:
        """Chunks of a run's arrays (results included) that are missing, fail their checksum or
        are not the ones written at their place."""
        out: list[str] = []
        for marked, arrays in self._arrays_by_group(run).values():
            for node in arrays:
                problems = _integrity.damaged_chunks(
                    self._zstore, node, verify=verify, manifest_expected=marked
                )
                where = _integrity.describe(node.path)
                out.extend(f"{where}: {p}" for p in problems)
        return out

    def info(self) -> dict[str, Any]:
        """Runs, languages, shapes, token totals and provenance, as plain data."""
        out: dict[str, Any] = {
            "store": self.url,
            "schema_version": self.schema_version(),
            "runs": {},
        }
        root = self._root(checked=True)
        for run in self.runs():
            group = _nodes.grp(root, run)
            langs = _nodes.labels(group, LANGUAGE)
            tokens = _nodes.read(group, N_TOKENS)
            entry: dict[str, Any] = {
                "languages": langs,
                "layers": int(_nodes.arr(group, N_ACTIVE).shape[2]),
                "neurons": int(_nodes.arr(group, N_ACTIVE).shape[-1]),
                "roles": list(schema.ROLES),
                "n_tokens": {
                    lang: dict(zip(schema.ROLES, map(int, tokens[i]), strict=True))
                    for i, lang in enumerate(langs)
                },
                "optional": [n for n in (*schema.MOMENTS, *schema.MOE_SEQUENCES) if n in group],
                "attrs": _attrs.decode(dict(group.attrs)),
            }
            moe = entry["attrs"].get(MOE_ATTR)
            if isinstance(moe, dict):  # a mixture-of-experts run: its experts, from the attribute
                entry["moe"] = {k: moe.get(k) for k in ("n_experts", "n_shared", "top_k")}
            incomplete = _plan.incompleteness(group.attrs)
            if incomplete is not None:
                entry["incomplete"] = incomplete
            if SEQ_N_ACTIVE in group:
                entry["sequences"] = int(_nodes.arr(group, SEQ_N_ACTIVE).shape[0])
            for kind in schema.RESULT_GROUPS:
                names = self.results(run, kind)
                if names:
                    entry.setdefault("results", {})[kind] = names
            out["runs"][run] = entry
        unreadable = [_validation.unreadable(g) for g in self.unreadable_groups()]
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
        nothing behind; a ``dest`` that exists is refused (RunExistsError), never replaced.
        """
        dest = Path(dest)
        _zip.check_target(dest)
        with self._lock(exclusive=False):
            self._check_exportable()
            keys = _nodes.keys(self._zstore)
            return _zip.write(dest, self._iter_items(keys), len(keys))

    def export_netcdf(
        self, dest: str | os.PathLike[str], *, runs: Sequence[str] | None = None
    ) -> list[Path]:
        """Write each run (all, or ``runs``) as one NetCDF-4 file under the new folder ``dest``.

        The file of run ``a/b`` is ``dest/a/b.nc``: the counts at its root, each saved result
        as the group ``KIND/NAME``; attributes that netCDF cannot hold are JSON text, decoded by
        :func:`langneurons.store.decode_attrs`. Needs the ``share`` extra (h5netcdf). Every file
        is read back and compared with the store before ``dest`` appears; a damaged store is
        refused. Returns the files written.
        """
        from langneurons.store import _export_netcdf  # imports xarray

        dest = Path(dest)
        with self._lock(exclusive=False):
            self._check_exportable()
            names = self._export_runs(runs)
            return _export_netcdf.write(
                dest,
                names,
                lambda run: self.open_run(run, chunks={}),  # dask: streamed to disk by chunks
                lambda run: [
                    (f"{kind}/{name}", self.open_result(run, kind, name))
                    for kind in schema.RESULT_GROUPS
                    for name in self._results(run, kind)
                ],
            )

    def export_parquet(
        self, dest: str | os.PathLike[str], *, runs: Sequence[str] | None = None
    ) -> list[Path]:
        """Write each run (all, or ``runs``) as a long-form Parquet neuron table under ``dest``.

        One row per (language, role, layer, neuron): ``run, language, role, layer, neuron,
        n_active, n_tokens, P`` and, for each saved identification result NAME, ``type_NAME`` and
        ``mask_NAME`` (see :mod:`langneurons.store._export_parquet`). The file of run ``a/b`` is
        ``dest/a/b.parquet``, written a batch of layers at a time. Needs the ``share`` extra
        (pyarrow). Read back and compared with the store before ``dest`` appears.
        """
        from langneurons.store import _export_parquet  # imports xarray

        dest = Path(dest)
        with self._lock(exclusive=False):
            self._check_exportable()
            names = self._export_runs(runs)
            return _export_parquet.write(
                dest, names, lambda run: self.open_run(run), self._identifications
            )

    def export_dataset(
        self,
        dest: str | os.PathLike[str],
        *,
        runs: Sequence[str] | None = None,
        license: str = "unknown",
        title: str | None = None,
    ) -> Path:
        """Write a folder laid out as a dataset repository, ready to upload to a dataset hub.

        ``dest/README.md`` is a dataset card (YAML metadata: licence, languages, one config per
        run, and each run's model, revision, corpus and its hash; how it was made and how to load
        it), ``dest/store.zip`` the whole store (:meth:`export_zip`), ``dest/data/RUN.parquet``
        the neuron tables (:meth:`export_parquet`). The ``datasets`` library loads a run with
        ``load_dataset(dest, "RUN")`` (``/`` in a run's name written as ``--``). Every part is
        read back and checked before ``dest`` appears.
        """
        from langneurons.store import _export_dataset  # imports xarray

        dest = Path(dest)
        with self._lock(exclusive=False):
            self._check_exportable()
            names = self._export_runs(runs)
            keys = _nodes.keys(self._zstore)
            return _export_dataset.write(
                dest,
                _export_dataset.Parts(
                    store_url=self.url,
                    runs=names,
                    info=self.info(),
                    write_zip=lambda path: _zip.write(path, self._iter_items(keys), len(keys)),
                    read_zip=_read_zip,
                    open_run=lambda run: self.open_run(run),
                    identifications=self._identifications,
                ),
                license=license,
                title=title,
            )

    def _identifications(self, run: str) -> list[tuple[str, xr.Dataset]]:
        """The identification results saved under ``run``, opened, by name."""
        return [
            (name, self.open_result(run, "identification", name))
            for name in self._results(run, "identification")
        ]

    def _export_runs(self, runs: Sequence[str] | None) -> list[str]:
        """The runs an export writes: every run, or the ones named (checked)."""
        if runs is None:
            found = self.runs()
            if not found:
                raise RunNotFoundError(f"store {self.url!r} holds no run with counts to export")
            return found
        if isinstance(runs, str):
            runs = [runs]
        return list(dict.fromkeys(self._check_run(run) for run in runs))

    def _check_exportable(self) -> None:
        """Refuse to export a store with an interrupted write or any damage or schema problem."""
        if self._interrupted_runs():
            raise InterruptedWriteError(
                f"store {self.url!r} holds an interrupted write; {self._repair_hint()} "
                "before exporting"
            )
        self._check_valid("export")

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

    def _iter_items(self, keys: list[str]) -> Iterator[tuple[str, bytes]]:
        """``(key, bytes)`` of each key, read through the checked view."""
        checked = self._checked()
        for key in keys:
            data = _nodes.raw(checked, key)
            if data is not None:
                yield key, data


class RunWriter:
    """The writes of one committed run of a store: the run's name is checked once, here.

    Get one with :meth:`ActivationStore.writer`. Extraction commits each unit of work with one
    :meth:`merge_counts` call; every write is atomic and serialised as the store's own are.
    """

    def __init__(self, store: ActivationStore, run: str) -> None:
        self.store = store
        self.run = run  # a committed run, checked by ActivationStore.writer

    def __repr__(self) -> str:
        return f"RunWriter({self.store.url!r}, run={self.run!r})"

    def merge_counts(
        self,
        counts: Counts,
        *,
        unit: str | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        """Add counts to the run (see :meth:`ActivationStore.merge_counts`).

        ``unit`` names the unit of work these counts complete (recorded as
        ``provenance["unit"]``); a unit already committed raises AlreadyWrittenError.
        """
        self.store._write(self.run, counts, merge=True, provenance=_with_unit(provenance, unit))

    def add_languages(self, counts: Counts, *, provenance: Mapping[str, Any] | None = None) -> None:
        """Append new languages to the run (see :meth:`ActivationStore.add_languages`)."""
        self.store._write(self.run, counts, merge=False, provenance=provenance)

    def committed_units(self) -> set[str]:
        """Unit keys of every write committed to the run."""
        return self.store._committed_units(self.run)

    def metadata(self) -> schema.RunMetadata:
        """The run's provenance attributes."""
        return self.store._run_metadata(self.run)

    def save_result(
        self, kind: str, name: str, result: xr.Dataset | PlainDataset, *, nest_check: bool = True
    ) -> str:
        """Save a result under the run (see :meth:`ActivationStore.save_result`).

        ``nest_check=False`` copies results that already nest (what migration needs).
        """
        return self.store._save_result(
            self.run, kind, name, result, nest_check=nest_check, checked=True
        )

    @contextlib.contextmanager
    def unjournaled(self) -> Iterator[zarr.Group]:
        """The run's group under the store's lock, with no journal; consolidated afterwards.

        Writes here are not atomic: only for a store no one else sees yet (migration fills the
        arrays of a store it is building).
        """
        with self.store._lock():
            recorder = _manifest.Recorder(self.store._zstore)
            yield self.store._group(self.run, zstore=recorder)
            _manifest.flush(self.store._zstore, recorder, new=False)
            self.store._consolidate(self.run)


def _read_zip(path: Path) -> tuple[list[str], list[str]]:
    """The runs of a store zip and what ``validate`` finds wrong in it."""
    url = str(path)
    zipped = ActivationStore(url, _nodes.zarr_store(url, read_only=True), read_only=True)
    try:
        return zipped.runs(), zipped.validate()
    finally:
        zipped.zarr_store.close()


def _with_unit(provenance: Mapping[str, Any] | None, unit: str | None) -> dict[str, Any]:
    out = dict(provenance or {})
    if unit is not None:
        out["unit"] = unit
    return out
