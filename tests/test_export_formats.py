"""``langneurons export --format netcdf|parquet|dataset``: each format round-trips (read back with
the tools a user would use and compared with the store), refuses a damaged store, and leaves
nothing behind on failure."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from langneurons.analysis import identify
from langneurons.errors import (
    CorruptStoreError,
    InterruptedWriteError,
    MissingDependencyError,
    RunExistsError,
    RunNotFoundError,
    StoreValidationError,
)
from langneurons.store import RunMetadata, create_store, decode_attrs, open_store
from tests.conftest import make_counts, run_cli

pytestmark = pytest.mark.requires_share
pytest.importorskip("pyarrow")
pytest.importorskip("h5netcdf")

LANGS = ["en", "de", "no"]  # "no": a language code YAML 1.1 would read as false


def _store(tmp: Path, *, second_run: bool = True) -> Path:
    """A store with moments, sequences, an identification and a stats-like result."""
    path = tmp / "s.zarr"
    store = create_store(path)
    meta = RunMetadata(
        model="tiny-lm",
        revision="step-100",
        corpus="toy",
        corpus_hash="sha256:" + "ab" * 32,
        hook_point="model.layers.*.mlp.act_fn",
        activation="silu",
        provenance={"method": "extracted", "command": "langneurons extract ..."},
    )
    counts = make_counts(LANGS, layers=5, neurons=6, moments=True, sequences=3)
    store.create_run(
        "m/base",
        n_layers=5,
        n_neurons=6,
        counts=counts,
        moments=True,
        sequences=True,
        metadata=meta,
    )
    with pytest.warns(Warning):  # the automatic lambda at its bound on tiny data
        result = identify(store.open_run("m/base"), top_rate=0.2)
    store.save_result("m/base", "identification", "lape", result)
    # a result of two languages only, with integer-coded types (CF flag_values/flag_meanings)
    meanings = ["none", "specific", "related", "general"]
    codes = np.zeros((5, 6), np.int8)
    codes[1, 2], codes[3, 4], codes[4, 0] = 1, 2, 3
    mask = np.zeros((2, 5, 6), bool)
    mask[0, 1, 2] = mask[1, 3, 4] = True
    coded = xr.Dataset(
        {
            "neuron_type": (
                ("layer", "neuron"),
                codes,
                {"flag_values": np.arange(4, dtype=np.int8), "flag_meanings": " ".join(meanings)},
            ),
            "mask": (("language", "layer", "neuron"), mask),
        },
        coords={"language": ["de", "en"], "layer": np.arange(5), "neuron": np.arange(6)},
        attrs={"method": "coded", "nested": {"a": [1, 2]}, "flag": True, "none": None},
    )
    store.save_result("m/base", "identification", "sub/coded", coded)
    stats = xr.Dataset(
        {"p": (("layer",), np.linspace(0, 1, 5))}, coords={"layer": np.arange(5)}
    ).assign_attrs(test="toy", inference="descriptive")
    store.save_result("m/base", "stats", "toy", stats)
    if second_run:
        store.create_run(
            "m/chat", n_layers=5, n_neurons=6, counts=make_counts(["en"], layers=5, neurons=6)
        )
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ netcdf
def test_netcdf_round_trips_counts_results_and_attrs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _store(tmp_path)
    dest = tmp_path / "nc"
    code, out, err = run_cli(capsys, "export", path, dest, "--format", "netcdf")
    assert code == 0, err
    assert out.startswith(f"wrote 2 netcdf file(s) under {dest}: ")
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*.nc")) == [
        "m/base.nc",
        "m/chat.nc",
    ]
    store = open_store(path)
    for run in ("m/base", "m/chat"):
        expected = store.open_run(run).load()
        with xr.open_dataset(dest / f"{run}.nc") as found:  # the default engine, no options
            found = found.load()
        assert set(found.variables) == set(expected.variables)
        for name, var in expected.variables.items():
            got = found[name]
            assert got.dims == var.dims
            if var.dtype.kind in "USOT":
                assert [str(x) for x in got.values.ravel()] == [str(x) for x in var.values.ravel()]
            else:
                assert got.dtype == var.dtype, name
                np.testing.assert_array_equal(got.values, var.values)
        attrs = decode_attrs(found.attrs)
        assert attrs.pop("langneurons_run") == run
        attrs.pop("langneurons_results")
        assert attrs == decode_attrs(expected.attrs)
    assert decode_attrs(xr.open_dataset(dest / "m/base.nc").attrs)["provenance"]["method"] == (
        "extracted"
    )
    # each saved result is a group of its run's file, values and attributes intact
    for group in ("identification/lape", "identification/sub/coded", "stats/toy"):
        kind, name = group.split("/", 1)
        expected = store.open_result("m/base", kind, name).load()
        with xr.open_dataset(dest / "m/base.nc", group=group) as found:
            found = found.load()
        for var in expected.data_vars:
            assert found[var].dtype.kind == expected[var].dtype.kind or (
                expected[var].dtype.kind in "UOT"
            )
            np.testing.assert_array_equal(found[var].values, expected[var].values)
        assert decode_attrs(found.attrs) == {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in expected.attrs.items()
        }
    coded = xr.open_dataset(dest / "m/base.nc", group="identification/sub/coded")
    # integer-coded types are exported as the labels readers see (open_result decodes them)
    labels = coded["neuron_type"].values
    assert (labels[1, 2], labels[3, 4], labels[4, 0], labels[0, 0]) == (
        "specific", "related", "general", "none"
    )  # fmt: skip
    assert decode_attrs(coded.attrs)["nested"] == {"a": [1, 2]}
    assert decode_attrs(coded.attrs)["flag"] is True
    groups = xr.open_groups(dest / "m/base.nc")  # every group; a DataTree needs aligned ones
    assert {"/identification/lape", "/identification/sub/coded", "/stats/toy"} <= set(groups)


def test_netcdf_one_run_and_compressed_with_checksums(tmp_path: Path) -> None:
    import h5py

    path = _store(tmp_path)
    files = open_store(path).export_netcdf(tmp_path / "one", runs=["m/chat"])
    assert files == [tmp_path / "one" / "m" / "chat.nc"]
    with h5py.File(files[0]) as h5:
        assert h5["n_active"].fletcher32 and h5["n_active"].compression == "gzip"


# ------------------------------------------------------------------ parquet
def test_parquet_round_trips_every_cell_streamed_in_row_groups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    from langneurons.store import _export_parquet

    monkeypatch.setattr(_export_parquet, "ROWS_PER_GROUP", 2 * 3 * 6 * 2)  # two layers a group
    path = _store(tmp_path)
    dest = tmp_path / "pq"
    code, out, err = run_cli(capsys, "export", path, dest, "--format", "parquet")
    assert code == 0, err
    assert out.startswith(f"wrote 2 parquet file(s) under {dest}: ")
    file = dest / "m" / "base.parquet"
    assert pq.ParquetFile(file).num_row_groups == 3  # layers 0-1, 2-3, 4: streamed
    df = pd.read_parquet(file)
    store = open_store(path)
    ds = store.open_run("m/base").load()
    assert len(df) == 3 * 2 * 5 * 6
    assert list(df.columns) == [
        "run", "language", "role", "layer", "neuron", "n_active", "n_tokens", "P",
        "type_lape", "mask_lape", "type_sub.coded", "mask_sub.coded",
    ]  # fmt: skip
    assert set(df["run"]) == {"m/base"}
    # every cell, looked up by its labels in the store
    rows = df.set_index(["language", "role", "layer", "neuron"])
    expected = ds["n_active"].to_series()
    expected.index = expected.index.set_names(["language", "role", "layer", "neuron"])
    got = rows["n_active"].reindex(expected.index)
    np.testing.assert_array_equal(got.values, expected.values)
    tokens = ds["n_tokens"].to_series()
    for (lang, role), group in df.groupby(["language", "role"], observed=True):
        assert (group["n_tokens"] == tokens[(lang, role)]).all()
        np.testing.assert_allclose(group["P"], group["n_active"] / tokens[(lang, role)])
    lape = store.open_result("m/base", "identification", "lape").load()
    types = lape["neuron_type"].to_series()
    for (layer, neuron), kind in types.items():
        cells = df[(df.layer == layer) & (df.neuron == neuron)]
        assert set(cells["type_lape"].astype(str)) == {kind}
    masks = lape["mask"].to_series()
    got_mask = rows["mask_lape"].xs("response", level="role")
    for (lang, layer, neuron), value in masks.items():
        assert bool(got_mask[(lang, layer, neuron)]) == bool(value)
    # integer-coded types come out as their meanings; a language the result lacks is null
    coded = df[(df.layer == 1) & (df.neuron == 2)]
    assert set(coded["type_sub.coded"].astype(str)) == {"specific"}
    assert set(df.loc[(df.layer == 4) & (df.neuron == 0), "type_sub.coded"].astype(str)) == {
        "general"
    }
    assert df.loc[df.language == "no", "mask_sub.coded"].isna().all()
    de = df[(df.language == "de") & (df.layer == 1) & (df.neuron == 2)]
    assert de["mask_sub.coded"].tolist() == [True, True]
    assert df.loc[df.language != "no", "mask_sub.coded"].sum() == 4  # 2 cells x 2 roles
    meta = json.loads(pq.ParquetFile(file).schema_arrow.metadata[b"langneurons"])
    assert meta["run"] == "m/base" and meta["attrs"]["model"] == "tiny-lm"
    assert meta["columns"]["type_sub.coded"] == {
        "result": "identification/sub/coded",
        "variable": "neuron_type",
    }
    # a run without results: the counts alone
    chat = pd.read_parquet(dest / "m" / "chat.parquet")
    assert list(chat.columns)[-1] == "P" and len(chat) == 1 * 2 * 5 * 6


def test_parquet_reads_in_duckdb_style_sql_via_pyarrow_dataset(tmp_path: Path) -> None:
    import pyarrow.dataset as pads

    path = _store(tmp_path)
    open_store(path).export_parquet(tmp_path / "pq")
    table = pads.dataset(tmp_path / "pq" / "m" / "base.parquet").to_table(
        filter=(pads.field("language") == "en") & (pads.field("layer") == 2)
    )
    assert table.num_rows == 2 * 6


# ------------------------------------------------------------------ dataset
def test_dataset_folder_loads_with_the_datasets_parquet_loader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    yaml = pytest.importorskip("yaml")
    path = _store(tmp_path)
    dest = tmp_path / "share" / "tiny"
    code, out, err = run_cli(
        capsys, "export", path, dest, "--format", "dataset", "--license", "cc-by-4.0"
    )
    assert code == 0, err
    assert out.strip() == (
        f"wrote dataset folder {dest} (2 run(s): README.md card, store.zip, data/*.parquet; "
        "licence cc-by-4.0)"
    )
    assert _listing(dest) == ["README.md", "data", "store.zip"]
    text = (dest / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "cc-by-4.0"
    assert meta["language"] == ["de", "en", "no"]  # "no" stays a string
    run = meta["langneurons"]["runs"]["m/base"]
    assert run["model"] == "tiny-lm" and run["revision"] == "step-100"
    assert run["corpus"] == "toy" and run["corpus_hash"] == "sha256:" + "ab" * 32
    assert run["languages"] == LANGS and run["made"] == "extracted"
    assert run["n_tokens"]["no"]["prompt"] > 0
    digest = hashlib.sha256((dest / "store.zip").read_bytes()).hexdigest()
    assert meta["langneurons"]["store_zip_sha256"] == f"sha256:{digest}"
    assert [c["config_name"] for c in meta["configs"]] == ["m--base", "m--chat"]
    assert "## How to load it" in text and 'load_dataset("path/to/this/folder", "m--base"' in text
    # the store zip is the store: it opens, validates and holds the same counts
    zipped = open_store(dest / "store.zip")
    assert zipped.validate() == []
    np.testing.assert_array_equal(
        zipped.open_run("m/base")["n_active"].values,
        open_store(path).open_run("m/base")["n_active"].values,
    )
    # the datasets library, offline, through the card's configs and its Parquet loader
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    loaded = datasets.load_dataset(
        str(dest), "m--base", split="train", cache_dir=str(tmp_path / "hf-cache")
    )
    assert loaded.num_rows == 3 * 2 * 5 * 6
    assert loaded.column_names[:8] == [
        "run", "language", "role", "layer", "neuron", "n_active", "n_tokens", "P",
    ]  # fmt: skip
    frame = loaded.to_pandas()
    import pandas as pd

    direct = pd.read_parquet(dest / "data" / "m" / "base.parquet")
    np.testing.assert_array_equal(frame["n_active"].values, direct["n_active"].values)
    assert frame["language"].astype(str).tolist() == direct["language"].astype(str).tolist()
    chat = datasets.load_dataset(
        str(dest), "m--chat", split="train", cache_dir=str(tmp_path / "hf-cache")
    )
    assert chat.num_rows == 2 * 5 * 6


# ------------------------------------------------------------------ bad input
FORMATS = ["netcdf", "parquet", "dataset"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_store_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    path = _store(tmp_path, second_run=False)
    (path / "m/base/n_active/c/1/1/0/0").unlink()
    code, out, err = run_cli(capsys, "export", path, tmp_path / "out" / "x", "--format", fmt)
    assert code == 1 and out == ""
    assert err.startswith("langneurons: error: run 'm/base', array 'n_active': chunk c/1/1/0/0 ")
    assert len(err.strip().splitlines()) == 1
    assert _listing(tmp_path) == ["s.zarr"]  # not even "out"
    with pytest.raises(CorruptStoreError):
        getattr(open_store(path), f"export_{fmt}")(tmp_path / "y")


@pytest.mark.parametrize("fmt", FORMATS)
def test_interrupted_write_is_refused(tmp_path: Path, fmt: str) -> None:
    path = _store(tmp_path, second_run=False)
    (path / "m/base/_journal").mkdir()
    (path / "m/base/_journal/zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"armed": True}})
    )
    store = open_store(path)
    assert store._interrupted_runs() == ["m/base"]  # what a writer killed mid-write leaves
    with pytest.raises(InterruptedWriteError, match="run `langneurons repair"):
        getattr(store, f"export_{fmt}")(tmp_path / "y")
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_existing_destination_is_never_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    path = _store(tmp_path, second_run=False)
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep")
    code, _, err = run_cli(capsys, "export", path, dest, "--format", fmt)
    assert code == 1
    assert err.strip() == (
        f"langneurons: error: {str(dest)!r} already exists; give a new path for the "
        f"export-{fmt} export (nothing is replaced)"
    )
    assert _listing(dest) == ["notes.txt"] and _listing(tmp_path) == ["mine", "s.zarr"]
    with pytest.raises(RunExistsError):
        getattr(open_store(path), f"export_{fmt}")(dest)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_failure_while_writing_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    from langneurons.store import _export

    path = _store(tmp_path, second_run=False)
    real = _export.run_file
    calls = []

    def failing(folder: Path, run: str, suffix: str) -> Path:
        calls.append(run)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_export, "run_file", failing)
    with pytest.raises(OSError, match="No space left"):
        getattr(open_store(path), f"export_{fmt}")(tmp_path / "deep" / "out")
    assert calls and real is not failing
    assert _listing(tmp_path) == ["s.zarr"]  # no temporary folder, no "deep"


def test_a_copy_that_reads_back_differently_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is written is compared with the store: a writer that corrupts a value is caught."""
    from langneurons.store import _export_netcdf

    path = _store(tmp_path, second_run=False)
    real = _export_netcdf._netcdf_ready

    def corrupting(ds: xr.Dataset) -> xr.Dataset:
        out = real(ds)
        if "n_active" in out:
            out["n_active"] = out["n_active"] + 1
        return out

    monkeypatch.setattr(_export_netcdf, "_netcdf_ready", corrupting)
    with pytest.raises(StoreValidationError, match=r"variable 'n_active' differs from the store"):
        open_store(path).export_netcdf(tmp_path / "nc")
    assert _listing(tmp_path) == ["s.zarr"]


def test_unknown_run_bad_licence_and_zip_with_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _store(tmp_path, second_run=False)
    with pytest.raises(RunNotFoundError, match=r"run 'm/nope' is not in store"):
        open_store(path).export_parquet(tmp_path / "p", runs=["m/nope"])
    with pytest.raises(StoreValidationError, match="is not a licence identifier"):
        open_store(path).export_dataset(tmp_path / "d", license="  ")
    code, _, err = run_cli(capsys, "export", path, tmp_path / "z.zip", "--runs", "m/base")
    assert code == 2 and "--runs is not for --format zip" in err
    assert _listing(tmp_path) == ["s.zarr"]


def test_a_missing_optional_dependency_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name: str, *args: object, **kwargs: object) -> object:
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    path = _store(tmp_path, second_run=False)
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    monkeypatch.delitem(__import__("sys").modules, "pyarrow", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "pyarrow.parquet", raising=False)
    code, _, err = run_cli(capsys, "export", path, tmp_path / "p", "--format", "parquet")
    assert code == 1
    assert err.strip() == (
        "langneurons: error: export --format parquet needs the Python package 'pyarrow'; "
        "install it with pip install 'langneurons[share]'"
    )
    assert _listing(tmp_path) == ["s.zarr"]
    with pytest.raises(MissingDependencyError):
        open_store(path).export_dataset(tmp_path / "d")


def test_exports_follow_the_umask(tmp_path: Path) -> None:
    path = _store(tmp_path, second_run=False)
    old = os.umask(0o027)
    try:
        open_store(path).export_parquet(tmp_path / "pq")
    finally:
        os.umask(old)
    assert (tmp_path / "pq").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "pq/m/base.parquet").stat().st_mode & 0o777 == 0o640
