"""Creating a run: refused names (an existing run, runs nesting at any depth), killed creates and
writes at the same path, an ancestor or a descendant rolled back first, and what a create reads:
the run's depth and its own folder, never the whole store (writes of other runs are left to
their next writer or ``repair``)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr.storage

from langneurons.errors import (
    CorruptStoreError,
    InterruptedWriteError,
    InvalidNameError,
    RunExistsError,
)
from langneurons.store import ActivationStore, _arrays, _journal, create_store, open_store

from .conftest import make_counts


def _run(store: ActivationStore, run: str, seed: int = 0) -> None:
    store.create_run(run, n_layers=3, n_neurons=7, counts=make_counts(["en", "de"], seed=seed))


def _killed_create(
    store: ActivationStore, run: str, monkeypatch: pytest.MonkeyPatch, *, at: str
) -> None:
    """A create of ``run`` killed with its journal armed: while making its arrays
    (``at="arrays"``), or with the run's arrays and attributes written (``at="commit"``)."""
    monkeypatch.setattr(_journal.Journal, "roll_back", lambda self: False)  # a kill: no rollback
    if at == "arrays":
        monkeypatch.setattr(_arrays, "create_arrays", _kill)
    else:
        monkeypatch.setattr(_journal.Journal, "commit", lambda self: _kill())
    with pytest.raises(KeyboardInterrupt):
        _run(store, run)
    monkeypatch.undo()
    assert _journal.Journal(store.zarr_store, run).armed()


def _killed_write(store: ActivationStore, run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge into ``run`` killed mid-way (its journal armed, some arrays written)."""
    apply = _arrays.apply

    def half(group: zarr.Group, counts: object, plan: object, *args: object) -> None:
        apply(group, counts, plan, *args)  # type: ignore[arg-type]
        _kill()

    monkeypatch.setattr(_journal.Journal, "roll_back", lambda self: False)
    monkeypatch.setattr(_arrays, "apply", half)
    with pytest.raises(KeyboardInterrupt):
        store.merge_counts(run, make_counts(["de", "fr"], seed=5))
    monkeypatch.undo()
    assert _journal.Journal(store.zarr_store, run).armed()


def _interrupted(
    path: Path, run: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[ActivationStore, xr.Dataset]:
    """A new store at ``path`` holding ``run``, and ``run`` as committed, before a merge into it
    was killed mid-way (:func:`_killed_write`)."""
    store = create_store(path)
    _run(store, run)
    before = store.open_run(run).load()
    _killed_write(store, run, monkeypatch)
    return store, before


def _kill(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


def _damage_undo(path: Path, run: str) -> None:
    undo = path / run / "_journal" / "undo.npz"
    undo.write_bytes(undo.read_bytes()[:50])


# ------------------------------------------------------------------ refused names
def test_an_existing_run_and_runs_nesting_at_any_depth_are_refused(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr")
    _run(store, "a/b/c")
    url = str(tmp_path / "s.zarr")
    with pytest.raises(RunExistsError) as exists:
        store.create_run("a/b/c", n_layers=3, n_neurons=7)
    assert str(exists.value) == (
        f"run 'a/b/c' already exists in {url!r}; choose another --run or add languages to it"
    )
    for run in ("a", "a/b", "a/b/c/d", "a/b/c/d/e"):
        with pytest.raises(InvalidNameError) as nested:
            store.create_run(run, n_layers=3, n_neurons=7)
        assert str(nested.value) == (
            f"run {run!r} would nest with existing run 'a/b/c'; runs cannot contain runs"
        )
    other = create_store(tmp_path / "t.zarr")
    _run(other, "a")
    with pytest.raises(InvalidNameError, match="^run 'a/b/c' would nest with existing run 'a';"):
        other.create_run("a/b/c", n_layers=3, n_neurons=7)
    _run(store, "a/x")  # a sibling below a common prefix is no nesting
    assert store.runs() == ["a/b/c", "a/x"] and other.runs() == ["a"]
    assert store.validate() == [] and other.validate() == []


def test_the_first_of_several_nesting_runs_is_named(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr")
    for run in ("a/z", "a/b/y", "a/b/x"):
        _run(store, run)
    with pytest.raises(InvalidNameError, match="^run 'a' would nest with existing run 'a/b/x';"):
        store.create_run("a", n_layers=3, n_neurons=7)


# ------------------------------------------------------------------ killed creates and writes near
@pytest.mark.parametrize("at", ["arrays", "commit"])
def test_a_killed_create_of_the_same_path_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, at: str
) -> None:
    store = create_store(tmp_path / "s.zarr")
    _killed_create(store, "m/base", monkeypatch, at=at)
    with caplog.at_level(logging.WARNING, logger="langneurons"):
        _run(store, "m/base", seed=3)
    assert "rolling back an interrupted create of run m/base" in caplog.text
    assert store.runs() == ["m/base"] and store.validate() == []
    expected = make_counts(["en", "de"], seed=3).n_active
    np.testing.assert_array_equal(store.open_run("m/base").n_active.values, expected)


@pytest.mark.parametrize("at", ["arrays", "commit"])
def test_a_killed_create_of_an_ancestor_is_rolled_back_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: str
) -> None:
    """Killed after its attributes were written, the ancestor looks like a run until rolled
    back: left there, it would refuse the create, and its rollback would delete the new run."""
    store = create_store(tmp_path / "s.zarr")
    _killed_create(store, "a", monkeypatch, at=at)
    _run(store, "a/b/c")
    assert store.runs() == ["a/b/c"] and store.validate() == []
    assert not (tmp_path / "s.zarr" / "a" / "_journal").exists()


@pytest.mark.parametrize("at", ["arrays", "commit"])
def test_a_killed_create_of_a_descendant_is_rolled_back_first(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    at: str,
) -> None:
    store = create_store(tmp_path / "s.zarr")
    _killed_create(store, "a/b/c", monkeypatch, at=at)
    with caplog.at_level(logging.WARNING, logger="langneurons"):
        _run(store, "a")
    assert "rolling back an interrupted create of run a/b/c" in caplog.text
    assert "removing the remains of an unfinished run at a" in caplog.text  # the groups a/b
    assert store.runs() == ["a"] and store.validate() == []
    assert not (tmp_path / "s.zarr" / "a" / "b").exists()


def test_a_killed_write_of_a_nesting_run_is_rolled_back_and_the_create_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, before = _interrupted(tmp_path / "s.zarr", "a/b", monkeypatch)
    for run in ("a", "a/b/c"):  # a descendant's journal, then an ancestor's
        with pytest.raises(InvalidNameError, match=f"^run '{run}' would nest with existing run"):
            store.create_run(run, n_layers=3, n_neurons=7)
        assert store.validate() == []  # rolled back on the way
        xr.testing.assert_identical(before, store.open_run("a/b").load())
        _killed_write(store, "a/b", monkeypatch)


def test_a_killed_write_of_the_same_run_is_rolled_back_and_the_create_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, before = _interrupted(tmp_path / "s.zarr", "m/base", monkeypatch)
    with pytest.raises(RunExistsError, match="^run 'm/base' already exists"):
        store.create_run("m/base", n_layers=3, n_neurons=7)
    assert store.validate() == []
    xr.testing.assert_identical(before, store.open_run("m/base").load())


@pytest.mark.parametrize(("damaged", "created"), [("a/b", "a"), ("a", "a/b/c"), ("a", "a")])
def test_damaged_undo_data_nearby_still_refuses_the_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damaged: str, created: str
) -> None:
    path = tmp_path / "s.zarr"
    store = create_store(path)
    _run(store, damaged)
    _killed_write(store, damaged, monkeypatch)
    _damage_undo(path, damaged)
    with pytest.raises(CorruptStoreError, match=f"^run '{damaged}' holds an interrupted write "):
        store.create_run(created, n_layers=3, n_neurons=7)
    assert _journal.Journal(store.zarr_store, damaged).armed()  # nothing was changed


# ------------------------------------------------------------------ other runs are left alone
def test_an_interrupted_write_of_another_run_is_left_to_repair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, before = _interrupted(tmp_path / "s.zarr", "m/base", monkeypatch)
    _run(store, "m/other")  # a sibling: neither an ancestor nor a descendant
    _run(store, "n")
    assert _journal.Journal(store.zarr_store, "m/base").armed()
    with pytest.raises(InterruptedWriteError, match="^run 'm/base' holds an interrupted write;"):
        store.open_run("m/base")
    assert store.repair() == ["m/base"]
    xr.testing.assert_identical(before, store.open_run("m/base").load())
    assert store.runs() == ["m/base", "m/other", "n"] and store.validate() == []


def test_damaged_undo_data_of_another_run_no_longer_blocks_a_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.zarr"
    store = create_store(path)
    _run(store, "m/base")
    _killed_write(store, "m/base", monkeypatch)
    _damage_undo(path, "m/base")
    _run(store, "m/other")
    assert store.runs() == ["m/base", "m/other"]
    with pytest.raises(CorruptStoreError, match="^run 'm/base' holds an interrupted write "):
        store.repair()


# ------------------------------------------------------------------ what a create reads
@pytest.fixture
def store_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Every call a LocalStore gets (reads, lists, writes), by method."""
    calls: Counter[str] = Counter()
    for name in ("get", "exists", "list", "list_dir", "list_prefix", "set", "delete", "delete_dir"):
        method = getattr(zarr.storage.LocalStore, name)

        def counted(
            self: object, *args: object, _m: Any = method, _n: str = name, **kwargs: object
        ) -> Any:
            calls[_n] += 1
            return _m(self, *args, **kwargs)

        monkeypatch.setattr(zarr.storage.LocalStore, name, counted)
    yield calls


def test_a_create_never_walks_the_whole_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = create_store(tmp_path / "s.zarr")
    for i in range(3):
        _run(store, f"m/r{i}")

    def whole_store(*args: object) -> None:
        raise AssertionError("create_run walked the whole store")

    monkeypatch.setattr(_journal, "interrupted_runs", whole_store)
    monkeypatch.setattr(ActivationStore, "runs", whole_store)
    monkeypatch.setattr(ActivationStore, "_roll_back_all", whole_store)
    _run(store, "m/new")
    with pytest.raises(RunExistsError):
        store.create_run("m/r1", n_layers=3, n_neurons=7)
    with pytest.raises(InvalidNameError):
        store.create_run("m", n_layers=3, n_neurons=7)
    monkeypatch.undo()
    assert store.runs() == ["m/new", "m/r0", "m/r1", "m/r2"]


def test_a_create_reads_as_much_in_a_large_store_as_in_a_small_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_calls: Counter[str]
) -> None:
    """The store calls of a create's checks, recovery and write do not grow with the store
    (the refresh of the consolidated metadata, which reads the new run's subtree only, is
    tested in test_consolidate.py)."""
    monkeypatch.setattr(ActivationStore, "_consolidate", lambda self, *a, **k: None)
    seen = []
    for n in (1, 12):
        store = create_store(tmp_path / f"s{n}.zarr")
        for i in range(n):
            _run(store, f"m/r{i:02d}")
        store_calls.clear()
        _run(store, "x/new")
        seen.append(dict(store_calls))
    assert seen[0] == seen[1]
    assert seen[0].get("list_dir", 0) == 0 and seen[0].get("list", 0) == 0  # no walk


def test_a_committed_run_missing_from_the_consolidated_metadata_is_still_a_run(
    tmp_path: Path,
) -> None:
    """A create killed after its commit, before it refreshed the consolidated metadata: the run
    is on disk, committed. It used to be taken for the remains of an unfinished run (deleted and
    created again), and a run inside it was let through."""
    path = tmp_path / "s.zarr"
    store = create_store(path)
    stale = (path / "zarr.json").read_bytes()  # the consolidated metadata before the create
    _run(store, "m/base")
    (path / "zarr.json").write_bytes(stale)
    assert "m/base" not in store.runs()  # runs() lists the consolidated metadata
    with pytest.raises(RunExistsError, match="^run 'm/base' already exists"):
        store.create_run("m/base", n_layers=3, n_neurons=7)
    with pytest.raises(InvalidNameError, match="^run 'm/base/x' would nest with existing run"):
        store.create_run("m/base/x", n_layers=3, n_neurons=7)
    store.repair()  # refreshes the consolidated metadata
    assert store.runs() == ["m/base"] and store.validate() == []
    expected = make_counts(["en", "de"]).n_active
    np.testing.assert_array_equal(store.open_run("m/base").n_active.values, expected)


# ------------------------------------------------------------------ repairing one run
def test_repairing_one_run_rolls_back_its_write_and_leaves_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, before = _interrupted(tmp_path / "s.zarr", "m/base", monkeypatch)
    _run(store, "m/other")
    _killed_write(store, "m/other", monkeypatch)
    assert store.repair("m/base") == ["m/base"]
    xr.testing.assert_identical(before, store.open_run("m/base").load())
    assert _journal.Journal(store.zarr_store, "m/other").armed()  # left to its writer
    assert store.repair("m/base") == []  # nothing left to do there
    assert store.repair() == ["m/other"]
    assert store.validate() == []


def test_repairing_one_run_never_walks_the_whole_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, before = _interrupted(tmp_path / "s.zarr", "m/base", monkeypatch)
    for i in range(3):
        _run(store, f"m/r{i}")

    def whole_store(*args: object, **kwargs: object) -> None:
        raise AssertionError("repair(run) walked the whole store")

    for name in ("runs", "_roll_back_all", "_unfinished_results", "repair_report"):
        monkeypatch.setattr(ActivationStore, name, whole_store)
    monkeypatch.setattr(_journal, "interrupted_runs", whole_store)
    assert store.repair("m/base") == ["m/base"]
    monkeypatch.undo()
    xr.testing.assert_identical(before, store.open_run("m/base").load())


def test_repairing_one_run_refreshes_its_stale_consolidated_metadata(tmp_path: Path) -> None:
    """A writer killed after its commit, before it refreshed the consolidated metadata."""
    path = tmp_path / "s.zarr"
    store = create_store(path)
    stale = (path / "zarr.json").read_bytes()
    _run(store, "m/base")
    (path / "zarr.json").write_bytes(stale)
    assert store.runs() == []
    assert store.repair("m/base") == []
    assert store.runs() == ["m/base"] and store.validate() == []
    plain = xr.open_zarr(path, group="m/base", consolidated=True)
    np.testing.assert_array_equal(plain.n_active.values, make_counts(["en", "de"]).n_active)


def test_repairing_one_run_rolls_back_a_killed_create_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = create_store(tmp_path / "s.zarr")
    _killed_create(store, "m/base", monkeypatch, at="commit")
    assert store.repair("m/base") == ["m/base"]
    assert store.runs() == [] and store.validate() == []


def test_repairing_one_run_refuses_bad_input(tmp_path: Path) -> None:
    create_store(tmp_path / "s.zarr")
    store = open_store(tmp_path / "s.zarr")
    with pytest.raises(PermissionError, match="open it with mode='r\\+'"):
        store.repair("m/base")
    with pytest.raises(InvalidNameError):
        open_store(tmp_path / "s.zarr", mode="r+").repair("../m")
