"""The activation store: round trips, plain-xarray access, merging, validation, atomicity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from langneurons.store import Counts, RunMetadata, create_store, decode_attrs, open_store, schema

from .conftest import make_counts, other_version_store, rerecord, run_python, unit_counts


def _store_with_run(path: Path | str, langs=("en", "de"), **kw) -> tuple[object, Counts]:
    store = create_store(path)
    counts = make_counts(list(langs), **kw)
    store.create_run(
        "model/base",
        n_layers=counts.shape[0],
        n_neurons=counts.shape[1],
        metadata=RunMetadata(model="tiny", revision="step-1", corpus="toy", hook_point="mlp.act"),
        moments=counts.has_moments,
        sequences=counts.has_sequences,
        counts=counts,
    )
    return store, counts


def test_round_trip_bit_exact(tmp_path: Path) -> None:
    store, counts = _store_with_run(tmp_path / "s.zarr", moments=True, sequences=3)
    ds = open_store(tmp_path / "s.zarr").open_run("model/base")
    assert list(ds.language.values) == ["en", "de"]
    assert list(ds.role.values) == ["prompt", "response"]
    np.testing.assert_array_equal(ds.n_active.values, counts.n_active)
    assert ds.n_active.dtype == np.int64 and ds.n_tokens.dtype == np.int64
    np.testing.assert_array_equal(ds.n_tokens.values, counts.n_tokens)
    assert ds.act_sum.values.tobytes() == np.asarray(counts.act_sum).tobytes()
    assert ds.act_sqsum.values.tobytes() == np.asarray(counts.act_sqsum).tobytes()
    np.testing.assert_array_equal(ds.seq_n_active.values, counts.seq_n_active)
    assert ds.seq_n_active.dtype == np.uint16
    np.testing.assert_array_equal(ds.seq_n_tokens.values, counts.seq_n_tokens)
    assert list(ds.seq_language.values) == list(counts.seq_language or [])
    assert list(ds.seq_id.values) == list(counts.seq_id or [])
    assert ds.attrs["model"] == "tiny" and ds.attrs["schema_version"] == 2
    assert ds.attrs["tool_version"] and ds.attrs["created"]


def test_plain_xarray_reads_without_langneurons(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _, counts = _store_with_run(path, sequences=2)
    code = f"""
import sys, xarray as xr, numpy as np
ds = xr.open_zarr({str(path)!r}, group="model/base")
tree = xr.open_datatree({str(path)!r}, engine="zarr")
node = tree["model/base"].to_dataset()
assert "langneurons" not in sys.modules
assert dict(ds.sizes) == {{"language": 2, "role": 2, "layer": 3, "neuron": 7, "sequence": 4}}
assert ds.n_active.dims == ("language", "role", "layer", "neuron")
assert ds.seq_n_active.dims == ("sequence", "role", "layer", "neuron")
assert "seq_language" in ds.coords and "seq_id" in ds.coords
print(int(ds.n_active.sum()), int(node.n_tokens.sum()), [str(x) for x in ds.language.values])
"""
    out = run_python(code).split()
    assert int(out[0]) == int(counts.n_active.sum())
    assert int(out[1]) == int(counts.n_tokens.sum())


def test_add_languages_and_merge_are_additive(tmp_path: Path) -> None:
    store, first = _store_with_run(tmp_path / "s.zarr")
    more = make_counts(["fr"], seed=1)
    store.add_languages("model/base", more)
    shard = make_counts(["de", "zh"], seed=2)
    store.merge_counts("model/base", shard)
    ds = open_store(tmp_path / "s.zarr").open_run("model/base")
    assert list(ds.language.values) == ["en", "de", "fr", "zh"]
    np.testing.assert_array_equal(ds.n_active.sel(language="en").values, first.n_active[0])
    np.testing.assert_array_equal(
        ds.n_active.sel(language="de").values, first.n_active[1] + shard.n_active[0]
    )
    np.testing.assert_array_equal(
        ds.n_tokens.sel(language="de").values, first.n_tokens[1] + shard.n_tokens[0]
    )
    np.testing.assert_array_equal(ds.n_active.sel(language="zh").values, shard.n_active[1])
    assert store.validate() == []


def test_add_existing_language_is_an_error_and_changes_nothing(tmp_path: Path) -> None:
    store, first = _store_with_run(tmp_path / "s.zarr")
    with pytest.raises(StoreValidationError, match="language 'de' is already in run 'model/base'"):
        store.add_languages("model/base", make_counts(["de"], seed=5))
    ds = store.open_run("model/base")
    np.testing.assert_array_equal(ds.n_active.values, first.n_active)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seeds=st.lists(st.integers(0, 1000), min_size=2, max_size=4), order=st.randoms())
def test_merge_order_does_not_matter(
    tmp_path_factory: pytest.TempPathFactory, seeds, order
) -> None:
    shards = [make_counts(["en", "de"], seed=s) for s in seeds]
    results = []
    for permutation in (list(range(len(shards))), order.sample(range(len(shards)), len(shards))):
        store = create_store(f"memory://merge-{uuid.uuid4().hex}")
        store.create_run("r", n_layers=3, n_neurons=7)
        for i in permutation:
            store.merge_counts("r", shards[i])
        ds = store.open_run("r").sortby("language")
        results.append((ds.n_active.values, ds.n_tokens.values))
        assert int(ds.n_active.sel(language="en").sum()) == sum(
            int(s.n_active[0].sum()) for s in shards
        )
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_run_added_later_is_visible_to_next_open(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _store_with_run(path)
    store = open_store(path, mode="r+")
    other = make_counts(["en"], layers=2, neurons=5, seed=3)
    store.create_run("model2/base", n_layers=2, n_neurons=5, counts=other)
    tree = xr.open_datatree(path, engine="zarr")
    assert "model2" in tree.children
    assert tree["model2/base"].dataset.sizes["neuron"] == 5
    assert open_store(path).runs() == ["model/base", "model2/base"]


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_fsspec_urls(tmp_path: Path, scheme: str) -> None:
    url = f"file://{tmp_path}/s.zarr" if scheme == "file" else "memory://fsspec-test/s.zarr"
    _, counts = _store_with_run(url)
    ds = open_store(url).open_run("model/base")
    np.testing.assert_array_equal(ds.n_active.values, counts.n_active)
    plain = xr.open_zarr(url, group="model/base")
    np.testing.assert_array_equal(plain.n_tokens.values, counts.n_tokens)


def test_export_zip_reads_back(tmp_path: Path) -> None:
    store, counts = _store_with_run(tmp_path / "s.zarr", sequences=2)
    dest = store.export_zip(tmp_path / "share" / "s.zip")
    assert zipfile.is_zipfile(dest)
    ds = open_store(dest).open_run("model/base")
    np.testing.assert_array_equal(ds.n_active.values, counts.n_active)
    plain = xr.open_zarr(zarr.storage.ZipStore(dest, mode="r"), group="model/base")
    np.testing.assert_array_equal(plain.seq_n_active.values, counts.seq_n_active)
    assert not list((tmp_path / "share").glob("*.tmp"))


def test_info_reports_runs(tmp_path: Path) -> None:
    store, counts = _store_with_run(tmp_path / "s.zarr", moments=True)
    info = store.info()["runs"]["model/base"]
    assert info["languages"] == ["en", "de"]
    assert (info["layers"], info["neurons"]) == (3, 7)
    assert info["n_tokens"]["de"]["response"] == int(counts.n_tokens[1, 1])
    assert info["optional"] == ["act_sum", "act_sqsum"]
    assert info["attrs"]["revision"] == "step-1"
    json.dumps(info)


# ---------------------------------------------------------------------------- bad input
def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match="store '.*nope.zarr' does not exist"):
        open_store(tmp_path / "nope.zarr")


def test_directory_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "file.txt").write_text("x")
    with pytest.raises(NotAStoreError, match="is not a Zarr v3 store"):
        open_store(tmp_path / "d")
    with pytest.raises(NotAStoreError, match="non-empty directory that is not a Zarr store"):
        create_store(tmp_path / "d")


def test_zarr_store_that_is_not_langneurons(tmp_path: Path) -> None:
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(NotAStoreError, match="not a langneurons store"):
        open_store(tmp_path / "plain.zarr")


def test_other_schema_version(tmp_path: Path) -> None:
    path = other_version_store(tmp_path / "s.zarr")
    with pytest.raises(SchemaVersionError, match="schema version 99 but this langneurons reads"):
        open_store(path)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../escape", "contains '..'"),
        ("a/../../b", "contains '..'"),
        ("/abs/run", "is absolute"),
        ("", "is empty"),
        ("a//b", "contains ''"),
        ("run/_journal", "reserved component '_journal'"),
        ("run/identification", "reserved component 'identification'"),
        ("bad name", "must start with a letter or digit"),
    ],
)
def test_bad_run_names(tmp_path: Path, name: str, message: str) -> None:
    store = create_store(tmp_path / "s.zarr")
    with pytest.raises(InvalidNameError, match=message):
        store.create_run(name, n_layers=2, n_neurons=2)
    assert store.runs() == []
    assert sorted(os.listdir(tmp_path / "s.zarr")) == ["zarr.json"]


def test_duplicate_run_and_nesting(tmp_path: Path) -> None:
    store, _ = _store_with_run(tmp_path / "s.zarr")
    with pytest.raises(RunExistsError, match="run 'model/base' already exists"):
        store.create_run("model/base", n_layers=3, n_neurons=7)
    with pytest.raises(InvalidNameError, match="would nest with existing run 'model/base'"):
        store.create_run("model/base/inner", n_layers=3, n_neurons=7)
    with pytest.raises(RunNotFoundError, match="run 'model/other' is not in store"):
        store.open_run("model/other")


def test_counts_validation_messages() -> None:
    tokens = np.array([[5, 5]])
    ok = np.zeros((1, 2, 2, 2), dtype=np.int64)
    with pytest.raises(StoreValidationError, match="duplicate language 'en'"):
        Counts(["en", "en"], np.zeros((2, 2, 2, 2), np.int64), np.ones((2, 2), np.int64))
    with pytest.raises(StoreValidationError, match="no languages given"):
        Counts([], np.zeros((0, 2, 2, 2), np.int64), np.zeros((0, 2), np.int64))
    with pytest.raises(StoreValidationError, match="n_tokens holds negative token totals"):
        Counts(["en"], ok, np.array([[-1, 5]]))
    with pytest.raises(StoreValidationError, match="n_active holds negative counts"):
        Counts(["en"], ok - 1, tokens)
    with pytest.raises(
        StoreValidationError, match="exceeds its token total for 'en' role 'prompt'"
    ):
        Counts(["en"], ok + 6, tokens)
    with pytest.raises(StoreValidationError, match="counts must be integers"):
        Counts(["en"], ok.astype(float), tokens)
    with pytest.raises(StoreValidationError, match="language label '' is invalid"):
        Counts([""], ok, tokens)


def test_shape_and_optional_array_mismatch(tmp_path: Path) -> None:
    store, _ = _store_with_run(tmp_path / "s.zarr")
    with pytest.raises(StoreValidationError, match="counts have 2 layers x 7 neurons but run"):
        store.add_languages("model/base", make_counts(["fr"], layers=2))
    with pytest.raises(StoreValidationError, match="has no act_sum/act_sqsum"):
        store.add_languages("model/base", make_counts(["fr"], moments=True))
    assert store.languages("model/base") == ["en", "de"]


def test_seq_dtype_overflow_is_checked(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr")
    store.create_run("r", n_layers=1, n_neurons=1, sequences=True, seq_dtype="uint8")
    big = Counts(
        ["en"],
        np.array([[[[300]], [[0]]]]),
        np.array([[300, 0]]),
        seq_n_active=np.array([[[[300]], [[0]]]]),
        seq_n_tokens=np.array([[300, 0]]),
        seq_language=["en"],
        seq_id=["a"],
    )
    with pytest.raises(
        StoreValidationError, match="per-sequence count 300 overflows the run's uint8"
    ):
        store.add_languages("r", big)
    assert store.languages("r") == []


def test_validate_finds_counts_above_totals(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store, counts = _store_with_run(path)
    group = zarr.open_group(path, mode="r+", path="model/base", use_consolidated=False)
    group["n_active"][1, 1, 0, 0] = int(counts.n_tokens[1, 1]) + 1
    rerecord(path, "model/base/n_active")
    problems = store.validate()
    assert problems == [
        "run 'model/base': n_active exceeds n_tokens for 'de' role 'response' at 1 cells"
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "langneurons", "validate", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "invalid: run 'model/base': n_active exceeds n_tokens for 'de'" in proc.stderr


def test_validate_finds_per_sequence_counts_that_do_not_add_up(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store, _ = _store_with_run(path, sequences=3)
    assert store.validate() == []
    group = zarr.open_group(path, mode="r+", path="model/base", use_consolidated=False)
    group["seq_n_active"][0, 1, 0, 0] = 0
    group["seq_n_active"][1, 1, 0, 0] = 1  # within its tokens, but the sums move
    rerecord(path, "model/base/seq_n_active")
    group["seq_n_tokens"][0, 0] += 1
    rerecord(path, "model/base/seq_n_tokens")
    assert store.validate() == [
        "run 'model/base': seq_n_tokens summed per language differs from n_tokens",
        "run 'model/base': seq_n_active summed per language differs from n_active",
    ]


def test_validate_finds_duplicate_languages_and_bad_dtype(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store, _ = _store_with_run(path)
    group = zarr.open_group(path, mode="r+", path="model/base", use_consolidated=False)
    group["language"][1] = "en"
    rerecord(path, "model/base/language")
    assert "duplicate language labels in ['en', 'en']" in store.validate()[0]
    group["language"][1] = "de"
    del group["n_tokens"]
    group.create_array(
        "n_tokens", shape=(2, 2), dtype="float64", dimension_names=["language", "role"]
    )
    # a rewritten array breaks the metadata schema: its dtype, and it has no checksum codec
    assert store.validate() == [
        "run 'model/base', array 'n_tokens': has data type 'float64'; the schema requires int64 "
        "(in its zarr.json)",
        "run 'model/base', array 'n_tokens': has no crc32c checksum codec (in its zarr.json)",
    ]


def test_importing_langneurons_does_not_import_torch() -> None:
    run_python(
        "import sys, langneurons, langneurons.store, langneurons.analysis, langneurons.reports,"
        " langneurons.cli\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules\n"
    )


# ---------------------------------------------------------------------------- atomicity
_CRASH = """
import atexit, os, sys, threading, numpy as np, zarr
sys.path.insert(0, {tests!r})
from conftest import make_counts
from langneurons.store import _chunks, open_store
calls = 0
lock = threading.Lock()
def crash_point():
    global calls
    with lock:
        calls += 1
        if calls == {after}:
            os._exit(9)
original = zarr.Array.__setitem__
def crashing(self, key, value):
    crash_point()
    return original(self, key, value)
zarr.Array.__setitem__ = crashing
encode = _chunks._encode  # whole chunk rows bypass __setitem__: crash before each chunk
def crashing_encode(blosc, chunk):
    crash_point()
    return encode(blosc, chunk)
_chunks._encode = crashing_encode
store = open_store({path!r}, mode="r+")
store.{method}("model/base", make_counts({langs!r}, seed=11))
print(calls)
"""


@pytest.mark.parametrize(
    ("method", "langs"), [("merge_counts", ["de", "fr"]), ("add_languages", ["fr", "zh"])]
)
def test_killed_writer_leaves_previous_state(tmp_path: Path, method: str, langs: list[str]) -> None:
    """Kill the writer before each of its array writes; the run always reads as before."""
    import shutil

    template = tmp_path / "template.zarr"
    store, _ = _store_with_run(template)
    before = store.open_run("model/base").load()
    tests = str(Path(__file__).parent)

    def crash(path: Path, after: int) -> subprocess.CompletedProcess[str]:
        code = _CRASH.format(tests=tests, after=after, path=str(path), method=method, langs=langs)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    shutil.copytree(template, tmp_path / "count.zarr")
    total = int(crash(tmp_path / "count.zarr", after=-1).stdout)
    assert total >= 3
    for after in range(1, total + 1):
        path = tmp_path / f"s{after}.zarr"
        shutil.copytree(template, path)
        proc = crash(path, after)
        assert proc.returncode == 9, proc.stderr
        # plain xarray (consolidated metadata) still shows the committed shapes
        assert xr.open_zarr(path, group="model/base").sizes["language"] == 2
        store = open_store(path, mode="r+")
        assert any("interrupted write" in p for p in store.validate())
        with pytest.raises(InterruptedWriteError, match="run `langneurons repair"):
            store.open_run("model/base")
        assert store.repair() == ["model/base"]
        xr.testing.assert_identical(
            before.drop_attrs(), store.open_run("model/base").load().drop_attrs()
        )
        assert store.validate() == []
        # and the store keeps working: the write now goes through
        store.merge_counts("model/base", make_counts(langs, seed=11))
        assert store.validate() == []
        assert store.languages("model/base") == ["en", "de", *[x for x in langs if x != "de"]]


def test_killed_create_leaves_no_run(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    create_store(path)
    code = f"""
import os, numpy as np, zarr
from langneurons.store import _chunks, open_store, Counts
original = zarr.Array.__setitem__
def crashing(self, key, value):
    if self.path.endswith("n_active"):
        os._exit(9)
    return original(self, key, value)
zarr.Array.__setitem__ = crashing
write_rows = _chunks.write_rows  # whole chunk rows bypass __setitem__
def crashing_rows(array, start, data):
    if array.path.endswith("n_active"):
        os._exit(9)
    return write_rows(array, start, data)
_chunks.write_rows = crashing_rows
store = open_store({str(path)!r}, mode="r+")
store.create_run("r", n_layers=2, n_neurons=2,
                 counts=Counts(["en"], np.zeros((1, 2, 2, 2), np.int64), np.ones((1, 2), np.int64)))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    store = open_store(path, mode="r+")
    assert store.runs() == []
    assert any("interrupted write" in p for p in store.validate())
    # the next writer rolls the half-made run back and can create it
    store.create_run("r", n_layers=2, n_neurons=2)
    assert store.runs() == ["r"] and store.validate() == []


def test_schema_module_names_the_contract() -> None:
    assert schema.VARIABLES["n_active"].dims == ("language", "role", "layer", "neuron")
    assert schema.VARIABLES["seq_n_active"].dims == ("sequence", "role", "layer", "neuron")
    assert schema.ROLES == ("prompt", "response")
    assert schema.SCHEMA_VERSION == 2


def test_refused_counts_leave_no_run_behind(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr")
    with pytest.raises(StoreValidationError, match="counts have 3 layers x 7 neurons but run"):
        store.create_run("r", n_layers=2, n_neurons=7, counts=make_counts(["en"]))
    assert store.runs() == [] and store.validate() == []
    assert sorted(os.listdir(tmp_path / "s.zarr")) == ["zarr.json"]


def test_writes_are_recorded_with_provenance(tmp_path: Path) -> None:
    store, _ = _store_with_run(tmp_path / "s.zarr")
    store.add_languages("model/base", make_counts(["fr"], seed=3), provenance={"files": ["a.pt"]})
    store.merge_counts("model/base", make_counts(["fr"], seed=4), provenance={"files": ["b.pt"]})
    writes = decode_attrs(store.open_run("model/base").attrs)["writes"]
    assert [w["action"] for w in writes] == ["created", "added", "merged"]
    assert writes[1]["languages"] == ["fr"] and writes[1]["provenance"] == {"files": ["a.pt"]}
    assert writes[2]["provenance"] == {"files": ["b.pt"]}


def test_unit_writes_fold_into_one_log_entry(tmp_path: Path) -> None:
    """Extraction commits one unit at a time; the log grows by a key per unit, not an entry."""
    path = tmp_path / "s.zarr"
    store, full = _slotted_store(path)
    for row, key in [(0, "en/0"), (1, "en/1"), (3, "de/0")]:  # rows: en 0-2, de 3-5
        store.merge_counts("m", unit_counts(full, key[:2], [row]), provenance={"unit": key})
    store.merge_counts("m", make_counts(["fr"], sequences=1, moments=True), provenance={"x": 1})
    store.merge_counts("m", unit_counts(full, "de", [4]), provenance={"unit": "de/1"})
    writes = decode_attrs(store.open_run("m").attrs)["writes"]
    assert [w.get("units") for w in writes] == [["en/0", "en/1", "de/0"], None, ["de/1"]]
    assert writes[0]["languages"] == ["en", "de"] and writes[0]["sequences"] == 3
    assert writes[0]["first"] <= writes[0]["time"] and writes[0]["provenance"] == {}
    assert store.committed_units("m") == {"en/0", "en/1", "de/0", "de/1"}
    with pytest.raises(AlreadyWrittenError, match="unit 'en/1' is already committed"):
        store.merge_counts("m", unit_counts(full, "en", [1]), provenance={"unit": "en/1"})


def _slotted_store(path: Path) -> tuple[object, Counts]:
    """A run with pre-allocated languages and sequence slots, like extraction makes."""
    full = make_counts(["en", "de"], sequences=3, moments=True)
    store = create_store(path)
    store.create_run(
        "m",
        n_layers=3,
        n_neurons=7,
        moments=True,
        sequences=True,
        languages=["en", "de"],
        sequence_labels=(full.seq_language or [], full.seq_id or []),
    )
    return store, full


def test_preallocated_slots_fill_in_any_order(tmp_path: Path) -> None:
    store, full = _slotted_store(tmp_path / "s.zarr")
    ds = store.open_run("m")
    assert list(ds.language.values) == ["en", "de"] and ds.sizes["sequence"] == 6
    assert int(ds.n_tokens.sum()) == 0 and store.validate() == []
    for lang, rows, key in (("de", [5, 3], "de/1"), ("en", [1], "en/1"), ("de", [4], "de/0"),
                            ("en", [0, 2], "en/0")):  # fmt: skip
        store.merge_counts("m", unit_counts(full, lang, rows), provenance={"unit": key})
    ds = store.open_run("m").load()
    np.testing.assert_array_equal(ds.seq_n_active.values, full.seq_n_active)
    np.testing.assert_array_equal(ds.n_active.values, full.n_active)
    np.testing.assert_array_equal(ds.n_tokens.values, full.n_tokens)
    assert store.committed_units("m") == {"de/1", "en/1", "de/0", "en/0"}
    assert store.validate() == []


def test_unit_keys_are_written_once(tmp_path: Path) -> None:
    from langneurons.errors import AlreadyWrittenError

    store, full = _slotted_store(tmp_path / "s.zarr")
    store.merge_counts("m", unit_counts(full, "en", [0]), provenance={"unit": "en/0"})
    before = store.open_run("m").load()
    with pytest.raises(AlreadyWrittenError, match="unit 'en/0' is already committed to run 'm'"):
        store.merge_counts("m", unit_counts(full, "en", [0]), provenance={"unit": "en/0"})
    xr.testing.assert_identical(before, store.open_run("m").load())


def test_slot_labels_must_match(tmp_path: Path) -> None:
    store, full = _slotted_store(tmp_path / "s.zarr")
    wrong = unit_counts(full, "en", [0])
    wrong.seq_index = [3]  # a 'de' slot
    with pytest.raises(StoreValidationError, match="seq_language of the counts does not match"):
        store.merge_counts("m", wrong)
    with pytest.raises(StoreValidationError, match="sequence_labels name language 'fr'"):
        store.create_run("x", n_layers=1, n_neurons=1, sequences=True, languages=["en"],
                         sequence_labels=(["fr"], ["a"]))  # fmt: skip


def test_killed_slot_write_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store, full = _slotted_store(path)
    store.merge_counts("m", unit_counts(full, "en", [0]), provenance={"unit": "en/0"})
    before = store.open_run("m").load()
    code = f"""
import os, sys, numpy as np, zarr
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import make_counts, unit_counts
from langneurons.store import open_store
full = make_counts(["en", "de"], sequences=3, moments=True)
original = zarr.Array.set_orthogonal_selection
def crashing(self, *args, **kwargs):
    if self.path.endswith("seq_n_tokens") and "_journal" not in self.path:
        os._exit(9)
    return original(self, *args, **kwargs)
zarr.Array.set_orthogonal_selection = crashing
open_store({str(path)!r}, mode="r+").merge_counts("m", unit_counts(full, "en", [1, 2]),
                                               provenance={{"unit": "en/1"}})
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parent)  # fmt: skip
    assert proc.returncode == 9, proc.stderr
    store = open_store(path, mode="r+")
    assert store.repair() == ["m"]
    xr.testing.assert_identical(before.drop_attrs(), store.open_run("m").load().drop_attrs())
    assert store.committed_units("m") == {"en/0"}


def test_killed_while_deleting_the_journal_keeps_the_commit(tmp_path: Path) -> None:
    """The journal marker goes first: a writer killed after it has committed its write."""
    path = tmp_path / "s.zarr"
    store, full = _slotted_store(path)
    code = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import make_counts, unit_counts
from langneurons.store import open_store
from langneurons.store import _nodes
full = make_counts(["en", "de"], sequences=3, moments=True)
original = _nodes.delete_group
def crashing(zstore, path):
    if path.endswith("_journal"):
        os._exit(9)
    return original(zstore, path)
_nodes.delete_group = crashing
open_store({str(path)!r}, mode="r+").merge_counts("m", unit_counts(full, "en", [0]),
                                               provenance={{"unit": "en/0"}})
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    store = open_store(path, mode="r+")
    assert (path / "m" / "_journal").exists() and not (
        path / "m" / "_journal" / "zarr.json"
    ).exists()
    assert store.committed_units("m") == {"en/0"}
    assert store.repair() == []  # nothing to roll back; the leftovers are only removed
    assert not (path / "m" / "_journal").exists()
    assert store.committed_units("m") == {"en/0"}
    store.merge_counts("m", unit_counts(full, "en", [1]), provenance={"unit": "en/1"})
    assert not (path / "m" / "_journal").exists()
    ds = store.open_run("m")
    np.testing.assert_array_equal(ds.seq_n_active.values[:2], np.asarray(full.seq_n_active)[:2])
    assert store.validate() == []


def test_an_opened_run_is_self_describing_and_writes_to_netcdf(tmp_path: Path) -> None:
    """Variables carry CF attributes; nested run attributes are JSON text that netCDF can carry."""
    import xarray as xr

    path = tmp_path / "s.zarr"
    counts = make_counts(["en", "de"], layers=2, neurons=5, sequences=3, moments=True)
    store = create_store(path)
    store.create_run(
        "m/base",
        n_layers=2,
        n_neurons=5,
        sequences=True,
        moments=True,
        counts=counts,
        metadata=RunMetadata(model="toy", provenance={"method": "imported"}),
    )
    more = make_counts(["en"], layers=2, neurons=5, sequences=1, seed=5, moments=True)
    store.merge_counts("m/base", more, provenance={"files": ["a.pt"]})
    for ds in (store.open_run("m/base"), xr.open_zarr(path, group="m/base")):
        for name in ("n_active", "n_tokens", "act_sum", "layer", "neuron", "seq_n_active"):
            assert {"long_name", "description"} <= set(ds[name].attrs), name
        assert ds["n_active"].attrs["units"] == "tokens"
        assert all(isinstance(v, str | int | float) for v in ds.attrs.values()), ds.attrs
        out = tmp_path / f"run-{len(list(tmp_path.glob('*.nc')))}.nc"
        ds.to_netcdf(out)
        back = xr.open_dataset(out).load()
        np.testing.assert_array_equal(back["n_active"].values, ds["n_active"].values)
        np.testing.assert_array_equal(back["seq_n_active"].values, ds["seq_n_active"].values)
        assert back["n_active"].attrs["long_name"] == "active token count"
        attrs = decode_attrs(back.attrs)  # our readers decode the JSON text
        assert attrs["provenance"] == {"method": "imported"}
        assert [w["action"] for w in attrs["writes"]] == ["created", "merged"]
        assert attrs["writes"][1]["provenance"] == {"files": ["a.pt"]}
    # the readers that hand out structure decode it
    assert store.run_metadata("m/base").provenance == {"method": "imported"}
    assert store.info()["runs"]["m/base"]["attrs"]["writes"][1]["provenance"] == {"files": ["a.pt"]}
    assert store.validate() == []


def test_runs_with_nested_attributes_on_disk_still_read(tmp_path: Path) -> None:
    """Runs written before the JSON text (nested attributes on disk) read as before."""
    import zarr

    path = tmp_path / "s.zarr"
    store = create_store(path)
    store.create_run("m", n_layers=3, n_neurons=7, counts=make_counts(["en", "de"]),
                     metadata=RunMetadata(provenance={"method": "imported"}))  # fmt: skip
    group = zarr.open_group(path, path="m", mode="r+")
    decoded = decode_attrs(dict(group.attrs))
    group.attrs.update({"provenance": decoded["provenance"], "writes": decoded["writes"]})
    zarr.consolidate_metadata(path)
    again = open_store(path, mode="r+")
    assert again.run_metadata("m").provenance == {"method": "imported"}
    again.merge_counts("m", make_counts(["en"], seed=2), provenance={"files": ["b.pt"]})
    writes = decode_attrs(again.open_run("m").attrs)["writes"]
    assert [w["action"] for w in writes] == ["created", "merged"]
    assert again.validate() == []


# ------------------------------------------------------------------ one run's writer
def test_a_run_writer_checks_the_name_once_and_writes_like_the_store(tmp_path: Path) -> None:
    from langneurons.errors import RunNotFoundError
    from langneurons.store import RunWriter

    full = make_counts(["en", "de"], sequences=3, moments=True)
    store = create_store(tmp_path / "s.zarr")
    store.create_run(
        "m",
        n_layers=full.shape[0],
        n_neurons=full.shape[1],
        moments=True,
        sequences=True,
        languages=["en", "de"],
        sequence_labels=(full.seq_language, full.seq_id),
    )
    writer = store.writer("m")
    assert isinstance(writer, RunWriter) and writer.run == "m"
    writer.merge_counts(unit_counts(full, "en", [0]), unit="en/0")
    assert writer.committed_units() == {"en/0"} == store.committed_units("m")
    with pytest.raises(AlreadyWrittenError, match="unit 'en/0' is already committed to run 'm'"):
        writer.merge_counts(unit_counts(full, "en", [0]), unit="en/0")
    assert writer.metadata() == store.run_metadata("m")
    with pytest.raises(RunNotFoundError, match="run 'nope' is not in store"):
        store.writer("nope")
    with pytest.raises(PermissionError, match="open it with mode='r\\+' to write"):
        open_store(tmp_path / "s.zarr").writer("m")
    store.delete_run("m")  # a writer whose run is gone says so
    with pytest.raises(RunNotFoundError, match="run 'm' is not in store"):
        writer.merge_counts(unit_counts(full, "en", [1]), unit="en/1")


def test_renamed_store_keywords_still_work_with_a_warning(tmp_path: Path) -> None:
    from langneurons.store import import_zip

    with pytest.warns(DeprecationWarning, match=r"create_store\(url=...\) is deprecated"):
        create_store(url=tmp_path / "s.zarr")
    with pytest.warns(DeprecationWarning, match=r"open_store\(url=...\) is deprecated"):
        store = open_store(url=tmp_path / "s.zarr")
    store.export_zip(tmp_path / "s.zip")
    with pytest.warns(DeprecationWarning, match=r"import_zip\(dest=...\) is deprecated"):
        import_zip(tmp_path / "s.zip", dest=tmp_path / "back.zarr")
    assert open_store(store=tmp_path / "back.zarr").runs() == []
    with pytest.raises(TypeError, match="got both 'url' and 'store'"):
        open_store(url=tmp_path / "s.zarr", store=tmp_path / "s.zarr")
