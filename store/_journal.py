"""The journal of a run: what makes a write atomic, and how an interrupted one is rolled back.

Before a writer touches a run it records in ``RUN/_journal`` the run's previous shapes and
attributes and the previous values of every slice it will change (``undo.npz``), and only then
writes the journal's group marker (``_journal/zarr.json``), which arms it. When every array is
written the writer deletes the marker (the commit point) and then the rest. A writer killed in
between leaves an armed journal: the next writer, or ``repair``, rolls the run back to its
previous state with :meth:`Journal.roll_back`, and readers refuse the run until then. A writer
killed after the commit leaves only disarmed leftovers, which are removed.

The caller holds the store's write lock for every method that changes the store.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from langneurons.names import LANGUAGE, SEQ_N_ACTIVE
from langneurons.store import _attrs, _nodes, schema
from langneurons.store._arrays import LANGUAGE_ROWS, SEQ_COUNTS, Plan
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
        if not self.armed():
            if self.leftovers():
                _nodes.delete_group(self._zstore, self.path)
                _nodes.consolidate(self._zstore)
            return False
        with _nodes.quiet():
            journal = zarr.open_group(self._zstore, path=self.path, mode="r+")
        state: dict[str, Any] = dict(journal.attrs)
        undo: dict[str, np.ndarray] = {}
        raw = _nodes.raw(self._zstore, f"{self.path}/{UNDO}")
        if raw is not None:
            with np.load(io.BytesIO(raw)) as saved:
                undo = {name: saved[name] for name in saved.files}
        log.warning("rolling back an interrupted %s of run %s", state.get("op"), self.run)
        if state.get("op") == "create":
            _nodes.delete_group(self._zstore, self.run)
        elif state.get("state") == "armed":
            self._restore(state, undo)
            self.commit()
        else:
            self.commit()
        _nodes.consolidate(self._zstore)
        return True

    def _restore(self, state: dict[str, Any], undo: dict[str, np.ndarray]) -> None:
        """Put back the run's shapes, replaced values and attributes as the journal has them."""
        with _nodes.quiet():
            group = zarr.open_group(self._zstore, path=self.run, mode="r+", use_consolidated=False)
        merged = np.array(state["merged"], dtype=np.intp)
        k0, s0 = int(state["languages"]), int(state["sequences"])
        for name in LANGUAGE_ROWS:
            if name in group:
                if merged.size:
                    _nodes.arr(group, name).oindex[merged] = undo[name]
                array = _nodes.arr(group, name)
                array.resize((k0, *array.shape[1:]))
        _nodes.arr(group, LANGUAGE).resize((k0,))
        if "seq_index" in state:
            index = np.array(state["seq_index"], dtype=np.intp)
            for name in SEQ_COUNTS:
                _nodes.arr(group, name).oindex[index] = undo[name]
        if SEQ_N_ACTIVE in group:
            for name in schema.SEQUENCES:
                array = _nodes.arr(group, name)
                array.resize((s0, *array.shape[1:]))
        group.attrs.put(dict(state["attrs"]))
