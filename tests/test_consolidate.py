"""Consolidated metadata refreshed by subtree: the bytes zarr's whole-store walk writes.

Every write refreshes only the entries of the groups it touched (and their ancestors); these
tests hold the root's ``zarr.json`` after each kind of write, accumulated over many writes, to
what ``zarr.consolidate_metadata`` writes for the same store, byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langneurons.analysis import identify
from langneurons.plain import PlainDataset
from langneurons.store import RunMetadata, _nodes, _summary, create_store, open_store

from ._moe_data import make_moe_counts
from .conftest import make_counts


def _as_zarr_writes_it(path: Path, tmp: Path) -> bytes:
    """The root ``zarr.json`` a whole-store consolidation writes for a copy of ``path``."""
    copy = tmp / f"copy-{len(list(tmp.iterdir()))}.zarr"
    shutil.copytree(path, copy)
    with _nodes.quiet():
        zarr.consolidate_metadata(zarr.storage.LocalStore(copy))
    return (copy / "zarr.json").read_bytes()


def _check(path: Path, tmp: Path) -> None:
    ours = (path / "zarr.json").read_bytes()
    assert ours == _as_zarr_writes_it(path, tmp)


def test_every_kind_of_write_consolidates_as_a_whole_store_walk(tmp_path: Path) -> None:
    path, scratch = tmp_path / "s.zarr", tmp_path / "scratch"
    scratch.mkdir()
    store = create_store(path)
    counts = make_counts(["en", "de"], sequences=2, moments=True)
    shape = {"n_layers": counts.shape[0], "n_neurons": counts.shape[1]}
    store.create_run(
        "a", **shape, metadata=RunMetadata(model="m"), moments=True, sequences=True, counts=counts
    )
    _check(path, scratch)
    store.create_run(
        "m/deep/b", **shape, moments=True, sequences=True, counts=counts
    )  # new parent groups
    _check(path, scratch)
    store.create_run("m/deep/c", **shape)  # a sibling: the parent's entry kept, refreshed
    _check(path, scratch)
    store.merge_counts("m/deep/c", make_counts(["fr"]))
    store.add_languages("a", make_counts(["zh"], sequences=2, moments=True))
    _check(path, scratch)
    run = store.open_run("a")
    result = identify(run, "lape", top_rate=0.1)
    store.save_result("a", "identification", "lape", result)
    _check(path, scratch)
    store.save_result("a", "identification", "lape", result)  # replaced: its old copy unlisted
    _check(path, scratch)
    store.save_result("a", "identification", "nested/x", result)
    store.save_result("m/deep/b", "stats", "plain", PlainDataset.from_xarray(result))
    _check(path, scratch)
    store.delete_run("m/deep/c")
    _check(path, scratch)
    results = create_store(tmp_path / "results.zarr")
    results.link_run("a", open_store(path))  # a results-only group
    results.save_result("a", "identification", "lape", result)
    _check(tmp_path / "results.zarr", scratch)
    moe = make_moe_counts(["de", "en"])
    assert moe.moe is not None  # the store's schema version is raised: the root's own attrs
    store.create_run(
        "moe/r", n_layers=moe.shape[0], n_neurons=moe.moe.n_neurons, moe=moe.moe, counts=moe
    )
    _check(path, scratch)
    # what readers see: plain xarray through the consolidated metadata, and validate
    assert open_store(path).validate() == []
    opened = xr.open_zarr(path, group="a/identification/lape")
    np.testing.assert_array_equal(opened.mask.values, result.mask.values)


def test_a_write_reads_only_its_own_subtree(tmp_path: Path) -> None:
    """Refreshing after a write to one run reads no other run's metadata."""
    path = tmp_path / "s.zarr"
    store = create_store(path)
    counts = make_counts(["en"])
    shape = {"n_layers": counts.shape[0], "n_neurons": counts.shape[1]}
    for name in ("r1", "r2", "g/r3"):
        store.create_run(name, **shape, counts=counts)
    local = zarr.storage.LocalStore(path)
    seen: list[str] = []

    class Counting(zarr.storage.WrapperStore):  # type: ignore[type-arg]
        async def get(self, key, prototype, byte_range=None):  # type: ignore[no-untyped-def]
            seen.append(key)
            return await self._store.get(key, prototype, byte_range)

    store.merge_counts("r2", counts)  # the store's own refresh, then the same by hand:
    _summary.consolidate(Counting(local), ["r2"])
    assert seen and all(k == "zarr.json" or k.startswith("r2/") for k in seen), seen
    seen.clear()  # a nested run: its parent's own metadata too, not its siblings'
    _summary.consolidate(Counting(local), ["g/r3"])
    assert "g/zarr.json" in seen
    assert all(k in ("zarr.json", "g/zarr.json") or k.startswith("g/r3/") for k in seen), seen
    _check(path, tmp_path)


def test_a_root_without_consolidated_metadata_is_walked_whole(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store = create_store(path)
    counts = make_counts(["en"])
    store.create_run("r1", n_layers=counts.shape[0], n_neurons=counts.shape[1], counts=counts)
    root = json.loads((path / "zarr.json").read_text())
    del root["consolidated_metadata"]  # as a tool that rewrote the root's attributes leaves it
    (path / "zarr.json").write_text(json.dumps(root))
    store.create_run("r2", n_layers=counts.shape[0], n_neurons=counts.shape[1], counts=counts)
    listed = json.loads((path / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    assert {"r1", "r2", "r1/n_active", "r2/n_active"} <= set(listed)
    _check(path, tmp_path)


@pytest.mark.parametrize("changed", [[""], ["/"]])
def test_the_root_as_a_changed_path_walks_the_store(tmp_path: Path, changed: list[str]) -> None:
    path = tmp_path / "s.zarr"
    store = create_store(path)
    counts = make_counts(["en"])
    store.create_run("r1", n_layers=counts.shape[0], n_neurons=counts.shape[1], counts=counts)
    (path / "r1" / "zarr.json").write_text(
        (path / "r1" / "zarr.json").read_text().replace('"model"', '"model_x"')
    )
    _summary.consolidate(zarr.storage.LocalStore(path), changed)
    listed = json.loads((path / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    assert "model_x" in listed["r1"]["attributes"]
    assert np.all([k in listed for k in ("r1", "r1/n_active")])


def test_a_reader_of_one_run_is_shown_that_run_alone(tmp_path: Path) -> None:
    """open_run / read_run parse the consolidated metadata of their run (and its ancestors),
    not of every run: same Datasets, same checks, and a dask-backed run pickles its view."""
    import pickle

    from langneurons.store import _integrity

    path = tmp_path / "s.zarr"
    store = create_store(path)
    counts = make_counts(["en", "de"], sequences=2)
    shape = {"n_layers": counts.shape[0], "n_neurons": counts.shape[1]}
    for name in ("a/r1", "a/r2", "b"):
        store.create_run(name, **shape, sequences=True, counts=counts)
    store.save_result("a/r1", "identification", "lape", identify(store.open_run("a/r1"), "lape"))
    shown: list[bytes] = []
    real = _integrity.CheckedStore.__init__

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        real(self, *args, **kwargs)
        shown.append(self._root)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_integrity.CheckedStore, "__init__", spy)
        ds = open_store(path).open_run("a/r1")
        plain = open_store(path).read_run("a/r1")
        lazy = open_store(path).open_run("a/r1", chunks={})
    listed = {
        tuple(sorted(json.loads(raw)["consolidated_metadata"]["metadata"])) for raw in shown if raw
    }
    assert len(listed) == 1
    (keys,) = listed
    assert {"a", "a/r1", "a/r1/n_active", "a/r1/identification/lape/mask"} <= set(keys)
    assert not any(k == "b" or k.startswith(("a/r2", "b/")) for k in keys)
    full = xr.open_zarr(path, group="a/r1", consolidated=True)
    np.testing.assert_array_equal(ds.n_active.values, full.n_active.values)
    np.testing.assert_array_equal(plain["seq_n_active"].data, full.seq_n_active.values)
    assert ds.attrs["model"] == full.attrs["model"]
    again = pickle.loads(pickle.dumps(lazy))  # what a dask worker receives
    np.testing.assert_array_equal(again.n_active.values, full.n_active.values)
    # the checks still see the whole consolidated metadata: an array's entry removed is named
    root = json.loads((path / "zarr.json").read_text())
    del root["consolidated_metadata"]["metadata"]["a/r1/n_tokens"]
    (path / "zarr.json").write_text(json.dumps(root, indent=2))
    from langneurons.errors import CorruptStoreError

    with pytest.raises(CorruptStoreError, match="missing from the consolidated metadata"):
        open_store(path).read_run("a/r1")
    np.testing.assert_array_equal(open_store(path).read_run("b")["n_active"].data, counts.n_active)


def test_writers_see_the_root_without_its_summary_and_read_it_once(tmp_path: Path) -> None:
    """zarr reads the root's metadata for each array it creates; through the writer's view
    (LeanRoot) that is one read of the store's root per write, parsed without the consolidated
    metadata, however many arrays the write creates."""
    path = tmp_path / "s.zarr"
    store = create_store(path)
    counts = make_counts(["en", "de"], sequences=2, moments=True)
    shape = {"n_layers": counts.shape[0], "n_neurons": counts.shape[1]}
    store.create_run("a", **shape, moments=True, sequences=True, counts=counts)
    result = identify(store.open_run("a"), "lape", top_rate=0.1)
    reads: list[str] = []
    real = zarr.storage.LocalStore.get

    async def counting(self, key, prototype=None, byte_range=None):  # type: ignore[no-untyped-def]
        if key == "zarr.json":
            reads.append(key)
        return await real(self, key, prototype, byte_range)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zarr.storage.LocalStore, "get", counting)
        open_store(path, mode="r+").create_run(
            "b", **shape, moments=True, sequences=True, counts=counts
        )  # 13 arrays
        many = len(reads)
        reads.clear()
        open_store(path, mode="r+").create_run("c", **shape, counts=make_counts(["en"]))  # 6
        few = len(reads)
        reads.clear()
        open_store(path, mode="r+").save_result("a", "identification", "lape", result)
        saved = len(reads)
    assert many == few <= 6 and saved <= 3, (many, few, saved)  # not one a created array
    _check(path, tmp_path)
    # the view itself: no summary shown, the rest of the root as stored, a write seen
    lean = _summary.LeanRoot(zarr.storage.LocalStore(path))
    with _nodes.quiet():
        root = zarr.open_group(lean, mode="r+", use_consolidated=False)
    shown = json.loads(zarr.core.sync.sync(lean.get("zarr.json", _proto())).to_bytes())
    stored = json.loads((path / "zarr.json").read_text())
    assert "consolidated_metadata" not in shown
    assert shown["attributes"] == stored["attributes"]
    root.attrs.update({"note": "x"})
    again = json.loads(zarr.core.sync.sync(lean.get("zarr.json", _proto())).to_bytes())
    assert again["attributes"]["note"] == "x"


def _proto():  # type: ignore[no-untyped-def]
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    old=st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.dictionaries(st.text(max_size=4), _JSON, max_size=3),
        max_size=6,
    ),
    new=st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.dictionaries(st.text(max_size=4), _JSON, max_size=3),
        max_size=3,
    ),
    attrs=st.dictionaries(st.text(max_size=4), _JSON, max_size=3),
    dropped=st.sets(st.text(min_size=1, max_size=5), max_size=3),
)
def test_entries_kept_as_text_render_as_json_renders_them(old, new, attrs, dropped) -> None:  # type: ignore[no-untyped-def]
    """The root rendered from the kept text of untouched entries is json's own rendering of the
    whole root: any keys (quotes, escapes, non-ASCII), values (NaN, nesting, empties)."""
    held = {"kind": "inline", "must_understand": False, "metadata": old}
    root = {
        "attributes": attrs,
        "zarr_format": 3,
        "consolidated_metadata": held,
        "node_type": "group",
    }
    text = json.dumps(root, indent=2, allow_nan=True)
    kept = _summary._entry_texts(text.encode(), list(old))
    if old:
        assert kept is not None and set(kept) == set(old)
    entries = {k: v for k, v in old.items() if k not in dropped} | new
    ordered = {k: entries[k] for k in sorted(entries)}
    got = _summary._render(root, held, ordered, kept, set(new))
    want = json.dumps(
        {**root, "consolidated_metadata": {**held, "metadata": ordered}}, indent=2, allow_nan=True
    )
    assert got == want


def test_a_root_laid_out_otherwise_is_rendered_whole(tmp_path: Path) -> None:
    """A root's zarr.json written compactly (another tool, another indent) is not split:
    the refresh renders it all, to zarr's bytes again."""
    path = tmp_path / "s.zarr"
    store = create_store(path)
    counts = make_counts(["en"])
    shape = {"n_layers": counts.shape[0], "n_neurons": counts.shape[1]}
    store.create_run("r1", **shape, counts=counts)
    compact = json.dumps(json.loads((path / "zarr.json").read_text()))
    (path / "zarr.json").write_text(compact)
    assert _summary._entry_texts(compact.encode(), ["r1"]) is None
    store.create_run("r2", **shape, counts=counts)
    _check(path, tmp_path)


@pytest.mark.parametrize(
    "root",
    [
        {
            "attributes": {"a": 1},
            "zarr_format": 3,
            "consolidated_metadata": {"metadata": {}},
            "node_type": "group",
        },  # zarr's layout: the summary cut out of the text
        {
            "attributes": {"s": '\n  "node_type": x', "consolidated_metadata": {"metadata": 1}},
            "zarr_format": 3,
            "consolidated_metadata": {"metadata": {"k": {"v": 1}}},
            "node_type": "group",
        },  # the same words inside values
        {
            "node_type": "group",
            "consolidated_metadata": {"metadata": {}},
            "attributes": {},
            "zarr_format": 3,
        },  # another order
        {
            "attributes": {},
            "zarr_format": 3,
            "consolidated_metadata": {"metadata": {}},
            "extra": [1, 2],
            "node_type": "group",
        },  # a key between the summary and node_type
        {"attributes": {"é": "ü"}, "zarr_format": 3, "node_type": "group"},  # no summary
    ],
)
@pytest.mark.parametrize("indent", [2, None])
def test_the_root_without_its_summary_is_the_root_less_that_key(
    root: dict, indent: int | None
) -> None:
    raw = json.dumps(root, indent=indent, ensure_ascii=False).encode()
    want = {k: v for k, v in root.items() if k != "consolidated_metadata"}
    assert json.loads(_summary._without_summary(raw)) == want
    assert _summary._without_summary(b"{not json") == b"{not json"  # zarr reports it


def test_a_run_s_entries_found_in_the_text_are_the_parsed_ones(tmp_path: Path) -> None:
    """scoped() reads a root in zarr's layout by searching its text for the run's entries:
    the same entries, in the same order, and a shown root that parses to the root with only
    them; any other layout is parsed whole, to the same answer."""

    path = tmp_path / "s.zarr"
    store = create_store(path)
    counts = make_counts(["en", "de"])
    shape = {"n_layers": counts.shape[0], "n_neurons": counts.shape[1]}
    for name in ("m/r1", "m/r10", "m/r1x", "n/r1"):  # prefixes of one another's names
        store.create_run(name, **shape, counts=counts)
    store.save_result("m/r1", "identification", "lape", identify(store.open_run("m/r1"), "lape"))
    raw = (path / "zarr.json").read_bytes()
    root = json.loads(raw)
    listed = root["consolidated_metadata"]["metadata"]
    for run in ("m/r1", "m/r10", "n/r1", "m", "absent/run", "m/r1/identification/lape"):
        parts = run.split("/")
        above = {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
        want = {k: v for k, v in listed.items() if k in above or k.startswith(run + "/")}
        found = _summary._scoped_text(raw, run)
        assert found is not None
        kept, shown = found
        assert list(kept) == list(want) and kept == want, run
        assert json.loads(shown) == {
            **root,
            "consolidated_metadata": {**root["consolidated_metadata"], "metadata": want},
        }
        compact = json.dumps(root).encode()  # another layout: parsed whole
        assert _summary._scoped_text(compact, run) is None
        assert _summary.scoped(compact, run)[0] == want
        assert json.loads(_summary.scoped(compact, run)[1] or b"") == json.loads(shown)
