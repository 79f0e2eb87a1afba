"""The journal of a run: what makes a write atomic, and how an interrupted one is rolled back.

Before a writer touches a run it records in ``RUN/_journal`` the run's previous shapes and
attributes and the previous values of every slice it will change (``undo.npz``), and only then
writes the journal's group marker (``_journal/zarr.json``), which arms it. When every array is
written the writer deletes the marker (the commit point) and then the rest. A writer killed in
between leaves an armed journal: the run's next writer, or ``repair``, rolls the run back to its
previous state with :meth:`Journal.roll_back`, and readers refuse the run until then. A writer
killed after the commit leaves only disarmed leftovers, which are removed.

The caller holds the store's write lock for every method that changes the store.
"""

from __future__ import annotations

import io
import logging
import zipfile
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from langneurons.errors import CorruptStoreError
from langneurons.names import LANGUAGE, SEQ_N_ACTIVE
from langneurons.store import _attrs, _manifest, _nodes, _summary, schema
from langneurons.store._arrays import LANGUAGE_ROWS, SEQ_COUNTS, Plan, seq_arrays
from langneurons.store._counts import Counts
from langneurons.store._plan import units_of

log = logging.getLogger(__name__)

UNDO = "undo.npz"  # inside RUN/_journal: the values a write replaces


def interrupted_runs(zstore: Store) -> list[str]:
    """Run paths holding an armed journal (a write that never finished)."""
    suffix = "/" + schema.JOURNAL
    with _nodes.quiet():
        root = zarr.open_group(zstore, mode="r", use_consolidated=False)
        return [
            path[: -len(suffix)]
            for path, node in root.members(max_depth=None)
            if isinstance(node, zarr.Group) and path.endswith(suffix)
        ]


class Journal:
    """The journal of one run (``RUN/_journal``) in a zarr store."""

    def __init__(self, zstore: Store, run: str) -> None:
        self._zstore = zstore
        self.run = run
        self.path = f"{run}/{schema.JOURNAL}"

    def armed(self) -> bool:
        """Whether the run holds a write that never finished (the journal's marker is there)."""
        return _nodes.exists(self._zstore, f"{self.path}/zarr.json")

    def leftovers(self) -> bool:
        """Whether any key of the journal is there, armed or not."""
        return _nodes.has_keys(self._zstore, self.path)

    def arm_create(self, group: zarr.Group) -> None:
        """Arm the journal of a run being created in ``group`` (a rollback deletes the run)."""
        with _nodes.quiet():
            group.create_group(schema.JOURNAL, attributes={"op": "create", "state": "armed"})

    def arm_write(
        self, group: zarr.Group, checked: zarr.Group, counts: Counts, plan: Plan
    ) -> dict[str, np.ndarray]:
        """Record what writing ``counts`` as planned will change; return the values it replaces.

        ``checked`` is the run's group read through the checked view: the values a write adds
        to are read once, checked, and kept both for the rollback and for the write itself.
        """
        n_seq = _nodes.arr(group, SEQ_N_ACTIVE).shape[0] if SEQ_N_ACTIVE in group else 0
        state: dict[str, Any] = {
            "op": "write",
            "state": "armed",
            "languages": len(plan.current),
            "sequences": int(n_seq),
            "attrs": dict(group.attrs),
            "merged": sorted(plan.existing.values()),
        }
        undo: dict[str, np.ndarray] = {}
        if plan.existing:
            index = np.array(sorted(plan.existing.values()), dtype=np.intp)
            for name in LANGUAGE_ROWS:
                if name in group:
                    undo[name] = np.asarray(_nodes.arr(checked, name).oindex[index])
        if counts.seq_index is not None and SEQ_N_ACTIVE in group:
            index = np.asarray(counts.seq_index, dtype=np.intp)
            for name in SEQ_COUNTS:
                if name in group:
                    undo[name] = np.asarray(_nodes.arr(checked, name).oindex[index])
            state["seq_index"] = [int(i) for i in index]
        # the undo data goes first; the group marker, written last, arms the journal
        if self.leftovers():
            _nodes.delete_group(self._zstore, self.path)
        blob = io.BytesIO()
        savez: Any = np.savez  # numpy's stubs do not type **arrays
        savez(blob, **undo)
        _nodes.put(self._zstore, f"{self.path}/{UNDO}", blob.getvalue())
        with _nodes.quiet():
            group.create_group(schema.JOURNAL, attributes=state)
        return undo

    def commit(self) -> None:
        """Delete the journal: its group marker first (the commit point), then the rest."""
        _nodes.delete(self._zstore, f"{self.path}/zarr.json")
        _nodes.delete_group(self._zstore, self.path)

    def units_before(self) -> set[str] | None:
        """Units committed before an interrupted write (None when no write is interrupted).

        The attributes recorded in the journal are the run's as they were before the write: a
        unit the interrupted write had already recorded is not committed.
        """
        if not self.armed():
            return None
        with _nodes.quiet():
            journal = zarr.open_group(self._zstore, path=self.path, mode="r")
        before = journal.attrs.get("attrs")
        if journal.attrs.get("op") == "create" or not isinstance(before, dict):
            return set()
        return units_of(_attrs.value(before, "writes", []))

    def roll_back(self) -> bool:
        """Roll back an interrupted write of the run; True when one was rolled back.

        Leftovers of a journal whose marker is gone (a writer killed while deleting it after its
        commit) are only cleaned up.
        """
        _nodes.drain()  # the failed write's other chunk writes settle first
        if not self.armed():
            if self.leftovers():
                _nodes.delete_group(self._zstore, self.path)
                _summary.consolidate(self._zstore, [self.run])
            return False
        state = self._state()
        undo = self._undo(state)  # read and checked before anything is changed
        log.warning("rolling back an interrupted %s of run %s", state.get("op"), self.run)
        if state.get("op") == "create":
            _nodes.delete_node(self._zstore, self.run)
        elif state.get("state") == "armed":
            self._restore(state, undo)
            self.commit()
        else:
            self.commit()
        _summary.consolidate(self._zstore, [self.run])
        return True

    def _state(self) -> dict[str, Any]:
        """The journal's record of the run before the write."""
        with _nodes.quiet():
            journal = zarr.open_group(self._zstore, path=self.path, mode="r")
        return dict(journal.attrs)

    def damaged_undo(self) -> str | None:
        """Why an armed journal cannot be rolled back (its undo data is damaged), or None."""
        if not self.armed():
            return None
        try:
            self._undo(self._state())
        except CorruptStoreError as exc:
            return str(exc)
        return None

    def _undo(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """The values the write replaced, as the rollback needs them.

        A damaged undo file the rollback does not need (the write replaced no values: it only
        appended) is ignored; one it needs raises CorruptStoreError naming what to restore.
        """
        if state.get("op") != "write" or state.get("state") != "armed":
            return {}
        merged = [int(i) for i in state.get("merged", [])]
        seq_index = state.get("seq_index")
        if not merged and seq_index is None:
            return {}
        with _nodes.quiet():
            group = zarr.open_group(self._zstore, path=self.run, mode="r", use_consolidated=False)
        want = {n: len(merged) for n in LANGUAGE_ROWS if merged and n in group}
        want.update({n: len(seq_index) for n in SEQ_COUNTS if seq_index is not None and n in group})
        raw = _nodes.raw(self._zstore, f"{self.path}/{UNDO}")
        try:
            if raw is None:
                raise ValueError("it is missing")
            with np.load(io.BytesIO(raw)) as saved:
                undo = {name: saved[name] for name in saved.files}
            for name, rows in want.items():
                if name not in undo or undo[name].shape[:1] != (rows,):
                    raise ValueError(f"it lacks the {rows} replaced rows of {name}")
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise CorruptStoreError(self._unrecoverable(state, group, exc)) from exc
        return undo

    def _unrecoverable(self, state: dict[str, Any], group: zarr.Group, exc: BaseException) -> str:
        """What to restore when the values an interrupted write replaced are lost."""
        labels = _nodes.labels(group, LANGUAGE) if LANGUAGE in group else []
        rows = [labels[i] if i < len(labels) else f"row {i}" for i in state.get("merged", [])]
        what = []
        if rows:
            what.append(f"the rows of {', '.join(map(repr, rows))} in n_active and n_tokens")
        if state.get("seq_index") is not None:
            what.append(f"{len(state['seq_index'])} sequence slots of seq_n_active")
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return (
            f"run {self.run!r} holds an interrupted write whose undo data "
            f"({self.path}/{UNDO}) is damaged ({reason}), so the values it replaced cannot be "
            f"put back: {' and '.join(what)} may hold part of that write; restore the folder "
            f"of run {self.run!r} from a copy, or remove it and write the run again"
        )

    def _restore(self, state: dict[str, Any], undo: dict[str, np.ndarray]) -> None:
        """Put back the run's shapes, replaced values and attributes as the journal has them.

        The chunks it writes go on record in the arrays' manifests, as a write's do: every chunk
        the interrupted write may have touched is rewritten or deleted here.
        """
        recorder = _manifest.Recorder(self._zstore)
        with _nodes.quiet():
            group = zarr.open_group(recorder, path=self.run, mode="r+", use_consolidated=False)
        merged = np.array(state["merged"], dtype=np.intp)
        k0, s0 = int(state["languages"]), int(state["sequences"])
        for name in LANGUAGE_ROWS:
            if name in group:
                if merged.size:
                    _nodes.arr(group, name).oindex[merged] = undo[name]
                _nodes.shrink(_nodes.arr(group, name), k0)
        _nodes.shrink(_nodes.arr(group, LANGUAGE), k0)
        if "seq_index" in state:
            index = np.array(state["seq_index"], dtype=np.intp)
            for name in SEQ_COUNTS:
                if name in group:
                    _nodes.arr(group, name).oindex[index] = undo[name]
        if SEQ_N_ACTIVE in group:
            for name in seq_arrays(group):
                _nodes.shrink(_nodes.arr(group, name), s0)
        group.attrs.put(dict(state["attrs"]))
        _manifest.flush(self._zstore, recorder, new=False)
